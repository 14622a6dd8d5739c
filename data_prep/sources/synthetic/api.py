"""Public API of the synthetic corpus: tasks, listings, rendering."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from data_prep.records import LabelVocab, SourceListing
from data_prep.sources.synthetic.dsp import _band_noise
from data_prep.sources.synthetic.events_task import (_EVENT_IDS, _EVENT_RECIPES, _EVENTS_DURATION_S, _EVENTS_FOLDS,
                                                     _plan_events)
from data_prep.sources.synthetic.kinds import _KINDS
from data_prep.sources.synthetic.plan import (_F_CAP, _RENDER, MIN_SAMPLE_RATE, SyntheticClip, _check_task, _rng,
                                              parse_synthetic_location)
from data_prep.sources.synthetic.scenes_task import (_SCENE_IDS, _SCENES, _SCENES_DURATION_S, _SCENES_FOLDS,
                                                     _plan_scenes)
from data_prep.sources.synthetic.source_task import _SOURCE_IDS, _plan_source

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
