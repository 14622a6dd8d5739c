"""data_prep.validation_split: the validation share is carved from training clips only, by source recording."""
from __future__ import annotations

import pytest

from data_prep.records import ClipRecord
from data_prep.validation_split import carve_validation, in_validation, parse_val_groups


def _records(n: int, takes: int = 3) -> list[ClipRecord]:
    recs = [ClipRecord(f"c{i:04d}", f"/a/{i}.wav", ["dog"], "train", source_id=f"s{i // takes}") for i in range(n)]
    return recs + [ClipRecord(f"e{i}", f"/e/{i}.wav", ["dog"], "eval") for i in range(20)]


def test_takes_of_one_source_recording_never_straddle_train_and_val():
    out = carve_validation(_records(600), 0.2, seed=1)
    split_of_source: dict[str, set] = {}
    for r in out:
        if r.source_id:
            split_of_source.setdefault(r.source_id, set()).add(r.split)
    assert all(len(s) == 1 for s in split_of_source.values())
    val = sum(r.split == "val" for r in out)
    assert 0.1 * 600 < val < 0.3 * 600  # about the asked share (200 groups of 3)


def test_eval_clips_are_never_moved_and_the_carve_is_deterministic_and_stable_under_additions():
    first = carve_validation(_records(300), 0.25, seed=5)
    again = carve_validation(_records(300), 0.25, seed=5)
    assert first == again
    assert all(r.split == "eval" for r in first if r.clip_id.startswith("e"))
    grown = carve_validation(_records(600), 0.25, seed=5)
    old = {r.clip_id: r.split for r in first}
    assert all(old[r.clip_id] == r.split for r in grown if r.clip_id in old)
    other_seed = carve_validation(_records(300), 0.25, seed=6)
    assert [r.split for r in other_seed] != [r.split for r in first]


def test_clips_without_a_source_recording_are_carved_one_by_one_and_zero_moves_nothing():
    recs = [ClipRecord(f"c{i}", f"/a/{i}.wav", ["x"], "train") for i in range(400)]
    assert carve_validation(recs, 0.0) == recs
    assert 40 < sum(r.split == "val" for r in carve_validation(recs, 0.2)) < 120


def test_bad_fraction_or_an_existing_val_split_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        carve_validation(_records(10), 1.0)
    with pytest.raises(ValueError, match="already has"):
        carve_validation([ClipRecord("v", "/v.wav", ["x"], "val")], 0.1)


def test_a_groups_file_keeps_every_drawn_recording_out_of_train_even_in_mixtures():
    # 300 train clips, each mixing two of 60 recordings; the last 20 are named in no row.
    recs = [ClipRecord(f"c{i}", f"/a/{i}.wav", ["x"], "train") for i in range(300)]
    groups = {f"c{i}": (f"rec{i % 60}", f"rec{(7 * i + 3) % 60}") for i in range(280)}
    out = carve_validation(recs, 0.1, seed=2, groups=groups)
    drawn = {f"rec{k}" for k in range(60) if in_validation(f"rec{k}", 0.1, 2)}
    assert drawn, "the seed draws some recording"
    for r in out:
        if r.clip_id in groups:
            assert (r.split == "val") == bool(drawn & set(groups[r.clip_id]))
        else:  # unnamed clips are carved by their own id
            assert (r.split == "val") == in_validation(r.clip_id, 0.1, 2)
    trained = {g for r in out if r.split == "train" and r.clip_id in groups for g in groups[r.clip_id]}
    assert not drawn & trained


def test_groups_replace_the_source_recording_only_for_the_clips_they_name():
    recs = _records(300)
    named = {r.clip_id: ("one-big-recording",) for r in recs if r.split == "train"}
    always = carve_validation(recs, 0.5, seed=0, groups=named)
    assert len({r.split for r in always if r.clip_id in named}) == 1  # one group: all in or all out
    assert carve_validation(recs, 0.2, seed=1, groups={}) == carve_validation(recs, 0.2, seed=1)


def test_a_groups_csv_is_parsed_with_several_rows_per_clip_and_bad_files_are_named():
    groups = parse_val_groups("clip_id,group\na,r1\na,r2\nb,r1\na,r1\n", name="g.csv")
    assert groups == {"a": ("r1", "r2"), "b": ("r1",)}
    with pytest.raises(ValueError, match="g.csv: expected a CSV header"):
        parse_val_groups("clip,source\na,r1\n", name="g.csv")
    with pytest.raises(ValueError, match="g.csv, line 3"):
        parse_val_groups("clip_id,group\na,r1\nb,\n", name="g.csv")
    with pytest.raises(ValueError, match="no rows"):
        parse_val_groups("clip_id,group\n", name="g.csv")
