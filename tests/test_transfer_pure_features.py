"""Specification of segment-to-clip mapping and the paper's feature-set names
(transfer/feature_sets.py)."""
from __future__ import annotations

import numpy as np
import pytest

from transfer.feature_sets import (
    feature_set_names,
    feature_sets,
    feature_sets_from_pooled,
    map_segments,
    parse_feature_set,
    row_label,
    split_segments,
)


def clip_segments():
    """Two clips with 3 and 1 segments; F1 is 2-d, F2 is 3-d, values set by hand."""
    f1 = [np.array([[0.0, 4.0], [2.0, 0.0], [1.0, 2.0]]), np.array([[5.0, -1.0]])]
    f2 = [np.array([[0.1, 0.9, 0.0], [0.3, 0.5, 0.0], [0.2, 0.1, 0.6]]), np.array([[0.7, 0.2, 0.4]])]
    return f1, f2


def test_max_and_avg_map_over_segments_not_dimensions():
    seg = np.array([[0.0, 4.0], [2.0, 0.0], [1.0, 2.0]])  # (K=3, D=2)
    np.testing.assert_array_equal(map_segments(seg, "max"), [2.0, 4.0])
    np.testing.assert_allclose(map_segments(seg, "avg"), [1.0, 2.0])


def test_a_single_segment_clip_maps_to_that_segment_under_both_mappings():
    seg = np.array([[5.0, -1.0]])
    np.testing.assert_array_equal(map_segments(seg, "max"), seg[0])
    np.testing.assert_array_equal(map_segments(seg, "avg"), seg[0])


def test_feature_sets_have_the_paper_names_in_table_order_and_right_widths():
    f1, f2 = clip_segments()
    sets = feature_sets(f1, f2)
    assert list(sets) == feature_set_names() == [
        "F1 max", "F1 avg", "F2 max", "F2 avg", "F1 max+avg", "F2 max+avg",
        "F1+F2 max", "F1+F2 avg", "F1+F2 max+avg"]
    widths = {name: x.shape for name, x in sets.items()}
    assert widths["F1 max"] == (2, 2) and widths["F2 avg"] == (2, 3)
    assert widths["F1 max+avg"] == (2, 4) and widths["F1+F2 max"] == (2, 5)
    assert widths["F1+F2 max+avg"] == (2, 10)


def test_combinations_concatenate_their_parts_in_name_order():
    f1, f2 = clip_segments()
    s = feature_sets(f1, f2)
    np.testing.assert_array_equal(s["F1 max"], [[2.0, 4.0], [5.0, -1.0]])
    np.testing.assert_allclose(s["F2 avg"][0], [0.2, 0.5, 0.2])
    np.testing.assert_array_equal(s["F1 max+avg"], np.hstack([s["F1 max"], s["F1 avg"]]))
    np.testing.assert_array_equal(s["F1+F2 avg"], np.hstack([s["F1 avg"], s["F2 avg"]]))
    np.testing.assert_array_equal(
        s["F1+F2 max+avg"], np.hstack([s["F1 max"], s["F1 avg"], s["F2 max"], s["F2 avg"]]))


def test_without_f2_only_f1_sets_are_built():
    f1, _ = clip_segments()
    assert list(feature_sets(f1)) == ["F1 max", "F1 avg", "F1 max+avg"]
    assert list(feature_sets(f1, combinations=False)) == ["F1 max", "F1 avg"]


def test_f1_and_f2_must_come_from_the_same_segments():
    f1, f2 = clip_segments()
    f2[1] = np.vstack([f2[1], f2[1]])  # clip 1: 1 segment in F1, 2 in F2
    with pytest.raises(ValueError, match="clip 1: F1 has 1 segments but F2 has 2"):
        feature_sets(f1, f2)


def test_malformed_segment_matrices_are_rejected():
    with pytest.raises(ValueError, match="clip 0"):
        feature_sets([np.zeros((0, 4))])
    with pytest.raises(ValueError, match="different dimensions"):
        feature_sets([np.zeros((2, 4)), np.zeros((2, 5))])
    with pytest.raises(ValueError, match="non-finite"):
        feature_sets([np.array([[np.inf, 0.0]])])
    with pytest.raises(ValueError, match="mapping"):
        map_segments(np.zeros((2, 2)), "median")


def test_row_labels_follow_the_paper_naming():
    assert row_label("N_S", "F1 max") == "N_S, F1, max()"
    assert row_label("N_T^III", "F2 avg") == "N_T^III, F2, avg()"
    assert row_label("N_T^I", "F1+F2 max+avg") == "N_T^I, F1+F2, max()+avg()"
    assert parse_feature_set("F1+F2 max") == ("F1+F2", "max")
    with pytest.raises(ValueError, match="unknown feature set"):
        parse_feature_set("F3 max")


def test_flat_stored_segments_with_offsets_give_the_same_sets_as_per_clip_lists():
    f1, f2 = clip_segments()
    offsets = np.array([0, 3, 4])
    f1_clips = split_segments(np.vstack(f1), offsets)
    f2_clips = split_segments(np.vstack(f2), offsets)
    direct = feature_sets(f1, f2)
    via_flat = feature_sets(f1_clips, f2_clips)
    assert list(via_flat) == list(direct)
    for name in direct:
        np.testing.assert_array_equal(via_flat[name], direct[name])
    with pytest.raises(ValueError, match="offsets must rise"):
        split_segments(np.vstack(f1), np.array([0, 3, 5]))


def test_pre_pooled_vectors_give_the_same_sets_as_segments():
    f1, f2 = clip_segments()
    direct = feature_sets(f1, f2)
    pooled = feature_sets_from_pooled(direct["F1 max"], direct["F1 avg"],
                                      direct["F2 max"], direct["F2 avg"])
    assert list(pooled) == list(direct)
    for name in direct:
        np.testing.assert_array_equal(pooled[name], direct[name])
    with pytest.raises(ValueError, match="both f2_max and f2_avg"):
        feature_sets_from_pooled(direct["F1 max"], direct["F1 avg"], direct["F2 max"])
