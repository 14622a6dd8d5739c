"""Specification of the PNG figures (transfer/plots.py): each writes one real, non-empty PNG to
the given path (creating folders), and refuses arrays that do not match the names."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from transfer.plots import (
    plot_confusion_matrix,
    plot_per_class_accuracy,
    plot_similarity_matrix,
    plot_source_target_heatmap,
    plot_tsne,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = [f"class {i}" for i in range(6)]


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    with Image.open(path) as im:
        im.verify()
    assert not list(path.parent.glob(".*tmp*"))  # written atomically
    return path


def image_size(path):
    with Image.open(path) as im:
        return im.size


def test_every_plot_writes_a_png_into_a_new_folder(tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 10, size=(6, 6))
    out = tmp_path / "figs" / "esc50"
    written = [
        plot_confusion_matrix(cm, CLASSES, out / "confusion.png"),
        plot_per_class_accuracy(rng.uniform(size=6), CLASSES, out / "per_class.png", chance=1 / 6),
        plot_tsne(rng.normal(size=(30, 2)), np.arange(30) % 6, CLASSES, out / "tsne.png"),
        plot_source_target_heatmap(rng.uniform(size=(6, 40)), CLASSES,
                                   [f"src {j}" for j in range(40)], out / "sources.png"),
        plot_similarity_matrix(np.corrcoef(rng.normal(size=(6, 10))), CLASSES, out / "sim.png"),
    ]
    for path in written:
        assert_png(path)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)


def test_tsne_with_super_categories_adds_a_second_panel(tmp_path):
    rng = np.random.default_rng(1)
    pts, y = rng.normal(size=(30, 2)), np.arange(30) % 6
    one = plot_tsne(pts, y, CLASSES, tmp_path / "one.png")
    two = plot_tsne(pts, y, CLASSES, tmp_path / "two.png", groups=y // 3,
                    group_names=["animals", "urban"])
    assert_png(two)
    assert image_size(two)[0] > 1.5 * image_size(one)[0]


def test_many_classes_still_plot(tmp_path):
    names = [f"c{i}" for i in range(50)]  # ESC-50 size: beyond one qualitative colour map
    rng = np.random.default_rng(2)
    assert_png(plot_tsne(rng.normal(size=(100, 2)), np.arange(100) % 50, names, tmp_path / "t.png"))
    assert_png(plot_confusion_matrix(np.eye(50) * 8, names, tmp_path / "cm.png"))


def test_nan_per_class_accuracy_is_drawn_as_an_empty_bar(tmp_path):
    acc = np.array([0.5, np.nan, 1.0, 0.0, 0.2, 0.9])
    assert_png(plot_per_class_accuracy(acc, CLASSES, tmp_path / "acc.png"))


def test_arrays_that_do_not_match_the_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        plot_confusion_matrix(np.eye(5), CLASSES, tmp_path / "x.png")
    with pytest.raises(ValueError, match="expected"):
        plot_source_target_heatmap(np.zeros((6, 3)), CLASSES, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels outside"):
        plot_tsne(np.zeros((4, 2)), np.array([0, 1, 2, 9]), CLASSES, tmp_path / "x.png")
    with pytest.raises(ValueError, match="group_names"):
        plot_tsne(np.zeros((4, 2)), np.zeros(4, int), CLASSES, tmp_path / "x.png",
                  groups=np.zeros(4, int))
    assert not (tmp_path / "x.png").exists()
