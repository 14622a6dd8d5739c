"""The training engine shared by N_S training (trainer/loop.py) and network adaptation
(transfer/adapt_train.py): the step, evaluation, and the per-epoch report with its checkpoint.

Loss weighting with variable batch sizes: DDP averages gradients over ranks, so each rank
scales its summed per-clip loss by ``world_size / clips_in_this_step_on_all_ranks``; the
gradient is then the mean over every clip of the step, whatever each rank's batch size.
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Callable

import numpy as np
import torch

from trainer.config import OptimConfig
from trainer.distributed import all_gather_rows, all_reduce_sum
from trainer.losses import per_clip_loss
from trainer.metrics import clip_metrics, map_by_duration

__all__ = ["DURATION_EDGES_S", "lr_at", "set_lr", "train_step", "evaluate", "report", "jsonable",
           "quiet_ray_train_reports"]

DURATION_EDGES_S = (0.0, 2.0, 5.0, 10.0, 30.0, float("inf"))  # for mAP by clip duration


def lr_at(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then constant or cosine."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    progress = min(1.0, (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps))
    return optim.lr * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    """Every parameter group to ``lr`` times its ``lr_scale`` (1 when the group has none); returns ``lr``."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    return lr


def train_step(model, frontend, optimizer, batch: dict, *, world_size: int, loss: str = "weak",
               grad_clip: float = 0.0) -> torch.Tensor:
    """One optimizer step on ``batch`` (``waveform (B, N)``, ``lengths (B,)``, ``targets (B, C)``).

    The forward pass runs under bf16 autocast on CUDA; the loss is float32 (trainer/losses.py).
    Returns the detached per-clip losses ``(B,)``.
    """
    device = next(model.parameters()).device
    x, n = frontend(batch["waveform"].to(device, non_blocking=True), batch["lengths"].to(device))
    y = batch["targets"].to(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model(x, n)
    raw = model.module if hasattr(model, "module") else model
    per_clip = per_clip_loss(loss, out, y, raw.cfg.pooling)
    clips_all = all_reduce_sum([float(per_clip.shape[0])], world_size)[0]
    scaled = per_clip.sum() * (world_size / clips_all)  # DDP's mean over ranks -> mean over all clips
    optimizer.zero_grad(set_to_none=True)
    scaled.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return per_clip.detach()


@torch.no_grad()
def evaluate(model, frontend, loader, world_size: int) -> dict:
    """Full-clip scores of this rank's share of the eval split, gathered from every rank and scored
    (mAP, mean AUC, d', per-class AP, mAP by clip duration)."""
    model.eval()
    device = next(model.parameters()).device
    scores, targets, durations = [], [], []
    for batch in loader:
        x, n = frontend(batch["waveform"].to(device), batch["lengths"].to(device))
        scores.append(model(x, n).clip.float().cpu())
        targets.append(batch["targets"])
        durations.append(batch["durations"])
    c = model.cfg.num_classes
    s = torch.cat(scores) if scores else torch.zeros(0, c)
    t = torch.cat(targets) if targets else torch.zeros(0, c)
    d = torch.cat(durations) if durations else torch.zeros(0, dtype=torch.float64)
    s, t, d = (all_gather_rows(v, world_size).numpy() for v in (s, t, d))
    m = clip_metrics(t, s)
    return {"mAP": m["mAP"], "mean_auc": m["mean_auc"], "d_prime": m["d_prime"],
            "num_clips": m["num_clips"], "num_classes_scored": m["num_classes_scored"],
            "per_class_ap": [None if np.isnan(v) else float(v) for v in m["per_class_ap"]],
            "map_by_duration": map_by_duration(t, s, d, DURATION_EDGES_S)}


def jsonable(x):
    """``x`` with non-finite floats as None (strict JSON), recursively through dicts and lists."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def report(metrics: dict, *, rank: int, write_checkpoint: Callable[[str], object] | None = None) -> None:
    """``ray.train.report`` on every rank (Ray Train waits for all of them); on rank 0 with the
    checkpoint that ``write_checkpoint(directory)`` writes into a temporary folder."""
    import ray.train

    if rank != 0 or write_checkpoint is None:
        ray.train.report(jsonable(metrics), checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="weaksound-ckpt-") as d:
        write_checkpoint(d)
        ray.train.report(jsonable(metrics), checkpoint=ray.train.Checkpoint.from_directory(d))


def quiet_ray_train_reports() -> None:
    """Ray Train V2 logs every report with all its metrics at INFO on every rank; our own
    one-line epoch summary and the driver's progress bar say the same, once."""
    import logging

    from ray.train.v2._internal.execution import context as ray_train_context

    logging.getLogger(ray_train_context.__file__).setLevel(logging.WARNING)
