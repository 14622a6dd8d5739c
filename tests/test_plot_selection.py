"""scripts/plot_selection.py: val and eval mAP per epoch of several runs in one PNG, the chosen epoch marked."""
from __future__ import annotations

import json

import pytest
from factories import load_script


def _script():
    return load_script("plot_selection")


def _metrics(val):
    epochs = [{"epoch": i, "val_mAP": v, "eval_mAP": v - 0.1} for i, v in enumerate(val)]
    return {"selection_split": "val", "epochs": epochs, "best": {"epoch": max(range(len(val)), key=val.__getitem__)}}


def test_curves_count_epochs_from_one_and_mark_the_epoch_val_chose():
    ep, val, ev, chosen = _script().selection_curves(_metrics([0.2, 0.5, 0.4]))
    assert ep == [1, 2, 3] and val == [0.2, 0.5, 0.4] and chosen == 2
    assert ev == pytest.approx([0.1, 0.4, 0.3])


def test_a_run_without_a_val_split_is_refused_with_the_reason():
    m = _metrics([0.2])
    m["epochs"][0]["val_mAP"] = None
    with pytest.raises(ValueError, match="--val-fraction"):
        _script().selection_curves(m)


def test_two_runs_make_one_png(tmp_path):
    for name, val in (("a", [0.2, 0.3]), ("b", [0.4, 0.35])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(_metrics(val)))
    out = tmp_path / "sel.png"
    assert _script().main(["--out", str(out), f"A={tmp_path / 'a'}", f"B={tmp_path / 'b'}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
