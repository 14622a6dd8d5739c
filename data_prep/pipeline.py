"""The prep job: a source listing -> shard tasks run as Ray tasks -> rejects file -> manifest.

Re-running the same command after a crash redoes only the shard tasks without an index (see
shards.py) and writes byte-identical output; the manifest is written last.
"""
from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field

from data_prep import manifest as manifest_mod
from runtime import storage
from data_prep.prep_metrics import record_listing_rejects, record_shard
from data_prep.records import SourceListing
from data_prep.shards import ShardConfig, ShardResult, ShardTask, build_shard, plan_shards
from runtime.parallel import Progress, bounded_map


@dataclass
class PrepSummary:
    dataset: str
    out: str
    clips_listed: int
    clips_written: int = 0
    shards: int = 0
    shard_tasks_resumed: int = 0
    rejected: dict = field(default_factory=dict)
    missing: int = 0
    truncated: int = 0
    hours: float = 0.0
    bytes_written: int = 0
    seconds: float = 0.0

    @property
    def clips_per_second(self) -> float:
        return self.clips_written / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        rej = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        return [
            f"dataset {self.dataset} -> {self.out}",
            f"clips written {self.clips_written} of {self.clips_listed} listed, in {self.shards} shard files "
            f"({self.bytes_written / 2**20:.1f} MiB, {self.hours:.2f} h of audio)",
            f"rejected {sum(self.rejected.values())} ({rej}); missing audio {self.missing}; truncated {self.truncated}",
            f"{self.seconds:.1f} s, {self.clips_per_second:.1f} clips/s"
            + (f"; {self.shard_tasks_resumed} shard tasks were already done (resumed)" if self.shard_tasks_resumed else ""),
        ]


def run_prep(listing: SourceListing, out_url: str, cfg: ShardConfig, *, executor: str = "ray",
             address: str | None = None, max_in_flight: int = 0, progress: bool = True,
             telemetry=None, extra_manifest: dict | None = None, lease_ttl_s: float = 120.0) -> PrepSummary:
    """Write shards, rejects and manifest for ``listing`` under ``out_url``.

    The job holds the lease of ``out_url`` (``runtime.storage.Lease``) from start to end: a second
    prep into the same folder fails at once with ``LeaseHeld`` naming the first, instead of both
    writing and deleting each other's parts.
    """
    lease = storage.Lease(out_url, owner=f"prep {listing.name} {uuid.uuid4().hex[:8]}", ttl_s=lease_ttl_s)
    with lease:
        storage.remove_stale_temp_files(out_url)  # a killed run's half-written files; no live writer now
        return _run_prep(listing, out_url, cfg, lease, executor=executor, address=address,
                         max_in_flight=max_in_flight, progress=progress, telemetry=telemetry,
                         extra_manifest=extra_manifest)


def _run_prep(listing: SourceListing, out_url: str, cfg: ShardConfig, lease, *, executor: str,
              address: str | None, max_in_flight: int, progress: bool, telemetry,
              extra_manifest: dict | None) -> PrepSummary:
    started = time.perf_counter()
    tasks: list[ShardTask] = plan_shards(listing.records, cfg.max_clips_per_shard)
    summary = PrepSummary(dataset=listing.name, out=out_url, clips_listed=len(listing.records) + len(listing.rejects))
    results: dict[str, ShardResult] = {}

    def on_done(i: int, result: ShardResult) -> None:
        results[tasks[i].name] = result
        if telemetry is not None and not result.resumed:
            record_shard(telemetry, result)

    bar = Progress(f"prep {listing.name}", unit="clip", weight=lambda t: len(t.records),
                   postfix=lambda done: {"shards": len(done), "rejected": sum(len(r.rejects) for r in done)}
                   ) if progress else None
    if executor == "ray":
        from runtime.ray_cluster import ensure_ray

        ensure_ray(address)
    bounded_map(build_shard, tasks, shared=(listing.vocab, out_url, cfg), executor=executor,
                max_in_flight=max_in_flight, ray_options={"num_cpus": 1, "max_retries": 3},
                progress=bar, on_done=on_done)

    lease.check()  # still ours: nobody else wrote here meanwhile
    ordered = [results[t.name] for t in tasks]
    parts = [p for r in ordered for p in r.parts]
    rejects = sorted([r.to_dict() for r in listing.rejects] + [rej for r in ordered for rej in r.rejects],
                     key=lambda r: (r["path"], r["clip_id"] or "", r["reason"]))
    by_reason = Counter(r["reason"] for r in rejects)
    if telemetry is not None:
        record_listing_rejects(telemetry, listing.rejects)
    storage.write_text_atomic(storage.join(out_url, "rejects.jsonl"),
                              "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects))
    splits_of = {p["name"]: t.split for t, r in zip(tasks, ordered) for p in r.parts}
    doc = manifest_mod.build_manifest(
        listing.name, cfg.sample_rate, listing.vocab, parts, splits_of, dict(by_reason),
        {"config": _jsonable(asdict(cfg)), **(extra_manifest or {})})
    manifest_mod.write_manifest(out_url, doc)

    summary.clips_written = sum(r.clips for r in ordered)
    summary.shards = len(parts)
    summary.shard_tasks_resumed = sum(r.resumed for r in ordered)
    summary.rejected = dict(by_reason)
    summary.missing = by_reason.get("missing_audio", 0)
    summary.truncated = sum(r.truncated for r in ordered)
    summary.hours = doc["duration_s"] / 3600
    summary.bytes_written = sum(r.bytes for r in ordered)
    summary.seconds = time.perf_counter() - started
    return summary


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
