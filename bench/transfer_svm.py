"""The SVM transfer protocol, old solver against new, on the same embeddings in one run.

  old   the protocol as it was: one ``LinearSVC`` (liblinear, dual="auto", max_iter 5000) per
        (feature set, test fold, C, split), features standardised for every fit (frozen copy below)
  new   ``transfer.svm.run_units``: the same units, the same standardisation on the training
        folds, the same C grid and inner validation, solved by ``transfer.svm_solver`` (exact
        finite Newton, warm-started along the C grid; liblinear when dimensions >= clips)

Both run in this process, one unit after another, with one BLAS thread, on identical inputs; the
MFCC baseline features are computed once beforehand (not timed). Printed per feature set: wall-clock
seconds old / new and their ratio, the ratio of CPU seconds (steadier on a shared machine), mean test
accuracy old / new (percent) and the chosen C values.

    .venv/bin/python bench/transfer_svm.py --embeddings runs/demo/store/embeddings/events \\
        runs/demo/store/embeddings/scenes

The embeddings folders are what `weaksound embed` writes (the demo's are under
``<out>/store/embeddings/``); the task is inferred from the dataset name as `weaksound transfer all` does.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from transfer.experiments import BASELINE_NAME, Target, infer_task  # noqa: E402
from transfer.parallel import mfcc_features  # noqa: E402
from transfer.svm import (DEFAULT_C_GRID, SVMUnit, TransferData, UnitScore, combine_units,  # noqa: E402
                          inner_splits, plan_units, run_units)
from inference.embed import load_embeddings  # noqa: E402


# ------------------------------------------------------------------ the old solver, frozen

def _old_fit_predict(x_train, y_train, x_eval, *, C, seed, max_iter):
    scaler = StandardScaler().fit(x_train)
    svm = LinearSVC(C=C, dual="auto", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(scaler.transform(x_train), y_train)
    n_warn = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return svm.predict(scaler.transform(x_eval)), n_warn


def old_run_unit(unit: SVMUnit, data: TransferData) -> UnitScore:
    x = data.features[unit.feature_set]
    y, folds = data.labels, data.folds
    test_mask = folds == unit.test_fold
    train_idx, test_idx = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    x_tr, y_tr = x[train_idx], y[train_idx]
    kw = dict(C=unit.C, seed=unit.seed, max_iter=unit.max_iter)
    inner_acc, held_out, n_warn = [], [], 0
    for tr, val, held in inner_splits(folds[train_idx], unit.inner_folds):
        pred, w = _old_fit_predict(x_tr[tr], y_tr[tr], x_tr[val], **kw)
        inner_acc.append(float(np.mean(pred == y_tr[val])))
        held_out.append(held)
        n_warn += w
    pred, w = _old_fit_predict(x_tr, y_tr, x[test_idx], **kw)
    return UnitScore(unit=unit, inner_accuracies=tuple(inner_acc), inner_validation_folds=tuple(held_out),
                     test_accuracy=float(np.mean(pred == y[test_idx])), test_predictions=pred,
                     n_convergence_warnings=n_warn + w)


# ------------------------------------------------------------------ the comparison

def compare(data: TransferData, name: str, c_grid, test_folds) -> tuple[dict, tuple, tuple]:
    """({"old", "new"} FoldResults, old (wall, CPU) seconds, new (wall, CPU) seconds) for one feature set."""
    units = [u for u in plan_units(data, c_grid, feature_sets=[name])
             if test_folds is None or u.test_fold in test_folds]
    with threadpool_limits(limits=1, user_api="blas"):
        t0, c0 = time.perf_counter(), time.process_time()
        old_scores = [old_run_unit(u, data) for u in units]
        t_old, c_old = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    new_scores = run_units(units, data)
    t_new, c_new = time.perf_counter() - t0, time.process_time() - c0
    old = combine_units(units, old_scores, data)[name]
    new = combine_units(units, new_scores, data)[name]
    return {"old": old, "new": new}, (t_old, c_old), (t_new, c_new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", nargs="+", required=True, help="embeddings folders (required)")
    p.add_argument("--feature-sets", default=None,
                   help="comma-separated feature sets, e.g. 'F1 max,F1 avg' (default: every set)")
    p.add_argument("--no-baseline", action="store_true", help="skip the MFCC baseline (default: include it)")
    p.add_argument("--test-folds", default=None,
                   help="comma-separated test folds to run, both solvers alike (default: every fold)")
    args = p.parse_args()
    names = None if args.feature_sets is None else [n.strip() for n in args.feature_sets.split(",")]
    test_folds = None if args.test_folds is None else {int(f) for f in args.test_folds.split(",")}

    print(f"{'task':<8} {'feature set':<16} {'old s':>8} {'new s':>7} {'ratio':>6} {'CPU ratio':>9} "
          f"{'old %':>6} {'new %':>6} {'diff':>6}  chosen C old | new")
    total_old = total_new = cpu_old = cpu_new = 0.0
    worst = 0.0
    for url in args.embeddings:
        emb = load_embeddings(url)
        target = Target.from_embeddings(infer_task(emb.index), url, emb)
        features = target.network_features(names)
        if not args.no_baseline:
            features[BASELINE_NAME] = mfcc_features(target.data_url, target.clip_ids, executor="local")
        data = TransferData(features, target.labels, target.folds, target.source_ids)
        for name in features:
            r, (t_old, c_old), (t_new, c_new) = compare(data, name, DEFAULT_C_GRID, test_folds)
            total_old += t_old
            total_new += t_new
            cpu_old += c_old
            cpu_new += c_new
            diff = 100 * (r["new"].mean - r["old"].mean)
            worst = max(worst, abs(diff))
            chosen = lambda fr: ",".join(f"{c:g}" for c in fr.chosen_C)  # noqa: E731
            print(f"{target.task:<8} {name:<16} {t_old:8.2f} {t_new:7.2f} {t_old / t_new:6.1f} {c_old / c_new:9.1f} "
                  f"{100 * r['old'].mean:6.1f} {100 * r['new'].mean:6.1f} {diff:+6.1f}  "
                  f"{chosen(r['old'])} | {chosen(r['new'])}  "
                  f"(unconverged fits old {r['old'].n_convergence_warnings}, new {r['new'].n_convergence_warnings})",
                  flush=True)
    print(f"\ntotal: old {total_old:.1f} s, new {total_new:.1f} s wall clock: {total_old / total_new:.1f}x faster "
          f"({cpu_old / cpu_new:.1f}x in CPU seconds: old {cpu_old:.1f}, new {cpu_new:.1f}); "
          f"largest |accuracy difference| {worst:.2f} points")


if __name__ == "__main__":
    main()
