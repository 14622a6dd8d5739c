"""Sources: dataset layouts -> ``SourceListing`` (clip records + vocabulary + rejects).

Each module exposes ``load_<name>(...) -> SourceListing``; ``SOURCES`` (``registry.py``) maps each
``weaksound prep`` source name to its typed spec, the one dispatch table of the prep job. Sources only read metadata (CSV/TXT)
and check that audio files exist; decoding and waveform validation happen later in the shard
tasks. A bad row never stops a source: it becomes a ``Reject`` with the file, a reason from
``REJECT_REASONS`` and a detail naming the line. Only a missing layout (no metadata file at all)
raises, with a message saying what was expected where.

    ===========  ===============================================================
    audioset     AudioSet CSV release + a folder of audio the user downloaded
    esc50        ESC-50 repository layout (audio/*.wav, meta/esc50.csv)
    dcase2016    TUT Acoustic Scenes 2016 development layout
    folder       any folder of audio + a ``path,labels`` CSV
    synthetic    the embedded default corpus, generated deterministically
    ===========  ===============================================================

The helpers below are shared by the source modules.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from data_prep.records import ClipRecord, LabelVocab, Reject, SourceListing

# Extensions treated as audio when a folder is indexed. Decodability is checked later
# (libsndfile for most, FFmpeg for m4a/aac/mp4/webm); anything else in the folder is ignored.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm",
    ".mkv", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".wma",
})


class ListingBuilder:
    """Collects records and rejects for one source; rejects duplicate clip ids (first one wins).

    Example:
        >>> b = ListingBuilder("demo")
        >>> b.add(ClipRecord("a", "/a.wav", ("x",), "train"), line="meta.csv:2")
        True
        >>> b.add(ClipRecord("a", "/a2.wav", ("x",), "train"), line="meta.csv:3")
        False
        >>> [r.reason for r in b.rejects]
        ['duplicate_id']
    """

    def __init__(self, name: str):
        self.name = name
        self.records: list[ClipRecord] = []
        self.rejects: list[Reject] = []
        self._first_seen: dict[str, str] = {}

    def reject(self, clip_id: str | None, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.rejects.append(Reject(clip_id, str(path), reason, detail))

    def is_duplicate(self, clip_id: str, path: str | os.PathLike, line: str) -> bool:
        """True (and a ``duplicate_id`` reject recorded) if a record with ``clip_id`` was already added.

        Only accepted records count: a row rejected for another reason does not block a later,
        valid row with the same id.
        """
        first = self._first_seen.get(clip_id)
        if first is None:
            return False
        self.reject(clip_id, path, "duplicate_id", f"{line}: clip id {clip_id!r} already listed at {first}")
        return True

    def add(self, record: ClipRecord, line: str) -> bool:
        """Append ``record`` unless its id is a duplicate; returns whether it was added."""
        if self.is_duplicate(record.clip_id, record.audio, line):
            return False
        self._first_seen[record.clip_id] = line
        self.records.append(record)
        return True

    def build(self, vocab: LabelVocab) -> SourceListing:
        return SourceListing(name=self.name, vocab=vocab, records=self.records, rejects=self.rejects)


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file; otherwise FileNotFoundError explaining the expected layout."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: expected a file at {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: expected a folder at {path}")
    return path


def iter_csv_lines(path: Path, *, skip_comments: bool = False, **reader_kwargs
                   ) -> Iterator[tuple[int, list[str] | None, str]]:
    """Yield ``(line_number, fields, raw_line)`` for every non-blank line of a CSV file.

    Each physical line is parsed on its own, so one broken line (an unbalanced quote, a NUL
    byte) yields ``fields=None`` for that line only and never derails the rest of the file.
    Quoted fields spanning several lines are therefore not supported (none of the supported
    layouts uses them). Undecodable bytes are replaced, never fatal. ``skip_comments`` drops
    lines starting with ``#`` (the AudioSet header).
    """
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or (skip_comments and line.lstrip().startswith("#")):
                continue
            try:
                rows = list(csv.reader([line], strict=True, **reader_kwargs))
            except csv.Error:
                yield number, None, line
                continue
            yield number, (rows[0] if rows else []), line


def index_audio_files(folder: Path) -> dict[str, list[str]]:
    """Map each audio file stem under ``folder`` (recursively) to its paths, sorted.

    The folder is walked once, in sorted order, so lookups are O(1) per row and the result is
    deterministic. Hidden files and files whose extension is not in ``AUDIO_EXTENSIONS``
    (partial downloads, notes, CSVs) are skipped.
    """
    by_stem: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            if ext.lower() in AUDIO_EXTENSIONS:
                by_stem.setdefault(stem, []).append(os.path.join(dirpath, name))
    return by_stem


def label_display_name(label_id: str) -> str:
    """A readable name for an id such as ``chirping_birds`` -> ``Chirping birds``."""
    text = label_id.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def read_vocab_file(path: Path) -> LabelVocab:
    """Read a vocabulary file: one label per line (``id`` or ``id<TAB>name``), or a CSV with a
    header that has ``id`` (or ``mid``) and optionally ``name`` (or ``display_name``) columns,
    e.g. AudioSet's ``class_labels_indices.csv``. Blank lines and ``#`` comments are skipped.
    """
    path = require_file(Path(path), "vocabulary file")
    lines = [(n, fields) for n, fields, _ in iter_csv_lines(path, skip_comments=True)]
    if not lines:
        raise ValueError(f"vocabulary file {path} lists no labels")
    first = [c.strip().lower() for c in (lines[0][1] or [])]
    ids: list[str] = []
    names: list[str] = []
    id_col = next((first.index(c) for c in ("id", "mid", "label") if c in first), None)
    if path.suffix.lower() == ".csv" and id_col is not None:
        name_col = next((first.index(c) for c in ("name", "display_name") if c in first), id_col)
        for number, fields in lines[1:]:
            if fields is None or len(fields) <= max(id_col, name_col) or not fields[id_col].strip():
                raise ValueError(f"{path}:{number}: cannot read a label from this line")
            ids.append(fields[id_col].strip())
            names.append(fields[name_col].strip() or fields[id_col].strip())
    else:
        with open(path, encoding="utf-8-sig") as f:
            for raw in f:
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                label_id, _, name = line.partition("\t")
                ids.append(label_id.strip())
                names.append(name.strip() or label_display_name(label_id.strip()))
    return LabelVocab(ids=tuple(ids), names=tuple(names))


# Imported last: the modules below use the helpers above (``from data_prep.sources import ...``).
from data_prep.sources import audioset, dcase2016, esc50, folder, synthetic  # noqa: E402
from data_prep.sources.audioset import load_audioset  # noqa: E402
from data_prep.sources.dcase2016 import load_dcase2016  # noqa: E402
from data_prep.sources.esc50 import load_esc50  # noqa: E402
from data_prep.sources.folder import load_folder  # noqa: E402
from data_prep.sources.synthetic import SYNTHETIC_TASKS, load_synthetic, render_synthetic  # noqa: E402

from data_prep.sources.registry import SOURCES, SourceSpec  # noqa: E402  (the one registry)

__all__ = ["AUDIO_EXTENSIONS", "SOURCES", "SYNTHETIC_TASKS", "ListingBuilder", "index_audio_files",
           "SourceSpec", "iter_csv_lines", "label_display_name", "load_audioset", "load_dcase2016", "load_esc50",
           "load_folder", "load_synthetic", "read_vocab_file", "render_synthetic",
           "audioset", "dcase2016", "esc50", "folder", "synthetic"]
