"""Linear-SVM transfer protocol over clip vectors: nested validation, one result per test fold.

The paper (section 3.3, note 9 of the summary) trains linear SVMs on recording-level vectors of
the target training folds and reports accuracy on the held-out fold, rotating over the official
folds. What it does not state, and what we fix here:

- features are standardised with statistics of the training folds only;
- the SVM is the linear one-vs-rest squared-hinge L2 SVM of scikit-learn's ``LinearSVC`` (same
  objective, intercept regularised as liblinear does), solved exactly by ``transfer.svm_solver``
  (finite Newton, warm-started along the C grid), because liblinear stops at ``max_iter``
  unconverged near the hard-margin end of the grid;
- C is chosen by an inner cross-validation on the training folds only. The inner splits are the
  training folds themselves (leave-one-training-fold-out), so a source recording, which never
  straddles official folds, never straddles inner splits either. The test fold is never seen
  while choosing C;
- ties between C values go to the smallest C (the most regularised model).

Parallel form. The work splits into independent units, one per (feature set, test fold, C).
A unit runs the inner cross-validation for its C and also fits on all training folds and
predicts the test fold; ``combine_units`` then picks, per (feature set, test fold), the C with
the best *inner* score and keeps that unit's test predictions. Test predictions of the other
C values are computed but never compared, so computing them in the same task does not leak.
``run_units`` runs the units of one (feature set, test fold) together, sharing each split's
standardisation and one warm-started C path; every score equals ``run_unit`` of its unit alone::

    units = plan_units(data, c_grid=DEFAULT_C_GRID)
    scores = run_units(units, data)                       # or: one Ray task per (set, fold)
    results = combine_units(units, scores, data)          # dict: feature set -> FoldResults

``evaluate_folds`` / ``evaluate_feature_sets`` run exactly this sequence in-process, so the
sequential and the parallel path give identical numbers.

Nothing in this module imports Ray or torch.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from transfer.svm_solver import fit_path

__all__ = [
    "DEFAULT_C_GRID",
    "FoldResults",
    "SVMUnit",
    "TransferData",
    "UnitScore",
    "check_fold_isolation",
    "combine_units",
    "evaluate_feature_sets",
    "evaluate_folds",
    "inner_splits",
    "plan_units",
    "run_unit",
    "run_units",
]

# Standardised features: C spans "almost constant model" to "nearly hard margin".
DEFAULT_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
# Cap on Newton steps per binary problem; they take a handful (liblinear needed 5000 iterations).
DEFAULT_MAX_ITER = 5000
# Inner scores closer than this count as a tie (then the smallest C wins).
_TIE_TOLERANCE = 1e-12


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def check_fold_isolation(folds: np.ndarray, source_ids: Sequence[str | None]) -> None:
    """Raise ``ValueError`` if one source recording has clips in two or more folds.

    Args:
        folds: (N,) int fold id per clip.
        source_ids: (N,) source-recording id per clip (ESC-50 ``src_file``, DCASE location);
            ``None`` or ``""`` means unknown and is not checked.

    Example:
        >>> check_fold_isolation(np.array([1, 1, 2]), ["a", "a", "b"])  # fine
        >>> check_fold_isolation(np.array([1, 2]), ["a", "a"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: 1 source recording(s) appear in more than one fold: 'a' in folds [1, 2]...
    """
    folds = np.asarray(folds)
    if len(source_ids) != len(folds):
        raise ValueError(f"source_ids has {len(source_ids)} entries but folds has {len(folds)}")
    seen: dict[str, set[int]] = {}
    for sid, fold in zip(source_ids, folds.tolist()):
        if sid is None or sid == "":
            continue
        seen.setdefault(str(sid), set()).add(int(fold))
    leaked = {sid: sorted(fs) for sid, fs in seen.items() if len(fs) > 1}
    if leaked:
        shown = "; ".join(f"{sid!r} in folds {fs}" for sid, fs in sorted(leaked.items())[:5])
        more = f" (and {len(leaked) - 5} more)" if len(leaked) > 5 else ""
        raise ValueError(
            f"{len(leaked)} source recording(s) appear in more than one fold: {shown}{more}. "
            "Clips cut from one recording must share a fold, or test accuracy is inflated; "
            "use the dataset's official fold column.")


@dataclass(frozen=True, eq=False)
class TransferData:
    """Everything a unit needs: clip vectors per feature set, labels, folds. ``ray.put`` it once.

    Args:
        features: feature-set name -> (N, D_set) float array, rows aligned with ``labels``.
        labels: (N,) int class index per clip.
        folds: (N,) int official fold id per clip (ESC-50 1..5, DCASE 1..4).
        source_ids: optional (N,) source-recording ids; when given, fold isolation is checked.
    """

    features: Mapping[str, np.ndarray]
    labels: np.ndarray
    folds: np.ndarray
    source_ids: Sequence[str | None] | None = None

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        folds = np.asarray(self.folds)
        if labels.ndim != 1 or folds.shape != labels.shape:
            raise ValueError(f"labels {labels.shape} and folds {folds.shape} must both be (N,)")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        if not np.issubdtype(folds.dtype, np.integer):
            raise ValueError(f"folds must be integer fold ids, got dtype {folds.dtype}")
        if not self.features:
            raise ValueError("features is empty: pass at least one feature set")
        feats = {}
        for name, x in self.features.items():
            x = np.asarray(x)
            if x.ndim != 2 or x.shape[0] != labels.shape[0]:
                raise ValueError(f"feature set {name!r} has shape {x.shape}; "
                                 f"expected (N={labels.shape[0]}, D)")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"feature set {name!r} contains NaN or inf")
            feats[str(name)] = x
        if len(np.unique(folds)) < 3:
            raise ValueError(f"need at least 3 folds for nested validation, got "
                             f"{np.unique(folds).tolist()}")
        if self.source_ids is not None:
            check_fold_isolation(folds, self.source_ids)
        object.__setattr__(self, "features", feats)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "folds", folds)

    @property
    def fold_ids(self) -> tuple[int, ...]:
        return tuple(int(f) for f in np.unique(self.folds))


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SVMUnit:
    """One independent piece of work: inner CV of one C, plus its fit on the training folds."""

    feature_set: str
    test_fold: int
    C: float
    inner_folds: int | None = None  # None: one inner split per training fold
    seed: int = 0
    max_iter: int = DEFAULT_MAX_ITER


@dataclass(frozen=True, eq=False)
class UnitScore:
    """What a unit returns (small: no features, only test-fold predictions)."""

    unit: SVMUnit
    inner_accuracies: tuple[float, ...]          # one per inner split
    inner_validation_folds: tuple[tuple[int, ...], ...]  # fold ids held out in each inner split
    test_accuracy: float                          # used only after C is chosen by inner_mean
    test_predictions: np.ndarray                  # (n_test,), clips of the test fold in order
    n_convergence_warnings: int = 0

    @property
    def inner_mean(self) -> float:
        return float(np.mean(self.inner_accuracies))


def inner_splits(train_folds: np.ndarray, inner_folds: int | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray, tuple[int, ...]]]:
    """Inner CV splits of the training clips, grouped by their official fold id.

    Args:
        train_folds: (M,) fold id of each *training* clip (the test fold already removed).
        inner_folds: ``None`` for leave-one-training-fold-out; an int k merges the training
            folds into k groups (``GroupKFold``), for layouts with many folds.

    Returns:
        list of (inner-train positions, inner-validation positions, held-out fold ids),
        positions indexing ``train_folds``.
    """
    train_folds = np.asarray(train_folds)
    ids = np.unique(train_folds)
    if len(ids) < 2:
        raise ValueError(f"inner validation needs at least 2 training folds, got {ids.tolist()}")
    if inner_folds is None or inner_folds >= len(ids):
        splits = []
        for fold in ids:
            val = np.flatnonzero(train_folds == fold)
            tr = np.flatnonzero(train_folds != fold)
            splits.append((tr, val, (int(fold),)))
        return splits
    if inner_folds < 2:
        raise ValueError(f"inner_folds must be None or >= 2, got {inner_folds}")
    splits = []
    for tr, val in GroupKFold(n_splits=inner_folds).split(train_folds, groups=train_folds):
        held = tuple(int(f) for f in np.unique(train_folds[val]))
        splits.append((np.sort(tr), np.sort(val), held))
    splits.sort(key=lambda s: s[2])
    return splits


def _split_predictions(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray,
                       c_values: Sequence[float], *, max_iter: int
                       ) -> tuple[list[np.ndarray], list[int]]:
    """Standardise on x_train once, fit one linear SVM per C, predict x_eval with each.

    Returns (predictions per C, Newton solves that did not converge per C). The solver is the
    exact finite-Newton path of ``transfer.svm_solver``: one warm-started pass over the C values.
    """
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"training split has a single class ({np.unique(y_train).tolist()}); "
                         "a classifier cannot be fit. Check labels and folds.")
    scaler = StandardScaler().fit(x_train)
    path = fit_path(scaler.transform(x_train), y_train, c_values, max_steps=max_iter)
    z_eval = scaler.transform(x_eval)
    return [path.predict(k, z_eval) for k in range(len(c_values))], list(path.unconverged)


def plan_units(data: TransferData, c_grid: Sequence[float] = DEFAULT_C_GRID, *,
               inner_folds: int | None = None, seed: int = 0,
               max_iter: int = DEFAULT_MAX_ITER,
               feature_sets: Iterable[str] | None = None) -> list[SVMUnit]:
    """Every (feature set, test fold, C) unit, in a fixed order."""
    grid = _check_grid(c_grid)
    names = list(data.features) if feature_sets is None else list(feature_sets)
    unknown = [n for n in names if n not in data.features]
    if unknown:
        raise ValueError(f"unknown feature sets {unknown}; have {list(data.features)}")
    return [SVMUnit(feature_set=name, test_fold=fold, C=c, inner_folds=inner_folds, seed=seed,
                    max_iter=max_iter)
            for name in names for fold in data.fold_ids for c in grid]


def run_units(units: Sequence[SVMUnit], data: TransferData) -> list[UnitScore]:
    """``run_unit`` for several units at once, scores in the order of ``units``.

    Units that share feature set and test fold share each split's standardisation and one
    warm-started pass over their C values; every score equals ``run_unit`` of its unit alone.
    The test fold's features and labels are touched only by the final ``predict`` and accuracy;
    the inner CV indexes the training clips alone.
    """
    groups: dict[tuple, list[int]] = {}
    for i, u in enumerate(units):
        groups.setdefault((u.feature_set, u.test_fold, u.inner_folds, u.seed, u.max_iter), []).append(i)
    out: list[UnitScore | None] = [None] * len(units)
    # Small dense solves: BLAS threads only add overhead and fight the other tasks for cores.
    with threadpool_limits(limits=1, user_api="blas"):
        for (name, test_fold, inner_folds, seed, max_iter), members in groups.items():
            grid = [units[i].C for i in members]
            for i, score in zip(members, _run_group(data, name, test_fold, inner_folds, seed, max_iter, grid)):
                out[i] = dataclasses.replace(score, unit=units[i])
    return out


def _run_group(data: TransferData, name: str, test_fold: int, inner_folds: int | None, seed: int,
               max_iter: int, grid: Sequence[float]) -> list[UnitScore]:
    x = data.features[name]
    y, folds = data.labels, data.folds
    test_mask = folds == test_fold
    if not test_mask.any():
        raise ValueError(f"test fold {test_fold} has no clips; folds are {data.fold_ids}")
    train_idx = np.flatnonzero(~test_mask)
    test_idx = np.flatnonzero(test_mask)
    x_tr, y_tr = x[train_idx], y[train_idx]

    kw = dict(max_iter=max_iter)
    inner_acc = [[] for _ in grid]
    held_out, n_warn = [], [0] * len(grid)
    for tr, val, held in inner_splits(folds[train_idx], inner_folds):
        preds, warns = _split_predictions(x_tr[tr], y_tr[tr], x_tr[val], grid, **kw)
        for k, pred in enumerate(preds):
            inner_acc[k].append(float(np.mean(pred == y_tr[val])))
            n_warn[k] += warns[k]
        held_out.append(held)

    preds, warns = _split_predictions(x_tr, y_tr, x[test_idx], grid, **kw)
    return [UnitScore(unit=SVMUnit(name, test_fold, c, inner_folds, seed, max_iter),
                      inner_accuracies=tuple(inner_acc[k]), inner_validation_folds=tuple(held_out),
                      test_accuracy=float(np.mean(preds[k] == y[test_idx])), test_predictions=preds[k],
                      n_convergence_warnings=n_warn[k] + warns[k])
            for k, c in enumerate(grid)]


def run_unit(unit: SVMUnit, data: TransferData) -> UnitScore:
    """Inner CV of ``unit.C`` on the training folds, then fit on all of them and predict the test fold."""
    return run_units([unit], data)[0]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FoldResults:
    """Per-fold outcome of the nested protocol for one feature set.

    ``std`` is the population standard deviation over folds (numpy's default, ddof=0).
    ``predictions`` holds, for every clip, the prediction of the model whose test fold holds it
    (out-of-fold predictions, for confusion matrices).
    """

    feature_set: str
    folds: tuple[int, ...]                     # test folds, ascending
    accuracies: tuple[float, ...]              # test accuracy per fold
    chosen_C: tuple[float, ...]                # C chosen by inner CV per fold
    c_grid: tuple[float, ...]
    inner_scores: tuple[tuple[float, ...], ...]  # per fold, mean inner accuracy per C in c_grid
    inner_validation_folds: tuple[tuple[tuple[int, ...], ...], ...]  # per fold, per inner split
    labels: np.ndarray = field(repr=False)
    predictions: np.ndarray = field(repr=False)
    n_convergence_warnings: int = 0

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def to_dict(self) -> dict:
        """JSON-safe dict; ``from_dict`` inverts it."""
        return {
            "feature_set": self.feature_set,
            "folds": list(self.folds),
            "accuracies": list(self.accuracies),
            "mean": self.mean,
            "std": self.std,
            "chosen_C": list(self.chosen_C),
            "c_grid": list(self.c_grid),
            "inner_scores": [list(s) for s in self.inner_scores],
            "inner_validation_folds": [[list(h) for h in f] for f in self.inner_validation_folds],
            "labels": self.labels.tolist(),
            "predictions": self.predictions.tolist(),
            "n_convergence_warnings": self.n_convergence_warnings,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FoldResults:
        return cls(feature_set=d["feature_set"], folds=tuple(d["folds"]),
                   accuracies=tuple(d["accuracies"]), chosen_C=tuple(d["chosen_C"]),
                   c_grid=tuple(d["c_grid"]),
                   inner_scores=tuple(tuple(s) for s in d["inner_scores"]),
                   inner_validation_folds=tuple(tuple(tuple(h) for h in f)
                                                for f in d["inner_validation_folds"]),
                   labels=np.asarray(d["labels"], dtype=np.int64),
                   predictions=np.asarray(d["predictions"], dtype=np.int64),
                   n_convergence_warnings=int(d.get("n_convergence_warnings", 0)))


def _check_grid(c_grid: Sequence[float]) -> tuple[float, ...]:
    grid = tuple(sorted(float(c) for c in c_grid))
    if not grid:
        raise ValueError("c_grid is empty")
    if any(not (math.isfinite(c) and c > 0) for c in grid):
        raise ValueError(f"every C must be finite and > 0, got {list(c_grid)}")
    if len(set(grid)) != len(grid):
        raise ValueError(f"c_grid has duplicates: {list(c_grid)}")
    return grid


def combine_units(units: Sequence[SVMUnit], scores: Iterable[UnitScore], data: TransferData
                  ) -> dict[str, FoldResults]:
    """Pick C per (feature set, test fold) by inner score and assemble ``FoldResults``.

    ``scores`` may come back in any order (e.g. from ``ray.wait``); each planned unit must have
    exactly one score and no score may be unplanned. Selection reads ``inner_mean`` only; the
    chosen unit's ``test_accuracy`` and predictions are then copied, never compared.
    """
    planned = set(units)
    if len(planned) != len(units):
        raise ValueError("units contains duplicates")
    by_unit: dict[SVMUnit, UnitScore] = {}
    for s in scores:
        if s.unit not in planned:
            raise ValueError(f"score for an unplanned unit: {s.unit}")
        if s.unit in by_unit:
            raise ValueError(f"two scores for one unit: {s.unit}")
        by_unit[s.unit] = s
    missing = [u for u in units if u not in by_unit]
    if missing:
        raise ValueError(f"{len(missing)} unit(s) have no score, e.g. {missing[0]}")

    groups: dict[str, dict[int, list[UnitScore]]] = {}
    for u in units:  # planned order: feature set, fold, ascending C
        groups.setdefault(u.feature_set, {}).setdefault(u.test_fold, []).append(by_unit[u])

    results = {}
    for name, per_fold in groups.items():
        grids = {tuple(sorted(s.unit.C for s in ss)) for ss in per_fold.values()}
        if len(grids) != 1:
            raise ValueError(f"feature set {name!r}: folds were planned with different C grids")
        grid = grids.pop()
        predictions = np.full(data.labels.shape, -1, dtype=np.int64)
        fold_ids, accs, chosen, inner, held = [], [], [], [], []
        for fold in sorted(per_fold):
            ss = sorted(per_fold[fold], key=lambda s: s.unit.C)
            means = [s.inner_mean for s in ss]
            best_score = max(means)
            best = next(s for s in ss if s.inner_mean >= best_score - _TIE_TOLERANCE)
            predictions[data.folds == fold] = best.test_predictions
            fold_ids.append(int(fold))
            accs.append(best.test_accuracy)
            chosen.append(best.unit.C)
            inner.append(tuple(means))
            held.append(best.inner_validation_folds)
        results[name] = FoldResults(
            feature_set=name, folds=tuple(fold_ids), accuracies=tuple(accs),
            chosen_C=tuple(chosen), c_grid=grid, inner_scores=tuple(inner),
            inner_validation_folds=tuple(held), labels=data.labels.copy(),
            predictions=predictions,
            n_convergence_warnings=sum(by_unit[u].n_convergence_warnings for u in units
                                       if u.feature_set == name))
    return results


# --------------------------------------------------------------------------------------------
# Sequential entry points
# --------------------------------------------------------------------------------------------

def evaluate_feature_sets(features: Mapping[str, np.ndarray], labels: np.ndarray,
                          folds: np.ndarray, c_grid: Sequence[float] = DEFAULT_C_GRID, *,
                          inner_folds: int | None = None, seed: int = 0,
                          max_iter: int = DEFAULT_MAX_ITER,
                          source_ids: Sequence[str | None] | None = None
                          ) -> dict[str, FoldResults]:
    """Nested-validation linear-SVM accuracy for several feature sets, in this process.

    Same units, same selection as the parallel path (``plan_units``/``run_unit``/``combine_units``).
    """
    data = TransferData(features=features, labels=labels, folds=folds, source_ids=source_ids)
    units = plan_units(data, c_grid, inner_folds=inner_folds, seed=seed, max_iter=max_iter)
    return combine_units(units, run_units(units, data), data)


def evaluate_folds(features: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                   c_grid: Sequence[float] = DEFAULT_C_GRID, *, inner_folds: int | None = None,
                   seed: int = 0, max_iter: int = DEFAULT_MAX_ITER,
                   source_ids: Sequence[str | None] | None = None,
                   name: str = "features") -> FoldResults:
    """Nested-validation linear-SVM accuracy of one (N, D) feature matrix over its folds.

    Args:
        features: (N, D) clip vectors.
        labels: (N,) int class indices.
        folds: (N,) int fold ids; each fold is the test fold once.
        c_grid: candidate C values, chosen per test fold by inner CV on the training folds.
        inner_folds: ``None`` = leave-one-training-fold-out; k = k grouped inner splits.
        seed: recorded in the units; the exact solver is deterministic and does not use it.
        source_ids: optional (N,) source-recording ids, checked with ``check_fold_isolation``.
        name: feature-set name recorded in the result.

    Returns:
        FoldResults with per-fold accuracy, chosen C, out-of-fold predictions, mean and std.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 30); x = rng.normal(size=(60, 4)) + 3 * y[:, None]
        >>> r = evaluate_folds(x, y, np.tile([1, 2, 3], 20), c_grid=(0.1, 1.0))
        >>> len(r.accuracies), r.mean > 0.9
        (3, True)
    """
    return evaluate_feature_sets({name: features}, labels, folds, c_grid,
                                 inner_folds=inner_folds, seed=seed, max_iter=max_iter,
                                 source_ids=source_ids)[name]
