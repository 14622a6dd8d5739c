"""Sound-event detection from the network's segment-level scores, and its evaluation.

The network scores one segment every hop (arXiv 1711.01369: 1.5 s segments, 0.74 s apart at the
paper's settings). Detection is a chain of pure functions on the ``(K, C)`` segment scores:

    scores --binarize(thresholds)--> active --median_filter_activity(window)--> active
           --activity_to_events(grid)--> [Event(filename, onset, offset, label, score)]

Time of a segment (:class:`SegmentGrid`): neighbouring segments overlap by half, so each one
speaks for the hop-long stretch around its centre; the stretches tile the clip, the first
starting at 0 s and the last ending at the clip's end. A run of active segments ``a..b`` is an
event from the start of ``a``'s stretch to the end of ``b``'s.

Event lists are written as DCASE-style TSV (``filename onset offset event_label``, with that
header) and JSON; :func:`evaluate_events` scores an estimated TSV against a reference TSV with
``sed_eval`` (event-based F1 with an onset/offset collar, segment-based F1 on a fixed grid).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.ndimage import median_filter

from runtime import storage

__all__ = ["Event", "SegmentGrid", "class_thresholds", "binarize", "median_filter_activity",
           "activity_to_events", "detect_events", "events_tsv", "read_events_tsv", "evaluate_events",
           "DetectConfig", "DetectSummary", "run_detect", "TSV_HEADER"]

TSV_HEADER = ("filename", "onset", "offset", "event_label")


class Event(NamedTuple):
    filename: str
    onset: float    # seconds from the start of the file
    offset: float   # seconds
    label: str
    score: float    # highest segment score inside the event


@dataclass(frozen=True)
class SegmentGrid:
    """Where the network's segments sit in a clip of ``duration_s`` seconds.

    Args:
        hop_s: seconds between neighbouring segments (``segment_hop_frames * hop_length / sr``).
        centre_offset_s: centre of segment 0 (``(segment_frames - 1) / 2 * hop_length / sr``;
            frames are centred STFT frames, frame t sits at ``t * hop_length``).
        duration_s: length of the clip.
    """

    hop_s: float
    centre_offset_s: float
    duration_s: float

    @classmethod
    def of_model(cls, frontend, architecture, duration_s: float) -> "SegmentGrid":
        """The grid of an exported model's front end (``FrontEndConfig``) and architecture (``ModelConfig``)."""
        hop_s = architecture.segment_hop_frames * frontend.hop_length / frontend.sample_rate
        centre = (architecture.segment_frames - 1) / 2 * frontend.hop_length / frontend.sample_rate
        return cls(hop_s=hop_s, centre_offset_s=centre, duration_s=float(duration_s))

    def centres(self, num_segments: int) -> np.ndarray:
        """``(K,)`` segment centres in seconds."""
        return self.centre_offset_s + self.hop_s * np.arange(num_segments, dtype=np.float64)

    def stretches(self, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, ends)`` of the stretch each segment speaks for, tiling ``[0, duration_s]``."""
        centres = self.centres(num_segments)
        starts = np.clip(centres - self.hop_s / 2, 0.0, self.duration_s)
        ends = np.clip(centres + self.hop_s / 2, 0.0, self.duration_s)
        if num_segments:
            starts[0] = 0.0
            ends[-1] = self.duration_s
            ends = np.maximum(ends, starts)
        return starts, ends


def class_thresholds(names: Sequence[str], default: float, overrides: Mapping[str, float] | None = None,
                     ids: Sequence[str] | None = None) -> np.ndarray:
    """``(C,)`` thresholds: ``default`` everywhere, ``overrides[label]`` where given.

    A label of ``overrides`` may be a class name or (with ``ids``) a class id; an unknown one
    raises ``ValueError`` naming it and the known names.
    """
    thresholds = np.full(len(names), float(default), dtype=np.float64)
    index = {n: i for i, n in enumerate(names)}
    index.update({i_d: i for i, i_d in enumerate(ids or ())})
    for label, value in (overrides or {}).items():
        if label not in index:
            raise ValueError(f"threshold for unknown class {label!r}; classes: {', '.join(names)}")
        thresholds[index[label]] = float(value)
    return thresholds


def binarize(scores: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """``(K, C)`` scores -> boolean activity: score >= the class's threshold."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (segments, classes), got shape {scores.shape}")
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (scores.shape[1],))
    return scores >= thresholds[None, :]


def median_filter_activity(active: np.ndarray, window: int) -> np.ndarray:
    """Median (majority vote) of each class's activity over ``window`` segments (odd; 1 = none).

    Fills gaps and drops blips shorter than ``window // 2 + 1`` segments; the clip's edges repeat
    the first and last segment.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"median window must be an odd number of segments >= 1, got {window}")
    active = np.asarray(active, dtype=bool)
    if window == 1 or active.shape[0] == 0:
        return active.copy()
    return median_filter(active.astype(np.uint8), size=(window, 1), mode="nearest").astype(bool)


def activity_to_events(active: np.ndarray, scores: np.ndarray, grid: SegmentGrid, names: Sequence[str],
                       filename: str = "") -> list[Event]:
    """One :class:`Event` per run of consecutive active segments of each class, sorted by onset."""
    active = np.asarray(active, dtype=bool)
    if active.shape != np.shape(scores) or active.shape[1] != len(names):
        raise ValueError(f"activity {active.shape}, scores {np.shape(scores)} and {len(names)} names disagree")
    starts, ends = grid.stretches(active.shape[0])
    events = []
    for c, name in enumerate(names):
        padded = np.concatenate([[False], active[:, c], [False]]).astype(np.int8)
        edges = np.diff(padded)
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):  # segments a..b-1
            events.append(Event(filename, float(starts[a]), float(ends[b - 1]), name,
                                float(np.max(scores[a:b, c]))))
    return sorted(events, key=lambda e: (e.onset, e.label))


def detect_events(scores: np.ndarray, grid: SegmentGrid, names: Sequence[str], thresholds: float | np.ndarray,
                  median_window: int = 1, filename: str = "") -> list[Event]:
    """scores -> thresholded -> median filtered -> events (the whole chain, see module doc)."""
    active = median_filter_activity(binarize(scores, thresholds), median_window)
    return activity_to_events(active, scores, grid, names, filename)


def events_tsv(events: Sequence[Event]) -> str:
    """DCASE-style TSV: a ``filename onset offset event_label`` header, one event per line."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(TSV_HEADER)
    for e in events:
        w.writerow([e.filename, f"{e.onset:.3f}", f"{e.offset:.3f}", e.label])
    return buf.getvalue()


def read_events_tsv(text: str, source: str = "<tsv>") -> tuple[list[dict], list[str]]:
    """Parse a DCASE event list -> ``(events, filenames)``.

    Events are ``{"filename", "onset", "offset", "event_label"}`` dicts; ``filenames`` lists every
    file named, also by a row holding only a file name (the DCASE way to say "no events here").
    The header line is optional. A malformed row raises ``ValueError`` naming ``source`` and the line.
    """
    events, files = [], []
    for n, row in enumerate(csv.reader(io.StringIO(text), delimiter="\t"), start=1):
        row = [cell.strip() for cell in row]
        if not any(row) or (n == 1 and tuple(row[:4]) == TSV_HEADER):
            continue
        if len(row) == 1 or (len(row) >= 4 and not any(row[1:4])):
            files.append(row[0])
            continue
        try:
            if len(row) < 4:
                raise ValueError(f"expected 4 tab-separated fields, got {len(row)}")
            onset, offset = float(row[1]), float(row[2])
            if not (math.isfinite(onset) and math.isfinite(offset)) or offset < onset or onset < 0:
                raise ValueError(f"need 0 <= onset <= offset, got {onset}, {offset}")
        except ValueError as e:
            raise ValueError(f"{source}, line {n}: {e}: {row!r}") from None
        events.append({"filename": row[0], "onset": onset, "offset": offset, "event_label": row[3]})
        files.append(row[0])
    return events, list(dict.fromkeys(files))


def _sed_eval():
    """sed_eval, imported quietly: its dcase_util imports setuptools' deprecated pkg_resources."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import dcase_util
        import sed_eval
    return sed_eval, dcase_util


def _finite(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def evaluate_events(reference_tsv: str, estimated_tsv: str, *, t_collar: float = 0.2,
                    percentage_of_length: float = 0.2, time_resolution: float = 1.0) -> dict:
    """Event-based and segment-based scores of an estimated event list against a reference (sed_eval).

    Files are matched by base name (``audio/a.wav`` in the reference is ``a.wav`` in the estimate).
    Every file named in either list is evaluated; one missing from the estimate counts its
    reference events as misses. Event-based: an estimated event matches a reference event of
    the same label whose onset is within ``t_collar`` seconds and whose offset is within
    ``max(t_collar, percentage_of_length * reference length)`` (DCASE 2016-2019 settings).
    Segment-based: activity compared on a ``time_resolution`` grid.

    Returns ``{"files", "labels", "event_based": {...}, "segment_based": {...}}``; each block has
    ``f_measure``, ``precision``, ``recall``, ``error_rate`` (micro-averaged over all events) and
    ``class_wise_f_measure`` (``None`` where a class has neither reference nor estimated events).
    """
    sed_eval, dcase_util = _sed_eval()
    ref_events, ref_files = read_events_tsv(storage.read_text(reference_tsv), reference_tsv)
    est_events, est_files = read_events_tsv(storage.read_text(estimated_tsv), estimated_tsv)
    for e in ref_events + est_events:
        e["filename"] = os.path.basename(e["filename"])
    files = list(dict.fromkeys(os.path.basename(f) for f in ref_files + est_files))
    labels = sorted({e["event_label"] for e in ref_events + est_events})
    event_based = sed_eval.sound_event.EventBasedMetrics(event_label_list=labels, t_collar=t_collar,
                                                         percentage_of_length=percentage_of_length)
    segment_based = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=labels, time_resolution=time_resolution)
    by_file = {name: ([], []) for name in files}
    for e in ref_events:
        by_file[e["filename"]][0].append(e)
    for e in est_events:
        by_file[e["filename"]][1].append(e)
    for ref_list, est_list in by_file.values():
        ref = dcase_util.containers.MetaDataContainer(ref_list)
        est = dcase_util.containers.MetaDataContainer(est_list)
        event_based.evaluate(reference_event_list=ref, estimated_event_list=est)
        segment_based.evaluate(reference_event_list=ref, estimated_event_list=est)

    def block(metrics, **settings) -> dict:
        overall = metrics.results_overall_metrics()
        class_wise = metrics.results_class_wise_metrics()
        return {**{k: _finite(overall["f_measure"][k]) for k in ("f_measure", "precision", "recall")},
                "error_rate": _finite(overall["error_rate"]["error_rate"]),
                "class_wise_f_measure": {c: _finite(class_wise[c]["f_measure"]["f_measure"]) for c in labels},
                **settings}

    return {"files": len(files), "labels": labels,
            "event_based": block(event_based, t_collar=t_collar, percentage_of_length=percentage_of_length),
            "segment_based": block(segment_based, time_resolution=time_resolution)}


# ----------------------------------------------------------------------------------------------
# `weaksound detect`: files -> event lists (+ timelines, + scores against a reference)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DetectConfig:
    """One `weaksound detect` run: event lists for each of ``files``.

    Attributes:
        model: exported model folder/URL (model.safetensors + config.json).
        files: audio files (local paths or s3:// URLs).
        out: folder/URL for events.tsv, events.json, <stem>.timeline.png (and metrics.json).
        threshold: segment score at which a class is active, for every class.
        class_thresholds: ``(label, threshold)`` pairs (label = class name or id) overriding
            ``threshold`` and ``thresholds_file``.
        thresholds_file: JSON ``{"label": threshold}`` of per-class thresholds (e.g. tuned on
            validation data); None = none.
        median_window: median filter length in segments, odd; 1 = no filtering.
        chunk_seconds: audio scored per forward pass; bounds memory for long files.
        top_k: classes drawn in each timeline PNG.
        reference: reference annotations (DCASE TSV) to score the events against; None = none.
        t_collar: event-based onset/offset collar, seconds.
        time_resolution: segment-based evaluation grid, seconds.
    """

    model: str
    files: tuple[str, ...]
    out: str
    threshold: float = 0.5
    class_thresholds: tuple[tuple[str, float], ...] = ()
    thresholds_file: str | None = None
    median_window: int = 3
    chunk_seconds: float = 60.0
    top_k: int = 5
    reference: str | None = None
    t_collar: float = 0.2
    time_resolution: float = 1.0

    def __post_init__(self):
        if isinstance(self.files, str):
            raise TypeError("files must be a sequence of paths, not one string")
        object.__setattr__(self, "files", tuple(self.files))
        object.__setattr__(self, "class_thresholds", tuple((str(k), float(v)) for k, v in self.class_thresholds))
        if not self.files:
            raise ValueError("no audio file to detect events in")
        if self.median_window < 1 or self.median_window % 2 == 0:
            raise ValueError(f"median_window must be odd and >= 1, got {self.median_window}")
        if not self.chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be > 0, got {self.chunk_seconds!r}")

    def argv(self) -> list[str]:
        from data_prep.job import changed_options

        d = DetectConfig(self.model, self.files, self.out)
        return ["detect", "--model", self.model, "--out", self.out, *changed_options([
            ("--threshold", self.threshold, d.threshold), ("--thresholds", self.thresholds_file, d.thresholds_file),
            ("--median-window", self.median_window, d.median_window),
            ("--chunk-seconds", self.chunk_seconds, d.chunk_seconds), ("--top-k", self.top_k, d.top_k),
            ("--reference", self.reference, d.reference), ("--t-collar", self.t_collar, d.t_collar),
            ("--time-resolution", self.time_resolution, d.time_resolution),
        ]), *[a for label, value in self.class_thresholds for a in ("--class-threshold", f"{label}={value}")],
            "--", *self.files]

    def command(self) -> str:
        return shlex.join(["weaksound", *self.argv()])

    def thresholds_by_label(self) -> dict[str, float]:
        """Per-class overrides: ``thresholds_file`` first, then ``class_thresholds``."""
        overrides = {}
        if self.thresholds_file:
            try:
                doc = json.loads(storage.read_text(self.thresholds_file))
                overrides.update({str(k): float(v) for k, v in doc.items()})
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
                raise ValueError(f"{self.thresholds_file}: not a JSON object of label -> threshold: {e}") from None
        overrides.update(dict(self.class_thresholds))
        return overrides


@dataclass
class DetectSummary:
    files: int
    skipped: list[tuple[str, str]]     # (path, reason) of every file that could not be read
    events: int
    outputs: dict[str, str]
    metrics: dict | None = None

    def line(self) -> str:
        text = f"{self.events} events in {self.files} files ({len(self.skipped)} skipped) -> {self.outputs['tsv']}"
        if self.metrics:
            eb, sb = self.metrics["event_based"], self.metrics["segment_based"]
            text += (f"; event-based F1 {eb['f_measure'] or 0:.3f}, "
                     f"segment-based F1 {sb['f_measure'] or 0:.3f} vs {self.metrics['reference']}")
        return text


def run_detect(cfg: DetectConfig) -> DetectSummary:
    """Detect events in every file of ``cfg.files``; unreadable files are skipped by name."""
    from data_prep import audio
    from inference import tag
    from trainer.export import load_exported

    exported = load_exported(cfg.model)
    names = [v["name"] for v in exported.vocabulary]
    thresholds = class_thresholds(names, cfg.threshold, cfg.thresholds_by_label(),
                                  ids=[v["id"] for v in exported.vocabulary])
    events, per_file, skipped, outputs = [], [], [], {}
    for path in cfg.files:
        try:
            result = tag.tag_file(exported, path, cfg.chunk_seconds)
        except (audio.AudioError, FileNotFoundError) as e:
            skipped.append((path, str(e)))
            continue
        grid = SegmentGrid.of_model(exported.frontend, exported.architecture, result.duration_s)
        found = detect_events(result.segment_scores, grid, names, thresholds, cfg.median_window, path)
        events.extend(found)
        stem = os.path.splitext(os.path.basename(path))[0] or "audio"
        png = storage.join(cfg.out, f"{stem}.timeline.png")
        storage.write_bytes_atomic(png, tag.timeline_png(result, cfg.top_k))
        per_file.append({"filename": path, "duration_s": result.duration_s, "timeline_png": png,
                         "events": [e._asdict() for e in found]})
    outputs["tsv"] = storage.join(cfg.out, "events.tsv")
    outputs["json"] = storage.join(cfg.out, "events.json")
    storage.write_text_atomic(outputs["tsv"], events_tsv(events))
    storage.write_text_atomic(outputs["json"], json.dumps({
        "model": cfg.model, "threshold": cfg.threshold,
        "class_thresholds": {n: float(t) for n, t in zip(names, thresholds)},
        "median_window": cfg.median_window, "skipped": [{"filename": p, "reason": r} for p, r in skipped],
        "files": per_file}, indent=1))
    metrics = None
    if cfg.reference:
        metrics = {"reference": cfg.reference, "estimated": outputs["tsv"],
                   **evaluate_events(cfg.reference, outputs["tsv"], t_collar=cfg.t_collar,
                                     time_resolution=cfg.time_resolution)}
        outputs["metrics"] = storage.join(cfg.out, "metrics.json")
        storage.write_text_atomic(outputs["metrics"], json.dumps(metrics, indent=1))
    return DetectSummary(files=len(per_file), skipped=skipped, events=len(events), outputs=outputs, metrics=metrics)
