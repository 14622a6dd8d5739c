"""The extraction job's metrics (docs/contracts.md, ``weaksound_embed_*``) and how an embedded shard counts."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.telemetry import MetricSpec, MetricTable, Telemetry

__all__ = ["EMBED_METRICS", "record_embed"]

_TAGS = ("run", "kind")

EMBED_METRICS = MetricTable("embed", (
    MetricSpec("weaksound_embed_clips_total", "counter", "clips embedded", _TAGS),
    MetricSpec("weaksound_embed_clips_per_second", "gauge", "extraction throughput per actor", _TAGS),
))


def record_embed(tel: Telemetry, result: Mapping[str, Any]) -> None:
    """Count one embedded shard, ``{"clips": n, "seconds": wall time, ...}``; the gauge is that
    shard's throughput, i.e. the clips/s of the actor that embedded it."""
    clips = int(result["clips"])
    tel.counter("weaksound_embed_clips_total").inc(clips)
    seconds = float(result.get("seconds", 0.0))
    if seconds > 0:
        tel.gauge("weaksound_embed_clips_per_second").set(clips / seconds)
