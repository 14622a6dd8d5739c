"""Spec shared by every real source: a fixture layout is listed completely and correctly.

Every good row becomes a record with its labels, split, fold and source id; every bad row is
reported by clip id with the right reason; records with bad audio are still listed (the decoder
rejects them later); nothing is listed twice.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from data_prep.records import REJECT_REASONS
from data_prep.sources import load_audioset, load_dcase2016, load_esc50, load_folder
from factories import (BAD_AUDIO, make_audioset_layout, make_dcase2016_layout, make_esc50_layout,
                       make_folder_layout)

LAYOUTS = {
    "esc50": (make_esc50_layout, load_esc50),
    "dcase2016": (make_dcase2016_layout, load_dcase2016),
    "audioset": (make_audioset_layout, load_audioset),
    "folder": (make_folder_layout, load_folder),
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request, tmp_path):
    make, load = LAYOUTS[request.param]
    expected = make(tmp_path / request.param)
    return request.param, expected, load(**expected["load_kwargs"])


def test_every_listed_clip_is_a_record_with_its_labels_split_fold_and_source(layout):
    _, expected, listing = layout
    got = {r.clip_id: r for r in listing.records}
    assert set(got) == set(expected["records"])
    for clip_id, fields in expected["records"].items():
        rec = got[clip_id]
        for name, value in fields.items():
            assert getattr(rec, name) == value, (clip_id, name)


def test_vocabulary_is_in_the_documented_order(layout):
    _, expected, listing = layout
    assert listing.vocab.ids == expected["vocab"]
    assert all(listing.vocab.names)


def test_each_bad_row_is_reported_by_clip_id_with_its_reason(layout):
    _, expected, listing = layout
    got = sorted(((r.clip_id, r.reason) for r in listing.rejects), key=lambda x: (x[1], x[0] or ""))
    assert got == expected["listing_rejects"]
    for rej in listing.rejects:
        assert rej.reason in REJECT_REASONS and rej.path and rej.detail
        if rej.reason != "missing_audio":       # row problems name the line of the metadata file
            assert "line " in rej.detail


def test_missing_audio_rejects_point_at_the_expected_file(layout):
    _, expected, listing = layout
    for rej in listing.rejects:
        if rej.reason == "missing_audio":
            assert rej.clip_id.split("/")[-1].split(".")[0] in rej.path
            assert not os.path.exists(rej.path)


def test_records_point_at_existing_absolute_audio_files(layout):
    _, _, listing = layout
    for rec in listing.records:
        assert os.path.isabs(rec.audio) and os.path.isfile(rec.audio)


def test_listing_is_deterministic(layout):
    name, expected, listing = layout
    again = LAYOUTS[name][1](**expected["load_kwargs"])
    assert again == listing


def test_fixture_bad_audio_is_bad_in_the_way_it_claims(layout):
    """The decode-stage expectations the pipeline tests rely on hold for these exact files."""
    _, expected, listing = layout
    by_id = {r.clip_id: r for r in listing.records}
    assert sorted(reason for _, reason in expected["decode_rejects"]) == sorted(BAD_AUDIO.values())
    for clip_id, reason in expected["decode_rejects"]:
        path = by_id[clip_id].audio
        if reason == "empty":
            assert os.path.getsize(path) == 0
        elif reason == "unreadable":
            with pytest.raises(sf.LibsndfileError):
                sf.read(path)
        else:
            wave, rate = sf.read(path, dtype="float32")
            if reason == "silent":
                assert wave.size >= rate and not np.any(wave)
            elif reason == "non_finite":
                assert np.isnan(wave).any() and wave.size >= rate
            elif reason == "too_short":
                assert 0 < wave.size / rate <= 0.05
    for clip_id in expected["good"]:
        wave, rate = sf.read(by_id[clip_id].audio, dtype="float32")
        assert wave.size / rate >= 0.5 and np.isfinite(wave).all() and np.abs(wave).max() > 0.1


def test_layouts_without_bad_inputs_list_only_good_records(tmp_path):
    for name, (make, load) in sorted(LAYOUTS.items()):
        expected = make(tmp_path / name, bad=False)
        listing = load(**expected["load_kwargs"])
        assert listing.rejects == [] and expected["decode_rejects"] == []
        assert sorted(r.clip_id for r in listing.records) == expected["good"]
