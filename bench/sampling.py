"""Per-class exposure per epoch, natural vs class-balanced sampling, side by side.

Builds a long-tailed synthetic corpus of labels and durations (a few classes in most clips,
many rare; the main label of a clip follows a Zipf law over the classes, ``--co-label`` of the
clips carry a second label) and plans real training epochs with the trainer's own planner
(``trainer.batch_plan.plan_pass``, shuffle + bucketing + equal steps over ``--streams``
streams, multiplicities from ``trainer.sampling`` for ``balanced``). For each epoch it counts,
per class, the clips carrying it in the batches actually formed, and prints the exposure
ratio (most-exposed class over least-exposed, classes present in the corpus only), the share
of distinct clips used and the most repeats of one clip.

``--head-co-label P`` adds the hard case: a fraction P of all clips also carries one of the
3 head classes (as "Speech" or "Music" co-occur with many AudioSet classes). Balanced sampling
then prefers the rare-class clips without a head label; when almost every clip has one
(P = 0.9) no reweighting can expose the head classes as rarely as the rare ones, and the
balanced ratio shows that floor (measured 2026-11-29: 5.7x at P = 0.9, 1.23x at P = 0.5).

    python bench/sampling.py                          # 20,000 clips, 200 classes, 3 epochs
    python bench/sampling.py --head-co-label 0.9
    python bench/sampling.py --data /path/to/shards   # a prepared dataset's train split
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


from trainer.batch_plan import BatchingSpec, plan_pass  # noqa: E402
from trainer.bucketing import estimate_duration_bins  # noqa: E402
from trainer.sampling import balanced_weights, class_exposure, epoch_multiplicities, exposure_ratio  # noqa: E402


def long_tailed_corpus(clips: int, classes: int, *, zipf: float, co_label: float, head_co_label: float,
                       seed: int) -> tuple[list[list[int]], np.ndarray]:
    """(labels per clip, durations): main label ~ Zipf(zipf) over the classes; durations web-like."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, classes + 1) ** zipf
    main = rng.choice(classes, size=clips, p=p / p.sum())
    labels = []
    for c in main.tolist():
        s = {c}
        if rng.random() < co_label:
            s.add(int(rng.integers(classes)))
        if rng.random() < head_co_label:
            s.add(int(rng.integers(3)))
        labels.append(sorted(s))
    durations = np.clip(rng.lognormal(np.log(3.0), 1.0, clips), 0.5, 60.0)
    return labels, durations


def epoch_exposure(labels, durations, shard_sizes, spec, num_classes, *, streams, epoch, weights=None):
    """Class exposure in the batches the planner forms for one epoch, and the plan itself."""
    m = None
    if weights is not None:
        m = epoch_multiplicities(weights, len(labels), np.random.default_rng([0, epoch, 0, 30_000]))
    p = plan_pass(durations, shard_sizes, spec, num_streams=streams, seed=0, epoch=epoch, multiplicity=m)
    pos = np.concatenate([b[:, 0] for s in p.streams for b in s]).astype(np.int64)
    used = np.bincount(p.sequence[pos], minlength=len(labels))
    return class_exposure(labels, used, num_classes), used


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=20000, help="synthetic clips (default: 20000)")
    ap.add_argument("--classes", type=int, default=200, help="synthetic classes (default: 200)")
    ap.add_argument("--zipf", type=float, default=1.3, help="Zipf exponent of the main label (default: 1.3)")
    ap.add_argument("--co-label", type=float, default=0.1,
                    help="share of clips with a second, uniformly drawn label (default: 0.1)")
    ap.add_argument("--head-co-label", type=float, default=0.0,
                    help="share of clips that also carry one of the 3 head classes (default: 0.0)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs planned per mode (default: 3)")
    ap.add_argument("--streams", type=int, default=8, help="ranks x loader workers (default: 8)")
    ap.add_argument("--clips-per-shard", type=int, default=1000, help="shard size (default: 1000)")
    ap.add_argument("--data", help="a prepared dataset (folder or s3:// with manifest.json) instead of "
                                   "the synthetic corpus (default: synthetic)")
    ap.add_argument("--split", default="train", help="split of --data (default: train)")
    args = ap.parse_args(argv)

    if args.data:
        from data_prep.manifest import read_manifest
        from trainer.sampling import clip_labels

        man = read_manifest(args.data)
        labels = clip_labels(man, args.split)
        durations = np.asarray([d for s in man.shards_of(args.split) for d in s.durations_s])
        shard_sizes = [s.num_samples for s in man.shards_of(args.split)]
        num_classes = man.num_classes
        source = f"{args.data} ({args.split})"
    else:
        labels, durations = long_tailed_corpus(args.clips, args.classes, zipf=args.zipf, co_label=args.co_label,
                                               head_co_label=args.head_co_label, seed=0)
        n = len(labels)
        shard_sizes = [min(args.clips_per_shard, n - i) for i in range(0, n, args.clips_per_shard)]
        num_classes = args.classes
        source = (f"synthetic: {n} clips, {num_classes} classes, Zipf {args.zipf}, co-label {args.co_label}, "
                  f"head co-label {args.head_co_label}")
    counts = class_exposure(labels, np.ones(len(labels)), num_classes)
    present = counts > 0
    spec = BatchingSpec(tuple(estimate_duration_bins(np.minimum(durations, 10.0), 30)), batch_seconds=160.0,
                        max_batch_clips=64, max_crop_s=10.0, shuffle_buffer=500)
    print(f"corpus: {source}; clips per class: max {int(counts.max())}, min {int(counts[present].min())}, "
          f"{int(present.sum())} classes present; {args.streams} streams")
    t0 = time.perf_counter()
    weights = balanced_weights(labels, num_classes)
    print(f"balanced weights: {time.perf_counter() - t0:.2f} s")
    print(f"{'epoch':>5} | {'natural ratio':>13} | {'balanced ratio':>14} | {'balanced: clips used':>20} | "
          f"{'max repeats':>11}")
    worst = {"natural": 0.0, "balanced": 0.0}
    for epoch in range(args.epochs):
        nat, _ = epoch_exposure(labels, durations, shard_sizes, spec, num_classes, streams=args.streams, epoch=epoch)
        bal, used = epoch_exposure(labels, durations, shard_sizes, spec, num_classes, streams=args.streams,
                                   epoch=epoch, weights=weights)
        r_nat, r_bal = exposure_ratio(nat, present), exposure_ratio(bal, present)
        worst["natural"], worst["balanced"] = max(worst["natural"], r_nat), max(worst["balanced"], r_bal)
        print(f"{epoch:>5} | {r_nat:>12.1f}x | {r_bal:>13.2f}x | {100 * (used > 0).mean():>19.1f}% | {used.max():>11}")
    print(f"worst epoch: natural {worst['natural']:.1f}x, balanced {worst['balanced']:.2f}x "
          f"(goal for balanced: <= 2x); natural / balanced = {worst['natural'] / worst['balanced']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
