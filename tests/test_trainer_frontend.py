"""trainer/frontend.py: parity with librosa, per-clip floor, padding invariance."""
import numpy as np
import pytest
import torch

from trainer.config import FrontEndConfig
from trainer.frontend import LogMel, frames_from_samples

librosa = pytest.importorskip("librosa")

TOL_DB = 1e-3  # measured ~5e-4 dB between torchaudio float32 and librosa float32


def _signal(seconds, sr, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t))
            + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _librosa_logmel(y, cfg):
    S = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                       n_mels=cfg.n_mels)
    return librosa.power_to_db(S, ref=1.0, top_db=cfg.top_db).T  # (T, n_mels)


@pytest.mark.parametrize("cfg", [FrontEndConfig(), FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256,
                                                                    n_mels=64)], ids=["paper", "cpu-small"])
def test_log_mel_matches_librosa_melspectrogram_and_power_to_db(cfg):
    y = _signal(2.0, cfg.sample_rate)
    ref = _librosa_logmel(y, cfg)
    x, n = LogMel(cfg)(torch.from_numpy(y)[None])
    assert x.shape == (1, 1, ref.shape[0], cfg.n_mels)
    assert int(n[0]) == ref.shape[0] == frames_from_samples(len(y), cfg.hop_length)
    np.testing.assert_allclose(x[0, 0].numpy(), ref, atol=TOL_DB, rtol=0)


def test_top_db_floor_is_per_clip_and_ignores_batch_padding():
    cfg = FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)
    loud, quiet = _signal(1.5, 16000, 1), 1e-3 * _signal(0.8, 16000, 2)
    fe = LogMel(cfg)
    batch = torch.zeros(2, len(loud))
    batch[0], batch[1, :len(quiet)] = torch.from_numpy(loud), torch.from_numpy(quiet)
    x, n = fe(batch, torch.tensor([len(loud), len(quiet)]))
    alone, _ = fe(torch.from_numpy(quiet)[None])
    assert int(n[1]) == alone.shape[2]
    # the quiet clip keeps its own 80 dB range and the zero padding after it changes nothing
    torch.testing.assert_close(x[1, :, :int(n[1])], alone[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(x[1, 0, :int(n[1])].numpy(), _librosa_logmel(quiet, cfg), atol=TOL_DB, rtol=0)
    assert torch.all(x[1, :, int(n[1]):] == 0)


def test_short_clips_are_padded_to_one_segment_with_zero_or_the_clip_minimum():
    cfg = FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)
    y = torch.from_numpy(_signal(0.5, 16000))[None]  # 32 frames < 64
    x0, n0 = LogMel(cfg, min_frames=64)(y)
    assert x0.shape[2] == 64 and int(n0[0]) == 64
    assert torch.all(x0[0, 0, 32:] == 0)
    xm, _ = LogMel(FrontEndConfig(**{**cfg.__dict__, "short_pad": "min"}), min_frames=64)(y)
    assert torch.all(xm[0, 0, 32:] == xm[0, 0, :32].min())


def test_frames_from_samples_counts_centred_frames():
    assert frames_from_samples(220500, 512) == 431  # 5 s at 44.1 kHz: ESC-50 clip
    assert frames_from_samples(441000, 512) == 862  # 10 s: AudioSet clip
    assert frames_from_samples(torch.tensor([0, 511, 512]), 512).tolist() == [1, 1, 2]
