"""trainer/sampling.py: class-balanced epochs from the manifest's labels, streamed without random access."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from data_prep.manifest import read_manifest
from data_prep.shards import iter_shard
from test_trainer_data import CFG, make_tone_dataset
from trainer.data import ShardStream, pass_of, plan_epoch
from trainer.sampling import balanced_weights, class_exposure, clip_labels, epoch_multiplicities, exposure_ratio


def long_tail(num_classes=40, head=700, co_label=0.1, seed=0):
    """Class c is the main label of ~head / (c+1)^1.3 clips (a few classes in most clips, many rare);
    a tenth of the clips carry a second, uniformly drawn label."""
    rng = np.random.default_rng(seed)
    labels = []
    for c in range(num_classes):
        for _ in range(max(1, int(head / (c + 1) ** 1.3))):
            extra = {int(rng.integers(num_classes))} if rng.random() < co_label else set()
            labels.append(sorted({c} | extra))
    return labels


def test_balanced_sampling_exposes_every_class_within_2x_where_natural_sampling_does_not():
    labels, c = long_tail(), 40
    n = len(labels)
    natural = exposure_ratio(class_exposure(labels, np.ones(n), c))
    w = balanced_weights(labels, c)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    for epoch in range(3):
        m = epoch_multiplicities(w, n, np.random.default_rng(epoch))
        assert exposure_ratio(class_exposure(labels, m, c)) <= 2.0
    assert natural > 20.0


def test_multiplicities_draw_exactly_the_epoch_size_each_clip_near_its_expectation():
    w = np.random.default_rng(1).random(500)
    m = epoch_multiplicities(w, 800, np.random.default_rng(2))
    expected = 800 * w / w.sum()
    assert m.sum() == 800 and (m >= 0).all()
    assert (np.abs(m - expected) < 1.0 + 1e-9).all()  # floor or ceil of the expectation


def test_classes_absent_from_the_split_are_ignored_and_unlabelled_clips_still_get_weight():
    labels = [[0], [0], [0], [2], []]
    w = balanced_weights(labels, num_classes=4)
    assert w[3] > w[0] and w[4] > 0
    assert exposure_ratio(class_exposure(labels, w, 4), present=[True, False, True, False]) < 1.5


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tones_sampling")
    return make_tone_dataset(tmp / "wav", str(tmp / "shards"), n_train=24, n_eval=2, seed=4)


def test_clip_labels_come_from_the_shard_indexes_in_manifest_order_without_reading_audio(tones):
    m = read_manifest(tones)
    stored = [s.meta["labels"] for u in m.shard_urls("train") for s in iter_shard(u, decode_audio=False)]
    assert clip_labels(m, "train") == stored


def test_a_balanced_epoch_streams_each_drawn_clip_as_often_as_it_was_drawn(tones):
    m = read_manifest(tones)
    plan = plan_epoch(m, "train", CFG, world_size=2, train=True, sampling="balanced")
    keys = [s.key for u in m.shard_urls("train") for s in iter_shard(u, decode_audio=False)]
    p = pass_of(plan, epoch=0, pass_index=0, seed=0)
    drawn = Counter(keys[c] for c in p.sequence)
    dropped = Counter(keys[c] for c in p.sequence[p.dropped])
    seen = Counter(k for r in range(2) for b in ShardStream(plan, CFG, rank=r, world_size=2, epoch=0, seed=0,
                                                             train=True) for k in b["keys"])
    assert seen + dropped == drawn
    assert sum(drawn.values()) == len(keys) and max(drawn.values()) > 1  # with replacement


def test_unknown_sampling_modes_are_refused(tones):
    with pytest.raises(ValueError, match="natural"):
        plan_epoch(read_manifest(tones), "train", CFG, world_size=1, train=True, sampling="uniform")
