"""The prep job's metrics (docs/contracts.md, ``weaksound_prep_*``) and how a finished shard counts."""
from __future__ import annotations

from collections.abc import Iterable

from runtime.telemetry import IO_BUCKETS, MetricSpec, MetricTable, Telemetry

__all__ = ["PREP_METRICS", "record_shard", "record_listing_rejects"]

_TAGS = ("run", "kind")

PREP_METRICS = MetricTable("prep", (
    MetricSpec("weaksound_prep_clips_total", "counter", "clips written to shards", _TAGS),
    MetricSpec("weaksound_prep_rejects_total", "counter", "inputs skipped, by reason", _TAGS + ("reason",)),
    MetricSpec("weaksound_prep_missing_total", "counter", "listed clips with no audio file", _TAGS),
    MetricSpec("weaksound_prep_bytes_written_total", "counter", "shard bytes written", _TAGS),
    MetricSpec("weaksound_prep_shard_write_seconds", "histogram", "time to build+write one shard", _TAGS,
               IO_BUCKETS),
))


def record_shard(tel: Telemetry, result) -> None:
    """Count one finished shard task (a ``ShardResult``): clips, bytes, write time, rejects by reason."""
    tel.counter("weaksound_prep_clips_total").inc(result.clips)
    tel.counter("weaksound_prep_bytes_written_total").inc(result.bytes)
    tel.histogram("weaksound_prep_shard_write_seconds").observe(result.seconds)
    _count_rejects(tel, (r["reason"] for r in result.rejects))


def record_listing_rejects(tel: Telemetry, rejects: Iterable) -> None:
    """Count the rejects found while listing a source (bad CSV rows, missing audio, ...)."""
    _count_rejects(tel, (r.reason for r in rejects))


def _count_rejects(tel: Telemetry, reasons: Iterable[str]) -> None:
    by_reason: dict[str, int] = {}
    for reason in reasons:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    for reason, n in sorted(by_reason.items()):
        tel.counter("weaksound_prep_rejects_total").inc(n, reason=reason)
        if reason == "missing_audio":
            tel.counter("weaksound_prep_missing_total").inc(n)
