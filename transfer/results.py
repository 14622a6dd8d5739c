"""Results tables in the paper's layout: Markdown, CSV and JSON, plus confusion-matrix helpers.

One row per (network, layer, mapping), named as the paper does (``"N_S, F1, max()"``), with
the accuracy of every test fold and the mean +- std over folds. Baseline rows (hand-crafted
features through the same SVM protocol) sit at the top of their task, so every transfer row is
read against them. In Markdown, the row of each task with the best *inner-validation* accuracy is
bold: the "best feature set" is chosen on the training folds only, like C, never by test accuracy.

Units: Markdown shows accuracy in percent (one decimal); CSV and JSON hold fractions in [0, 1]
at full precision. ``std`` is over folds with ddof=0 (``FoldResults.std``).

A results folder (``write_results``) holds ``results.md``, ``results.csv`` and ``results.json``;
the JSON also records the exact command that produced it.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfer.feature_sets import parse_feature_set, row_label
from transfer.svm import FoldResults

__all__ = [
    "ResultRow",
    "baseline_row",
    "confusion_matrix",
    "per_class_accuracy",
    "results_csv",
    "results_json",
    "results_markdown",
    "select_by_inner_validation",
    "transfer_row",
    "transfer_rows",
    "write_results",
]

BASELINE_NETWORK = "baseline"


@dataclass(frozen=True)
class ResultRow:
    """One table row: a method's accuracy on every test fold of one task."""

    task: str                       # e.g. "esc50", "dcase2016"
    network: str                    # "N_S", "N_T^I", ... or "baseline"
    feature_set: str                # "F1 max", ... or the baseline's feature name
    label: str                      # row name as printed, e.g. "N_S, F1, max()"
    folds: tuple[int, ...]
    accuracies: tuple[float, ...]
    chosen_C: tuple[float, ...] = ()
    inner_scores: tuple[float, ...] = ()  # per fold, inner-validation accuracy of the chosen C
    # True when the features were learned on the very training folds that the inner validation scores
    # (an adapted network N_T): those inner scores are optimistic, so the row takes no part in the choice
    inner_scores_seen: bool = False

    def __post_init__(self):
        if len(self.folds) != len(self.accuracies) or not self.folds:
            raise ValueError(f"row {self.label!r}: {len(self.folds)} folds but "
                             f"{len(self.accuracies)} accuracies")
        if self.inner_scores and len(self.inner_scores) != len(self.folds):
            raise ValueError(f"row {self.label!r}: {len(self.folds)} folds but "
                             f"{len(self.inner_scores)} inner scores")

    @property
    def is_baseline(self) -> bool:
        return self.network == BASELINE_NETWORK

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    @property
    def inner_mean(self) -> float | None:
        """Mean over test folds of the inner-validation accuracy that chose C (training folds only)."""
        return float(np.mean(self.inner_scores)) if self.inner_scores else None

    def fold_accuracy(self, fold: int) -> float | None:
        return dict(zip(self.folds, self.accuracies)).get(fold)

    def to_dict(self) -> dict:
        return {"task": self.task, "network": self.network, "feature_set": self.feature_set,
                "label": self.label, "baseline": self.is_baseline,
                "per_fold": {str(f): a for f, a in zip(self.folds, self.accuracies)},
                "chosen_C": {str(f): c for f, c in zip(self.folds, self.chosen_C)},
                "inner_scores": {str(f): s for f, s in zip(self.folds, self.inner_scores)},
                "mean": self.mean, "std": self.std, "inner_mean": self.inner_mean,
                "inner_scores_seen": self.inner_scores_seen}


def _chosen_inner_scores(result: FoldResults) -> tuple[float, ...]:
    """Per fold, the inner score of the chosen C (the maximum over the grid)."""
    return tuple(float(max(scores)) for scores in result.inner_scores)


def transfer_row(task: str, network: str, result: FoldResults, *, inner_scores_seen: bool = False) -> ResultRow:
    """Row for a network representation; ``result.feature_set`` must be a paper name ("F1 max").

    ``inner_scores_seen``: the network was trained on the training folds its inner scores come from."""
    return ResultRow(task=task, network=network, feature_set=result.feature_set,
                     label=row_label(network, result.feature_set), folds=result.folds,
                     accuracies=result.accuracies, chosen_C=result.chosen_C,
                     inner_scores=_chosen_inner_scores(result), inner_scores_seen=inner_scores_seen)


def transfer_rows(task: str, network: str, results: Mapping[str, FoldResults]) -> list[ResultRow]:
    """Rows for every feature set of one network, in the mapping's order."""
    return [transfer_row(task, network, r) for r in results.values()]


def baseline_row(task: str, name: str, result: FoldResults) -> ResultRow:
    """Row for a hand-crafted baseline, e.g. ``baseline_row("esc50", "MFCC stats", r)``."""
    return ResultRow(task=task, network=BASELINE_NETWORK, feature_set=name,
                     label=f"Baseline, {name}", folds=result.folds, accuracies=result.accuracies,
                     chosen_C=result.chosen_C, inner_scores=_chosen_inner_scores(result))


def select_by_inner_validation(rows: Sequence[ResultRow], network_prefix: str = "") -> ResultRow | None:
    """The row with the best inner-validation mean (``ResultRow.inner_mean``), or None.

    This is how the "best feature set" is picked: on scores of the training folds only, so the
    test accuracy shown next to it is not inflated by the choice. Only rows whose network starts
    with ``network_prefix`` (e.g. ``"N_"``; default: every row) and that carry inner scores take
    part; ties go to the first such row in ``rows``. Rows whose inner scores were measured on folds
    their network was trained on (``inner_scores_seen``, the adapted N_T) never take part: on the
    real-audio kit such a score reads 96 % for a row that scores 77 % on its test folds.
    """
    cands = [r for r in rows if r.network.startswith(network_prefix) and r.inner_scores
             and not r.inner_scores_seen]
    if not cands:
        return None
    best = max(r.inner_mean for r in cands)
    return next(r for r in cands if r.inner_mean == best)


def _by_task(rows: Sequence[ResultRow]) -> dict[str, list[ResultRow]]:
    """Rows grouped by task (first-seen order); baselines first, then the given order."""
    groups: dict[str, list[ResultRow]] = {}
    for r in rows:
        groups.setdefault(r.task, []).append(r)
    return {t: sorted(rs, key=lambda r: not r.is_baseline) for t, rs in groups.items()}


def _check_unique(rows: Sequence[ResultRow]) -> None:
    seen = set()
    for r in rows:
        key = (r.task, r.label)
        if key in seen:
            raise ValueError(f"duplicate row {r.label!r} in task {r.task!r}")
        seen.add(key)


def results_markdown(rows: Sequence[ResultRow], title: str | None = None) -> str:
    """One Markdown table per task: row name | fold accuracies (%) | mean +- std (%).

    The row chosen by inner validation (``select_by_inner_validation``) is bold, and a line under
    the table names it with its inner-validation accuracy.
    """
    _check_unique(rows)
    out = [f"# {title}\n"] if title else []
    for task, task_rows in _by_task(rows).items():
        folds = sorted({f for r in task_rows for f in r.folds})
        chosen = select_by_inner_validation(task_rows)
        out.append(f"## {task}\n")
        out.append("| network, layer, mapping | " + " | ".join(f"fold {f}" for f in folds)
                   + " | mean ± std |")
        out.append("|---|" + "---:|" * (len(folds) + 1))
        for r in task_rows:
            cells = []
            for f in folds:
                a = r.fold_accuracy(f)
                cells.append("–" if a is None else f"{100 * a:.1f}")
            summary = f"{100 * r.mean:.1f} ± {100 * r.std:.1f}"
            if r is chosen:
                summary = f"**{summary}**"
            out.append(f"| {r.label} | " + " | ".join(cells) + f" | {summary} |")
        if chosen is not None:
            out.append(f"\nBold: {chosen.label}, the best inner-validation accuracy "
                       f"({100 * chosen.inner_mean:.1f}%, mean over test folds of the score that chose C on the "
                       "training folds); test accuracy plays no part in that choice.")
        seen = sorted({r.network for r in task_rows if r.inner_scores_seen})
        if seen:
            out.append(f"{', '.join(seen)}: no part in that choice; each adapted network was trained on the "
                       "training folds whose inner scores would judge it, so those scores are optimistic.")
        out.append("")
    return "\n".join(out)


def results_csv(rows: Sequence[ResultRow]) -> str:
    """CSV, one line per row; fold columns are the union over tasks (empty where absent)."""
    _check_unique(rows)
    folds = sorted({f for r in rows for f in r.folds})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "row", "network", "layer", "mapping", "feature_set", "baseline"]
               + [f"fold{f}" for f in folds] + ["mean", "std", "inner_mean"])
    for task_rows in _by_task(rows).values():
        for r in task_rows:
            if r.is_baseline:
                layer, mapping = "", ""
            else:
                layer, mapping = parse_feature_set(r.feature_set)
            accs = [r.fold_accuracy(f) for f in folds]
            w.writerow([r.task, r.label, r.network, layer, mapping, r.feature_set,
                        int(r.is_baseline)]
                       + ["" if a is None else repr(a) for a in accs]
                       + [repr(r.mean), repr(r.std), "" if r.inner_mean is None else repr(r.inner_mean)])
    return buf.getvalue()


def _command_fields(command: str | Sequence[str]) -> dict:
    if isinstance(command, str):
        return {"command": command, "argv": shlex.split(command)}
    argv = [str(a) for a in command]
    return {"command": shlex.join(argv), "argv": argv}


def results_json(rows: Sequence[ResultRow], command: str | Sequence[str], *,
                 fold_results: Mapping[str, FoldResults] | None = None,
                 extra: Mapping | None = None) -> dict:
    """JSON-ready dict: the exact command, every row with per-fold numbers, optional details.

    Args:
        rows: table rows.
        command: the command line that produced them (string, or argv list such as ``sys.argv``).
        fold_results: optional row label -> FoldResults, stored in full (inner scores,
            chosen C, out-of-fold predictions) under ``"details"``.
        extra: any other JSON-serialisable metadata (dataset URLs, git revision, ...).
    """
    _check_unique(rows)
    doc = {"format": "weaksound-transfer-results/1", **_command_fields(command),
           "rows": [r.to_dict() for rs in _by_task(rows).values() for r in rs]}
    if fold_results:
        doc["details"] = {label: fr.to_dict() for label, fr in fold_results.items()}
    if extra:
        doc["extra"] = dict(extra)
    return doc


def write_results(out_dir: str | os.PathLike, rows: Sequence[ResultRow],
                  command: str | Sequence[str], *, title: str | None = None,
                  fold_results: Mapping[str, FoldResults] | None = None,
                  extra: Mapping | None = None) -> dict[str, Path]:
    """Write results.md, results.csv and results.json into ``out_dir`` (a local folder).

    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    Returns {"markdown": path, "csv": path, "json": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "markdown": ("results.md", results_markdown(rows, title)),
        "csv": ("results.csv", results_csv(rows)),
        "json": ("results.json", json.dumps(results_json(rows, command, fold_results=fold_results,
                                                         extra=extra), indent=2) + "\n"),
    }
    paths = {}
    for kind, (name, text) in texts.items():
        path = out / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        paths[kind] = path
    return paths


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int counts; entry [i, j] = clips of true class i predicted as class j."""
    y = np.asarray(labels)
    p = np.asarray(predictions)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be equal (N,) shapes")
    if y.size and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= n_classes):
        raise ValueError(f"labels/predictions outside 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """(C,) recall per true class from a confusion matrix; NaN for classes with no clips."""
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / totals, np.nan)
