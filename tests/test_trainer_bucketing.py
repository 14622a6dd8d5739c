"""trainer/bucketing.py: budget, crop, padding on a long-tailed distribution, exact resume."""
import json

import numpy as np
import pytest

from trainer.bucketing import BucketBatcher, estimate_duration_bins, padding_fraction, random_batches


def web_like_durations(n, seed=0):
    """Long-tailed web audio: log-normal, median ~3 s, clipped to 0.5..60 s."""
    return np.clip(np.random.default_rng(seed).lognormal(np.log(3.0), 1.0, n), 0.5, 60.0)


def _run(durations, seed=0, **kw):
    bins = estimate_duration_bins(np.minimum(durations[:2000], kw.get("max_crop_s") or np.inf), 30)
    b = BucketBatcher(bins, rng=np.random.default_rng(seed), **kw)
    return list(b(((d, i) for i, d in enumerate(durations))))


def test_every_clip_lands_in_exactly_one_batch_and_no_batch_exceeds_the_budget():
    d = web_like_durations(3000)
    batches = _run(d, batch_seconds=120.0, max_batch_clips=40, max_crop_s=10.0)
    keys = [e.item for b in batches for e in b]
    assert sorted(keys) == list(range(len(d)))  # nothing dropped, nothing duplicated
    for b in batches:
        assert len(b) <= 40
        assert len(b) * max(e.duration_s for e in b) <= 120.0 + 1e-9


def test_long_clips_are_cropped_at_a_random_offset_inside_the_clip():
    d = web_like_durations(2000)
    crops = [e for b in _run(d, batch_seconds=120.0, max_crop_s=10.0) for e in b]
    long = [e for e in crops if d[e.item] > 10.0]
    assert long and all(e.duration_s == 10.0 for e in long)
    assert all(0.0 <= e.offset_s <= d[e.item] - 10.0 for e in long)
    assert len({round(e.offset_s, 6) for e in long}) > len(long) // 2  # offsets vary
    assert all(e.offset_s == 0.0 and e.duration_s == d[e.item] for e in crops if d[e.item] <= 10.0)


def test_padding_is_at_most_5_percent_bucketed_vs_at_least_40_percent_random():
    d = web_like_durations(20000)
    assert np.median(d) == pytest.approx(3.0, rel=0.1)
    bucketed = [[e.duration_s for e in b] for b in _run(d, batch_seconds=160.0, max_batch_clips=64, max_crop_s=10.0)]
    mean_bs = int(round(np.mean([len(b) for b in bucketed])))
    random = random_batches(d, mean_bs, np.random.default_rng(1), max_crop_s=10.0)
    assert padding_fraction(bucketed) <= 0.05
    assert padding_fraction(random) >= 0.40


def test_padding_fraction_counts_padded_share_of_the_batch_tensors():
    assert padding_fraction([[1.0, 1.0], [2.0]]) == 0.0
    assert padding_fraction([[1.0, 3.0]]) == pytest.approx(1 - 4 / 6)


def test_same_seed_same_batches_different_seed_different_crops():
    d = web_like_durations(500)
    a = _run(d, seed=3, batch_seconds=60.0, max_crop_s=5.0)
    assert a == _run(d, seed=3, batch_seconds=60.0, max_crop_s=5.0)
    assert a != _run(d, seed=4, batch_seconds=60.0, max_crop_s=5.0)


def test_resume_mid_stream_gives_the_remaining_batches_of_the_uninterrupted_run():
    d = web_like_durations(800)
    bins = estimate_duration_bins(np.minimum(d, 8.0), 10)
    full = BucketBatcher(bins, batch_seconds=50.0, max_crop_s=8.0, rng=np.random.default_rng(7))
    expected = list(full((x, i) for i, x in enumerate(d)))

    first = BucketBatcher(bins, batch_seconds=50.0, max_crop_s=8.0, rng=np.random.default_rng(7))
    got = [b for i, x in enumerate(d[:300]) if (b := first.add(x, i)) is not None]
    state = json.loads(json.dumps(first.state_dict()))  # must survive JSON (checkpoint sidecar)
    second = BucketBatcher(bins, batch_seconds=50.0, max_crop_s=8.0, rng=np.random.default_rng(999))
    second.load_state_dict(state)
    got += list(second((x, i + 300) for i, x in enumerate(d[300:])))
    assert [[tuple(e) for e in b] for b in got] == [[tuple(e) for e in b] for b in expected]


def test_resume_refuses_a_batcher_with_different_settings():
    bins = estimate_duration_bins(web_like_durations(100), 5)
    state = BucketBatcher(bins, batch_seconds=50.0, rng=np.random.default_rng(0)).state_dict()
    other = BucketBatcher(bins, batch_seconds=80.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_seconds=50.0"):
        other.load_state_dict(state)


def test_drop_last_discards_only_the_partial_batches_at_the_end():
    d = [3.0] * 25
    b = BucketBatcher([], batch_seconds=30.0, rng=np.random.default_rng(0), drop_last=True)
    batches = list(b((x, i) for i, x in enumerate(d)))
    assert [len(x) for x in batches] == [10, 10]  # the last 5 clips form a partial batch: dropped
