"""Shards and manifests are not trusted when read back, and resume checks what it resumes.

The reader accepts only regular members named <key>.flac / <key>.json under a size cap, each
once, with label indices in range; a manifest cannot name a file outside its dataset folder;
each part's size and sha256 are stored, checked on resume (a damaged part is rebuilt) and at read.
"""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from data_prep.manifest import read_manifest
from data_prep.pipeline import run_prep
from data_prep.shards import ShardConfig, ShardError, iter_shard
from audio_fixtures import make_listing, tree_bytes
from factories import flac_bytes, write_gnu_sparse_tar, write_tar
from runtime import storage

CFG = ShardConfig(sample_rate=16000, max_clips_per_shard=4)


def _meta(labels) -> bytes:
    return json.dumps({"clip_id": "k", "labels": labels}).encode()


def test_a_gnu_sparse_member_is_refused_before_its_claimed_256_mb_are_read(tmp_path):
    path = write_gnu_sparse_tar(tmp_path / "sparse.tar")
    assert path.stat().st_size == 10240
    with pytest.raises(ShardError, match="not a regular file"):
        list(iter_shard(str(path)))


@pytest.mark.parametrize("member_type", [tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE])
def test_links_and_folders_inside_a_shard_are_refused(tmp_path, member_type):
    path = write_tar(tmp_path / "x.tar", [("k.flac", b"")], member_type=member_type)
    with pytest.raises(ShardError, match="not a regular file"):
        list(iter_shard(str(path)))


def test_a_duplicate_member_is_refused(tmp_path):
    path = write_tar(tmp_path / "dup.tar", [("k.flac", flac_bytes()), ("k.json", _meta([0])),
                                            ("k.flac", flac_bytes())])
    with pytest.raises(ShardError, match="appears twice"):
        list(iter_shard(str(path)))


@pytest.mark.parametrize("name", ["../k.flac", "/etc/k.flac", "k.tar.flac", "k.npy", "dir/k.json"])
def test_a_member_with_an_unexpected_name_is_refused(tmp_path, name):
    path = write_tar(tmp_path / "names.tar", [(name, b"{}")])
    with pytest.raises(ShardError, match="unexpected member name"):
        list(iter_shard(str(path)))


def test_a_member_that_does_not_decode_is_reported_with_the_shard_name(tmp_path):
    path = write_tar(tmp_path / "bad.tar", [("k.flac", b"fLaC" + b"\0" * 64), ("k.json", _meta([0]))])
    with pytest.raises(ShardError, match="k.flac does not decode"):
        list(iter_shard(str(path)))


def test_a_negative_label_index_is_refused(tmp_path):
    path = write_tar(tmp_path / "neg.tar", [("k.flac", flac_bytes()), ("k.json", _meta([-1]))])
    with pytest.raises(ShardError, match="negative label"):
        list(iter_shard(str(path)))


def test_a_label_index_beyond_the_vocabulary_is_refused(tmp_path):
    path = write_tar(tmp_path / "big.tar", [("k.flac", flac_bytes()), ("k.json", _meta([0, 2]))])
    assert [s.meta["labels"] for s in iter_shard(str(path), num_classes=3)] == [[0, 2]]
    with pytest.raises(ShardError, match="outside 0..1"):
        list(iter_shard(str(path), num_classes=2))


@pytest.mark.parametrize("name", ["/etc/passwd", "../../etc/passwd", "shards/../../x.tar", "s3://other/x.tar",
                                  "shards//x.tar", "shards/x.npz"])
def test_a_manifest_naming_a_file_outside_its_dataset_folder_is_refused(tmp_path, name):
    listing, _ = make_listing(tmp_path / "audio")
    out = tmp_path / "out"
    run_prep(listing, str(out), CFG, executor="local", progress=False)
    doc = json.loads((out / "manifest.json").read_text())
    doc["shards"][0]["name"] = name
    (out / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="shard name"):
        read_manifest(str(out))


def test_storage_child_keeps_names_inside_the_folder():
    assert storage.child("/data/ds", "shards/a.tar") == "/data/ds/shards/a.tar"
    assert storage.child("s3://b/ds", "shards/a.tar") == "s3://b/ds/shards/a.tar"
    for bad in ("/etc/passwd", "..", "a/../../b", "", "a\\b", "s3://x/y"):
        with pytest.raises(ValueError):
            storage.child("/data/ds", bad)


# --- integrity: size and sha256 per part ---------------------------------------------------------

def _prepared(tmp_path):
    listing, _ = make_listing(tmp_path / "audio")
    reference, damaged = str(tmp_path / "ref"), str(tmp_path / "damaged")
    run_prep(listing, reference, CFG, executor="local", progress=False)
    run_prep(listing, damaged, CFG, executor="local", progress=False)
    return listing, reference, damaged


def _cut_before_last_sample(tar_path: Path) -> None:
    """Truncate a tar exactly where its last sample's first member starts (a member boundary)."""
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
    cut = members[-2].offset
    with open(tar_path, "r+b") as f:
        f.truncate(cut)


def test_the_manifest_records_size_and_sha256_of_every_part(tmp_path):
    _, reference, _ = _prepared(tmp_path)
    import hashlib

    for entry in read_manifest(reference).shards:
        data = Path(reference, entry.name).read_bytes()
        assert (entry.bytes, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_reading_a_shard_cut_on_a_member_boundary_fails_instead_of_losing_samples(tmp_path):
    _, _, damaged = _prepared(tmp_path)
    manifest = read_manifest(damaged)
    entry = manifest.shards[0]
    _cut_before_last_sample(Path(damaged, entry.name))
    assert len(list(iter_shard(str(Path(damaged, entry.name))))) == entry.num_samples - 1  # silently short
    with pytest.raises(ShardError, match="bytes"):
        list(manifest.read_shard(entry))


def test_reading_a_shard_changed_in_place_fails_on_its_sha256(tmp_path):
    _, _, damaged = _prepared(tmp_path)
    manifest = read_manifest(damaged)
    entry = manifest.shards[0]
    path = Path(damaged, entry.name)
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tar:
        meta = next(m for m in tar.getmembers() if m.name.endswith(".json"))
    field = data.index(b'"duration_s": ', meta.offset_data) + len(b'"duration_s": ')
    data[field] = ord("9") if data[field] != ord("9") else ord("8")  # same size, still valid JSON
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="sha256"):
        list(manifest.read_shard(entry))


@pytest.mark.parametrize("damage", ["deleted", "truncated", "changed"])
def test_resume_rebuilds_a_part_that_was_deleted_truncated_or_changed(tmp_path, damage):
    listing, reference, damaged = _prepared(tmp_path)
    entry = read_manifest(damaged).shards[1]
    path = Path(damaged, entry.name)
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        _cut_before_last_sample(path)
    else:
        data = bytearray(path.read_bytes())
        data[600] ^= 0xFF
        path.write_bytes(bytes(data))
    os.remove(Path(damaged, "manifest.json"))
    summary = run_prep(listing, damaged, CFG, executor="local", progress=False)
    assert summary.shard_tasks_resumed == len(read_manifest(reference).shards) - 1
    assert tree_bytes(damaged) == tree_bytes(reference)
    assert sum(1 for _ in read_manifest(damaged).samples()) == 12


def test_the_trainers_selective_reader_applies_the_same_member_checks(tmp_path):
    from trainer.data import _read_members

    path = write_gnu_sparse_tar(tmp_path / "sparse.tar")
    with pytest.raises(ShardError, match="not a regular file"):
        list(_read_members(str(path), {0}, {0: 1.0}, num_classes=2))


def test_a_selective_read_yields_only_the_wanted_samples_and_stops_after_the_last(tmp_path):
    members = []
    for i in range(4):
        members += [(f"k{i}.flac", flac_bytes(np.full(1600, 0.1 * (i + 1), np.float32))),
                    (f"k{i}.json", json.dumps({"clip_id": f"c{i}", "labels": [0], "duration_s": 0.1}).encode())]
    path = write_tar(tmp_path / "s.tar", members)
    got = [s.meta["clip_id"] for s in iter_shard(str(path), wanted={1, 2}, num_classes=1)]
    assert got == ["c1", "c2"]
    with pytest.raises(ShardError, match="sample 9 was asked for"):
        list(iter_shard(str(path), wanted={9}))
    with pytest.raises(ValueError, match="pass one"):
        list(iter_shard(str(path), wanted={1}, expected={"bytes": 1, "num_samples": 4, "sha256": None}))
