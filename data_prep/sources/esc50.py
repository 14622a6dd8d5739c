"""ESC-50: 2000 five-second environmental recordings in 50 classes, 5 official folds.

ESC-50 (Piczak, ACM MM 2015; CC BY-NC 3.0, clips from freesound.org). Expected layout, as in
the dataset's repository::

    <root>/audio/<fold>-<src_file>-<take>-<target>.wav
    <root>/meta/esc50.csv        filename,fold,target,category,esc10,src_file,take

Records: ``clip_id`` = file stem, ``labels`` = (category,), ``split`` = ``"fold<k>"``,
``fold`` = k, ``source_id`` = ``src_file`` (the freesound recording the clip was cut from; all
its clips share one fold, so cross-validation by fold never leaks a recording). The vocabulary
is ordered by ``target`` and uses category names as ids.

Per-row problems become rejects: ``bad_csv_row`` (wrong field count, non-integer fold/target,
empty name, or a category that disagrees with the first category seen for its target),
``duplicate_id``, ``unknown_label`` (only with an explicit ``vocab``), ``missing_audio``.

Example:
    >>> listing = load_esc50("/data/ESC-50-master")        # doctest: +SKIP
    >>> len(listing.vocab), listing.records[0].split       # doctest: +SKIP
    (50, 'fold1')
"""
from __future__ import annotations

import os
from pathlib import Path

from data_prep.records import ClipRecord, LabelVocab, SourceListing
from data_prep.sources import ListingBuilder, iter_csv_lines, label_display_name, require_file

__all__ = ["ESC50_COLUMNS", "load_esc50"]

ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def _parse(fields: list[str], col: dict[str, int]) -> dict:
    if len(fields) < len(col):
        raise ValueError(f"expected {len(col)} fields, got {len(fields)}")
    row = {name: fields[i].strip() for name, i in col.items()}
    if not row["filename"]:
        raise ValueError("empty filename")
    if not row["category"]:
        raise ValueError("empty category")
    for name in ("fold", "target"):
        try:
            row[name] = int(row[name])
        except ValueError:
            raise ValueError(f"{name} {row[name]!r} is not an integer") from None
    if row["fold"] < 1:
        raise ValueError(f"fold {row['fold']} is not >= 1")
    if row["target"] < 0:
        raise ValueError(f"target {row['target']} is negative")
    row["esc10"] = row["esc10"].lower() in ("true", "1", "yes")
    return row


def load_esc50(root: str | os.PathLike, *, esc10_only: bool = False,
               vocab: LabelVocab | None = None) -> SourceListing:
    """List the ESC-50 layout under ``root``.

    Args:
        root: the ESC-50 folder (with ``audio/`` and ``meta/esc50.csv``).
        esc10_only: keep only the ESC-10 subset (rows with ``esc10`` True); the listing is then
            named ``esc10``.
        vocab: a fixed vocabulary (category names as ids); rows with other categories become
            ``unknown_label`` rejects. Default: built from the CSV, ordered by ``target``.

    Raises:
        FileNotFoundError: no ``meta/esc50.csv``. ValueError: its header lacks a required column.
    """
    root = Path(root)
    meta = require_file(root / "meta" / "esc50.csv", "ESC-50 metadata meta/esc50.csv")
    audio_dir = root / "audio"
    out = ListingBuilder("esc10" if esc10_only else "esc50")

    lines = iter_csv_lines(meta)
    first = next(lines, None)
    header = [c.strip().lower() for c in (first[1] or [])] if first else []
    missing = [c for c in ESC50_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{meta}: header lacks column(s) {missing}; expected {','.join(ESC50_COLUMNS)}")
    col = {name: header.index(name) for name in ESC50_COLUMNS}

    # Pass 1: parse rows and fix target -> category (the first row seen for a target wins).
    parsed: list[tuple[str, dict]] = []
    category_of: dict[int, str] = {}
    for number, fields, raw in lines:
        where = f"line {number}"
        if fields is None:
            out.reject(None, meta, "bad_csv_row", f"{where}: does not parse as CSV: {raw[:200]!r}")
            continue
        try:
            row = _parse(fields, col)
        except ValueError as e:
            name = fields[col["filename"]].strip() if len(fields) > col["filename"] else ""
            out.reject(Path(name).stem or None, meta, "bad_csv_row", f"{where}: {e}: {raw[:200]!r}")
            continue
        known = category_of.setdefault(row["target"], row["category"])
        if known != row["category"]:
            out.reject(Path(row["filename"]).stem, meta, "bad_csv_row",
                       f"{where}: category {row['category']!r} for target {row['target']}, "
                       f"which earlier rows call {known!r}")
            continue
        if esc10_only and not row["esc10"]:
            continue
        parsed.append((where, row))

    if vocab is None:
        targets = sorted({row["target"] for _, row in parsed})
        vocab = LabelVocab(ids=tuple(category_of[t] for t in targets),
                           names=tuple(label_display_name(category_of[t]) for t in targets))

    # Pass 2: records.
    for where, row in parsed:
        clip_id = Path(row["filename"]).stem
        if out.is_duplicate(clip_id, meta, where):
            continue
        if row["category"] not in vocab:
            out.reject(clip_id, meta, "unknown_label", f"{where}: category {row['category']!r} is not in the vocabulary")
            continue
        path = audio_dir / row["filename"]
        if not path.is_file():
            out.reject(clip_id, path, "missing_audio", f"{where}: {row['filename']} is not in {audio_dir}")
            continue
        out.add(ClipRecord(clip_id=clip_id, audio=os.path.abspath(path), labels=(row["category"],),
                           split=f"fold{row['fold']}", fold=row["fold"], source_id=row["src_file"] or None),
                line=where)
    return out.build(vocab)
