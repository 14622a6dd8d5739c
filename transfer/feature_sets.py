"""Segment-to-recording mapping and the paper's named feature sets.

The network emits one vector per segment: F1 (layer18, 1024-d) and F2 (layer19 sigmoid
outputs, one score per source class). A clip with K segments gives (K, D) matrices; ``max()``
or ``avg()`` over the K segments turns them into fixed vectors (paper section 3.2). Feature
sets are named ``"<layer> <mapping>"``:

==================  ======================================================
name                vector
==================  ======================================================
``F1 max``          max over segments of F1
``F1 avg``          mean over segments of F1
``F2 max``/``avg``  the same for F2
``F1 max+avg``      [F1 max, F1 avg] concatenated
``F1+F2 max``       [F1 max, F2 max] concatenated
``F1+F2 max+avg``   [F1 max, F1 avg, F2 max, F2 avg]
==================  ======================================================

``row_label("N_S", "F1 max")`` gives the paper's row name ``"N_S, F1, max()"``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "LAYERS",
    "MAPPINGS",
    "feature_set_names",
    "feature_sets",
    "feature_sets_from_pooled",
    "map_segments",
    "parse_feature_set",
    "row_label",
    "split_segments",
]

LAYERS = ("F1", "F2", "F1+F2")
MAPPINGS = ("max", "avg", "max+avg")


def map_segments(segments: np.ndarray, mapping: str) -> np.ndarray:
    """Map a (K, D) segment matrix to a (D,) clip vector by ``"max"`` or ``"avg"`` over K.

    Example:
        >>> map_segments(np.array([[0., 4.], [2., 0.]]), "avg")
        array([1., 2.])
    """
    seg = np.asarray(segments, dtype=np.float64)
    if seg.ndim != 2 or seg.shape[0] == 0:
        raise ValueError(f"segments must be (K >= 1, D), got shape {seg.shape}")
    if mapping == "max":
        return seg.max(axis=0)
    if mapping == "avg":
        return seg.mean(axis=0)
    raise ValueError(f"mapping must be 'max' or 'avg', got {mapping!r}")


def parse_feature_set(name: str) -> tuple[str, str]:
    """``"F1+F2 max+avg"`` -> ``("F1+F2", "max+avg")``; ValueError for unknown names."""
    parts = name.split(" ")
    if len(parts) != 2 or parts[0] not in LAYERS or parts[1] not in MAPPINGS:
        raise ValueError(f"unknown feature set {name!r}; expected '<layer> <mapping>' with layer "
                         f"in {LAYERS} and mapping in {MAPPINGS}")
    return parts[0], parts[1]


def row_label(network: str, feature_set: str) -> str:
    """Paper-style row name: ``row_label("N_T^I", "F1 max+avg")`` -> ``"N_T^I, F1, max()+avg()"``."""
    layer, mapping = parse_feature_set(feature_set)
    return f"{network}, {layer}, {'+'.join(m + '()' for m in mapping.split('+'))}"


def feature_set_names(include_f2: bool = True, combinations: bool = True) -> list[str]:
    """The feature-set names ``feature_sets`` computes, in table order."""
    layers = ["F1", "F2"] if include_f2 else ["F1"]
    names = [f"{layer} {m}" for layer in layers for m in ("max", "avg")]
    if combinations:
        names += [f"{layer} max+avg" for layer in layers]
        if include_f2:
            names += ["F1+F2 max", "F1+F2 avg", "F1+F2 max+avg"]
    return names


def _stack(segs: Sequence[np.ndarray], mapping: str, what: str) -> np.ndarray:
    if len(segs) == 0:
        raise ValueError(f"{what}: no clips")
    rows = []
    for i, s in enumerate(segs):
        try:
            rows.append(map_segments(s, mapping))
        except ValueError as e:
            raise ValueError(f"{what}, clip {i}: {e}") from None
    dims = {r.shape[0] for r in rows}
    if len(dims) != 1:
        raise ValueError(f"{what}: clips have different dimensions {sorted(dims)}")
    out = np.stack(rows)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{what}: non-finite values in segment outputs")
    return out


def split_segments(segments: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Flat (sum K_i, D) segment rows + (N + 1,) offsets -> N views of shape (K_i, D).

    This is the columnar layout of stored embeddings: clip i owns rows offsets[i]:offsets[i+1].
    """
    seg = np.asarray(segments)
    off = np.asarray(offsets)
    if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != seg.shape[0] \
            or np.any(np.diff(off) < 0):
        raise ValueError(f"offsets must rise from 0 to {seg.shape[0]} (the number of segment "
                         f"rows), got {off[:3].tolist()}...{off[-3:].tolist()}")
    return [seg[a:b] for a, b in zip(off[:-1], off[1:])]


def feature_sets_from_pooled(f1_max: np.ndarray, f1_avg: np.ndarray,
                             f2_max: np.ndarray | None = None, f2_avg: np.ndarray | None = None,
                             *, combinations: bool = True) -> dict[str, np.ndarray]:
    """All named feature sets from already mapped (N, D) clip vectors (e.g. stored embeddings).

    Give both F2 arrays or neither. Returns name -> (N, D_set) in ``feature_set_names`` order.
    """
    if (f2_max is None) != (f2_avg is None):
        raise ValueError("give both f2_max and f2_avg, or neither")
    parts = {"F1 max": f1_max, "F1 avg": f1_avg}
    if f2_max is not None:
        parts.update({"F2 max": f2_max, "F2 avg": f2_avg})
    out = {}
    n = None
    for name, x in parts.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"{name} must be (N, D), got shape {x.shape}")
        if n is not None and x.shape[0] != n:
            raise ValueError(f"{name} has {x.shape[0]} clips but F1 max has {n}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name}: non-finite values")
        n = x.shape[0]
        out[name] = x
    has_f2 = f2_max is not None
    if combinations:
        for layer in (["F1", "F2"] if has_f2 else ["F1"]):
            out[f"{layer} max+avg"] = np.hstack([out[f"{layer} max"], out[f"{layer} avg"]])
        if has_f2:
            for m in ("max", "avg"):
                out[f"F1+F2 {m}"] = np.hstack([out[f"F1 {m}"], out[f"F2 {m}"]])
            out["F1+F2 max+avg"] = np.hstack([out["F1 max"], out["F1 avg"],
                                              out["F2 max"], out["F2 avg"]])
    return {name: out[name] for name in feature_set_names(has_f2, combinations)}


def feature_sets(f1_segments: Sequence[np.ndarray], f2_segments: Sequence[np.ndarray] | None = None,
                 *, combinations: bool = True) -> dict[str, np.ndarray]:
    """All named clip-level feature sets from per-clip segment matrices.

    Args:
        f1_segments: N arrays of shape (K_i, D1): F1 per segment of clip i.
        f2_segments: N arrays of shape (K_i, D2), same K_i as F1 (the same segments), or None
            to compute F1 sets only.
        combinations: also build the concatenated sets (``max+avg``, ``F1+F2``).

    Returns:
        name -> (N, D_set) float64 array, in ``feature_set_names`` order.
    """
    if f2_segments is None:
        return feature_sets_from_pooled(_stack(f1_segments, "max", "F1"),
                                        _stack(f1_segments, "avg", "F1"),
                                        combinations=combinations)
    if len(f2_segments) != len(f1_segments):
        raise ValueError(f"F1 has {len(f1_segments)} clips but F2 has {len(f2_segments)}")
    for i, (a, b) in enumerate(zip(f1_segments, f2_segments)):
        if np.shape(a)[0] != np.shape(b)[0]:
            raise ValueError(f"clip {i}: F1 has {np.shape(a)[0]} segments but F2 has "
                             f"{np.shape(b)[0]}; both must come from the same segments")
    return feature_sets_from_pooled(
        _stack(f1_segments, "max", "F1"), _stack(f1_segments, "avg", "F1"),
        _stack(f2_segments, "max", "F2"), _stack(f2_segments, "avg", "F2"),
        combinations=combinations)
