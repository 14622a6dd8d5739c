"""TUT Acoustic Scenes 2016, development set: 15 scenes, 30 s segments, 4 official folds.

TUT Acoustic Scenes 2016 (Mesaros, Heittola, Virtanen, EUSIPCO 2016; DCASE 2016 task 1).
Expected layout of the development package::

    <root>/audio/b020_90_100.wav ...
    <root>/meta.txt                              audio/b020_90_100.wav<TAB>beach[<TAB>...]
    <root>/evaluation_setup/fold{1..4}_train.txt     audio/...<TAB>scene
    <root>/evaluation_setup/fold{1..4}_evaluate.txt  audio/...<TAB>scene
    <root>/evaluation_setup/fold{1..4}_test.txt      audio/...

A clip's fold is the fold in whose *evaluate* list (or, when a fold has no evaluate list, *test*
list) it appears; records get ``split = "fold<n>"`` and ``fold = n``. ``source_id`` is the
recording location, the part of the file stem before the first ``_`` (``b020``); the official
folds keep each location in one fold. Labels are the scene names from ``meta.txt``; the
vocabulary is their sorted set.

Per-row problems become rejects: ``bad_csv_row`` (a ``meta.txt`` line without a scene, or a clip
in no fold's evaluate/test list, or in two of them), ``duplicate_id``, ``unknown_label`` (only with
an explicit ``vocab``), ``missing_audio``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from data_prep.records import ClipRecord, LabelVocab, SourceListing
from data_prep.sources import ListingBuilder, label_display_name, require_dir, require_file

__all__ = ["load_dcase2016", "read_fold_assignment"]

_FOLD_FILE_RE = re.compile(r"^fold(\d+)_(train|evaluate|test)\.txt$")


def _tab_lines(path: Path):
    """``(line_number, columns)`` for each non-blank line of a tab-separated text file."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if line.strip():
                yield number, [c.strip() for c in line.split("\t")]


def _normalise(name: str) -> str:
    """``./audio\\x.wav`` -> ``audio/x.wav`` (lists written on Windows use backslashes)."""
    name = name.replace("\\", "/")
    return name[2:] if name.startswith("./") else name


def _basename(name: str) -> str:
    """Lists are matched by file name: TUT file names are unique, prefixes vary between lists."""
    return name.rsplit("/", 1)[-1]


def read_fold_assignment(setup_dir: str | os.PathLike) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Map each clip (by file name) to the fold that evaluates it.

    Returns ``(fold_of, conflicts)``: ``conflicts`` holds clips listed for evaluation in more than
    one fold (they are left out of ``fold_of``).
    """
    setup_dir = require_dir(Path(setup_dir), "DCASE evaluation_setup folder")
    lists: dict[int, dict[str, Path]] = {}
    for path in sorted(setup_dir.iterdir()):
        m = _FOLD_FILE_RE.match(path.name)
        if m:
            lists.setdefault(int(m.group(1)), {})[m.group(2)] = path
    folds_with_lists = {n: kinds for n, kinds in lists.items() if "evaluate" in kinds or "test" in kinds}
    if not folds_with_lists:
        raise FileNotFoundError(f"no fold<n>_evaluate.txt or fold<n>_test.txt in {setup_dir}")
    seen: dict[str, list[int]] = {}
    for n in sorted(folds_with_lists):
        kinds = folds_with_lists[n]
        path = kinds.get("evaluate", kinds.get("test"))
        for _, cols in _tab_lines(path):
            folds = seen.setdefault(_basename(_normalise(cols[0])), [])
            if n not in folds:
                folds.append(n)
    fold_of = {name: folds[0] for name, folds in seen.items() if len(folds) == 1}
    conflicts = {name: folds for name, folds in seen.items() if len(folds) > 1}
    return fold_of, conflicts


def load_dcase2016(root: str | os.PathLike, *, vocab: LabelVocab | None = None) -> SourceListing:
    """List the TUT Acoustic Scenes 2016 development layout under ``root``.

    Args:
        root: the dataset folder (``audio/``, ``meta.txt``, ``evaluation_setup/``).
        vocab: a fixed scene vocabulary; other scenes become ``unknown_label`` rejects.
            Default: the sorted set of scenes in ``meta.txt``.

    Raises:
        FileNotFoundError: no ``meta.txt`` or no ``evaluation_setup`` fold lists.
    """
    root = Path(root)
    meta = require_file(root / "meta.txt", "DCASE 2016 meta.txt")
    fold_of, conflicts = read_fold_assignment(root / "evaluation_setup")
    out = ListingBuilder("dcase2016")

    rows: list[tuple[str, str, str, str | None]] = []
    for number, cols in _tab_lines(meta):
        where = f"line {number}"
        name = _normalise(cols[0])
        clip_id = Path(name).stem or None
        if len(cols) < 2 or not cols[0] or not cols[1]:
            out.reject(clip_id, meta, "bad_csv_row", f"{where}: expected file<TAB>scene, got {cols!r}")
            continue
        location = cols[2] if len(cols) > 2 and cols[2] else Path(name).stem.split("_", 1)[0]
        rows.append((where, name, cols[1], location))
    if vocab is None:
        scenes = sorted({scene for _, _, scene, _ in rows})
        vocab = LabelVocab(ids=tuple(scenes), names=tuple(label_display_name(s) for s in scenes))

    for where, name, scene, location in rows:
        clip_id = Path(name).stem
        if out.is_duplicate(clip_id, meta, where):
            continue
        if scene not in vocab:
            out.reject(clip_id, meta, "unknown_label", f"{where}: scene {scene!r} is not in the vocabulary")
            continue
        if _basename(name) in conflicts:
            out.reject(clip_id, meta, "bad_csv_row",
                       f"{where}: {name} is listed for evaluation in folds {conflicts[_basename(name)]}")
            continue
        fold = fold_of.get(_basename(name))
        if fold is None:
            out.reject(clip_id, meta, "bad_csv_row",
                       f"{where}: {name} is in no evaluation_setup/fold<n>_evaluate.txt (or _test.txt)")
            continue
        path = root / name
        if not path.is_file() and (root / "audio" / Path(name).name).is_file():
            path = root / "audio" / Path(name).name  # meta.txt written without the audio/ prefix
        if not path.is_file():
            out.reject(clip_id, path, "missing_audio", f"{where}: {name} not found under {root}")
            continue
        out.add(ClipRecord(clip_id=clip_id, audio=os.path.abspath(path), labels=(scene,),
                           split=f"fold{fold}", fold=fold, source_id=location), line=where)
    return out.build(vocab)
