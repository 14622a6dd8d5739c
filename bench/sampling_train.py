"""Rare-class mAP of a short training run, natural vs class-balanced sampling, side by side.

``bench/sampling.py`` shows what balanced sampling does to per-class *exposure*; this script
shows what it does to *accuracy*. It builds a long-tailed training set from real rendered audio
of the embedded synthetic corpus (task ``source``, 27 weakly labelled classes, 1-4 per clip) and
trains ``cpu-small`` on it with the project's trainer (``trainer.main.run``, Ray Train,
``--workers`` DDP workers), for every seed of ``--seeds`` once with ``sampling=natural`` and once
with ``sampling=balanced``: same data, seed, epochs and optimizer steps per epoch
(``loader.steps_per_epoch`` fixed to the natural epoch's length as the trainer's planner derives
it; a balanced epoch draws as many clips, with replacement). It then reports the last epoch's
eval mAP over the rare classes, the head classes and all classes, and the per-class exposure
ratio each run actually had (from the runs' ``--clip-log`` audit: clips trained on, per class).

The data, all true labels (a clip keeps every label it has; nothing is relabelled):

* pool: the first ``--pool`` clips of the corpus (plans only, no audio yet), clips longer than
  ``--max-duration`` left out; the corpus' own train/eval split is kept.
* train (long-tailed): classes ranked by their frequency in the pool; class of rank ``r`` gets a
  quota ``max(--tail-clips, round(--head-clips * (r + 1) ** -zipf))`` (Zipf law over classes).
  Train clips are taken in a seeded random order and kept when every label of the clip is still
  under its quota, so no class exceeds its quota and the rare classes get about ``--tail-clips``.
* eval (balanced, held out): the same rule on the corpus' eval split with the same quota
  ``--eval-clips`` for every class.
* rare classes: fewer than ``--rare-below`` train clips; head classes: the ``--head-classes``
  most frequent in train. Both lists are printed with their clip counts.

Only the selected clips are rendered and written as shards (``data_prep.pipeline.run_prep``,
the same path as ``weaksound prep synthetic``) under ``--out`` (default: a fresh temp folder).

    python bench/sampling_train.py                  # 2 seeds x 2 modes, ~1 min per run on 2 CPU cores
    python bench/sampling_train.py --epochs 12 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np

from runtime import storage
from trainer.config import apply_overrides, preset

MODES = ("natural", "balanced")


def zipf_quotas(num_classes: int, head_clips: int, tail_clips: int, zipf: float) -> np.ndarray:
    """Train clips allowed for the class of each frequency rank: a Zipf law floored at ``tail_clips``."""
    ranks = np.arange(1, num_classes + 1, dtype=np.float64)
    return np.maximum(tail_clips, np.round(head_clips * ranks ** -zipf)).astype(np.int64)


def take_under_quota(records, quota: dict[str, int], rng: np.random.Generator) -> list:
    """Records, in a seeded random order, kept while every one of their labels is under its quota."""
    count: collections.Counter = collections.Counter()
    kept = []
    for i in rng.permutation(len(records)):
        rec = records[int(i)]
        if all(count[c] < quota[c] for c in rec.labels):
            count.update(rec.labels)
            kept.append(rec)
    return kept


def build_listing(args):
    """The long-tailed train + balanced eval listing (plans only) and the classes' frequency ranking."""
    from data_prep.records import SourceListing
    from data_prep.sources.synthetic import load_synthetic, plan_synthetic

    pool = load_synthetic("source", num_clips=args.pool, seed=args.corpus_seed)
    short = [r for i, r in enumerate(pool.records)
             if plan_synthetic("source", i, args.corpus_seed).duration_s <= args.max_duration]
    train_pool = [r for r in short if r.split == "train"]
    eval_pool = [r for r in short if r.split == "eval"]
    freq = collections.Counter(c for r in train_pool for c in r.labels)
    ranking = sorted(pool.vocab.ids, key=lambda c: (-freq[c], pool.vocab.ids.index(c)))
    quotas = zipf_quotas(len(ranking), args.head_clips, args.tail_clips, args.zipf)
    rng = np.random.default_rng(args.select_seed)
    train = take_under_quota(train_pool, dict(zip(ranking, quotas.tolist())), rng)
    evals = take_under_quota(eval_pool, {c: args.eval_clips for c in ranking}, rng)
    listing = SourceListing(name="synthetic-source-longtail", vocab=pool.vocab, records=train + evals, rejects=[])
    return listing, ranking


def natural_steps(data: str, cfg) -> int:
    """Steps per epoch the trainer's planner derives for natural sampling on ``data`` (both runs use it)."""
    from data_prep.manifest import read_manifest
    from trainer.data import plan_epoch

    return plan_epoch(read_manifest(data), "train", cfg.loader, cfg.workers, train=True, seed=cfg.seed,
                      sampling="natural", epochs=cfg.epochs).steps_per_epoch


def exposure_per_epoch(run_dir: str, labels_of: dict[str, tuple[str, ...]], classes: list[str]) -> list[np.ndarray]:
    """Per epoch, how many trained clips carried each class (from the run's clip log; repeats count)."""
    from trainer.clip_log import effective_steps, read_clip_log

    per_epoch: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for (epoch, _, _), rec in effective_steps(read_clip_log(run_dir)).items():
        for key in rec["clip_ids"]:
            per_epoch[epoch].update(labels_of[key])
    return [np.array([per_epoch[e][c] for c in classes], dtype=np.float64) for e in sorted(per_epoch)]


def _without_out(argv: list[str]) -> list[str]:
    """The command line minus ``--out`` (its folder is a fresh one per run)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            kept.append(a)
    return kept


def mean_ap(per_class_ap: list, indices: list[int]) -> float:
    vals = [per_class_ap[i] for i in indices if per_class_ap[i] is not None]
    return float(np.mean(vals)) if vals else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="folder for the shards and the runs (default: a fresh temp folder)")
    p.add_argument("--preset", default="cpu-small", help="trainer preset (default: cpu-small)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (default: 4)")
    p.add_argument("--steps", type=int, default=0,
                   help="optimizer steps per epoch for both runs; 0 = the natural epoch's (default: 0)")
    p.add_argument("--workers", type=int, default=2, help="DDP workers per run (default: 2)")
    p.add_argument("--seeds", default="0,1",
                   help="training seeds, comma-separated; each seed trains both modes on the same data "
                        "(default: 0,1)")
    p.add_argument("--select-seed", type=int, default=0, help="seed of the clip selection (default: 0)")
    p.add_argument("--corpus-seed", type=int, default=0, help="synthetic corpus seed (default: 0)")
    p.add_argument("--pool", type=int, default=12000, help="corpus clips to select from (default: 12000)")
    p.add_argument("--max-duration", type=float, default=15.0,
                   help="leave out pool clips longer than this many seconds, to bound eval time (default: 15)")
    p.add_argument("--head-clips", type=int, default=300, help="train clips of the commonest class (default: 300)")
    p.add_argument("--tail-clips", type=int, default=8, help="train clips of each rarest class (default: 8)")
    p.add_argument("--zipf", type=float, default=1.2, help="Zipf exponent of the class quotas (default: 1.2)")
    p.add_argument("--eval-clips", type=int, default=20, help="eval clips per class, all classes (default: 20)")
    p.add_argument("--rare-below", type=int, default=16,
                   help="a class with fewer train clips than this is rare (default: 16)")
    p.add_argument("--head-classes", type=int, default=3, help="the most frequent train classes reported as "
                                                               "head (default: 3)")
    args = p.parse_args(argv)

    from data_prep.manifest import read_manifest
    from data_prep.pipeline import run_prep
    from data_prep.shards import ShardConfig, sanitize_key
    from trainer.main import run
    from trainer.sampling import exposure_ratio

    if args.out and os.path.exists(args.out) and os.listdir(args.out):
        p.error(f"--out {args.out} is not empty: the same run names there would resume earlier runs")
    out = args.out or tempfile.mkdtemp(prefix="weaksound-sampling-train-")
    seeds = [int(x) for x in args.seeds.split(",")]
    base = apply_overrides(preset(args.preset), [f"workers={args.workers}", f"epochs={args.epochs}",
                                                 f"seed={seeds[0]}", f"out={json.dumps(os.path.join(out, 'runs'))}",
                                                 "clip_log=true"])
    listing, ranking = build_listing(args)
    train_count = collections.Counter(c for r in listing.records if r.split == "train" for c in r.labels)
    eval_count = collections.Counter(c for r in listing.records if r.split == "eval" for c in r.labels)
    rare = [c for c in ranking if train_count[c] < args.rare_below]
    head = ranking[:args.head_classes]
    n_train = sum(r.split == "train" for r in listing.records)
    print(f"train: {n_train} clips, long-tailed (Zipf {args.zipf}, {args.head_clips} -> {args.tail_clips}); "
          f"eval: {len(listing.records) - n_train} clips, <= {args.eval_clips} per class")
    print("train / eval clips per class, by rank: " + ", ".join(f"{c} {train_count[c]}/{eval_count[c]}"
                                                                  for c in ranking))
    print(f"head ({len(head)}): {', '.join(head)}")
    print(f"rare ({len(rare)}, < {args.rare_below} train clips): {', '.join(rare)}")

    data = os.path.join(out, "shards")
    t0 = time.perf_counter()
    run_prep(listing, data, ShardConfig(sample_rate=base.frontend.sample_rate, max_clips_per_shard=200),
             executor="local", progress=False)
    print(f"prep: {time.perf_counter() - t0:.0f} s -> {data}")
    steps = args.steps or natural_steps(data, base)
    classes = read_manifest(data).class_ids  # the order of eval_per_class_ap
    labels_of = {sanitize_key(r.clip_id): r.labels for r in listing.records if r.split == "train"}
    present = np.array([train_count[c] > 0 for c in classes])
    idx = {name: [classes.index(c) for c in group] for name, group in
           (("rare", rare), ("head", head), ("all", classes))}

    rows = []  # (seed, mode, {rare, head, all, ratio, seconds})
    for seed in seeds:
        for mode in MODES:
            cfg = apply_overrides(base, [f"data={json.dumps(data)}", f"name={json.dumps(f'{mode}-s{seed}')}",
                                         f"seed={seed}", f"loader.sampling={json.dumps(mode)}",
                                         f"loader.steps_per_epoch={steps}"])
            t0 = time.perf_counter()
            summary = run(cfg, progress=False)
            seconds = time.perf_counter() - t0
            doc = json.loads(storage.read_text(storage.join(summary["run_dir"], "metrics.json")))
            ap = doc["epochs"][-1]["eval_per_class_ap"]
            exposure = exposure_per_epoch(summary["run_dir"], labels_of, classes)
            rows.append((seed, mode, {**{g: mean_ap(ap, i) for g, i in idx.items()},
                                      "ratio": max(exposure_ratio(e, present) for e in exposure),
                                      "seconds": seconds}))

    print(f"\n{args.preset}, {args.workers} workers, {args.epochs} epochs x {steps} steps per run; "
          f"eval mAP of the last epoch over {len(rare)} rare, {len(head)} head and all {len(classes)} classes")
    print(f"{'seed':>4} | {'sampling':>8} | {'rare mAP':>8} | {'head mAP':>8} | {'all mAP':>7} | "
          f"{'exposure ratio':>14} | {'run s':>5}")
    for seed, mode, r in rows:
        print(f"{seed:>4} | {mode:>8} | {r['rare']:>8.3f} | {r['head']:>8.3f} | {r['all']:>7.3f} | "
              f"{r['ratio']:>13.1f}x | {r['seconds']:>5.0f}")
    mean = {m: {k: float(np.mean([r[k] for _, mode, r in rows if mode == m])) for k in ("rare", "head", "all")}
            for m in MODES}
    for m in MODES:
        print(f"{'mean':>4} | {m:>8} | {mean[m]['rare']:>8.3f} | {mean[m]['head']:>8.3f} | {mean[m]['all']:>7.3f} |")
    nat, bal = mean["natural"], mean["balanced"]
    print(f"balanced - natural (mean over {len(seeds)} seed(s)): rare mAP {bal['rare'] - nat['rare']:+.3f}, "
          f"head mAP {bal['head'] - nat['head']:+.3f}, all mAP {bal['all'] - nat['all']:+.3f}. "
          "Exposure ratio: clips trained on per class, most over least exposed, worst epoch (clip log).")
    print(f"runs under {os.path.join(out, 'runs')}")
    print("reproduce: python bench/sampling_train.py " + " ".join(_without_out(sys.argv[1:] if argv is None
                                                                            else argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
