"""Spec: the ESC-50 source keeps the official folds and source recordings."""
from __future__ import annotations

from collections import defaultdict

import pytest

from data_prep.records import LabelVocab
from data_prep.sources import load_esc50
from factories import ESC50_CATEGORIES, make_esc50_layout


def test_vocabulary_is_ordered_by_target_with_category_names(tmp_path):
    make_esc50_layout(tmp_path, n_classes=5, bad=False)
    vocab = load_esc50(tmp_path).vocab
    assert vocab.ids == ESC50_CATEGORIES[:5]
    assert vocab.name("chirping_birds") == "Chirping birds"


def test_clips_of_one_source_recording_share_a_fold(tmp_path):
    make_esc50_layout(tmp_path, n_classes=3, n_per_class=10, bad=False)
    folds = defaultdict(set)
    for rec in load_esc50(tmp_path).records:
        assert rec.split == f"fold{rec.fold}" and 1 <= rec.fold <= 5
        folds[rec.source_id].add(rec.fold)
    assert all(len(f) == 1 for f in folds.values())
    assert {f for fs in folds.values() for f in fs} == {1, 2, 3, 4, 5}


def test_esc10_subset(tmp_path):
    make_esc50_layout(tmp_path, n_classes=4, bad=False)
    listing = load_esc50(tmp_path, esc10_only=True)
    assert listing.name == "esc10"
    assert listing.vocab.ids == ("dog", "chirping_birds")          # the even targets in the fixture
    assert {r.labels[0] for r in listing.records} == {"dog", "chirping_birds"}


def test_a_fixed_vocabulary_turns_other_categories_into_unknown_label(tmp_path):
    make_esc50_layout(tmp_path, n_classes=2, n_per_class=2, bad=False)
    listing = load_esc50(tmp_path, vocab=LabelVocab.from_ids(["dog"]))
    assert {r.labels for r in listing.records} == {("dog",)}
    assert [r.reason for r in listing.rejects] == ["unknown_label", "unknown_label"]


def test_missing_metadata_raises_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta/esc50.csv"):
        load_esc50(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,fold,category\n")
    with pytest.raises(ValueError, match="lacks column"):
        load_esc50(tmp_path)
