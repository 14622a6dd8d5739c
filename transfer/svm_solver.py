"""Exact linear SVM (squared hinge, L2, one-vs-rest) by finite Newton steps along a C path.

The objective is the one ``sklearn.svm.LinearSVC`` (liblinear) minimises with its defaults
(``loss="squared_hinge"``, ``penalty="l2"``, ``fit_intercept=True``, ``intercept_scaling=1``):
for every class c, with ``x~ = [x, 1]`` (the intercept is a regularised constant feature)::

    min_w  0.5 * |w|^2 + C * sum_i max(0, 1 - y_i * w . x~_i)^2,   y_i = +1 for class c, else -1

Why not liblinear itself: its coordinate-descent and trust-region solvers need thousands of
iterations near the hard-margin end of the C grid (C = 10 on standardised embeddings of a few
hundred clips) and stop at ``max_iter`` without converging. The squared hinge is piecewise
quadratic, so Newton's method with an exact line search reaches the exact minimiser in a
handful of steps (Keerthi & DeCoste, "A modified finite Newton method for fast solution of
large scale linear SVMs", JMLR 2005): at the current w, the clips with margin < 1 ("active")
define a regularised least-squares problem; its solution is the optimum as soon as it keeps the
same active set. The result depends only on that final active set, so it does not depend on the
starting point: warm starts along an ascending C path only save steps.

Each Newton step solves one positive-definite system, over the D + 1 weights or over the active
clips (the same problem in kernel form), whichever is cheaper for the current number of active
clips; so both N > D and N < D are fast.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dposv

__all__ = ["LinearPath", "fit_path"]

MAX_NEWTON_STEPS = 100


@dataclass(frozen=True, eq=False)
class LinearPath:
    """One fitted model per C: ``weights[k]`` is (D + 1, n_problems), last row the intercept."""

    classes: np.ndarray              # sorted class labels seen in training
    c_grid: tuple[float, ...]
    weights: tuple[np.ndarray, ...]
    unconverged: tuple[int, ...]     # per C, problems that hit max_steps

    def decision(self, k: int, x: np.ndarray) -> np.ndarray:
        """(M, n_problems) decision values of the model for ``c_grid[k]``."""
        w = self.weights[k]
        return x @ w[:-1] + w[-1]

    def predict(self, k: int, x: np.ndarray) -> np.ndarray:
        """Class labels as ``LinearSVC.predict``: sign for two classes, else argmax (first wins ties)."""
        scores = self.decision(k, x)
        if len(self.classes) == 2:
            return self.classes[(scores[:, 0] > 0).astype(np.int64)]
        return self.classes[np.argmax(scores, axis=1)]


def _line_search(wd: float, dd: float, a: np.ndarray, b: np.ndarray, C: float) -> float:
    """argmin over t > 0 of 0.5 |w + t d|^2 + C sum_i max(0, a_i - t b_i)^2, given wd = w.d, dd = d.d.

    ``a`` = 1 - y * output (margin gaps), ``b`` = y * (change of output along d). The derivative
    is piecewise linear and increasing in t; walk its breakpoints in order.
    """
    active = (a > 0) | ((a == 0) & (b < 0))
    ab, bb = a * b, b * b
    slope0 = wd - 2.0 * C * float(ab[active].sum())
    curve0 = dd + 2.0 * C * float(bb[active].sum())
    # A term changes state where a_i = t b_i, t > 0: active ones with b > 0 leave, inactive ones
    # with b < 0 join.
    flips = np.flatnonzero(np.where(active, (b > 0) & (a > 0), (b < 0) & (a < 0)))
    if flips.size == 0:
        return -slope0 / curve0
    t_break = a[flips] / b[flips]
    order = np.argsort(t_break, kind="stable")
    flips, t_break = flips[order], t_break[order]
    sign = np.where(active[flips], 2.0 * C, -2.0 * C)  # leaving: +, joining: -
    slopes = slope0 + np.concatenate([[0.0], np.cumsum(sign * ab[flips])])
    curves = curve0 - np.concatenate([[0.0], np.cumsum(sign * bb[flips])])
    # The first interval whose right end has a non-negative derivative holds the root.
    at_end = slopes[:-1] + curves[:-1] * t_break
    k = int(np.argmax(at_end >= 0)) if np.any(at_end >= 0) else flips.size
    return -slopes[k] / curves[k] if curves[k] > 0 else float(t_break[k - 1]) if k else 0.0


def _solve_pd(h: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    _, x, info = dposv(h, rhs)
    if info != 0:
        raise np.linalg.LinAlgError(f"Newton system not positive definite (LAPACK dposv info {info})")
    return x


class _Steps:
    """Newton steps of one training set, shared by every class and C.

    The step minimises the quadratic that the active clips s (margin < 1) define; it is
    computed in whichever form is cheaper for the current |s|, both giving the same w:
    primal, (I + 2C Xs'Xs) w = 2C Xs'ys over the D + 1 weights (Xs'Xs from the full Gram
    matrix minus the inactive rows when those are fewer), or kernel, (K_ss + I / 2C) b = y_s
    and w = Xs' b over the |s| active clips. The choice depends only on |s|, so the result
    still depends only on the final active set.
    """

    def __init__(self, xa: np.ndarray):
        n, p = xa.shape
        self.xa, self.n, self.p = xa, n, p
        self.gram = xa.T @ xa
        self.kernel = xa @ xa.T if n <= 4 * p else None  # K_ss costs n^2 p once; pays off when |s| < p
        self.eye = np.eye(p)

    def step(self, active: np.ndarray, y: np.ndarray, C: float) -> np.ndarray:
        xa, p = self.xa, self.p
        idx = np.flatnonzero(active)
        m = idx.size
        if m == 0:
            return np.zeros(p)
        primal_cost = min(m, self.n - m) * p * p + p ** 3 / 3
        if self.kernel is not None and m ** 3 / 3 + m * m < primal_cost:
            h = self.kernel[np.ix_(idx, idx)]
            h[np.diag_indices_from(h)] += 0.5 / C
            return xa[idx].T @ _solve_pd(h, y[idx])
        if 2 * m <= self.n:
            h = xa[idx].T @ xa[idx]
        else:
            rest = np.flatnonzero(~active)
            h = self.gram - xa[rest].T @ xa[rest]
        h *= 2.0 * C
        h += self.eye
        return _solve_pd(h, 2.0 * C * (xa[idx].T @ y[idx]))


def _newton(steps: _Steps, y: np.ndarray, C: float, w: np.ndarray, max_steps: int) -> tuple[np.ndarray, bool]:
    """Minimise one binary problem from ``w``; returns (w, converged).

    The answer is the step on the final active set, whatever the start.
    """
    out = steps.xa @ w
    active = y * out < 1
    for _ in range(max_steps):
        w_new = steps.step(active, y, C)
        out_new = steps.xa @ w_new
        active_new = y * out_new < 1
        if np.array_equal(active_new, active):
            return w_new, True
        d, dout = w_new - w, out_new - out
        t = _line_search(float(w @ d), float(d @ d), 1.0 - y * out, y * dout, C)
        if not t > 0:  # no descent left (rounding at the margin): w is optimal to precision
            return w, True
        w = w + t * d
        out = out + t * dout
        active = y * out < 1
    return w, False


def fit_path(x: np.ndarray, y: np.ndarray, c_grid: Sequence[float], *,
             max_steps: int = MAX_NEWTON_STEPS) -> LinearPath:
    """Fit the exact one-vs-rest squared-hinge SVM for every C of ``c_grid`` (any order).

    Args:
        x: (N, D) training features (standardise them first).
        y: (N,) labels, at least two distinct values.
        c_grid: C values; solved in ascending order, each warm-started from the previous one.
        max_steps: Newton steps per binary problem at most (they typically take a handful).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    n, dim = x.shape
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"training labels have a single class {classes.tolist()}")
    targets = ([np.where(y == classes[1], 1.0, -1.0)] if len(classes) == 2
               else [np.where(y == c, 1.0, -1.0) for c in classes])
    steps = _Steps(np.hstack([x, np.ones((n, 1))]))
    order = np.argsort(c_grid, kind="stable")
    weights: list[np.ndarray | None] = [None] * len(c_grid)
    unconverged = [0] * len(c_grid)
    current = np.zeros((dim + 1, len(targets)))
    for k in order:
        C = float(c_grid[k])
        for j, target in enumerate(targets):
            current[:, j], ok = _newton(steps, target, C, current[:, j], max_steps)
            unconverged[k] += not ok
        weights[k] = current.copy()
    return LinearPath(classes=classes, c_grid=tuple(float(c) for c in c_grid), weights=tuple(weights),
                      unconverged=tuple(unconverged))
