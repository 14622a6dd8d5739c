"""trainer/data.py + trainer/batch_plan.py: exact epochs on every rank count, resume at any step."""
from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from data_prep.manifest import read_manifest
from data_prep.shards import iter_shard
from test_trainer_data import CFG, make_tone_dataset
from trainer.batch_plan import BatchingSpec, plan_pass
from trainer.data import ShardStream, make_loader, pass_of, plan_epoch, steps_in_epoch


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """31 training clips in shards of 8, 8, 8, 7 clips, durations 0.6..3 s; 4 eval clips."""
    tmp = tmp_path_factory.mktemp("uneven")
    return make_tone_dataset(tmp / "wav", str(tmp / "shards"), n_train=31, n_eval=4, seed=3)


def manifest_keys(url: str, split: str = "train") -> list[str]:
    m = read_manifest(url)
    return [s.key for u in m.shard_urls(split) for s in iter_shard(u, decode_audio=False)]


def epoch_batches(plan, cfg, rank, world, epoch=0, seed=0, start_step=0):
    return list(ShardStream(plan, cfg, rank=rank, world_size=world, epoch=epoch, seed=seed, train=True,
                            start_step=start_step))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_an_epoch_uses_every_clip_exactly_once_up_to_a_tail_of_one_batch_per_rank(uneven, world):
    m = read_manifest(uneven)
    plan = plan_epoch(m, "train", CFG, world_size=world, train=True, seed=5)
    assert plan_epoch(m, "train", CFG, world_size=world, train=True, seed=5, epochs=2).steps_per_epoch \
        >= plan.steps_per_epoch
    keys = manifest_keys(uneven)
    for epoch in (0, 1, 2):
        per_rank = [epoch_batches(plan, CFG, r, world, epoch=epoch, seed=5) for r in range(world)]
        steps = steps_in_epoch(plan, epoch, seed=5)
        assert [len(b) for b in per_rank] == [steps] * world  # same steps on every rank: no DDP hang
        seen = Counter(k for batches in per_rank for b in batches for k in b["keys"])
        assert max(seen.values()) == 1  # no clip twice
        p = pass_of(plan, epoch=epoch, pass_index=0, seed=5)
        dropped = {keys[c] for c in p.sequence[p.dropped]}
        assert set(seen) | dropped == set(keys) and not set(seen) & dropped  # the rest is the tail
        assert p.num_batches - p.steps_per_stream * world < world  # tail: < one batch per rank
        assert steps == plan.steps_per_epoch  # the same in every epoch
        for batches in per_rank:
            for b in batches:
                n, longest = len(b["keys"]), int(b["lengths"].max())
                assert n <= CFG.max_batch_clips and n * longest <= CFG.batch_seconds * 16000 + n
                assert longest <= CFG.max_crop_s * 16000 + 1


def test_streams_hand_over_surplus_batches_and_halve_batches_so_nothing_is_dropped():
    # one shard of short clips (capped at 8 per batch), one of long ones: equal-audio segments
    # give the streams very different batch counts
    durations = np.r_[np.full(100, 0.5), np.random.default_rng(0).uniform(1.5, 3.0, 100)]
    spec = BatchingSpec((1.0, 2.0), batch_seconds=8.0, max_batch_clips=8, max_crop_s=2.0, shuffle_buffer=16)
    p = plan_pass(durations, [100, 100], spec, num_streams=3, seed=1, epoch=0)
    assert [len(s) for s in p.streams] == [p.steps_per_stream] * 3 == [-(-p.num_batches // 3)] * 3
    kept = [b for s in p.streams for b in s]
    assert sorted(np.concatenate([b[:, 0] for b in kept]).astype(int).tolist()) == list(range(200))
    assert p.dropped.size == 0 and any(p.own[s] < len(p.streams[s]) for s in range(3))  # some were handed over
    for b in kept:
        assert len(b) <= 8 and len(b) * b[:, 2].max() <= 8.0 + 1e-9


def test_with_fewer_steps_fixed_than_batches_formed_only_the_smallest_surplus_batches_are_dropped():
    durations = np.random.default_rng(2).uniform(0.5, 3.0, 300)
    spec = BatchingSpec((1.0, 2.0), batch_seconds=8.0, max_batch_clips=8, max_crop_s=2.0, shuffle_buffer=16)
    free = plan_pass(durations, [100, 100, 100], spec, num_streams=3, seed=1, epoch=0)
    fixed = plan_pass(durations, [100, 100, 100], spec, num_streams=3, seed=1, epoch=0,
                      steps_per_stream=free.num_batches // 3)
    kept = [b for s in fixed.streams for b in s]
    assert len(kept) == 3 * (free.num_batches // 3) and free.num_batches - len(kept) < 3  # < one per stream
    positions = np.concatenate([b[:, 0] for b in kept] + [fixed.dropped]).astype(int)
    assert sorted(positions.tolist()) == list(range(300))
    assert fixed.dropped.size <= (free.num_batches - len(kept)) * min(len(b) for b in kept)


def test_a_plan_made_for_its_epochs_drops_no_clip_in_any_of_them(uneven):
    plan = plan_epoch(read_manifest(uneven), "train", CFG, world_size=3, train=True, seed=9, epochs=4)
    for epoch in range(4):
        p = pass_of(plan, epoch=epoch, pass_index=0, seed=9)
        assert p.dropped.size == 0 and p.steps_per_stream * 3 == plan.steps_per_epoch * 3
        assert sorted(p.sequence[np.concatenate([b[:, 0] for s in p.streams for b in s]).astype(int)]) \
            == list(range(31))


def test_an_epoch_started_at_step_k_gives_exactly_the_remaining_batches(uneven):
    world = 2
    plan = plan_epoch(read_manifest(uneven), "train", CFG, world_size=world, train=True, seed=2)
    for rank in range(world):
        full = epoch_batches(plan, CFG, rank, world, epoch=1, seed=2)
        for k in (1, 2, len(full) // 2, len(full) - 1, len(full)):
            rest = epoch_batches(plan, CFG, rank, world, epoch=1, seed=2, start_step=k)
            assert len(rest) == len(full) - k
            for a, b in zip(full[k:], rest):
                assert a["keys"] == b["keys"]
                assert torch.equal(a["waveform"], b["waveform"]) and torch.equal(a["targets"], b["targets"])


def test_a_loader_started_late_never_opens_shards_that_only_earlier_batches_used(uneven, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(uneven, copy)
    m = read_manifest(str(copy))
    plan = plan_epoch(m, "train", CFG, world_size=1, train=True)
    full = epoch_batches(plan, CFG, 0, 1)
    last = plan.steps_per_epoch - 1
    p = pass_of(plan, epoch=0, pass_index=0, seed=0)
    clips = p.sequence[p.streams[0][last][:, 0].astype(int)]
    starts = np.cumsum([0, *plan.shard_sizes])
    needed = {int(np.searchsorted(starts, c, side="right")) - 1 for c in clips}
    assert len(needed) < len(plan.shard_urls)
    for i, url in enumerate(plan.shard_urls):
        if i not in needed:
            os.remove(url)  # reading it now would fail
    rest = epoch_batches(plan, CFG, 0, 1, start_step=last)
    assert [b["keys"] for b in rest] == [full[-1]["keys"]]
    assert torch.equal(rest[0]["waveform"], full[-1]["waveform"])


def test_same_epoch_and_seed_give_the_same_batches_and_a_new_epoch_reshuffles(uneven):
    plan = plan_epoch(read_manifest(uneven), "train", CFG, world_size=1, train=True)

    def keys(epoch, seed=1):
        return [b["keys"] for b in epoch_batches(plan, CFG, 0, 1, epoch=epoch, seed=seed)]

    assert keys(0) == keys(0)
    assert keys(0) != keys(1)


def test_loader_workers_each_serve_one_stream_and_the_loader_keeps_the_planned_order(uneven):
    cfg = replace(CFG, loader_workers=2)
    plan = plan_epoch(read_manifest(uneven), "train", cfg, world_size=1, train=True)
    assert plan.streams_per_rank == 2 and plan.steps_per_epoch % 2 == 0
    full = [b["keys"] for b in make_loader(plan, cfg, rank=0, world_size=1, epoch=0, seed=0, train=True)]
    loader = make_loader(plan, cfg, rank=0, world_size=1, epoch=0, seed=0, train=True, start_step=3)
    assert len(full) == plan.steps_per_epoch and len(loader) == plan.steps_per_epoch - 3
    assert [b["keys"] for b in loader] == full[3:]
    p = pass_of(plan, epoch=0, pass_index=0, seed=0)
    keys = manifest_keys(uneven)
    planned = [[keys[c] for c in p.sequence[b[:, 0].astype(int)]] for b in p.streams[0]]
    assert full[0::2] == planned  # worker 0 serves stream 0, in plan order
    assert max(Counter(k for b in full for k in b).values()) == 1


def test_a_loader_refuses_a_plan_made_for_another_world_size_or_worker_count(uneven):
    plan = plan_epoch(read_manifest(uneven), "train", CFG, world_size=2, train=True)
    with pytest.raises(ValueError, match="2 ranks"):
        ShardStream(plan, CFG, rank=0, world_size=3, epoch=0, seed=0, train=True)
    with pytest.raises(ValueError, match="loader_workers=2"):
        ShardStream(plan, replace(CFG, loader_workers=2), rank=0, world_size=2, epoch=0, seed=0, train=True)


def test_fixed_steps_per_epoch_continue_into_the_next_pass(uneven):
    cfg = replace(CFG, steps_per_epoch=0)
    one_pass = plan_epoch(read_manifest(uneven), "train", cfg, world_size=1, train=True).steps_per_epoch
    cfg = replace(CFG, steps_per_epoch=one_pass + 3)
    plan = plan_epoch(read_manifest(uneven), "train", cfg, world_size=1, train=True)
    batches = epoch_batches(plan, cfg, 0, 1)
    assert len(batches) == one_pass + 3
    first_pass = Counter(k for b in batches[:one_pass] for k in b["keys"])
    assert max(first_pass.values()) == 1
    rest = epoch_batches(plan, cfg, 0, 1, start_step=one_pass + 1)
    assert [b["keys"] for b in rest] == [b["keys"] for b in batches[one_pass + 1:]]


def test_no_stream_ends_with_a_one_clip_batch_that_batchnorm_could_not_normalise():
    # many duration buckets and few clips per stream: flushed partial buckets are often single clips
    durations = np.random.default_rng(4).uniform(0.3, 3.0, 90)
    spec = BatchingSpec(tuple(np.linspace(0.5, 2.5, 9)), batch_seconds=8.0, max_batch_clips=8, max_crop_s=2.0,
                        shuffle_buffer=4)
    for seed in range(5):
        p = plan_pass(durations, [30, 30, 30], spec, num_streams=3, seed=seed, epoch=0)
        kept = [b for s in p.streams for b in s]
        assert sorted(np.concatenate([b[:, 0] for b in kept]).astype(int).tolist()) == list(range(90))
        assert min(len(b) for b in kept) >= 2
        for b in kept:
            assert len(b) <= 8 and len(b) * b[:, 2].max() <= 8.0 + 1e-9
