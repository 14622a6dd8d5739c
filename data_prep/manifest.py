"""The dataset manifest: the one file readers (trainer, transfer) use to find shards.

Written last and atomically, after every shard task has committed its index, so a manifest
that exists always describes complete shards.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from runtime import storage

MANIFEST_FORMAT = "weaksound-shards/1"
MANIFEST_NAME = "manifest.json"
# Log-spaced duration edges (seconds): web audio runs from sub-second clips to minutes.
DURATION_EDGES_S = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, float("inf"))


@dataclass(frozen=True)
class ShardEntry:
    name: str            # relative to the dataset URL, e.g. "shards/train-000000.tar"
    split: str
    num_samples: int
    duration_s: float
    bytes: int
    class_counts: tuple[int, ...]
    durations_s: tuple[float, ...]   # per sample, in stored order (bucketing without decoding)
    sha256: str | None = None        # of the tar file; None in manifests written before it was recorded


@dataclass(frozen=True)
class ShardRef:
    """One shard as a manifest lists it: where it is and what it must hold (size, count, sha256)."""
    url: str
    num_classes: int
    expected: dict

    def read(self, decode_audio: bool = True):
        """Its samples, checked like ``Manifest.read_shard`` (raises ShardError naming the shard)."""
        from data_prep.shards import iter_shard

        return iter_shard(self.url, decode_audio, num_classes=self.num_classes, expected=self.expected)


def read_samples(shard, decode_audio: bool = True):
    """Samples of a ``ShardRef`` (checked) or of a bare shard URL (format checks only)."""
    from data_prep.shards import iter_shard

    return shard.read(decode_audio) if isinstance(shard, ShardRef) else iter_shard(shard, decode_audio)


@dataclass(frozen=True)
class Manifest:
    url: str
    dataset: str
    sample_rate: int
    vocabulary: tuple[dict, ...]
    shards: tuple[ShardEntry, ...]
    rejects: dict
    raw: dict

    @property
    def class_ids(self) -> list[str]:
        return [v["id"] for v in self.vocabulary]

    @property
    def class_names(self) -> list[str]:
        return [v["name"] for v in self.vocabulary]

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary)

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.shards})

    def shards_of(self, split: str | None) -> list[ShardEntry]:
        """Shards of one split (all shards for None or "all"), or of several joined by "+" ("train+val"),
        in manifest order."""
        if split in (None, "all"):
            return list(self.shards)
        wanted = split.split("+")
        missing = [w for w in wanted if w not in self.splits]
        if missing:
            raise ValueError(f"{self.url}: no shards for split {missing[0]!r}; splits present: {self.splits}")
        return [s for s in self.shards if s.split in wanted]

    def shard_urls(self, split: str | None = None) -> list[str]:
        return [storage.child(self.url, s.name) for s in self.shards_of(split)]

    def read_shard(self, entry: ShardEntry, decode_audio: bool = True):
        """The samples of one shard, checked against this manifest: size, sample count, sha256 and
        label indices (< num_classes). Readers should use this rather than ``iter_shard(url)``."""
        from data_prep.shards import iter_shard

        return iter_shard(storage.child(self.url, entry.name), decode_audio, num_classes=self.num_classes,
                          expected={"bytes": entry.bytes, "num_samples": entry.num_samples, "sha256": entry.sha256})

    def shard_refs(self, split: str | None = None) -> list["ShardRef"]:
        """Picklable handles of the split's shards that read them with this manifest's checks (for Ray tasks)."""
        return [ShardRef(storage.child(self.url, e.name), self.num_classes,
                         {"bytes": e.bytes, "num_samples": e.num_samples, "sha256": e.sha256})
                for e in self.shards_of(split)]

    def samples(self, split: str | None = None, decode_audio: bool = True):
        """Every sample of a split, shard after shard, each shard checked as in ``read_shard``."""
        for entry in self.shards_of(split):
            yield from self.read_shard(entry, decode_audio)

    def num_samples(self, split: str | None = None) -> int:
        return sum(s.num_samples for s in self.shards_of(split))

    def duration_s(self, split: str | None = None) -> float:
        return sum(s.duration_s for s in self.shards_of(split))


def duration_histogram(durations: list[float]) -> dict:
    counts, _ = np.histogram(np.asarray(durations, dtype=float), bins=np.asarray(DURATION_EDGES_S))
    return {"edges_s": [e if np.isfinite(e) else None for e in DURATION_EDGES_S], "counts": counts.tolist()}


def build_manifest(dataset: str, sample_rate: int, vocab, parts: list[dict], splits_of: dict[str, str],
                   rejects_by_reason: dict[str, int], extra: dict) -> dict:
    """Assemble the manifest document from committed shard parts (in plan order)."""
    shards, durations, splits = [], [], {}
    for part in parts:
        split = splits_of[part["name"]]
        part_durations = [s["duration_s"] for s in part["samples"]]
        durations += part_durations
        shards.append({
            "name": part["name"], "split": split, "num_samples": part["num_samples"],
            "duration_s": part["duration_s"], "bytes": part["bytes"], "sha256": part["sha256"],
            "class_counts": part["class_counts"], "durations_s": part_durations,
        })
        agg = splits.setdefault(split, {"num_samples": 0, "duration_s": 0.0, "shards": 0})
        agg["num_samples"] += part["num_samples"]
        agg["duration_s"] = round(agg["duration_s"] + part["duration_s"], 3)
        agg["shards"] += 1
    class_counts = np.zeros(len(vocab.ids), dtype=np.int64)
    for part in parts:
        class_counts += np.asarray(part["class_counts"], dtype=np.int64)
    return {
        "format": MANIFEST_FORMAT,
        "dataset": dataset,
        "sample_rate": sample_rate,
        "vocabulary": [{"index": i, "id": cid, "name": name, "count": int(class_counts[i])}
                       for i, (cid, name) in enumerate(zip(vocab.ids, vocab.names))],
        "shards": shards,
        "splits": splits,
        "num_samples": sum(s["num_samples"] for s in shards),
        "duration_s": round(sum(durations), 3),
        "duration_histogram": duration_histogram(durations),
        "rejects": {"total": int(sum(rejects_by_reason.values())), "by_reason": dict(sorted(rejects_by_reason.items())),
                    "file": "rejects.jsonl"},
        **extra,
    }


def write_manifest(url: str, doc: dict) -> None:
    storage.write_text_atomic(storage.join(url, MANIFEST_NAME), json.dumps(doc, indent=1, sort_keys=True))


def read_manifest(url: str) -> Manifest:
    """Read ``<url>/manifest.json`` (``url`` may also name the JSON file itself)."""
    if url.endswith(".json"):
        doc_url, base = url, url.rsplit("/", 1)[0] if "/" in url else "."
    else:
        doc_url, base = storage.join(url, MANIFEST_NAME), url
    try:
        doc = json.loads(storage.read_text(doc_url))
    except FileNotFoundError:
        raise FileNotFoundError(f"no manifest at {doc_url}: run `weaksound prep ...` first "
                                "(a dataset without manifest is incomplete)") from None
    if doc.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{doc_url}: unknown manifest format {doc.get('format')!r}")
    num_classes = len(doc["vocabulary"])
    shards = tuple(_shard_entry(doc_url, base, s, num_classes) for s in doc["shards"])
    return Manifest(base, doc["dataset"], doc["sample_rate"], tuple(doc["vocabulary"]), shards,
                    doc["rejects"], doc)


def _shard_entry(doc_url: str, base: str, s: dict, num_classes: int) -> ShardEntry:
    """One manifest shard entry, refused unless it names a .tar inside the dataset folder."""
    name = s.get("name")
    try:
        storage.child(base, name)
    except ValueError:
        raise ValueError(f"{doc_url}: shard name {name!r} is not a relative path inside the dataset folder") from None
    if not name.endswith(".tar"):
        raise ValueError(f"{doc_url}: shard name {name!r} is not a .tar file")
    if len(s["class_counts"]) != num_classes:
        raise ValueError(f"{doc_url}: shard {name} counts {len(s['class_counts'])} classes, "
                         f"the vocabulary has {num_classes}")
    if not isinstance(s["bytes"], int) or s["bytes"] < 0 or not isinstance(s["num_samples"], int) \
            or s["num_samples"] < 0:
        raise ValueError(f"{doc_url}: shard {name} has invalid bytes/num_samples")
    return ShardEntry(name, s["split"], s["num_samples"], s["duration_s"], s["bytes"], tuple(s["class_counts"]),
                      tuple(s["durations_s"]), s.get("sha256"))
