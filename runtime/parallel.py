"""One bounded parallel map for every stage: Ray tasks (or a pool of Ray actors), or this process.

Every job that fans work out (prep shards, embedding shards, SVM units, MFCC shards, adapted
features) goes through :func:`bounded_map`: at most ``max_in_flight`` calls are pending, results
are handed to ``on_done`` as they finish (never a ``ray.get`` on a pending list), and a tqdm bar
counts the work. ``executor="local"`` runs the same calls in order in this process, so a test can
compare both paths.

Ray is imported only when ``executor="ray"``, so the module loads without it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Progress", "bounded_map", "default_in_flight", "EXECUTORS"]

EXECUTORS = ("ray", "local")


def default_in_flight() -> int:
    """Twice the cluster's CPUs: enough queued work to keep every core busy."""
    import ray

    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


@dataclass
class Progress:
    """A tqdm bar over the items (or over ``weight(item)`` units, e.g. clips per shard).

    ``postfix(results_so_far)`` may return a dict shown next to the bar.
    """

    desc: str
    unit: str = "item"
    weight: Callable[[Any], int] | None = None
    initial: int = 0
    postfix: Callable[[list], dict] | None = None
    _bar: Any = field(default=None, repr=False)

    def open(self, items: Sequence) -> None:
        from tqdm import tqdm

        total = sum(self.weight(i) for i in items) if self.weight else len(items)
        self._bar = tqdm(total=total + self.initial, initial=self.initial, desc=self.desc, unit=self.unit,
                         dynamic_ncols=True)

    def advance(self, item, results: list) -> None:
        if self._bar is None:
            return
        self._bar.update(self.weight(item) if self.weight else 1)
        if self.postfix is not None:
            self._bar.set_postfix(self.postfix(results), refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def bounded_map(fn: Callable, items: Sequence, *, shared: tuple = (), executor: str = "ray",
                max_in_flight: int = 0, ray_options: dict | None = None, actors: Sequence | None = None,
                progress: Progress | None = None, on_done: Callable[[int, Any], None] | None = None) -> list:
    """``[fn(item, *shared) for item in items]``, run in parallel with at most ``max_in_flight`` pending.

    Args:
        fn: a picklable function ``fn(item, *shared)``; with ``actors``, a function
            ``fn(actor, item, *shared)`` that returns the ``ObjectRef`` of an actor call.
        shared: arguments common to every call; under Ray each is ``ray.put`` once, not once per call.
        executor: ``"ray"`` (tasks or ``actors``, cluster-wide) or ``"local"`` (this process, in order).
        max_in_flight: pending calls at most; 0 = :func:`default_in_flight` (or one per actor).
        ray_options: ``ray.remote`` options of the task (``num_cpus``, ``max_retries``, ...).
        actors: Ray actor handles; every pending call is on an idle actor.
        progress: a :class:`Progress` bar, advanced as calls finish.
        on_done: ``on_done(index, result)`` as each call finishes (in completion order under Ray).

    Returns:
        The results in item order.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    items = list(items)
    results: list = [None] * len(items)
    finished: list = []

    def done(i: int, value) -> None:
        results[i] = value
        finished.append(value)
        if on_done is not None:
            on_done(i, value)
        if progress is not None:
            progress.advance(items[i], finished)

    if progress is not None:
        progress.open(items)
    try:
        if executor == "local":
            for i, item in enumerate(items):
                if actors is not None:
                    raise ValueError("actors need executor='ray'")
                done(i, fn(item, *shared))
        elif actors is not None:
            _map_on_actors(fn, items, shared, list(actors), max_in_flight, done)
        else:
            _map_on_tasks(fn, items, shared, ray_options or {"num_cpus": 1}, max_in_flight, done)
    finally:
        if progress is not None:
            progress.close()
    return results


def _map_on_tasks(fn, items, shared, ray_options, max_in_flight, done) -> None:
    import ray

    task = ray.remote(**ray_options)(fn)
    refs = tuple(ray.put(s) for s in shared)
    limit = max_in_flight or default_in_flight()
    pending: dict = {}
    queue = iter(enumerate(items))
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < limit:
            try:
                i, item = next(queue)
            except StopIteration:
                exhausted = True
                break
            pending[task.remote(item, *refs)] = i
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            done(pending.pop(ref), ray.get(ref))


def _map_on_actors(fn, items, shared, actors, max_in_flight, done) -> None:
    import ray

    if not actors:
        raise ValueError("actors must not be empty")
    refs = tuple(ray.put(s) for s in shared)
    limit = min(max_in_flight or len(actors), len(actors))
    idle = list(actors[:limit])
    pending: dict = {}
    queue = iter(enumerate(items))
    exhausted = False
    while pending or not exhausted:
        while not exhausted and idle:
            try:
                i, item = next(queue)
            except StopIteration:
                exhausted = True
                break
            actor = idle.pop()
            pending[fn(actor, item, *refs)] = (i, actor)
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            i, actor = pending.pop(ref)
            idle.append(actor)
            done(i, ray.get(ref))
