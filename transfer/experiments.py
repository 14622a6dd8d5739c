"""The paper's transfer experiments over stored embeddings (arXiv 1711.01369, sections 3-4).

- ``Target.load``: an embeddings folder as a single-label target task with official folds; the
  fold-isolation rule is checked here, before anything runs.
- ``run_classification``: N_S representations (F1/F2 x max/avg and combinations) and the MFCC
  baseline through the nested-validation linear-SVM protocol, every unit a Ray task.
- ``classification_plots``: confusion matrix and per-class accuracy of one row.
- ``run_semantic``: t-SNE map, top source classes per target class, class similarity.
- ``run_audioset``: clip-level mAP / AUC of the source classes when the embeddings are of the
  source (multi-label) dataset itself.

Each function returns plain data (rows, markdown sections, JSON-ready dicts) and writes its
PNGs into a local folder; ``transfer.job.run_transfer`` assembles the results folder.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from inference.embed import Embeddings, load_embeddings
from transfer.feature_sets import feature_set_names, feature_sets_from_pooled, row_label
from transfer.results import ResultRow, baseline_row, confusion_matrix, per_class_accuracy, transfer_row
from transfer.svm import DEFAULT_C_GRID, FoldResults, TransferData, check_fold_isolation, plan_units

__all__ = [
    "BASELINE_NAME",
    "FUSED_SETS",
    "Protocol",
    "Target",
    "TaskResult",
    "classification_plots",
    "fused_features",
    "infer_task",
    "run_audioset",
    "run_classification",
    "run_semantic",
    "super_categories",
]

BASELINE_NAME = "MFCC stats"
# The network feature sets also scored joined with the MFCC statistics: the paper's headline set and the
# richest one, fixed in advance so the choice among rows stays with inner validation. Hand-crafted and
# learned features err differently (on the real-audio kit's scenes the fusion adds 0.5-7 points).
FUSED_SETS = ("F1 max", "F1+F2 max+avg")
FUSED_SUFFIX = " + MFCC"
SETTINGS = {"events": "transductive", "scenes": "inductive"}


@dataclass(frozen=True)
class Protocol:
    """How every SVM experiment is scored (the same for N_S, N_T and the baseline)."""

    c_grid: tuple[float, ...] = DEFAULT_C_GRID  # candidate C values, chosen by inner CV per test fold
    inner_folds: int | None = None  # None: leave-one-training-fold-out inner CV
    seed: int = 0  # t-SNE seed, adaptation seed (the SVM solver is exact and uses none)
    feature_sets: tuple[str, ...] | None = None  # None: every set (F1/F2 x max/avg + combinations)
    baseline: bool = True  # MFCC-statistics baseline in the same table
    fuse_baseline: bool = True  # also score FUSED_SETS joined with the MFCC statistics ("N_S + MFCC" rows);
    #                             needs the baseline; inner validation decides whether a fused set is chosen
    n_mfcc: int = 20  # baseline: cepstral coefficients
    mfcc_deltas: int = 1  # baseline: 0, 1 (deltas) or 2 (+ delta-deltas)
    executor: str = "ray"  # "ray": one task per unit / shard; "local": this process
    max_in_flight: int = 0  # pending Ray tasks at most; 0 = twice the cluster's CPUs
    progress: bool = True  # tqdm bars


def infer_task(index: dict) -> str:
    """``"scenes"`` for a scene dataset (name mentions scene/dcase), else ``"events"``."""
    name = str(index.get("dataset", "")).lower()
    return "scenes" if ("scene" in name or "dcase" in name) else "events"


@dataclass(eq=False)
class Target:
    """A single-label target task with official folds, read from an embeddings folder."""

    task: str  # "events" or "scenes": names outputs (events_confusion.png, ...)
    url: str
    emb: Embeddings
    labels: np.ndarray  # (N,) class index
    folds: np.ndarray  # (N,) official fold id
    source_ids: list[str]  # (N,) source recording ("" = unknown)

    @property
    def heading(self) -> str:
        """Table section of the task, e.g. ``events: esc50 (transductive)``."""
        setting = SETTINGS.get(self.task, "transfer")
        return f"{self.task}: {self.emb.index.get('dataset', '?')} ({setting})"

    @property
    def clip_ids(self) -> list[str]:
        return self.emb.arrays["clip_id"].tolist()

    @property
    def class_names(self) -> list[str]:
        return self.emb.target_names

    @property
    def fold_ids(self) -> list[int]:
        return sorted(int(f) for f in np.unique(self.folds))

    @property
    def data_url(self) -> str:
        return self.emb.index["data"]

    @property
    def model_url(self) -> str:
        return self.emb.index["model"]

    @classmethod
    def load(cls, task: str, url: str) -> Target:
        """Load and validate: one label per clip, at least 3 official folds, and no source
        recording in two folds (``ValueError`` naming the offending recordings)."""
        emb = load_embeddings(url)
        return cls.from_embeddings(task, url, emb)

    @classmethod
    def from_embeddings(cls, task: str, url: str, emb: Embeddings) -> Target:
        folds = emb.arrays["fold"].astype(np.int64)
        if emb.num_clips == 0:
            raise ValueError(f"{url}: the embeddings hold no clips")
        if np.any(folds <= 0):
            raise ValueError(f"{url}: {int(np.sum(folds <= 0))} clips have no official fold; the {task} "
                             "protocol needs the dataset's fold column (ESC-50 fold, DCASE evaluation setup)")
        if len(np.unique(folds)) < 3:
            raise ValueError(f"{url}: need at least 3 folds for nested validation, got {np.unique(folds).tolist()}")
        sources = [str(s) for s in emb.arrays["source_id"].tolist()]
        check_fold_isolation(folds, sources)  # before anything runs
        try:
            labels = emb.single_labels()
        except ValueError as e:
            raise ValueError(f"{url}: {e}; the {task} task is single-label (use `audioset` for multi-label "
                             "embeddings)") from None
        return cls(task=task, url=url, emb=emb, labels=labels, folds=folds, source_ids=sources)

    def network_features(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Clip vectors of the network's feature sets (all when ``names`` is None)."""
        a = self.emb.arrays
        sets = feature_sets_from_pooled(a["f1_max"], a["f1_avg"], a["f2_max"], a["f2_avg"])
        if names is None:
            return sets
        unknown = [n for n in names if n not in sets]
        if unknown:
            raise ValueError(f"unknown feature sets {unknown}; choose from {feature_set_names()}")
        return {n: sets[n] for n in names}


@dataclass
class TaskResult:
    """Rows of one task, their full per-fold results, and metadata for results.json."""

    rows: list[ResultRow] = field(default_factory=list)
    details: dict[str, FoldResults] = field(default_factory=dict)  # "<heading>: <row label>" -> results
    extra: dict = field(default_factory=dict)

    def add(self, row: ResultRow, result: FoldResults) -> None:
        self.rows.append(row)
        self.details[f"{row.task}: {row.label}"] = result

    def best(self, network_prefix: str = "N_") -> tuple[ResultRow, FoldResults] | None:
        """The network row chosen by inner validation on the training folds (never by test accuracy)."""
        from transfer.results import select_by_inner_validation

        r = select_by_inner_validation(self.rows, network_prefix)
        return None if r is None else (r, self.details[f"{r.task}: {r.label}"])

    def fixed(self, network_prefix: str, feature_set: str = "F1 max") -> tuple[ResultRow, FoldResults] | None:
        """The first row of a network with ``feature_set`` (else its first row): a choice fixed in advance,
        for rows whose inner scores cannot choose (``ResultRow.inner_scores_seen``)."""
        rows = [r for r in self.rows if r.network.startswith(network_prefix)]
        r = next((r for r in rows if r.feature_set == feature_set), rows[0] if rows else None)
        return None if r is None else (r, self.details[f"{r.task}: {r.label}"])


def _svm_job(name: str, target: Target, features: dict[str, np.ndarray], proto: Protocol,
             test_folds: Sequence[int] | None = None):
    from transfer.parallel import SVMJob

    data = TransferData(features=features, labels=target.labels, folds=target.folds,
                        source_ids=target.source_ids)
    units = plan_units(data, proto.c_grid, inner_folds=proto.inner_folds, seed=proto.seed)
    if test_folds is not None:
        units = [u for u in units if u.test_fold in set(test_folds)]
    return SVMJob(name, data, units)


def baseline_features(target: Target, proto: Protocol) -> np.ndarray:
    """MFCC statistics of every clip of the target, from the dataset's shards (Ray task per shard)."""
    from transfer.parallel import mfcc_features

    return mfcc_features(target.data_url, target.clip_ids, n_mfcc=proto.n_mfcc, delta_order=proto.mfcc_deltas,
                         executor=proto.executor, max_in_flight=proto.max_in_flight, progress=proto.progress)


def run_classification(target: Target, proto: Protocol, *, network: str = "N_S",
                       include_network: bool = True, test_folds: Sequence[int] | None = None) -> TaskResult:
    """N_S feature sets (+ the MFCC baseline) through the SVM protocol; every unit a Ray task.

    ``test_folds`` restricts the test folds (default: all); C is still chosen on the training
    folds of each test fold only.
    """
    from transfer.parallel import run_svm_units

    features = target.network_features(proto.feature_sets) if include_network else {}
    if proto.baseline:
        features[BASELINE_NAME] = baseline_features(target, proto)
        if proto.fuse_baseline:
            features.update(fused_features(features, features[BASELINE_NAME]))
    if not features:
        return TaskResult()
    job = _svm_job(target.task, target, features, proto, test_folds)
    results = run_svm_units([job], executor=proto.executor, max_in_flight=proto.max_in_flight,
                            progress=proto.progress)[target.task]
    out = TaskResult(extra={"embeddings": target.url, "model": target.model_url, "data": target.data_url,
                            "dataset": target.emb.index.get("dataset"), "num_clips": int(target.labels.size),
                            "num_classes": len(target.class_names), "folds": target.fold_ids,
                            "c_grid": list(proto.c_grid), "inner_folds": proto.inner_folds})
    for name, fr in results.items():
        if name == BASELINE_NAME:
            out.add(baseline_row(target.heading, BASELINE_NAME, fr), fr)
        elif name.endswith(FUSED_SUFFIX):
            fr = replace(fr, feature_set=name[:-len(FUSED_SUFFIX)])
            out.add(transfer_row(target.heading, network + FUSED_SUFFIX, fr), fr)
        else:
            out.add(transfer_row(target.heading, network, fr), fr)
    return out


def fused_features(features: dict[str, np.ndarray], baseline: np.ndarray) -> dict[str, np.ndarray]:
    """``"<set> + MFCC"`` -> [network set, MFCC statistics] per clip, for the sets of FUSED_SETS present.

    The SVM protocol standardises every column on the training folds, so the two parts need no
    scaling here."""
    return {name + FUSED_SUFFIX: np.concatenate([features[name], baseline], axis=1)
            for name in FUSED_SETS if name in features}


def classification_plots(folder: Path, prefix: str, target: Target, row: ResultRow, result: FoldResults
                         ) -> list[Path]:
    """``<prefix>_confusion.png`` and ``<prefix>_per_class_accuracy.png`` from out-of-fold predictions."""
    from transfer.plots import plot_confusion_matrix, plot_per_class_accuracy

    scored = result.predictions >= 0  # clips of the test folds that were run
    n = len(target.class_names)
    cm = confusion_matrix(result.labels[scored], result.predictions[scored], n)
    title = f"{target.heading}: {row.label} ({100 * row.mean:.1f}% mean over folds)"
    return [
        plot_confusion_matrix(cm, target.class_names, folder / f"{prefix}_confusion.png", title=title),
        plot_per_class_accuracy(per_class_accuracy(cm), target.class_names,
                                folder / f"{prefix}_per_class_accuracy.png", title=title, chance=1.0 / n),
    ]


# --------------------------------------------------------------------------------------------
# Semantic relations (paper section 4.4)
# --------------------------------------------------------------------------------------------

# ESC-50's five super-categories are blocks of ten consecutive targets (0-9 animals, ...).
ESC50_ANCHORS = {0: "dog", 10: "rain", 20: "crying_baby", 30: "door_wood_knock", 40: "helicopter"}
ESC50_GROUPS = ("Animals", "Natural soundscapes & water", "Human, non-speech", "Interior/domestic",
                "Exterior/urban")
_GROUP_KEYS = ("super_category", "group", "category")
_SEPARATORS = ("/", ":")


def super_categories(vocabulary: Sequence[dict], mapping: dict[str, str] | None = None
                     ) -> tuple[np.ndarray, list[str]] | None:
    """(group index per class, group names) when the vocabulary has super-categories, else None.

    Looked for in order: an explicit ``mapping`` (class id or name -> group); a
    ``super_category``/``group``/``category`` field in the vocabulary entries; a common
    ``"<group>/<class>"`` or ``"<group>: <class>"`` prefix on every id (or every name);
    the ESC-50 vocabulary (five blocks of ten targets).
    """
    n = len(vocabulary)
    groups: list[str] | None = None
    if mapping:
        missing = [v["id"] for v in vocabulary if v["id"] not in mapping and v.get("name") not in mapping]
        if missing:
            raise ValueError(f"super-category mapping has no entry for {missing[:5]}")
        groups = [mapping.get(v["id"], mapping.get(v.get("name"))) for v in vocabulary]
    if groups is None:
        for key in _GROUP_KEYS:
            if n and all(v.get(key) for v in vocabulary):
                groups = [str(v[key]) for v in vocabulary]
                break
    if groups is None:
        for field_name in ("id", "name"):
            for sep in _SEPARATORS:
                values = [str(v.get(field_name, "")) for v in vocabulary]
                if n and all(sep in s for s in values):
                    cand = [s.split(sep, 1)[0].strip() for s in values]
                    if 1 < len(set(cand)) < n:
                        groups = cand
                        break
            if groups is not None:
                break
    if groups is None and n == 50 and all(vocabulary[i]["id"] == cid for i, cid in ESC50_ANCHORS.items()):
        groups = [ESC50_GROUPS[i // 10] for i in range(50)]
    if groups is None:
        return None
    names = list(dict.fromkeys(groups))
    return np.asarray([names.index(g) for g in groups], dtype=np.int64), names


def _present(labels: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Drop classes without clips: (compact labels, their names, original class index per compact)."""
    present = np.unique(labels)
    remap = {int(c): i for i, c in enumerate(present)}
    return np.asarray([remap[int(c)] for c in labels], dtype=np.int64), [names[int(c)] for c in present], present


def run_semantic(target: Target, folder: Path, *, prefix: str, features: str = "F1 max", top_k: int = 5,
                 seed: int = 0, perplexity: float | None = None,
                 group_mapping: dict[str, str] | None = None) -> tuple[str, dict, list[Path]]:
    """t-SNE map, top source classes per target class (F2 avg), class similarity matrix.

    Returns (markdown section, JSON-ready dict, written PNGs).
    """
    from transfer.plots import plot_similarity_matrix, plot_source_target_heatmap, plot_tsne
    from transfer.semantic import class_similarity, top_source_classes, tsne_2d

    x = target.network_features([features])[features]
    labels, names, present = _present(target.labels, target.class_names)
    net_label = row_label("N_S", features)
    groups = super_categories(target.emb.index["target_vocabulary"], group_mapping)
    group_ids = group_names = None
    if groups is not None:
        group_ids = groups[0][target.labels]
        used = np.unique(group_ids)
        group_names = [groups[1][g] for g in used]
        group_ids = np.searchsorted(used, group_ids)
    points = tsne_2d(x, seed=seed, perplexity=perplexity)
    pngs = [plot_tsne(points, labels, names, folder / f"{prefix}_tsne.png", groups=group_ids,
                      group_names=group_names, title=f"{target.heading}: {net_label}")]

    f2_avg = target.emb.arrays["f2_avg"]
    sources = target.emb.source_names
    top = top_source_classes(f2_avg, labels, names, sources, k=top_k)
    distinct = top_source_classes(f2_avg, labels, names, sources, k=top_k, contrast=True)
    pngs.append(plot_source_target_heatmap(top.scores, names, sources, folder / f"{prefix}_top_sources.png",
                                           top_k=top_k, title=f"{target.heading}: mean N_S F2 score per class"))
    sim = class_similarity(x, labels, len(names), center=True)
    pngs.append(plot_similarity_matrix(sim, names, folder / f"{prefix}_similarity.png",
                                       title=f"{target.heading}: class similarity ({net_label}, centred cosine)"))
    md = [f"## {target.heading}\n",
          f"t-SNE of {net_label} ({target.labels.size} clips): `{prefix}_tsne.png`"
          + (f", also coloured by {len(group_names)} super-categories" if group_names else
             " (no super-categories in this vocabulary)") + ".\n",
          f"### Top source classes per target class (mean N_S F2 avg score, `{prefix}_top_sources.png`)\n",
          top.to_markdown(),
          "### Most distinctive source classes (mean minus the mean over all clips)\n",
          distinct.to_markdown(),
          f"Class similarity matrix (centred cosine of class means of {net_label}): `{prefix}_similarity.png`\n"]
    doc = {"heading": target.heading, "features": features, "num_clips": int(target.labels.size),
           "classes": names, "super_categories": group_names, "top_sources": top.to_dict(),
           "distinctive_sources": distinct.to_dict(), "similarity": np.round(sim, 6).tolist(),
           "tsne": {"seed": seed, "perplexity": perplexity}}
    return "\n".join(md), doc, pngs


# --------------------------------------------------------------------------------------------
# AudioSet (source task): clip-level mAP / AUC from F2
# --------------------------------------------------------------------------------------------

def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def run_audioset(url: str, folder: Path, *, prefix: str = "audioset") -> tuple[str, dict, list[Path]]:
    """mAP, mean AUC and d' of the source classes from the stored F2 outputs (max and avg mapping),
    per split and overall. Target labels are matched to source classes by id; classes of the model
    that the data never labels are not scorable and are skipped (counted in the output)."""
    from trainer.metrics import clip_metrics
    from transfer.plots import plot_per_class_accuracy

    emb = load_embeddings(url)
    src_ids = [v["id"] for v in emb.index["source_vocabulary"]]
    src_index = {cid: i for i, cid in enumerate(src_ids)}
    tgt_ids = [v["id"] for v in emb.index["target_vocabulary"]]
    tgt_to_src = [src_index.get(cid, -1) for cid in tgt_ids]
    if all(j < 0 for j in tgt_to_src):
        raise ValueError(f"{url}: none of the dataset's {len(tgt_ids)} class ids is a class of the model "
                         f"({emb.index['model']}); `audioset` scores the source classes on source-labelled data")
    targets = np.zeros((emb.num_clips, len(src_ids)), dtype=np.int8)
    for i, labels in enumerate(emb.labels()):
        for t in labels:
            if tgt_to_src[t] >= 0:
                targets[i, tgt_to_src[t]] = 1
    splits = emb.arrays["split"]
    groups = [("all", np.ones(emb.num_clips, bool))]
    if len(np.unique(splits)) > 1:
        groups += [(str(s), splits == s) for s in np.unique(splits)]
    rows, doc_rows, best = [], [], None
    for split, sel in groups:
        for mapping in ("avg", "max"):
            m = clip_metrics(targets[sel], emb.arrays[f"f2_{mapping}"][sel])
            r = {"split": split, "mapping": f"{mapping}()", "num_clips": m["num_clips"],
                 "num_classes_scored": m["num_classes_scored"], "mAP": _finite(m["mAP"]),
                 "mean_auc": _finite(m["mean_auc"]), "d_prime": _finite(m["d_prime"])}
            doc_rows.append({**r, "per_class_ap": [_finite(v) for v in m["per_class_ap"]],
                             "per_class_auc": [_finite(v) for v in m["per_class_auc"]]})
            rows.append(r)
            if split == "all" and (best is None or (m["mAP"] > best[1]["mAP"])):
                best = (mapping, m)
    fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    md = [f"## audioset: {emb.index.get('dataset', '?')} (source classes, clip level)\n",
          f"Model `{emb.index['model']}`; {emb.num_clips} clips; {sum(j >= 0 for j in tgt_to_src)} of "
          f"{len(tgt_ids)} dataset classes are model classes; classes need a positive and a negative clip "
          "to be scored.\n",
          "| split | F2 mapping | clips | classes scored | mAP | mean AUC | d' |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['split']} | {r['mapping']} | {r['num_clips']} | {r['num_classes_scored']} | "
                  f"{fmt(r['mAP'])} | {fmt(r['mean_auc'])} | {fmt(r['d_prime'])} |")
    pngs = []
    mapping, m = best
    ap = np.asarray(m["per_class_ap"], dtype=np.float64)
    keep = np.flatnonzero(np.isfinite(ap))
    if keep.size:
        pngs.append(plot_per_class_accuracy(ap[keep], [emb.source_names[j] for j in keep],
                                            folder / f"{prefix}_per_class_ap.png",
                                            title=f"per-class AP, N_S F2 {mapping}() (all clips)"))
        md.append(f"\nPer-class AP (F2 {mapping}()): `{prefix}_per_class_ap.png`\n")
    doc = {"embeddings": url, "model": emb.index["model"], "data": emb.index["data"], "rows": doc_rows,
           "source_classes": emb.source_names}
    return "\n".join(md) + "\n", doc, pngs
