"""Hand-crafted baseline: MFCC statistics over time, scored with the same SVM protocol.

Every transfer result is read against this row (issue 5). A clip becomes the concatenation of
the per-coefficient mean and standard deviation over frames of the MFCCs and of their deltas
up to ``delta_order`` (1: deltas; 2: deltas and delta-deltas), i.e. ``2 * n_mfcc * (1 + delta_order)``
values. MFCCs come from ``torchaudio.transforms.MFCC`` (mel power spectrogram -> dB with
top_db 80 -> DCT-II, orthonormal); deltas from ``torchaudio.functional.compute_deltas``
(5-frame regression window, edge frames replicated).

Example:
    >>> import numpy as np
    >>> t = np.arange(22050) / 22050
    >>> mfcc_stats(np.sin(2 * np.pi * 440 * t), sample_rate=22050).shape
    (80,)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchaudio

__all__ = ["MFCCStats", "mfcc_stats", "mfcc_stats_batch"]


class MFCCStats:
    """Callable that maps a mono waveform (time,) to its MFCC statistics vector (D,).

    Build it once per sample rate and reuse it: the mel filterbank and DCT matrix are
    precomputed by torchaudio in the constructor.

    Args:
        sample_rate: input sample rate in Hz.
        n_mfcc: cepstral coefficients kept (c0 included). Default 20.
        n_fft: FFT size, also the window length. Default 1024 (23 ms at 44.1 kHz).
        hop_length: frame hop in samples. Default 512.
        n_mels: mel bands before the DCT. Default 64.
        delta_order: 0 (MFCCs only), 1 (+ deltas) or 2 (+ delta-deltas). Default 1.
    """

    def __init__(self, sample_rate: int, *, n_mfcc: int = 20, n_fft: int = 1024,
                 hop_length: int = 512, n_mels: int = 64, delta_order: int = 1):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        if not 1 <= n_mfcc <= n_mels:
            raise ValueError(f"need 1 <= n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
        if delta_order not in (0, 1, 2):
            raise ValueError(f"delta_order must be 0, 1 or 2, got {delta_order}")
        self.sample_rate = int(sample_rate)
        self.n_mfcc = n_mfcc
        self.n_fft = n_fft
        self.delta_order = delta_order
        self._mfcc = torchaudio.transforms.MFCC(
            sample_rate=self.sample_rate, n_mfcc=n_mfcc, log_mels=False,
            melkwargs=dict(n_fft=n_fft, hop_length=hop_length, n_mels=n_mels))

    @property
    def dim(self) -> int:
        return 2 * self.n_mfcc * (1 + self.delta_order)

    def names(self) -> list[str]:
        """One name per output value, e.g. ``"mfcc3_mean"``, ``"delta1_mfcc3_std"``."""
        prefixes = ["mfcc"] + [f"delta{d}_mfcc" for d in range(1, self.delta_order + 1)]
        return [f"{p}{i}_{s}" for p in prefixes for s in ("mean", "std") for i in range(self.n_mfcc)]

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """(time,) float waveform -> (dim,) float64 vector. Clips shorter than ``n_fft`` are
        zero-padded to one frame; empty or non-finite input raises ``ValueError``."""
        w = np.asarray(waveform, dtype=np.float32)
        if w.ndim != 1:
            raise ValueError(f"waveform must be mono (time,), got shape {w.shape}; "
                             "downmix before calling")
        if w.size == 0:
            raise ValueError("waveform is empty")
        if not np.all(np.isfinite(w)):
            raise ValueError("waveform contains NaN or inf")
        if w.size < self.n_fft:
            w = np.pad(w, (0, self.n_fft - w.size))
        with torch.no_grad():
            coeffs = self._mfcc(torch.from_numpy(w))  # (n_mfcc, frames)
            series = [coeffs]
            for _ in range(self.delta_order):
                series.append(torchaudio.functional.compute_deltas(series[-1]))
            stats = []
            for s in series:
                stats += [s.mean(dim=-1), s.std(dim=-1, unbiased=False)]
            return torch.cat(stats).double().numpy()


def mfcc_stats(waveform: np.ndarray, sample_rate: int, **kwargs) -> np.ndarray:
    """MFCC statistics of one mono waveform; ``kwargs`` as for ``MFCCStats``."""
    return MFCCStats(sample_rate, **kwargs)(waveform)


def mfcc_stats_batch(waveforms: Sequence[np.ndarray], sample_rate: int, **kwargs) -> np.ndarray:
    """(N, dim) MFCC statistics of N mono waveforms of any lengths, one shared transform."""
    extractor = MFCCStats(sample_rate, **kwargs)
    if len(waveforms) == 0:
        return np.zeros((0, extractor.dim))
    return np.stack([extractor(w) for w in waveforms])
