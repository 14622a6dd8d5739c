"""trainer/metrics.py against scikit-learn on random data."""
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from trainer.metrics import average_precision, clip_metrics, d_prime, map_by_duration, roc_auc


def _data(n=300, c=12, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.02, 0.4, c)).astype(int)
    s = rng.random((n, c)) + 0.6 * y
    if ties:
        s = np.round(s, 1)  # many equal scores
    y[:, 0] = 0  # a class with no positive: skipped
    y[:, 1] = 1  # a class with no negative: skipped
    return y, s


@pytest.mark.parametrize("ties", [False, True])
def test_per_class_ap_and_auc_match_sklearn(ties):
    y, s = _data(ties=ties)
    for j in range(2, y.shape[1]):
        assert average_precision(y[:, j], s[:, j]) == pytest.approx(average_precision_score(y[:, j], s[:, j]))
        assert roc_auc(y[:, j], s[:, j]) == pytest.approx(roc_auc_score(y[:, j], s[:, j]))


def test_macro_metrics_skip_classes_without_positives_or_negatives():
    y, s = _data()
    m = clip_metrics(y, s)
    ok = slice(2, None)
    assert m["num_classes_scored"] == y.shape[1] - 2
    assert m["mAP"] == pytest.approx(average_precision_score(y[:, ok], s[:, ok], average="macro"))
    assert m["mean_auc"] == pytest.approx(roc_auc_score(y[:, ok], s[:, ok], average="macro"))
    assert np.isnan(m["per_class_ap"][0]) and np.isnan(m["per_class_ap"][1])


def test_d_prime_is_sqrt2_times_the_normal_quantile_of_auc():
    assert d_prime(0.5) == pytest.approx(0.0)
    assert d_prime(0.927) == pytest.approx(math.sqrt(2) * 1.4538, abs=1e-3)
    assert math.isfinite(d_prime(1.0))


def test_map_by_duration_scores_each_bucket_on_its_own_clips():
    y, s = _data(n=400)
    dur = np.random.default_rng(1).uniform(0.5, 20, len(y))
    buckets = map_by_duration(y, s, dur, [0.5, 5.0, 20.0])
    assert [b["num_clips"] for b in buckets] == [int((dur < 5).sum()), int((dur >= 5).sum())]
    short = dur < 5
    assert buckets[0]["mAP"] == pytest.approx(clip_metrics(y[short], s[short])["mAP"])
