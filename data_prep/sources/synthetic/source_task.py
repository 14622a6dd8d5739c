"""Task "source": weakly labelled web-like clips, 1-4 event classes each, 0.5-60 s."""
from __future__ import annotations

import math

import numpy as np

from data_prep.sources.synthetic.kinds import _KINDS
from data_prep.sources.synthetic.plan import _PLAN, SyntheticClip, _draw_params, _event, _jitter, _rng

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
            events.append(_event(kind.id, onset, length, rng.uniform(2.0, 20.0), _jitter(params, rng, 0.02),
                                 label=kind.id))
    labels = tuple(sorted((_SOURCE_IDS[i] for i in chosen), key=_SOURCE_IDS.index))
    split = "eval" if index % _SOURCE_EVAL_EVERY >= _SOURCE_EVAL_FROM else "train"
    return SyntheticClip(task="source", index=index, seed=seed, duration_s=duration, labels=labels, split=split,
                         fold=None, source_id=None, background_tilt=float(rng.uniform(0.0, 2.0)),
                         level_db=float(rng.uniform(-32.0, -14.0)), events=tuple(events))
