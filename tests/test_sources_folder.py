"""Spec: the folder source reads a path,labels CSV relative to the audio folder."""
from __future__ import annotations

import pytest

from data_prep.sources import load_folder
from data_prep.sources.folder import split_labels
from factories import make_folder_layout, sine, write_wav


@pytest.mark.parametrize("text, labels", [
    ("dog;bark", ("dog", "bark")),
    (" dog ; bark ;", ("dog", "bark")),
    ("dog,bark", ("dog", "bark")),
    ("dog, dog", ("dog",)),
    ("a b;c", ("a b", "c")),
    (" ; ", ()),
])
def test_labels_split_on_semicolons_or_commas(text, labels):
    assert split_labels(text) == labels


def test_vocabulary_is_the_sorted_label_set_without_a_vocab_file(tmp_path):
    expected = make_folder_layout(tmp_path, bad=False)
    listing = load_folder(**expected["load_kwargs"])
    assert list(listing.vocab.ids) == sorted(listing.vocab.ids) == list(expected["vocab"])


def test_csv_path_may_be_relative_to_root(tmp_path):
    expected = make_folder_layout(tmp_path, bad=False)
    assert load_folder(tmp_path, "labels.csv") == load_folder(**expected["load_kwargs"])


def test_optional_split_fold_source_and_clip_id_columns(tmp_path):
    write_wav(tmp_path / "a.wav", sine(440, 0.3))
    write_wav(tmp_path / "b.wav", sine(330, 0.3))
    (tmp_path / "l.csv").write_text("clip_id,path,split,fold,source_id,labels\n"
                                    "x1,a.wav,eval,2,rec7,dog\n"
                                    "x2,b.wav,,,,cat\n"
                                    "x3,b.wav,bad split,,,cat\n")
    listing = load_folder(tmp_path, tmp_path / "l.csv")
    a, b = listing.records
    assert (a.clip_id, a.split, a.fold, a.source_id) == ("x1", "eval", 2, "rec7")
    assert (b.clip_id, b.split, b.fold, b.source_id) == ("x2", "train", None, None)
    assert [(r.clip_id, r.reason) for r in listing.rejects] == [("x3", "bad_csv_row")]


def test_vocab_file_fixes_the_order(tmp_path):
    expected = make_folder_layout(tmp_path, bad=True)
    listing = load_folder(**expected["load_kwargs"])
    assert listing.vocab.ids == ("bird", "car", "dog", "rain")


def test_missing_csv_or_header_raises_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="label CSV"):
        load_folder(tmp_path, "nope.csv")
    (tmp_path / "l.csv").write_text("file,tags\na.wav,dog\n")
    with pytest.raises(ValueError, match="'path' and 'labels'"):
        load_folder(tmp_path, "l.csv")


@pytest.mark.parametrize("bad_id", ["x\x00y", "\x00"])
def test_a_nul_in_the_id_column_rejects_that_row_only(tmp_path, bad_id):
    write_wav(tmp_path / "a.wav", sine(440, 0.3))
    write_wav(tmp_path / "b.wav", sine(330, 0.3))
    (tmp_path / "l.csv").write_text(f"clip_id,path,labels\n{bad_id},a.wav,dog\nok,b.wav,cat\n")
    listing = load_folder(tmp_path, "l.csv")
    assert [r.clip_id for r in listing.records] == ["ok"]
    assert [(r.reason, r.path) for r in listing.rejects] == [("bad_csv_row", str(tmp_path / "l.csv"))]
    assert "line 2" in listing.rejects[0].detail and "NUL" in listing.rejects[0].detail


def test_a_nul_in_a_path_used_as_the_id_rejects_that_row_only(tmp_path):
    write_wav(tmp_path / "b.wav", sine(330, 0.3))
    (tmp_path / "l.csv").write_text("path,labels\na\x00.wav,dog\nb.wav,cat\n")
    listing = load_folder(tmp_path, "l.csv")
    assert [r.clip_id for r in listing.records] == ["b.wav"]
    assert [r.reason for r in listing.rejects] == ["bad_csv_row"]
