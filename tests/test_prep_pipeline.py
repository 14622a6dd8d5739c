"""The prep job: bad inputs are reported by name and skipped, good clips all land in shards,
output is byte-reproducible, and re-runs after a crash redo only what is missing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runtime import storage
from data_prep.manifest import read_manifest
from data_prep.pipeline import run_prep
from data_prep.records import SourceListing
from data_prep.shards import ShardConfig, iter_shard
from audio_fixtures import make_listing, tree_bytes

CFG = ShardConfig(sample_rate=16000, max_clips_per_shard=4)


def test_every_bad_file_is_reported_by_name_and_every_good_clip_is_in_the_shards(tmp_path):
    listing, bad = make_listing(tmp_path / "audio")
    out = str(tmp_path / "out")
    summary = run_prep(listing, out, CFG, executor="local", progress=False)

    rejects = [json.loads(line) for line in Path(out, "rejects.jsonl").read_text().splitlines()]
    assert {r["path"]: r["reason"] for r in rejects} == bad
    assert summary.clips_written == 12 and summary.missing == 1
    assert sum(summary.rejected.values()) == len(bad)

    manifest = read_manifest(out)
    stored = {}
    for url in manifest.shard_urls("train"):
        for sample in iter_shard(url):
            stored[sample.meta["clip_id"]] = sample
    assert sorted(stored) == sorted(f"good_{i}" for i in range(12))
    for sample in stored.values():  # mono, target rate, duration as listed
        assert sample.audio.ndim == 1
        assert sample.meta["sample_rate"] == 16000
        assert sample.audio.size == sample.meta["num_samples"]
    assert stored["good_1"].meta["labels"] == [0] and stored["good_0"].meta["labels"] == [0, 1]
    assert manifest.num_samples("train") == 12
    assert manifest.raw["rejects"]["by_reason"] == {r: 1 for r in bad.values()}
    assert sum(manifest.raw["duration_histogram"]["counts"]) == 12


def test_same_input_gives_byte_identical_shards_and_manifest(tmp_path):
    listing, _ = make_listing(tmp_path / "audio")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run_prep(listing, a, CFG, executor="local", progress=False)
    reordered = SourceListing(listing.name, listing.vocab, list(reversed(listing.records)), [])
    run_prep(reordered, b, CFG, executor="local", progress=False)
    assert tree_bytes(a) == tree_bytes(b)


def test_rerun_after_a_crash_rewrites_only_missing_shards_and_matches_an_uninterrupted_run(tmp_path):
    listing, _ = make_listing(tmp_path / "audio")
    reference, crashed = str(tmp_path / "ref"), str(tmp_path / "crashed")
    run_prep(listing, reference, CFG, executor="local", progress=False)
    run_prep(listing, crashed, CFG, executor="local", progress=False)
    # Simulate a crash: one task never committed its index, another left a half tar, no manifest.
    os.remove(Path(crashed, "shards", "train-000001.index.json"))
    Path(crashed, "shards", "train-000002.index.json").unlink()
    Path(crashed, "shards", "train-000002.tar").write_bytes(b"half a tar")
    Path(crashed, "manifest.json").unlink()

    summary = run_prep(listing, crashed, CFG, executor="local", progress=False)
    assert summary.shard_tasks_resumed == len(read_manifest(reference).shards) - 2
    assert tree_bytes(crashed) == tree_bytes(reference)


def test_a_different_input_in_the_same_output_folder_is_refused(tmp_path):
    listing, _ = make_listing(tmp_path / "audio")
    out = str(tmp_path / "out")
    run_prep(listing, out, CFG, executor="local", progress=False)
    with pytest.raises(RuntimeError, match="different input or settings"):
        run_prep(listing, out, ShardConfig(sample_rate=22050, max_clips_per_shard=4), executor="local",
                 progress=False)


def test_byte_limit_rolls_a_shard_over_into_parts_without_losing_clips(tmp_path):
    listing, _ = make_listing(tmp_path / "audio")
    out = str(tmp_path / "out")
    run_prep(listing, out, ShardConfig(sample_rate=16000, max_clips_per_shard=100, max_shard_bytes=20_000),
             executor="local", progress=False)
    manifest = read_manifest(out)
    assert len(manifest.shards) > 1
    assert manifest.num_samples() == 12


def test_ray_tasks_write_the_same_bytes_as_the_in_process_executor(tmp_path, ray_local):
    listing, _ = make_listing(tmp_path / "audio")
    local, distributed = str(tmp_path / "local"), str(tmp_path / "ray")
    run_prep(listing, local, CFG, executor="local", progress=False)
    run_prep(listing, distributed, CFG, executor="ray", progress=False)
    assert tree_bytes(local) == tree_bytes(distributed)


def test_s3_output_matches_local_output_and_resumes(tmp_path, s3_bucket, ray_local):
    listing, _ = make_listing(tmp_path / "audio")
    local = str(tmp_path / "local")
    run_prep(listing, local, CFG, executor="local", progress=False)
    remote = storage.join(s3_bucket, "datasets", "unit")
    run_prep(listing, remote, CFG, executor="ray", progress=False)
    storage.remove(storage.join(remote, "shards", "train-000000.index.json"))
    storage.remove(storage.join(remote, "manifest.json"))
    summary = run_prep(listing, remote, CFG, executor="ray", progress=False)
    assert summary.shard_tasks_resumed == len(read_manifest(local).shards) - 1
    for rel, data in tree_bytes(local).items():
        assert storage.read_bytes(storage.join(remote, rel)) == data, rel
    samples = [s.meta["clip_id"] for url in read_manifest(remote).shard_urls() for s in iter_shard(url)]
    assert sorted(samples) == sorted(f"good_{i}" for i in range(12))
