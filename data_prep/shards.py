"""WebDataset tar shards: a deterministic plan, a byte-reproducible writer and a streaming reader.

One shard task = one Ray task. It decodes and validates its clips, writes one tar (or several
"parts" when the byte limit is reached) and then, last, a small index JSON. The index is the
task's commit record: a task whose index exists and whose parts all still have the size and
sha256 it records is done, so a re-run after a crash redoes only the missing (or damaged) tasks,
and the manifest lists exactly the parts the indexes name (no duplicates).

Shards are not trusted when read back: ``iter_shard`` accepts only regular members named
``<key>.flac`` / ``<key>.json`` under a size cap, each once, with label indices in range, and
checks the part's size, sample count and sha256 when the manifest's entry is given.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np

from data_prep import audio
from runtime import storage
from data_prep.records import ClipRecord, LabelVocab, Reject

INDEX_FORMAT = "weaksound-shard-index/1"
# The reader's caps per tar member: 600 s of 16-bit mono FLAC at 192 kHz is 230 MB uncompressed.
MAX_AUDIO_MEMBER_BYTES = 256 * 2**20
MAX_META_MEMBER_BYTES = 2**20
_MEMBER_NAME = re.compile(r"^([A-Za-z0-9_-]+)\.(flac|json)$")


class ShardError(ValueError):
    """A shard file that is damaged or was not written by this project's writer."""


@dataclass(frozen=True)
class ShardConfig:
    sample_rate: int = 44100                  # the paper's rate; every clip is resampled to it
    max_clips_per_shard: int = 1000           # ~0.5-1 GB of 10 s clips at 44.1 kHz FLAC
    max_shard_bytes: int = 512 * 2**20        # a task rolls over to a new part beyond this
    limits: audio.ValidationLimits = field(default_factory=audio.ValidationLimits)


@dataclass(frozen=True)
class ShardTask:
    """The clips of one shard, in write order. ``name`` is e.g. 'shards/train-000003'."""
    name: str
    split: str
    records: tuple[ClipRecord, ...]

    def fingerprint(self, cfg: ShardConfig) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(_config_dict(cfg), sort_keys=True).encode())
        for r in self.records:
            h.update(json.dumps(r.to_dict(), sort_keys=True).encode())
        return h.hexdigest()


@dataclass(frozen=True)
class ShardSample:
    key: str
    audio: np.ndarray
    meta: dict


def _config_dict(cfg: ShardConfig) -> dict:
    d = asdict(cfg)
    d.pop("max_shard_bytes")  # affects only how parts are cut, recorded in each index anyway
    return d


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sanitize_key(clip_id: str) -> str:
    """WebDataset splits a member name at its first dot, so keys keep only [A-Za-z0-9_-]."""
    return _KEY_UNSAFE.sub("_", clip_id) or "_"


def _order_key(record: ClipRecord) -> str:
    # A hash order mixes classes and folds inside every shard (dataset layouts list files sorted by
    # class) while staying independent of listing order and of the machine: same input, same shards.
    return hashlib.sha1(record.clip_id.encode()).hexdigest()


def plan_shards(records: list[ClipRecord], max_clips_per_shard: int) -> list[ShardTask]:
    """Deterministic assignment of clips to shards: per split, hash-ordered, fixed-size chunks."""
    if max_clips_per_shard < 1:
        raise ValueError("max_clips_per_shard must be >= 1")
    by_split: dict[str, list[ClipRecord]] = {}
    for r in records:
        by_split.setdefault(r.split, []).append(r)
    tasks = []
    for split in sorted(by_split):
        ordered = sorted(by_split[split], key=_order_key)
        for i in range(0, len(ordered), max_clips_per_shard):
            tasks.append(ShardTask(f"shards/{split}-{i // max_clips_per_shard:06d}", split,
                                   tuple(ordered[i:i + max_clips_per_shard])))
    return tasks


def load_audio(location: str, preferred_rate: int) -> tuple[np.ndarray, int]:
    """(samples (frames, 1), rate) of a record's audio location, bounded by ``ValidationLimits()``."""
    mono, rate, _ = load_mono(location, preferred_rate)
    return mono[:, None], rate


def load_mono(location: str, preferred_rate: int, limits: audio.ValidationLimits | None = None
              ) -> tuple[np.ndarray, int, bool]:
    """(mono float32 samples, rate, truncated) of a record's audio location.

    The file is streamed, not read whole: its header is checked against ``limits`` (default
    ``ValidationLimits()``) and only the frames kept are decoded (``audio.read_mono``).
    Synthetic clips are rendered directly at ``preferred_rate`` (no resampling needed).
    """
    limits = limits or audio.ValidationLimits()
    if location.startswith("synthetic:"):
        from data_prep.sources.synthetic import render_synthetic

        return audio.to_mono(render_synthetic(location, preferred_rate)), preferred_rate, False
    try:
        with storage.open_url(location, "rb") as f:
            return audio.read_mono(f, location, limits)
    except FileNotFoundError:
        raise audio.AudioError("missing_audio", f"{location} does not exist") from None
    except OSError as e:
        raise audio.AudioError("unreadable", f"{location}: {e}") from None


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0          # fixed metadata: the same clips give byte-identical tars
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class _PartWriter:
    def __init__(self, name: str, num_classes: int):
        self.name = name
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.USTAR_FORMAT)
        self.samples: list[dict] = []
        self.class_counts = np.zeros(num_classes, dtype=np.int64)
        self.duration_s = 0.0

    def add(self, key: str, flac: bytes, meta: dict) -> None:
        _tar_member(self.tar, f"{key}.flac", flac)
        _tar_member(self.tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        self.samples.append({"key": key, "duration_s": meta["duration_s"], "labels": meta["labels"]})
        for i in meta["labels"]:
            self.class_counts[i] += 1
        self.duration_s += meta["duration_s"]

    def close(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


@dataclass
class ShardResult:
    name: str
    parts: list[dict]
    rejects: list[dict]
    clips: int
    truncated: int
    bytes: int
    seconds: float
    resumed: bool = False


def build_shard(task: ShardTask, vocab: LabelVocab, out_url: str, cfg: ShardConfig) -> ShardResult:
    """Decode, validate and write one shard task; idempotent (a finished task is read back)."""
    index_url = storage.join(out_url, task.name + ".index.json")
    fingerprint = task.fingerprint(cfg)
    if storage.exists(index_url):
        index = json.loads(storage.read_text(index_url))
        if index.get("fingerprint") != fingerprint:
            raise RuntimeError(
                f"{index_url} was written from different input or settings; "
                "write to a new --out folder (or delete the old one) instead of mixing two datasets")
        damage = [problem for part in index["parts"] if (problem := part_problem(out_url, part))]
        if not damage:
            return _result_from_index(index, resumed=True)
        # A committed task whose parts were deleted or damaged since: redo it (same bytes as before).
        logging.getLogger(__name__).warning("redoing shard task %s: %s", task.name, "; ".join(damage))

    started = time.perf_counter()
    rejects: list[dict] = []
    parts: list[_PartWriter] = []
    written: list[dict] = []
    truncated = 0
    used_keys: set[str] = set()
    current: _PartWriter | None = None
    part_bytes = 0
    for rec in task.records:
        try:
            raw, rate, cut_at_read = load_mono(rec.audio, cfg.sample_rate, cfg.limits)
            wave, was_truncated = audio.prepare_waveform(raw, rate, cfg.sample_rate, cfg.limits, rec.audio)
            was_truncated = was_truncated or cut_at_read
            labels = [vocab.index(label) for label in rec.labels]
        except audio.AudioError as e:
            rejects.append(Reject(rec.clip_id, rec.audio, e.reason, e.detail).to_dict())
            continue
        except KeyError as e:
            rejects.append(Reject(rec.clip_id, rec.audio, "unknown_label", f"label {e} not in vocabulary").to_dict())
            continue
        truncated += was_truncated
        flac = audio.encode_flac(wave, cfg.sample_rate)
        key = sanitize_key(rec.clip_id)
        if key in used_keys:
            n = 1
            while f"{key}_{n}" in used_keys:
                n += 1
            key = f"{key}_{n}"
        used_keys.add(key)
        meta = {
            "clip_id": rec.clip_id, "labels": labels, "label_ids": list(rec.labels),
            "duration_s": round(wave.size / cfg.sample_rate, 6), "num_samples": int(wave.size),
            "sample_rate": cfg.sample_rate, "split": rec.split, "fold": rec.fold,
            "source_id": rec.source_id, "audio": rec.audio,
        }
        if current is None or (current.samples and part_bytes + len(flac) > cfg.max_shard_bytes):
            if current is not None:
                written.append(_flush_part(current, out_url))
            suffix = "" if not parts else f"-p{len(parts)}"
            current = _PartWriter(task.name + suffix + ".tar", len(vocab.ids))
            parts.append(current)
            part_bytes = 0
        current.add(key, flac, meta)
        part_bytes += len(flac) + 2048
    if current is not None:
        written.append(_flush_part(current, out_url))
    index = {
        "format": INDEX_FORMAT, "name": task.name, "split": task.split, "fingerprint": fingerprint,
        "parts": written, "rejects": rejects, "truncated": truncated,
    }  # no timings here: the index must be byte-reproducible
    storage.write_text_atomic(index_url, json.dumps(index, sort_keys=True))  # commit record, last
    result = _result_from_index(index, resumed=False)
    result.seconds = time.perf_counter() - started
    return result


def _flush_part(part: _PartWriter, out_url: str) -> dict:
    data = part.close()
    storage.write_bytes_atomic(storage.join(out_url, part.name), data)
    return {"name": part.name, "num_samples": len(part.samples), "duration_s": round(part.duration_s, 6),
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "class_counts": part.class_counts.tolist(), "samples": part.samples}


def part_problem(out_url: str, part: dict) -> str | None:
    """Why a part an index (or manifest) lists is not intact under ``out_url``, or None when it is."""
    url = storage.join(out_url, part["name"])
    try:
        size = storage.size(url)
    except FileNotFoundError:
        return f"{url} is missing"
    if size != part["bytes"]:
        return f"{url} has {size} bytes, the index says {part['bytes']}"
    if "sha256" not in part:
        return f"{part['name']}: the index records no sha256 (written by an older version)"
    digest = storage.sha256(url)
    if digest != part["sha256"]:
        return f"{url} has sha256 {digest[:12]}..., the index says {part['sha256'][:12]}..."
    return None


def _result_from_index(index: dict, resumed: bool) -> ShardResult:
    return ShardResult(
        name=index["name"], parts=index["parts"], rejects=index["rejects"],
        clips=sum(p["num_samples"] for p in index["parts"]), truncated=index.get("truncated", 0),
        bytes=sum(p["bytes"] for p in index["parts"]), seconds=0.0, resumed=resumed)


class _HashingReader:
    """A read-only file wrapper that counts every byte read through it and hashes them when asked
    (only a manifest check needs the sha256; training reads skip the cost)."""

    def __init__(self, f, hashing: bool = True):
        self.f, self.hash, self.count, self.hashing = f, hashlib.sha256(), 0, hashing

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if self.hashing:
            self.hash.update(data)
        self.count += len(data)
        return data


def _check_member(url: str, member: tarfile.TarInfo, seen: set[str]) -> tuple[str, str]:
    """(key, ext) of a member the writer could have written; raises ShardError for anything else."""
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse():
        raise ShardError(f"{url}: member {member.name!r} is not a regular file (tar type {member.type!r}); "
                         "shards hold only regular files")
    match = _MEMBER_NAME.match(member.name)
    if match is None:
        raise ShardError(f"{url}: unexpected member name {member.name!r} (expected <key>.flac / <key>.json)")
    cap = MAX_AUDIO_MEMBER_BYTES if match[2] == "flac" else MAX_META_MEMBER_BYTES
    if member.size > cap:
        raise ShardError(f"{url}: member {member.name!r} declares {member.size} bytes (cap {cap})")
    if member.name in seen:
        raise ShardError(f"{url}: member {member.name!r} appears twice")
    seen.add(member.name)
    return match[1], match[2]


def _check_meta(url: str, key: str, raw: bytes, num_classes: int | None) -> dict:
    try:
        meta = json.loads(raw)
    except ValueError as error:
        raise ShardError(f"{url}: {key}.json is not JSON ({error})") from None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in labels):
        raise ShardError(f"{url}: {key}.json has no list of integer labels")
    bad = [i for i in labels if i < 0 or (num_classes is not None and i >= num_classes)]
    if bad:
        raise ShardError(f"{url}: {key}.json has label indices {bad} outside 0..{(num_classes or 0) - 1}"
                         if num_classes is not None else f"{url}: {key}.json has negative label indices {bad}")
    return meta


def iter_shard(url: str, decode_audio: bool = True, *, num_classes: int | None = None,
               expected: dict | None = None, wanted: set[int] | None = None) -> Iterator[ShardSample]:
    """Stream the samples of one shard tar (local or s3://) in stored order, checking what it reads.

    ``num_classes``: label indices must lie in 0..num_classes-1 (else only >= 0 is checked).
    ``expected``: the part's manifest/index entry (``bytes``, ``num_samples``, ``sha256``): the size
    is checked before reading and the sample count and sha256 when the tar ends (``Manifest.read_shard``
    passes both). ``wanted``: only the samples at these stored-order indices are read and yielded (the
    others' members are still checked by name, type and size) and the read stops after the last of them;
    it cannot be combined with ``expected``, whose checks need the whole file.
    Raises ShardError (a ValueError) naming the shard.
    """
    if wanted is not None and expected is not None:
        raise ValueError("iter_shard: `wanted` reads part of a shard, `expected` checks all of it; pass one")
    if expected is not None:
        size = storage.size(url)
        if size != expected["bytes"]:
            raise ShardError(f"{url} has {size} bytes, the manifest says {expected['bytes']} "
                             "(truncated or replaced; re-run the prep command to rebuild it)")
    try:
        yield from _iter_checked(url, decode_audio, num_classes, expected, wanted)
    except tarfile.TarError as error:  # a header that does not parse: damaged, or not a tar at all
        raise ShardError(f"{url} is not a readable tar ({error}); re-run the prep command to rebuild it") from None


def _iter_checked(url: str, decode_audio: bool, num_classes: int | None, expected: dict | None,
                  wanted: set[int] | None = None) -> Iterator[ShardSample]:
    last = max(wanted) if wanted else None
    with storage.open_url(url, "rb") as f:
        reader = _HashingReader(f, hashing=bool(expected and expected.get("sha256")))
        count = 0
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            pending: dict[str, dict[str, bytes]] = {}
            seen: set[str] = set()
            for member in tar:
                key, ext = _check_member(url, member, seen)
                keep = wanted is None or count in wanted
                entry = pending.setdefault(key, {})
                entry[ext] = tar.extractfile(member).read() if keep else b""
                if "flac" in entry and "json" in entry:
                    del pending[key]
                    if not keep:
                        count += 1
                        continue
                    meta = _check_meta(url, key, entry["json"], num_classes)
                    try:
                        wave = audio.decode_flac(entry["flac"])[0] if decode_audio else np.zeros(0, np.float32)
                    except Exception as error:
                        raise ShardError(f"{url}: {key}.flac does not decode ({error})") from None
                    count += 1
                    yield ShardSample(key, wave, meta)
                    if last is not None and count > last:
                        return
            if last is not None:
                raise ShardError(f"{url}: ended after {count} samples, but sample {last} was asked for")
            if pending:
                raise ShardError(f"{url}: incomplete samples {sorted(pending)[:5]}")
        if expected is not None:
            while reader.read(1 << 20):  # the tar's zero padding after the end marker
                pass
            if count != expected["num_samples"]:
                raise ShardError(f"{url} holds {count} samples, the manifest says {expected['num_samples']}")
            if expected.get("sha256") and reader.hash.hexdigest() != expected["sha256"]:
                raise ShardError(f"{url}: sha256 {reader.hash.hexdigest()[:12]}... differs from the manifest's "
                                 f"{expected['sha256'][:12]}... (the file was changed after prep)")
