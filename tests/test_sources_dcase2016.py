"""Spec: the DCASE 2016 scene source assigns each clip the fold that evaluates it."""
from __future__ import annotations

from collections import defaultdict

import pytest

from data_prep.sources import load_dcase2016
from factories import make_dcase2016_layout


def test_fold_comes_from_the_evaluate_lists_and_locations_stay_in_one_fold(tmp_path):
    expected = make_dcase2016_layout(tmp_path, locations_per_scene=8, bad=False)
    listing = load_dcase2016(tmp_path)
    folds = defaultdict(set)
    for rec in listing.records:
        assert rec.fold == expected["records"][rec.clip_id]["fold"] and rec.split == f"fold{rec.fold}"
        assert rec.clip_id.startswith(rec.source_id + "_")
        folds[rec.source_id].add(rec.fold)
    assert all(len(f) == 1 for f in folds.values())
    assert sorted({r.fold for r in listing.records}) == [1, 2, 3, 4]


def test_test_lists_are_used_when_evaluate_lists_are_absent(tmp_path):
    make_dcase2016_layout(tmp_path, bad=False)
    with_evaluate = load_dcase2016(tmp_path)
    for path in (tmp_path / "evaluation_setup").glob("fold*_evaluate.txt"):
        path.unlink()
    assert load_dcase2016(tmp_path) == with_evaluate


def test_meta_entries_without_the_audio_prefix_are_found(tmp_path):
    make_dcase2016_layout(tmp_path, bad=False)
    listing = load_dcase2016(tmp_path)
    meta = tmp_path / "meta.txt"
    meta.write_text(meta.read_text().replace("audio/", ""))
    assert load_dcase2016(tmp_path) == listing


def test_vocabulary_is_the_sorted_scene_set(tmp_path):
    make_dcase2016_layout(tmp_path, scenes=("office", "beach", "cafe/restaurant"), bad=False)
    vocab = load_dcase2016(tmp_path).vocab
    assert vocab.ids == ("beach", "cafe/restaurant", "office")
    assert vocab.name("cafe/restaurant") == "Cafe/restaurant"


def test_missing_layout_raises_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.txt"):
        load_dcase2016(tmp_path)
    (tmp_path / "meta.txt").write_text("audio/a_0_10.wav\tbeach\n")
    with pytest.raises(FileNotFoundError, match="evaluation_setup"):
        load_dcase2016(tmp_path)
