"""Prep of the synthetic corpus writes where it placed every labelled event: a sidecar for scoring detection."""
from __future__ import annotations

import csv

from data_prep.job import REFERENCE_EVENTS, write_reference_events
from data_prep.records import ClipRecord, LabelVocab, SourceListing
from data_prep.sources.synthetic import load_synthetic


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_the_sidecar_lists_each_clips_events_inside_the_clip_under_the_clips_own_class_names(tmp_path):
    listing = load_synthetic("events", num_clips=24, seed=3)
    assert write_reference_events(listing, str(tmp_path)) > 0
    rows = _rows(tmp_path / REFERENCE_EVENTS)
    names = dict(zip(listing.vocab.ids, listing.vocab.names))
    by_id = {r.clip_id: r for r in listing.records}
    assert {row["filename"] for row in rows} == set(by_id)  # every events clip has its target sound
    for row in rows:
        rec = by_id[row["filename"]]
        assert row["event_label"] in {names[label] for label in rec.labels}
        onset, offset = float(row["onset"]), float(row["offset"])
        assert 0.0 <= onset < offset


def test_other_layouts_get_no_sidecar(tmp_path):
    listing = SourceListing("folder", LabelVocab(("dog",), ("dog",)),
                            [ClipRecord("a", str(tmp_path / "a.wav"), ["dog"], "train")], [])
    assert write_reference_events(listing, str(tmp_path)) == 0
    assert not (tmp_path / REFERENCE_EVENTS).exists()
