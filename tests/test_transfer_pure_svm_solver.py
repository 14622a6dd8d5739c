"""Specification of the exact linear-SVM solver (transfer/svm_solver.py).

Invariants:
- it minimises LinearSVC's objective (one-vs-rest squared hinge, L2, regularised intercept),
  to optimality (zero gradient), with more clips than dimensions and with fewer;
- the answer for a C does not depend on the other C values of the path (warm starts only save
  steps), bit for bit, so units run alone or together give identical scores;
- predictions follow LinearSVC's rules (sign for two classes, argmax otherwise).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from transfer.svm import TransferData, plan_units, run_unit, run_units
from transfer.svm_solver import fit_path

GRID = (1e-3, 1e-1, 10.0, 100.0)


def blobs(n: int, dim: int, n_classes: int, seed: int = 0, separation: float = 1.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, dim))
    x[np.arange(n), y % dim] += separation
    return x, y


def objective(w: np.ndarray, x: np.ndarray, target: np.ndarray, C: float) -> float:
    xa = np.hstack([x, np.ones((len(x), 1))])
    return 0.5 * w @ w + C * np.sum(np.maximum(0.0, 1.0 - target * (xa @ w)) ** 2)


def gradient(w: np.ndarray, x: np.ndarray, target: np.ndarray, C: float) -> np.ndarray:
    xa = np.hstack([x, np.ones((len(x), 1))])
    gap = np.maximum(0.0, 1.0 - target * (xa @ w))
    return w - 2.0 * C * xa.T @ (target * gap)


def targets(y: np.ndarray, classes: np.ndarray) -> list[np.ndarray]:
    if len(classes) == 2:
        return [np.where(y == classes[1], 1.0, -1.0)]
    return [np.where(y == c, 1.0, -1.0) for c in classes]


@pytest.mark.parametrize("n, dim, n_classes", [(120, 8, 3), (40, 60, 4), (80, 10, 2), (30, 50, 2)])
def test_the_solution_has_zero_gradient_for_every_class_and_C(n, dim, n_classes):
    x, y = blobs(n, dim, n_classes)
    path = fit_path(x, y, GRID)
    assert path.unconverged == (0,) * len(GRID)
    for k, C in enumerate(GRID):
        for j, t in enumerate(targets(y, path.classes)):
            w = path.weights[k][:, j]
            scale = 1.0 + np.abs(w).max() + C * n
            assert np.abs(gradient(w, x, t, C)).max() < 1e-8 * scale


@pytest.mark.parametrize("n, dim, n_classes", [(120, 8, 3), (40, 60, 4), (80, 10, 2)])
def test_it_minimises_the_objective_liblinear_approaches_and_predicts_alike(n, dim, n_classes):
    x, y = blobs(n, dim, n_classes, seed=1)
    x_new, _ = blobs(50, dim, n_classes, seed=2)
    path = fit_path(x, y, GRID)
    for k, C in enumerate(GRID[:3]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = LinearSVC(C=C, tol=1e-10, max_iter=200_000).fit(x, y)
        w_ref = np.vstack([ref.coef_.T, ref.intercept_[None]])
        for j, t in enumerate(targets(y, path.classes)):
            ours, theirs = objective(path.weights[k][:, j], x, t, C), objective(w_ref[:, j], x, t, C)
            assert ours <= theirs + 1e-9 * max(1.0, theirs)
            assert ours == pytest.approx(theirs, rel=1e-5)
        np.testing.assert_array_equal(path.predict(k, x_new), ref.predict(x_new))


@pytest.mark.parametrize("n, dim", [(90, 6), (30, 45)])
def test_each_C_gives_the_same_weights_alone_as_on_the_path(n, dim):
    x, y = blobs(n, dim, 3, seed=3)
    path = fit_path(x, y, (10.0, 1e-3, 0.1))   # any order
    for k, C in enumerate((10.0, 1e-3, 0.1)):
        alone = fit_path(x, y, (C,))
        np.testing.assert_array_equal(alone.weights[0], path.weights[k])


def test_run_units_scores_equal_each_unit_run_alone_in_the_order_given():
    x, y = blobs(90, 6, 3, seed=4)
    folds = np.arange(90) // 3 % 3 + 1
    data = TransferData({"a": x, "b": np.hstack([x, x ** 2])}, y, folds)
    units = plan_units(data, (1e-3, 10.0))[::-1]
    together = run_units(units, data)
    assert [s.unit for s in together] == units
    for s in together:
        alone = run_unit(s.unit, data)
        assert s.inner_accuracies == alone.inner_accuracies
        np.testing.assert_array_equal(s.test_predictions, alone.test_predictions)


def test_predictions_use_the_labels_seen_in_training():
    x, y = blobs(60, 4, 2, seed=5)
    labels = np.where(y == 0, 7, 3)
    path = fit_path(x, labels, (1.0,))
    assert set(path.predict(0, x).tolist()) <= {3, 7}
    assert path.classes.tolist() == [3, 7]


def test_a_single_class_is_refused():
    x, _ = blobs(20, 3, 2)
    with pytest.raises(ValueError, match="single class"):
        fit_path(x, np.zeros(20, dtype=int), (1.0,))
