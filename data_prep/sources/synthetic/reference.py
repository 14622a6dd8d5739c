"""Where the synthetic corpus placed each labelled event: strong reference labels per clip.

The corpus is weakly labelled for training, but its plans know every event's span. These
placements serve as a DCASE-style reference (onset, offset, label) for evaluating event
timelines (``weaksound tag``), never as training labels. They are a pure function of the clip's
location, so the same seed gives the same references in any process.
"""
from __future__ import annotations

from data_prep.records import ClipRecord
from data_prep.sources.synthetic.api import plan_synthetic
from data_prep.sources.synthetic.plan import SyntheticClip, parse_synthetic_location

__all__ = ["reference_events"]


def reference_events(clip: ClipRecord | SyntheticClip | str) -> list[tuple[float, float, str]]:
    """``[(onset_s, offset_s, label id), ...]`` of the labelled events of one synthetic clip.

    Args:
        clip: a record of a synthetic listing, its ``audio`` location
            (``"synthetic:events/7?seed=0"``) or its plan.

    Returns:
        Spans sorted by onset then label. Spans are clipped to the clip; overlapping or touching
        spans of one label are merged (two sounds of one ``rain`` clip are one ``rain`` event).
        ``source`` clips list every event under its class; ``events`` clips list the target
        sound under the clip's label, not the unlabelled distractors; ``scenes`` clips have no
        event labels and give ``[]``. Label ids are those of ``record.labels``.

    Example:
        >>> spans = reference_events("synthetic:events/3?seed=0")
        >>> {label for _, _, label in spans}
        {'rain'}
    """
    if isinstance(clip, SyntheticClip):
        plan = clip
    else:
        location = clip.audio if isinstance(clip, ClipRecord) else str(clip)
        plan = plan_synthetic(*parse_synthetic_location(location))
    spans: dict[str, list[tuple[float, float]]] = {}
    for event in plan.events:
        if event.label is None:
            continue
        onset = max(0.0, event.onset_s)
        offset = min(event.onset_s + event.duration_s, plan.duration_s)
        if offset > onset:
            spans.setdefault(event.label, []).append((onset, offset))
    out = []
    for label, items in spans.items():
        items.sort()
        merged = [list(items[0])]
        for onset, offset in items[1:]:
            if onset <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], offset)
            else:
                merged.append([onset, offset])
        out += [(float(a), float(b), label) for a, b in merged]
    return sorted(out, key=lambda s: (s[0], s[2], s[1]))
