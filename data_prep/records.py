"""Plain facts that cross module boundaries: clip records, label vocabularies, rejects, listings.

Every class here is a frozen dataclass that checks its invariants when it is built and
round-trips through ``to_dict``/``from_dict`` (JSON-safe dicts; no pickle in any stored format).
See ``docs/contracts.md`` for the contract these classes implement.

Example:
    >>> vocab = LabelVocab(ids=("dog", "rain"), names=("Dog", "Rain"))
    >>> rec = ClipRecord("1-100032-A-0", "/data/esc50/audio/1-100032-A-0.wav", ("dog",), "fold1",
    ...                  fold=1, source_id="100032")
    >>> vocab.index(rec.labels[0])
    0
    >>> ClipRecord.from_dict(rec.to_dict()) == rec
    True
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["ClipRecord", "LabelVocab", "Reject", "REJECT_REASONS", "SourceListing"]

REJECT_REASONS = ("unreadable", "empty", "silent", "non_finite", "too_short",
                  "unknown_label", "duplicate_id", "bad_csv_row", "missing_audio", "bad_sample_rate")

# A split name becomes part of shard file names (``shards/<split>-000000.tar``).
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _coerce_str_tuple(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):  # a bare string would silently become a tuple of characters
        raise TypeError(f"{what} must be a sequence of strings, not the string {value!r}")
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of strings, got {type(value).__name__}") from None
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{what} must hold non-empty strings, got {item!r}")
    return items


def _optional_seconds(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number or None, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be finite and >= 0, got {value!r}")
    return value


def _strict_from_dict(cls, data: dict) -> dict:
    """Keyword arguments for ``cls`` from ``data``; unknown keys are an error, not ignored."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}.from_dict needs a dict, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown keys {unknown} (known: {sorted(names)})")
    return dict(data)


@dataclass(frozen=True)
class ClipRecord:
    """One clip as a source lists it: where its audio is and its weak clip-level labels.

    Attributes:
        clip_id: unique within a dataset; becomes the (sanitised) shard key.
        audio: the audio location: a local path, an ``s3://`` URL or ``"synthetic:<task>/<index>"``.
        labels: weak clip-level label ids (AudioSet mids, ESC-50 category names, scene names).
            A list is accepted and stored as a tuple; duplicates are an error.
        split: ``"train"``, ``"eval"``, ``"fold1"``...; only ``[A-Za-z0-9_-]`` (it names shard files).
        fold: the official cross-validation fold (1-based) where the layout has one.
        source_id: the source recording; folds never split one.
        start_s, end_s: AudioSet segment bounds in the original video (informational).

    Example:
        >>> ClipRecord("a", "/x/a.wav", ["dog"], "train").labels
        ('dog',)
    """

    clip_id: str
    audio: str
    labels: tuple[str, ...]
    split: str
    fold: int | None = None
    source_id: str | None = None
    start_s: float | None = None
    end_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.clip_id, str) or not self.clip_id.strip():
            raise ValueError(f"clip_id must be a non-empty string, got {self.clip_id!r}")
        if any(c in self.clip_id for c in "\n\r\0"):
            raise ValueError(f"clip_id must not contain newlines or NUL, got {self.clip_id!r}")
        if not isinstance(self.audio, str) or not self.audio:
            raise ValueError(f"audio must be a non-empty string, got {self.audio!r}")
        labels = _coerce_str_tuple(self.labels, "labels")
        duplicated = sorted(label for label, n in Counter(labels).items() if n > 1)
        if duplicated:
            raise ValueError(f"clip {self.clip_id!r} lists labels {duplicated} more than once")
        object.__setattr__(self, "labels", labels)
        if not isinstance(self.split, str) or not _SPLIT_RE.match(self.split):
            raise ValueError(f"split must match [A-Za-z0-9_-]+ (it names shard files), got {self.split!r}")
        if self.fold is not None and (isinstance(self.fold, bool) or not isinstance(self.fold, int)
                                      or self.fold < 1):
            raise ValueError(f"fold must be a positive int or None, got {self.fold!r}")
        if self.source_id is not None and (not isinstance(self.source_id, str) or not self.source_id):
            raise ValueError(f"source_id must be a non-empty string or None, got {self.source_id!r}")
        start = _optional_seconds(self.start_s, "start_s")
        end = _optional_seconds(self.end_s, "end_s")
        if start is not None and end is not None and end < start:
            raise ValueError(f"end_s ({end}) is before start_s ({start}) for clip {self.clip_id!r}")
        object.__setattr__(self, "start_s", start)
        object.__setattr__(self, "end_s", end)

    def to_dict(self) -> dict:
        """A JSON-safe dict (labels as a list); ``from_dict`` inverts it."""
        return {"clip_id": self.clip_id, "audio": self.audio, "labels": list(self.labels),
                "split": self.split, "fold": self.fold, "source_id": self.source_id,
                "start_s": self.start_s, "end_s": self.end_s}

    @classmethod
    def from_dict(cls, data: dict) -> ClipRecord:
        """Inverse of ``to_dict``; optional keys may be absent, unknown keys raise ValueError."""
        return cls(**_strict_from_dict(cls, data))


@dataclass(frozen=True)
class LabelVocab:
    """An ordered label vocabulary: the position of an id is the model's output index.

    Example:
        >>> v = LabelVocab(ids=("/m/09x0r", "/m/0jbk"), names=("Speech", "Animal"))
        >>> v.index("/m/0jbk"), v.name("/m/0jbk"), len(v)
        (1, 'Animal', 2)
    """

    ids: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        ids = _coerce_str_tuple(self.ids, "vocabulary ids")
        names = _coerce_str_tuple(self.names, "vocabulary names")
        if len(ids) != len(names):
            raise ValueError(f"vocabulary has {len(ids)} ids but {len(names)} names")
        duplicated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if duplicated:
            raise ValueError(f"vocabulary ids must be unique; repeated: {duplicated[:10]}")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "names", names)
        # Not a dataclass field: excluded from eq/repr, rebuilt on every construction.
        object.__setattr__(self, "_position", {label_id: i for i, label_id in enumerate(ids)})

    def index(self, label_id: str) -> int:
        """The output index of ``label_id``; KeyError if it is not in the vocabulary."""
        try:
            return self._position[label_id]
        except KeyError:
            raise KeyError(label_id) from None

    def name(self, label_id: str) -> str:
        """The human-readable name of ``label_id``; KeyError if unknown."""
        return self.names[self.index(label_id)]

    def __contains__(self, label_id: object) -> bool:
        return label_id in self._position

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_ids(cls, ids) -> LabelVocab:
        """A vocabulary whose names are its ids."""
        ids = tuple(ids)
        return cls(ids=ids, names=ids)

    def to_dict(self) -> dict:
        return {"ids": list(self.ids), "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: dict) -> LabelVocab:
        return cls(**_strict_from_dict(cls, data))

    def to_entries(self) -> list[dict]:
        """The manifest's ``vocabulary`` form: ``[{"index": 0, "id": ..., "name": ...}, ...]``."""
        return [{"index": i, "id": label_id, "name": name}
                for i, (label_id, name) in enumerate(zip(self.ids, self.names))]

    @classmethod
    def from_entries(cls, entries: list[dict]) -> LabelVocab:
        """Inverse of ``to_entries``; the indices must be 0..n-1 in order."""
        for position, entry in enumerate(entries):
            if entry.get("index") != position:
                raise ValueError(f"vocabulary entry {position} has index {entry.get('index')!r}")
        return cls(ids=tuple(e["id"] for e in entries), names=tuple(e["name"] for e in entries))


@dataclass(frozen=True)
class Reject:
    """One bad input, skipped and reported; never fatal.

    Attributes:
        clip_id: the clip it would have been, when known (None for e.g. an unparseable row).
        path: the file at fault: the audio file, or the metadata file for a bad row.
        reason: one of ``REJECT_REASONS``.
        detail: a human-readable explanation (line number, offending value, ...).
    """

    clip_id: str | None
    path: str
    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.clip_id is not None and not isinstance(self.clip_id, str):
            raise TypeError(f"clip_id must be a string or None, got {self.clip_id!r}")
        if not isinstance(self.path, str):
            raise TypeError(f"path must be a string, got {self.path!r}")
        if self.reason not in REJECT_REASONS:
            raise ValueError(f"reason must be one of {REJECT_REASONS}, got {self.reason!r}")
        if not isinstance(self.detail, str):
            raise TypeError(f"detail must be a string, got {self.detail!r}")

    def to_dict(self) -> dict:
        return {"clip_id": self.clip_id, "path": self.path, "reason": self.reason, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict) -> Reject:
        return cls(**_strict_from_dict(cls, data))


@dataclass(frozen=True)
class SourceListing:
    """What a source returns: the dataset name, its vocabulary, the good records and the rejects.

    Invariants checked here: clip ids are unique and every record label is in the vocabulary
    (sources turn violations into ``Reject``s before building the listing).
    """

    name: str
    vocab: LabelVocab
    records: list[ClipRecord]
    rejects: list[Reject]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.vocab, LabelVocab):
            raise TypeError(f"vocab must be a LabelVocab, got {type(self.vocab).__name__}")
        object.__setattr__(self, "records", list(self.records))
        object.__setattr__(self, "rejects", list(self.rejects))
        seen: set[str] = set()
        for rec in self.records:
            if not isinstance(rec, ClipRecord):
                raise TypeError(f"records must hold ClipRecord, got {type(rec).__name__}")
            if rec.clip_id in seen:
                raise ValueError(f"clip id {rec.clip_id!r} appears twice in listing {self.name!r}")
            seen.add(rec.clip_id)
            for label in rec.labels:
                if label not in self.vocab:
                    raise ValueError(f"clip {rec.clip_id!r} has label {label!r} that is not in the vocabulary")
        for rej in self.rejects:
            if not isinstance(rej, Reject):
                raise TypeError(f"rejects must hold Reject, got {type(rej).__name__}")

    def rejects_by_reason(self) -> dict[str, int]:
        """Counts of rejects per reason, e.g. ``{"missing_audio": 3}``."""
        return dict(sorted(Counter(r.reason for r in self.rejects).items()))

    def split_counts(self) -> dict[str, int]:
        """Number of records per split."""
        return dict(sorted(Counter(r.split for r in self.records).items()))

    def to_dict(self) -> dict:
        return {"name": self.name, "vocab": self.vocab.to_dict(),
                "records": [r.to_dict() for r in self.records],
                "rejects": [r.to_dict() for r in self.rejects]}

    @classmethod
    def from_dict(cls, data: dict) -> SourceListing:
        data = _strict_from_dict(cls, data)
        return cls(name=data["name"], vocab=LabelVocab.from_dict(data["vocab"]),
                   records=[ClipRecord.from_dict(r) for r in data["records"]],
                   rejects=[Reject.from_dict(r) for r in data["rejects"]])
