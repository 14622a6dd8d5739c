"""Specification of the semantic analysis (transfer/semantic.py)."""
from __future__ import annotations

import numpy as np
import pytest

from transfer.semantic import class_means, class_similarity, top_source_classes, tsne_2d

SOURCES = ["Speech", "Bird", "Rain", "Car", "Music"]
TARGETS = ["park", "street"]


def scene_scores():
    """Per-clip mean F2 scores: 'Music' fires everywhere; parks have birds, streets have cars."""
    park = np.array([[0.1, 0.6, 0.2, 0.0, 0.9],
                     [0.1, 0.8, 0.0, 0.1, 0.9]])
    street = np.array([[0.3, 0.0, 0.1, 0.7, 0.9],
                       [0.5, 0.1, 0.1, 0.9, 0.9]])
    return np.vstack([park, street]), np.array([0, 0, 1, 1])


def test_top_sources_rank_source_classes_by_mean_score_over_the_target_class():
    x, y = scene_scores()
    top = top_source_classes(x, y, TARGETS, SOURCES, k=2)
    assert top.rows() == [("park", [("Music", 0.9), ("Bird", pytest.approx(0.7))]),
                          ("street", [("Music", 0.9), ("Car", pytest.approx(0.8))])]
    np.testing.assert_allclose(top.scores[1], [0.4, 0.05, 0.1, 0.8, 0.9])


def test_contrast_ranks_distinctive_sources_above_ones_that_fire_everywhere():
    x, y = scene_scores()
    top = top_source_classes(x, y, TARGETS, SOURCES, k=1, contrast=True)
    assert [tops[0][0] for _, tops in top.rows()] == ["Bird", "Car"]


def test_top_sources_table_has_one_row_per_target_class():
    x, y = scene_scores()
    md = top_source_classes(x, y, TARGETS, SOURCES, k=3).to_markdown()
    lines = md.strip().splitlines()
    assert lines[0] == "| target class | #1 | #2 | #3 |"
    assert len(lines) == 2 + len(TARGETS)
    assert lines[2].startswith("| park | Music (0.900) | Bird (0.700)")


def test_class_similarity_is_cosine_of_class_means():
    # class means: [1, 0], [0, 1], [1, 1]
    x = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([0, 0, 1, 1, 2])
    sim = class_similarity(x, y)
    expected = np.array([[1.0, 0.0, 1 / np.sqrt(2)],
                         [0.0, 1.0, 1 / np.sqrt(2)],
                         [1 / np.sqrt(2), 1 / np.sqrt(2), 1.0]])
    np.testing.assert_allclose(sim, expected, atol=1e-12)


def test_centering_removes_the_shared_offset_of_non_negative_embeddings():
    x = np.array([[10.0, 11.0], [11.0, 10.0]])  # nearly parallel raw means
    y = np.array([0, 1])
    assert class_similarity(x, y)[0, 1] > 0.99
    assert class_similarity(x, y, center=True)[0, 1] == pytest.approx(-1.0)


def test_a_class_without_clips_is_an_error_not_a_nan():
    with pytest.raises(ValueError, match=r"classes \[1\] have no clips"):
        class_means(np.zeros((2, 3)), np.array([0, 2]))


def test_tsne_keeps_well_separated_classes_apart_and_is_reproducible():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 15)
    centers = 3.0 * rng.normal(size=(3, 20))
    x = rng.normal(size=(45, 20)) + centers[y]
    pts = tsne_2d(x, seed=3, max_iter=500)
    assert pts.shape == (45, 2)
    # each point's nearest 2-D neighbour belongs to its own class
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert np.all(y[d.argmin(axis=1)] == y)
    np.testing.assert_array_equal(pts, tsne_2d(x, seed=3, max_iter=500))


def test_tsne_rejects_too_few_points():
    with pytest.raises(ValueError, match="N >= 4"):
        tsne_2d(np.zeros((3, 5)))
