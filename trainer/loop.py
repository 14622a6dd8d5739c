"""The per-worker training function that Ray Train runs on every rank.

Read it top to bottom, nanoGPT style: the step, then a meter, a reporter (telemetry, progress,
print), the mid-epoch checkpoint and the epoch's save. The Ray touchpoints are numbered:

  (1) rank / world size / device from the Train context
  (2) restore from ``ray.train.get_checkpoint()`` (resume after a failure or a re-run), at the
      next epoch or, from a mid-epoch checkpoint, at the very step it was taken
  (3) ``prepare_model``: DDP wrap (gloo on CPU, NCCL on GPU)
  (4) the epoch's batches: the in-process loader, or ``ray.train.get_dataset_shard("train")``
      with ``loader.input="ray_data"`` (trainer/train_input.py)
  (5) ``ray.train.report`` on EVERY rank (collective in Train V2), rank 0 attaching the
      checkpoint: mid-epoch every ``checkpoint_every_steps`` steps or ``checkpoint_every_s``
      seconds (metrics ``{epoch, step, step_in_epoch, mid_epoch: 1}``), and after every epoch
      (the epoch record)

Resume guarantees. From an epoch checkpoint: the next epoch, as before. From a mid-epoch one
with ``input="local"``: the loader yields exactly batches ``k..`` of the uninterrupted epoch,
every step's augmentation RNG is a function of (seed, rank, epoch, step) (trainer/mid_epoch.py),
and the epoch meter continues from every rank's saved sums, so the epoch trains on each planned
clip once and its record counts each once; the steps between the checkpoint and the failure
are redone (at most ``checkpoint_every_steps`` steps, or ``checkpoint_every_s`` seconds). It
needs the same plan (data, world size, loader_workers) and refuses otherwise. With
``input="ray_data"`` the epoch's data restarts from its beginning and its first ``k`` batches
per rank are skipped untrained: Ray Data has no iterator checkpoint, so that epoch's clips are
approximately, not exactly, the planned ones (trainer/train_input.py). ``clip_log`` records the
clip ids of every step on every rank (trainer/clip_log.py), an audit of exactly this.

``config`` (the ``train_loop_config``) is ``{"train": asdict(TrainConfig), "train_plan": ...,
"eval_plan": ..., "select_plan": ... or None, "vocabulary": [...], "run_dir": URL,
"progress_actor": name or None}``, built by trainer/main.py. ``select_plan`` is the validation
split carved from the training data: its mAP alone chooses ``best/`` and ``best_epoch``; the
eval split is scored every epoch for the curves and the report, never to choose. The mechanics
live in trainer/engine.py (shared with network adaptation), trainer/meter.py, trainer/reporter.py,
trainer/run_state.py, trainer/mid_epoch.py, trainer/train_input.py and trainer/clip_log.py.
"""

from __future__ import annotations

import time

import torch

from runtime.telemetry import Telemetry, default_backend
from trainer.config import TrainConfig
from trainer.data import EpochPlan, make_loader
from trainer.distributed import broadcast_buffers
from trainer.clip_log import ClipLog
from trainer.engine import (DURATION_EDGES_S, augment_generator, evaluate, lr_at, make_ema, make_optimizer,
                            quiet_ray_train_reports, report, set_lr, train_step)
from trainer.finetune import build_model, train_mode
from trainer.frontend import LogMel
from trainer.meter import EpochMeter
from trainer.mid_epoch import StepCheckpoints, check_same_plan, plan_fingerprint
from trainer.reporter import Reporter
from trainer.run_state import (METRICS_FILE, RunState, checkpoint_writer, epoch_scalars, resume, step_scalars,
                               write_epoch_files)
from trainer.train_input import epoch_batches
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
    plan_id = plan_fingerprint(train_plan, cfg.loader.input)
    if state.step_in_epoch:
        check_same_plan(state.plan, plan_id, epoch=state.epoch, step_in_epoch=state.step_in_epoch,
                        where=f"the checkpoint {checkpoint.path}")
    state.plan = plan_id
    tel = Telemetry(default_backend(), TRAIN_METRICS, run=cfg.name, rank=rank)
    reporter = Reporter(tel, rank=rank, epochs=cfg.epochs, starts=state.starts,
                        push=_progress_push(config.get("progress_actor"), rank))
    if checkpoint is not None:
        reporter.restarted(state.epoch - (0 if state.step_in_epoch else 1), state.step, state.step_in_epoch)
    saves = StepCheckpoints(cfg.checkpoint_every_s, cfg.checkpoint_every_steps, world)
    clip_log = ClipLog(run_dir, rank=rank, start=state.starts) if cfg.clip_log else None

    # (3) DDP
    model = ray.train.torch.prepare_model(model)
    raw = model.module if hasattr(model, "module") else model
    reporter.say(f"[trainer] {sum(p.numel() for p in raw.parameters()):,} parameters; "
                 f"{train_plan.steps_per_epoch} steps/epoch x {world} ranks; train {train_plan.num_clips} clips "
                 f"({train_plan.audio_seconds / 3600:.2f} h); input {cfg.loader.input}")

    for epoch in range(state.epoch, cfg.epochs):
        state.epoch = epoch
        train_mode(model, cfg.freeze_blocks)
        # (4) this epoch's batches from the resumed step on (0 unless resuming mid-epoch)
        batches, steps = epoch_batches(cfg, train_plan, rank=rank, world_size=world, epoch=epoch,
                                       start_step=state.step_in_epoch, log=reporter.say)
        meter = EpochMeter.from_row(state.meters[rank] if state.meters and len(state.meters) == world else None)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)  # every rank gets as many batches
            if batch is None:
                break
            wait_s = time.perf_counter() - t0
            lr = set_lr(optimizer, lr_at(state.step, cfg.optim, total_steps))
            generator = augment_generator(cfg.seed, rank, epoch, state.step_in_epoch) if cfg.augment.enabled else None
            per_clip = train_step(model, frontend, optimizer, batch, world_size=world, loss=cfg.loss_target,
                                  grad_clip=cfg.optim.grad_clip, augment=cfg.augment, generator=generator)
            if ema is not None:
                ema.update_parameters(raw)
            if clip_log is not None:
                clip_log.write(epoch=epoch, step_in_epoch=state.step_in_epoch, clip_ids=batch["keys"])
            state.step += 1
            state.step_in_epoch += 1
            step_s = time.perf_counter() - t0
            meter.add(per_clip, audio_s=float(batch["lengths"].sum()) / train_plan.sample_rate,
                      wait_s=wait_s, step_s=step_s)
            reporter.step(meter, epoch=epoch, step_in_epoch=state.step_in_epoch,
                          steps_in_epoch=steps or train_plan.steps_per_epoch, global_step=state.step, lr=lr,
                          step_s=step_s)
            # (5a) mid-epoch checkpoint: the same decision on every rank, as the report is collective
            if saves.due(state.step_in_epoch, steps):
                t0 = time.perf_counter()
                state.meters = meter.gather(world)
                report(step_scalars(state), rank=rank,
                       write_checkpoint=checkpoint_writer(cfg, state, model=raw, optimizer=optimizer, ema=ema))
                saves.restart_clock()
                reporter.step_saved(epoch=epoch, step_in_epoch=state.step_in_epoch, global_step=state.step,
                                    seconds=time.perf_counter() - t0)
        del batches
        state.step_in_epoch, state.meters = 0, None  # the epoch's checkpoint is an epoch one

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

        # (5b) the epoch's report on every rank, the checkpoint from rank 0 only
        t0 = time.perf_counter()
        if rank == 0:
            write_epoch_files(run_dir, cfg, state, model=scored, vocabulary=vocabulary, new_best=new_best,
                              select_split=select)
        report(epoch_scalars(record, state), rank=rank,
               write_checkpoint=checkpoint_writer(cfg, state, model=raw, optimizer=optimizer, ema=ema))
        saves.restart_clock()  # evaluation is not training time
        reporter.saved(record, time.perf_counter() - t0)
    if clip_log is not None:
        clip_log.close()
