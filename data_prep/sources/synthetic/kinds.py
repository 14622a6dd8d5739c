"""Event kinds of the synthetic corpus: parameter ranges and a vectorised synthesiser each.

Tonal content stays below ``_F_CAP`` (7 kHz), so a clip sounds the same at any sample rate
>= ``MIN_SAMPLE_RATE``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from data_prep.sources.synthetic.dsp import (_band_noise, _cycles_from_freq, _damped_sine, _exp_sweep_cycles,
                                             _gate, _harmonics, _noise_click, _place, _poisson_times,
                                             _radians, _raised, _sin_cycles, _swell, _time)
from data_prep.sources.synthetic.plan import _F_CAP, _TWO_PI

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
