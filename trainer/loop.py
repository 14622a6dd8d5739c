"""The per-worker training function that Ray Train runs on every rank.

Read it top to bottom, nanoGPT style. The Ray touchpoints are numbered:

  (1) rank / world size / device from the Train context
  (2) restore from ``ray.train.get_checkpoint()`` (resume after a failure or a re-run)
  (3) ``prepare_model``: DDP wrap (gloo on CPU, NCCL on GPU)
  (4) ``ray.train.report`` once per epoch on EVERY rank; rank 0 attaches the checkpoint

``config`` (the ``train_loop_config``) is ``{"train": asdict(TrainConfig), "train_plan": ...,
"eval_plan": ..., "vocabulary": [...], "run_dir": URL, "progress_actor": name or None}``,
built by trainer/main.py.

Loss weighting with variable batch sizes: DDP averages gradients over ranks, so each rank
scales its summed per-clip loss by ``world_size / clips_in_this_step_on_all_ranks``; the
gradient is then the mean over every clip of the step, whatever each rank's batch size.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from runtime import storage
from runtime.telemetry import Telemetry, default_backend
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import OptimConfig, TrainConfig
from trainer.data import EpochPlan, make_loader
from trainer.export import export_model
from trainer.frontend import LogMel
from trainer.metrics import clip_metrics, map_by_duration
from trainer.model import WeakLabelCNN
from trainer.train_metrics import TRAIN_METRICS

__all__ = ["train_loop_per_worker", "lr_at", "METRICS_FILE", "DURATION_EDGES_S"]

METRICS_FILE = "metrics.json"
DURATION_EDGES_S = (0.0, 2.0, 5.0, 10.0, 30.0, float("inf"))  # for mAP by clip duration


def lr_at(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then constant or cosine."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    progress = min(1.0, (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps))
    return optim.lr * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _all_reduce_sum(values: list[float], world_size: int) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if world_size > 1:
        dist.all_reduce(t)
    return t.tolist()


def _all_gather_rows(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """Concatenate ``(n_r, ...)`` tensors of different ``n_r`` from every rank (no pickle)."""
    if world_size == 1:
        return x
    n = torch.tensor([x.shape[0]], dtype=torch.long)
    counts = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(counts, n)
    top = int(max(c.item() for c in counts))
    padded = torch.zeros((top, *x.shape[1:]), dtype=x.dtype)
    padded[:x.shape[0]] = x
    parts = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(c.item())] for p, c in zip(parts, counts)])


@torch.no_grad()
def evaluate(model, frontend, loader, device, world_size: int) -> dict:
    """Full-clip scores on this rank's share of the eval split, gathered from every rank."""
    model.eval()
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
    s, t, d = (_all_gather_rows(v, world_size).numpy() for v in (s, t, d))
    m = clip_metrics(t, s)
    return {"mAP": m["mAP"], "mean_auc": m["mean_auc"], "d_prime": m["d_prime"],
            "num_clips": m["num_clips"], "num_classes_scored": m["num_classes_scored"],
            "per_class_ap": [None if np.isnan(v) else float(v) for v in m["per_class_ap"]],
            "map_by_duration": map_by_duration(t, s, d, DURATION_EDGES_S)}


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _progress_handle(name: str | None):
    if not name:
        return None
    import ray

    try:
        return ray.get_actor(name)
    except ValueError:
        return None


def quiet_ray_train_reports() -> None:
    """Ray Train V2 logs every report with all its metrics at INFO on every rank; our own
    one-line epoch summary and the driver's progress bar say the same, once."""
    import logging

    from ray.train.v2._internal.execution import context as ray_train_context

    logging.getLogger(ray_train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    quiet_ray_train_reports()
    import ray.train.torch

    # -- config --------------------------------------------------------------------------------
    cfg = TrainConfig.from_dict(config["train"])
    train_plan = EpochPlan.from_dict(config["train_plan"])
    eval_plan = EpochPlan.from_dict(config["eval_plan"]) if config.get("eval_plan") else None
    run_dir = config["run_dir"]
    steps_per_epoch = train_plan.steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch

    # (1) where am I
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    use_cuda = device.type == "cuda"
    torch.manual_seed(cfg.seed + rank)
    tel = Telemetry(default_backend(), TRAIN_METRICS, run=cfg.name, rank=rank)
    progress = _progress_handle(config.get("progress_actor"))

    model = WeakLabelCNN(cfg.model, cfg.frontend.n_mels).to(device)
    frontend = LogMel(cfg.frontend, min_frames=cfg.model.segment_frames).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                 weight_decay=cfg.optim.weight_decay)

    # (2) resume: model, optimizer, counters, history and RNG states from the last checkpoint
    start_epoch, step, starts, best = 0, 0, 0, {"mAP": -1.0, "epoch": -1}
    history: list[dict] = []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            info = load_checkpoint(d, model=model, optimizer=optimizer, restore_rng=True,
                                   map_location=device)
        c = info["counters"]
        start_epoch, step, starts = c["epoch"] + 1, c["step"], c["starts"] + 1
        best, history = info["extra"]["best"], info["extra"]["history"]
        torch.manual_seed(cfg.seed + rank + 7919 * starts)  # fresh dropout/etc. stream per restart
        tel.counter("weaksound_train_restarts_total").inc(1)
        if rank == 0:
            print(f"[trainer] resumed from epoch {c['epoch']} (step {step}); start #{starts}", flush=True)

    # (3) DDP
    model = ray.train.torch.prepare_model(model)
    raw = model.module if hasattr(model, "module") else model
    if rank == 0:  # (the driver prints the whole config once, before the fit)
        print(f"[trainer] {sum(p.numel() for p in raw.parameters()):,} parameters; {steps_per_epoch} steps/epoch "
              f"x {world} ranks; train {train_plan.num_clips} clips ({train_plan.audio_seconds / 3600:.2f} h)",
              flush=True)

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        loader = make_loader(train_plan, cfg.loader, rank=rank, world_size=world, epoch=epoch, seed=cfg.seed,
                             train=True)
        batches = iter(loader)
        sums = {"loss": 0.0, "clips": 0.0, "audio_s": 0.0, "wait_s": 0.0, "step_s": 0.0}
        last_push = 0.0
        for i in range(steps_per_epoch):
            t0 = time.perf_counter()
            batch = next(batches)  # infinite stream: never StopIteration
            t_data = time.perf_counter() - t0
            lr = lr_at(step, cfg.optim, total_steps)
            for g in optimizer.param_groups:
                g["lr"] = lr

            x, n = frontend(batch["waveform"].to(device, non_blocking=True), batch["lengths"].to(device))
            y = batch["targets"].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_cuda):
                out = model(x, n)
            # BCE on pooled probabilities, in float32 (binary_cross_entropy is unsafe under autocast)
            per_clip = F.binary_cross_entropy(out.clip.float().clamp(1e-7, 1 - 1e-7), y,
                                              reduction="none").mean(dim=1)  # (B,)
            clips_all = _all_reduce_sum([float(per_clip.shape[0])], world)[0]
            loss = per_clip.sum() * (world / clips_all)  # DDP's mean over ranks -> mean over all clips
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            step += 1

            # bookkeeping (the .item() is a device sync; once per step is fine for a CNN this size)
            step_s = time.perf_counter() - t0
            b_loss = float(per_clip.detach().sum().item())
            sums["loss"] += b_loss
            sums["clips"] += per_clip.shape[0]
            sums["audio_s"] += float(batch["lengths"].sum()) / train_plan.sample_rate
            sums["wait_s"] += t_data
            sums["step_s"] += step_s
            tel.counter("weaksound_train_steps_total").inc(1)
            tel.histogram("weaksound_train_step_seconds").observe(step_s)
            now = time.perf_counter()
            if now - last_push > 0.5 or i == steps_per_epoch - 1:
                last_push = now
                rate = sums["clips"] / max(sums["step_s"], 1e-9)
                tel.gauge("weaksound_train_loss").set(b_loss / per_clip.shape[0])
                tel.gauge("weaksound_train_learning_rate").set(lr)
                tel.gauge("weaksound_train_clips_per_second").set(rate)
                tel.gauge("weaksound_train_audio_seconds_per_second").set(sums["audio_s"] / max(sums["step_s"], 1e-9))
                tel.gauge("weaksound_train_data_wait_fraction").set(sums["wait_s"] / max(sums["step_s"], 1e-9))
                if progress is not None:
                    progress.update.remote(rank, {
                        "pid": os.getpid(), "epoch": epoch, "epochs": cfg.epochs, "step_in_epoch": i + 1,
                        "steps_per_epoch": steps_per_epoch, "global_step": step,
                        "loss": sums["loss"] / sums["clips"], "clips_per_s": rate,
                        "data_wait": sums["wait_s"] / max(sums["step_s"], 1e-9), "starts": starts})
        del batches, loader

        # -- epoch summary over all ranks -------------------------------------------------------
        tot = _all_reduce_sum([sums["loss"], sums["clips"], sums["audio_s"], sums["wait_s"], sums["step_s"]], world)
        steps_per_rank = _all_gather_rows(torch.tensor([steps_per_epoch]), world).tolist()
        record = {"epoch": epoch, "step": step, "lr": lr_at(step - 1, cfg.optim, total_steps),
                  "train_loss": tot[0] / tot[1], "train_clips": int(tot[1]), "train_audio_s": tot[2],
                  "clips_per_s": tot[1] / (tot[4] / world), "audio_s_per_s": tot[2] / (tot[4] / world),
                  "data_wait_fraction": tot[3] / tot[4], "steps_per_rank": steps_per_rank,
                  "world_size": world, "start": starts}
        eval_result = None
        if eval_plan is not None:
            t0 = time.perf_counter()
            if world > 1:  # BN running stats drift apart per rank after the last step: use rank 0's
                for buf in raw.buffers():
                    dist.broadcast(buf, src=0)
            eval_loader = make_loader(eval_plan, cfg.loader, rank=rank, world_size=world, epoch=epoch,
                                      seed=cfg.seed, train=False)
            eval_result = evaluate(raw, frontend, eval_loader, device, world)
            record.update({"eval_mAP": eval_result["mAP"], "eval_auc": eval_result["mean_auc"],
                           "eval_d_prime": eval_result["d_prime"], "eval_clips": eval_result["num_clips"],
                           "eval_seconds": time.perf_counter() - t0,
                           "eval_map_by_duration": eval_result["map_by_duration"],
                           "eval_per_class_ap": eval_result["per_class_ap"]})
            tel.gauge("weaksound_train_eval_map").set(eval_result["mAP"] if math.isfinite(eval_result["mAP"]) else 0)
            tel.gauge("weaksound_train_eval_auc").set(
                eval_result["mean_auc"] if math.isfinite(eval_result["mean_auc"]) else 0)
        history.append(_jsonable(record))
        new_best = eval_result is not None and math.isfinite(eval_result["mAP"]) and eval_result["mAP"] > best["mAP"]
        if new_best:
            best = {"mAP": eval_result["mAP"], "epoch": epoch}

        # (4) report on every rank, the checkpoint from rank 0 only
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and v is not None}
        scalars.update({"best_mAP": best["mAP"], "best_epoch": best["epoch"]})
        if rank == 0:
            t0 = time.perf_counter()
            metrics_doc = {"run": cfg.name, "config": asdict(cfg), "epochs": history, "best": best,
                           "vocabulary": config.get("vocabulary", [])}
            storage.write_text_atomic(storage.join(run_dir, METRICS_FILE), json.dumps(_jsonable(metrics_doc), indent=1))
            if new_best:
                export_model(storage.join(run_dir, "best"), raw, frontend=cfg.frontend, architecture=cfg.model,
                             vocabulary=config["vocabulary"], training={"epoch": epoch, "step": step, **best})
            with tempfile.TemporaryDirectory(prefix="weaksound-ckpt-") as d:
                save_checkpoint(d, model=raw, optimizer=optimizer,
                                counters={"epoch": epoch, "step": step, "starts": starts},
                                config=asdict(cfg), extra={"best": best, "history": history})
                ray.train.report(_jsonable(scalars), checkpoint=ray.train.Checkpoint.from_directory(d))
            tel.histogram("weaksound_train_checkpoint_seconds").observe(time.perf_counter() - t0)
            print(f"[trainer] epoch {epoch}: loss {record['train_loss']:.4f}"
                  + (f", eval mAP {record['eval_mAP']:.4f} AUC {record['eval_auc']:.4f} d' {record['eval_d_prime']:.3f}"
                     if eval_result is not None else "")
                  + f", {record['clips_per_s']:.1f} clips/s, data wait {100 * record['data_wait_fraction']:.0f}%",
                  flush=True)
        else:
            ray.train.report(_jsonable(scalars), checkpoint=None)
