"""Which clips an epoch draws, and how often: ``natural`` (each once) or ``balanced`` (by class).

Long-tailed corpora (full AudioSet: "Speech" and "Music" in most clips, hundreds of classes in a
few hundred clips each) under natural sampling expose the rarest classes hundreds of times less
often than the commonest. ``balanced`` sampling reweights clips from the manifest's labels and
draws an epoch of the same size with replacement, so every class is seen about equally often
as far as label co-occurrence allows.

Streaming without random access: an epoch still reads its shards sequentially. Sampling only
decides a *multiplicity* per clip (0, 1, 2, ...): a clip drawn 0 times is skipped without
decoding, one drawn ``m`` times is decoded once and used ``m`` times (the shuffle buffer and the
bucketing spread the copies over different batches, each with its own random crop).

Everything here is pure numpy; labels come from the shard index sidecars the prep wrote (one
small JSON per shard task) unless the manifest itself lists them.
"""

from __future__ import annotations

import json
import re

import numpy as np

from data_prep.manifest import Manifest
from runtime import storage

__all__ = ["SAMPLING_MODES", "clip_labels", "balanced_weights", "epoch_multiplicities", "class_exposure",
           "exposure_ratio"]

SAMPLING_MODES = ("natural", "balanced")
_PART_SUFFIX = re.compile(r"(-p\d+)?\.tar$")


def clip_labels(manifest: Manifest, split: str) -> list[list[int]]:
    """Class indices of every clip of ``split``, in manifest order (shard by shard, stored order).

    Read from the manifest's per-shard ``labels`` when present, else from the shard index sidecars
    ``<task>.index.json`` (a part ``shards/train-000003-p1.tar`` belongs to the task
    ``shards/train-000003``). No audio is read.
    """
    raw = {s["name"]: s for s in manifest.raw.get("shards", [])}
    out: list[list[int]] = []
    indexes: dict[str, dict] = {}
    for shard in manifest.shards_of(split):
        listed = raw.get(shard.name, {}).get("labels")
        if listed is None:
            index_name = _PART_SUFFIX.sub("", shard.name) + ".index.json"
            if index_name not in indexes:
                url = storage.join(manifest.url, index_name)
                try:
                    indexes[index_name] = json.loads(storage.read_text(url))
                except FileNotFoundError:
                    raise FileNotFoundError(f"{url}: shard index missing; balanced sampling needs per-clip "
                                            "labels (re-run the prep, which writes it)") from None
            parts = {p["name"]: p for p in indexes[index_name]["parts"]}
            if shard.name not in parts:
                raise ValueError(f"{manifest.url}: {index_name} does not list part {shard.name}")
            listed = [s["labels"] for s in parts[shard.name]["samples"]]
        if len(listed) != shard.num_samples:
            raise ValueError(f"{manifest.url}: {shard.name} lists {len(listed)} label sets for "
                             f"{shard.num_samples} samples")
        out.extend([int(c) for c in labels] for labels in listed)
    return out


def _incidence(labels: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the clip x class label matrix: (indptr, class index per entry)."""
    indptr = np.zeros(len(labels) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(x) for x in labels])
    indices = np.fromiter((c for x in labels for c in x), dtype=np.int64, count=int(indptr[-1]))
    return indptr, indices


def balanced_weights(labels: list[list[int]], num_classes: int, iterations: int = 30) -> np.ndarray:
    """Per-clip draw probabilities (summing to 1) that make per-class exposure about equal.

    Starts from "a clip weighs as much as its rarest class" (``max 1/count``), then corrects
    clip weights multiplicatively towards equal expected exposure: each iteration multiplies a
    clip's weight by the geometric mean, over its classes, of ``(mean exposure / class
    exposure)^0.7`` (damped, as co-occurrence couples the classes). Classes with no clip are
    ignored; clips without labels keep their start weight.

    Limit: when a class co-occurs with almost every other (a "Speech" in nearly every clip of
    every rare class), no reweighting can expose it as rarely as the rare ones; the ratio then
    stays above 2x (``bench/sampling.py --head-co-label 0.9`` shows that case).
    """
    n = len(labels)
    if n == 0:
        raise ValueError("balanced_weights needs at least one clip")
    indptr, idx = _incidence(labels)
    per_clip = np.diff(indptr)
    row = np.repeat(np.arange(n), per_clip)
    counts = np.bincount(idx, minlength=num_classes).astype(np.float64)
    present = counts > 0
    has = per_clip > 0
    starts = indptr[:-1][has]
    inv = np.zeros(num_classes)
    inv[present] = 1.0 / counts[present]
    w = np.full(n, inv[present].min() if present.any() else 1.0)
    if not idx.size:
        return w / w.sum()
    w[has] = np.maximum.reduceat(inv[idx], starts)
    for _ in range(iterations):
        exposure = np.bincount(idx, weights=w[row], minlength=num_classes)
        log_fix = np.zeros(num_classes)
        log_fix[present] = 0.7 * np.log(exposure[present].mean() / exposure[present])
        w[has] *= np.exp(np.add.reduceat(log_fix[idx], starts) / per_clip[has])
        w /= w.sum()
    return w / w.sum()


def epoch_multiplicities(weights: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """How often each clip is drawn in one epoch of ``draws`` draws (systematic sampling).

    Clip ``i`` is drawn ``floor(draws * p_i)`` or one more time, with expectation
    ``draws * p_i``; the total is exactly ``draws``. Lower variance than independent draws, so
    per-class exposure in one epoch is close to its expectation.
    """
    p = np.asarray(weights, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("weights must be a non-empty 1-D array of non-negative numbers with a positive sum")
    cum = np.concatenate([[0.0], np.cumsum(p / p.sum()) * draws])
    ticks = np.floor(cum + rng.uniform())
    m = np.diff(ticks).astype(np.int64)
    m[-1] += draws - int(m.sum())  # float rounding at the very end
    return m


def class_exposure(labels: list[list[int]], multiplicities: np.ndarray, num_classes: int) -> np.ndarray:
    """Draws per class: how many drawn clips carry each class (a clip drawn twice counts twice)."""
    indptr, idx = _incidence(labels)
    row = np.repeat(np.arange(len(labels)), np.diff(indptr))
    return np.bincount(idx, weights=np.asarray(multiplicities, dtype=np.float64)[row], minlength=num_classes)


def exposure_ratio(exposure: np.ndarray, present: np.ndarray | None = None) -> float:
    """Most-exposed over least-exposed class (among ``present`` classes; inf if one is never drawn)."""
    e = np.asarray(exposure, dtype=np.float64)
    if present is not None:
        e = e[np.asarray(present, dtype=bool)]
    return float("inf") if e.min() <= 0 else float(e.max() / e.min())
