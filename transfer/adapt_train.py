"""Adaptation fits: one Ray Train run per network variant, fitting every test fold in turn.

Per test fold k the adapted network is trained with Ray Train (``TorchTrainer``, V2 API) on the
audio of the clips of the *other* folds only. One run fits all the requested test folds one after
the other inside the same worker group: each worker reads and decodes the dataset's shards once,
keeping (16-bit, as stored) only the clips that are in its share of some fold's training list,
then for each fold builds a fresh network from N_S and trains it on its share of *that* fold's
list, refusing any clip of fold k. Rank r's share of a list is every ``world``-th id of the sorted
list from r, as for a run of one fold. The step, the loss (trainer/losses.py: ``bce`` = the
weak-label loss on one-hot targets, ``ce`` = softmax cross-entropy of the pooled logits), the DDP
helpers and the report are trainer/engine.py's, as for N_S.

After each fold the workers report once with a trainer checkpoint (trainer/checkpoint.py) whose
extra ``adapt`` entry holds that fold's adaptation record, and ``folds_done`` lists every fold
finished so far: a worker group restarted after a failure resumes with the folds not yet done. The
run keeps every reported checkpoint; the driver exports each fold's network from its own
checkpoint like N_S (``model.safetensors`` + ``config.json``, trainer/export.py, with the target's
vocabulary) and writes the record beside it as ``adapt.json`` (format ``weaksound-adapted/1``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from transfer.adapt_network import LOSS_NAMES, AdaptConfig, AdaptSpec, build_adapted, frozen_block_count

__all__ = ["ADAPTED_FORMAT", "META", "FitProgress", "FitResult", "adapt_loop_per_worker", "clip_batch", "fit_adapted",
           "fit_adapted_folds", "fold_training_clips", "folds_done_in", "load_clips", "load_training_clips",
           "rank_share", "target_vocabulary"]

ADAPTED_FORMAT = "weaksound-adapted/1"
META = "adapt.json"
MAX_FAILURES = 1  # worker-group restarts per run (it resumes with the folds not yet reported)


def rank_share(train_ids: Sequence[str], rank: int, world: int) -> list[str]:
    """Rank ``rank``'s share of a fold's training list: every ``world``-th id of the sorted list from ``rank``."""
    return sorted(set(train_ids))[rank::world]


def load_clips(shard_urls: Sequence[str], wanted: set[str]) -> dict[str, tuple[np.ndarray, int, int]]:
    """clip id -> (int16 waveform, label, fold) of the ``wanted`` clips, reading each shard once.

    Clips not wanted are dropped as soon as their metadata is read; a wanted clip that has not
    exactly one label, or is missing from the shards, raises ``ValueError``.
    """
    from data_prep.manifest import read_samples

    got: dict[str, tuple[np.ndarray, int, int]] = {}
    for url in shard_urls:
        for s in read_samples(url):
            cid = s.meta["clip_id"]
            if cid not in wanted:
                continue
            if len(s.meta["labels"]) != 1:
                raise ValueError(f"clip {cid} has labels {s.meta['labels']}; adaptation needs one label per clip")
            pcm = np.clip(np.round(s.audio * 32767.0), -32768, 32767).astype(np.int16)
            got[cid] = (pcm, int(s.meta["labels"][0]), int(s.meta.get("fold") or 0))
    missing = sorted(wanted - set(got))
    if missing:
        raise ValueError(f"{len(missing)} training clips are not in the shards (e.g. {missing[:3]})")
    return got


def fold_training_clips(store: Mapping[str, tuple[np.ndarray, int, int]], ids: Sequence[str],
                        test_fold: int) -> list[tuple[str, np.ndarray, int]]:
    """(clip id, waveform, label) of ``ids`` from a :func:`load_clips` store, sorted by clip id;
    a clip of ``test_fold`` raises ``ValueError`` (the test fold never reaches training)."""
    out = []
    for cid in sorted(set(ids)):
        if cid not in store:
            raise ValueError(f"training clip {cid} was not loaded")
        pcm, label, fold = store[cid]
        if fold == int(test_fold):
            raise ValueError(f"clip {cid} is listed for training but belongs to test fold {test_fold}")
        out.append((cid, pcm, label))
    return out


def load_training_clips(shard_urls: Sequence[str], train_ids: Sequence[str], test_fold: int, *,
                        rank: int = 0, world: int = 1) -> list[tuple[str, np.ndarray, int]]:
    """(clip id, int16 waveform, label) of this rank's share of ``train_ids`` (:func:`rank_share`),
    sorted by clip id; a listed clip of ``test_fold``, with not exactly one label, or missing from
    the shards raises ``ValueError``."""
    mine = rank_share(train_ids, rank, world)
    return fold_training_clips(load_clips(shard_urls, set(mine)), mine, test_fold)


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


def folds_done_in(checkpoint) -> list[int]:
    """The test folds already reported by a run, from its latest checkpoint (None: none), so that a
    worker group restarted after a failure fits only the others."""
    if checkpoint is None:
        return []
    from trainer.checkpoint import load_checkpoint

    with checkpoint.as_directory() as d:
        return [int(k) for k in load_checkpoint(d, restore_rng=False)["extra"].get("folds_done", [])]


def _fit_one_fold(exported, spec: AdaptSpec, cfg: AdaptConfig, num_classes: int, test_fold: int,
                  ordered: list[str], clips: list, *, rank: int, world: int, device, progress=None) -> tuple:
    """Train one fold's network on this rank's ``clips``; returns (network, optimizer, record)."""
    import ray.train.torch
    import torch

    from trainer.distributed import all_gather_rows, broadcast_buffers
    from trainer.engine import train_step
    from trainer.finetune import param_groups, train_mode
    from trainer.meter import EpochMeter

    started = time.perf_counter()
    torch.manual_seed(cfg.seed + rank)  # per fold, so a fold trains the same whichever folds ran before it
    model = build_adapted(exported.model, spec, num_classes, seed=cfg.seed).to(device)
    frozen = frozen_block_count(model, spec)
    frontend = exported.log_mel().to(device)
    rate = exported.frontend.sample_rate
    crop = int(round(cfg.crop_seconds * rate))
    # every rank runs the same number of steps: the largest share decides, smaller ones wrap around
    steps = max(1, int(math.ceil(int(math.ceil(len(ordered) / world)) / cfg.batch_clips)))
    optimizer = torch.optim.Adam(param_groups(model, cfg.lr, cfg.finetune_lr_scale))
    model = ray.train.torch.prepare_model(model)  # DDP (gloo on CPU, NCCL on GPU)
    raw = model.module if hasattr(model, "module") else model
    history = []
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
            if progress is not None:
                progress.update.remote(test_fold, epoch + 1, history[-1]["loss"])

    # what every rank trained on, gathered as positions in the sorted id list
    pos = {cid: i for i, cid in enumerate(ordered)}
    seen = sorted(ordered[i] for i in all_gather_rows(torch.tensor([pos[c[0]] for c in clips], dtype=torch.long),
                                                       world).tolist())
    broadcast_buffers(raw, world)  # BatchNorm statistics drift apart per rank: keep rank 0's
    return raw, optimizer, {"history": history, "seen": seen, "steps": steps,
                            "seconds": time.perf_counter() - started}


def adapt_loop_per_worker(config: dict) -> None:
    """Ray Train worker: fine-tune one adapted network per test fold on this rank's share of that
    fold's training clips, the folds one after the other.

    ``config``: {"model_url", "spec", "adapt", "num_classes", "shard_urls", "folds": [{"test_fold",
    "train_clip_ids"}, ...], "progress": a ``FitProgress`` actor or None}. Reports once per fold,
    after its last epoch; rank 0 attaches the checkpoint, whose extra ``folds_done`` lists the
    folds finished so far, and tells ``progress`` about every epoch.
    """
    import ray.train
    import ray.train.torch

    from trainer.checkpoint import save_checkpoint
    from trainer.engine import quiet_ray_train_reports, report
    from trainer.export import load_exported

    quiet_ray_train_reports()
    spec, cfg = AdaptSpec(**config["spec"]), AdaptConfig(**config["adapt"])
    num_classes = int(config["num_classes"])
    folds = [(int(f["test_fold"]), sorted(set(f["train_clip_ids"]))) for f in config["folds"]]

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    done = folds_done_in(ray.train.get_checkpoint())
    todo = [(k, ordered) for k, ordered in folds if k not in done]
    # the audio once for every fold to fit: the union of this rank's shares
    store = load_clips(config["shard_urls"], {c for _, ordered in todo for c in rank_share(ordered, rank, world)})
    exported = load_exported(config["model_url"])
    for k, ordered in todo:
        clips = fold_training_clips(store, rank_share(ordered, rank, world), k)
        raw, optimizer, fit = _fit_one_fold(exported, spec, cfg, num_classes, k, ordered, clips, rank=rank,
                                            world=world, device=device, progress=config.get("progress"))
        done = sorted({*done, k})
        meta = {"format": ADAPTED_FORMAT, "source_model": config["model_url"], "spec": asdict(spec),
                "adapt": asdict(cfg), "num_classes": num_classes, "test_fold": k,
                "train_clip_ids": fit["seen"], "history": fit["history"], "world_size": world}
        metrics = {"test_fold": k, "loss": fit["history"][-1]["loss"], "train_clips": len(fit["seen"]),
                   "seconds": fit["seconds"]}
        report(metrics, rank=rank, write_checkpoint=lambda d: save_checkpoint(
            d, model=raw, optimizer=optimizer,
            counters={"epoch": cfg.epochs - 1, "step": cfg.epochs * fit["steps"], "starts": 0},
            config={"spec": asdict(spec), "adapt": asdict(cfg)}, extra={"adapt": meta, "folds_done": done}))
        del raw, optimizer


@dataclass
class FitResult:
    spec: AdaptSpec
    test_fold: int
    export_url: str  # the adapted network's export (model.safetensors + config.json + adapt.json)
    config: dict  # its config.json
    weights: bytes  # its model.safetensors
    meta: dict  # adapt.json
    seconds: float  # the fold's training time in the workers


class FitProgress:
    """Where rank 0 posts (test fold, epochs done, loss) after every epoch; the driver's bar polls it."""

    def __init__(self):
        self.latest: tuple[int, int, float] | None = None
        self.epochs_done = 0

    def update(self, test_fold: int, epoch: int, loss: float) -> None:
        self.latest = (int(test_fold), int(epoch), float(loss))
        self.epochs_done += 1

    def get(self) -> tuple[int, tuple[int, int, float] | None]:
        return self.epochs_done, self.latest


@contextlib.contextmanager
def _progress_bar(desc: str, total: int, enabled: bool):
    """A ``FitProgress`` actor (None when not ``enabled``) and a bar over its epochs, polled twice a second."""
    if not enabled:
        yield None
        return
    import ray
    from tqdm import tqdm

    actor = ray.remote(num_cpus=0)(FitProgress).remote()
    stop = threading.Event()
    bar = tqdm(total=total, desc=desc, unit="epoch", dynamic_ncols=True)

    def poll() -> None:
        while not stop.wait(0.5):
            try:
                done, latest = ray.get(actor.get.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - the bar is best effort; the fit goes on without it
                continue
            bar.n = min(done, total)
            if latest is not None:
                bar.set_postfix(test_fold=latest[0], loss=f"{latest[2]:.4f}", refresh=False)
            bar.refresh()

    thread = threading.Thread(target=poll, name="adapt-progress", daemon=True)
    thread.start()
    try:
        yield actor
    finally:
        stop.set()
        thread.join()
        bar.close()
        ray.kill(actor)


def target_vocabulary(class_names: Sequence[str]) -> list[dict]:
    """The export vocabulary of a target task: its class names, in label order."""
    return [{"index": i, "id": str(n), "name": str(n)} for i, n in enumerate(class_names)]


def fit_adapted_folds(model_url: str, shard_urls: Sequence[str], train_clip_ids: Mapping[int, Sequence[str]],
                      class_names: Sequence[str], spec: AdaptSpec, cfg: AdaptConfig, *, storage_path: str,
                      run_name: str, export_urls: Mapping[int, str], progress: bool = False) -> list[FitResult]:
    """One Ray Train run fitting ``spec`` once per test fold (``train_clip_ids``: test fold -> the
    clips to train on), each fold's network exported to ``export_urls[fold]``; results in fold order.
    ``progress``: a bar over the run's epochs (all folds)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainer.checkpoint import load_checkpoint
    from trainer.distributed import process_group_backend
    from trainer.export import export_model, load_exported, read_export_files

    folds = sorted(int(k) for k in train_clip_ids)
    if not folds or set(folds) != {int(k) for k in export_urls}:
        raise ValueError(f"need one export URL per test fold: folds {folds}, exports {sorted(export_urls)}")
    for k in folds:
        if len(set(train_clip_ids[k])) < cfg.workers:
            raise ValueError(f"test fold {k}: {len(set(train_clip_ids[k]))} training clips cannot be shared by "
                             f"{cfg.workers} workers")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # read by the Train controller only
    num_classes = len(class_names)
    with _progress_bar(f"{spec.network}, {len(folds)} test folds", len(folds) * cfg.epochs, progress) as bar:
        trainer = TorchTrainer(
            adapt_loop_per_worker,
            train_loop_config={"model_url": model_url, "spec": asdict(spec), "adapt": asdict(cfg),
                               "num_classes": num_classes, "shard_urls": list(shard_urls), "progress": bar,
                               "folds": [{"test_fold": k, "train_clip_ids": sorted(train_clip_ids[k])}
                                         for k in folds]},
            scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu),
            torch_config=TorchConfig(backend=process_group_backend(cfg.use_gpu)),  # clip ids gather on the CPU
            run_config=RunConfig(name=run_name, storage_path=storage_path,
                                 failure_config=FailureConfig(max_failures=MAX_FAILURES),
                                 checkpoint_config=CheckpointConfig(num_to_keep=None)),  # one per fold, all kept
        )
        result = trainer.fit()
    reported = {}
    for checkpoint, metrics in result.best_checkpoints or []:  # in report order: a fold's last report wins
        reported[int(metrics["test_fold"])] = (checkpoint, metrics)
    missing = [k for k in folds if k not in reported]
    if missing:
        raise RuntimeError(f"adaptation {spec.network}: no checkpoint was reported for test folds {missing}")
    source = load_exported(model_url)
    out = []
    for k in folds:
        checkpoint, metrics = reported[k]
        model = build_adapted(source.model, spec, num_classes, seed=cfg.seed)
        with checkpoint.as_directory() as d:
            meta = load_checkpoint(d, model=model, restore_rng=False)["extra"]["adapt"]
        given = set(train_clip_ids[k])
        leaked = sorted(set(meta["train_clip_ids"]) - given)
        if meta["test_fold"] != k or leaked or len(meta["train_clip_ids"]) != len(given):
            raise RuntimeError(f"adaptation {spec.network} fold {k} trained on clips it was not given "
                               f"({leaked[:3]}) or missed some")
        export_model(export_urls[k], model.eval(), frontend=source.frontend, architecture=model.cfg,
                     vocabulary=target_vocabulary(class_names),
                     training={"network": spec.network, "source_model": model_url, "test_fold": k,
                               "loss": meta["history"][-1]["loss"]},
                     extra_files={META: json.dumps(meta, indent=1).encode()})  # one published version, atomically
        config, weights, _version = read_export_files(export_urls[k])
        out.append(FitResult(spec, k, export_urls[k], json.loads(config), weights, meta, float(metrics["seconds"])))
    return out


def fit_adapted(model_url: str, shard_urls: Sequence[str], train_clip_ids: Sequence[str],
                class_names: Sequence[str], test_fold: int, spec: AdaptSpec, cfg: AdaptConfig, *,
                storage_path: str, run_name: str, export_url: str) -> FitResult:
    """One Ray Train run of one adapted network for one test fold, exported to ``export_url``."""
    return fit_adapted_folds(model_url, shard_urls, {int(test_fold): list(train_clip_ids)}, class_names, spec, cfg,
                             storage_path=storage_path, run_name=run_name,
                             export_urls={int(test_fold): export_url})[0]
