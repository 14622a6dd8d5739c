"""PNG figures for transfer results. Every function takes arrays, names and an output path,
writes one PNG and returns its path.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly; pyplot (and its
global figure registry and backend switch) is never touched, so this is safe in Ray workers
and headless machines.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "plot_confusion_matrix",
    "plot_per_class_accuracy",
    "plot_similarity_matrix",
    "plot_source_target_heatmap",
    "plot_tsne",
]

_DPI = 120


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=_DPI, format="png", bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _side(n: int, per_item: float = 0.22, lo: float = 4.0, hi: float = 24.0) -> float:
    """Figure side in inches that keeps n tick labels legible."""
    return float(np.clip(2.5 + per_item * n, lo, hi))


def _tick_fontsize(n: int) -> float:
    return 8.0 if n <= 20 else 6.0 if n <= 60 else 4.0


def _colors(n: int) -> list:
    """n distinct colours: tab10/tab20 for few classes, tab20+tab20b+tab20c (60) for more."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    pool = [colormaps[m](i) for m in ("tab20", "tab20b", "tab20c") for i in range(20)]
    if n <= len(pool):
        return pool[:n]
    return [colormaps["hsv"](i / n) for i in range(n)]


def _check_square(m: np.ndarray, names: Sequence[str], what: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(names):
        raise ValueError(f"{what} has shape {m.shape}; expected ({len(names)}, {len(names)})")
    return m


def _matrix(ax, m: np.ndarray, row_names: Sequence[str], col_names: Sequence[str], *,
            cmap: str, vmin: float | None, vmax: float | None, annotate: bool, fmt: str,
            colorbar_label: str):
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(col_names)), labels=list(col_names), rotation=90,
                  fontsize=_tick_fontsize(len(col_names)))
    ax.set_yticks(range(len(row_names)), labels=list(row_names),
                  fontsize=_tick_fontsize(len(row_names)))
    if annotate:
        hi = np.nanmax(m) if np.isfinite(m).any() else 1.0
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isfinite(m[i, j]) and m[i, j] != 0:
                    ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] > 0.6 * hi else "black")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=colorbar_label)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                          *, title: str = "Confusion matrix", normalise: bool = True) -> Path:
    """Confusion matrix (rows: true class, columns: predicted). ``normalise`` divides each row
    by its total, so the diagonal is per-class accuracy."""
    cm = _check_square(cm, class_names, "confusion matrix")
    if normalise:
        totals = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    n = len(class_names)
    fig = Figure(figsize=(_side(n) + 1.5, _side(n)))
    ax = fig.add_subplot()
    _matrix(ax, cm, class_names, class_names, cmap="Blues", vmin=0.0,
            vmax=1.0 if normalise else None, annotate=n <= 20, fmt=".2f" if normalise else ".0f",
            colorbar_label="fraction of true class" if normalise else "clips")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _save(fig, path)


def plot_per_class_accuracy(accuracy: np.ndarray, class_names: Sequence[str],
                            path: str | os.PathLike, *, title: str = "Per-class accuracy",
                            chance: float | None = None, sort: bool = True) -> Path:
    """Horizontal bars of per-class accuracy in [0, 1] (NaN bars are left empty); optional
    dashed chance line and the mean over classes as a dotted line."""
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.shape != (len(class_names),):
        raise ValueError(f"accuracy has shape {acc.shape}; expected ({len(class_names)},)")
    order = np.argsort(np.nan_to_num(acc, nan=-1.0), kind="stable") if sort else np.arange(len(acc))
    n = len(acc)
    fig = Figure(figsize=(7.0, _side(n, per_item=0.18)))
    ax = fig.add_subplot()
    ax.barh(range(n), np.nan_to_num(acc[order], nan=0.0), color="tab:blue")
    ax.set_yticks(range(n), labels=[class_names[i] for i in order], fontsize=_tick_fontsize(n))
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("accuracy")
    if chance is not None:
        ax.axvline(chance, color="tab:red", linestyle="--", label=f"chance {chance:.2f}")
    if np.isfinite(acc).any():
        ax.axvline(np.nanmean(acc), color="black", linestyle=":",
                   label=f"mean {np.nanmean(acc):.3f}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7)
    ax.set_title(title)
    return _save(fig, path)


def _scatter_by(ax, points: np.ndarray, ids: np.ndarray, names: Sequence[str], title: str):
    colors = _colors(len(names))
    for k, name in enumerate(names):
        sel = ids == k
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=8, color=colors[k], label=name,
                       linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=6, markerscale=2,
              ncol=1 if len(names) <= 25 else 2, frameon=False)


def plot_tsne(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
              path: str | os.PathLike, *, groups: np.ndarray | None = None,
              group_names: Sequence[str] | None = None, title: str = "t-SNE") -> Path:
    """2-D scatter coloured by class; with ``groups`` (super-category index per clip) a second
    panel colours the same points by super-category (paper section 4.4)."""
    pts = np.asarray(points, dtype=np.float64)
    y = np.asarray(labels)
    if pts.ndim != 2 or pts.shape[1] != 2 or y.shape != (pts.shape[0],):
        raise ValueError(f"points {pts.shape} and labels {y.shape} must be (N, 2) and (N,)")
    if y.size and (y.min() < 0 or y.max() >= len(class_names)):
        raise ValueError(f"labels outside 0..{len(class_names) - 1}")
    panels = 1
    if groups is not None:
        g = np.asarray(groups)
        if group_names is None or g.shape != y.shape:
            raise ValueError("groups needs group_names and one group index per point")
        if g.size and (g.min() < 0 or g.max() >= len(group_names)):
            raise ValueError(f"groups outside 0..{len(group_names) - 1}")
        panels = 2
    fig = Figure(figsize=(8.0 * panels, 6.5))
    ax = fig.add_subplot(1, panels, 1)
    _scatter_by(ax, pts, y, class_names, f"{title}: by class")
    if panels == 2:
        _scatter_by(fig.add_subplot(1, 2, 2), pts, g, group_names, f"{title}: by super-category")
    return _save(fig, path)


def plot_source_target_heatmap(scores: np.ndarray, target_names: Sequence[str],
                               source_names: Sequence[str], path: str | os.PathLike, *,
                               top_k: int | None = 3, title: str = "Source classes per target class"
                               ) -> Path:
    """Heatmap of mean source-class scores (rows: target classes, columns: source classes).

    With ``top_k``, only the union of each target's top-k source classes is shown (527 columns
    are unreadable), ordered by the target whose top list first names them.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(target_names), len(source_names)):
        raise ValueError(f"scores has shape {s.shape}; expected "
                         f"({len(target_names)}, {len(source_names)})")
    if top_k is not None:
        cols: list[int] = []
        for row in np.argsort(-s, axis=1, kind="stable")[:, :top_k]:
            cols += [int(j) for j in row if j not in cols]
    else:
        cols = list(range(s.shape[1]))
    sub = s[:, cols]
    names = [source_names[j] for j in cols]
    fig = Figure(figsize=(_side(len(cols), per_item=0.2) + 2.0, _side(len(target_names))))
    ax = fig.add_subplot()
    _matrix(ax, sub, target_names, names, cmap="viridis", vmin=None, vmax=None,
            annotate=False, fmt=".2f", colorbar_label="mean score")
    ax.set_xlabel("source class")
    ax.set_ylabel("target class")
    ax.set_title(title)
    return _save(fig, path)


def plot_similarity_matrix(similarity: np.ndarray, class_names: Sequence[str],
                           path: str | os.PathLike, *,
                           title: str = "Class similarity (cosine of class means)") -> Path:
    """Symmetric class-by-class similarity matrix in [-1, 1]."""
    sim = _check_square(similarity, class_names, "similarity matrix")
    n = len(class_names)
    fig = Figure(figsize=(_side(n) + 1.5, _side(n)))
    ax = fig.add_subplot()
    _matrix(ax, sim, class_names, class_names, cmap="RdBu_r", vmin=-1.0, vmax=1.0,
            annotate=n <= 15, fmt=".2f", colorbar_label="cosine similarity")
    ax.set_title(title)
    return _save(fig, path)
