"""Spec: the AudioSet source reads the CSV release and finds user-downloaded audio by stem."""
from __future__ import annotations

import pytest

from data_prep.sources import load_audioset
from data_prep.sources.audioset import AudioIndex, read_class_labels
from factories import AUDIOSET_NAMINGS, make_audioset_layout, sine, write_wav


def test_every_file_naming_convention_is_matched(tmp_path):
    expected = make_audioset_layout(tmp_path, n_clips=len(AUDIOSET_NAMINGS), bad=False)
    listing = load_audioset(**expected["load_kwargs"])
    assert len(listing.records) == len(AUDIOSET_NAMINGS)
    suffixes = {r.audio.rsplit(".", 1)[-1] for r in listing.records}
    assert suffixes == {"wav", "flac", "ogg"}


@pytest.mark.parametrize("stem", ["abcdefghijk", "Yabcdefghijk", "abcdefghijk_30", "abcdefghijk_30.000",
                                  "abcdefghijk_30_40", "abcdefghijk_30.000_40.000", "Yabcdefghijk_30.0_40.0"])
def test_audio_index_finds_a_segment_under_each_stem_form(tmp_path, stem):
    write_wav(tmp_path / "sub" / f"{stem}.wav", sine(440, 0.1))
    assert AudioIndex(tmp_path).find("abcdefghijk", 30.0, 40.0) is not None


def test_audio_index_does_not_match_another_segment_start(tmp_path):
    write_wav(tmp_path / "abcdefghijk_50.000_60.000.wav", sine(440, 0.1))
    assert AudioIndex(tmp_path).find("abcdefghijk", 30.0, 40.0) is None


def test_ids_containing_underscores_and_digits_are_matched_exactly(tmp_path):
    write_wav(tmp_path / "ab_12345678.wav", sine(440, 0.1))           # a YTID, not "ab" at 12345678 s
    write_wav(tmp_path / "ab_12345678_30.wav", sine(330, 0.1))
    index = AudioIndex(tmp_path)
    assert index.find("ab_12345678", 0.0, 10.0).endswith("ab_12345678.wav")
    assert index.find("ab", 12345678.0, 12345688.0).endswith("ab_12345678.wav")


@pytest.mark.parametrize("split, field", [("balanced_train", "train"), ("unbalanced_train", "train"), ("eval", "eval")])
def test_split_names_map_to_train_and_eval(tmp_path, split, field):
    expected = make_audioset_layout(tmp_path, split=split, n_clips=3, bad=False)
    listing = load_audioset(**expected["load_kwargs"])
    assert {r.split for r in listing.records} == {field}
    assert listing.name == f"audioset-{split}"


def test_split_may_be_given_as_the_segments_file_name_or_path(tmp_path):
    expected = make_audioset_layout(tmp_path, split="eval", n_clips=3, bad=False)
    kwargs = expected["load_kwargs"]
    by_name = load_audioset(kwargs["root"], "eval_segments.csv", audio_dir=kwargs["audio_dir"])
    by_path = load_audioset(kwargs["root"], str(tmp_path / "eval_segments.csv"), audio_dir=kwargs["audio_dir"])
    assert by_name == by_path == load_audioset(**kwargs)


def test_audio_folder_defaults_to_root_audio(tmp_path):
    expected = make_audioset_layout(tmp_path, n_clips=4, bad=False, audio_subdir="audio")
    listing = load_audioset(tmp_path, "balanced_train")
    assert sorted(r.clip_id for r in listing.records) == expected["good"]


def test_segment_times_are_kept(tmp_path):
    expected = make_audioset_layout(tmp_path, n_clips=4, bad=False)
    for rec in load_audioset(**expected["load_kwargs"]).records:
        assert (rec.start_s, rec.end_s) == (expected["records"][rec.clip_id]["start_s"],
                                            expected["records"][rec.clip_id]["end_s"])


def test_vocabulary_follows_the_index_column_and_keeps_quoted_display_names(tmp_path):
    make_audioset_layout(tmp_path, n_clips=1, bad=False)
    vocab = read_class_labels(tmp_path / "class_labels_indices.csv")
    assert vocab.ids == ("/m/0t001", "/m/0t002", "/m/0t003", "/m/0t004")
    assert vocab.names[1] == "Dog, bark"


def test_missing_metadata_raises_a_clear_error(tmp_path):
    expected = make_audioset_layout(tmp_path, n_clips=1, bad=False)
    with pytest.raises(FileNotFoundError, match="unbalanced_train_segments.csv"):
        load_audioset(tmp_path, "unbalanced_train", audio_dir=expected["load_kwargs"]["audio_dir"])
    with pytest.raises(FileNotFoundError, match="audio folder"):
        load_audioset(tmp_path, "balanced_train", audio_dir=tmp_path / "nope")
    (tmp_path / "class_labels_indices.csv").unlink()
    with pytest.raises(FileNotFoundError, match="class_labels_indices.csv"):
        load_audioset(tmp_path, "balanced_train")


def test_a_corrupt_vocabulary_raises_instead_of_shifting_indices(tmp_path):
    (tmp_path / "class_labels_indices.csv").write_text("index,mid,display_name\n0,/m/a,A\n2,/m/c,C\n")
    with pytest.raises(ValueError, match="index column"):
        read_class_labels(tmp_path / "class_labels_indices.csv")
