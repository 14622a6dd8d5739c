"""The prep stage as a typed run: ``run_prep_job(PrepConfig) -> PrepJobSummary``.

``weaksound prep`` (data_prep/cli.py) parses its options into a ``PrepConfig``; the demo builds one
in code. Either way ``PrepConfig.command()`` renders the equivalent command line, so a run started
from code can be repeated from the shell.

Example:
    >>> from data_prep.sources import SOURCES
    >>> cfg = PrepConfig(SOURCES["esc50"](root="ESC-50-master"), out="s3://b/esc50",
    ...                  shard=ShardConfig(sample_rate=16000))
    >>> cfg.command()
    'weaksound prep esc50 --root ESC-50-master --out s3://b/esc50 --sample-rate 16000'
"""
from __future__ import annotations

import contextlib
import dataclasses
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from data_prep import audio
from data_prep.pipeline import PrepSummary, run_prep
from data_prep.prep_metrics import PREP_METRICS
from data_prep.shards import ShardConfig
from data_prep.sources.registry import SourceSpec
from data_prep.validation_split import carve_validation, read_val_groups
from runtime.telemetry import MetricTable, Telemetry

__all__ = ["PrepConfig", "PrepJobSummary", "changed_options", "job_telemetry", "run_prep_job", "with_validation_split"]

EXECUTORS = ("ray", "local")


def changed_options(options) -> list[str]:
    """``[flag, str(value), ...]`` for every ``(flag, value, default)`` whose value is not the default:
    how a config renders the options of its command line (every stage's CLI uses the same rule).

    >>> changed_options([("--seed", 3, 0), ("--split", "all", "all")])
    ['--seed', '3']
    """
    return [a for flag, value, default in options if value != default for a in (flag, str(value))]


@dataclass(frozen=True)
class PrepConfig:
    """Everything one `weaksound prep` run needs.

    Attributes:
        source: which layout and its options (a ``data_prep.sources.SOURCES`` spec).
        out: output URL, a local folder or ``s3://bucket/prefix``.
        shard: sample rate, shard sizes and input validation limits.
        executor: ``"ray"`` (one Ray task per shard) or ``"local"`` (this process).
        address: Ray cluster to join; None = ``$RAY_ADDRESS``, else a local Ray.
        max_in_flight: shard tasks submitted at once; 0 = twice the cluster's CPUs.
        progress: show a progress bar.
        metrics_port: serve Prometheus metrics on 127.0.0.1:PORT; 0 = through Ray's exporter.
        metrics_linger_s: with ``metrics_port``, keep serving this long after the job (two scrapes
            at the 5 s interval of cluster/prometheus/prometheus.yml).
        val_fraction: share of the ``train`` split moved to a ``val`` split for model selection
            (by source recording where the layout has one; data_prep/validation_split.py); 0 = none.
        val_groups: CSV (local or s3://) of ``clip_id,group`` rows naming the recordings each train clip
            contains; with it, ``val_fraction`` draws groups and a clip is ``val`` when any of its groups is
            drawn. "" = the layout's source recording, else the clip id.
    """

    source: SourceSpec
    out: str
    shard: ShardConfig = field(default_factory=ShardConfig)
    executor: str = "ray"
    address: str | None = None
    max_in_flight: int = 0
    progress: bool = True
    metrics_port: int = 0
    metrics_linger_s: float = 10.0
    val_fraction: float = 0.0
    val_groups: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_groups and self.val_fraction <= 0:
            raise ValueError("val_groups needs a val_fraction above 0 (the share of groups drawn for val)")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
        if not self.out:
            raise ValueError("out must be a folder or s3:// URL")

    def argv(self) -> list[str]:
        """The `weaksound prep` arguments of this config (options at their default are left out)."""
        d, lim, default_lim = PrepConfig(self.source, self.out), self.shard.limits, audio.ValidationLimits()
        options = [
            ("--sample-rate", self.shard.sample_rate, d.shard.sample_rate),
            ("--clips-per-shard", self.shard.max_clips_per_shard, d.shard.max_clips_per_shard),
            ("--max-shard-mb", self.shard.max_shard_bytes / 2**20, d.shard.max_shard_bytes / 2**20),
            ("--min-duration", lim.min_duration_s, default_lim.min_duration_s),
            ("--min-input-rate", lim.min_sample_rate, default_lim.min_sample_rate),
            ("--max-duration", lim.max_duration_s, default_lim.max_duration_s),
            ("--max-input-rate", lim.max_sample_rate, default_lim.max_sample_rate),
            ("--max-channels", lim.max_channels, default_lim.max_channels),
            ("--address", self.address, d.address),
            ("--executor", self.executor, d.executor),
            ("--max-in-flight", self.max_in_flight, d.max_in_flight),
            ("--metrics-port", self.metrics_port, d.metrics_port),
            ("--metrics-linger", self.metrics_linger_s, d.metrics_linger_s),
            ("--val-fraction", self.val_fraction, d.val_fraction),
            ("--val-groups", self.val_groups, d.val_groups),
        ]
        argv = ["prep", *self.source.argv(), "--out", self.out]
        return argv + changed_options(options) + ([] if self.progress else ["--no-progress"])

    def command(self) -> str:
        return shlex.join(["weaksound", *self.argv()])


@dataclass
class PrepJobSummary:
    """One ``PrepSummary`` per dataset written (the synthetic source writes three)."""

    datasets: list[PrepSummary]

    @property
    def clips_written(self) -> int:
        return sum(s.clips_written for s in self.datasets)


@contextlib.contextmanager
def job_telemetry(table: MetricTable, *, run: str, executor: str, address: str | None, metrics_port: int,
                  linger_s: float) -> Iterator[Telemetry]:
    """The metrics of one job process: served on 127.0.0.1:``metrics_port`` by prometheus_client when
    given, else through Ray's per-node exporter (joining or starting Ray), else none (local executor).
    On success the server lingers ``linger_s`` so that Prometheus scrapes the final values; after a
    failure or Ctrl-C it stops at once."""
    if metrics_port:  # a process outside Ray's exporter: serve our own /metrics
        telemetry = Telemetry("prometheus", table, run=run)
        telemetry.serve(metrics_port)
    else:
        if executor == "ray":
            from runtime.ray_cluster import ensure_ray

            ensure_ray(address)
        telemetry = Telemetry("ray" if executor == "ray" else "none", table, run=run)
    try:
        yield telemetry
        telemetry.close(linger_s=linger_s)  # no-op unless metrics_port serves
    finally:
        telemetry.close()


def with_validation_split(listing, fraction: float, groups_url: str = ""):
    """``listing`` with ``fraction`` of its ``train`` clips moved to a ``val`` split (unchanged for 0, or
    when the layout has no ``train`` split, e.g. ESC-50's folds: cross-validation selects there).
    ``groups_url`` names a ``clip_id,group`` CSV (data_prep/validation_split.py); a file that names none of
    the train clips is refused, since its ids cannot be this layout's."""
    train_ids = [r.clip_id for r in listing.records if r.split == "train"]
    if fraction <= 0 or not train_ids:
        return listing
    groups = None
    if groups_url:
        groups = read_val_groups(groups_url)
        named = sum(clip in groups for clip in train_ids)
        if not named:
            raise ValueError(f"{groups_url} names none of the {len(train_ids)} train clips (e.g. {train_ids[0]!r}); "
                             f"its clip_id column must hold the listing's clip ids (e.g. {next(iter(groups))!r} "
                             "does not match)")
        if named < len(train_ids):
            print(f"[prep] {groups_url} names {named} of {len(train_ids)} train clips; the other "
                  f"{len(train_ids) - named} are carved by source recording, else clip id")
    return dataclasses.replace(listing, records=carve_validation(listing.records, fraction, groups=groups))


def run_prep_job(cfg: PrepConfig, *, on_dataset: Callable[[PrepSummary], None] | None = None) -> PrepJobSummary:
    """List the source, then write shards, rejects and manifest of every dataset it yields;
    ``on_dataset`` sees each dataset's summary as soon as it is written."""
    run_name = cfg.out.rstrip("/").rsplit("/", 1)[-1]
    summaries = []
    with job_telemetry(PREP_METRICS, run=run_name, executor=cfg.executor, address=cfg.address,
                       metrics_port=cfg.metrics_port, linger_s=cfg.metrics_linger_s) as telemetry:
        for listing, out in cfg.source.listings(cfg.out):
            listing = with_validation_split(listing, cfg.val_fraction, cfg.val_groups)
            summaries.append(run_prep(listing, out, cfg.shard, executor=cfg.executor, address=cfg.address,
                                      max_in_flight=cfg.max_in_flight, progress=cfg.progress,
                                      telemetry=telemetry))
            write_reference_events(listing, out)
            if on_dataset is not None:
                on_dataset(summaries[-1])
    return PrepJobSummary(summaries)


REFERENCE_EVENTS = "reference_events.tsv"


def write_reference_events(listing, out: str) -> int:
    """For a synthetic dataset, ``<out>/reference_events.tsv``: where the corpus placed every labelled
    event (DCASE style, ``filename onset offset event_label`` with the clip id as filename and the class
    name as label). A sidecar for scoring sound-event detection, never read as training labels.
    Returns the rows written (0 and no file for other layouts)."""
    from data_prep.sources.synthetic import reference_events
    from runtime import storage

    if not listing.records or not listing.records[0].audio.startswith("synthetic:"):
        return 0
    names = dict(zip(listing.vocab.ids, listing.vocab.names))
    rows = [f"{r.clip_id}\t{onset:.3f}\t{offset:.3f}\t{names[label]}\n"
            for r in listing.records for onset, offset, label in reference_events(r)]
    storage.write_text_atomic(storage.join(out, REFERENCE_EVENTS), "filename\tonset\toffset\tevent_label\n" + "".join(rows))
    return len(rows)

