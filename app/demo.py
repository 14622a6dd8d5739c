"""`weaksound demo`: the main job end to end on the embedded synthetic corpus.

Stages (each prints a progress bar; each resumes if re-run with the same --out):
  1. prep      generate the synthetic corpus and write shards + manifests to the object store
               (--store, a local folder by default; s3://bucket/prefix works the same)
  2. train     Ray Train, 2 DDP workers, preset cpu-small, on the weakly labelled source corpus
  3. embed     Ray actors extract F1/F2 embeddings of the two target tasks and the source eval split
  4. transfer  linear SVMs on every feature set + MFCC baseline (events: 5 folds, scenes: 4 folds),
               one adaptation variant (N_T^I) on the events task, semantic relations
  5. report    <out>/report/report.md and report.html with every plot

Pointing each stage at real data instead (see the README for the full commands):
  prep:      weaksound prep audioset --root CSV_DIR --split balanced_train --audio CLIPS --out s3://b/as
             weaksound prep esc50 --root ESC-50-master --out s3://b/esc50
             weaksound prep dcase2016 --root TUT-acoustic-scenes-2016-development --out s3://b/dcase
  train:     ray job submit --address http://HEAD:8265 --working-dir . -- python trainer/main.py \\
                 --data s3://b/as --eval-data s3://b/as-eval --out s3://b/runs --name as-r1 --preset paper
  embed:     weaksound embed --model s3://b/runs/as-r1/model --data s3://b/esc50 --out s3://b/emb/esc50
  transfer:  weaksound transfer events --embeddings s3://b/emb/esc50 --out results/esc50
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, replace

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import storage  # noqa: E402


def _stage(n: int, name: str, text: str) -> None:
    print(f"\n=== [{n}/5] {name}: {text}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="weaksound demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="local folder for results and the report (default: %(default)s)")
    p.add_argument("--store", default=None,
                   help="object-store URL for shards, checkpoints and embeddings (default: OUT/store; s3:// works)")
    p.add_argument("--preset", default="cpu-small", help="training preset; 'paper' is the paper's N_S "
                                                         "(default: %(default)s, sized for a 2-core CPU)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train DDP workers (default: %(default)s)")
    p.add_argument("--source-clips", type=int, default=None,
                   help="clips in the synthetic source corpus (default: the corpus' built-in size)")
    p.add_argument("--adapt-variants", default="I",
                   help="network adaptation variants to run on the events task, e.g. I,II,III; "
                        "'none' skips adaptation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="corpus and training seed (default: %(default)s)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    from runtime.ray_cluster import ensure_ray
    from data_prep.sources.synthetic import load_synthetic
    from data_prep.pipeline import run_prep
    from data_prep.shards import ShardConfig
    from trainer.config import preset
    from trainer import main as train_main
    from transfer import cli as transfer_cli
    from inference.embed import run_embed
    from app.report import ReportInputs, build_report

    out = os.path.abspath(args.out)
    store = args.store or os.path.join(out, "store")
    os.makedirs(out, exist_ok=True)
    cfg = preset(args.preset)
    rate = cfg.frontend.sample_rate
    seconds: dict[str, float] = {}
    commands: list[str] = []
    started = time.perf_counter()
    ensure_ray(args.address)

    _stage(1, "prep", f"synthetic corpus -> WebDataset shards at {rate} Hz in {store}/data")
    t0 = time.perf_counter()
    data = {task: storage.join(store, "data", task) for task in ("source", "events", "scenes")}
    for task, url in data.items():
        listing = load_synthetic(task, num_clips=args.source_clips if task == "source" else None, seed=args.seed)
        summary = run_prep(listing, url, ShardConfig(sample_rate=rate, max_clips_per_shard=100), executor="ray")
        for line in summary.lines():
            print(f"[prep] {line}")
    commands.append(f"weaksound prep synthetic --out {shlex.quote(storage.join(store, 'data'))} --sample-rate {rate} "
                    f"--clips-per-shard 100 --seed {args.seed}"
                    + (f" --num-clips {args.source_clips}  # source task" if args.source_clips else ""))
    seconds["prep"] = time.perf_counter() - t0

    _stage(2, "train", f"Ray Train DDP, {args.workers} workers, preset {args.preset}, {args.epochs} epochs")
    t0 = time.perf_counter()
    train_argv = ["--data", data["source"], "--eval-data", data["source"], "--out", storage.join(store, "runs"),
                  "--name", "demo", "--workers", str(args.workers), "--epochs", str(args.epochs),
                  "--preset", args.preset, "--seed", str(args.seed)]
    train_args = train_main.build_parser().parse_args(train_argv)
    train_cfg = train_main.resolve_config(train_args)
    train_summary = train_main.run(train_cfg)
    run_dir = storage.join(store, "runs", "demo")
    model_url = train_summary["export"]
    commands.append("weaksound train " + " ".join(shlex.quote(a) for a in train_argv))
    seconds["train"] = time.perf_counter() - t0

    _stage(3, "embed", "F1/F2 segment embeddings with Ray actors")
    t0 = time.perf_counter()
    emb = {task: storage.join(store, "embeddings", task) for task in ("events", "scenes")}
    for task, url in emb.items():
        s = run_embed(model_url, data[task], url)
        print(f"[embed] {task}: {s.line()}")
        commands.append(f"weaksound embed --model {model_url} --data {data[task]} --out {url}")
    seconds["embed"] = time.perf_counter() - t0

    _stage(4, "transfer", "SVMs on every feature set + MFCC baseline, semantic relations, adaptation")
    t0 = time.perf_counter()
    results = os.path.join(out, "transfer")
    runs = [["all", "--events", emb["events"], "--scenes", emb["scenes"], "--out", results]]
    if args.adapt_variants.lower() != "none":  # one adapted network family on the events task
        runs.append(["adapt", "--embeddings", emb["events"], "--variants", args.adapt_variants,
                     "--out", os.path.join(out, "transfer-adapt")])
    for transfer_argv in runs:
        rc = transfer_cli.main(transfer_argv)
        if rc:
            print(f"[demo] `weaksound transfer {transfer_argv[0]}` failed with exit code {rc}", file=sys.stderr)
            return rc
        commands.append("weaksound transfer " + " ".join(shlex.quote(a) for a in transfer_argv))
    seconds["transfer"] = time.perf_counter() - t0

    _stage(5, "report", f"{out}/report")
    t0 = time.perf_counter()
    sections = {"Transfer: events (ESC-50-like, 5 folds) and scenes (DCASE-2016-like, 4 folds)": results}
    if os.path.isdir(os.path.join(out, "transfer-adapt")):
        sections[f"Network adaptation N_T^{args.adapt_variants} on the events task"] = os.path.join(out, "transfer-adapt")
    md, html_path = build_report(ReportInputs(
        title="weaksound demo report", run_dir=run_dir, transfer_dirs=sections,
        commands=["scripts/demo.sh " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
                  "# or stage by stage:"] + commands,
        config=asdict(train_cfg), stage_seconds=seconds | {"report": time.perf_counter() - t0},
        notes=[f"Synthetic corpus (seed {args.seed}), preset `{args.preset}`, {args.workers} DDP workers, "
               f"{args.epochs} epochs. Every number below was measured by this run."]), os.path.join(out, "report"))
    print(f"\n[demo] done in {time.perf_counter() - started:.0f} s; report: {md} (HTML: {html_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
