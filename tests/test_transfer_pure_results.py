"""Specification of the results tables (transfer/results.py): every row, the baseline, per-fold
numbers, mean +- std, and the exact command."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from transfer.results import (
    ResultRow,
    baseline_row,
    confusion_matrix,
    per_class_accuracy,
    results_csv,
    results_json,
    results_markdown,
    select_by_inner_validation,
    transfer_row,
    transfer_rows,
    write_results,
)
from transfer.svm import FoldResults, evaluate_feature_sets


def fold_result(name: str, accs, folds=None, inner: float = 0.5) -> FoldResults:
    folds = tuple(folds or range(1, len(accs) + 1))
    return FoldResults(feature_set=name, folds=folds, accuracies=tuple(accs),
                       chosen_C=(1.0,) * len(accs), c_grid=(0.1, 1.0),
                       inner_scores=((inner - 0.1, inner),) * len(accs),
                       inner_validation_folds=((),) * len(accs),
                       labels=np.zeros(4, dtype=np.int64), predictions=np.zeros(4, dtype=np.int64))


def esc50_rows():
    results = {"F1 max": fold_result("F1 max", [0.80, 0.82, 0.84, 0.86, 0.88], inner=0.8),
               "F2 avg": fold_result("F2 avg", [0.60, 0.62, 0.64, 0.66, 0.68], inner=0.6)}
    adapted = {"F1 max": fold_result("F1 max", [0.83, 0.83, 0.83, 0.83, 0.83], inner=0.7)}
    return (transfer_rows("esc50", "N_S", results) + transfer_rows("esc50", "N_T^I", adapted)
            + [baseline_row("esc50", "MFCC stats", fold_result("mfcc", [0.4, 0.5, 0.4, 0.5, 0.4], inner=0.45))])


def test_markdown_table_has_every_row_with_per_fold_accuracy_and_mean_std():
    md = results_markdown(esc50_rows(), title="Transfer")
    lines = md.splitlines()
    assert "| network, layer, mapping | fold 1 | fold 2 | fold 3 | fold 4 | fold 5 | mean ± std |" in lines
    assert "| N_S, F1, max() | 80.0 | 82.0 | 84.0 | 86.0 | 88.0 | **84.0 ± 2.8** |" in lines
    assert "| N_S, F2, avg() | 60.0 | 62.0 | 64.0 | 66.0 | 68.0 | 64.0 ± 2.8 |" in lines
    assert "| N_T^I, F1, max() | 83.0 | 83.0 | 83.0 | 83.0 | 83.0 | 83.0 ± 0.0 |" in lines
    assert "| Baseline, MFCC stats | 40.0 | 50.0 | 40.0 | 50.0 | 40.0 | 44.0 ± 4.9 |" in lines
    assert any(l.startswith("Bold: N_S, F1, max(), the best inner-validation accuracy (80.0%") for l in lines)


def test_the_inner_validation_choice_is_bold_and_the_baseline_row_comes_first():
    lines = [l for l in results_markdown(esc50_rows()).splitlines() if l.startswith("| ")]
    body = lines[1:]
    assert body[0] == "| Baseline, MFCC stats | 40.0 | 50.0 | 40.0 | 50.0 | 40.0 | 44.0 ± 4.9 |"
    assert body[1].startswith("| N_S, F1, max() |") and body[1].endswith("| **84.0 ± 2.8** |")
    assert body[3] == "| N_T^I, F1, max() | 83.0 | 83.0 | 83.0 | 83.0 | 83.0 | 83.0 ± 0.0 |"
    assert len(body) == 4


def test_the_best_row_is_chosen_by_inner_validation_even_when_another_has_a_higher_test_mean():
    lucky = fold_result("F1 avg", [0.95, 0.95, 0.95], inner=0.70)   # best on the test folds
    steady = fold_result("F1 max", [0.90, 0.90, 0.90], inner=0.85)  # best on the training folds
    base = fold_result("mfcc", [0.99, 0.99, 0.99], inner=0.90)
    rows = transfer_rows("events", "N_S", {"F1 avg": lucky, "F1 max": steady}) + [
        baseline_row("events", "MFCC stats", base)]
    assert select_by_inner_validation(rows, "N_").label == "N_S, F1, max()"
    assert select_by_inner_validation(rows).label == "Baseline, MFCC stats"
    assert select_by_inner_validation(rows, "N_T") is None
    md = results_markdown(transfer_rows("events", "N_S", {"F1 avg": lucky, "F1 max": steady}))
    assert "| N_S, F1, max() | 90.0 | 90.0 | 90.0 | **90.0 ± 0.0** |" in md.splitlines()
    assert "| N_S, F1, avg() | 95.0 | 95.0 | 95.0 | 95.0 ± 0.0 |" in md.splitlines()


def test_an_adapted_network_whose_inner_scores_saw_its_training_folds_is_never_chosen():
    # the network was fine-tuned on the folds its inner validation scores: 0.96 inner, 0.77 test
    plain = transfer_rows("esc50", "N_S", {"F1 max": fold_result("F1 max", [0.80] * 5, inner=0.79)})
    flattered = transfer_row("esc50", "N_T^II", fold_result("F2 max", [0.77] * 5, inner=0.96),
                             inner_scores_seen=True)
    rows = plain + [flattered]
    assert select_by_inner_validation(rows).label == "N_S, F1, max()"
    assert select_by_inner_validation([flattered]) is None
    md = results_markdown(rows).splitlines()
    assert "| N_T^II, F2, max() | 77.0 | 77.0 | 77.0 | 77.0 | 77.0 | 77.0 ± 0.0 |" in md
    assert any(line.startswith("N_T^II: no part in that choice") for line in md)
    assert flattered.to_dict()["inner_scores_seen"] is True


def test_inner_validation_ties_go_to_the_first_row_and_rows_without_inner_scores_are_never_bold():
    a, b = fold_result("F1 max", [0.5, 0.6], inner=0.8), fold_result("F1 avg", [0.9, 0.9], inner=0.8)
    assert select_by_inner_validation(transfer_rows("t", "N_S", {"F1 max": a, "F1 avg": b})).feature_set == "F1 max"
    bare = [ResultRow("t", "N_S", "F1 max", "N_S, F1, max()", (1, 2), (0.7, 0.8))]
    assert select_by_inner_validation(bare) is None
    assert "**" not in results_markdown(bare)


def test_tasks_with_different_fold_counts_get_their_own_sections():
    rows = esc50_rows() + [ResultRow("dcase2016", "N_S", "F1 avg", "N_S, F1, avg()",
                                     (1, 2, 3, 4), (0.7, 0.8, 0.7, 0.8))]
    md = results_markdown(rows)
    assert "## esc50" in md and "## dcase2016" in md
    assert "| network, layer, mapping | fold 1 | fold 2 | fold 3 | fold 4 | mean ± std |" in md
    # CSV: union of folds, blank where a task has no such fold
    parsed = list(csv.DictReader(io.StringIO(results_csv(rows))))
    dcase = [r for r in parsed if r["task"] == "dcase2016"][0]
    assert dcase["fold5"] == "" and float(dcase["fold4"]) == 0.8


def test_csv_holds_every_row_with_full_precision_fractions():
    rows = esc50_rows()
    parsed = list(csv.DictReader(io.StringIO(results_csv(rows))))
    assert len(parsed) == len(rows)
    assert parsed[0]["row"] == "Baseline, MFCC stats" and parsed[0]["baseline"] == "1"
    ns = next(r for r in parsed if r["row"] == "N_S, F1, max()")
    assert (ns["network"], ns["layer"], ns["mapping"]) == ("N_S", "F1", "max")
    assert [float(ns[f"fold{f}"]) for f in range(1, 6)] == [0.80, 0.82, 0.84, 0.86, 0.88]
    assert float(ns["mean"]) == pytest.approx(0.84)
    assert float(ns["std"]) == pytest.approx(np.std([0.80, 0.82, 0.84, 0.86, 0.88]))
    assert float(ns["inner_mean"]) == pytest.approx(0.8)


def test_json_records_the_exact_command_and_per_fold_numbers(tmp_path):
    argv = ["weaksound", "transfer", "esc50", "--embeddings", "s3://b/emb dir", "--out", "x"]
    paths = write_results(tmp_path / "run1", esc50_rows(), argv, extra={"git": "abc123"})
    assert sorted(p.name for p in paths.values()) == ["results.csv", "results.json", "results.md"]
    doc = json.loads(paths["json"].read_text())
    assert doc["argv"] == argv
    assert doc["command"] == "weaksound transfer esc50 --embeddings 's3://b/emb dir' --out x"
    assert doc["extra"] == {"git": "abc123"}
    ns = next(r for r in doc["rows"] if r["label"] == "N_S, F1, max()")
    assert ns["per_fold"] == {"1": 0.8, "2": 0.82, "3": 0.84, "4": 0.86, "5": 0.88}
    assert any(r["baseline"] for r in doc["rows"])
    assert not list(tmp_path.glob("run1/.*"))  # no temporary files left behind


def test_json_details_round_trip_fold_results():
    fr = fold_result("F1 max", [0.5, 0.6, 0.7])
    doc = json.loads(json.dumps(results_json([], "cmd", fold_results={"N_S, F1, max()": fr})))
    assert FoldResults.from_dict(doc["details"]["N_S, F1, max()"]).to_dict() == fr.to_dict()


def test_duplicate_rows_are_refused():
    rows = esc50_rows()
    with pytest.raises(ValueError, match="duplicate row"):
        results_markdown(rows + rows[:1])


def test_rows_from_a_real_evaluation_land_in_the_table():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    folds = np.tile([1, 2, 3, 4], 15)
    x = rng.normal(size=(60, 6)) + 3 * np.eye(6)[y]
    results = evaluate_feature_sets({"F1 max": x, "F1 avg": x + rng.normal(size=x.shape)},
                                    y, folds, c_grid=(0.1, 1.0))
    md = results_markdown(transfer_rows("scenes", "N_S", results))
    assert "| N_S, F1, max() |" in md and "| N_S, F1, avg() |" in md
    assert "fold 4" in md and "fold 5" not in md


def test_confusion_matrix_and_per_class_accuracy():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 0, 2])
    cm = confusion_matrix(y, p, 4)
    np.testing.assert_array_equal(cm[:3, :3], [[2, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert cm.sum() == 6
    acc = per_class_accuracy(cm)
    np.testing.assert_allclose(acc[:3], [2 / 3, 1 / 2, 1.0])
    assert np.isnan(acc[3])  # class with no clips
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(y, p, 2)
