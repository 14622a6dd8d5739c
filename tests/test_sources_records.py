"""Spec: records.py holds frozen, self-validating facts that round-trip through plain dicts."""
from __future__ import annotations

import dataclasses
import json

import pytest

from data_prep.records import REJECT_REASONS, ClipRecord, LabelVocab, Reject, SourceListing


def test_reject_reasons_start_with_the_contract_list():
    # docs/contracts.md lists these nine; the decoder added "bad_sample_rate" after them.
    assert REJECT_REASONS[:9] == ("unreadable", "empty", "silent", "non_finite", "too_short",
                                  "unknown_label", "duplicate_id", "bad_csv_row", "missing_audio")
    assert len(set(REJECT_REASONS)) == len(REJECT_REASONS)


def test_clip_record_round_trips_through_json():
    rec = ClipRecord("1-100032-A-0", "/data/a.wav", ["dog", "bark"], "fold1", fold=1, source_id="100032",
                     start_s=30, end_s=40.5)
    assert rec.labels == ("dog", "bark")          # a list is stored as a tuple
    assert rec.start_s == 30.0 and isinstance(rec.start_s, float)
    assert ClipRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_clip_record_optional_fields_default_to_none_in_from_dict():
    rec = ClipRecord.from_dict({"clip_id": "a", "audio": "synthetic:source/1", "labels": ["x"], "split": "train"})
    assert (rec.fold, rec.source_id, rec.start_s, rec.end_s) == (None, None, None, None)


def test_clip_record_is_frozen():
    rec = ClipRecord("a", "/a.wav", ("x",), "train")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.split = "eval"


@pytest.mark.parametrize("kwargs, match", [
    ({"clip_id": ""}, "clip_id"),
    ({"clip_id": "a\nb"}, "newlines"),
    ({"audio": ""}, "audio"),
    ({"labels": "dog"}, "not the string"),
    ({"labels": ("dog", "dog")}, "more than once"),
    ({"labels": ("dog", "")}, "non-empty"),
    ({"split": "fold 1"}, "split"),
    ({"split": "train/x"}, "split"),
    ({"fold": 0}, "fold"),
    ({"fold": True}, "fold"),
    ({"fold": 1.0}, "fold"),
    ({"source_id": ""}, "source_id"),
    ({"start_s": -1.0}, "start_s"),
    ({"start_s": float("nan")}, "start_s"),
    ({"start_s": 10.0, "end_s": 5.0}, "before"),
])
def test_clip_record_rejects_invalid_fields(kwargs, match):
    base = {"clip_id": "a", "audio": "/a.wav", "labels": ("x",), "split": "train"}
    with pytest.raises((ValueError, TypeError), match=match):
        ClipRecord(**{**base, **kwargs})


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        ClipRecord.from_dict({"clip_id": "a", "audio": "/a", "labels": [], "split": "train", "duration": 1})


def test_label_vocab_index_is_the_position_and_unknown_ids_raise_key_error():
    vocab = LabelVocab(ids=("/m/a", "/m/b"), names=("A", "B"))
    assert [vocab.index(i) for i in vocab.ids] == [0, 1]
    assert vocab.name("/m/b") == "B" and "/m/a" in vocab and len(vocab) == 2
    with pytest.raises(KeyError):
        vocab.index("/m/zzz")


def test_label_vocab_round_trips_as_dict_and_as_manifest_entries():
    vocab = LabelVocab(ids=["x", "y"], names=["X", "Y"])
    assert vocab.ids == ("x", "y")
    assert LabelVocab.from_dict(vocab.to_dict()) == vocab
    assert vocab.to_entries() == [{"index": 0, "id": "x", "name": "X"}, {"index": 1, "id": "y", "name": "Y"}]
    assert LabelVocab.from_entries(vocab.to_entries()) == vocab
    assert LabelVocab.from_ids(["p"]) == LabelVocab(("p",), ("p",))


@pytest.mark.parametrize("ids, names, match", [
    (("a", "a"), ("A", "B"), "unique"),
    (("a", "b"), ("A",), "names"),
    (("a", ""), ("A", "B"), "non-empty"),
])
def test_label_vocab_rejects_inconsistent_input(ids, names, match):
    with pytest.raises(ValueError, match=match):
        LabelVocab(ids=ids, names=names)


def test_reject_validates_reason_and_round_trips():
    rej = Reject(None, "/m/esc50.csv", "bad_csv_row", "line 7: fold 'x' is not an integer")
    assert Reject.from_dict(json.loads(json.dumps(rej.to_dict()))) == rej
    with pytest.raises(ValueError, match="reason must be one of"):
        Reject("a", "/a.wav", "too_loud", "")


def test_source_listing_refuses_duplicate_ids_and_labels_outside_the_vocabulary():
    vocab = LabelVocab.from_ids(["x"])
    rec = ClipRecord("a", "/a.wav", ("x",), "train")
    with pytest.raises(ValueError, match="appears twice"):
        SourceListing("d", vocab, [rec, rec], [])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        SourceListing("d", vocab, [ClipRecord("b", "/b.wav", ("y",), "train")], [])


def test_source_listing_round_trips_and_counts():
    vocab = LabelVocab.from_ids(["x", "y"])
    listing = SourceListing("d", vocab, [ClipRecord("a", "/a.wav", ("x",), "train"),
                                         ClipRecord("b", "/b.wav", ("x", "y"), "eval")],
                            [Reject("c", "/c.wav", "missing_audio", "gone"), Reject(None, "/m.csv", "bad_csv_row", "")])
    assert SourceListing.from_dict(json.loads(json.dumps(listing.to_dict()))) == listing
    assert listing.split_counts() == {"eval": 1, "train": 1}
    assert listing.rejects_by_reason() == {"bad_csv_row": 1, "missing_audio": 1}
