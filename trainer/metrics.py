"""Multi-label clip metrics in pure numpy: mAP, mean AUC, d-prime, per-class AP, mAP by duration.

Conventions (those of the AudioSet literature and of scikit-learn):

- AP is the step-wise sum ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds
  (``sklearn.metrics.average_precision_score``); AUC is the trapezoidal ROC area
  (``roc_auc_score``); ties between scores are handled as one threshold in both.
- Macro averages run over the classes *scorable* in the given data: at least one positive and
  one negative clip. Other classes get NaN in the per-class arrays and are skipped.
- d-prime = ``sqrt(2) * Phi^-1(mean AUC)``; the AUC is clipped to ``[1e-6, 1 - 1e-6]`` so a
  perfect score gives a large finite value instead of infinity.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["average_precision", "roc_auc", "d_prime", "clip_metrics", "map_by_duration"]


def _curve(y_true: np.ndarray, y_score: np.ndarray):
    """Cumulative true/false positives at each distinct threshold, highest score first."""
    order = np.argsort(-y_score, kind="mergesort")
    y = y_true[order].astype(np.float64)
    s = y_score[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return tps, fps


def average_precision(y_true, y_score) -> float:
    """AP of one class; NaN when ``y_true`` has no positive."""
    y_true = np.asarray(y_true).astype(bool)
    if not y_true.any():
        return float("nan")
    tps, fps = _curve(y_true, np.asarray(y_score, dtype=np.float64))
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve of one class; NaN without both a positive and a negative."""
    y_true = np.asarray(y_true).astype(bool)
    if y_true.all() or not y_true.any():
        return float("nan")
    tps, fps = _curve(y_true, np.asarray(y_score, dtype=np.float64))
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.trapezoid(tpr, fpr))


def d_prime(auc: float) -> float:
    """``sqrt(2) * Phi^-1(auc)`` (equal-variance Gaussian separation implied by an AUC)."""
    if math.isnan(auc):
        return float("nan")
    return math.sqrt(2.0) * NormalDist().inv_cdf(min(max(auc, 1e-6), 1 - 1e-6))


def clip_metrics(targets, scores) -> dict:
    """Macro metrics of clip-level scores.

    Args:
        targets: ``(N, C)`` 0/1 labels.
        scores: ``(N, C)`` scores (probabilities or any monotone transform).

    Returns:
        ``{"mAP", "mean_auc", "d_prime", "num_classes_scored", "num_clips", "per_class_ap",
        "per_class_auc"}``; per-class arrays hold NaN for classes that cannot be scored.
    """
    targets = np.asarray(targets)
    scores = np.asarray(scores, dtype=np.float64)
    if targets.shape != scores.shape or targets.ndim != 2:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be (N, C)")
    n, c = targets.shape
    ap = np.full(c, np.nan)
    auc = np.full(c, np.nan)
    pos = targets.astype(bool).sum(axis=0)
    scorable = (pos > 0) & (pos < n)
    for j in np.flatnonzero(scorable):
        ap[j] = average_precision(targets[:, j], scores[:, j])
        auc[j] = roc_auc(targets[:, j], scores[:, j])
    mean_ap = float(np.mean(ap[scorable])) if scorable.any() else float("nan")
    mean_auc = float(np.mean(auc[scorable])) if scorable.any() else float("nan")
    return {"mAP": mean_ap, "mean_auc": mean_auc, "d_prime": d_prime(mean_auc),
            "num_classes_scored": int(scorable.sum()), "num_clips": int(n),
            "per_class_ap": ap, "per_class_auc": auc}


def map_by_duration(targets, scores, durations_s, edges_s) -> list[dict]:
    """mAP within each clip-duration bucket ``[edges[i], edges[i+1])`` (last bucket closed).

    Returns one ``{"lo_s", "hi_s", "num_clips", "mAP", "num_classes_scored"}`` per bucket; mAP is
    NaN for a bucket with no scorable class.
    """
    targets = np.asarray(targets)
    scores = np.asarray(scores)
    d = np.asarray(durations_s, dtype=np.float64)
    edges = np.asarray(edges_s, dtype=np.float64)
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = (d >= lo) & ((d < hi) if i < len(edges) - 2 else (d <= hi))
        m = clip_metrics(targets[sel], scores[sel]) if sel.sum() >= 2 else None
        out.append({"lo_s": float(lo), "hi_s": float(hi), "num_clips": int(sel.sum()),
                    "mAP": m["mAP"] if m else float("nan"),
                    "num_classes_scored": m["num_classes_scored"] if m else 0})
    return out
