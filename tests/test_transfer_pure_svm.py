"""Specification of the linear-SVM transfer protocol (transfer/svm.py).

Invariants:
- C is chosen from inner cross-validation on the training folds only; the test fold's
  features and labels never influence the choice.
- Inner splits are whole training folds, so source recordings never straddle them.
- A source recording in two folds is an error.
- Running the (feature set, test fold, C) units separately, in any order, in other processes,
  gives exactly the sequential result.
"""
from __future__ import annotations

import json
import pickle
import random
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from transfer.svm import (
    FoldResults,
    TransferData,
    check_fold_isolation,
    combine_units,
    evaluate_feature_sets,
    evaluate_folds,
    plan_units,
    run_unit,
)

SMALL_GRID = (1e-4, 1e-2, 1.0, 100.0)


def make_blobs(n_per_class: int = 40, n_classes: int = 4, dim: int = 12, n_folds: int = 5,
               separation: float = 3.0, seed: int = 0):
    """Gaussian blobs; class c is shifted by ``separation`` along axis c. Folds interleave."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = rng.normal(size=(y.size, dim))
    x[np.arange(y.size), y] += separation
    folds = np.tile(np.arange(1, n_folds + 1), y.size // n_folds + 1)[: y.size]
    return x, y, folds


def test_separable_blobs_score_far_above_chance():
    x, y, folds = make_blobs(separation=4.0)
    r = evaluate_folds(x, y, folds, c_grid=SMALL_GRID)
    assert r.folds == (1, 2, 3, 4, 5)
    assert r.mean > 0.9  # chance is 0.25
    assert all(c in SMALL_GRID for c in r.chosen_C)


def test_random_labels_score_near_chance():
    x, _, folds = make_blobs(n_per_class=50, separation=0.0)
    y = np.random.default_rng(1).integers(0, 4, size=x.shape[0])
    r = evaluate_folds(x, y, folds, c_grid=SMALL_GRID)
    assert 0.1 < r.mean < 0.4  # chance is 0.25


def test_mean_and_std_are_over_per_fold_accuracies():
    x, y, folds = make_blobs(separation=1.5)
    r = evaluate_folds(x, y, folds, c_grid=SMALL_GRID)
    assert r.mean == pytest.approx(np.mean(r.accuracies))
    assert r.std == pytest.approx(np.std(r.accuracies))


def test_out_of_fold_predictions_reproduce_each_fold_accuracy():
    x, y, folds = make_blobs(separation=1.5)
    r = evaluate_folds(x, y, folds, c_grid=SMALL_GRID)
    assert r.predictions.shape == y.shape
    for fold, acc in zip(r.folds, r.accuracies):
        sel = folds == fold
        assert np.mean(r.predictions[sel] == y[sel]) == pytest.approx(acc)


def test_choice_of_C_ignores_test_fold_even_when_test_fold_would_prefer_another_C():
    """Adversarial construction: relabel the test fold with the predictions of a C that inner
    CV did *not* choose. Tuning on the test fold would now pick that C and score 100%; the
    nested protocol must keep its inner choice and report the honest, lower accuracy."""
    x, y, folds = make_blobs(separation=1.0, dim=10, n_classes=3)
    data = TransferData({"x": x}, y, folds)
    test_fold = 1
    scores = [run_unit(u, data) for u in plan_units(data, SMALL_GRID) if u.test_fold == test_fold]
    best_inner = max(s.inner_mean for s in scores)
    inner_choice = next(s for s in sorted(scores, key=lambda s: s.unit.C)
                        if s.inner_mean >= best_inner - 1e-12)
    # The C whose test predictions disagree most with the inner choice.
    rival = max(scores, key=lambda s: np.sum(s.test_predictions != inner_choice.test_predictions))
    assert np.any(rival.test_predictions != inner_choice.test_predictions), "construction failed"

    y_adv = y.copy()
    y_adv[folds == test_fold] = rival.test_predictions  # the rival is now perfect on the test fold
    r = evaluate_folds(x, y_adv, folds, c_grid=SMALL_GRID)

    assert r.chosen_C[0] == inner_choice.unit.C != rival.unit.C
    assert r.accuracies[0] < 1.0
    assert r.accuracies[0] == pytest.approx(
        np.mean(inner_choice.test_predictions == rival.test_predictions))


def test_inner_scores_and_chosen_C_do_not_depend_on_test_fold_contents():
    """Replacing the test fold's features and labels with garbage leaves that fold's inner
    scores and chosen C unchanged: neither model selection nor standardisation reads it."""
    x, y, folds = make_blobs(separation=1.0)
    clean = evaluate_folds(x, y, folds, c_grid=SMALL_GRID)

    rng = np.random.default_rng(7)
    x_bad, y_bad = x.copy(), y.copy()
    sel = folds == 3
    x_bad[sel] = rng.normal(loc=50.0, scale=20.0, size=(sel.sum(), x.shape[1]))
    y_bad[sel] = rng.permutation(y_bad[sel])
    poisoned = evaluate_folds(x_bad, y_bad, folds, c_grid=SMALL_GRID)

    k = clean.folds.index(3)
    assert poisoned.inner_scores[k] == clean.inner_scores[k]
    assert poisoned.chosen_C[k] == clean.chosen_C[k]


def test_inner_validation_holds_out_each_training_fold_once_and_never_the_test_fold():
    x, y, folds = make_blobs()
    r = evaluate_folds(x, y, folds, c_grid=SMALL_GRID)
    for test_fold, held_out in zip(r.folds, r.inner_validation_folds):
        assert held_out == tuple((f,) for f in r.folds if f != test_fold)


def test_grouped_inner_folds_partition_training_folds_without_splitting_any():
    x, y, folds = make_blobs()
    r = evaluate_folds(x, y, folds, c_grid=SMALL_GRID, inner_folds=2)
    for test_fold, held_out in zip(r.folds, r.inner_validation_folds):
        assert len(held_out) == 2
        flat = [f for group in held_out for f in group]
        assert sorted(flat) == [f for f in r.folds if f != test_fold]  # each exactly once


def test_ties_in_inner_score_go_to_the_smallest_C():
    x, y, folds = make_blobs(separation=30.0)  # every C is perfect on every inner split
    r = evaluate_folds(x, y, folds, c_grid=(10.0, 0.1, 1.0))
    assert all(s == (1.0, 1.0, 1.0) for s in r.inner_scores)
    assert r.chosen_C == (0.1,) * 5
    assert r.c_grid == (0.1, 1.0, 10.0)


def test_parallel_units_in_any_order_in_other_processes_equal_sequential():
    x, y, folds = make_blobs(separation=1.5)
    features = {"F1 max": x, "F1 avg": x[:, ::-1] * 0.5 + 1.0}
    sequential = evaluate_feature_sets(features, y, folds, c_grid=SMALL_GRID)

    data = TransferData(features, y, folds)
    units = plan_units(data, SMALL_GRID)
    assert len(units) == 2 * 5 * len(SMALL_GRID)  # feature sets x folds x C
    shuffled = units[:]
    random.Random(0).shuffle(shuffled)
    # Like Ray tasks: units and data are pickled to worker processes, results come back pickled.
    with ProcessPoolExecutor(max_workers=2) as pool:
        scores = list(pool.map(run_unit, shuffled, [data] * len(shuffled)))
    parallel = combine_units(units, scores[::-1], data)

    assert list(parallel) == list(sequential)
    for name in sequential:
        assert parallel[name].to_dict() == sequential[name].to_dict()


def test_combine_units_rejects_missing_duplicate_and_unplanned_scores():
    x, y, folds = make_blobs(n_per_class=10)
    data = TransferData({"x": x}, y, folds)
    units = plan_units(data, (0.1, 1.0))
    scores = [run_unit(u, data) for u in units]
    with pytest.raises(ValueError, match="have no score"):
        combine_units(units, scores[:-1], data)
    with pytest.raises(ValueError, match="two scores for one unit"):
        combine_units(units, scores + scores[:1], data)
    with pytest.raises(ValueError, match="unplanned unit"):
        combine_units(units[1:], scores, data)


def test_fold_isolation_raises_on_a_source_recording_in_two_folds():
    folds = np.array([1, 1, 2, 2, 3])
    check_fold_isolation(folds, ["a", "a", "b", "b", "c"])  # isolated: no error
    check_fold_isolation(folds, ["a", None, None, "", "c"])  # unknown ids are not checked
    with pytest.raises(ValueError, match=r"'b' in folds \[2, 3\]"):
        check_fold_isolation(folds, ["a", "a", "b", "b", "b"])


def test_evaluate_refuses_data_whose_folds_leak_a_source_recording():
    x, y, folds = make_blobs(n_per_class=10)
    sources = [f"rec{i // 2}" for i in range(len(y))]  # pairs of consecutive clips: folds differ
    with pytest.raises(ValueError, match="more than one fold"):
        evaluate_folds(x, y, folds, c_grid=(1.0,), source_ids=sources)


def test_invalid_inputs_fail_with_a_clear_message():
    x, y, folds = make_blobs(n_per_class=10)
    with pytest.raises(ValueError, match="at least 3 folds"):
        evaluate_folds(x, y, np.where(folds > 2, 2, 1), c_grid=(1.0,))
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate_folds(np.where(x > 2, np.nan, x), y, folds, c_grid=(1.0,))
    with pytest.raises(ValueError, match="expected"):
        evaluate_folds(x[:-1], y, folds, c_grid=(1.0,))
    with pytest.raises(ValueError, match="> 0"):
        evaluate_folds(x, y, folds, c_grid=(0.0, 1.0))
    with pytest.raises(ValueError, match="single class"):
        evaluate_folds(x, np.where(folds == 1, 1, 0), folds, c_grid=(1.0,))


def test_fold_results_round_trip_through_json():
    x, y, folds = make_blobs(n_per_class=10)
    r = evaluate_folds(x, y, folds, c_grid=(0.1, 1.0), name="F2 avg")
    back = FoldResults.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.to_dict() == r.to_dict()
    assert pickle.loads(pickle.dumps(r)).to_dict() == r.to_dict()
