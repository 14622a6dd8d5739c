"""A training run's state across epochs and restarts: resume from a checkpoint, and what rank 0
saves after every epoch (``metrics.json``, the best model's export, the checkpoint).

Checkpoints are of two kinds, told apart by ``counters["step_in_epoch"]``: 0 after an epoch
(resume at the next epoch), ``k > 0`` mid-epoch (resume at step ``k`` of the same epoch, with
every rank's partial epoch sums in ``extra["meters"]`` and the plan the position refers to in
``extra["plan"]``, see trainer/mid_epoch.py). Checkpoints without the field are epoch ones.

Model selection is honest: the best epoch is the one with the highest mAP on the *selection* split
(``val``, carved from the training data by prep ``--val-fraction``), never on the eval split whose
numbers are reported. Without a selection split no epoch is "best": the run keeps its last epoch."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch

from runtime import storage
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.engine import jsonable
from trainer.export import export_model

__all__ = ["METRICS_FILE", "BEST_DIR", "RunState", "resume", "epoch_scalars", "write_epoch_files", "checkpoint_writer",
           "step_scalars"]

METRICS_FILE = "metrics.json"
BEST_DIR = "best"


@dataclass
class RunState:
    """Counters and history that travel in every checkpoint."""

    epoch: int = 0  # the epoch being run (after a resume: the one after the checkpoint's, or its own mid-epoch)
    step: int = 0  # optimizer steps done
    step_in_epoch: int = 0  # steps of ``epoch`` done (0 at an epoch's start and in an epoch checkpoint)
    starts: int = 0  # worker-group starts before this one
    best: dict = field(default_factory=lambda: {"mAP": -1.0, "epoch": -1})
    history: list[dict] = field(default_factory=list)
    meters: list[list[float]] | None = None  # mid-epoch: every rank's EpochMeter row (trainer/meter.py)
    plan: dict | None = None  # mid-epoch: trainer.mid_epoch.plan_fingerprint of the position's plan

    def add_epoch(self, record: dict, *, select: str | None = None) -> bool:
        """Append the epoch's record; returns True when its ``<select>_mAP`` is a new best.

        ``select`` is the selection split (``"val"``; its numbers are the record's ``<select>_*``);
        ``None`` never selects, and the eval split may not be used for it."""
        if select == "eval":
            raise ValueError("the eval split reports numbers; it must not choose the model")
        self.history.append(jsonable(record))
        m = record.get(f"{select}_mAP") if select else None
        if m is not None and math.isfinite(m) and m > self.best["mAP"]:
            self.best = {"mAP": m, "epoch": record["epoch"], "split": select}
            return True
        return False


def resume(checkpoint_dir: str, *, model, optimizer, device, ema=None) -> RunState:
    """Model, optimizer, weight-EMA and RNG states from ``checkpoint_dir``; the run continues at the
    next epoch, or at the checkpoint's step of its epoch when it was taken mid-epoch."""
    info = load_checkpoint(checkpoint_dir, model=model, optimizer=optimizer, restore_rng=True, map_location=device)
    if ema is not None:
        if "ema" not in info["extra"]:
            raise ValueError(f"{checkpoint_dir}: the run now asks for a weight EMA, but its checkpoint has none; "
                             "resume with the same optim.ema_decay or start a new run name")
        ema.load_state_dict(info["extra"]["ema"])
    c, extra = info["counters"], info["extra"]
    state = RunState(epoch=c["epoch"] + 1, step=c["step"], starts=c["starts"] + 1, best=extra["best"],
                     history=extra["history"])
    if c.get("step_in_epoch", 0) > 0:
        state.epoch, state.step_in_epoch = c["epoch"], c["step_in_epoch"]
        state.meters, state.plan = extra.get("meters"), extra.get("plan")
    return state


def epoch_scalars(record: dict, state: RunState) -> dict:
    """The numbers of the epoch that Ray Train records with the report."""
    scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and v is not None}
    scalars.update({"best_mAP": state.best["mAP"], "best_epoch": state.best["epoch"]})
    return scalars


def write_epoch_files(run_dir: str, cfg: TrainConfig, state: RunState, *, model: torch.nn.Module,
                      vocabulary: list[dict], new_best: bool, select_split: str | None = None) -> None:
    """``metrics.json`` (every epoch so far) and, on a new best selection-split mAP, the ``best/``
    export of ``model`` (the evaluated weights: the EMA when the run keeps one)."""
    doc = {"run": cfg.name, "config": asdict(cfg), "epochs": state.history, "best": state.best,
           "selection_split": select_split, "vocabulary": vocabulary}
    storage.write_text_atomic(storage.join(run_dir, METRICS_FILE), json.dumps(jsonable(doc), indent=1))
    if new_best:
        export_model(storage.join(run_dir, BEST_DIR), model, frontend=cfg.frontend, architecture=cfg.model,
                     vocabulary=vocabulary, training={"epoch": state.best["epoch"], "step": state.step, **state.best})


def checkpoint_writer(cfg: TrainConfig, state: RunState, *, model: torch.nn.Module, optimizer, ema=None):
    """A function that saves the run's checkpoint (trainer/checkpoint.py) into a directory; the
    weight EMA (an ``AveragedModel``) travels in ``extra["ema"]`` as tensors. Mid-epoch
    (``state.step_in_epoch > 0``) it also holds ``state.meters`` and ``state.plan``."""
    def write(directory: str) -> None:
        extra = {"best": state.best, "history": state.history}
        if ema is not None:
            extra["ema"] = ema.state_dict()
        if state.step_in_epoch > 0:
            extra.update({"meters": state.meters, "plan": state.plan})
        save_checkpoint(directory, model=model, optimizer=optimizer,
                        counters={"epoch": state.epoch, "step": state.step, "starts": state.starts,
                                  "step_in_epoch": state.step_in_epoch},
                        config=asdict(cfg), extra=extra)
    return write


def step_scalars(state: RunState) -> dict:
    """The numbers of a mid-epoch report: a position, never mistaken for an epoch record
    (``metrics.json`` keeps epoch records only; these carry ``mid_epoch: 1``)."""
    return {"epoch": state.epoch, "step": state.step, "step_in_epoch": state.step_in_epoch, "mid_epoch": 1,
            "start": state.starts}
