"""The embedded default corpus: weakly labelled "web-like" audio, generated on the fly.

Nothing is downloaded: every clip is a pure function of ``(task, index, seed)``. A record's
``audio`` is a location string such as ``"synthetic:source/123?seed=0"`` and
``render_synthetic(location, sample_rate)`` regenerates exactly the same waveform from it in any
process (per-clip generators come from ``numpy.random.SeedSequence(seed, spawn_key=...)``; no
global RNG is touched). Bytes are identical for the same numpy version on the same kind of CPU
(numpy's SIMD float32 ``sin`` may differ in the last bit between instruction sets). Rendering is
vectorised numpy, about 1-3 ms per second of audio at 44.1 kHz.

Three tasks (see ``SYNTHETIC_TASKS``):

``source``  the pre-training corpus. 27 sound-event classes with clearly different signatures
            (harmonic tones with vibrato at three pitches, a chord, rising/falling chirps, sirens,
            trills, bleeps, tweets, beeps, a pulsed tone, mains hum, an engine-like buzz,
            band-limited noise bursts in three bands, slow and fast amplitude-modulated noise,
            ticks, an impulse buzz, random clicks, crackle, knocks, drips, a bell and speech-like
            babble). Each clip holds 1-4 event classes (long clips repeat them) at random times
            over coloured background noise, each at its own SNR (2-20 dB); the class prior is
            long-tailed. Clip lengths are log-normal (median 3 s) clipped to 0.5-60 s. Labels are
            clip-level only. Splits: ``train`` (85 %) / ``eval`` (15 %).
``events``  an ESC-50-like transfer task: 12 classes of single-label 5 s clips, 5 folds. Some
            classes are variants the source never labels (barking = short fast-vibrato bursts,
            church bells = low repeated bell), others combinations of two source events
            (rain = crackle + hiss, engine = low buzz + rumble). Clips come in pairs cut from one
            "source recording" (shared parameters, background and ambience, ``source_id``), and
            both clips of a recording are in the same fold. Unlabelled distractor sounds (source
            event kinds) play under the target, as in real field recordings.
``scenes``  a DCASE-like acoustic scene task: 8 scenes of 10 s clips, 4 folds. A scene is a
            characteristic background plus a mixture of event types at scene-specific rates;
            ``source_id`` is the recording location (4 clips each), never split across folds.

Example:
    >>> listing = load_synthetic("source", num_clips=8)
    >>> listing.records[0].audio
    'synthetic:source/0?seed=0'
    >>> wave = render_synthetic(listing.records[0].audio, 16000)
    >>> wave.dtype, wave.ndim
    (dtype('float32'), 1)
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from data_prep.records import ClipRecord, LabelVocab, SourceListing

__all__ = ["MIN_SAMPLE_RATE", "SYNTHETIC_TASKS", "SyntheticClip", "SyntheticEvent", "SyntheticTask",
           "load_synthetic", "parse_synthetic_location", "plan_synthetic", "render_synthetic",
           "synthetic_location"]

# Tonal content stays below _F_CAP and noise below _F_CAP + 500 Hz, so a clip sounds the same at
# any sample rate >= MIN_SAMPLE_RATE (only the noise realisation differs between rates).
_F_CAP = 7000.0
MIN_SAMPLE_RATE = 16000
_TWO_PI = 2.0 * math.pi
_TASK_CODE = {"source": 1, "events": 2, "scenes": 3}  # stable: part of every clip's seed
# spawn_key layout: (task code, stream, ...): stream 0 = clip plan, 1 = shared recording/location
# parameters, 2 = per-clip rendering noise.
_PLAN, _RECORDING, _RENDER = 0, 1, 2

_LOCATION_RE = re.compile(r"^synthetic:(?P<task>[a-z]+)/(?P<index>\d+)(?:\?seed=(?P<seed>\d+))?$")


# --------------------------------------------------------------------------------------------
# Locations and seeds
# --------------------------------------------------------------------------------------------

def synthetic_location(task: str, index: int, seed: int = 0) -> str:
    """``"synthetic:<task>/<index>?seed=<seed>"``, the ``audio`` field of a synthetic record."""
    _check_task(task)
    return f"synthetic:{task}/{int(index)}?seed={int(seed)}"


def parse_synthetic_location(location: str) -> tuple[str, int, int]:
    """``"synthetic:source/12?seed=3"`` -> ``("source", 12, 3)``; the seed defaults to 0."""
    m = _LOCATION_RE.match(location)
    if m is None:
        raise ValueError(f"not a synthetic audio location: {location!r} "
                         "(expected 'synthetic:<task>/<index>[?seed=<n>]')")
    task = m.group("task")
    _check_task(task)
    return task, int(m.group("index")), int(m.group("seed") or 0)


def _check_task(task: str) -> None:
    if task not in _TASK_CODE:
        raise ValueError(f"unknown synthetic task {task!r}; tasks: {', '.join(_TASK_CODE)}")


def _rng(seed: int, task: str, stream: int, *key: int) -> np.random.Generator:
    """An independent generator for one (task, stream, key...) - never the global RNG."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TASK_CODE[task], stream, *key)))


# --------------------------------------------------------------------------------------------
# Plans: everything about a clip that does not depend on the sample rate
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticEvent:
    """One sound event in a clip: a generator ``kind`` with its parameters, placed in time.

    ``snr_db`` is the event's RMS over its span relative to the (unit-RMS) background.
    """

    kind: str
    onset_s: float
    duration_s: float
    snr_db: float
    params: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class SyntheticClip:
    """The sample-rate independent plan of one clip; ``render_synthetic`` turns it into audio."""

    task: str
    index: int
    seed: int
    duration_s: float
    labels: tuple[str, ...]
    split: str
    fold: int | None
    source_id: str | None
    background_tilt: float      # background power spectrum ~ f ** -tilt (0 white, 1 pink, 2 brown)
    level_db: float             # clip RMS level in dBFS before peak limiting
    events: tuple[SyntheticEvent, ...]

    @property
    def location(self) -> str:
        return synthetic_location(self.task, self.index, self.seed)

    @property
    def clip_id(self) -> str:
        return f"{self.task}-{self.index:06d}"

    def to_record(self) -> ClipRecord:
        return ClipRecord(clip_id=self.clip_id, audio=self.location, labels=self.labels, split=self.split,
                          fold=self.fold, source_id=self.source_id)


# --------------------------------------------------------------------------------------------
# DSP helpers (float32 signals, float64 phase accumulation)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Event kinds: parameter ranges + a vectorised synthesiser each
# --------------------------------------------------------------------------------------------

Synth = Callable[[dict, int, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class _Kind:
    id: str
    name: str
    duration: tuple[float, float]          # seconds, drawn uniformly (clipped to the clip)
    ranges: Mapping[str, tuple[float, float] | float]
    synth: Synth


def _syn_tone(p, n, sr, rng):
    t = _time(n, sr)
    freq = p["f0"] * (1.0 + p["vib_depth"] * np.sin(_TWO_PI * p["vib_rate"] * t + p["vib_phase"]))
    amps = [k ** -p["rolloff"] for k in range(1, int(p["n_harm"]) + 1)]
    return _harmonics(_cycles_from_freq(freq, sr), amps, p["f0"] * (1 + p["vib_depth"]))


def _syn_chord(p, n, sr, rng):
    t = _time(n, sr)
    out = np.zeros(n, dtype=np.float32)
    for ratio in (1.0, 1.26, 1.5):           # a major triad of harmonic tones, no vibrato
        f0 = p["f0"] * ratio
        out += _harmonics(f0 * t, (1.0, 0.5, 0.33, 0.25), f0)
    return out * _swell(n, sr, p["attack"], 0.05)


def _syn_sweeps(p, n, sr, rng):
    """Repeated exponential sweeps f_start -> f_end, each ``sweep_s`` long, ``gap_s`` apart."""
    t = _time(n, sr)
    length = p["sweep_s"]
    tau = np.mod(t, length + p["gap_s"])
    active = tau < length
    cycles = _exp_sweep_cycles(np.minimum(tau, length), p["f_start"], p["f_end"], length)
    # clip: sin(pi) is -1e-16 in floating point, whose square root would be NaN
    window = np.sqrt(np.clip(np.sin(np.pi * np.minimum(tau, length) / length), 0.0, None))
    return _harmonics(cycles, (1.0, 0.3), max(p["f_start"], p["f_end"])) * (window * active).astype(np.float32)


def _syn_fm(p, n, sr, rng):
    t = _time(n, sr)
    freq = p["fc"] + p["dev"] * np.sin(_TWO_PI * p["rate"] * t + p["phase"])
    amps = (1.0, 0.4, 0.2)[: int(p["n_harm"])]
    return _harmonics(_cycles_from_freq(freq, sr), amps, p["fc"] + p["dev"])


def _syn_bleeps(p, n, sr, rng):
    t = _time(n, sr)
    note = p["note_s"]
    notes = rng.uniform(500.0, 2200.0, int(math.ceil(n / sr / note)) + 1)
    which = np.minimum((t / note).astype(np.int64), notes.size - 1)
    cycles = _cycles_from_freq(notes[which], sr)
    return _harmonics(cycles, (1.0, 0.0, 0.3), 2200.0) * _gate(t, note, 0.8 * note, 0.004)


def _syn_tweets(p, n, sr, rng):
    t = _time(n, sr)
    period, length = p["period"], p["chirp_s"]
    tau = np.mod(t, period)
    active = tau < length
    cycles = _exp_sweep_cycles(np.minimum(tau, length), p["f_lo"], p["f_lo"] * p["ratio"], length)
    window = np.sin(np.pi * np.minimum(tau, length) / length) ** 2
    return (_sin_cycles(cycles) * (window * active)).astype(np.float32)


def _syn_beeps(p, n, sr, rng):
    t = _time(n, sr)
    return _harmonics(p["freq"] * t, (1.0, 0.0, 0.2), p["freq"]) * _gate(t, p["period"], 0.5 * p["period"], 0.005)


def _syn_pulse_tone(p, n, sr, rng):
    t = _time(n, sr)
    return _harmonics(p["f0"] * t, (1.0, 0.6, 0.4, 0.25), p["f0"]) * _raised(t, p["rate"]) ** 2


def _syn_hum(p, n, sr, rng):
    t = _time(n, sr)
    mains = 50.0 if p["mains"] < 0.5 else 60.0
    return _harmonics(mains * t, (0.6, 1.0, 0.8, 0.5, 0.4, 0.3, 0.2, 0.15), mains)


def _syn_buzz(p, n, sr, rng):
    """A band-limited pulse train (Dirichlet kernel): a bright, engine-like buzz."""
    t = _time(n, sr)
    freq = p["f0"] * (1.0 + 0.006 * np.sin(_TWO_PI * p["wobble"] * t))
    n_harm = max(1, int(p["top_hz"] / (p["f0"] * 1.006)))
    theta = _radians(_cycles_from_freq(freq, sr))
    den = 2.0 * np.sin(0.5 * theta)
    small = np.abs(den) < 1e-4
    num = np.sin((n_harm + 0.5) * theta)
    out = np.where(small, np.float32(n_harm), num / np.where(small, np.float32(1.0), den)) - 0.5
    return out.astype(np.float32)


def _syn_band_burst(p, n, sr, rng):
    return _band_noise(n, sr, p["lo"], p["hi"], rng) * _swell(n, sr, p["attack"], p["release"])


def _syn_am_noise(p, n, sr, rng):
    t = _time(n, sr)
    return _band_noise(n, sr, p["lo"], p["hi"], rng, tilt=p["tilt"]) * _raised(t, p["rate"], p["floor"])


def _syn_ticks(p, n, sr, rng):
    length = n / sr
    times = np.arange(p["offset"], length, 1.0 / p["rate"])
    amps = np.where(np.arange(times.size) % 2 == 0, 1.0, 0.7)       # tick-tock
    return _place(n, times, sr, _damped_sine(sr, p["fc"], p["tau"]), amps)


def _syn_impulse_buzz(p, n, sr, rng):
    length = n / sr
    times = np.arange(0.0, length, 1.0 / p["rate"])
    kernel = _noise_click(sr, rng, 0.0015, 500.0, _F_CAP)
    return _place(n, times, sr, kernel, rng.uniform(0.8, 1.0, times.size))


def _syn_clicks(p, n, sr, rng):
    times = _poisson_times(rng, p["rate"], n / sr)
    amps = rng.uniform(0.3, 1.0, times.size)
    return _place(n, times, sr, _noise_click(sr, rng, 0.003, 300.0, 6000.0), amps)


def _syn_crackle(p, n, sr, rng):
    times = _poisson_times(rng, p["rate"], n / sr)
    amps = rng.uniform(0.3, 1.0, times.size) ** 2
    return _place(n, times, sr, _noise_click(sr, rng, 0.0008, 2500.0, _F_CAP), amps)


def _syn_knock(p, n, sr, rng):
    times = 0.02 + p["interval"] * np.arange(int(p["count"]))
    kernel = _damped_sine(sr, p["freq"], p["tau"])
    thump = _noise_click(sr, rng, 0.004, 60.0, 600.0)
    kernel[: thump.size] += 0.5 * thump[: kernel.size]
    return _place(n, times, sr, kernel, np.linspace(1.0, 0.8, times.size))


def _syn_drips(p, n, sr, rng):
    times = _poisson_times(rng, p["rate"], n / sr)
    k = int(round(0.03 * sr))
    tk = _time(k, sr)
    kernel = (_sin_cycles(_exp_sweep_cycles(tk, p["f_hi"], p["f_hi"] * p["ratio"], 0.03))
              * np.exp(-tk / 0.008).astype(np.float32))
    return _place(n, times, sr, kernel, rng.uniform(0.5, 1.0, times.size))


def _syn_bell(p, n, sr, rng):
    t = _time(n, sr)
    out = np.zeros(n, dtype=np.float32)
    for ratio, amp in ((1.0, 1.0), (2.32, 0.6), (4.25, 0.35), (6.63, 0.2)):   # inharmonic partials
        f = p["f0"] * ratio
        if f > _F_CAP:
            break
        decay = np.exp(-t / (p["tau"] / math.sqrt(ratio))).astype(np.float32)
        out += amp * _sin_cycles(f * t) * decay
    return out


def _syn_babble(p, n, sr, rng):
    """Speech-like: a gliding harmonic voice whose energy sits near two formants per syllable."""
    t = _time(n, sr)
    syll = p["syll_s"]
    count = int(math.ceil(n / sr / syll)) + 1
    f1 = rng.uniform(300.0, 800.0, count)
    f2 = rng.uniform(900.0, 2300.0, count)
    which = np.minimum((t / syll).astype(np.int64), count - 1)
    f0_track = p["f0"] * (1.0 + 0.08 * np.sin(_TWO_PI * 0.7 * t + p["phase"]))
    cycles = _cycles_from_freq(f0_track, sr)
    envelope = (np.sin(np.pi * np.mod(t, syll) / syll) ** 2).astype(np.float32)
    out = 0.5 * _sin_cycles(cycles) + 0.3 * _sin_cycles(2.0 * cycles)
    base = _radians(cycles)
    for formants, gain in ((f1, 1.0), (f2, 0.6)):
        centre = np.maximum(1, np.round(formants / p["f0"])).astype(np.int64)
        for offset, weight in ((-1, 0.5), (0, 1.0), (1, 0.5)):
            k = np.maximum(1, centre + offset)
            # harmonic number per syllable, zeroed where it would exceed the content bandwidth
            gain_k = np.where(k * p["f0"] * 1.08 <= _F_CAP, gain * weight, 0.0).astype(np.float32)
            out += gain_k[which] * np.sin(base * k.astype(np.float32)[which])
    return out * envelope


_TWO_PI_RANGE = (0.0, _TWO_PI)

_KINDS: dict[str, _Kind] = {k.id: k for k in (
    _Kind("tone_low", "Low harmonic tone with vibrato", (0.5, 3.0),
          {"f0": (110, 170), "vib_rate": (4.0, 6.5), "vib_depth": (0.01, 0.025), "vib_phase": _TWO_PI_RANGE,
           "n_harm": 10, "rolloff": (0.8, 1.2)}, _syn_tone),
    _Kind("tone_mid", "Mid harmonic tone with vibrato", (0.4, 2.5),
          {"f0": (330, 500), "vib_rate": (5.0, 7.0), "vib_depth": (0.015, 0.03), "vib_phase": _TWO_PI_RANGE,
           "n_harm": 6, "rolloff": (1.3, 1.7)}, _syn_tone),
    _Kind("tone_high", "High whistle with vibrato", (0.4, 2.5),
          {"f0": (1500, 2100), "vib_rate": (5.0, 8.0), "vib_depth": (0.01, 0.02), "vib_phase": _TWO_PI_RANGE,
           "n_harm": 2, "rolloff": (2.0, 3.0)}, _syn_tone),
    _Kind("chord", "Sustained major chord", (0.8, 3.0), {"f0": (550, 650), "attack": (0.05, 0.3)}, _syn_chord),
    _Kind("chirp_up", "Rising chirps", (0.4, 2.0),
          {"f_start": (300, 600), "f_end": (2500, 4000), "sweep_s": (0.15, 0.5), "gap_s": (0.03, 0.15)}, _syn_sweeps),
    _Kind("chirp_down", "Falling chirps", (0.4, 2.0),
          {"f_start": (3000, 4500), "f_end": (300, 600), "sweep_s": (0.15, 0.5), "gap_s": (0.03, 0.15)}, _syn_sweeps),
    _Kind("siren", "Siren (slow frequency sweep)", (1.5, 4.0),
          {"fc": (650, 900), "dev": (200, 350), "rate": (0.3, 0.7), "phase": _TWO_PI_RANGE, "n_harm": 3}, _syn_fm),
    _Kind("trill", "Warbling trill (fast frequency modulation)", (0.5, 2.5),
          {"fc": (2800, 3600), "dev": (250, 450), "rate": (12, 20), "phase": _TWO_PI_RANGE, "n_harm": 1}, _syn_fm),
    _Kind("bleeps", "Computer bleeps (random notes)", (0.4, 2.0), {"note_s": (0.06, 0.12)}, _syn_bleeps),
    _Kind("tweets", "Repeated short tweets", (0.5, 2.5),
          {"period": (0.12, 0.25), "chirp_s": (0.05, 0.08), "f_lo": (2000, 3000), "ratio": (1.5, 2.0)}, _syn_tweets),
    _Kind("beeps", "Beeping alarm", (0.6, 3.0), {"freq": (900, 1300), "period": (0.2, 0.35)}, _syn_beeps),
    _Kind("pulse_tone", "Pulsing low tone (tremolo)", (0.8, 3.0), {"f0": (220, 300), "rate": (7, 10)}, _syn_pulse_tone),
    _Kind("hum", "Mains hum", (1.5, 5.0), {"mains": (0.0, 1.0)}, _syn_hum),
    _Kind("engine_buzz", "Engine-like buzz", (1.0, 4.0),
          {"f0": (60, 90), "wobble": (2.0, 4.0), "top_hz": 3000.0}, _syn_buzz),
    _Kind("noise_low", "Low rumble noise burst", (0.5, 3.0),
          {"lo": (50, 80), "hi": (250, 350), "attack": (0.05, 0.3), "release": (0.1, 0.4)}, _syn_band_burst),
    _Kind("noise_mid", "Mid-band noise burst", (0.3, 2.0),
          {"lo": (700, 900), "hi": (1400, 1800), "attack": (0.01, 0.1), "release": (0.05, 0.3)}, _syn_band_burst),
    _Kind("noise_high", "High hiss burst", (0.3, 2.0),
          {"lo": (3800, 4500), "hi": (6500, 7200), "attack": (0.01, 0.1), "release": (0.05, 0.3)}, _syn_band_burst),
    _Kind("am_noise_slow", "Slowly pulsing noise (surf)", (2.0, 6.0),
          {"lo": 150.0, "hi": 5000.0, "tilt": 1.0, "rate": (1.5, 3.0), "floor": (0.05, 0.15)}, _syn_am_noise),
    _Kind("am_noise_fast", "Fluttering noise (fast modulation)", (0.8, 3.0),
          {"lo": 300.0, "hi": 3000.0, "tilt": 0.5, "rate": (12, 20), "floor": (0.0, 0.1)}, _syn_am_noise),
    _Kind("ticks", "Ticking (slow impulse train)", (1.0, 4.0),
          {"rate": (2.5, 5.0), "offset": (0.0, 0.1), "fc": (2000, 3000), "tau": (0.002, 0.004)}, _syn_ticks),
    _Kind("impulse_buzz", "Rattle (fast impulse train)", (0.6, 3.0), {"rate": (25, 40)}, _syn_impulse_buzz),
    _Kind("clicks", "Random clicks", (1.0, 4.0), {"rate": (6, 12)}, _syn_clicks),
    _Kind("crackle", "Crackle (dense high clicks)", (1.0, 4.0), {"rate": (60, 120)}, _syn_crackle),
    _Kind("knock", "Knocking", (0.5, 1.2),
          {"count": (2, 4.99), "interval": (0.12, 0.25), "freq": (140, 220), "tau": (0.02, 0.04)}, _syn_knock),
    _Kind("drips", "Water drips", (1.0, 4.0), {"rate": (2, 5), "f_hi": (1600, 2400), "ratio": (0.4, 0.6)}, _syn_drips),
    _Kind("bell", "Bell strike", (1.0, 3.0), {"f0": (500, 800), "tau": (0.4, 1.0)}, _syn_bell),
    _Kind("babble", "Speech-like babble", (0.8, 3.0),
          {"f0": (100, 200), "syll_s": (0.18, 0.3), "phase": _TWO_PI_RANGE}, _syn_babble),
)}


def _draw_params(rng: np.random.Generator, ranges: Mapping) -> tuple[tuple[str, float], ...]:
    """Draw each parameter (sorted by name, so the draw order is fixed) from its range."""
    out = []
    for key in sorted(ranges):
        spec = ranges[key]
        out.append((key, float(rng.uniform(*spec)) if isinstance(spec, tuple) else float(spec)))
    return tuple(out)


def _jitter(params: tuple[tuple[str, float], ...], rng: np.random.Generator, amount: float,
            keys: tuple[str, ...] = ("f0", "fc", "freq", "f_lo", "f_hi", "f_start", "f_end")):
    """Small multiplicative changes to pitch-like parameters (a different take of one recording)."""
    return tuple((k, v * float(rng.uniform(1 - amount, 1 + amount)) if k in keys else v) for k, v in params)


def _event(kind: str, onset: float, duration: float, snr_db: float, params) -> SyntheticEvent:
    return SyntheticEvent(kind=kind, onset_s=float(onset), duration_s=float(duration), snr_db=float(snr_db),
                          params=params)


# --------------------------------------------------------------------------------------------
# Task "source": weakly labelled web-like clips
# --------------------------------------------------------------------------------------------

_SOURCE_IDS = tuple(_KINDS)
# A mildly long-tailed class prior (the first classes are ~7x more common than the last), as
# in web audio; fixed by the class order above.
_SOURCE_PRIOR = np.array([(rank + 1) ** -0.6 for rank in range(len(_SOURCE_IDS))])
_SOURCE_PRIOR /= _SOURCE_PRIOR.sum()
_SOURCE_LENGTH_MEDIAN_S = 3.0
_SOURCE_LENGTH_SIGMA = 0.9
_SOURCE_LENGTH_RANGE_S = (0.5, 60.0)
_SOURCE_EVAL_EVERY = 20        # indices with index % 20 >= 17 are eval: exactly 15 %
_SOURCE_EVAL_FROM = 17


def _plan_source(index: int, seed: int) -> SyntheticClip:
    rng = _rng(seed, "source", _PLAN, index)
    duration = float(np.clip(rng.lognormal(math.log(_SOURCE_LENGTH_MEDIAN_S), _SOURCE_LENGTH_SIGMA),
                             *_SOURCE_LENGTH_RANGE_S))
    n_classes = int(rng.choice([1, 2, 3, 4], p=[0.45, 0.3, 0.15, 0.1]))
    if duration < 1.5:
        n_classes = min(n_classes, 2)
    chosen = rng.choice(len(_SOURCE_IDS), size=n_classes, replace=False, p=_SOURCE_PRIOR)
    events = []
    for class_index in chosen:
        kind = _KINDS[_SOURCE_IDS[class_index]]
        occurrences = 1 + int(rng.poisson(duration / 15.0))   # long clips repeat their events
        params = _draw_params(rng, kind.ranges)
        for _ in range(occurrences):
            length = min(float(rng.uniform(*kind.duration)), duration)
            onset = float(rng.uniform(0.0, duration - length))
            events.append(_event(kind.id, onset, length, rng.uniform(2.0, 20.0), _jitter(params, rng, 0.02)))
    labels = tuple(sorted((_SOURCE_IDS[i] for i in chosen), key=_SOURCE_IDS.index))
    split = "eval" if index % _SOURCE_EVAL_EVERY >= _SOURCE_EVAL_FROM else "train"
    return SyntheticClip(task="source", index=index, seed=seed, duration_s=duration, labels=labels, split=split,
                         fold=None, source_id=None, background_tilt=float(rng.uniform(0.0, 2.0)),
                         level_db=float(rng.uniform(-32.0, -14.0)), events=tuple(events))


# --------------------------------------------------------------------------------------------
# Task "events": ESC-50-like, single-label 5 s clips, 5 folds, 2 clips per source recording
# --------------------------------------------------------------------------------------------

_EVENTS_DURATION_S = 5.0
_EVENTS_FOLDS = 5
_EVENTS_TAKES = 2      # clips cut from one source recording
_EVENTS_SNR_OFFSET_DB = -6.0   # added to the recipes' SNRs: targets at ~2-16 dB, under distractors


def _override(kind: str, **ranges) -> dict:
    return {**_KINDS[kind].ranges, **ranges}


def _spread(rng, count: int, length: float, event_s: float) -> list[float]:
    """``count`` onsets spread over the clip: one per equal slot, jittered inside it."""
    slot = length / count
    return [i * slot + float(rng.uniform(0.0, max(slot - event_s, 0.0))) for i in range(count)]


def _whole(kind: str, params, snr: float, clip, length: float) -> list[SyntheticEvent]:
    """One event covering (almost) the whole clip, slightly varied per take."""
    return [_event(kind, clip.uniform(0, 0.3), length - 0.3, snr + clip.uniform(-2, 2), _jitter(params, clip, 0.02))]


def _recipe_dog_bark(rec, clip, length):   # variant: short, fast-vibrato mid tones in bursts
    params = _draw_params(rec, _override("tone_mid", f0=(450, 650), vib_rate=(9, 12), vib_depth=(0.04, 0.06)))
    snr = rec.uniform(10, 20)
    count = int(clip.integers(3, 7))
    return [_event("tone_mid", on, clip.uniform(0.12, 0.25), snr, _jitter(params, clip, 0.04))
            for on in _spread(clip, count, length, 0.3)]


def _recipe_siren(rec, clip, length):
    return _whole("siren", _draw_params(rec, _KINDS["siren"].ranges), rec.uniform(8, 18), clip, length)


def _recipe_clock_tick(rec, clip, length):
    return _whole("ticks", _draw_params(rec, _KINDS["ticks"].ranges), rec.uniform(10, 20), clip, length)


def _recipe_rain(rec, clip, length):       # combination: crackle + high hiss together
    crackle = _draw_params(rec, _override("crackle", rate=(120, 200)))
    hiss = _draw_params(rec, _KINDS["noise_high"].ranges)
    snr = rec.uniform(8, 16)
    return [_event("crackle", 0.0, length, snr, crackle),
            _event("noise_high", 0.0, length, snr - 6 + clip.uniform(-2, 2), hiss)]


def _recipe_engine(rec, clip, length):     # combination: low buzz + rumble
    buzz = _draw_params(rec, _override("engine_buzz", f0=(40, 60)))
    rumble = _draw_params(rec, _override("noise_low", attack=(0.3, 0.6), release=(0.3, 0.6)))
    snr = rec.uniform(8, 16)
    return [_event("engine_buzz", 0.0, length, snr, _jitter(buzz, clip, 0.03)),
            _event("noise_low", 0.0, length, snr - 3, rumble)]


def _recipe_birdsong(rec, clip, length):   # combination: trills alternating with tweets
    trill = _draw_params(rec, _KINDS["trill"].ranges)
    tweets = _draw_params(rec, _KINDS["tweets"].ranges)
    snr = rec.uniform(8, 18)
    count = int(clip.integers(3, 6))
    return [_event("trill" if i % 2 == 0 else "tweets", on, clip.uniform(0.4, 0.8), snr,
                   _jitter(trill if i % 2 == 0 else tweets, clip, 0.03))
            for i, on in enumerate(_spread(clip, count, length, 0.8))]


def _recipe_church_bells(rec, clip, length):   # variant: a low bell, struck repeatedly
    params = _draw_params(rec, _override("bell", f0=(220, 340), tau=(1.0, 1.6)))
    snr = rec.uniform(10, 20)
    period = rec.uniform(0.9, 1.4)
    onsets = np.arange(clip.uniform(0, 0.3), length - 0.3, period)
    return [_event("bell", on, min(1.8, length - on), snr, params) for on in onsets]


def _recipe_water_drops(rec, clip, length):
    return _whole("drips", _draw_params(rec, _override("drips", rate=(3, 6))), rec.uniform(10, 20), clip, length)


def _recipe_vacuum(rec, clip, length):     # combination: mid noise + a motor whine
    noise = _draw_params(rec, _override("noise_mid", attack=(0.2, 0.4), release=(0.2, 0.4)))
    whine = _draw_params(rec, _override("tone_high", f0=(900, 1200), vib_depth=(0.002, 0.005)))
    snr = rec.uniform(8, 16)
    return [_event("noise_mid", 0.0, length, snr, noise),
            _event("tone_high", 0.1, length - 0.2, snr - 6, _jitter(whine, clip, 0.02))]


def _recipe_crowd(rec, clip, length):      # variant: several overlapping babbling voices
    voices = [_draw_params(rec, _KINDS["babble"].ranges) for _ in range(3)]
    snr = rec.uniform(6, 14)
    return [_event("babble", clip.uniform(0, 0.5), length - 0.5, snr - 3 * i, v) for i, v in enumerate(voices)]


def _recipe_door_knock(rec, clip, length):
    params = _draw_params(rec, _KINDS["knock"].ranges)
    snr = rec.uniform(12, 22)
    count = int(clip.integers(1, 4))
    return [_event("knock", on, 1.0, snr, _jitter(params, clip, 0.03)) for on in _spread(clip, count, length, 1.0)]


def _recipe_alarm_clock(rec, clip, length):   # variant: fast, high beeping in bursts
    params = _draw_params(rec, _override("beeps", freq=(1800, 2400), period=(0.1, 0.15)))
    snr = rec.uniform(10, 20)
    count = int(clip.integers(2, 4))
    return [_event("beeps", on, 1.0, snr, params) for on in _spread(clip, count, length, 1.0)]


_EVENT_RECIPES: dict[str, tuple[str, Callable]] = {
    "dog_bark": ("Dog bark", _recipe_dog_bark),
    "siren": ("Siren", _recipe_siren),
    "clock_tick": ("Clock tick", _recipe_clock_tick),
    "rain": ("Rain", _recipe_rain),
    "engine": ("Engine", _recipe_engine),
    "birdsong": ("Birdsong", _recipe_birdsong),
    "church_bells": ("Church bells", _recipe_church_bells),
    "water_drops": ("Water drops", _recipe_water_drops),
    "vacuum_cleaner": ("Vacuum cleaner", _recipe_vacuum),
    "crowd": ("Crowd", _recipe_crowd),
    "door_knock": ("Door knock", _recipe_door_knock),
    "alarm_clock": ("Alarm clock", _recipe_alarm_clock),
}
_EVENT_IDS = tuple(_EVENT_RECIPES)


def _distractors(rec, clip, length: float, exclude: set[str]) -> list[SyntheticEvent]:
    """Unlabelled sounds under the target event, as in real recordings: with probability 0.7 an
    ambience of the source recording (the same in all its takes), plus 0-2 short sounds per clip."""
    pool = [kind for kind in _SOURCE_IDS if kind not in exclude]
    out = []
    ambience = pool[int(rec.integers(len(pool)))]
    ambience_params = _draw_params(rec, _KINDS[ambience].ranges)
    ambience_snr = float(rec.uniform(-6.0, 2.0))
    if rec.uniform() < 0.7:
        out.append(_event(ambience, 0.0, length, ambience_snr, ambience_params))
    for _ in range(int(clip.integers(0, 3))):
        kind = _KINDS[pool[int(clip.integers(len(pool)))]]
        duration = min(float(clip.uniform(*kind.duration)), length)
        out.append(_event(kind.id, clip.uniform(0.0, length - duration), duration, clip.uniform(-4.0, 6.0),
                          _draw_params(clip, kind.ranges)))
    return out


def _plan_events(index: int, seed: int) -> SyntheticClip:
    n_classes = len(_EVENT_IDS)
    class_index, k = index % n_classes, index // n_classes
    recording = k // _EVENTS_TAKES
    fold = recording % _EVENTS_FOLDS + 1
    label = _EVENT_IDS[class_index]
    rec = _rng(seed, "events", _RECORDING, class_index, recording)   # shared by the takes
    clip = _rng(seed, "events", _PLAN, index)
    tilt = float(rec.uniform(0.3, 1.8))
    level = float(rec.uniform(-28.0, -16.0))
    events = [dataclasses.replace(e, snr_db=e.snr_db + _EVENTS_SNR_OFFSET_DB)
              for e in _EVENT_RECIPES[label][1](rec, clip, _EVENTS_DURATION_S)]
    events += _distractors(rec, clip, _EVENTS_DURATION_S, exclude={e.kind for e in events})
    return SyntheticClip(task="events", index=index, seed=seed, duration_s=_EVENTS_DURATION_S, labels=(label,),
                         split=f"fold{fold}", fold=fold, source_id=f"{label}-{recording:04d}",
                         background_tilt=tilt + float(clip.uniform(-0.1, 0.1)),
                         level_db=level + float(clip.uniform(-2.0, 2.0)), events=tuple(events))


# --------------------------------------------------------------------------------------------
# Task "scenes": DCASE-like, 10 s clips, 4 folds, 4 clips per recording location
# --------------------------------------------------------------------------------------------

_SCENES_DURATION_S = 10.0
_SCENES_FOLDS = 4
_SCENES_CLIPS_PER_LOCATION = 4


@dataclass(frozen=True)
class _Scene:
    name: str
    tilt: tuple[float, float]               # background colour
    beds: tuple[tuple[str, float], ...]     # (kind, SNR dB) sounds present through the whole clip
    rates: Mapping[str, float]              # kind -> expected events per 10 s
    overrides: Mapping[str, Mapping] = field(default_factory=dict)   # kind -> parameter ranges


_SCENES: dict[str, _Scene] = {
    "street": _Scene("Street traffic", (1.4, 2.0), (("engine_buzz", 0.0), ("noise_low", 3.0)),
                     {"engine_buzz": 1.5, "siren": 0.3, "beeps": 0.4, "noise_low": 1.0},
                     {"beeps": {"freq": (400, 500), "period": (0.3, 0.5)}}),
    "park": _Scene("Park", (0.5, 1.0), (), {"tweets": 2.0, "trill": 1.2, "babble": 0.6, "am_noise_slow": 0.4}),
    "office": _Scene("Office", (0.8, 1.2), (("hum", -6.0),),
                     {"clicks": 3.0, "babble": 1.0, "beeps": 0.3, "ticks": 0.3}),
    "cafe": _Scene("Cafe", (0.8, 1.3), (("babble", 0.0),), {"babble": 3.0, "bell": 1.0, "knock": 0.6},
                   {"bell": {"f0": (1200, 1600), "tau": (0.15, 0.3)}}),
    "beach": _Scene("Beach", (0.3, 0.7), (("am_noise_slow", 6.0),),
                    {"am_noise_slow": 1.0, "noise_high": 1.0, "tweets": 0.3},
                    {"am_noise_slow": {"rate": (0.15, 0.3), "floor": (0.2, 0.4)}}),
    "metro_station": _Scene("Metro station", (1.6, 2.0), (("noise_low", 3.0),),
                            {"impulse_buzz": 0.6, "beeps": 0.6, "chirp_down": 0.5, "babble": 1.2, "pulse_tone": 0.3}),
    "home": _Scene("Home", (1.0, 1.5), (("hum", -3.0),), {"drips": 1.0, "knock": 0.8, "babble": 0.6, "tone_mid": 0.3}),
    "forest": _Scene("Forest", (0.3, 0.8), (("am_noise_fast", -6.0),),
                     {"trill": 1.5, "crackle": 0.8, "chirp_up": 0.6, "tweets": 0.6},
                     {"am_noise_fast": {"lo": 150.0, "hi": 1200.0, "rate": (0.3, 0.8), "floor": (0.3, 0.5)}}),
}
_SCENE_IDS = tuple(_SCENES)


def _plan_scenes(index: int, seed: int) -> SyntheticClip:
    n_classes = len(_SCENE_IDS)
    class_index, k = index % n_classes, index // n_classes
    location = k // _SCENES_CLIPS_PER_LOCATION
    fold = location % _SCENES_FOLDS + 1
    label = _SCENE_IDS[class_index]
    scene = _SCENES[label]
    loc = _rng(seed, "scenes", _RECORDING, class_index, location)
    clip = _rng(seed, "scenes", _PLAN, index)
    length = _SCENES_DURATION_S

    # Location: background colour, level, the bed sounds' parameters and how busy it is.
    tilt = float(loc.uniform(*scene.tilt))
    level = float(loc.uniform(-30.0, -18.0))
    beds = [(kind, snr + float(loc.uniform(-3, 3)),
             _draw_params(loc, {**_KINDS[kind].ranges, **scene.overrides.get(kind, {})}))
            for kind, snr in scene.beds]
    busy = {kind: rate * float(loc.uniform(0.6, 1.5)) for kind, rate in sorted(scene.rates.items())}

    events = [_event(kind, 0.0, length, snr, _jitter(params, clip, 0.01)) for kind, snr, params in beds]
    for kind, rate in busy.items():
        spec = _KINDS[kind]
        ranges = {**spec.ranges, **scene.overrides.get(kind, {})}
        for onset in _poisson_times(clip, rate / 10.0, length)[:6]:   # rates are per 10 s
            duration = min(float(clip.uniform(*spec.duration)), length - onset)
            events.append(_event(kind, onset, duration, clip.uniform(0.0, 15.0), _draw_params(clip, ranges)))
    return SyntheticClip(task="scenes", index=index, seed=seed, duration_s=length, labels=(label,),
                         split=f"fold{fold}", fold=fold, source_id=f"{label}-loc{location:03d}",
                         background_tilt=tilt, level_db=level + float(clip.uniform(-1.5, 1.5)),
                         events=tuple(events))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticTask:
    """One synthetic task: its vocabulary and defaults."""

    name: str                      # the dataset (listing) name
    description: str
    vocab: LabelVocab
    default_num_clips: int
    planner: Callable[[int, int], SyntheticClip] = field(repr=False)
    num_folds: int | None = None
    clip_duration_s: float | None = None    # fixed clip length, None when it varies


SYNTHETIC_TASKS: Mapping[str, SyntheticTask] = MappingProxyType({
    "source": SyntheticTask(
        "synthetic-source", "weakly labelled web-like clips, 1-4 event classes each, 0.5-60 s",
        LabelVocab(ids=_SOURCE_IDS, names=tuple(_KINDS[i].name for i in _SOURCE_IDS)), 1600, _plan_source),
    "events": SyntheticTask(
        "synthetic-events", "ESC-50-like single-label 5 s clips, 5 folds",
        LabelVocab(ids=_EVENT_IDS, names=tuple(_EVENT_RECIPES[i][0] for i in _EVENT_IDS)), 480, _plan_events,
        num_folds=_EVENTS_FOLDS, clip_duration_s=_EVENTS_DURATION_S),
    "scenes": SyntheticTask(
        "synthetic-scenes", "DCASE-like acoustic scenes, 10 s clips, 4 folds",
        LabelVocab(ids=_SCENE_IDS, names=tuple(_SCENES[i].name for i in _SCENE_IDS)), 256, _plan_scenes,
        num_folds=_SCENES_FOLDS, clip_duration_s=_SCENES_DURATION_S),
})


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def plan_synthetic(task: str, index: int, seed: int = 0) -> SyntheticClip:
    """The sample-rate independent plan of one clip (labels, length, events); no audio."""
    _check_task(task)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    return SYNTHETIC_TASKS[task].planner(int(index), _check_seed(seed))


def load_synthetic(task: str, num_clips: int | None = None, seed: int = 0) -> SourceListing:
    """List ``num_clips`` clips of a synthetic task (default: the task's default size).

    Clip ``i`` depends only on ``(task, i, seed)``, so a smaller ``num_clips`` lists a prefix of a
    larger one. Class assignment is interleaved (events/scenes: clip ``i`` has class
    ``i % num_classes``), so prefixes stay class-balanced.

    Example:
        >>> [r.split for r in load_synthetic("scenes", num_clips=3).records]
        ['fold1', 'fold1', 'fold1']
    """
    _check_task(task)
    spec = SYNTHETIC_TASKS[task]
    count = spec.default_num_clips if num_clips is None else num_clips
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"num_clips must be a positive int, got {num_clips!r}")
    seed = _check_seed(seed)
    records = [spec.planner(i, seed).to_record() for i in range(int(count))]
    return SourceListing(name=spec.name, vocab=spec.vocab, records=records, rejects=[])


def render_plan(plan: SyntheticClip, sample_rate: int) -> np.ndarray:
    """Render a clip plan: float32 mono, ``round(duration_s * sample_rate)`` samples, peak <= 0.99."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be an int >= {MIN_SAMPLE_RATE} (content reaches {_F_CAP:.0f} Hz), "
                         f"got {sample_rate!r}")
    sr = int(sample_rate)
    n = int(round(plan.duration_s * sr))
    y = _band_noise(n, sr, 30.0, _F_CAP + 500.0, _rng(plan.seed, plan.task, _RENDER, plan.index, 0),
                    tilt=plan.background_tilt)
    for number, event in enumerate(plan.events, start=1):
        start = int(round(event.onset_s * sr))
        length = min(int(round(event.duration_s * sr)), n - start)
        if length < 8:
            continue
        rng = _rng(plan.seed, plan.task, _RENDER, plan.index, number)
        sound = _KINDS[event.kind].synth(dict(event.params), length, sr, rng)
        ramp = min(int(0.01 * sr), length // 4)
        if ramp > 1:   # 10 ms fades: no clicks at the event edges
            fade = np.linspace(0.0, 1.0, ramp, dtype=np.float32)
            sound[:ramp] *= fade
            sound[-ramp:] *= fade[::-1]
        rms = float(np.sqrt(np.mean(sound * sound)))
        if rms > 1e-9:
            y[start:start + length] += sound * np.float32(10.0 ** (event.snr_db / 20.0) / rms)
    rms = float(np.sqrt(np.mean(y * y)))
    y *= np.float32(10.0 ** (plan.level_db / 20.0) / max(rms, 1e-12))
    peak = float(np.max(np.abs(y))) if n else 0.0
    if peak > 0.99:
        y *= np.float32(0.99 / peak)
        np.clip(y, -0.99, 0.99, out=y)    # float32 rounding may leave the peak a hair above
    return y.astype(np.float32, copy=False)


def render_synthetic(audio_location: str, sample_rate: int) -> np.ndarray:
    """Regenerate a synthetic clip from its location alone: float32 mono at ``sample_rate``.

    Deterministic: the same location and rate give the same bytes in any process.

    Example:
        >>> a = render_synthetic("synthetic:events/7?seed=0", 16000)
        >>> b = render_synthetic("synthetic:events/7?seed=0", 16000)
        >>> a.shape, bool((a == b).all())
        ((80000,), True)
    """
    task, index, seed = parse_synthetic_location(audio_location)
    return render_plan(plan_synthetic(task, index, seed), sample_rate)
