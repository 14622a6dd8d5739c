"""The per-worker training function that Ray Train runs on every rank.

Read it top to bottom, nanoGPT style: the step, then a meter, a reporter (telemetry, progress,
print) and the epoch's save. The Ray touchpoints are numbered:

  (1) rank / world size / device from the Train context
  (2) restore from ``ray.train.get_checkpoint()`` (resume after a failure or a re-run)
  (3) ``prepare_model``: DDP wrap (gloo on CPU, NCCL on GPU)
  (4) ``ray.train.report`` once per epoch on EVERY rank; rank 0 attaches the checkpoint

``config`` (the ``train_loop_config``) is ``{"train": asdict(TrainConfig), "train_plan": ...,
"eval_plan": ..., "select_plan": ... or None, "vocabulary": [...], "run_dir": URL,
"progress_actor": name or None}``, built by trainer/main.py. ``select_plan`` is the validation
split carved from the training data: its mAP alone chooses ``best/`` and ``best_epoch``; the
eval split is scored every epoch for the curves and the report, never to choose. The mechanics
live in trainer/engine.py (shared with network adaptation), trainer/meter.py, trainer/reporter.py
and trainer/run_state.py.
"""

from __future__ import annotations

import time

import torch

from runtime.telemetry import Telemetry, default_backend
from trainer.config import TrainConfig
from trainer.data import EpochPlan, make_loader
from trainer.distributed import broadcast_buffers
from trainer.engine import (DURATION_EDGES_S, augment_generator, evaluate, lr_at, make_ema, make_optimizer,
                            quiet_ray_train_reports, report, set_lr, train_step)
from trainer.finetune import build_model, train_mode
from trainer.frontend import LogMel
from trainer.meter import EpochMeter
from trainer.reporter import Reporter
from trainer.run_state import METRICS_FILE, RunState, checkpoint_writer, epoch_scalars, resume, write_epoch_files
from trainer.train_metrics import TRAIN_METRICS

__all__ = ["train_loop_per_worker", "lr_at", "METRICS_FILE", "DURATION_EDGES_S"]


def _progress_push(actor_name: str | None, rank: int):
    """A function sending a progress record to the driver's progress actor (None without one)."""
    if not actor_name:
        return None
    import ray

    try:
        actor = ray.get_actor(actor_name)
    except ValueError:
        return None
    return lambda info: actor.update.remote(rank, info)


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    quiet_ray_train_reports()
    cfg = TrainConfig.from_dict(config["train"])
    train_plan = EpochPlan.from_dict(config["train_plan"])
    eval_plan = EpochPlan.from_dict(config["eval_plan"]) if config.get("eval_plan") else None
    select_plan = EpochPlan.from_dict(config["select_plan"]) if config.get("select_plan") else None
    select = cfg.loader.select_split if select_plan is not None else None  # its records: "<select>_mAP", ...
    run_dir, vocabulary = config["run_dir"], config["vocabulary"]
    total_steps = cfg.epochs * train_plan.steps_per_epoch  # for the LR schedule (epochs vary by a few steps)

    # (1) where am I
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)

    model = build_model(cfg).to(device)
    frontend = LogMel(cfg.frontend, min_frames=cfg.model.segment_frames).to(device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optim)
    ema = make_ema(model, cfg.optim.ema_decay)  # None unless the recipe asks; evaluated and exported when on

    # (2) resume: model, optimizer, counters, history and RNG states from the last checkpoint
    state = RunState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = resume(d, model=model, optimizer=optimizer, device=device, ema=ema)
        torch.manual_seed(cfg.seed + rank + 7919 * state.starts)  # fresh dropout/etc. stream per restart
    tel = Telemetry(default_backend(), TRAIN_METRICS, run=cfg.name, rank=rank)
    reporter = Reporter(tel, rank=rank, epochs=cfg.epochs, starts=state.starts,
                        push=_progress_push(config.get("progress_actor"), rank))
    if checkpoint is not None:
        reporter.restarted(state.epoch - 1, state.step)

    # (3) DDP
    model = ray.train.torch.prepare_model(model)
    raw = model.module if hasattr(model, "module") else model
    reporter.say(f"[trainer] {sum(p.numel() for p in raw.parameters()):,} parameters; "
                 f"{train_plan.steps_per_epoch} steps/epoch x {world} ranks; train {train_plan.num_clips} clips "
                 f"({train_plan.audio_seconds / 3600:.2f} h)")

    for epoch in range(state.epoch, cfg.epochs):
        state.epoch = epoch
        train_mode(model, cfg.freeze_blocks)
        loader = make_loader(train_plan, cfg.loader, rank=rank, world_size=world, epoch=epoch, seed=cfg.seed,
                             train=True)
        steps, batches = len(loader), iter(loader)  # the same number of steps on every rank
        generator = augment_generator(cfg.seed, rank, epoch) if cfg.augment.enabled else None
        meter = EpochMeter()
        for i in range(steps):
            t0 = time.perf_counter()
            batch = next(batches)
            wait_s = time.perf_counter() - t0
            lr = set_lr(optimizer, lr_at(state.step, cfg.optim, total_steps))
            per_clip = train_step(model, frontend, optimizer, batch, world_size=world, loss=cfg.loss_target,
                                  grad_clip=cfg.optim.grad_clip, augment=cfg.augment, generator=generator)
            if ema is not None:
                ema.update_parameters(raw)
            state.step += 1
            step_s = time.perf_counter() - t0
            meter.add(per_clip, audio_s=float(batch["lengths"].sum()) / train_plan.sample_rate,
                      wait_s=wait_s, step_s=step_s)
            reporter.step(meter, epoch=epoch, step_in_epoch=i + 1, steps_in_epoch=steps, global_step=state.step,
                          lr=lr, step_s=step_s)
        del batches, loader

        # -- the epoch over all ranks, then evaluation -------------------------------------------
        record = {"epoch": epoch, "step": state.step, "lr": lr_at(state.step - 1, cfg.optim, total_steps),
                  **meter.summary(world), "world_size": world, "start": state.starts}
        scored = raw if ema is None else ema.module  # the weights that are evaluated and exported
        if eval_plan is not None or select_plan is not None:
            broadcast_buffers(scored, world)  # BN statistics drift apart per rank: evaluate rank 0's
        if select_plan is not None:
            t0 = time.perf_counter()
            sv = evaluate(scored, frontend, make_loader(select_plan, cfg.loader, rank=rank, world_size=world,
                                                        epoch=epoch, seed=cfg.seed, train=False), world)
            record.update({f"{select}_mAP": sv["mAP"], f"{select}_auc": sv["mean_auc"],
                           f"{select}_d_prime": sv["d_prime"], f"{select}_clips": sv["num_clips"],
                           f"{select}_seconds": time.perf_counter() - t0})
        if eval_plan is not None:
            t0 = time.perf_counter()
            ev = evaluate(scored, frontend, make_loader(eval_plan, cfg.loader, rank=rank, world_size=world,
                                                        epoch=epoch, seed=cfg.seed, train=False), world)
            record.update({"eval_mAP": ev["mAP"], "eval_auc": ev["mean_auc"], "eval_d_prime": ev["d_prime"],
                           "eval_clips": ev["num_clips"], "eval_seconds": time.perf_counter() - t0,
                           "eval_map_by_duration": ev["map_by_duration"], "eval_per_class_ap": ev["per_class_ap"]})
            reporter.evaluated(ev)
        new_best = state.add_epoch(record, select=select)

        # (4) report on every rank, the checkpoint from rank 0 only
        t0 = time.perf_counter()
        if rank == 0:
            write_epoch_files(run_dir, cfg, state, model=scored, vocabulary=vocabulary, new_best=new_best,
                              select_split=select)
        report(epoch_scalars(record, state), rank=rank,
               write_checkpoint=checkpoint_writer(cfg, state, model=raw, optimizer=optimizer, ema=ema))
        reporter.saved(record, time.perf_counter() - t0)
