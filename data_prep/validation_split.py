"""Carve a validation split out of a training split, deterministically and by source recording.

Model selection (the exported "best" checkpoint, the number of epochs) must never look at the eval split
whose numbers are reported. Prep therefore moves a fixed share of the *training* clips into a separate
split (``"val"`` by default). A clip's fate depends only on its group (its ``source_id`` where the layout
has one, so takes of one recording never straddle train and val; else its ``clip_id``) and the seed, through
a hash: the same inputs always give the same split, and adding clips never moves old ones.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

from data_prep.records import ClipRecord

__all__ = ["carve_validation", "in_validation"]


def in_validation(group: str, fraction: float, seed: int = 0) -> bool:
    """True when ``group`` falls in the validation share (a uniform hash of seed and group < fraction)."""
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def carve_validation(records: Sequence[ClipRecord], fraction: float, *, from_split: str = "train",
                     to_split: str = "val", seed: int = 0) -> list[ClipRecord]:
    """The records with ``fraction`` of the ``from_split`` groups moved to ``to_split``.

    Records of other splits are returned unchanged. ``fraction`` 0 moves nothing.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if any(r.split == to_split for r in records):
        raise ValueError(f"the listing already has a {to_split!r} split; choose another name for the carved one")
    out = []
    for r in records:
        if r.split == from_split and fraction > 0 and in_validation(r.source_id or r.clip_id, fraction, seed):
            r = dataclasses.replace(r, split=to_split)
        out.append(r)
    return out
