"""Network adaptation N_T^I / N_T^II / N_T^III (paper section 3.4), one Ray Train fit per test fold.

Working definitions (shared/paper.md 3.4; the paper's own text could not be read, so these are
configurable presets, see ``AdaptSpec``):

==========  ==================================================================================
N_T^I       N_S with F2 replaced by a new 1x1 conv of C_T filters; the whole network fine-tuned
N_T^II      N_T^I plus one new 1x1 conv + ReLU layer between F1 and the new output layer
N_T^III     N_T^I (or II, ``--iii-base II``) with the conv blocks B1..B6 frozen (weights and
            BatchNorm statistics); F1 and the new layers are trained
==========  ==================================================================================

Per test fold k the adapted network is trained with Ray Train (``TorchTrainer``, V2 API) on the
audio of the clips of the *other* folds only: the driver passes the training clip ids, each
worker reads the dataset's shards, keeps only those clips (refusing any clip of fold k) and
holds its share of them in memory (16-bit, as stored). Loss: sigmoid + BCE on one-hot targets
of the pooled clip output (N_S's own design) or softmax cross-entropy on the pooled logits.
The fit reports once, at its end, with the adapted weights (safetensors) and the clip ids it
trained on. F1 and F2 (max/avg) are then re-extracted from the adapted network for every clip
(one Ray task per shard) and scored with the SVM protocol for test fold k only. (The SVM's
inner validation then runs on features of a network that was trained on those same training
folds, which flatters the inner scores a little, as in the paper's protocol; the test fold stays
unseen by both the network and the choice of C.)

Stored per fit under ``adapted/<task>/N_T-<variant>/fold<k>/``: ``model.safetensors`` (the
adapted network's state dict) and ``adapt.json`` (format ``weaksound-adapted/1``: source model
URL, spec, settings, test fold, the training clip ids, loss per epoch). ``_adapted_model``
rebuilds the network from the source model's export plus the spec; no pickle anywhere.
"""
from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = [
    "ADAPTED_FORMAT",
    "AdaptConfig",
    "AdaptSpec",
    "FitResult",
    "NETWORK_NAMES",
    "adapt_loop_per_worker",
    "adapted_features",
    "build_adapted",
    "clip_loss",
    "fit_adapted",
    "load_training_clips",
    "merge_fold_results",
    "run_adaptation",
    "variant_spec",
]

ADAPTED_FORMAT = "weaksound-adapted/1"
WEIGHTS = "model.safetensors"
META = "adapt.json"
NETWORK_NAMES = {"I": "N_T^I", "II": "N_T^II", "III": "N_T^III"}
ADAPT_FEATURE_SETS = ("F1 max", "F1 avg", "F2 max", "F2 avg")  # the paper's grid


@dataclass(frozen=True)
class AdaptSpec:
    """What changes in N_S: the new output layer is always there; these are the options."""

    variant: str  # "I", "II", "III" (names the network "N_T^<variant>")
    extra_layer: bool = False  # a new 1x1 conv + ReLU between F1 and the output layer
    freeze_blocks: bool = False  # conv blocks B1.. frozen (no gradient, BatchNorm in eval mode)
    extra_channels: int = 0  # width of the extra layer; 0 = F1's width

    @property
    def network(self) -> str:
        return NETWORK_NAMES.get(self.variant, f"N_T^{self.variant}")


def variant_spec(variant: str, *, iii_base: str = "I", extra_channels: int = 0) -> AdaptSpec:
    """The preset of ``variant`` ("I", "II" or "III"); N_T^III builds on ``iii_base``."""
    if variant == "I":
        return AdaptSpec("I", extra_channels=extra_channels)
    if variant == "II":
        return AdaptSpec("II", extra_layer=True, extra_channels=extra_channels)
    if variant == "III":
        if iii_base not in ("I", "II"):
            raise ValueError(f"iii_base must be 'I' or 'II', got {iii_base!r}")
        return AdaptSpec("III", extra_layer=iii_base == "II", freeze_blocks=True, extra_channels=extra_channels)
    raise ValueError(f"unknown adaptation variant {variant!r}; choose from I, II, III")


@dataclass(frozen=True)
class AdaptConfig:
    """Fine-tuning settings (not stated in the paper; sensible defaults)."""

    epochs: int = 10  # passes over the training folds
    batch_clips: int = 16  # clips per optimizer step per worker
    lr: float = 1e-3  # Adam learning rate of the new layers
    finetune_lr_scale: float = 0.1  # pretrained (not frozen) layers learn at lr * this; 0 = new layers only
    grad_clip: float = 5.0  # max global gradient norm (as the trainer); 0 disables clipping
    crop_seconds: float = 10.0  # training clips longer than this are randomly cropped; 0 = never
    loss: str = "bce"  # "bce": sigmoid + BCE on one-hot (N_S's design); "ce": softmax cross-entropy
    workers: int = 1  # Ray Train workers (DDP ranks)
    use_gpu: bool = False  # one GPU per worker
    seed: int = 0  # initialisation of the new layers, clip order, crops
    batch_seconds: float = 60.0  # feature re-extraction: padded audio seconds per forward pass

    def __post_init__(self):
        if self.epochs < 1 or self.batch_clips < 1 or self.workers < 1:
            raise ValueError("epochs, batch_clips and workers must be >= 1")
        if not self.lr > 0 or not self.finetune_lr_scale >= 0 or self.crop_seconds < 0 or self.grad_clip < 0:
            raise ValueError("need lr > 0 and finetune_lr_scale, crop_seconds, grad_clip >= 0")
        if self.loss not in ("bce", "ce"):
            raise ValueError(f"loss must be 'bce' or 'ce', got {self.loss!r}")


# --------------------------------------------------------------------------------------------
# The adapted network
# --------------------------------------------------------------------------------------------

def build_adapted(base, spec: AdaptSpec, num_classes: int, *, seed: int = 0):
    """A copy of ``base`` (a WeakLabelCNN) with a new output layer of ``num_classes`` 1x1 filters.

    The new layers replace ``f2``, so ``forward`` still returns F1 (``out.f1``) and the new
    segment-level sigmoid scores (``out.segments``, ``(B, K, num_classes)``). New layers are
    initialised from ``seed`` (identical on every DDP rank).
    """
    import torch
    from torch import nn

    if num_classes < 2:
        raise ValueError(f"the target task needs at least 2 classes, got {num_classes}")
    model = copy.deepcopy(base)
    f1c = model.cfg.f1_channels
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if spec.extra_layer:
            width = spec.extra_channels or f1c
            model.f2 = nn.Sequential(nn.Conv2d(f1c, width, kernel_size=1), nn.ReLU(),
                                     nn.Conv2d(width, num_classes, kernel_size=1))
        else:
            model.f2 = nn.Conv2d(f1c, num_classes, kernel_size=1)
    finally:
        torch.random.set_rng_state(gen_state)
    model.cfg = replace(model.cfg, num_classes=num_classes)
    for p in model.parameters():
        p.requires_grad_(True)
    if spec.freeze_blocks:
        for p in model.blocks.parameters():
            p.requires_grad_(False)
    return model


def set_train_mode(model, spec: AdaptSpec) -> None:
    """``model.train()``, but frozen blocks keep their BatchNorm statistics (eval mode)."""
    model.train()
    if spec.freeze_blocks:
        model.blocks.eval()


def param_groups(model, cfg: AdaptConfig) -> list[dict]:
    """New layers at ``lr``; pretrained trainable layers at ``lr * finetune_lr_scale``."""
    new = [p for p in model.f2.parameters() if p.requires_grad]
    old = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("f2.")]
    groups = [{"params": new, "lr": cfg.lr}]
    if old and cfg.finetune_lr_scale > 0:
        groups.append({"params": old, "lr": cfg.lr * cfg.finetune_lr_scale})
    elif old:
        for p in old:
            p.requires_grad_(False)
    return groups


def clip_loss(model, out, targets, loss: str, pooling: str):
    """Mean loss over the batch. ``out`` is the model's WeakLabelOutput, ``targets`` (B,) class ids.

    ``bce``: BCE between the pooled sigmoid clip scores and one-hot targets, averaged over
    classes (as N_S is trained). ``ce``: cross-entropy of the pooled segment logits.
    """
    import torch
    import torch.nn.functional as F

    from trainer.model import pool_segments

    if loss == "bce":
        onehot = F.one_hot(targets, out.clip.shape[1]).float()
        return F.binary_cross_entropy(out.clip.float().clamp(1e-7, 1 - 1e-7), onehot)
    if loss == "ce":
        f1 = out.f1.transpose(1, 2).unsqueeze(3)  # (B, F1, K, 1)
        logits = model.f2(f1).squeeze(3).transpose(1, 2)  # (B, K, C)
        pooled = pool_segments(logits.float(), out.num_segments, pooling)  # (B, C)
        return F.cross_entropy(pooled, targets)
    raise ValueError(f"loss must be 'bce' or 'ce', got {loss!r}")


# --------------------------------------------------------------------------------------------
# Training data: only the training folds' clips, in memory
# --------------------------------------------------------------------------------------------

def load_training_clips(shard_urls: Sequence[str], train_ids: Sequence[str], test_fold: int, *,
                        rank: int = 0, world: int = 1) -> list[tuple[str, np.ndarray, int]]:
    """(clip id, int16 waveform, label) of this rank's share of ``train_ids``, sorted by clip id.

    Rank r keeps every ``world``-th id of the sorted list starting at r. Clips not listed are
    dropped as soon as their metadata is read; a listed clip that belongs to ``test_fold``, has
    not exactly one label, or is missing from the shards raises ``ValueError``.
    """
    from runtime import storage
    from data_prep.shards import iter_shard

    ordered = sorted(set(train_ids))
    mine = set(ordered[rank::world])
    got: dict[str, tuple[np.ndarray, int]] = {}
    for url in shard_urls:
        for s in iter_shard(url):
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


def _batch(clips, idx, rng: np.random.Generator, crop: int):
    """Padded float waveforms (B, N), lengths (B,), labels (B,) for the clips at ``idx``."""
    import torch

    waves, labels = [], []
    for i in idx:
        _, pcm, label = clips[i]
        if crop and pcm.size > crop:
            start = int(rng.integers(0, pcm.size - crop + 1))
            pcm = pcm[start:start + crop]
        waves.append(pcm)
        labels.append(label)
    lengths = torch.tensor([w.size for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : w.size] = torch.from_numpy(w.astype(np.float32) / 32768.0)
    return batch, lengths, torch.tensor(labels, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Ray Train worker
# --------------------------------------------------------------------------------------------

def _gather_positions(positions, world: int):
    """All ranks' lists of int positions, concatenated (torch.distributed, no pickle)."""
    import torch
    import torch.distributed as dist

    x = torch.tensor(positions, dtype=torch.long)
    if world == 1:
        return x.tolist()
    n = torch.tensor([x.numel()], dtype=torch.long)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    top = max(int(c) for c in counts)
    padded = torch.full((top,), -1, dtype=torch.long)
    padded[: x.numel()] = x
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c)] for p, c in zip(parts, counts)]).tolist()


def adapt_loop_per_worker(config: dict) -> None:
    """Ray Train worker: fine-tune the adapted network on this rank's share of the training clips.

    ``config``: {"model_url", "spec", "adapt", "num_classes", "shard_urls", "train_clip_ids",
    "test_fold"}. Reports once, after the last epoch; rank 0 attaches the checkpoint
    (``model.safetensors`` + ``adapt.json`` with the clip ids every rank trained on).
    """
    import ray.train
    import ray.train.torch

    from trainer.loop import quiet_ray_train_reports

    quiet_ray_train_reports()
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    from trainer.export import load_exported
    from trainer.frontend import LogMel

    spec = AdaptSpec(**config["spec"])
    cfg = AdaptConfig(**config["adapt"])
    train_ids = list(config["train_clip_ids"])
    test_fold = int(config["test_fold"])

    # (1) where am I
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)

    exported = load_exported(config["model_url"])
    model = build_adapted(exported.model, spec, int(config["num_classes"]), seed=cfg.seed).to(device)
    pooling = model.cfg.pooling
    frontend = LogMel(exported.frontend, min_frames=exported.architecture.segment_frames).to(device)
    rate = exported.frontend.sample_rate
    clips = load_training_clips(config["shard_urls"], train_ids, test_fold, rank=rank, world=world)
    crop = int(round(cfg.crop_seconds * rate))
    # every rank runs the same number of steps: the largest share decides, smaller ones wrap around
    share = int(math.ceil(len(set(train_ids)) / world))
    steps = max(1, int(math.ceil(share / cfg.batch_clips)))
    groups = param_groups(model, cfg)
    optimizer = torch.optim.Adam(groups)

    # (2) DDP (gloo on CPU, NCCL on GPU)
    model = ray.train.torch.prepare_model(model)
    raw = model.module if hasattr(model, "module") else model
    history, started = [], time.perf_counter()
    for epoch in range(cfg.epochs):
        set_train_mode(raw, spec)
        rng = np.random.default_rng([cfg.seed, epoch, rank])
        order = rng.permutation(len(clips))
        order = np.resize(order, steps * cfg.batch_clips)  # wrap to the common step count
        total, count = 0.0, 0
        for s in range(steps):
            idx = order[s * cfg.batch_clips:(s + 1) * cfg.batch_clips]
            wave, lengths, y = _batch(clips, idx, rng, crop)
            x, n = frontend(wave.to(device), lengths.to(device))
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = model(x, n)
            loss = clip_loss(raw, out, y.to(device), cfg.loss, pooling)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        sums = torch.tensor([total, count], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(sums)
        history.append({"epoch": epoch, "loss": float(sums[0] / sums[1])})
        if rank == 0:
            print(f"[adapt] {spec.network} test fold {test_fold}: epoch {epoch + 1}/{cfg.epochs} "
                  f"loss {history[-1]['loss']:.4f}", flush=True)

    # what every rank trained on, gathered as positions in the sorted id list
    ordered = sorted(set(train_ids))
    pos = {cid: i for i, cid in enumerate(ordered)}
    seen = sorted(ordered[i] for i in _gather_positions([pos[c[0]] for c in clips], world))
    if world > 1:  # BatchNorm statistics drift apart per rank: keep rank 0's
        for buf in raw.buffers():
            dist.broadcast(buf, src=0)

    # (3) one report per fit, on every rank; the checkpoint from rank 0
    metrics = {"loss": history[-1]["loss"], "train_clips": len(seen), "seconds": time.perf_counter() - started}
    if rank == 0:
        with tempfile.TemporaryDirectory(prefix="weaksound-adapt-") as d:
            state = {k: v.detach().cpu().contiguous() for k, v in raw.state_dict().items()}
            save_file(state, os.path.join(d, WEIGHTS))
            meta = {"format": ADAPTED_FORMAT, "source_model": config["model_url"], "spec": asdict(spec),
                    "adapt": asdict(cfg), "num_classes": int(config["num_classes"]), "test_fold": test_fold,
                    "train_clip_ids": seen, "history": history, "world_size": world}
            with open(os.path.join(d, META), "w") as f:
                json.dump(meta, f)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
    else:
        ray.train.report(metrics, checkpoint=None)


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------

@dataclass
class FitResult:
    spec: AdaptSpec
    test_fold: int
    weights: bytes  # safetensors
    meta: dict  # adapt.json
    seconds: float


def fit_adapted(model_url: str, shard_urls: Sequence[str], train_clip_ids: Sequence[str], num_classes: int,
                test_fold: int, spec: AdaptSpec, cfg: AdaptConfig, *, storage_path: str, run_name: str) -> FitResult:
    """One Ray Train fit of one adapted network for one test fold; returns its weights and metadata."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if len(set(train_clip_ids)) < cfg.workers:
        raise ValueError(f"{len(set(train_clip_ids))} training clips cannot be shared by {cfg.workers} workers")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # propagated to the controller
    started = time.perf_counter()
    trainer = TorchTrainer(
        adapt_loop_per_worker,
        train_loop_config={"model_url": model_url, "spec": asdict(spec), "adapt": asdict(cfg),
                           "num_classes": int(num_classes), "shard_urls": list(shard_urls),
                           "train_clip_ids": sorted(train_clip_ids), "test_fold": int(test_fold)},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name=run_name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=0),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"adaptation {spec.network} fold {test_fold} reported no checkpoint")
    with result.checkpoint.as_directory() as d:
        with open(os.path.join(d, WEIGHTS), "rb") as f:
            weights = f.read()
        with open(os.path.join(d, META)) as f:
            meta = json.load(f)
    leaked = sorted(set(meta["train_clip_ids"]) - set(train_clip_ids))
    if leaked or len(meta["train_clip_ids"]) != len(set(train_clip_ids)):
        raise RuntimeError(f"adaptation {spec.network} fold {test_fold} trained on clips it was not given "
                           f"({leaked[:3]}) or missed some")
    return FitResult(spec, int(test_fold), weights, meta, time.perf_counter() - started)


def _adapted_model(model_url: str, spec: AdaptSpec, num_classes: int, weights: bytes, device: str = "cpu"):
    from safetensors.torch import load as load_safetensors

    from trainer.export import ExportedModel, load_exported

    exported = load_exported(model_url, device="cpu")
    model = build_adapted(exported.model, spec, num_classes)
    model.load_state_dict(load_safetensors(weights), strict=True)
    model.to(device).eval()
    arch = replace(exported.architecture, num_classes=num_classes)
    return ExportedModel(model=model, frontend=exported.frontend, architecture=arch, vocabulary=[], config={})


def adapted_shard_features(shard_url: str, model_url: str, spec: dict, num_classes: int, weights: bytes,
                           batch_seconds: float = 60.0, device: str = "cpu") -> dict[str, np.ndarray]:
    """clip_id + F1/F2 max/avg of every clip of one shard through the adapted network."""
    import torch

    from runtime import storage
    from data_prep.shards import iter_shard
    from inference.embed import embed_samples

    if device == "cpu":
        torch.set_num_threads(1)
    exported = _adapted_model(model_url, AdaptSpec(**spec), num_classes, weights, device)
    arrays = embed_samples(exported, exported.log_mel(), iter_shard(shard_url), batch_seconds)
    return {k: arrays[k] for k in ("clip_id", "f1_max", "f1_avg", "f2_max", "f2_avg")}


def adapted_features(fit: FitResult, model_url: str, shard_urls: Sequence[str], clip_ids: Sequence[str],
                     num_classes: int, cfg: AdaptConfig, *, executor: str = "ray", max_in_flight: int = 0
                     ) -> dict[str, np.ndarray]:
    """The paper's four feature sets from the adapted network, rows in ``clip_ids`` order
    (one Ray task per shard; the weights are ``ray.put`` once)."""
    from transfer.feature_sets import feature_sets_from_pooled
    from runtime.parallel import bounded_map

    spec = asdict(fit.spec)
    gpu = False
    if executor == "ray":
        import ray

        gpu = cfg.use_gpu and ray.cluster_resources().get("GPU", 0) > 0
    parts = bounded_map(adapted_shard_features, list(shard_urls),
                        shared=(model_url, spec, num_classes, fit.weights, cfg.batch_seconds, "cuda" if gpu else "cpu"),
                        executor=executor, max_in_flight=max_in_flight,
                        ray_options={"num_cpus": 1, "num_gpus": 1 if gpu else 0})
    row = {}
    for p in parts:
        for i, cid in enumerate(p["clip_id"].tolist()):
            row[cid] = (p, i)
    missing = [c for c in clip_ids if c not in row]
    if missing:
        raise ValueError(f"{len(missing)} clips missing from the shards (e.g. {missing[:3]})")
    pooled = {k: np.stack([row[c][0][k][row[c][1]] for c in clip_ids]) for k in ("f1_max", "f1_avg", "f2_max", "f2_avg")}
    return feature_sets_from_pooled(pooled["f1_max"], pooled["f1_avg"], pooled["f2_max"], pooled["f2_avg"],
                                    combinations=True)


def merge_fold_results(parts: Sequence) -> object:
    """One ``FoldResults`` from single-fold results of the same feature set (one per test fold)."""
    from transfer.svm import FoldResults

    parts = sorted(parts, key=lambda r: r.folds[0])
    if not parts or any(len(p.folds) != 1 for p in parts):
        raise ValueError("merge_fold_results takes one single-fold FoldResults per test fold")
    names = {p.feature_set for p in parts}
    if len(names) != 1 or len({p.c_grid for p in parts}) != 1:
        raise ValueError(f"cannot merge different feature sets or C grids: {sorted(names)}")
    labels = parts[0].labels
    predictions = np.full(labels.shape, -1, dtype=np.int64)
    for p in parts:
        sel = p.predictions >= 0
        if np.any(predictions[sel] >= 0):
            raise ValueError("two results predict the same clips")
        predictions[sel] = p.predictions[sel]
    return FoldResults(
        feature_set=parts[0].feature_set, folds=tuple(p.folds[0] for p in parts),
        accuracies=tuple(p.accuracies[0] for p in parts), chosen_C=tuple(p.chosen_C[0] for p in parts),
        c_grid=parts[0].c_grid, inner_scores=tuple(p.inner_scores[0] for p in parts),
        inner_validation_folds=tuple(p.inner_validation_folds[0] for p in parts), labels=labels.copy(),
        predictions=predictions, n_convergence_warnings=sum(p.n_convergence_warnings for p in parts))


def run_adaptation(target, proto, specs: Sequence[AdaptSpec], cfg: AdaptConfig, out_folder, *,
                   test_folds: Sequence[int] | None = None, storage_path: str | None = None,
                   feature_sets: Sequence[str] = ADAPT_FEATURE_SETS):
    """Every (variant, test fold) fit, re-extraction, and the SVM protocol per test fold.

    Args:
        target: ``transfer.experiments.Target``.
        proto: ``transfer.experiments.Protocol`` (C grid, executor, ...).
        specs: the adapted networks to build.
        cfg: fine-tuning settings.
        out_folder: local results folder; weights go to ``adapted/<task>/N_T-<variant>/fold<k>/``.
        test_folds: subset of the official folds to test on (default all).
        storage_path: Ray Train storage (shared storage on a multi-node cluster); default a
            temporary local folder.

    Returns:
        ``TaskResult`` with one row per (network, feature set); ``extra`` records per fit the
        training clip count, the loss history and the seconds taken.
    """
    import shutil
    import uuid
    from pathlib import Path

    from data_prep.manifest import read_manifest
    from transfer.experiments import TaskResult, _svm_job
    from transfer.feature_sets import feature_set_names
    from transfer.parallel import run_svm_units
    from transfer.results import transfer_row

    folds = list(test_folds) if test_folds else target.fold_ids
    unknown = sorted(set(folds) - set(target.fold_ids))
    if unknown:
        raise ValueError(f"test folds {unknown} are not folds of {target.url} ({target.fold_ids})")
    bad = [n for n in feature_sets if n not in feature_set_names()]
    if bad:
        raise ValueError(f"unknown feature sets {bad}")
    manifest = read_manifest(target.data_url)
    shard_urls = manifest.shard_urls(target.emb.index.get("split", "all"))
    clip_ids = target.clip_ids
    num_classes = len(target.class_names)
    own_storage = storage_path is None
    storage_path = storage_path or tempfile.mkdtemp(prefix="weaksound-adapt-train-")
    run_tag = uuid.uuid4().hex[:8]
    jobs, fits = [], []
    try:
        for spec in specs:
            for k in folds:
                train_ids = [c for c, f in zip(clip_ids, target.folds.tolist()) if f != k]
                print(f"[adapt] {spec.network}: test fold {k}, training on {len(train_ids)} clips of folds "
                      f"{sorted(set(target.folds.tolist()) - {k})}", flush=True)
                fit = fit_adapted(target.model_url, shard_urls, train_ids, num_classes, k, spec, cfg,
                                  storage_path=storage_path, run_name=f"adapt-{spec.variant}-fold{k}-{run_tag}")
                rel = f"adapted/{target.task}/N_T-{spec.variant}/fold{k}"
                folder = Path(out_folder) / rel
                folder.mkdir(parents=True, exist_ok=True)
                (folder / WEIGHTS).write_bytes(fit.weights)
                (folder / META).write_text(json.dumps(fit.meta, indent=1))
                feats = adapted_features(fit, target.model_url, shard_urls, clip_ids, num_classes, cfg,
                                         executor=proto.executor, max_in_flight=proto.max_in_flight)
                feats = {n: feats[n] for n in feature_sets}
                jobs.append(_svm_job(f"{spec.variant}/{k}", target, feats, proto, test_folds=[k]))
                fits.append({"network": spec.network, "test_fold": k, "train_clips": len(fit.meta["train_clip_ids"]),
                             "history": fit.meta["history"], "seconds": round(fit.seconds, 2),
                             "weights": f"{rel}/{WEIGHTS}"})
    finally:
        if own_storage:
            shutil.rmtree(storage_path, ignore_errors=True)
    results = run_svm_units(jobs, executor=proto.executor, max_in_flight=proto.max_in_flight,
                            progress=proto.progress)
    out = TaskResult(extra={"adaptation": {"config": asdict(cfg), "specs": [asdict(s) for s in specs],
                                           "test_folds": folds, "fits": fits}})
    for spec in specs:
        for name in feature_sets:
            fr = merge_fold_results([results[f"{spec.variant}/{k}"][name] for k in folds])
            out.add(transfer_row(target.heading, spec.network, fr), fr)
    return out
