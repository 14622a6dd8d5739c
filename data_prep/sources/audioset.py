"""AudioSet: the CSV release plus a folder of audio the user downloaded themselves.

AudioSet (Gemmeke et al., ICASSP 2017) is published as metadata only (CC BY 4.0); the audio is
YouTube and has to be fetched by the user. Expected layout (nothing is downloaded here)::

    <root>/class_labels_indices.csv        index,mid,display_name   (527 rows, one header line)
    <root>/balanced_train_segments.csv     three "#" header lines, then rows
    <root>/unbalanced_train_segments.csv       YTID, start_seconds, end_seconds, "mid1,mid2,..."
    <root>/eval_segments.csv
    <audio folder>/...                     any tree of audio files, any decodable extension

A row's audio is found by file stem, looked up in an index of the audio folder built once:
``YTID``, ``Y<YTID>`` (the balanced/eval archives that circulate), or ``YTID_<start>`` /
``YTID_<start>_<end>`` with the times written as integers or floats (``abc_30``,
``abc_30.000_40.000``). Without ``audio_dir`` the first existing folder of
``<root>/audio/<split>``, ``<root>/<split>``, ``<root>/audio``, ``<root>`` is used.

Per-row problems become rejects: ``bad_csv_row`` (cannot parse), ``duplicate_id`` (YTID listed
again; the first row wins), ``unknown_label`` (a mid not in ``class_labels_indices.csv``; the whole
row is rejected rather than silently losing a positive label), ``missing_audio`` (no file found).

Example:
    >>> listing = load_audioset("/data/audioset", "balanced_train", audio_dir="/data/as_audio")  # doctest: +SKIP
    >>> listing.records[0].split                                                             # doctest: +SKIP
    'train'
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

from data_prep.records import ClipRecord, LabelVocab, SourceListing
from data_prep.sources import ListingBuilder, index_audio_files, iter_csv_lines, require_file

__all__ = ["AUDIOSET_SPLITS", "load_audioset", "read_class_labels", "AudioIndex"]

# split argument -> ClipRecord.split
AUDIOSET_SPLITS = {"balanced_train": "train", "unbalanced_train": "train", "eval": "eval"}

_NUMBER_RE = re.compile(r"^\d+(?:\.\d*)?$")


def read_class_labels(path: str | os.PathLike) -> LabelVocab:
    """The vocabulary from ``class_labels_indices.csv``, ordered by its ``index`` column.

    Unlike segment rows, a bad line here raises ValueError: the vocabulary fixes the model's
    output indices, so silently dropping a class would shift every index after it.
    """
    path = require_file(Path(path), "AudioSet class_labels_indices.csv")
    rows = list(iter_csv_lines(path))
    if not rows or rows[0][1] is None:
        raise ValueError(f"{path} is empty or its header does not parse")
    header = [c.strip().lower() for c in rows[0][1]]
    try:
        i_col, m_col, n_col = header.index("index"), header.index("mid"), header.index("display_name")
    except ValueError:
        raise ValueError(f"{path}: header must have index,mid,display_name columns, got {rows[0][1]}") from None
    entries: list[tuple[int, str, str]] = []
    for number, fields, _ in rows[1:]:
        if fields is None or len(fields) <= max(i_col, m_col, n_col):
            raise ValueError(f"{path}:{number}: expected index,mid,display_name")
        try:
            index = int(fields[i_col])
        except ValueError:
            raise ValueError(f"{path}:{number}: index {fields[i_col]!r} is not an integer") from None
        mid = fields[m_col].strip()
        if not mid:
            raise ValueError(f"{path}:{number}: empty mid")
        entries.append((index, mid, fields[n_col].strip() or mid))
    entries.sort()
    if [e[0] for e in entries] != list(range(len(entries))):
        raise ValueError(f"{path}: the index column must hold 0..{len(entries) - 1} exactly once each")
    return LabelVocab(ids=tuple(e[1] for e in entries), names=tuple(e[2] for e in entries))


def _millis(text: str | float) -> int:
    return int(round(float(text) * 1000))


class AudioIndex:
    """File stems of an audio folder, indexed once for YTID lookups.

    Example:
        >>> idx = AudioIndex("/data/as_audio")              # doctest: +SKIP
        >>> idx.find("abc", 30.0, 40.0)                     # doctest: +SKIP
        '/data/as_audio/part00/abc_30.000_40.000.flac'
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.num_files = 0
        self._exact: dict[str, str] = {}
        self._span: dict[tuple[str, int, int], str] = {}
        self._start: dict[tuple[str, int], str] = {}
        for stem, paths in index_audio_files(self.folder).items():
            self.num_files += len(paths)
            path = paths[0]  # several extensions for one stem: the first in sorted order
            self._exact[stem] = path
            parts = stem.rsplit("_", 2)
            if len(parts) == 3 and _NUMBER_RE.match(parts[1]) and _NUMBER_RE.match(parts[2]):
                self._span.setdefault((parts[0], _millis(parts[1]), _millis(parts[2])), path)
                self._start.setdefault((parts[0], _millis(parts[1])), path)
            head, _, tail = stem.rpartition("_")
            if head and _NUMBER_RE.match(tail):
                self._start.setdefault((head, _millis(tail)), path)

    def find(self, ytid: str, start_s: float, end_s: float) -> str | None:
        """The audio path for a segment, or None. Exact stems win over time-stamped ones."""
        names = (ytid, "Y" + ytid)
        for name in names:
            if name in self._exact:
                return self._exact[name]
        start, end = _millis(start_s), _millis(end_s)
        for name in names:
            if (name, start, end) in self._span:
                return self._span[(name, start, end)]
        for name in names:
            if (name, start) in self._start:
                return self._start[(name, start)]
        return None


def _resolve_segments(root: Path, split: str) -> Path:
    candidates = [Path(split), root / split]
    name = split[:-4] if split.endswith(".csv") else split
    if not name.endswith("_segments"):
        name += "_segments"
    candidates.append(root / f"{name}.csv")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"AudioSet segments CSV for split {split!r} not found: looked for {candidates[-1]} "
        f"(splits: {', '.join(AUDIOSET_SPLITS)}; a file name or path is accepted too)")


def _split_field(stem: str) -> str:
    if stem in AUDIOSET_SPLITS:
        return AUDIOSET_SPLITS[stem]
    if stem.endswith("train"):
        return "train"
    if stem.endswith("eval"):
        return "eval"
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "train"


def _resolve_audio_dir(root: Path, stem: str, audio_dir) -> Path:
    if audio_dir is not None:
        audio_dir = Path(audio_dir)
        if not audio_dir.is_dir():
            raise FileNotFoundError(f"AudioSet audio folder not found: {audio_dir}")
        return audio_dir
    for candidate in (root / "audio" / stem, root / stem, root / "audio", root):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"AudioSet root folder not found: {root}")


def _parse_row(fields: list[str]) -> tuple[str, float, float, tuple[str, ...]]:
    """``YTID, start, end, "mid1,mid2"`` -> parts; ValueError with the reason otherwise."""
    if len(fields) < 4:
        raise ValueError(f"expected 4 fields (YTID, start, end, labels), got {len(fields)}")
    ytid = fields[0].strip()
    if not ytid or any(c.isspace() for c in ytid):
        raise ValueError(f"bad YTID {fields[0]!r}")
    try:
        start, end = float(fields[1]), float(fields[2])
    except ValueError:
        raise ValueError(f"start/end {fields[1]!r}, {fields[2]!r} are not numbers") from None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise ValueError(f"segment {start}..{end} s is not a valid interval")
    # Labels are one quoted field; tolerate an unquoted list spread over trailing fields.
    mids: list[str] = []
    for mid in ",".join(fields[3:]).split(","):
        mid = mid.strip().strip('"').strip()
        if mid and mid not in mids:
            mids.append(mid)
    if not mids:
        raise ValueError("no labels")
    return ytid, start, end, tuple(mids)


def load_audioset(root: str | os.PathLike, split: str, audio_dir: str | os.PathLike | None = None, *,
                  labels_csv: str | os.PathLike | None = None) -> SourceListing:
    """List one AudioSet split.

    Args:
        root: folder with ``class_labels_indices.csv`` and the ``*_segments.csv`` files.
        split: ``balanced_train``, ``unbalanced_train`` or ``eval``; a segments file name or path
            (e.g. ``eval_segments.csv``) is accepted too.
        audio_dir: folder (searched recursively) holding the downloaded audio. Default: see module doc.
        labels_csv: vocabulary file, default ``<root>/class_labels_indices.csv``.

    Returns:
        A ``SourceListing`` named ``audioset-<split>``; record ``split`` is ``"train"`` for the
        training CSVs and ``"eval"`` for the eval CSV; ``clip_id`` is the YTID.

    Raises:
        FileNotFoundError: when the vocabulary CSV, the segments CSV or the audio folder is missing.
    """
    root = Path(root)
    vocab = read_class_labels(labels_csv if labels_csv is not None else root / "class_labels_indices.csv")
    segments = _resolve_segments(root, split)
    stem = segments.stem[: -len("_segments")] if segments.stem.endswith("_segments") else segments.stem
    split_field = _split_field(stem)
    folder = _resolve_audio_dir(root, stem, audio_dir)
    index = AudioIndex(folder)

    out = ListingBuilder(f"audioset-{stem}")
    for number, fields, raw in iter_csv_lines(segments, skip_comments=True, skipinitialspace=True):
        where = f"line {number}"
        if fields is None:
            out.reject(None, segments, "bad_csv_row", f"{where}: does not parse as CSV: {raw[:200]!r}")
            continue
        try:
            ytid, start, end, mids = _parse_row(fields)
        except ValueError as e:
            clip_id = fields[0].strip() if fields and fields[0].strip() else None
            out.reject(clip_id, segments, "bad_csv_row", f"{where}: {e}: {raw[:200]!r}")
            continue
        if out.is_duplicate(ytid, segments, where):
            continue
        unknown = [m for m in mids if m not in vocab]
        if unknown:
            out.reject(ytid, segments, "unknown_label",
                       f"{where}: label(s) {unknown} not in the class labels CSV")
            continue
        path = index.find(ytid, start, end)
        if path is None:
            out.reject(ytid, folder / ytid, "missing_audio",
                       f"{where}: no audio named {ytid}.*, Y{ytid}.* or {ytid}_<start>[_<end>].* "
                       f"under {folder}")
            continue
        out.add(ClipRecord(clip_id=ytid, audio=os.path.abspath(path), labels=mids, split=split_field,
                           start_s=start, end_s=end), line=where)
    return out.build(vocab)
