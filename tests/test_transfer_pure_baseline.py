"""Specification of the MFCC-statistics baseline (transfer/baseline.py). Audio is generated in code."""
from __future__ import annotations

import numpy as np
import pytest

from transfer.baseline import MFCCStats, mfcc_stats, mfcc_stats_batch

SR = 16000


def sine(freq: float, seconds: float = 1.0, phase: float = 0.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(SR * seconds))).astype(np.float32)


@pytest.mark.parametrize("delta_order", [0, 1, 2])
def test_vector_length_is_mean_and_std_of_mfccs_and_each_delta_order(delta_order):
    ext = MFCCStats(SR, n_mfcc=13, delta_order=delta_order)
    v = ext(noise())
    assert v.shape == (ext.dim,) == (2 * 13 * (1 + delta_order),)
    assert len(ext.names()) == ext.dim and len(set(ext.names())) == ext.dim
    assert np.all(np.isfinite(v))


def test_batch_of_different_lengths_equals_one_clip_at_a_time():
    clips = [sine(440, 0.5), noise(1.3), sine(3000, 2.0)]
    batch = mfcc_stats_batch(clips, SR)
    assert batch.shape == (3, MFCCStats(SR).dim)
    for row, clip in zip(batch, clips):
        np.testing.assert_array_equal(row, mfcc_stats(clip, SR))


def test_gain_changes_only_the_energy_coefficient_mean():
    """A gain g adds 20*log10(g) dB to every mel band; the orthonormal DCT moves that constant
    into c0 alone (scaled by sqrt(n_mels)), and deltas ignore constants."""
    ext = MFCCStats(SR, n_mfcc=13, n_mels=40)
    x = noise(1.0)
    a, b = ext(x), ext(0.5 * x)
    names = ext.names()
    c0 = names.index("mfcc0_mean")
    np.testing.assert_allclose(b[c0] - a[c0], 20 * np.log10(0.5) * np.sqrt(40), atol=1e-2)
    others = [i for i in range(ext.dim) if i != c0]
    np.testing.assert_allclose(b[others], a[others], atol=1e-3)


def test_same_tone_is_close_and_different_tone_is_far():
    a = mfcc_stats(sine(440), SR)
    same = mfcc_stats(sine(440, phase=1.0), SR)
    other = mfcc_stats(sine(3000), SR)
    assert np.linalg.norm(a - same) < 0.1 * np.linalg.norm(a - other)


def test_silence_and_clips_shorter_than_one_frame_give_finite_vectors():
    assert np.all(np.isfinite(mfcc_stats(np.zeros(SR, dtype=np.float32), SR)))
    assert np.all(np.isfinite(mfcc_stats(sine(440, 0.01), SR)))  # 160 samples < n_fft


def test_invalid_waveforms_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        mfcc_stats(np.zeros(0), SR)
    with pytest.raises(ValueError, match="mono"):
        mfcc_stats(np.zeros((2, SR)), SR)
    with pytest.raises(ValueError, match="NaN"):
        mfcc_stats(np.full(SR, np.nan), SR)
    with pytest.raises(ValueError, match="n_mfcc"):
        MFCCStats(SR, n_mfcc=80, n_mels=40)
