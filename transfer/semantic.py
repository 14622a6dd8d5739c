"""Semantic analysis of clip embeddings (paper section 4.4): t-SNE maps, the source classes
that characterise each target class, and class-by-class similarity in embedding space.

All functions are pure over arrays; plotting lives in ``transfer.plots``.

The scene-event relation follows the reading in the paper summary: average the F2 clip
scores (``F2 avg``: mean over segments of the source network's sigmoid outputs) over all clips
of a target class, then rank the source classes. ``contrast=True`` subtracts the mean over all
clips first, which ranks events that are *distinctive* for a class above ones that fire
everywhere (e.g. generic "Music" or "Speech").
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.manifold import TSNE

__all__ = ["TopSources", "class_means", "class_similarity", "top_source_classes", "tsne_2d"]


def tsne_2d(embeddings: np.ndarray, *, seed: int = 0, perplexity: float | None = None,
            standardise: bool = True, max_iter: int = 1000) -> np.ndarray:
    """(N, D) clip embeddings -> (N, 2) t-SNE coordinates (scikit-learn, PCA init).

    Args:
        embeddings: (N, D), N >= 4.
        seed: t-SNE random_state (the map is reproducible for a fixed seed).
        perplexity: default ``min(30, (N - 1) / 3)``; must be < N.
        standardise: z-score each dimension first (F1 units have very different scales).
        max_iter: optimisation iterations.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"embeddings must be (N >= 4, D), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or inf")
    n = x.shape[0]
    if perplexity is None:
        perplexity = min(30.0, (n - 1) / 3.0)
    if not 0 < perplexity < n:
        raise ValueError(f"perplexity must be in (0, N={n}), got {perplexity}")
    if standardise:
        sd = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                max_iter=max_iter, random_state=seed)
    return tsne.fit_transform(x)


def class_means(embeddings: np.ndarray, labels: np.ndarray, n_classes: int | None = None
                ) -> np.ndarray:
    """(C, D) mean embedding of each class 0..C-1. ValueError if a class has no clips."""
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"embeddings {x.shape} and labels {y.shape} must be (N, D) and (N,)")
    if y.size and (y.min() < 0 or not np.issubdtype(y.dtype, np.integer)):
        raise ValueError("labels must be non-negative integer class indices")
    c = int(y.max()) + 1 if n_classes is None else int(n_classes)
    counts = np.bincount(y, minlength=c)
    if len(counts) > c:
        raise ValueError(f"labels go up to {len(counts) - 1} but n_classes={c}")
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"classes {empty.tolist()} have no clips; cannot take their mean")
    sums = np.zeros((c, x.shape[1]))
    np.add.at(sums, y, x)
    return sums / counts[:, None]


def class_similarity(embeddings: np.ndarray, labels: np.ndarray, n_classes: int | None = None,
                     *, center: bool = False) -> np.ndarray:
    """(C, C) cosine similarity between class-mean embeddings.

    ``center=True`` subtracts the mean over all clips before taking class means; without it,
    non-negative (ReLU) embeddings make every pair look similar. A class whose mean is the zero
    vector has similarity 0 to everything (and 1 on the diagonal).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0)
    means = class_means(x, labels, n_classes)
    norms = np.linalg.norm(means, axis=1)
    unit = means / np.where(norms > 0, norms, 1.0)[:, None]
    sim = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    return sim


@dataclass(frozen=True, eq=False)
class TopSources:
    """For each target class, the k source classes with the highest mean F2 score."""

    target_names: tuple[str, ...]
    source_names: tuple[str, ...]
    scores: np.ndarray        # (C_T, C_S) mean F2 (minus the global mean if contrast)
    top_indices: np.ndarray   # (C_T, k) source indices, best first
    contrast: bool = False

    def rows(self) -> list[tuple[str, list[tuple[str, float]]]]:
        """[(target name, [(source name, score), ...best first]), ...]"""
        return [(t, [(self.source_names[j], float(self.scores[i, j])) for j in self.top_indices[i]])
                for i, t in enumerate(self.target_names)]

    def to_markdown(self) -> str:
        k = self.top_indices.shape[1]
        head = "| target class | " + " | ".join(f"#{i + 1}" for i in range(k)) + " |"
        lines = [head, "|" + "---|" * (k + 1)]
        for target, tops in self.rows():
            cells = [f"{_md_escape(name)} ({score:.3f})" for name, score in tops]
            lines.append(f"| {_md_escape(target)} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"contrast": self.contrast,
                "top": {t: [{"source": s, "score": v} for s, v in tops] for t, tops in self.rows()}}


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def top_source_classes(f2_avg: np.ndarray, labels: np.ndarray, target_names: Sequence[str],
                       source_names: Sequence[str], k: int = 5, *, contrast: bool = False
                       ) -> TopSources:
    """Rank source classes per target class by their mean F2 score over the class's clips.

    Args:
        f2_avg: (N, C_S) per-clip F2 scores averaged over segments.
        labels: (N,) target class index per clip, in 0..C_T-1.
        target_names: C_T target class names.
        source_names: C_S source class names (the source vocabulary order).
        k: how many source classes to keep per target class (clipped to C_S).
        contrast: subtract the mean over all clips before ranking.

    Ties are broken by the lower source index (stable sort).
    """
    x = np.asarray(f2_avg, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(source_names):
        raise ValueError(f"f2_avg has shape {x.shape}; expected (N, C_S={len(source_names)})")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    means = class_means(x, labels, len(target_names))
    if contrast:
        means = means - x.mean(axis=0)
    top = np.argsort(-means, axis=1, kind="stable")[:, :min(k, x.shape[1])]
    return TopSources(target_names=tuple(target_names), source_names=tuple(source_names),
                      scores=means, top_indices=top, contrast=contrast)
