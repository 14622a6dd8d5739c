"""Embedding extraction (`weaksound embed`, inference/embed_cli.py): F1/F2 embeddings of every clip of a prepared dataset, in parallel with Ray.

One Ray actor per CPU core (or per GPU) loads the exported model once; each shard is one call.
Per clip it stores the segment-level F1 (K x F1) and F2 (K x C_source) outputs and their
recording-level max()/avg() mappings, with the clip's key, labels, fold and source recording.

Output layout (local folder or s3://):
  <OUT>/shards/<shard>.npz   one per input shard, written atomically (numpy arrays, no pickle)
  <OUT>/embeddings.json      written last: model, data, vocabularies, files, totals

Fingerprints: each .npz carries, as 1-element arrays, ``fingerprint_model`` (sha256 over the
export's model.safetensors bytes then its config.json bytes, see ``model_fingerprint``),
``fingerprint_shard_sha256`` and ``fingerprint_shard_bytes`` (the input part as the manifest
records it); embeddings.json records the same per file and ``model_fingerprint`` for the run.
A re-run skips a shard whose .npz exists with the same fingerprints, so an interrupted extraction
resumes; a .npz made from another model or other data is refused (``on_mismatch="refuse"``, the
default) or recomputed (``"redo"``). ``load_embeddings`` refuses a folder whose files do not all
carry the fingerprints its index names. One run at a time writes a folder (``storage.Lease``).

Shards are read checked against the manifest (size, sample count, sha256, label range): a
truncated or altered part fails the run with an error naming it.

Metrics (docs/contracts.md, ``weaksound_embed_*``, run label = the last component of OUT): by
default each model actor records its own shards through Ray's metrics exporter, so
``weaksound_embed_clips_per_second`` is the throughput of each actor; with ``--metrics-port`` this
process serves them with prometheus_client instead (recorded here as the shards come back).

The typed run is ``run_embed(EmbedConfig) -> EmbedSummary`` (inference/config.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from dataclasses import dataclass

import numpy as np

from data_prep.job import job_telemetry
from data_prep.manifest import ShardEntry, read_manifest
from data_prep.shards import iter_shard
from inference.config import EmbedConfig
from inference.embed_metrics import EMBED_METRICS, record_embed
from runtime import storage
from runtime.parallel import Progress, bounded_map

FORMAT = "weaksound-embeddings/1"
INDEX = "embeddings.json"
FINGERPRINT_PREFIX = "fingerprint_"   # per-file provenance arrays, not clip rows
ON_MISMATCH = ("refuse", "redo")


def model_fingerprint(config: bytes, weights: bytes) -> str:
    """sha256 over an export's model.safetensors bytes, then its config.json bytes."""
    h = hashlib.sha256(weights)
    h.update(config)
    return h.hexdigest()


def shard_fingerprint(model: str, entry: ShardEntry) -> dict:
    """What one .npz is made from: the model fingerprint and the input part's manifest record
    (sha256 is "" for manifests written before it was recorded)."""
    return {"model": model, "shard_sha256": entry.sha256 or "", "shard_bytes": int(entry.bytes)}


def _fingerprint_arrays(fingerprint: dict) -> dict[str, np.ndarray]:
    return {FINGERPRINT_PREFIX + "model": np.asarray([fingerprint["model"]], dtype=str),
            FINGERPRINT_PREFIX + "shard_sha256": np.asarray([fingerprint["shard_sha256"]], dtype=str),
            FINGERPRINT_PREFIX + "shard_bytes": np.asarray([fingerprint["shard_bytes"]], dtype=np.int64)}


def _fingerprint_of(arrays: dict[str, np.ndarray]) -> dict | None:
    try:
        return {"model": str(arrays[FINGERPRINT_PREFIX + "model"][0]),
                "shard_sha256": str(arrays[FINGERPRINT_PREFIX + "shard_sha256"][0]),
                "shard_bytes": int(arrays[FINGERPRINT_PREFIX + "shard_bytes"][0])}
    except (KeyError, IndexError):
        return None  # written before fingerprints were recorded


def read_fingerprint(url: str) -> dict | None:
    """The fingerprints stored in one .npz (None if it has none), reading only those members."""
    with storage.open_url(url, "rb") as f, np.load(f, allow_pickle=False) as z:
        return _fingerprint_of({k: z[k] for k in z.files if k.startswith(FINGERPRINT_PREFIX)})


def _mismatch(stored: dict | None, wanted: dict) -> str | None:
    """Why a stored .npz is not the one this run would write (None when it is)."""
    if stored is None:
        return "it records no model/data fingerprints (written by an older version)"
    if stored["model"] != wanted["model"]:
        return f"it was made with another model (fingerprint {stored['model'][:12]}, this model {wanted['model'][:12]})"
    if (stored["shard_sha256"], stored["shard_bytes"]) != (wanted["shard_sha256"], wanted["shard_bytes"]):
        return (f"it was made from other shard data (sha256 {stored['shard_sha256'][:12]}, {stored['shard_bytes']} "
                f"bytes; the manifest now says {wanted['shard_sha256'][:12]}, {wanted['shard_bytes']} bytes)")
    return None


def _batches(samples, batch_seconds: float, sample_rate: int):
    """Consecutive samples grouped while (clips x longest) stays within the budget."""
    batch, longest = [], 0
    for s in samples:
        n = s.audio.size
        if batch and max(longest, n) * (len(batch) + 1) > batch_seconds * sample_rate:
            yield batch
            batch, longest = [], 0
        batch.append(s)
        longest = max(longest, n)
    if batch:
        yield batch


def embed_samples(exported, log_mel, samples, batch_seconds: float = EmbedConfig.batch_seconds
                  ) -> dict[str, np.ndarray]:
    """Model outputs for an iterable of ShardSamples -> the per-shard arrays (see module doc)."""
    import torch

    from trainer.collate import pad_waveforms

    device = next(exported.model.parameters()).device
    rate = exported.frontend.sample_rate
    rows = {k: [] for k in ("key", "clip_id", "split", "source_id", "fold", "duration_s", "label_offsets",
                            "label_values", "f1_seg", "f2_seg", "seg_counts")}
    for batch in _batches(samples, batch_seconds, rate):
        for s in batch:
            if s.meta["sample_rate"] != rate:
                raise ValueError(f"{s.meta['clip_id']}: shard audio is {s.meta['sample_rate']} Hz but the model "
                                 f"expects {rate} Hz; prep the data with --sample-rate {rate}")
        wave, lengths = pad_waveforms([s.audio for s in batch])
        with torch.inference_mode():
            feats, frames = log_mel(wave.to(device), lengths.to(device))
            out = exported.model(feats, frames)
        f1, f2, counts = out.f1.float().cpu().numpy(), out.segments.float().cpu().numpy(), out.num_segments.cpu()
        for i, s in enumerate(batch):
            k = int(counts[i])
            rows["f1_seg"].append(f1[i, :k])
            rows["f2_seg"].append(f2[i, :k])
            rows["seg_counts"].append(k)
            rows["key"].append(s.key)
            rows["clip_id"].append(s.meta["clip_id"])
            rows["split"].append(s.meta["split"])
            rows["source_id"].append(s.meta.get("source_id") or "")
            rows["fold"].append(s.meta.get("fold") or 0)
            rows["duration_s"].append(s.meta["duration_s"])
            rows["label_values"].extend(s.meta["labels"])
            rows["label_offsets"].append(len(s.meta["labels"]))
    counts = np.asarray(rows["seg_counts"], dtype=np.int64)
    f1_dim, f2_dim = exported.architecture.f1_channels, exported.architecture.num_classes
    f1_seg = np.concatenate(rows["f1_seg"]) if rows["f1_seg"] else np.zeros((0, f1_dim), np.float32)
    f2_seg = np.concatenate(rows["f2_seg"]) if rows["f2_seg"] else np.zeros((0, f2_dim), np.float32)
    seg_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    pooled = {}
    for name, seg in (("f1", f1_seg), ("f2", f2_seg)):
        pooled[f"{name}_max"] = np.stack([seg[a:b].max(0) for a, b in zip(seg_offsets[:-1], seg_offsets[1:])]) \
            if counts.size else np.zeros((0, seg.shape[1]), np.float32)
        pooled[f"{name}_avg"] = np.stack([seg[a:b].mean(0) for a, b in zip(seg_offsets[:-1], seg_offsets[1:])]) \
            if counts.size else np.zeros((0, seg.shape[1]), np.float32)
    return {
        "key": np.asarray(rows["key"], dtype=str), "clip_id": np.asarray(rows["clip_id"], dtype=str),
        "split": np.asarray(rows["split"], dtype=str), "source_id": np.asarray(rows["source_id"], dtype=str),
        "fold": np.asarray(rows["fold"], dtype=np.int64), "duration_s": np.asarray(rows["duration_s"], np.float32),
        "label_offsets": np.concatenate([[0], np.cumsum(rows["label_offsets"])]).astype(np.int64),
        "label_values": np.asarray(rows["label_values"], dtype=np.int64),
        "seg_offsets": seg_offsets, "f1_seg": f1_seg.astype(np.float32), "f2_seg": f2_seg.astype(np.float32),
        **{k: v.astype(np.float32) for k, v in pooled.items()},
    }


def _npz_name(shard_name: str) -> str:
    """shards/train-000000.tar -> shards/train-000000.npz (relative to the embeddings folder)."""
    return shard_name.rsplit(".tar", 1)[0] + ".npz"


def save_arrays(url: str, arrays: dict[str, np.ndarray]) -> int:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # plain numeric/unicode arrays: readable with allow_pickle=False
    data = buf.getvalue()
    storage.write_bytes_atomic(url, data)
    return len(data)


def load_arrays(url: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(storage.read_bytes(url)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class ShardEmbedder:
    """Holds one loaded model; embeds whole shards. Used as a Ray actor and in-process.

    ``config``/``weights`` (the export's config.json dict and model.safetensors bytes, as the
    driver read and fingerprinted them) take precedence over loading ``model_url`` again, so every
    actor uses exactly the export version the run's fingerprint names.
    """

    def __init__(self, model_url: str, batch_seconds: float, device: str = "cpu", threads: int = 1,
                 telemetry=None, config: dict | None = None, weights: bytes | None = None):
        import torch

        from trainer.export import exported_from_bytes, load_exported

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        if weights is not None:
            self.exported = exported_from_bytes(config, weights, device=device, where=model_url)
        else:
            self.exported = load_exported(model_url, device=device)
        self.log_mel = self.exported.log_mel()
        self.batch_seconds = batch_seconds
        self.telemetry = telemetry  # kind="embed"; records every shard this embedder finishes

    def embed_shard(self, shard_url: str, out_url: str, expected: dict | None = None, num_classes: int | None = None,
                    fingerprint: dict | None = None) -> dict:
        """Embed one shard into ``out_url``. ``expected``/``num_classes`` check the shard against its
        manifest record (see ``data_prep.shards.iter_shard``); ``fingerprint`` is stored in the file."""
        started = time.perf_counter()
        samples = iter_shard(shard_url, num_classes=num_classes, expected=expected)
        arrays = embed_samples(self.exported, self.log_mel, samples, self.batch_seconds)
        size = save_arrays(out_url, {**arrays, **(_fingerprint_arrays(fingerprint) if fingerprint else {})})
        result = {"clips": int(arrays["key"].size), "audio_s": float(arrays["duration_s"].sum()),
                  "bytes": size, "seconds": time.perf_counter() - started}
        if self.telemetry is not None:
            record_embed(self.telemetry, result)
        return result


@dataclass(frozen=True)
class _Job:
    entry: ShardEntry
    shard_url: str
    out_url: str
    num_classes: int
    fingerprint: dict

    @property
    def expected(self) -> dict:
        return {"bytes": self.entry.bytes, "num_samples": self.entry.num_samples, "sha256": self.entry.sha256}

    def args(self) -> tuple:
        return self.shard_url, self.out_url, self.expected, self.num_classes, self.fingerprint


def _embed_job_locally(embedder: "ShardEmbedder"):
    return lambda job: embedder.embed_shard(*job.args())


def _embed_job_on_actor(actor, job):
    return actor.embed_shard.remote(*job.args())


@dataclass
class EmbedSummary:
    clips: int
    shards_done: int
    shards_skipped: int
    seconds: float
    audio_s: float
    busy_s: float = 0.0     # summed time the model actors spent on shards (excludes start-up)

    def line(self) -> str:
        rate = self.clips / self.seconds if self.seconds else 0.0
        return (f"embedded {self.clips} clips from {self.shards_done} shards ({self.shards_skipped} already done) "
                f"in {self.seconds:.1f} s: {rate:.1f} clips/s, {self.audio_s / max(self.seconds, 1e-9):.0f}x real time")


def run_embed(cfg: EmbedConfig, *, telemetry=None) -> EmbedSummary:
    """Embed every clip of ``cfg.split`` of the dataset at ``cfg.data`` into ``cfg.out``.

    ``telemetry`` (a ``runtime.telemetry.Telemetry`` of kind "embed") counts every embedded
    shard; None = the job's own, per ``cfg.metrics_port`` (see ``data_prep.job.job_telemetry``).
    A picklable one (backend "ray" or "none") travels to the Ray actors, which record their own
    shards (so the clips/s gauge is per actor); a "prometheus" one stays in this process and
    records each shard when its result comes back.
    """
    if telemetry is not None:
        return _run_embed(cfg, telemetry)
    run_name = cfg.out.rstrip("/").rsplit("/", 1)[-1]
    with job_telemetry(EMBED_METRICS, run=run_name, executor=cfg.executor, address=cfg.address,
                       metrics_port=cfg.metrics_port, linger_s=cfg.metrics_linger_s) as own:
        return _run_embed(cfg, own)


def _run_embed(cfg: EmbedConfig, telemetry) -> EmbedSummary:
    with storage.Lease(cfg.out, owner=f"embed-{uuid.uuid4().hex[:8]}"):
        return _run_embed_leased(cfg, telemetry)


def _plan(cfg: EmbedConfig, manifest, fingerprint: str) -> tuple[list[_Job], list[_Job]]:
    """(every job, the jobs to run): a job is skipped when its .npz exists with this run's
    fingerprints; one made from another model or other data is redone or refused (cfg.on_mismatch)."""
    jobs = [_Job(e, storage.child(manifest.url, e.name), storage.child(cfg.out, _npz_name(e.name)),
                 manifest.num_classes, shard_fingerprint(fingerprint, e)) for e in manifest.shards_of(cfg.split)]
    todo, stale = [], []
    for job in jobs:
        if not storage.exists(job.out_url):
            todo.append(job)
            continue
        try:
            why = _mismatch(read_fingerprint(job.out_url), job.fingerprint)
        except (OSError, ValueError) as error:  # not a readable .npz (BadZipFile is an OSError)
            why = f"it is not a readable .npz ({error})"
        if why:
            todo.append(job)
            stale.append((job, why))
    if stale and cfg.on_mismatch != "redo":
        job, why = stale[0]
        raise ValueError(f"{cfg.out} already holds {len(stale)} embedding file(s) this run would not write, e.g. "
                         f"{job.out_url}: {why}. Use another --out, or pass --on-mismatch redo to recompute them "
                         "(the old files are replaced).")
    return jobs, todo


def _run_embed_leased(cfg: EmbedConfig, telemetry) -> EmbedSummary:
    from trainer.export import read_export_files

    model_url, data_url, out_url, executor = cfg.model, cfg.data, cfg.out, cfg.executor
    started = time.perf_counter()
    manifest = read_manifest(data_url)
    config_bytes, weights, model_version = read_export_files(model_url)  # one export version for the whole run
    model_doc = json.loads(config_bytes)
    if model_doc["frontend"]["sample_rate"] != manifest.sample_rate:
        raise ValueError(f"{data_url} is sampled at {manifest.sample_rate} Hz but the model at {model_url} expects "
                         f"{model_doc['frontend']['sample_rate']} Hz: prep it with --sample-rate "
                         f"{model_doc['frontend']['sample_rate']}")
    fingerprint = model_fingerprint(config_bytes, weights)
    jobs, todo = _plan(cfg, manifest, fingerprint)
    if todo:  # the old index would name files this run replaces: readers get "run embed first" meanwhile
        storage.remove(storage.join(out_url, INDEX))
    started_clips = sum(j.entry.num_samples for j in jobs if j not in todo)
    bar = Progress("embed", unit="clip", weight=lambda job: job.entry.num_samples, initial=started_clips,
                   postfix=lambda _done: {"clips_per_s": f"{clips / (time.perf_counter() - started):.1f}"}
                   ) if cfg.progress else None
    clips, audio_s, busy_s = 0, 0.0, 0.0
    # who calls record_embed: the embedders themselves when the Telemetry can travel to them
    in_embedder = executor == "local" or telemetry.backend != "prometheus"

    def done(result: dict) -> None:
        nonlocal clips, audio_s, busy_s
        clips += result["clips"]
        audio_s += result["audio_s"]
        busy_s += result["seconds"]
        if not in_embedder:
            record_embed(telemetry, result)

    pool = None
    if executor == "local" and todo:
        embedder = ShardEmbedder(model_url, cfg.batch_seconds, threads=os.cpu_count() or 1, telemetry=telemetry,
                                 config=model_doc, weights=weights)
        call = _embed_job_locally(embedder)
    elif todo:
        import ray

        from runtime.ray_cluster import ensure_ray

        ensure_ray(cfg.address)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(cfg.actors or (gpus if gpus else cpus), len(todo)))
        opts = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        actor_cls = ray.remote(**opts)(ShardEmbedder)
        weights_ref = ray.put(weights)  # once in the object store, not once per actor
        pool = [actor_cls.remote(model_url, cfg.batch_seconds, "cuda" if gpus else "cpu", 1,
                                 telemetry if in_embedder else None, model_doc, weights_ref) for _ in range(n)]
        call = _embed_job_on_actor
    if todo:
        bounded_map(call, todo, executor=executor, actors=pool, progress=bar, on_done=lambda _i, r: done(r))

    index = {
        "format": FORMAT, "model": model_url, "model_version": model_version, "model_fingerprint": fingerprint,
        "data": data_url, "dataset": manifest.dataset, "split": cfg.split,
        "sample_rate": manifest.sample_rate,
        "target_vocabulary": list(manifest.vocabulary),
        "source_vocabulary": model_doc["vocabulary"],
        "f1_dim": model_doc["architecture"]["f1_channels"], "f2_dim": model_doc["architecture"]["num_classes"],
        "files": [{"name": _npz_name(j.entry.name), "shard": j.entry.name, "num_clips": j.entry.num_samples,
                   "shard_sha256": j.fingerprint["shard_sha256"], "shard_bytes": j.fingerprint["shard_bytes"]}
                  for j in jobs],
        "num_clips": sum(j.entry.num_samples for j in jobs),
    }
    storage.write_text_atomic(storage.join(out_url, INDEX), json.dumps(index, indent=1))
    return EmbedSummary(clips, len(todo), len(jobs) - len(todo), time.perf_counter() - started, audio_s, busy_s)


@dataclass
class Embeddings:
    """All clips of an embedding folder, concatenated in manifest order."""
    index: dict
    arrays: dict[str, np.ndarray]

    @property
    def num_clips(self) -> int:
        return int(self.arrays["key"].size)

    def labels(self) -> list[list[int]]:
        off, val = self.arrays["label_offsets"], self.arrays["label_values"]
        return [val[a:b].tolist() for a, b in zip(off[:-1], off[1:])]

    def single_labels(self) -> np.ndarray:
        """The label of each clip of a single-label task (raises if a clip has 0 or >1 labels)."""
        labels = self.labels()
        bad = [i for i, l in enumerate(labels) if len(l) != 1]
        if bad:
            raise ValueError(f"{len(bad)} clips do not have exactly one label (first: {self.arrays['clip_id'][bad[0]]})")
        return np.asarray([l[0] for l in labels], dtype=np.int64)

    def segments(self, layer: str) -> list[np.ndarray]:
        seg, off = self.arrays[f"{layer.lower()}_seg"], self.arrays["seg_offsets"]
        return [seg[a:b] for a, b in zip(off[:-1], off[1:])]

    @property
    def target_names(self) -> list[str]:
        return [v["name"] for v in self.index["target_vocabulary"]]

    @property
    def source_names(self) -> list[str]:
        return [v["name"] for v in self.index["source_vocabulary"]]


def load_embeddings(url: str) -> Embeddings:
    try:
        index = json.loads(storage.read_text(storage.join(url, INDEX)))
    except FileNotFoundError:
        raise FileNotFoundError(f"no {INDEX} under {url}: run `weaksound embed` first") from None
    if index.get("format") != FORMAT:
        raise ValueError(f"{url}: not a {FORMAT} folder")
    parts = []
    for f in index["files"]:
        part_url = storage.child(url, f["name"])
        part = load_arrays(part_url)
        if "model_fingerprint" in index:  # folders written before fingerprints were recorded load unchecked
            wanted = {"model": index["model_fingerprint"], "shard_sha256": f["shard_sha256"],
                      "shard_bytes": f["shard_bytes"]}
            why = _mismatch(_fingerprint_of(part), wanted)
            if why:
                raise ValueError(f"{part_url} does not belong to {storage.join(url, INDEX)}: {why}; "
                                 "re-run `weaksound embed` into this folder to rebuild it")
        parts.append({k: v for k, v in part.items() if not k.startswith(FINGERPRINT_PREFIX)})
    arrays: dict[str, np.ndarray] = {}
    for key in parts[0]:
        if key in ("seg_offsets", "label_offsets"):
            offsets, base = [np.zeros(1, np.int64)], 0
            for p in parts:
                offsets.append(p[key][1:] + base)
                base += int(p[key][-1])
            arrays[key] = np.concatenate(offsets)
        else:
            arrays[key] = np.concatenate([p[key] for p in parts])
    return Embeddings(index, arrays)
