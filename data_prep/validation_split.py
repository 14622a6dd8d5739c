"""Carve a validation split out of a training split, deterministically and by source recording.

Model selection (the exported "best" checkpoint, the number of epochs) must never look at the eval split
whose numbers are reported. Prep therefore moves a fixed share of the *training* clips into a separate
split (``"val"`` by default). A clip's fate depends only on its group (its ``source_id`` where the layout
has one, so takes of one recording never straddle train and val; else its ``clip_id``) and the seed, through
a hash: the same inputs always give the same split, and adding clips never moves old ones.

When a layout does not say which recordings a clip was cut from (AudioSet's CSVs name only the video), a
groups file can (``--val-groups``, ``read_val_groups``): rows of ``clip_id,group``, several per clip when a
clip mixes recordings. A group is drawn for validation by the same hash, and a clip goes to ``val`` as soon
as *any* of its groups is drawn, so nothing of a drawn group is ever trained on and ``val`` measures
generalisation to unseen recordings, as the eval split does.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from collections.abc import Mapping, Sequence

from data_prep.records import ClipRecord

__all__ = ["carve_validation", "in_validation", "parse_val_groups", "read_val_groups"]


def in_validation(group: str, fraction: float, seed: int = 0) -> bool:
    """True when ``group`` falls in the validation share (a uniform hash of seed and group < fraction)."""
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def parse_val_groups(text: str, *, name: str = "groups file") -> dict[str, tuple[str, ...]]:
    """``{clip_id: (group, ...)}`` from CSV text with the header ``clip_id,group`` (one row per clip and
    group). A missing header, an empty field or no rows at all is a ``ValueError`` naming ``name``."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"clip_id", "group"} <= set(reader.fieldnames):
        raise ValueError(f"{name}: expected a CSV header with the columns clip_id,group, got {reader.fieldnames}")
    groups: dict[str, list[str]] = {}
    for line, row in enumerate(reader, start=2):
        clip, group = (row.get("clip_id") or "").strip(), (row.get("group") or "").strip()
        if not clip or not group:
            raise ValueError(f"{name}, line {line}: clip_id and group must both be non-empty, got {row}")
        groups.setdefault(clip, []).append(group)
    if not groups:
        raise ValueError(f"{name}: no rows below the header")
    return {clip: tuple(dict.fromkeys(g)) for clip, g in groups.items()}


def read_val_groups(url: str) -> dict[str, tuple[str, ...]]:
    """``parse_val_groups`` of a local path or ``s3://`` URL."""
    from runtime import storage

    return parse_val_groups(storage.read_text(url), name=url)


def carve_validation(records: Sequence[ClipRecord], fraction: float, *, from_split: str = "train",
                     to_split: str = "val", seed: int = 0,
                     groups: Mapping[str, Sequence[str]] | None = None) -> list[ClipRecord]:
    """The records with ``fraction`` of the ``from_split`` groups moved to ``to_split``.

    A clip's groups are ``groups[clip_id]`` when given, else its source recording, else its own id; it
    moves when any of them is drawn. Records of other splits are returned unchanged. ``fraction`` 0 moves
    nothing.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if any(r.split == to_split for r in records):
        raise ValueError(f"the listing already has a {to_split!r} split; choose another name for the carved one")
    groups = groups or {}
    out = []
    for r in records:
        mine = groups.get(r.clip_id) or (r.source_id or r.clip_id,)
        if r.split == from_split and fraction > 0 and any(in_validation(g, fraction, seed) for g in mine):
            r = dataclasses.replace(r, split=to_split)
        out.append(r)
    return out
