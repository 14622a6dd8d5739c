"""trainer/ray_data_input.py: shards -> Ray Data decode -> per-rank bucketed batches (real local Ray)."""
from __future__ import annotations

import io
import pickle
import tarfile
import threading
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from data_prep.manifest import read_manifest
from data_prep.shards import iter_shard
from test_trainer_data import CFG, make_tone_dataset
from trainer.data import plan_epoch
from trainer.ray_data_input import build_train_dataset, iter_ray_batches


class _Canary:
    """Unpickling this creates a file: proof that a reader unpickled a shard member."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tones_ray")
    return make_tone_dataset(tmp / "wav", str(tmp / "shards"), n_train=24, n_eval=2, seed=6)


def consume_splits(ds, plan, world, **kw):
    """Every rank's batches, the ranks consuming their splits concurrently (as Train workers do)."""
    splits = ds.streaming_split(world, equal=True)
    out = [None] * world

    def run(r):
        out[r] = list(iter_ray_batches(splits[r], plan, epoch=0, seed=0, rank=r, sync=False, **kw))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_ray_data_ranks_share_the_clips_once_each_within_the_batch_budget(ray_local, tones):
    url = tones
    plan = plan_epoch(read_manifest(url), "train", CFG, world_size=2, train=True)
    per_rank = consume_splits(build_train_dataset(plan), plan, 2)
    seen = Counter(k for batches in per_rank for b in batches for k in b["keys"])
    assert sorted(seen) == sorted(f"clip{i:04d}" for i in range(24)) and set(seen.values()) == {1}
    assert all(per_rank)
    for batches in per_rank:
        for b in batches:
            n, longest = len(b["keys"]), int(b["lengths"].max())
            assert n <= CFG.max_batch_clips and n * longest <= CFG.batch_seconds * 16000 + n
            assert longest <= CFG.max_crop_s * 16000 + 1


def test_ray_data_reads_only_flac_and_json_members_and_never_unpickles(ray_local, tmp_path):
    url = make_tone_dataset(tmp_path / "wav", str(tmp_path / "shards"), n_train=4, n_eval=1, clips_per_shard=4)
    canary = tmp_path / "unpickled"
    shard = read_manifest(url).shard_urls("train")[0]
    with tarfile.open(shard, "a") as tar:  # a hostile extra member that a pickle decoder would run
        data = pickle.dumps(_Canary(str(canary)))
        info = tarfile.TarInfo("clip0000.pyd")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    plan = plan_epoch(read_manifest(url), "train", CFG, world_size=1, train=True)
    (batches,) = consume_splits(build_train_dataset(plan), plan, 1)
    assert sorted(k for b in batches for k in b["keys"]) == [f"clip{i:04d}" for i in range(4)]
    assert not canary.exists()


def test_ray_data_batches_hold_the_same_audio_and_targets_as_the_shards(ray_local, tones):
    url = tones
    cfg = replace(CFG, max_crop_s=8.0)  # no crop: whole clips, comparable sample by sample
    m = read_manifest(url)
    plan = plan_epoch(m, "train", cfg, world_size=1, train=True)
    stored = {s.key: s for u in m.shard_urls("train") for s in iter_shard(u)}
    (batches,) = consume_splits(build_train_dataset(plan, seed=3), plan, 1)
    for b in batches:
        for i, key in enumerate(b["keys"]):
            audio = torch.from_numpy(stored[key].audio)
            assert int(b["lengths"][i]) == audio.numel()
            assert torch.equal(b["waveform"][i, :audio.numel()], audio)
            assert np.flatnonzero(b["targets"][i].numpy()).tolist() == stored[key].meta["labels"]


def test_the_ray_data_path_refuses_balanced_sampling(tones):
    url = tones
    plan = plan_epoch(read_manifest(url), "train", CFG, world_size=1, train=True, sampling="balanced")
    with pytest.raises(ValueError, match="in-process loader"):
        next(iter_ray_batches(None, plan, epoch=0, seed=0, rank=0))


@pytest.mark.slow
def test_ray_train_workers_receive_decoded_rows_and_run_the_same_number_of_steps(ray_local, tones, tmp_path):
    import json

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def train_fn(config):  # nested: shipped to the workers by value (tests/ is not importable there)
        import json as _json

        import ray.train

        from trainer.data import EpochPlan
        from trainer.ray_data_input import iter_ray_batches as _iter

        rank = ray.train.get_context().get_world_rank()
        plan = EpochPlan.from_dict(config["plan"])
        batches = list(_iter(ray.train.get_dataset_shard("train"), plan, epoch=0, seed=0, rank=rank))
        with open(f"{config['out']}/rank{rank}.json", "w") as f:
            _json.dump({"keys": [b["keys"] for b in batches]}, f)

    plan = plan_epoch(read_manifest(tones), "train", CFG, world_size=2, train=True)
    trainer = TorchTrainer(train_fn, train_loop_config={"plan": plan.to_dict(), "out": str(tmp_path)},
                           # the 2-CPU test cluster: half a CPU per Train worker leaves one for decoding
                           # (with every CPU taken by Train workers the read tasks never start)
                           scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                           datasets={"train": build_train_dataset(plan, decode_num_cpus=0.5)},
                           run_config=RunConfig(name="ray-data-input", storage_path=str(tmp_path / "runs")))
    trainer.fit()
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text())["keys"] for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) > 0  # synced stop: equal steps, no DDP hang
    keys = [k for batches in per_rank for b in batches for k in b]
    assert len(keys) == len(set(keys)) and set(keys) <= {f"clip{i:04d}" for i in range(24)}
