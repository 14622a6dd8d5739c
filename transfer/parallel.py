"""Ray execution of the transfer protocol: SVM units and per-shard baseline features.

- ``run_svm_units``: every (feature set, test fold, C) unit of one or more ``TransferData`` is
  one Ray task. Each ``TransferData`` is ``ray.put`` once and every task receives the reference;
  at most ``max_in_flight`` tasks are pending (``ray.wait``), and results are combined with
  ``transfer.svm.combine_units``, so the numbers equal the sequential path exactly
  (``executor="local"`` runs the same units in this process).
- ``mfcc_features``: the MFCC-statistics baseline from the dataset's audio shards, one Ray task
  per shard; a task returns clip ids and an (n, D) matrix, never audio.

Ray is imported only inside the functions, so the module loads without it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from transfer.svm import FoldResults, SVMUnit, TransferData, UnitScore, combine_units, run_unit

__all__ = ["SVMJob", "mfcc_features", "mfcc_shard", "run_svm_units", "default_in_flight"]


class SVMJob:
    """One ``TransferData`` and the units to run on it (``plan_units`` output, possibly filtered)."""

    def __init__(self, name: str, data: TransferData, units: Sequence[SVMUnit]):
        if not units:
            raise ValueError(f"job {name!r} has no units")
        self.name = name
        self.data = data
        self.units = list(units)


def default_in_flight() -> int:
    """Twice the cluster's CPUs: enough queued work to keep every core busy."""
    import ray

    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


def _bounded(submit: Callable, items: Sequence, max_in_flight: int, on_done: Callable) -> None:
    """Submit ``submit(item)`` for every item with at most ``max_in_flight`` pending; call
    ``on_done(index, value)`` as each finishes. No ``ray.get`` inside the submission loop."""
    import ray

    pending: dict = {}
    it = iter(enumerate(items))
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < max_in_flight:
            try:
                i, item = next(it)
            except StopIteration:
                exhausted = True
                break
            pending[submit(item)] = i
        if not pending:
            break
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            on_done(pending.pop(ref), ray.get(ref))


def run_svm_units(jobs: Sequence[SVMJob], *, executor: str = "ray", max_in_flight: int = 0,
                  progress: bool = False) -> dict[str, dict[str, FoldResults]]:
    """Run every unit of every job; returns job name -> feature set -> ``FoldResults``.

    Args:
        jobs: the data and units; job names must be unique.
        executor: ``"ray"`` (one task per unit, cluster-wide) or ``"local"`` (this process).
        max_in_flight: pending Ray tasks at most; 0 = ``default_in_flight()``.
        progress: show a tqdm bar over units.
    """
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")
    flat = [(k, u) for k, job in enumerate(jobs) for u in job.units]
    scores: list[list[UnitScore]] = [[] for _ in jobs]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(flat), desc="svm units", unit="unit", dynamic_ncols=True)

    def done(i: int, score: UnitScore) -> None:
        scores[flat[i][0]].append(score)
        if bar is not None:
            bar.update(1)

    if executor == "local":
        for i, (k, unit) in enumerate(flat):
            done(i, run_unit(unit, jobs[k].data))
    elif executor == "ray":
        import ray

        refs = [ray.put(job.data) for job in jobs]  # once per dataset, shared by its units
        task = ray.remote(num_cpus=1)(run_unit)
        _bounded(lambda item: task.remote(item[1], refs[item[0]]), flat,
                 max_in_flight or default_in_flight(), done)
    else:
        raise ValueError(f"executor must be 'ray' or 'local', got {executor!r}")
    if bar is not None:
        bar.close()
    return {job.name: combine_units(job.units, scores[k], job.data) for k, job in enumerate(jobs)}


def mfcc_shard(shard_url: str, sample_rate: int, n_mfcc: int = 20, delta_order: int = 1
               ) -> tuple[list[str], np.ndarray]:
    """(clip ids, (n, D) MFCC statistics) of every clip of one shard, in stored order."""
    from data_prep import storage
    from data_prep.shards import iter_shard
    from transfer.baseline import MFCCStats

    storage.register_webdataset_s3()
    extractor = MFCCStats(sample_rate, n_mfcc=n_mfcc, delta_order=delta_order)
    ids, rows = [], []
    for s in iter_shard(shard_url):
        if s.meta["sample_rate"] != sample_rate:
            raise ValueError(f"{s.meta['clip_id']} in {shard_url} is at {s.meta['sample_rate']} Hz, "
                             f"the manifest says {sample_rate} Hz")
        ids.append(s.meta["clip_id"])
        rows.append(extractor(s.audio))
    return ids, (np.stack(rows) if rows else np.zeros((0, extractor.dim)))


def mfcc_features(data_url: str, clip_ids: Sequence[str], *, n_mfcc: int = 20, delta_order: int = 1,
                  executor: str = "ray", max_in_flight: int = 0, progress: bool = False) -> np.ndarray:
    """MFCC statistics of the listed clips of the dataset at ``data_url``, rows in ``clip_ids`` order.

    One Ray task per shard of the manifest. Raises ``ValueError`` if a listed clip is missing
    from the shards (the embeddings and the dataset disagree).
    """
    from data_prep.manifest import read_manifest

    manifest = read_manifest(data_url)
    shard_urls = manifest.shard_urls()
    found: dict[str, np.ndarray] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(shard_urls), desc="mfcc baseline", unit="shard", dynamic_ncols=True)

    def done(_i: int, out: tuple[list[str], np.ndarray]) -> None:
        for cid, row in zip(out[0], out[1]):
            found[cid] = row
        if bar is not None:
            bar.update(1)

    args = (manifest.sample_rate, n_mfcc, delta_order)
    if executor == "local":
        for i, url in enumerate(shard_urls):
            done(i, mfcc_shard(url, *args))
    elif executor == "ray":
        import ray

        task = ray.remote(num_cpus=1)(mfcc_shard)
        _bounded(lambda url: task.remote(url, *args), shard_urls, max_in_flight or default_in_flight(), done)
    else:
        raise ValueError(f"executor must be 'ray' or 'local', got {executor!r}")
    if bar is not None:
        bar.close()
    missing = [c for c in clip_ids if c not in found]
    if missing:
        raise ValueError(f"{len(missing)} embedded clips are not in the shards of {data_url} "
                         f"(e.g. {missing[:3]}); were the embeddings made from another dataset?")
    return np.stack([found[c] for c in clip_ids])
