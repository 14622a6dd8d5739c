"""Task "events": ESC-50-like, single-label 5 s clips, 5 folds, 2 clips per source recording."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from data_prep.sources.synthetic.kinds import _KINDS
from data_prep.sources.synthetic.plan import (_PLAN, _RECORDING, SyntheticClip, SyntheticEvent, _draw_params,
                                              _event, _jitter, _rng)
from data_prep.sources.synthetic.source_task import _SOURCE_IDS

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
    events = [dataclasses.replace(e, snr_db=e.snr_db + _EVENTS_SNR_OFFSET_DB, label=label)
              for e in _EVENT_RECIPES[label][1](rec, clip, _EVENTS_DURATION_S)]
    events += _distractors(rec, clip, _EVENTS_DURATION_S, exclude={e.kind for e in events})
    return SyntheticClip(task="events", index=index, seed=seed, duration_s=_EVENTS_DURATION_S, labels=(label,),
                         split=f"fold{fold}", fold=fold, source_id=f"{label}-{recording:04d}",
                         background_tilt=tilt + float(clip.uniform(-0.1, 0.1)),
                         level_db=level + float(clip.uniform(-2.0, 2.0)), events=tuple(events))
