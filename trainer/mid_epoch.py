"""Mid-epoch checkpoints: when to write one and what must match to resume from one (the
per-step augmentation RNG that makes a resumed epoch draw what an uninterrupted one would is
``trainer.engine.augment_generator``).

A step checkpoint is written every ``checkpoint_every_steps`` optimizer steps of an epoch, or
(``checkpoint_every_steps=0``) once ``checkpoint_every_s`` seconds of training have passed since
the last checkpoint of either kind; never at an epoch's last step (the epoch's own checkpoint
follows). ``ray.train.report`` is collective in Ray Train V2, so the decision is the same on
every rank: by steps it is arithmetic, by time any rank whose clock has run out decides for all
(one 1-element all-reduce per step, next to the step's own).

Resuming mid-epoch on the in-process loader needs the very plan the checkpoint was taken with:
same data, world size and ``loader_workers`` (:func:`plan_fingerprint`); otherwise the resume
is refused with what to do instead (:func:`check_same_plan`).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from trainer.data import EpochPlan
from trainer.distributed import all_reduce_sum

__all__ = ["StepCheckpoints", "plan_fingerprint", "check_same_plan"]


class StepCheckpoints:
    """Decides after each step whether to write a mid-epoch checkpoint (collective when by time).

    Args:
        every_s: seconds of training between checkpoints (0 = off); used when ``every_steps`` is 0.
        every_steps: > 0: after every ``every_steps``-th step of an epoch instead.
        world_size: ranks taking part (the time decision is all-reduced over them).
        clock: monotonic seconds.
    """

    def __init__(self, every_s: float, every_steps: int, world_size: int,
                 clock: Callable[[], float] = time.monotonic):
        self.every_s, self.every_steps, self.world_size, self.clock = every_s, every_steps, world_size, clock
        self._since = clock()

    @property
    def enabled(self) -> bool:
        return self.every_steps > 0 or self.every_s > 0

    def restart_clock(self) -> None:
        """After any checkpoint (and after evaluation, which is not training time)."""
        self._since = self.clock()

    def due(self, step_in_epoch: int, steps_in_epoch: int | None) -> bool:
        """After step ``step_in_epoch`` (1-based) of an epoch of ``steps_in_epoch`` steps (None =
        not known up front). Every rank must call it after every step when checkpoints are by time."""
        if steps_in_epoch is not None and step_in_epoch >= steps_in_epoch:
            return False
        if self.every_steps > 0:
            return step_in_epoch % self.every_steps == 0
        if self.every_s <= 0:
            return False
        mine = self.clock() - self._since >= self.every_s
        return all_reduce_sum([1.0 if mine else 0.0], self.world_size)[0] > 0


def plan_fingerprint(plan: EpochPlan, input_path: str) -> dict:
    """What a mid-epoch position means: the training plan's hash and the settings that shape it."""
    digest = hashlib.sha256(json.dumps(plan.to_dict(), sort_keys=True).encode()).hexdigest()
    return {"sha256": digest, "input": input_path, "world_size": plan.world_size,
            "loader_workers": plan.streams_per_rank, "steps_per_epoch": plan.steps_per_epoch,
            "num_clips": plan.num_clips}


def check_same_plan(saved: dict | None, current: dict, *, epoch: int, step_in_epoch: int, where: str) -> None:
    """Refuse to resume the in-process loader mid-epoch on another plan than the checkpoint's."""
    if current["input"] != "local" or saved == current:
        return
    if saved is None:
        raise ValueError(f"{where}: a mid-epoch checkpoint (epoch {epoch}, step {step_in_epoch}) without its plan; "
                         "resume needs the plan it was taken with")
    differs = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v and k != "sha256"}
    what = ", ".join(f"{k} {a} then, {b} now" for k, (a, b) in differs.items()) or "the data (manifest) changed"
    raise ValueError(
        f"{where} was taken at step {step_in_epoch} of epoch {epoch} of another training plan ({what}). "
        f"A mid-epoch position only means something in the same plan: resume with the same data, "
        f"--workers {saved.get('world_size')} and loader.loader_workers={saved.get('loader_workers')} "
        f"(input={saved.get('input')!r}); or start a new run name (--init-from the last export keeps the weights)")
