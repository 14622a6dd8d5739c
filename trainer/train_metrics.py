"""The training job's metrics (docs/contracts.md, ``weaksound_train_*``); every series carries the rank."""
from __future__ import annotations

from runtime.telemetry import IO_BUCKETS, STEP_BUCKETS, MetricSpec, MetricTable

__all__ = ["TRAIN_METRICS"]

_TAGS = ("run", "kind", "rank")

TRAIN_METRICS = MetricTable("train", (
    MetricSpec("weaksound_train_steps_total", "counter", "optimizer steps", _TAGS),
    MetricSpec("weaksound_train_step_seconds", "histogram", "wall time per step", _TAGS, STEP_BUCKETS),
    MetricSpec("weaksound_train_clips_per_second", "gauge", "training clips/s per rank", _TAGS),
    MetricSpec("weaksound_train_audio_seconds_per_second", "gauge", "audio seconds/s per rank", _TAGS),
    MetricSpec("weaksound_train_data_wait_fraction", "gauge", "share of step time waiting for data", _TAGS),
    MetricSpec("weaksound_train_loss", "gauge", "last training loss", _TAGS),
    MetricSpec("weaksound_train_learning_rate", "gauge", "current LR", _TAGS),
    MetricSpec("weaksound_train_eval_map", "gauge", "eval mAP of the last epoch", _TAGS),
    MetricSpec("weaksound_train_eval_auc", "gauge", "eval mean AUC of the last epoch", _TAGS),
    MetricSpec("weaksound_train_checkpoint_seconds", "histogram", "time to write one checkpoint", _TAGS,
               IO_BUCKETS),
    MetricSpec("weaksound_train_restarts_total", "counter", "worker-group (re)starts beyond the first", _TAGS),
), ranked=True)
