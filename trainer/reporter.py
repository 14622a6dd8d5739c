"""Where a training rank's numbers go: telemetry (``weaksound_train_*``), the driver's progress
bar (through a ``push`` callable, the progress actor in a Ray run) and one printed line per epoch."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

from runtime.telemetry import Telemetry
from trainer.meter import EpochMeter

__all__ = ["Reporter", "epoch_line"]


def epoch_line(record: dict) -> str:
    """The one-line summary of an epoch record (rank 0 prints it)."""
    line = f"[trainer] epoch {record['epoch']}: loss {record['train_loss']:.4f}"
    for key, value in record.items():  # the selection split ("val_mAP"), reported before eval
        if key.endswith("_mAP") and key != "eval_mAP" and value is not None:
            line += f", {key[:-len('_mAP')]} mAP {value:.4f}"
    if record.get("eval_mAP") is not None:
        line += (f", eval mAP {record['eval_mAP']:.4f} AUC {record['eval_auc']:.4f} "
                 f"d' {record['eval_d_prime']:.3f}")
    return line + f", {record['clips_per_s']:.1f} clips/s, data wait {100 * record['data_wait_fraction']:.0f}%"


def _finite_or_zero(v) -> float:
    return float(v) if v is not None and math.isfinite(v) else 0.0


class Reporter:
    """Per-step and per-epoch reporting of one rank.

    Args:
        tel: this rank's telemetry (``trainer.train_metrics.TRAIN_METRICS``).
        rank: the world rank; only rank 0 prints.
        epochs, starts: for the progress records.
        push: called with a progress record (dict) at the first and last step of each epoch and
            in between at most every ``every_s`` seconds; ``None`` = no progress side channel.
        every_s: minimum time between gauge updates and pushes (counters are updated every step).
        clock: monotonic seconds.
    """

    def __init__(self, tel: Telemetry, *, rank: int, epochs: int, starts: int = 0,
                 push: Callable[[dict], object] | None = None, every_s: float = 0.5,
                 clock: Callable[[], float] = time.perf_counter, log: Callable[[str], object] | None = None):
        self.tel, self.rank, self.epochs = tel, rank, epochs
        self.starts, self.push, self.every_s, self.clock = starts, push, every_s, clock
        self.log = log or (lambda line: print(line, flush=True))
        self._last = -math.inf

    def say(self, line: str) -> None:
        """Print ``line`` once for the whole job (rank 0)."""
        if self.rank == 0:
            self.log(line)

    def restarted(self, epoch: int, step: int, step_in_epoch: int = 0) -> None:
        """After a resume: ``epoch`` is the checkpoint's; mid-epoch when ``step_in_epoch`` > 0."""
        self.tel.counter("weaksound_train_restarts_total").inc(1)
        where = f"epoch {epoch} at its step {step_in_epoch}" if step_in_epoch else f"the end of epoch {epoch}"
        self.say(f"[trainer] resumed from {where} (global step {step}); start #{self.starts}")

    def step(self, meter: EpochMeter, *, epoch: int, step_in_epoch: int, steps_in_epoch: int, global_step: int,
             lr: float, step_s: float) -> bool:
        """After each optimizer step; returns True when gauges and progress were updated."""
        self.tel.counter("weaksound_train_steps_total").inc(1)
        self.tel.histogram("weaksound_train_step_seconds").observe(step_s)
        now = self.clock()
        if now - self._last <= self.every_s and step_in_epoch not in (1, steps_in_epoch):
            return False
        self._last = now
        self.tel.gauge("weaksound_train_loss").set(meter.last_loss)
        self.tel.gauge("weaksound_train_learning_rate").set(lr)
        self.tel.gauge("weaksound_train_clips_per_second").set(meter.clips_per_s)
        self.tel.gauge("weaksound_train_audio_seconds_per_second").set(meter.audio_s_per_s)
        self.tel.gauge("weaksound_train_data_wait_fraction").set(meter.wait_fraction)
        if self.push is not None:
            self.push({"pid": os.getpid(), "epoch": epoch, "epochs": self.epochs, "step_in_epoch": step_in_epoch,
                       "steps_per_epoch": steps_in_epoch, "global_step": global_step,
                       "loss": meter.mean_loss, "clips_per_s": meter.clips_per_s,
                       "data_wait": meter.wait_fraction, "starts": self.starts})
        return True

    def evaluated(self, eval_result: dict) -> None:
        self.tel.gauge("weaksound_train_eval_map").set(_finite_or_zero(eval_result["mAP"]))
        self.tel.gauge("weaksound_train_eval_auc").set(_finite_or_zero(eval_result["mean_auc"]))

    def step_saved(self, *, epoch: int, step_in_epoch: int, global_step: int, seconds: float) -> None:
        """After a mid-epoch checkpoint (rank 0 wrote it)."""
        if self.rank == 0:
            self.tel.histogram("weaksound_train_checkpoint_seconds").observe(seconds)
        self.say(f"[trainer] mid-epoch checkpoint: epoch {epoch} step {step_in_epoch} (global step {global_step}), "
                 f"{seconds:.1f} s")

    def saved(self, record: dict, seconds: float) -> None:
        """After the epoch's report: checkpoint time (rank 0 wrote it) and the epoch line."""
        if self.rank == 0:
            self.tel.histogram("weaksound_train_checkpoint_seconds").observe(seconds)
        self.say(epoch_line(record))
