"""The telemetry mechanism of every job: typed Prometheus metric handles and three backends.

Each stage owns its metric table (`MetricTable`: the names pinned in docs/contracts.md):
``data_prep.prep_metrics.PREP_METRICS``, ``trainer.train_metrics.TRAIN_METRICS`` and
``inference.embed_metrics.EMBED_METRICS``. One `Telemetry` object per job process, built on one table,
hands out typed metric handles by contract name and sends values to one of three backends:

- ``"ray"``: `ray.util.metrics`, for code running inside Ray (driver, tasks, actors, Train
  workers). Ray's per-node exporter (``ray start --metrics-export-port``, port 8080 on KubeRay)
  serves the values with a ``ray_`` prefix: ``weaksound_prep_clips_total`` is scraped as
  ``ray_weaksound_prep_clips_total``.
- ``"prometheus"``: `prometheus_client` with a private `CollectorRegistry`, for processes outside
  Ray; `Telemetry.serve` starts the /metrics endpoint (loopback by default). Names carry no
  prefix; the scrape config in cluster/prometheus/prometheus.yml adds ``ray_`` so dashboards and
  rules use one name for both.
- ``"none"``: names and tags are still checked, values go nowhere (tests, dry runs).

Example::

    tel = Telemetry("prometheus", PREP_METRICS, run="as2m-r1")
    port = tel.serve(0)                                    # 0 = any free port; returns the port
    tel.counter("weaksound_prep_clips_total").inc(128)
    tel.counter("weaksound_prep_rejects_total").inc(reason="silent")
    with tel.histogram("weaksound_prep_shard_write_seconds").time():
        write_one_shard()
    tel.close()

Tags are low-cardinality by construction: ``run`` and ``kind`` are fixed per object, ``rank`` is
fixed per Train worker, and the only per-call tag is ``reason`` (prep rejects). A metric refuses
more than `MAX_SERIES_PER_METRIC` distinct tag sets in one process, so a clip id passed as a tag
value fails loudly instead of blowing up Prometheus.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "Backend", "MetricKind", "MetricSpec", "MetricTable", "RAY_PREFIX", "MAX_SERIES_PER_METRIC",
    "STEP_BUCKETS", "IO_BUCKETS", "Telemetry", "Counter", "Gauge", "Histogram", "default_backend",
    "exported_name",
]

Backend = Literal["ray", "prometheus", "none"]
MetricKind = Literal["counter", "gauge", "histogram"]

BACKENDS: tuple[str, ...] = ("ray", "prometheus", "none")
RAY_PREFIX = "ray_"
MAX_SERIES_PER_METRIC = 64
_TAG_VALUE_MAX_LEN = 128


@dataclass(frozen=True)
class MetricSpec:
    """One row of the metrics table in docs/contracts.md."""

    name: str                      # Prometheus name without the ray_ prefix
    kind: MetricKind
    help: str
    tag_keys: tuple[str, ...]      # every series carries exactly these labels
    buckets: tuple[float, ...] = ()  # histogram upper bounds in seconds (+Inf is implicit)

    @property
    def job(self) -> str:
        """The job kind that emits this metric (the word after ``weaksound_``)."""
        return self.name.split("_")[1]

    def series_names(self, backend: Backend = "ray") -> tuple[str, ...]:
        """The sample names a scrape shows (histograms expand to _bucket/_sum/_count)."""
        base = exported_name(self.name, backend)
        if self.kind == "histogram":
            return (base + "_bucket", base + "_sum", base + "_count")
        return (base,)


STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds per step
IO_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)  # seconds per write


@dataclass(frozen=True)
class MetricTable:
    """The metrics of one job kind (``weaksound_<kind>_*``), owned by the stage that emits them.

    ``ranked``: every metric carries a ``rank`` tag (Train workers), so a Telemetry on this table
    needs a rank.
    """

    kind: str
    specs: tuple[MetricSpec, ...]
    ranked: bool = False

    def __post_init__(self):
        for spec in self.specs:
            if spec.job != self.kind:
                raise ValueError(f"{spec.name} does not belong to {self.kind} jobs (weaksound_{self.kind}_*)")
            if ("rank" in spec.tag_keys) != self.ranked:
                raise ValueError(f"{spec.name}: the rank tag must be {'on' if self.ranked else 'off'} in this table")

    def __getitem__(self, name: str) -> MetricSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(f"{name!r} is not in the {self.kind} metrics table of docs/contracts.md")

    def __iter__(self):
        return iter(self.specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)


def exported_name(name: str, backend: Backend = "ray") -> str:
    """The name Prometheus sees: Ray's exporter adds ``ray_``, prometheus_client does not."""
    return RAY_PREFIX + name if backend == "ray" else name


def default_backend() -> Backend:
    """``"ray"`` when this process is a Ray driver or worker, else ``"none"``.

    Does not import Ray: a process that never imported it cannot be connected to a cluster.
    """
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return "ray"
    return "none"


# ---------------------------------------------------------------------------------------------
# Metric handles (what callers use)


class _Metric:
    def __init__(self, spec: MetricSpec, sink: "_Sink", fixed: Mapping[str, str]):
        self.spec = spec
        self._sink = sink
        self._fixed = dict(fixed)
        self._free = tuple(k for k in spec.tag_keys if k not in fixed)
        self._seen: set[tuple[str, ...]] = set()

    @property
    def name(self) -> str:
        return self.spec.name

    def _tags(self, tags: Mapping[str, Any]) -> dict[str, str]:
        unknown = set(tags) - set(self._free)
        if unknown:
            raise ValueError(f"{self.name}: unexpected tag(s) {sorted(unknown)}; "
                             f"this metric takes {list(self._free) or 'no per-call tags'}")
        missing = [k for k in self._free if k not in tags]
        if missing:
            raise ValueError(f"{self.name}: missing tag(s) {missing}")
        final = {**self._fixed, **{k: _tag_value(k, v) for k, v in tags.items()}}
        key = tuple(final[k] for k in self.spec.tag_keys)
        if key not in self._seen:
            if len(self._seen) >= MAX_SERIES_PER_METRIC:
                raise ValueError(
                    f"{self.name}: more than {MAX_SERIES_PER_METRIC} tag sets in one process "
                    f"(latest {final}); tags must be low-cardinality (never a clip id or a path)")
            self._seen.add(key)
        return final


class Counter(_Metric):
    """Monotonic count; ``inc(0)`` is a no-op, negative increments are refused."""

    def inc(self, value: float = 1.0, **tags: Any) -> None:
        if value < 0:
            raise ValueError(f"{self.name}: counters only go up, got {value}")
        final = self._tags(tags)
        if value:
            self._sink.inc(self.spec, float(value), final)


class Gauge(_Metric):
    """Last value wins."""

    def set(self, value: float, **tags: Any) -> None:
        self._sink.set(self.spec, float(value), self._tags(tags))


class Histogram(_Metric):
    """Distribution of durations (seconds)."""

    def observe(self, value: float, **tags: Any) -> None:
        if value < 0:
            raise ValueError(f"{self.name}: durations are >= 0, got {value}")
        self._sink.observe(self.spec, float(value), self._tags(tags))

    @contextmanager
    def time(self, **tags: Any) -> Iterator[None]:
        """Observe the wall time of the ``with`` block (also when it raises)."""
        self._tags(tags)  # fail before the work, not after it
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started, **tags)


def _tag_value(key: str, value: Any) -> str:
    text = str(value)
    if not text or len(text) > _TAG_VALUE_MAX_LEN:
        raise ValueError(f"tag {key}={text!r}: expected 1..{_TAG_VALUE_MAX_LEN} characters")
    return text


# ---------------------------------------------------------------------------------------------
# Backends


class _Sink(Protocol):
    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...
    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...
    def observe(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...


class _NoneSink:
    def inc(self, spec, value, tags):
        pass

    set = observe = inc


class _PrometheusSink:
    """prometheus_client metrics in a registry owned by one Telemetry object."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}

    def _get(self, spec: MetricSpec):
        metric = self._metrics.get(spec.name)
        if metric is None:
            import prometheus_client as pc

            if spec.kind == "counter":
                # prometheus_client appends _total itself; give it the base name.
                metric = pc.Counter(spec.name.removesuffix("_total"), spec.help, spec.tag_keys,
                                    registry=self.registry)
            elif spec.kind == "gauge":
                metric = pc.Gauge(spec.name, spec.help, spec.tag_keys, registry=self.registry)
            else:
                metric = pc.Histogram(spec.name, spec.help, spec.tag_keys, registry=self.registry,
                                      buckets=spec.buckets)
            self._metrics[spec.name] = metric
        return metric

    def inc(self, spec, value, tags):
        self._get(spec).labels(**tags).inc(value)

    def set(self, spec, value, tags):
        self._get(spec).labels(**tags).set(value)

    def observe(self, spec, value, tags):
        self._get(spec).labels(**tags).observe(value)


class _RaySink:
    """ray.util.metrics objects, exported by the node's metrics agent with a ``ray_`` prefix."""

    def __init__(self) -> None:
        import ray  # noqa: F401  (fail early when Ray is not installed)

        self._metrics: dict[str, Any] = {}

    def _get(self, spec: MetricSpec):
        metric = self._metrics.get(spec.name)
        if metric is None:
            # Checked at the first value, not at construction: a driver may build its Telemetry
            # before it connects (ray.init) and record only after.
            import ray
            from ray.util import metrics as rm

            if not ray.is_initialized():
                raise RuntimeError("backend='ray' records through a connected Ray driver or worker (call "
                                   "ray.init() first, or record inside a Ray task/actor/Train worker); "
                                   "outside Ray use backend='prometheus' and Telemetry.serve()")

            if spec.kind == "counter":
                # Ray (>= 2.10; checked on 2.60) exports "x_total" once as ray_x_total, not x_total_total.
                metric = rm.Counter(spec.name, spec.help, tag_keys=spec.tag_keys)
            elif spec.kind == "gauge":
                metric = rm.Gauge(spec.name, spec.help, tag_keys=spec.tag_keys)
            else:
                metric = rm.Histogram(spec.name, spec.help, boundaries=list(spec.buckets),
                                      tag_keys=spec.tag_keys)
            self._metrics[spec.name] = metric
        return metric

    def inc(self, spec, value, tags):
        self._get(spec).inc(value, tags=tags)

    def set(self, spec, value, tags):
        self._get(spec).set(value, tags=tags)

    def observe(self, spec, value, tags):
        self._get(spec).observe(value, tags=tags)


# ---------------------------------------------------------------------------------------------
# The object jobs hold


class Telemetry:
    """Metrics of one job process (a prep driver, one Train worker, one extraction actor).

    Args:
        backend: ``"ray"``, ``"prometheus"`` or ``"none"`` (see the module docstring);
            `default_backend()` picks ``"ray"`` inside Ray.
        table: the job's `MetricTable`; only its metrics are handed out, its kind is the ``kind`` label.
        run: run name (the stable RayJob / Ray Train run name); becomes the ``run`` label.
        rank: the Train world rank (required for a ranked table, refused otherwise).

    A ray/none Telemetry pickles (its settings travel, metrics are re-created in the receiving
    process), so it can be passed to Ray tasks and actors; a prometheus one cannot (its registry
    and HTTP server belong to this process).
    """

    def __init__(self, backend: Backend, table: MetricTable, *, run: str, rank: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown metrics backend {backend!r}; expected one of {BACKENDS}")
        if not isinstance(table, MetricTable):
            raise TypeError(f"table must be a MetricTable (a stage's metrics), got {type(table).__name__}")
        kind = table.kind
        if table.ranked != (rank is not None):
            raise ValueError(f"rank is {'required' if table.ranked else 'not allowed'} for {kind} metrics")
        if rank is not None and (not isinstance(rank, int) or rank < 0):
            raise ValueError(f"rank must be a non-negative int, got {rank!r}")
        self.backend: Backend = backend
        self.run = _tag_value("run", run)
        self.kind = kind
        self.table = table
        self.rank = rank
        self._fixed = {"run": self.run, "kind": kind, **({"rank": str(rank)} if rank is not None else {})}
        self._sink: _Sink
        if backend == "prometheus":
            self._sink = _PrometheusSink()
        elif backend == "ray":
            self._sink = _RaySink()
        else:
            self._sink = _NoneSink()
        self._handles: dict[str, _Metric] = {}
        self._server: Any = None
        self._thread: Any = None

    def __repr__(self) -> str:
        rank = f", rank={self.rank}" if self.rank is not None else ""
        return f"Telemetry({self.backend!r}, run={self.run!r}, kind={self.kind!r}{rank})"

    def __reduce__(self):
        if self.backend == "prometheus":
            raise TypeError("a prometheus-backend Telemetry is bound to its process (registry and "
                            "HTTP server); create one per process, or use backend='ray' inside Ray")
        return (_rebuild, (self.backend, self.table, self.run, self.rank))

    # -- handles ------------------------------------------------------------------------------

    def _handle(self, name: str, cls: type[_Metric]) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            spec = self.table[name]
            expected = {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}[cls]
            if spec.kind != expected:
                raise TypeError(f"{name} is a {spec.kind}, not a {expected}")
            handle = cls(spec, self._sink, {k: v for k, v in self._fixed.items() if k in spec.tag_keys})
            self._handles[name] = handle
        return handle

    def counter(self, name: str) -> Counter:
        return self._handle(name, Counter)

    def gauge(self, name: str) -> Gauge:
        return self._handle(name, Gauge)

    def histogram(self, name: str) -> Histogram:
        return self._handle(name, Histogram)

    # -- serving (prometheus backend only) ----------------------------------------------------

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics over HTTP from a daemon thread; returns the bound port (``port=0``: any).

        Only for backend ``"prometheus"``: Ray's exporter serves the ``"ray"`` backend.
        Binds loopback unless ``addr`` says otherwise (``"0.0.0.0"`` inside a container).
        """
        if not isinstance(self._sink, _PrometheusSink):
            raise RuntimeError(f"serve() is for backend='prometheus'; backend={self.backend!r} "
                               + ("is served by Ray's metrics exporter (--metrics-export-port)"
                                  if self.backend == "ray" else "exports nothing"))
        if self._server is not None:
            raise RuntimeError(f"already serving on port {self._server.server_address[1]}")
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=addr, registry=self._sink.registry)
        return int(self._server.server_address[1])

    def text(self) -> str:
        """The current exposition text (prometheus backend), e.g. for logs and tests."""
        if not isinstance(self._sink, _PrometheusSink):
            raise RuntimeError(f"text() is for backend='prometheus', not {self.backend!r}")
        from prometheus_client import generate_latest

        return generate_latest(self._sink.registry).decode()

    def close(self, linger_s: float = 0.0) -> None:
        """Stop the HTTP server if one was started (idempotent).

        ``linger_s``: keep serving that many seconds first, so that a scrape after the last update
        sees the final values (a short job otherwise ends between two scrapes and its last counts
        never reach Prometheus). Ignored when nothing is being served.
        """
        if self._server is not None:
            if linger_s > 0:
                time.sleep(linger_s)
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> "Telemetry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rebuild(backend: Backend, table: MetricTable, run: str, rank: int | None) -> Telemetry:
    return Telemetry(backend, table, run=run, rank=rank)
