"""Train the weak-label CNN with Ray Train (V2): the driver and its command line.

Local (starts a Ray on this machine when none is running; CPU, 2 DDP workers)::

    python trainer/main.py --data out/shards --out runs --name demo --preset cpu-small --workers 2

Against a running cluster (``ray start --head`` here, or KubeRay), shipping the code (with the
cluster's token, ``RAY_AUTH_MODE=token``; see docs/operations.md)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python trainer/main.py --data s3://bucket/audioset --out s3://bucket/runs --name as-r1 \\
        --preset paper --workers 8 --use-gpu

The recipe beyond the paper (SpecAugment, mixup, warm-up + cosine, AdamW, weight EMA, balanced
sampling; each part also a flag below)::

    weaksound train --data data/audioset --name as-plus --preset paper-plus --workers 8 --use-gpu
    weaksound train --data data/synthetic/source --name demo-plus --preset cpu-small-plus --workers 2

As a console command (same options): ``weaksound train --data ... --name ...``.

The same ``--out`` + ``--name`` resumes the run from its last checkpoint (after a crash, a
preemption, or to train more ``--epochs``); a new run needs a new name. Two trainers never share
a run folder: the first holds a lease on ``<out>/<name>/`` and a second one stops with an error
naming it. Outputs under ``<out>/<name>/``: Ray's ``checkpoint_*`` folders (last ``--keep-last``),
``metrics.json`` (per-epoch training, validation and eval metrics, per-class AP, mAP by duration),
``curves.png``, ``best/`` and ``model/`` (final export: model.safetensors + config.json, see
trainer/export.py).

Model selection: ``best/`` and ``best_epoch`` are chosen on the ``val`` split of ``--data`` (carved
from the training clips by ``weaksound prep --val-fraction``), never on the eval split whose numbers
are reported. Without a ``val`` split the run says so, writes no ``best/`` and keeps the last epoch.
With a weight EMA (``--ema-decay``) the EMA weights are evaluated and exported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time

if __name__ == "__main__" and not __package__:  # `python trainer/main.py` puts trainer/, not the repo, first
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import storage  # noqa: E402
from trainer.config import PRESETS, TrainConfig, apply_overrides, preset  # noqa: E402

__all__ = ["main", "build_parser", "resolve_config", "run"]

_FLAGS = {  # CLI flag -> TrainConfig field (top level)
    "data": "data", "eval_data": "eval_data", "out": "out", "name": "name", "workers": "workers",
    "epochs": "epochs", "use_gpu": "use_gpu", "cpus_per_worker": "cpus_per_worker", "seed": "seed",
    "keep_last": "keep_last_k", "max_failures": "max_failures", "init_from": "init_from",
    "freeze_blocks": "freeze_blocks", "loss_target": "loss_target",
    "checkpoint_every_s": "checkpoint_every_s", "checkpoint_every_steps": "checkpoint_every_steps",
    "clip_log": "clip_log",
}
_SECTION_FLAGS = {  # CLI flag -> (TrainConfig section, field): the recipe beyond the paper, and the loader
    "time_masks": ("augment", "time_masks"), "time_width": ("augment", "time_width"),
    "mel_masks": ("augment", "mel_masks"), "mel_width": ("augment", "mel_width"),
    "mixup_alpha": ("augment", "mixup_alpha"), "lr": ("optim", "lr"), "schedule": ("optim", "schedule"),
    "warmup_steps": ("optim", "warmup_steps"), "min_lr_ratio": ("optim", "min_lr_ratio"),
    "weight_decay": ("optim", "weight_decay"), "decoupled_weight_decay": ("optim", "decoupled_weight_decay"),
    "ema_decay": ("optim", "ema_decay"), "sampling": ("loader", "sampling"),
    "select_split": ("loader", "select_split"), "train_split": ("loader", "train_split"),
    "steps_per_epoch": ("loader", "steps_per_epoch"),
    "input": ("loader", "input"), "decode_cpus": ("loader", "decode_cpus"), "pooling": ("model", "pooling"),
    "decode_concurrency": ("loader", "decode_concurrency"), "decode_nodes": ("loader", "decode_nodes"),
}


def _preset_defaults(field: str, section: str | None = None) -> str:
    vals = {name: getattr(getattr(cfg, section) if section else cfg, field) for name, cfg in PRESETS.items()}
    if len(set(map(str, vals.values()))) == 1:
        return str(next(iter(vals.values())))
    return ", ".join(f"{k}: {v}" for k, v in vals.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="weaksound train",
        description="Train the weak-label CNN of Kumar et al. (ICASSP 2018) on prepared shards with Ray Train. "
                    "Preset 'paper' is the paper's network N_S (44.1 kHz, 128 mel, 16..512 channels, F1 1024); "
                    "'cpu-small' is a narrow 16 kHz model of the same family for CPU demos. 'paper-plus' and "
                    "'cpu-small-plus' add a recipe beyond the paper (SpecAugment, mixup, warm-up + cosine LR, "
                    "AdamW, weight EMA, class-balanced sampling); each part is an option below, whose default "
                    "is listed per preset.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="URL",
                   help="training shards: folder or s3:// prefix holding manifest.json (required; no default)")
    p.add_argument("--eval-data", metavar="URL",
                   help="evaluation shards (default: the 'eval' split of --data, if it has one; else no eval)")
    p.add_argument("--out", metavar="URL", help="checkpoint storage, folder or s3:// (default: runs)")
    p.add_argument("--name", metavar="RUN", help="run name; the same --out and --name resume (default: weaksound)")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                   help="model/front-end/data/recipe preset (default: paper = the paper's N_S, no augmentation)")
    p.add_argument("--workers", type=int, metavar="N", help=f"DDP workers (default: {_preset_defaults('workers')})")
    p.add_argument("--epochs", type=int, metavar="N", help=f"epochs (default: {_preset_defaults('epochs')})")
    p.add_argument("--use-gpu", action="store_true", default=None,
                   help="one GPU per worker, NCCL, bf16 autocast (default: off, CPU + gloo)")
    p.add_argument("--cpus-per-worker", type=float, metavar="N",
                   help=f"CPUs reserved per worker (default: {_preset_defaults('cpus_per_worker')})")
    p.add_argument("--seed", type=int, help=f"base random seed (default: {_preset_defaults('seed')})")
    p.add_argument("--keep-last", type=int, metavar="K",
                   help=f"checkpoints kept, mid-epoch ones included; the latest is what a restart and the final "
                        f"export use, and the model chosen on the validation split is exported to best/ as well "
                        f"(default: {_preset_defaults('keep_last_k')})")
    p.add_argument("--max-failures", type=int, metavar="N",
                   help=f"worker-group restarts from the last checkpoint, -1 = unlimited "
                        f"(default: {_preset_defaults('max_failures')})")
    p.add_argument("--pooling", choices=("avg", "max"),
                   help="global pooling of the segment outputs into the clip output: avg (the released model's) or "
                        "max, the paper's two options; on the real-audio kit max won on the validation split "
                        f"(default: {_preset_defaults('pooling', 'model')})")
    p.add_argument("--loss-target", choices=("weak", "slat"),
                   help="what the loss scores: weak = the pooled clip output against the clip labels (N_S); "
                        "slat = every segment output against its clip's labels, the paper's strong-label "
                        "assumption baseline N_S^slat (default: weak)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="fine-tune: start from this exported model (folder or s3://, e.g. <run>/model) with a "
                        "new output layer for the vocabulary of --data; its front end and architecture "
                        "replace the preset's (default: none, random initialisation)")
    p.add_argument("--freeze-blocks", type=int, metavar="N",
                   help="with --init-from: keep the lowest N conv blocks frozen, weights and BatchNorm "
                        "statistics (default: 0)")
    p.add_argument("--checkpoint-every-s", type=float, metavar="SECONDS",
                   help="mid-epoch checkpoint holding the data position after this many seconds of training; "
                        "a killed run resumes from it without repeating or skipping clips; 0 = epoch ends only "
                        f"(default: {_preset_defaults('checkpoint_every_s')})")
    p.add_argument("--checkpoint-every-steps", type=int, metavar="N",
                   help="mid-epoch checkpoint every N optimizer steps instead of by time; 0 = by time "
                        f"(default: {_preset_defaults('checkpoint_every_steps')})")
    p.add_argument("--clip-log", action="store_true", default=None,
                   help="audit epoch coverage: every rank appends the clip ids of each step (with epoch, step and "
                        "restart count) to <out>/<name>/clip_log/ as JSON lines (default: off)")
    i = p.add_argument_group("training input")
    i.add_argument("--input", choices=("local", "ray_data"),
                   help="local: each Train worker reads and decodes its shards itself; ray_data: Ray Data tasks "
                        "read and decode anywhere in the cluster (CPU-only nodes too) and stream rows to the "
                        f"workers; needs --sampling natural (default: {_preset_defaults('input', 'loader')})")
    i.add_argument("--decode-cpus", type=float, metavar="N",
                   help=f"with --input ray_data: CPUs per read+decode task "
                        f"(default: {_preset_defaults('decode_cpus', 'loader')})")
    i.add_argument("--decode-concurrency", type=int, metavar="N",
                   help="with --input ray_data: read+decode tasks at once at most, 0 = Ray decides "
                        f"(default: {_preset_defaults('decode_concurrency', 'loader')})")
    i.add_argument("--decode-nodes", metavar="KEY=VALUE",
                   help="with --input ray_data: a Ray node label (`ray start --labels node-group=cpu-data`, or a "
                        "KubeRay worker group's labels); read+decode tasks run only on nodes carrying it and the "
                        "Train workers only on nodes without it (default: none, both anywhere)")
    p.add_argument("--steps-per-epoch", type=int, metavar="N",
                   help="optimizer steps per epoch and rank (default: 0 = derived from the manifest)")
    r = p.add_argument_group("recipe beyond the paper (the 'paper' preset keeps every part off)")
    d = _preset_defaults
    r.add_argument("--time-masks", type=int, metavar="N",
                   help=f"SpecAugment: time bands zeroed per clip (default: {d('time_masks', 'augment')})")
    r.add_argument("--time-width", type=int, metavar="FRAMES",
                   help=f"SpecAugment: max frames per time band (default: {d('time_width', 'augment')})")
    r.add_argument("--mel-masks", type=int, metavar="N",
                   help=f"SpecAugment: mel bands zeroed per clip (default: {d('mel_masks', 'augment')})")
    r.add_argument("--mel-width", type=int, metavar="BINS",
                   help=f"SpecAugment: max mel bins per band (default: {d('mel_width', 'augment')})")
    r.add_argument("--mixup-alpha", type=float, metavar="A",
                   help="mixup of waveforms and label vectors, lam ~ Beta(A, A); 0 = off "
                        f"(default: {d('mixup_alpha', 'augment')})")
    r.add_argument("--lr", type=float, help=f"peak learning rate (default: {d('lr', 'optim')})")
    r.add_argument("--schedule", choices=("constant", "cosine"),
                   help=f"learning-rate schedule after the warm-up (default: {d('schedule', 'optim')})")
    r.add_argument("--warmup-steps", type=int, metavar="N",
                   help=f"linear LR warm-up over N optimizer steps (default: {d('warmup_steps', 'optim')})")
    r.add_argument("--min-lr-ratio", type=float, metavar="R",
                   help=f"cosine floor as a fraction of --lr (default: {d('min_lr_ratio', 'optim')})")
    r.add_argument("--weight-decay", type=float, metavar="W",
                   help=f"weight decay (default: {d('weight_decay', 'optim')})")
    r.add_argument("--decoupled-weight-decay", action=argparse.BooleanOptionalAction,
                   help="AdamW's decoupled decay instead of Adam's L2 penalty "
                        f"(default: {d('decoupled_weight_decay', 'optim')})")
    r.add_argument("--ema-decay", type=float, metavar="D",
                   help="exponential moving average of the weights, evaluated and exported; 0 = off "
                        f"(default: {d('ema_decay', 'optim')})")
    r.add_argument("--sampling", choices=("natural", "balanced"),
                   help="natural: every clip once per epoch; balanced: classes seen about equally often "
                        f"(default: {d('sampling', 'loader')})")
    p.add_argument("--train-split", metavar="SPLITS",
                   help="split(s) of --data to train on, joined by '+'; 'train+val' with --select-split '' refits "
                        "on both once val has chosen the epoch count "
                        f"(default: {_preset_defaults('train_split', 'loader')})")
    p.add_argument("--select-split", metavar="SPLIT",
                   help="split of --data that chooses best/ and best_epoch when the data has it (prep "
                        "--val-fraction carves it); '' = never choose, keep the last epoch "
                        f"(default: {_preset_defaults('select_split', 'loader')})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. optim.lr=3e-4 or loader.batch_seconds=80 "
                        "(repeatable; default: none); see trainer/config.py")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to join (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--num-cpus", type=int, metavar="N",
                   help="CPUs of a local Ray started by this command (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: bar shown)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as JSON and exit (default: train)")
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Preset -> CLI flags -> ``--set`` overrides, validated by the dataclasses."""
    cfg = preset(args.preset)
    d = dataclasses.asdict(cfg)
    for flag, field in _FLAGS.items():
        v = getattr(args, flag, None)
        if v is not None:
            d[field] = v
    for flag, (section, field) in _SECTION_FLAGS.items():
        v = getattr(args, flag, None)
        if v is not None:
            d[section][field] = v
    cfg = TrainConfig.from_dict(d)
    cfg = apply_overrides(cfg, args.set)
    if cfg.out and not storage.is_remote(cfg.out):
        cfg = dataclasses.replace(cfg, out=os.path.abspath(cfg.out))  # Ray needs an absolute local path
    if cfg.init_from and not storage.is_remote(cfg.init_from):
        cfg = dataclasses.replace(cfg, init_from=os.path.abspath(cfg.init_from))  # workers run elsewhere
    return cfg


def _progress_actor_class():
    import ray

    @ray.remote(num_cpus=0)
    class TrainProgress:
        """Workers push their latest numbers here; the driver's progress bar polls it."""

        def __init__(self):
            self.ranks: dict[int, dict] = {}

        def update(self, rank: int, info: dict) -> None:
            self.ranks[rank] = info

        def get(self) -> dict:
            return self.ranks

    return TrainProgress


def _poll_progress(actor, stop: threading.Event, enabled: bool) -> None:
    import ray
    from tqdm import tqdm

    bar, bar_epoch = None, None
    while not stop.wait(0.5):
        try:
            ranks = ray.get(actor.get.remote(), timeout=5)
        except Exception:  # the actor is best effort; training goes on without a bar
            continue
        if not ranks or not enabled:
            continue
        r0 = ranks.get(0) or next(iter(ranks.values()))
        if r0["epoch"] != bar_epoch or bar is None:
            if bar is not None:
                bar.close()
            bar_epoch = r0["epoch"]
            bar = tqdm(total=r0["steps_per_epoch"], initial=r0["step_in_epoch"],
                       desc=f"epoch {bar_epoch + 1}/{r0['epochs']}", unit="step",
                       dynamic_ncols=True, file=sys.stderr)
        bar.n = r0["step_in_epoch"]
        bar.set_postfix(loss=f"{r0['loss']:.4f}", clips_s=f"{sum(r['clips_per_s'] for r in ranks.values()):.1f}",
                        data_wait=f"{100 * max(r['data_wait'] for r in ranks.values()):.0f}%", refresh=False)
        bar.refresh()
    if bar is not None:
        bar.close()


def plot_curves(history: list[dict], path_url: str, select: str | None = "val") -> None:
    """PNG of training loss, selection-split mAP, eval mAP/AUC and throughput per epoch."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] + 1 for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(ep, [h["train_loss"] for h in history], "o-")
    ax[0].set(title="training loss (BCE)", xlabel="epoch")
    if select and any(h.get(f"{select}_mAP") is not None for h in history):
        ax[1].plot(ep, [h.get(f"{select}_mAP") for h in history], "^-", label=f"{select} mAP (selects)")
    if any(h.get("eval_mAP") is not None for h in history):
        ax[1].plot(ep, [h.get("eval_mAP") for h in history], "o-", label="eval mAP")
        ax[1].plot(ep, [h.get("eval_auc") for h in history], "s-", label="eval mean AUC")
    if ax[1].lines:
        ax[1].legend()
    ax[1].set(title="validation and evaluation", xlabel="epoch")
    ax[2].plot(ep, [h["clips_per_s"] for h in history], "o-", label="clips/s")
    ax[2].plot(ep, [h["audio_s_per_s"] for h in history], "s-", label="audio s/s")
    ax[2].legend()
    ax[2].set(title="training throughput (all ranks)", xlabel="epoch")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes_atomic(path_url, buf.getvalue())


def _storage_for_ray(url: str):
    """(storage_path, storage_filesystem) for RunConfig: s3 goes through our s3fs settings."""
    if url.startswith("s3://"):
        import pyarrow.fs

        fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(storage.s3_filesystem()))
        return url[len("s3://"):], fs
    return url, None


def run(cfg: TrainConfig, *, address: str | None = None, num_cpus: int | None = None, progress: bool = True) -> dict:
    """Plan, fit, export. Returns a summary dict (also what main prints)."""
    from data_prep.manifest import read_manifest
    from trainer.data import plan_epoch
    from trainer.finetune import init_from_export

    if not cfg.data:
        raise ValueError("--data is required (a folder or s3:// prefix with manifest.json)")
    train_m = read_manifest(cfg.data)
    cfg = init_from_export(cfg, train_m.num_classes)  # F2's width from the manifest; --init-from's network
    if train_m.sample_rate != cfg.frontend.sample_rate:
        source = f"--init-from {cfg.init_from}" if cfg.init_from else f"preset {cfg.preset!r}"
        raise ValueError(f"{cfg.data} holds {train_m.sample_rate} Hz audio but {source} expects "
                         f"{cfg.frontend.sample_rate} Hz: prepare shards at that rate, or pass "
                         f"--set frontend.sample_rate={train_m.sample_rate} (and matching n_fft/hop_length)")
    eval_m = read_manifest(cfg.eval_data) if cfg.eval_data else train_m
    if eval_m.class_ids != train_m.class_ids:
        raise ValueError(f"{cfg.eval_data}: vocabulary differs from {cfg.data}; eval scores would be misaligned")
    # planned for every epoch of the run: each uses every clip once and all run the same steps
    train_plan = plan_epoch(train_m, cfg.loader.train_split, cfg.loader, cfg.workers, train=True, seed=cfg.seed,
                            sampling=cfg.loader.sampling, epochs=cfg.epochs)
    eval_plan = None
    if cfg.loader.eval_split in eval_m.splits:
        eval_plan = plan_epoch(eval_m, cfg.loader.eval_split, cfg.loader, cfg.workers, train=False)
    else:
        print(f"[trainer] no {cfg.loader.eval_split!r} split in {eval_m.url}: training without evaluation",
              flush=True)
    select_plan = None
    if cfg.loader.select_split and cfg.loader.select_split in train_m.splits:
        select_plan = plan_epoch(train_m, cfg.loader.select_split, cfg.loader, cfg.workers, train=False)
        print(f"[trainer] model selection on the {cfg.loader.select_split!r} split of {train_m.url} "
              f"({select_plan.num_clips} clips); the eval split only reports", flush=True)
    else:
        why = (f"no {cfg.loader.select_split!r} split in {train_m.url} to choose a model on (prep --val-fraction "
               "carves one)" if cfg.loader.select_split else "model selection is off (--select-split '')")
        print(f"[trainer] {why}: no best/ is chosen, the last epoch is the model", flush=True)

    run_dir = storage.join(cfg.out, cfg.name)
    # one trainer per run folder: a second one would share its checkpoints and delete them (LeaseHeld)
    with storage.Lease(run_dir, owner=f"weaksound train {cfg.name}") as lease:
        return _fit_and_export(cfg, run_dir, lease, train_m=train_m, train_plan=train_plan, eval_plan=eval_plan,
                               select_plan=select_plan, address=address, num_cpus=num_cpus, progress=progress)


def _fit_and_export(cfg: TrainConfig, run_dir: str, lease, *, train_m, train_plan, eval_plan, select_plan,
                    address, num_cpus, progress) -> dict:
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from runtime.ray_cluster import ensure_ray
    from trainer.checkpoint import load_checkpoint
    from trainer.engine import ema_weights
    from trainer.distributed import process_group_backend
    from trainer.export import export_model
    from trainer.loop import METRICS_FILE, train_loop_per_worker
    from trainer.model import WeakLabelCNN
    from trainer.ray_data_input import build_train_dataset, check_decode_capacity, decode_options, worker_label_selector

    ensure_ray(address, num_cpus=num_cpus)
    datasets = None
    if cfg.loader.input == "ray_data":  # read + decode in Ray Data tasks; the workers get streaming splits
        print("[trainer] " + check_decode_capacity(ray.nodes(), workers=cfg.workers,
                                                   cpus_per_worker=cfg.cpus_per_worker, loader=cfg.loader),
              flush=True)
        # every epoch re-executes it (the workers re-iterate their shard), in a new file order each time
        datasets = {"train": build_train_dataset(train_plan, seed=cfg.seed, **decode_options(cfg.loader))}
    actor_name = f"weaksound-progress-{cfg.name}"  # one live run per name (the storage is shared too)
    actor = _progress_actor_class().options(name=actor_name).remote()
    vocabulary = [{"index": v["index"], "id": v["id"], "name": v["name"]} for v in train_m.vocabulary]
    loop_config = {"train": dataclasses.asdict(cfg), "train_plan": train_plan.to_dict(),
                   "eval_plan": eval_plan.to_dict() if eval_plan else None,
                   "select_plan": select_plan.to_dict() if select_plan else None, "vocabulary": vocabulary,
                   "run_dir": run_dir, "progress_actor": actor_name}
    storage_path, storage_fs = _storage_for_ray(cfg.out)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker},
                                               label_selector=worker_label_selector(cfg.loader)),
        datasets=datasets,
        torch_config=TorchConfig(backend=process_group_backend(cfg.use_gpu)),
        run_config=ray.train.RunConfig(
            name=cfg.name, storage_path=storage_path, storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_last_k)),
    )
    print("[trainer] config: " + json.dumps(dataclasses.asdict(cfg), separators=(",", ":")), flush=True)
    print(f"[trainer] run {cfg.name!r} -> {run_dir}: {cfg.workers} workers, {cfg.epochs} epochs x "
          f"{train_plan.steps_per_epoch} steps; train {train_plan.num_clips} clips, "
          f"val {select_plan.num_clips if select_plan else 0} clips, "
          f"eval {eval_plan.num_clips if eval_plan else 0} clips", flush=True)
    stop = threading.Event()
    poller = threading.Thread(target=_poll_progress, args=(actor, stop, progress), daemon=True)
    poller.start()
    started = time.perf_counter()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        poller.join(timeout=10)
        ray.kill(actor)
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"run {cfg.name!r} finished without any checkpoint")

    # final export from the last checkpoint (the weights the run ended with; their EMA when kept)
    model = WeakLabelCNN(cfg.model, cfg.frontend.n_mels)
    with result.checkpoint.as_directory() as d:
        info = load_checkpoint(d, model=model, restore_rng=False)
    if "ema" in info["extra"]:
        model.load_state_dict(ema_weights(info["extra"]["ema"]), strict=True)
    metrics_doc = json.loads(storage.read_text(storage.join(run_dir, METRICS_FILE)))
    history = metrics_doc["epochs"]
    last = history[-1] if history else {}
    selected = metrics_doc.get("selection_split")
    lease.check()  # still ours: nobody took the folder over while we trained
    export_model(storage.join(run_dir, "model"), model.eval(), frontend=cfg.frontend, architecture=cfg.model,
                 vocabulary=vocabulary, training={"run": cfg.name, "epoch": info["counters"]["epoch"],
                                                  "step": info["counters"]["step"], "eval_mAP": last.get("eval_mAP"),
                                                  "weights": "ema" if "ema" in info["extra"] else "last",
                                                  "selection_split": selected, "best": metrics_doc.get("best")})
    if history:
        plot_curves(history, storage.join(run_dir, "curves.png"), selected)
    best = metrics_doc.get("best") if selected else None
    summary = {"run": cfg.name, "run_dir": run_dir, "epochs_done": info["counters"]["epoch"] + 1,
               "global_step": info["counters"]["step"], "starts": info["counters"]["starts"],
               "train_loss": last.get("train_loss"), "eval_mAP": last.get("eval_mAP"),
               "eval_auc": last.get("eval_auc"), "selection_split": selected, "best": best,
               "best_epoch": best["epoch"] if best else None,
               "best_eval_mAP": _eval_at(history, best["epoch"]) if best else None,
               "checkpoint": result.checkpoint.path, "export": storage.join(run_dir, "model"),
               "seconds": round(time.perf_counter() - started, 1)}
    return summary


def _eval_at(history: list[dict], epoch: int):
    """The eval mAP reported for the model chosen on the validation split."""
    return next((h.get("eval_mAP") for h in history if h["epoch"] == epoch), None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = resolve_config(args)
    if args.print_config:
        print(json.dumps(dataclasses.asdict(cfg), indent=1))
        return 0
    try:
        summary = run(cfg, address=args.address, num_cpus=args.num_cpus, progress=not args.no_progress)
    except storage.LeaseHeld as held:
        print(f"[trainer] error: {held}", file=sys.stderr, flush=True)
        return 2
    print("[trainer] done: " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
