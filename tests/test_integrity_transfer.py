"""The transfer stage reads shards through the manifest's checks: a truncated part is named, never half-read."""
from __future__ import annotations

import tarfile

import pytest

from data_prep.manifest import read_manifest
from data_prep.shards import ShardError
from test_trainer_data import make_tone_dataset
from transfer.parallel import mfcc_features


def test_mfcc_features_refuse_a_truncated_shard_part_and_name_it(tmp_path):
    data = make_tone_dataset(tmp_path / "wav", str(tmp_path / "shards"), n_train=12, n_eval=0, clips_per_shard=4)
    manifest = read_manifest(data)
    ids = [f"train-{i:03d}" for i in range(12)]
    ref = manifest.shard_refs()[1]
    with tarfile.open(ref.url) as tar:
        last_pair = tar.getmembers()[-2].offset  # the header of the last sample's first member
    with open(ref.url, "r+b") as f:  # cut on a member boundary: the tar still parses, one sample short
        f.truncate(last_pair)
    with pytest.raises(ShardError, match=ref.url.rsplit("/", 1)[-1]):
        mfcc_features(data, ids, executor="local")
