"""Network adaptation N_T^I on every test fold: one Ray Train run per fold against one run for all folds.

  per-fold  the protocol's old shape: for each test fold its own ``TorchTrainer`` run (a worker
            group started, the shards read and decoded, the network trained and exported), then
            that fold's network re-extracts F1/F2 (one Ray task per shard)
  one-run   ``transfer.adapt_train.fit_adapted_folds``: one run fits the test folds in turn in the
            same worker group (shards decoded once per worker), then one Ray task per shard runs
            every fold's network on it
  one-run, W workers   the same with W DDP workers (``--workers``, default 2) and
            ``--batch-clips / W`` clips per worker, so a step still sees the same number of clips

All in one Ray session on the same data, one after another. Printed per variant: seconds for the
fits, for the re-extraction and in all, and each total's ratio to per-fold; then the mean test-fold
loss after the last epoch (the SVM protocol is not run).

    .venv/bin/python bench/adapt_folds.py --embeddings runs/demo/store/embeddings/events --epochs 2

The embeddings folder is what `weaksound embed` writes (the demo's is ``<out>/store/embeddings/events``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from data_prep.manifest import read_manifest  # noqa: E402
from runtime.ray_cluster import ensure_ray  # noqa: E402
from transfer.adapt import AdaptConfig, adapted_features, fit_adapted, fit_adapted_folds, variant_spec  # noqa: E402
from transfer.experiments import Target  # noqa: E402


def run(target, shards, cfg, folds, out, *, per_fold: bool) -> dict:
    spec = variant_spec("I")
    train_ids = {k: [c for c, f in zip(target.clip_ids, target.folds.tolist()) if f != k] for k in folds}
    exports = {k: os.path.join(out, f"fold{k}") for k in folds}
    storage = tempfile.mkdtemp(prefix="bench-adapt-")
    t0 = time.perf_counter()
    extract = 0.0
    try:
        if per_fold:
            fits = []
            for k in folds:
                fit = fit_adapted(target.model_url, shards, train_ids[k], target.class_names, k, spec, cfg,
                                  storage_path=storage, run_name=f"bench-fold{k}", export_url=exports[k])
                t1 = time.perf_counter()
                adapted_features(fit, shards, target.clip_ids, cfg)
                extract += time.perf_counter() - t1
                fits.append(fit)
        else:
            fits = fit_adapted_folds(target.model_url, shards, train_ids, target.class_names, spec, cfg,
                                     storage_path=storage, run_name="bench-all", export_urls=exports)
            t1 = time.perf_counter()
            adapted_features(fits, shards, target.clip_ids, cfg)
            extract = time.perf_counter() - t1
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    total = time.perf_counter() - t0
    return {"total": total, "extract": extract, "fits": total - extract,
            "loss": sum(f.meta["history"][-1]["loss"] for f in fits) / len(fits)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", required=True, help="embeddings of a single-label task with folds")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per fold (default: %(default)s)")
    p.add_argument("--batch-clips", type=int, default=16, help="clips per step, all workers (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DDP workers of the last variant (default: %(default)s)")
    p.add_argument("--folds", default="", help="test folds, e.g. 1,2 (default: every fold)")
    args = p.parse_args()
    target = Target.load("events", args.embeddings)
    shards = read_manifest(target.data_url).shard_refs(target.emb.index.get("split", "all"))
    folds = [int(f) for f in args.folds.split(",") if f] or target.fold_ids
    ensure_ray(log_to_driver=False)  # the workers' epoch lines stay in Ray's logs
    base = AdaptConfig(epochs=args.epochs, batch_clips=args.batch_clips, workers=1)
    variants = [("per-fold, 1 worker", base, True), ("one-run, 1 worker", base, False),
                (f"one-run, {args.workers} workers", replace(base, workers=args.workers,
                                                             batch_clips=max(1, args.batch_clips // args.workers)),
                 False)]
    out = tempfile.mkdtemp(prefix="bench-adapt-out-")
    rows = []
    try:
        for name, cfg, per_fold in variants:
            rows.append((name, run(target, shards, cfg, folds, os.path.join(out, str(len(rows))), per_fold=per_fold)))
            print(f"{name}: {rows[-1][1]}", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ref = rows[0][1]["total"]
    print(f"\nN_T^I, test folds {folds}, {args.epochs} epochs, {len(target.clip_ids)} clips, "
          f"{args.batch_clips} clips per step")
    print(f"{'variant':<24} {'fits s':>8} {'extract s':>10} {'total s':>8} {'vs per-fold':>12} {'mean loss':>10}")
    for name, r in rows:
        print(f"{name:<24} {r['fits']:8.1f} {r['extract']:10.1f} {r['total']:8.1f} {ref / r['total']:11.2f}x "
              f"{r['loss']:10.4f}")


if __name__ == "__main__":
    main()
