"""One adaptation fit: Ray Train on the training folds' clips, with the trainer's engine.

Per test fold k the adapted network is trained with Ray Train (``TorchTrainer``, V2 API) on the
audio of the clips of the *other* folds only: the driver passes the training clip ids, each
worker reads the dataset's shards, keeps only those clips (refusing any clip of fold k) and
holds its share of them in memory (16-bit, as stored). The step, the loss (trainer/losses.py:
``bce`` = the weak-label loss on one-hot targets, ``ce`` = softmax cross-entropy of the pooled
logits), the DDP helpers and the report are trainer/engine.py's, as for N_S.

The fit reports once, at its end, with a trainer checkpoint (trainer/checkpoint.py) whose extra
``adapt`` entry holds the adaptation record; the driver exports the adapted network from it like
N_S (``model.safetensors`` + ``config.json``, trainer/export.py, with the target's vocabulary)
and writes the record beside it as ``adapt.json`` (format ``weaksound-adapted/1``).
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from transfer.adapt_network import LOSS_NAMES, AdaptConfig, AdaptSpec, build_adapted, frozen_block_count

__all__ = ["ADAPTED_FORMAT", "META", "FitResult", "adapt_loop_per_worker", "clip_batch", "fit_adapted",
           "load_training_clips", "target_vocabulary"]

ADAPTED_FORMAT = "weaksound-adapted/1"
META = "adapt.json"


def load_training_clips(shard_urls: Sequence[str], train_ids: Sequence[str], test_fold: int, *,
                        rank: int = 0, world: int = 1) -> list[tuple[str, np.ndarray, int]]:
    """(clip id, int16 waveform, label) of this rank's share of ``train_ids``, sorted by clip id.

    Rank r keeps every ``world``-th id of the sorted list starting at r. Clips not listed are
    dropped as soon as their metadata is read; a listed clip that belongs to ``test_fold``, has
    not exactly one label, or is missing from the shards raises ``ValueError``.
    """
    from data_prep.manifest import read_samples

    ordered = sorted(set(train_ids))
    mine = set(ordered[rank::world])
    got: dict[str, tuple[np.ndarray, int]] = {}
    for url in shard_urls:
        for s in read_samples(url):
            cid = s.meta["clip_id"]
            if cid not in mine:
                continue
            if int(s.meta.get("fold") or 0) == int(test_fold):
                raise ValueError(f"clip {cid} is listed for training but belongs to test fold {test_fold}")
            if len(s.meta["labels"]) != 1:
                raise ValueError(f"clip {cid} has labels {s.meta['labels']}; adaptation needs one label per clip")
            pcm = np.clip(np.round(s.audio * 32767.0), -32768, 32767).astype(np.int16)
            got[cid] = (pcm, int(s.meta["labels"][0]))
    missing = sorted(mine - set(got))
    if missing:
        raise ValueError(f"{len(missing)} training clips are not in the shards (e.g. {missing[:3]})")
    return [(cid, *got[cid]) for cid in sorted(got)]


def clip_batch(clips, idx, rng: np.random.Generator, crop: int, num_classes: int) -> dict:
    """The engine's batch (``waveform``, ``lengths``, one-hot ``targets``) of the clips at ``idx``;
    clips longer than ``crop`` samples (0 = never) are cut at a random start drawn from ``rng``."""
    import torch

    from trainer.collate import pad_waveforms

    waves, labels = [], []
    for i in idx:
        _, pcm, label = clips[i]
        if crop and pcm.size > crop:
            start = int(rng.integers(0, pcm.size - crop + 1))
            pcm = pcm[start:start + crop]
        waves.append(pcm.astype(np.float32) / 32768.0)
        labels.append(label)
    wave, lengths = pad_waveforms(waves)
    targets = torch.nn.functional.one_hot(torch.tensor(labels, dtype=torch.long), num_classes).float()
    return {"waveform": wave, "lengths": lengths, "targets": targets}


def adapt_loop_per_worker(config: dict) -> None:
    """Ray Train worker: fine-tune the adapted network on this rank's share of the training clips.

    ``config``: {"model_url", "spec", "adapt", "num_classes", "shard_urls", "train_clip_ids",
    "test_fold"}. Reports once, after the last epoch; rank 0 attaches the checkpoint.
    """
    import ray.train
    import ray.train.torch
    import torch

    from trainer.checkpoint import save_checkpoint
    from trainer.distributed import all_gather_rows, broadcast_buffers
    from trainer.engine import quiet_ray_train_reports, report, train_step
    from trainer.export import load_exported
    from trainer.finetune import param_groups, train_mode
    from trainer.meter import EpochMeter

    quiet_ray_train_reports()
    spec, cfg = AdaptSpec(**config["spec"]), AdaptConfig(**config["adapt"])
    num_classes, test_fold = int(config["num_classes"]), int(config["test_fold"])
    ordered = sorted(set(config["train_clip_ids"]))

    # (1) where am I
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)

    exported = load_exported(config["model_url"])
    model = build_adapted(exported.model, spec, num_classes, seed=cfg.seed).to(device)
    frozen = frozen_block_count(model, spec)
    frontend = exported.log_mel().to(device)
    rate = exported.frontend.sample_rate
    clips = load_training_clips(config["shard_urls"], ordered, test_fold, rank=rank, world=world)
    crop = int(round(cfg.crop_seconds * rate))
    # every rank runs the same number of steps: the largest share decides, smaller ones wrap around
    steps = max(1, int(math.ceil(int(math.ceil(len(ordered) / world)) / cfg.batch_clips)))
    optimizer = torch.optim.Adam(param_groups(model, cfg.lr, cfg.finetune_lr_scale))

    # (2) DDP (gloo on CPU, NCCL on GPU)
    model = ray.train.torch.prepare_model(model)
    raw = model.module if hasattr(model, "module") else model
    history, started = [], time.perf_counter()
    for epoch in range(cfg.epochs):
        train_mode(model, frozen)
        rng = np.random.default_rng([cfg.seed, epoch, rank])
        order = np.resize(rng.permutation(len(clips)), steps * cfg.batch_clips)  # wrap to the common step count
        meter = EpochMeter()
        for s in range(steps):
            t0 = time.perf_counter()
            batch = clip_batch(clips, order[s * cfg.batch_clips:(s + 1) * cfg.batch_clips], rng, crop, num_classes)
            per_clip = train_step(model, frontend, optimizer, batch, world_size=world, loss=LOSS_NAMES[cfg.loss],
                                  grad_clip=cfg.grad_clip)
            meter.add(per_clip, audio_s=float(batch["lengths"].sum()) / rate, wait_s=0.0,
                      step_s=time.perf_counter() - t0)
        history.append({"epoch": epoch, "loss": meter.summary(world)["train_loss"]})
        if rank == 0:
            print(f"[adapt] {spec.network} test fold {test_fold}: epoch {epoch + 1}/{cfg.epochs} "
                  f"loss {history[-1]['loss']:.4f}", flush=True)

    # what every rank trained on, gathered as positions in the sorted id list
    pos = {cid: i for i, cid in enumerate(ordered)}
    seen = sorted(ordered[i] for i in all_gather_rows(torch.tensor([pos[c[0]] for c in clips], dtype=torch.long),
                                                       world).tolist())
    broadcast_buffers(raw, world)  # BatchNorm statistics drift apart per rank: keep rank 0's

    # (3) one report per fit, on every rank; the checkpoint from rank 0
    meta = {"format": ADAPTED_FORMAT, "source_model": config["model_url"], "spec": asdict(spec),
            "adapt": asdict(cfg), "num_classes": num_classes, "test_fold": test_fold,
            "train_clip_ids": seen, "history": history, "world_size": world}
    metrics = {"loss": history[-1]["loss"], "train_clips": len(seen), "seconds": time.perf_counter() - started}
    report(metrics, rank=rank, write_checkpoint=lambda d: save_checkpoint(
        d, model=raw, optimizer=optimizer, counters={"epoch": cfg.epochs - 1, "step": cfg.epochs * steps, "starts": 0},
        config={"spec": asdict(spec), "adapt": asdict(cfg)}, extra={"adapt": meta}))


@dataclass
class FitResult:
    spec: AdaptSpec
    test_fold: int
    export_url: str  # the adapted network's export (model.safetensors + config.json + adapt.json)
    config: dict  # its config.json
    weights: bytes  # its model.safetensors
    meta: dict  # adapt.json
    seconds: float


def target_vocabulary(class_names: Sequence[str]) -> list[dict]:
    """The export vocabulary of a target task: its class names, in label order."""
    return [{"index": i, "id": str(n), "name": str(n)} for i, n in enumerate(class_names)]


def fit_adapted(model_url: str, shard_urls: Sequence[str], train_clip_ids: Sequence[str],
                class_names: Sequence[str], test_fold: int, spec: AdaptSpec, cfg: AdaptConfig, *,
                storage_path: str, run_name: str, export_url: str) -> FitResult:
    """One Ray Train fit of one adapted network for one test fold, exported to ``export_url``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from trainer.checkpoint import load_checkpoint
    from trainer.export import export_model, load_exported, read_export_files

    if len(set(train_clip_ids)) < cfg.workers:
        raise ValueError(f"{len(set(train_clip_ids))} training clips cannot be shared by {cfg.workers} workers")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # read by the Train controller only
    started = time.perf_counter()
    num_classes = len(class_names)
    trainer = TorchTrainer(
        adapt_loop_per_worker,
        train_loop_config={"model_url": model_url, "spec": asdict(spec), "adapt": asdict(cfg),
                           "num_classes": num_classes, "shard_urls": list(shard_urls),
                           "train_clip_ids": sorted(train_clip_ids), "test_fold": int(test_fold)},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name=run_name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=0),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"adaptation {spec.network} fold {test_fold} reported no checkpoint")
    source = load_exported(model_url)
    model = build_adapted(source.model, spec, num_classes, seed=cfg.seed)
    with result.checkpoint.as_directory() as d:
        meta = load_checkpoint(d, model=model, restore_rng=False)["extra"]["adapt"]
    leaked = sorted(set(meta["train_clip_ids"]) - set(train_clip_ids))
    if leaked or len(meta["train_clip_ids"]) != len(set(train_clip_ids)):
        raise RuntimeError(f"adaptation {spec.network} fold {test_fold} trained on clips it was not given "
                           f"({leaked[:3]}) or missed some")
    export_model(export_url, model.eval(), frontend=source.frontend, architecture=model.cfg,
                 vocabulary=target_vocabulary(class_names),
                 training={"network": spec.network, "source_model": model_url, "test_fold": int(test_fold),
                           "loss": meta["history"][-1]["loss"]},
                 extra_files={META: json.dumps(meta, indent=1).encode()})  # one published version, atomically
    config, weights, _version = read_export_files(export_url)
    return FitResult(spec, int(test_fold), export_url, json.loads(config), weights, meta,
                     time.perf_counter() - started)
