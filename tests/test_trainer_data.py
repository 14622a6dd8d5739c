"""trainer/data.py, trainer/collate.py: eval streams, collate, S3 (exact training epochs: test_trainer_epochs)."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.manifest import read_manifest
from data_prep.pipeline import run_prep
from data_prep.records import ClipRecord, LabelVocab, SourceListing
from data_prep.shards import ShardConfig
from trainer.config import DataConfig
from trainer.data import ShardStream, make_loader, plan_epoch

TONE_HZ = (300.0, 900.0, 2200.0, 5000.0)
VOCAB = LabelVocab(ids=tuple(f"tone{int(f)}" for f in TONE_HZ), names=tuple(f"Tone {int(f)} Hz" for f in TONE_HZ))


def make_tone_dataset(root: Path, out: str, *, n_train: int, n_eval: int, rate: int = 16000,
                      clips_per_shard: int = 8, durations=None, seed: int = 0) -> str:
    """Write tone clips (labels = which of 4 tones sound, plus noise) and shard them with
    data_prep's own pipeline. Returns ``out``. ``durations`` (seconds) cycles over the clips."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_train + n_eval):
        dur = float(durations[i % len(durations)]) if durations is not None else float(rng.uniform(0.6, 3.0))
        labels = sorted(set(rng.choice(len(TONE_HZ), size=int(rng.integers(1, 3)), replace=True).tolist()))
        t = np.arange(int(dur * rate)) / rate
        wave = 0.05 * rng.standard_normal(t.size)
        for k in labels:
            wave += 0.2 * np.sin(2 * np.pi * TONE_HZ[k] * t + rng.uniform(0, 6.28))
        path = root / f"clip{i:04d}.wav"
        sf.write(path, wave.astype(np.float32), rate)
        split = "train" if i < n_train else "eval"
        records.append(ClipRecord(f"clip{i:04d}", str(path), tuple(VOCAB.ids[k] for k in labels), split))
    run_prep(SourceListing("tones", VOCAB, records, []), out,
             ShardConfig(sample_rate=rate, max_clips_per_shard=clips_per_shard), executor="local", progress=False)
    return out


CFG = DataConfig(max_crop_s=2.0, batch_seconds=8.0, max_batch_clips=8, num_buckets=4, shuffle_buffer=16,
                 loader_workers=0, eval_batch_seconds=16.0)


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tones")
    # 3 train shards of 8 clips each + one of 4: uneven; 10 eval clips in 2 shards
    return make_tone_dataset(tmp / "wav", str(tmp / "shards"), n_train=28, n_eval=10)


def test_eval_streams_give_every_clip_exactly_once_across_ranks_at_full_length(tones):
    m = read_manifest(tones)
    plan = plan_epoch(m, "eval", CFG, world_size=3, train=False)
    seen = Counter()
    for rank in range(3):  # 3 ranks > 2 eval shards: split by sample
        for batch in ShardStream(plan, CFG, rank=rank, world_size=3, epoch=0, seed=0, train=False):
            seen.update(batch["keys"])
            full = (batch["durations"] * 16000).round().long()
            assert batch["lengths"].tolist() == full.tolist()  # no crop in evaluation
    assert sorted(seen) == sorted(f"clip{i:04d}" for i in range(28, 38)) and set(seen.values()) == {1}


def test_collate_pads_to_the_longest_clip_applies_crops_and_builds_multi_hot_targets():
    from trainer.bucketing import BatchItem
    from trainer.collate import collate, pad_waveforms

    a, b = np.arange(5, dtype=np.float32), np.ones(3, dtype=np.float32)
    wave, lengths = pad_waveforms([a, b])
    assert wave.shape == (2, 5) and lengths.tolist() == [5, 3] and wave[1].tolist() == [1, 1, 1, 0, 0]
    items = [BatchItem({"key": "x", "audio": a, "labels": [0, 2], "duration_s": 5 / 10}, 0.2, 0.3),
             BatchItem({"key": "y", "audio": b, "labels": [1], "duration_s": 3 / 10}, 0.0, 0.3)]
    batch = collate(items, num_classes=3, sample_rate=10)
    assert batch["waveform"][0].tolist() == [2, 3, 4] and batch["lengths"].tolist() == [3, 3]
    assert batch["targets"].tolist() == [[1, 0, 1], [0, 1, 0]] and batch["keys"] == ["x", "y"]
    with pytest.raises(ValueError, match="1-D"):
        pad_waveforms([np.zeros((2, 2))])


def test_loader_workers_split_the_stream_between_processes(tones):
    cfg = replace(CFG, loader_workers=2)
    plan = plan_epoch(read_manifest(tones), "eval", cfg, world_size=1, train=False)
    keys = [k for b in make_loader(plan, cfg, rank=0, world_size=1, epoch=0, seed=0, train=False) for k in b["keys"]]
    assert sorted(keys) == sorted(f"clip{i:04d}" for i in range(28, 38))


def test_splits_joined_by_plus_stream_every_clip_of_each_once_and_an_absent_one_is_named(tones):
    m = read_manifest(tones)
    joined = plan_epoch(m, "train+eval", CFG, world_size=1, train=False)
    assert joined.num_clips == 38 and sorted(joined.shard_urls) == sorted(m.shard_urls("train") + m.shard_urls("eval"))
    keys = [k for b in ShardStream(joined, CFG, rank=0, world_size=1, epoch=0, seed=0, train=False)
            for k in b["keys"]]
    assert sorted(keys) == [f"clip{i:04d}" for i in range(38)]
    with pytest.raises(ValueError, match="no shards for split 'val'"):
        plan_epoch(m, "train+val", CFG, world_size=1, train=True)


def test_shards_stream_from_s3(tmp_path, s3_bucket):
    url = make_tone_dataset(tmp_path / "wav", f"{s3_bucket}/tones", n_train=6, n_eval=4, clips_per_shard=4)
    m = read_manifest(url)
    plan = plan_epoch(m, "eval", CFG, world_size=1, train=False)
    assert plan.shard_urls[0].startswith("s3://")
    keys = [k for b in ShardStream(plan, CFG, rank=0, world_size=1, epoch=0, seed=0, train=False) for k in b["keys"]]
    assert sorted(keys) == [f"clip{i:04d}" for i in range(6, 10)]
    train = plan_epoch(m, "train", CFG, world_size=1, train=True)
    used = [k for b in ShardStream(train, CFG, rank=0, world_size=1, epoch=0, seed=0, train=True) for k in b["keys"]]
    assert len(used) == len(set(used)) and set(used) <= {f"clip{i:04d}" for i in range(6)}
