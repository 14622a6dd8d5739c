"""Spec: the embedded synthetic corpus is deterministic, web-like and learnable.

Rendering is done at 16 kHz to keep the suite fast; the content is band-limited to 7 kHz, so
the same clips at 44.1 kHz differ only in their noise realisation.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from data_prep.sources import SYNTHETIC_TASKS, load_synthetic, render_synthetic
from data_prep.sources.synthetic import (parse_synthetic_location, plan_synthetic, reference_events,
                                         synthetic_location)

SR = 16000
REPO = Path(__file__).resolve().parents[1]


def _sha(wave: np.ndarray) -> str:
    return hashlib.sha256(wave.tobytes()).hexdigest()


def _features(wave: np.ndarray) -> np.ndarray:
    """Crude spectral features: per-band log energy (32 log-spaced bands) mean, std and 90th pct."""
    assert np.isfinite(wave).all() and wave.dtype == np.float32
    n_fft, hop = 512, 256
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / SR)
    edges = np.geomspace(40, 7500, 33)
    bands = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], 1)
    logs = np.log(bands + 1e-10)
    logs -= logs.mean()                      # level-invariant
    return np.concatenate([logs.mean(0), logs.std(0), np.percentile(logs, 90, axis=0)])


def _nearest_centroid_accuracy(train_x, train_y, test_x, test_y) -> float:
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    train_z, test_z = (train_x - mu) / sd, (test_x - mu) / sd
    classes = sorted(set(train_y))
    centroids = np.stack([train_z[np.asarray(train_y) == c].mean(0) for c in classes])
    pred = np.asarray(classes)[np.argmin(((test_z[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    return float((pred == np.asarray(test_y)).mean())


# ------------------------------------------------------------------ locations and determinism

def test_records_point_at_synthetic_locations_that_parse_back():
    for task in SYNTHETIC_TASKS:
        listing = load_synthetic(task, num_clips=5, seed=3)
        for i, rec in enumerate(listing.records):
            assert rec.audio == f"synthetic:{task}/{i}?seed=3" == synthetic_location(task, i, 3)
            assert parse_synthetic_location(rec.audio) == (task, i, 3)
    assert parse_synthetic_location("synthetic:events/12") == ("events", 12, 0)


@pytest.mark.parametrize("location", ["synthetic:nope/1", "synthetic:source/-1", "synthetic:source/x",
                                      "/data/a.wav", "synthetic:source/1?seed=a"])
def test_bad_locations_raise_value_error(location):
    with pytest.raises(ValueError, match="synthetic"):
        render_synthetic(location, SR)


def test_sample_rates_below_the_content_bandwidth_are_refused():
    with pytest.raises(ValueError, match="sample_rate"):
        render_synthetic("synthetic:source/0", 8000)


def test_same_location_gives_identical_bytes_in_a_fresh_process():
    locations = ["synthetic:source/5?seed=0", "synthetic:events/17?seed=2", "synthetic:scenes/9?seed=0"]
    here = [_sha(render_synthetic(loc, SR)) for loc in locations]
    code = ("import hashlib, sys; from data_prep.sources.synthetic import render_synthetic; "
            "print(' '.join(hashlib.sha256(render_synthetic(l, %d).tobytes()).hexdigest() for l in sys.argv[1:]))" % SR)
    out = subprocess.run([sys.executable, "-c", code, *locations], cwd=REPO, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == here


def test_rendering_does_not_touch_or_depend_on_the_global_rng():
    np.random.seed(1)
    first = render_synthetic("synthetic:source/3", SR)
    state = np.random.get_state()[1].copy()
    np.random.seed(2)
    second = render_synthetic("synthetic:source/3", SR)
    np.random.seed(1)
    render_synthetic("synthetic:source/3", SR)
    assert (np.random.get_state()[1] == state).all()
    assert _sha(first) == _sha(second)


def test_different_seeds_give_different_clips():
    a, b = load_synthetic("source", num_clips=50, seed=0), load_synthetic("source", num_clips=50, seed=1)
    assert [r.labels for r in a.records] != [r.labels for r in b.records]
    assert _sha(render_synthetic("synthetic:events/0?seed=0", SR)) != _sha(render_synthetic("synthetic:events/0?seed=1", SR))


def test_a_smaller_corpus_is_a_prefix_of_a_larger_one():
    for task in SYNTHETIC_TASKS:
        assert load_synthetic(task, num_clips=30).records == load_synthetic(task, num_clips=60).records[:30]


def test_audio_is_float32_mono_finite_audible_and_of_the_planned_length():
    for task in SYNTHETIC_TASKS:
        for index in (0, 1, 7):
            plan = plan_synthetic(task, index)
            for sr in (SR, 44100):
                wave = render_synthetic(plan.location, sr)
                assert wave.dtype == np.float32 and wave.ndim == 1
                assert wave.size == round(plan.duration_s * sr)
                assert np.isfinite(wave).all()
                assert 1e-3 < np.abs(wave).max() <= 0.99


# ------------------------------------------------------------------ task "source"

def test_source_vocabulary_has_at_least_24_distinct_named_classes():
    vocab = SYNTHETIC_TASKS["source"].vocab
    assert len(vocab) >= 24
    assert len(set(vocab.names)) == len(vocab) and all(vocab.names)


def test_source_clips_have_one_to_four_clip_level_labels_and_an_85_15_split():
    listing = load_synthetic("source")
    assert len(listing.records) == SYNTHETIC_TASKS["source"].default_num_clips == 1600
    assert all(1 <= len(r.labels) <= 4 and r.fold is None for r in listing.records)
    assert listing.split_counts() == {"eval": 240, "train": 1360}
    counts = Counter(label for r in listing.records for label in r.labels)
    for split in ("train", "eval"):           # every class appears in both splits
        assert {l for r in listing.records if r.split == split for l in r.labels} == set(listing.vocab.ids)
    assert max(counts.values()) >= 3 * min(counts.values())      # a long-tailed class prior
    assert Counter(len(r.labels) for r in listing.records)[1] > 0.3 * len(listing.records)


def test_source_clip_lengths_are_long_tailed_from_half_a_second_to_a_minute():
    durations = np.array([plan_synthetic("source", i).duration_s for i in range(1600)])
    median = float(np.median(durations))
    assert 2.5 <= median <= 3.5
    assert durations.min() >= 0.5 and durations.max() <= 60.0
    assert durations.max() >= 30.0 and (durations <= 1.0).mean() > 0.02
    assert np.percentile(durations, 95) > 3 * median            # long right tail
    assert durations.mean() > 1.3 * median


def test_source_labels_match_the_events_in_the_plan():
    for i in range(200):
        plan = plan_synthetic("source", i)
        assert set(plan.labels) == {e.kind for e in plan.events}
        assert all(0 <= e.onset_s and e.onset_s + e.duration_s <= plan.duration_s + 1e-9 for e in plan.events)
        assert all(2.0 <= e.snr_db <= 20.0 for e in plan.events)


def test_source_event_classes_are_separable_by_a_crude_spectral_nearest_centroid():
    listing = load_synthetic("source", num_clips=800)
    single = [r for r in listing.records if len(r.labels) == 1]
    x = np.stack([_features(render_synthetic(r.audio, SR)) for r in single])
    y = [r.labels[0] for r in single]
    order = np.random.default_rng(0).permutation(len(single))
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    accuracy = _nearest_centroid_accuracy(x[train], [y[i] for i in train], x[test], [y[i] for i in test])
    chance = 1 / len(set(y))
    assert accuracy > 10 * chance, accuracy


# ------------------------------------------------------------------ target tasks

def test_events_task_is_esc50_like_five_balanced_folds_of_single_label_5s_clips():
    spec = SYNTHETIC_TASKS["events"]
    listing = load_synthetic("events")
    assert 10 <= len(spec.vocab) <= 15 and spec.num_folds == 5
    per_fold_class = Counter((r.fold, r.labels) for r in listing.records)
    assert len(set(per_fold_class.values())) == 1 and len(per_fold_class) == 5 * len(spec.vocab)
    assert all(len(r.labels) == 1 and r.split == f"fold{r.fold}" for r in listing.records)
    assert {plan_synthetic("events", i).duration_s for i in range(30)} == {5.0}


def test_events_task_has_classes_the_source_corpus_does_not_label():
    source = set(SYNTHETIC_TASKS["source"].vocab.ids)
    assert len(set(SYNTHETIC_TASKS["events"].vocab.ids) - source) >= 6


def test_clips_of_one_source_recording_share_label_and_fold():
    for task in ("events", "scenes"):
        groups = defaultdict(list)
        for rec in load_synthetic(task).records:
            groups[rec.source_id].append(rec)
        assert all(len(g) >= 2 for g in groups.values())
        assert all(len({(r.fold, r.labels) for r in g}) == 1 for g in groups.values())


def test_scenes_task_has_four_balanced_folds_of_10s_clips():
    spec = SYNTHETIC_TASKS["scenes"]
    listing = load_synthetic("scenes")
    assert 6 <= len(spec.vocab) <= 8 and spec.num_folds == 4
    per_fold_class = Counter((r.fold, r.labels) for r in listing.records)
    assert len(set(per_fold_class.values())) == 1 and len(per_fold_class) == 4 * len(spec.vocab)
    locations = Counter(r.source_id for r in listing.records)
    assert len(locations) * 4 == len(listing.records)
    assert {plan_synthetic("scenes", i).duration_s for i in range(20)} == {10.0}


# Scenes share their spectral make-up by design (they differ in event mixtures), so crude
# spectra only need to beat chance twice over there; event classes differ in spectrum outright.
@pytest.mark.parametrize("task, num_clips, times_chance", [("events", 240, 4), ("scenes", 128, 2)])
def test_target_task_classes_are_learnable_from_crude_spectra(task, num_clips, times_chance):
    listing = load_synthetic(task, num_clips=num_clips)
    x = np.stack([_features(render_synthetic(r.audio, SR)) for r in listing.records])
    y = [r.labels[0] for r in listing.records]
    test = np.array([r.fold == 1 for r in listing.records])
    accuracy = _nearest_centroid_accuracy(x[~test], [l for l, t in zip(y, test) if not t],
                                          x[test], [l for l, t in zip(y, test) if t])
    assert accuracy > times_chance / len(listing.vocab), accuracy


@pytest.mark.parametrize("kwargs, match", [
    ({"task": "music"}, "unknown synthetic task"),
    ({"task": "source", "num_clips": 0}, "num_clips"),
    ({"task": "source", "seed": -1}, "seed"),
])
def test_load_synthetic_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_synthetic(**kwargs)


def test_listings_are_named_and_carry_the_task_vocabulary():
    for task, spec in SYNTHETIC_TASKS.items():
        listing = load_synthetic(task, num_clips=4)
        assert listing.name == spec.name == f"synthetic-{task}"
        assert listing.vocab == spec.vocab and listing.rejects == []
        assert len(set(spec.vocab.names)) == len(spec.vocab)


def test_scenes_hear_the_same_event_kinds_and_differ_only_in_which_are_frequent():
    """Harder scenes: no scene owns an event kind; each favours one member of every spectral
    family, and any two scenes favour different members in at least two families."""
    listing = load_synthetic("scenes")
    kinds_by_scene, counts_by_scene = defaultdict(set), defaultdict(Counter)
    for i, rec in enumerate(listing.records):
        plan = plan_synthetic("scenes", i)
        kinds_by_scene[rec.labels[0]] |= {e.kind for e in plan.events[1:]}   # events[0] is the bed
        counts_by_scene[rec.labels[0]].update(e.kind for e in plan.events[1:])
    assert len({frozenset(k) for k in kinds_by_scene.values()}) == 1
    favoured = {scene: {k for k, _ in counts.most_common(4)} for scene, counts in counts_by_scene.items()}
    assert len({frozenset(f) for f in favoured.values()}) == len(favoured) == 8
    scenes = sorted(favoured)
    assert min(len(favoured[a] - favoured[b]) for a in scenes for b in scenes if a < b) >= 2
    beds = Counter((r.labels[0], plan_synthetic("scenes", i).events[0].kind) for i, r in enumerate(listing.records))
    assert len({kind for _, kind in beds}) >= 3 and all(len({k for (s, k) in beds if s == scene}) >= 2
                                                         for scene in scenes)


# ------------------------------------------------------------------ reference events (strong labels)

@pytest.mark.parametrize("task", ["source", "events"])
def test_reference_events_lie_within_the_clip_and_carry_exactly_its_weak_labels(task):
    listing = load_synthetic(task, num_clips=120)
    for rec in listing.records:
        plan = plan_synthetic(*parse_synthetic_location(rec.audio))
        spans = reference_events(rec)
        assert spans and {label for _, _, label in spans} == set(rec.labels)
        assert all(0.0 <= on < off <= plan.duration_s for on, off, _ in spans)
        assert spans == sorted(spans, key=lambda s: (s[0], s[2], s[1]))
        for label in rec.labels:   # merged: spans of one label never overlap
            mine = [(on, off) for on, off, lab in spans if lab == label]
            assert all(a[1] < b[0] for a, b in zip(mine, mine[1:]))


def test_reference_events_of_the_events_task_leave_out_the_unlabelled_distractors():
    for i in range(60):
        plan = plan_synthetic("events", i)
        labelled = [e for e in plan.events if e.label is not None]
        assert {e.label for e in labelled} == set(plan.labels)
        covered = sum(off - on for on, off, _ in reference_events(plan))
        assert covered <= sum(min(e.duration_s, plan.duration_s - e.onset_s) for e in labelled) + 1e-9
    assert any(e.label is None for i in range(60) for e in plan_synthetic("events", i).events)


def test_reference_events_are_deterministic_from_the_seed_and_accept_record_location_or_plan():
    rec = load_synthetic("source", num_clips=6, seed=4).records[5]
    assert reference_events(rec) == reference_events(rec.audio) == reference_events(plan_synthetic("source", 5, 4))
    assert reference_events("synthetic:source/5?seed=4") != reference_events("synthetic:source/5?seed=5")
    assert reference_events("synthetic:scenes/3") == []
    with pytest.raises(ValueError, match="synthetic"):
        reference_events("/data/a.wav")
