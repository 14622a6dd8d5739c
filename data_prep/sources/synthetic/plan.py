"""Clip plans of the synthetic corpus: locations, seeds and the sample-rate independent plan.

Every clip is a pure function of ``(task, index, seed)``. Per-clip generators come from
``numpy.random.SeedSequence(seed, spawn_key=(task code, stream, ...))``; no global RNG is touched.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from data_prep.records import ClipRecord

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
    ``label`` is the clip label the event stands for (None: unlabelled background, distractor
    or scene sound); ``reference_events`` reads it, rendering does not.
    """

    kind: str
    onset_s: float
    duration_s: float
    snr_db: float
    params: tuple[tuple[str, float], ...]
    label: str | None = None


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


def _event(kind: str, onset: float, duration: float, snr_db: float, params, label: str | None = None
           ) -> SyntheticEvent:
    return SyntheticEvent(kind=kind, onset_s=float(onset), duration_s=float(duration), snr_db=float(snr_db),
                          params=params, label=label)
