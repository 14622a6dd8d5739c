"""DSP helpers of the synthetic corpus (float32 signals, float64 phase accumulation)."""
from __future__ import annotations

import math

import numpy as np

from data_prep.sources.synthetic.plan import _F_CAP, _TWO_PI

def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (fast lengths for numpy's FFT)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def _sin_cycles(cycles: np.ndarray) -> np.ndarray:
    """sin(2*pi*cycles) in float32, exact phase kept by wrapping in float64 first."""
    frac = cycles - np.floor(cycles)
    return np.sin((frac * _TWO_PI).astype(np.float32))


def _radians(cycles: np.ndarray) -> np.ndarray:
    """Phase in cycles (float64, may be large) -> float32 radians in [0, 2 pi)."""
    return ((cycles - np.floor(cycles)) * _TWO_PI).astype(np.float32)


def _harmonics(cycles: np.ndarray, amps, f_max: float) -> np.ndarray:
    """sum_k amps[k-1] * sin(2 pi k cycles), dropping harmonics whose top frequency is above _F_CAP.

    The fundamental's phase is wrapped once in float64; harmonic k uses k times the wrapped
    phase in float32 (an argument below 2 pi k, where float32 sin is accurate to ~1e-5), which is
    several times faster than float64 and costs no audible precision.
    """
    base = _radians(cycles)
    out = np.zeros(base.shape, dtype=np.float32)
    tmp = np.empty_like(base)
    for k, amp in enumerate(amps, start=1):
        if k * f_max > _F_CAP:
            break
        if np.isscalar(amp) and amp == 0:
            continue
        np.multiply(base, np.float32(k), out=tmp)
        np.sin(tmp, out=tmp)
        tmp *= np.float32(amp) if np.isscalar(amp) else amp
        out += tmp
    return out


def _cycles_from_freq(freq: np.ndarray, sr: int) -> np.ndarray:
    """Accumulated phase (in cycles) of an instantaneous-frequency track in Hz."""
    return np.cumsum(freq, dtype=np.float64) / sr


def _exp_sweep_cycles(t: np.ndarray, f1: float, f2: float, length: float) -> np.ndarray:
    """Phase (cycles) of an exponential sweep f1 -> f2 over ``length`` seconds."""
    ratio = f2 / f1
    log_r = math.log(ratio)
    return f1 * length / log_r * (np.power(ratio, t / length) - 1.0)


def _band_noise(n: int, sr: int, lo: float, hi: float, rng: np.random.Generator,
                tilt: float = 0.0) -> np.ndarray:
    """Gaussian noise with power only in [lo, hi] Hz (power ~ f^-tilt inside), unit RMS."""
    if n <= 0:
        return np.zeros(max(n, 0), dtype=np.float32)
    m = _fast_len(max(n, 16))
    hi = min(hi, _F_CAP + 500.0, 0.48 * sr)
    k0 = max(1, int(math.ceil(lo * m / sr)))
    k1 = max(k0, min(int(hi * m / sr), m // 2))
    bins = k1 - k0 + 1
    spec = np.zeros(m // 2 + 1, dtype=np.complex64)
    re_im = rng.standard_normal((bins, 2), dtype=np.float32)
    band = re_im[:, 0] + 1j * re_im[:, 1]
    if tilt:
        band *= ((np.arange(k0, k1 + 1, dtype=np.float32) / k0) ** np.float32(-tilt / 2.0))
    spec[k0:k1 + 1] = band
    y = np.fft.irfft(spec, m)[:n].astype(np.float32)
    return y / max(float(np.sqrt(np.mean(y * y))), 1e-12)


def _place(n: int, times_s: np.ndarray, sr: int, kernel: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Sum of ``kernel`` copies starting at ``times_s`` with gains ``amps`` (vectorised overlap-add)."""
    pos = np.round(np.asarray(times_s) * sr).astype(np.int64)
    if pos.size == 0 or n == 0:
        return np.zeros(n, dtype=np.float32)
    idx = (pos[:, None] + np.arange(kernel.size)[None, :]).ravel()
    weights = (np.asarray(amps, dtype=np.float64)[:, None] * kernel[None, :]).ravel()
    keep = idx < n
    return np.bincount(idx[keep], weights=weights[keep], minlength=n)[:n].astype(np.float32)


def _poisson_times(rng: np.random.Generator, rate: float, length: float) -> np.ndarray:
    count = int(rng.poisson(rate * length))
    return np.sort(rng.uniform(0.0, length, count))


def _noise_click(sr: int, rng: np.random.Generator, tau: float, lo: float, hi: float) -> np.ndarray:
    """An exponentially decaying band-limited noise burst (a click)."""
    n = max(4, int(round(5 * tau * sr)))
    return _band_noise(n, sr, lo, hi, rng) * np.exp(-_time(n, sr) / tau).astype(np.float32)


def _damped_sine(sr: int, freq: float, tau: float) -> np.ndarray:
    n = max(4, int(round(5 * tau * sr)))
    t = _time(n, sr)
    return (np.sin(_TWO_PI * freq * t) * np.exp(-t / tau)).astype(np.float32)


def _gate(t: np.ndarray, period: float, on: float, ramp: float) -> np.ndarray:
    """A periodic on/off gate with linear ramps (1 during the first ``on`` s of each period)."""
    tau = np.mod(t, period)
    return np.clip(np.minimum(tau, on - tau) / ramp, 0.0, 1.0).astype(np.float32)


def _raised(t: np.ndarray, rate: float, floor: float = 0.0) -> np.ndarray:
    """floor + (1-floor) * (0.5 - 0.5 cos(2 pi rate t)): a smooth periodic envelope in [floor, 1]."""
    return (floor + (1.0 - floor) * (0.5 - 0.5 * np.cos(_TWO_PI * rate * t))).astype(np.float32)


def _swell(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    t = _time(n, sr)
    length = n / sr
    return np.clip(np.minimum(t / max(attack, 1e-3), (length - t) / max(release, 1e-3)), 0.0, 1.0).astype(np.float32)
