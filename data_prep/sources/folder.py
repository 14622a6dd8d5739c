"""Any folder of audio plus a CSV that gives each file its weak labels.

Layout::

    <root>/<any tree of audio files>
    labels.csv                 path,labels[,split][,fold][,source_id][,clip_id]
                               dogs/a.wav,dog;bark
                               street/b.flac,"car,horn"

``path`` is relative to ``root`` (absolute paths are used as they are). ``labels`` are separated by
``;``, or by ``,`` inside a quoted field (an unquoted list in the last column is accepted too).
Optional columns: ``split`` (default ``"train"``), ``fold``, ``source_id`` and ``clip_id`` (default:
the path as written). The vocabulary is the sorted set of labels, or the given vocabulary file
(see ``read_vocab_file``), in which case other labels become ``unknown_label`` rejects.

Per-row problems become rejects: ``bad_csv_row`` (too few fields, empty path, a NUL or line break
in the id, no labels, bad split/fold), ``duplicate_id``, ``unknown_label``, ``missing_audio``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from data_prep.records import ClipRecord, LabelVocab, SourceListing
from data_prep.sources import (ListingBuilder, iter_csv_lines, label_display_name, read_vocab_file,
                               require_file)

__all__ = ["load_folder", "split_labels"]

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_OPTIONAL = ("split", "fold", "source_id", "clip_id")


def split_labels(text: str) -> tuple[str, ...]:
    """``"dog; bark"`` or ``"dog,bark"`` -> ``("dog", "bark")``; blanks and repeats dropped."""
    separator = ";" if ";" in text else ","
    labels: list[str] = []
    for label in text.split(separator):
        label = label.strip()
        if label and label not in labels:
            labels.append(label)
    return tuple(labels)


def _resolve_csv(root: Path, csv_path) -> Path:
    csv_path = Path(csv_path)
    if not csv_path.is_file() and not csv_path.is_absolute() and (root / csv_path).is_file():
        csv_path = root / csv_path
    return require_file(csv_path, "label CSV (path,labels)")


def load_folder(root: str | os.PathLike, csv_path: str | os.PathLike, *,
                vocab_path: str | os.PathLike | None = None, name: str = "folder") -> SourceListing:
    """List a folder of audio described by a ``path,labels`` CSV.

    Args:
        root: the folder the CSV's paths are relative to.
        csv_path: the CSV (tried as given, then relative to ``root``).
        vocab_path: optional vocabulary file fixing the label order; default: sorted labels.
        name: the listing (dataset) name.

    Raises:
        FileNotFoundError: no CSV or no ``root`` folder. ValueError: the header lacks ``path``
        or ``labels``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    csv_file = _resolve_csv(root, csv_path)
    out = ListingBuilder(name)

    lines = iter_csv_lines(csv_file, skipinitialspace=True)
    first = next(lines, None)
    header = [c.strip().lower() for c in (first[1] or [])] if first else []
    if "path" not in header or "labels" not in header:
        raise ValueError(f"{csv_file}: the header must have 'path' and 'labels' columns, got {header}")
    col = {c: header.index(c) for c in ("path", "labels", *_OPTIONAL) if c in header}
    labels_last = col["labels"] == len(header) - 1

    rows: list[tuple[str, dict]] = []
    for number, fields, raw in lines:
        where = f"line {number}"
        if fields is None:
            out.reject(None, csv_file, "bad_csv_row", f"{where}: does not parse as CSV: {raw[:200]!r}")
            continue
        rel = fields[col["path"]].strip() if len(fields) > col["path"] else ""
        clip_id = (fields[col["clip_id"]].strip() if "clip_id" in col and len(fields) > col["clip_id"]
                   else "") or (rel[2:] if rel.startswith("./") else rel)
        try:
            if len(fields) < len(header) - (1 if labels_last else 0) or (len(fields) > len(header)
                                                                          and not labels_last):
                raise ValueError(f"expected {len(header)} fields, got {len(fields)}")
            if not rel:
                raise ValueError("empty path")
            if any(c in clip_id for c in "\0\r\n"):  # ClipRecord refuses such an id (it becomes a shard key)
                raise ValueError(f"clip id {clip_id!r} contains a NUL or line break")
            label_text = ",".join(fields[col["labels"]:]) if labels_last else fields[col["labels"]]
            labels = split_labels(label_text)
            if not labels:
                raise ValueError("no labels")
            split = fields[col["split"]].strip() if "split" in col and len(fields) > col["split"] else ""
            split = split or "train"
            if not _SPLIT_RE.match(split):
                raise ValueError(f"split {split!r} must match [A-Za-z0-9_-]+")
            fold_text = fields[col["fold"]].strip() if "fold" in col and len(fields) > col["fold"] else ""
            fold = int(fold_text) if fold_text else None
            if fold is not None and fold < 1:
                raise ValueError(f"fold {fold} is not >= 1")
        except ValueError as e:
            out.reject(clip_id or None, csv_file, "bad_csv_row", f"{where}: {e}: {raw[:200]!r}")
            continue
        source_id = (fields[col["source_id"]].strip() or None) if "source_id" in col else None
        rows.append((where, {"clip_id": clip_id, "path": rel, "labels": labels, "split": split,
                             "fold": fold, "source_id": source_id}))

    if vocab_path is not None:
        vocab = read_vocab_file(vocab_path)
    else:
        ids = sorted({label for _, row in rows for label in row["labels"]})
        vocab = LabelVocab(ids=tuple(ids), names=tuple(label_display_name(i) for i in ids))

    for where, row in rows:
        if out.is_duplicate(row["clip_id"], csv_file, where):
            continue
        unknown = [label for label in row["labels"] if label not in vocab]
        if unknown:
            out.reject(row["clip_id"], csv_file, "unknown_label", f"{where}: label(s) {unknown} not in the vocabulary")
            continue
        path = root / row["path"]
        if not os.path.isfile(path):  # False, not OSError, for a name too long for the file system
            out.reject(row["clip_id"], path, "missing_audio", f"{where}: {row['path']} not found under {root}")
            continue
        out.add(ClipRecord(clip_id=row["clip_id"], audio=os.path.abspath(path), labels=row["labels"],
                           split=row["split"], fold=row["fold"], source_id=row["source_id"]), line=where)
    return out.build(vocab)
