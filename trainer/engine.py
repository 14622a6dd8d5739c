"""The training engine shared by N_S training (trainer/loop.py) and network adaptation
(transfer/adapt_train.py): the step, evaluation, and the per-epoch report with its checkpoint.

Augmentation (trainer/augment.py, off unless an ``AugmentConfig`` asks): mixup on the waveforms and
label vectors before the front end, SpecAugment on the log-mel features after it, in the train step
only, from a ``torch.Generator`` the caller seeds (per rank, epoch and step: :func:`augment_generator`).
The weight EMA (:func:`make_ema`) is torch's ``AveragedModel`` with buffers, updated after every step.

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

from trainer.augment import mixup, spec_augment
from trainer.config import AugmentConfig, OptimConfig
from trainer.distributed import all_gather_rows, all_reduce_sum
from trainer.losses import per_clip_loss
from trainer.metrics import clip_metrics, map_by_duration

__all__ = ["DURATION_EDGES_S", "lr_at", "set_lr", "make_optimizer", "augment_generator", "ema_multi_avg_fn", "make_ema",
           "ema_weights", "train_step", "evaluate", "report", "jsonable", "quiet_ray_train_reports"]

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


def make_optimizer(params, optim: OptimConfig) -> torch.optim.Optimizer:
    """Adam with L2 ``weight_decay`` (the default, as before), or AdamW when ``decoupled_weight_decay``."""
    kind = torch.optim.AdamW if optim.decoupled_weight_decay else torch.optim.Adam
    return kind(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)


def augment_generator(seed: int, rank: int, epoch: int, step_in_epoch: int) -> torch.Generator:
    """The augmentation RNG of one rank's step: a function of the four alone, so a run resumed at
    any step (from an epoch's or a mid-epoch checkpoint) draws the same masks and mixtures as an
    uninterrupted one."""
    state = np.random.SeedSequence([seed, rank, epoch, step_in_epoch, 50_000]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31 | int(state[1]) >> 1) % 2**63)


def ema_multi_avg_fn(decay: float):
    """``AveragedModel``'s update with a warm-up of the decay: ``min(decay, (1 + n) / (10 + n))`` after
    ``n`` updates (as TensorFlow's ExponentialMovingAverage with ``num_updates``), so a short run's EMA
    is not dominated by its first, random-ish weights; beyond ~10/(1-decay) updates it is plain EMA."""
    @torch.no_grad()
    def update(ema_params, params, num_averaged) -> None:
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked), as torch's own EMA update does
            for e, p in zip(ema_params, params):
                e.copy_(e * d + p * (1 - d))
    return update


def make_ema(model: torch.nn.Module, decay: float):
    """An exponential moving average of ``model``'s parameters and buffers (BatchNorm statistics),
    with the decay warmed up (:func:`ema_multi_avg_fn`), or None when ``decay`` is 0. Call
    ``ema.update_parameters(model)`` after each optimizer step."""
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(decay), use_buffers=True)


def ema_weights(ema_state: dict) -> dict:
    """The network's own state dict out of an ``AveragedModel`` state dict (drops ``n_averaged``)."""
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}


def train_step(model, frontend, optimizer, batch: dict, *, world_size: int, loss: str = "weak",
               grad_clip: float = 0.0, augment: AugmentConfig | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """One optimizer step on ``batch`` (``waveform (B, N)``, ``lengths (B,)``, ``targets (B, C)``).

    With ``augment`` enabled (needs ``generator``): mixup of waveforms and label vectors, then
    SpecAugment on the log-mel features; the loss is taken against the mixed label vectors.
    The forward pass runs under bf16 autocast on CUDA; the loss is float32 (trainer/losses.py).
    Returns the detached per-clip losses ``(B,)``.
    """
    device = next(model.parameters()).device
    wave, lengths, targets = batch["waveform"], batch["lengths"], batch["targets"]
    augment = augment if augment is not None and augment.enabled else None
    if augment is not None and generator is None:
        raise ValueError("augmentation needs a seeded generator (trainer.engine.augment_generator)")
    if augment is not None and augment.mixup_alpha > 0:
        wave, lengths, targets = mixup(wave, lengths, targets.float(), alpha=augment.mixup_alpha, generator=generator)
    x, n = frontend(wave.to(device, non_blocking=True), lengths.to(device))
    if augment is not None and augment.spec_augment:
        x = spec_augment(x, n, time_masks=augment.time_masks, time_width=augment.time_width,
                         freq_masks=augment.mel_masks, freq_width=augment.mel_width, generator=generator)
    y = targets.to(device)
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
