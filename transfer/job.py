"""The transfer stage as a typed run: ``run_transfer(TransferConfig) -> TransferSummary``.

``weaksound transfer TASK`` (transfer/cli.py) parses its options into a ``TransferConfig``; the demo
builds one in code. ``TransferConfig.command()`` renders the equivalent command line, which is also
what the results files record as the command that produced them.

The options of each task live in their own config: ``Protocol`` (the SVM protocol of events,
scenes and the adapted networks), ``AdaptOptions`` (network adaptation), ``SemanticOptions``
(semantic relations).

Example:
    >>> TransferConfig("events", out="results/esc50", embeddings="emb/esc50").command()
    'weaksound transfer events --out results/esc50 --embeddings emb/esc50'
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field

from data_prep.job import changed_options
from runtime import storage
from transfer.experiments import Protocol

__all__ = ["AdaptOptions", "SemanticOptions", "TASKS", "TransferConfig", "TransferSummary", "run_transfer"]

TASKS = ("events", "scenes", "adapt", "semantic", "audioset", "all")
_USE_GPU = ("auto", "yes", "no")


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


@dataclass(frozen=True)
class AdaptOptions:
    """Network adaptation N_T^I/II/III (arXiv 1711.01369, section 3.4): per variant one Ray Train
    run that fits the network once per test fold, each fold's on the other folds' audio only."""

    variants: tuple[str, ...] = ("I", "II", "III")
    epochs: int = 10  # fine-tuning epochs per fit
    folds: tuple[int, ...] | None = None  # test folds to run; None = every official fold
    workers: int = 1  # Ray Train workers (DDP ranks) of each variant's run
    use_gpu: str = "auto"  # "auto": when the cluster has a GPU; "yes"; "no"
    lr: float = 1e-3  # Adam learning rate of the new layers
    finetune_lr_scale: float = 0.1  # pretrained layers learn at lr x this; 0 = new layers only
    batch_clips: int = 16  # clips per optimizer step per worker
    crop_seconds: float = 10.0  # random training crops of longer clips; 0 = full clips
    loss: str = "bce"  # "bce": sigmoid + BCE on one-hot targets (N_S's design); "ce": softmax CE
    extra_channels: int = 0  # N_T^II: width of the extra layer; 0 = F1's width
    iii_base: str = "I"  # N_T^III = this variant with the conv blocks frozen
    train_storage: str | None = None  # Ray Train storage; shared storage (s3://) on a multi-node cluster

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants))
        if self.folds is not None:
            object.__setattr__(self, "folds", tuple(self.folds))
        if self.use_gpu not in _USE_GPU:
            raise ValueError(f"use_gpu must be one of {_USE_GPU}, got {self.use_gpu!r}")


@dataclass(frozen=True)
class SemanticOptions:
    """t-SNE map, top source classes per target class, class similarity matrix."""

    tsne_features: str = "F1 max"  # feature set mapped by t-SNE and the similarity matrix
    top_k: int = 5  # source classes listed per target class
    perplexity: float | None = None  # None = min(30, (clips - 1) / 3)
    super_categories: str | None = None  # JSON file/URL: class id or name -> super-category


@dataclass(frozen=True)
class TransferConfig:
    """One `weaksound transfer TASK` run.

    Attributes:
        task: one of ``TASKS``.
        out: results folder, local or s3://.
        embeddings: the task's embeddings (`weaksound embed` output); with ``all``, one dataset
            whose kind is inferred.
        events, scenes, audioset: ``all``: the embeddings of each kind of dataset.
        task_name: adapt/semantic: ``"events"`` or ``"scenes"``; None = inferred from the dataset name.
        protocol: the SVM protocol; its executor, max_in_flight and progress drive every task.
        adapt: the adaptation options (task ``adapt``, or ``all`` with ``adapt_in_all``).
        adapt_in_all: ``all``: also run the adaptation on every single-label dataset given.
        semantic: the semantic-relations options.
        address: Ray cluster to join; None = ``$RAY_ADDRESS``, else a local Ray.
    """

    task: str
    out: str
    embeddings: str | None = None
    events: str | None = None
    scenes: str | None = None
    audioset: str | None = None
    task_name: str | None = None
    protocol: Protocol = field(default_factory=Protocol)
    adapt: AdaptOptions = field(default_factory=AdaptOptions)
    adapt_in_all: bool = False
    semantic: SemanticOptions = field(default_factory=SemanticOptions)
    address: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.adapt_in_all and self.task != "all":
            raise ValueError(f"adapt_in_all is for the `all` task; `{self.task}` runs what it names")
        if self.task_name not in (None, "events", "scenes"):
            raise ValueError(f"task_name must be events or scenes, got {self.task_name!r}")

    def argv(self) -> list[str]:
        """The `weaksound transfer` arguments of this config (options at their default are left out)."""
        p, dp = self.protocol, Protocol()
        a, da = self.adapt, AdaptOptions()
        s, ds = self.semantic, SemanticOptions()
        argv = ["transfer", self.task, "--out", self.out]
        argv += changed_options([
            ("--embeddings", self.embeddings, None), ("--events", self.events, None),
            ("--scenes", self.scenes, None), ("--audioset", self.audioset, None),
            ("--task-name", self.task_name, None),
            ("--feature-sets", None if p.feature_sets is None else _csv(p.feature_sets), None),
            ("--c-grid", _csv(repr(float(c)) for c in p.c_grid), _csv(repr(float(c)) for c in dp.c_grid)),
            ("--inner-folds", p.inner_folds, dp.inner_folds),
            ("--mfcc-coefficients", p.n_mfcc, dp.n_mfcc), ("--mfcc-deltas", p.mfcc_deltas, dp.mfcc_deltas),
            ("--seed", p.seed, dp.seed),
        ])
        argv += [] if p.baseline else ["--no-baseline"]
        argv += [] if p.fuse_baseline else ["--no-fusion"]
        if self.adapt_in_all:  # `all` runs the adaptation only when asked to
            argv += ["--adapt-variants", _csv(a.variants)] if a.variants != da.variants else ["--adapt"]
        elif a.variants != da.variants:
            argv += ["--variants", _csv(a.variants)]
        argv += changed_options([
            ("--epochs", a.epochs, da.epochs), ("--folds", None if a.folds is None else _csv(a.folds), None),
            ("--workers", a.workers, da.workers), ("--use-gpu", a.use_gpu, da.use_gpu), ("--lr", a.lr, da.lr),
            ("--finetune-lr-scale", a.finetune_lr_scale, da.finetune_lr_scale),
            ("--batch-clips", a.batch_clips, da.batch_clips), ("--crop-seconds", a.crop_seconds, da.crop_seconds),
            ("--loss", a.loss, da.loss), ("--extra-channels", a.extra_channels, da.extra_channels),
            ("--iii-base", a.iii_base, da.iii_base), ("--train-storage", a.train_storage, da.train_storage),
            ("--tsne-features", s.tsne_features, ds.tsne_features), ("--top-k", s.top_k, ds.top_k),
            ("--perplexity", s.perplexity, ds.perplexity),
            ("--super-categories", s.super_categories, ds.super_categories),
            ("--executor", p.executor, dp.executor), ("--address", self.address, None),
            ("--max-in-flight", p.max_in_flight, dp.max_in_flight),
        ])
        return argv + ([] if p.progress else ["--no-progress"])

    def command(self) -> str:
        return shlex.join(["weaksound", *self.argv()])


@dataclass
class TransferSummary:
    files: list[str]  # results files written, relative to ``out``
    rows: list  # transfer.results.ResultRow of every scored (network, feature set) pair
    seconds: float
    out: str


# --------------------------------------------------------------------------------------------
# Planning: which datasets feed which tasks (validated before anything runs)
# --------------------------------------------------------------------------------------------

def _is_multilabel(emb) -> bool:
    return any(len(l) != 1 for l in emb.labels()) or not (emb.arrays["fold"] > 0).all()


def _plan(cfg: TransferConfig):
    """(classification targets by task, semantic targets, adaptation targets, audioset URL)."""
    from inference.embed import load_embeddings
    from transfer.experiments import Target, infer_task

    def need(url, what):
        if not url:
            raise ValueError(f"`{cfg.task}` needs --embeddings URL ({what})")
        return url

    classify, semantic, adapt, audioset = {}, [], [], None
    if cfg.task in ("events", "scenes"):
        classify[cfg.task] = Target.load(cfg.task, need(cfg.embeddings, f"a {cfg.task} dataset"))
    elif cfg.task in ("adapt", "semantic"):
        url = need(cfg.embeddings, "a single-label target dataset with folds")
        emb = load_embeddings(url)
        t = Target.from_embeddings(cfg.task_name or infer_task(emb.index), url, emb)
        if cfg.task == "adapt":
            adapt = [t]
        else:
            semantic.append(t)
    elif cfg.task == "audioset":
        audioset = need(cfg.embeddings, "embeddings of the multi-label source dataset")
    else:  # all
        given = {"events": cfg.events, "scenes": cfg.scenes}
        if cfg.embeddings:
            emb = load_embeddings(cfg.embeddings)
            if _is_multilabel(emb):
                audioset = cfg.embeddings
            else:
                kind = cfg.task_name or infer_task(emb.index)
                if given[kind]:
                    raise ValueError(f"--embeddings looks like a {kind} dataset but --{kind} is given too")
                classify[kind] = Target.from_embeddings(kind, cfg.embeddings, emb)
        for kind, url in given.items():
            if url:
                classify[kind] = Target.load(kind, url)
        if cfg.audioset:
            audioset = cfg.audioset
        if not classify and not audioset:
            raise ValueError("`all` found no data: give --events and/or --scenes (or --embeddings), "
                             "and/or --audioset")
        semantic = list(classify.values())
        if cfg.adapt_in_all:  # every single-label dataset given, events first
            adapt = [classify[k] for k in ("events", "scenes") if k in classify]
    for t in adapt:
        unknown = sorted(set(cfg.adapt.folds or ()) - set(t.fold_ids))
        if unknown:
            raise ValueError(f"--folds {unknown} are not folds of {t.url} (folds: {t.fold_ids})")
    return classify, semantic, adapt, audioset


def run_transfer(cfg: TransferConfig) -> TransferSummary:
    """Run the planned tasks and write the results folder; ValueError/FileNotFoundError (bad
    request) before any work is done."""
    from dataclasses import replace

    from transfer.adapt import ADAPT_FEATURE_SETS, AdaptConfig, run_adaptation, variant_spec
    from transfer.experiments import TaskResult, classification_plots, run_audioset, run_classification, run_semantic
    from transfer.outdir import ResultsDir
    from transfer.results import write_results

    started = time.perf_counter()
    command = ["weaksound", *cfg.argv()]
    classify, semantic, adapt_targets, audioset = _plan(cfg)  # validation (fold isolation) first
    a, proto = cfg.adapt, cfg.protocol
    specs = [variant_spec(v, iii_base=a.iii_base, extra_channels=a.extra_channels) for v in a.variants]
    groups = None
    if cfg.semantic.super_categories:
        groups = json.loads(storage.read_text(cfg.semantic.super_categories))
    if proto.executor == "ray" or adapt_targets:
        from runtime.ray_cluster import ensure_ray

        ensure_ray(cfg.address)
    use_gpu = False
    if adapt_targets:
        import ray

        use_gpu = {"yes": True, "no": False}.get(a.use_gpu, ray.cluster_resources().get("GPU", 0) > 0)
    adapt_cfg = AdaptConfig(epochs=a.epochs, batch_clips=a.batch_clips, lr=a.lr,
                            finetune_lr_scale=a.finetune_lr_scale, crop_seconds=a.crop_seconds,
                            loss=a.loss, workers=a.workers, use_gpu=use_gpu, seed=proto.seed)

    result = TaskResult()
    md_semantic, doc_semantic, md_audioset, doc_audioset = [], [], [], {}
    with ResultsDir(cfg.out) as out:
        for kind, target in classify.items():
            print(f"[transfer] {target.heading}: {target.labels.size} clips, {len(target.class_names)} classes, "
                  f"folds {target.fold_ids}", flush=True)
            r = run_classification(target, proto)
            _merge(result, r, kind)
            best = r.best()
            if best is not None:
                classification_plots(out.path, kind, target, *best)
        for target in adapt_targets:
            sets = proto.feature_sets or ADAPT_FEATURE_SETS
            adapt_proto = replace(proto, feature_sets=tuple(sets))
            if cfg.task == "adapt":  # the grid's N_S rows and the baseline for the same test folds
                _merge(result, run_classification(target, adapt_proto, test_folds=a.folds), target.task)
            r = run_adaptation(target, adapt_proto, specs, adapt_cfg, out.path, test_folds=a.folds,
                               storage_path=a.train_storage, feature_sets=sets)
            _merge(result, r, f"{target.task}_adapt")
            headline = r.fixed("N_T", "F1 max")  # the paper's headline set: N_T inner scores cannot choose
            if headline is not None:
                classification_plots(out.path, f"{target.task}_adapted", target, *headline)
        for target in semantic:
            md, doc, _ = run_semantic(target, out.path, prefix=target.task, features=cfg.semantic.tsne_features,
                                      top_k=cfg.semantic.top_k, seed=proto.seed, perplexity=cfg.semantic.perplexity,
                                      group_mapping=groups)
            md_semantic.append(md)
            doc_semantic.append(doc)
        if audioset:
            md, doc, _ = run_audioset(audioset, out.path)
            md_audioset.append(md)
            doc_audioset = doc

        seconds = time.perf_counter() - started
        meta = {"seconds": round(seconds, 2), "executor": proto.executor, "tasks": result.extra}
        if result.rows:
            write_results(out.path, result.rows, command, title="weaksound transfer results",
                          fold_results=result.details, extra=meta)
        cmd_line = shlex.join(command)
        if md_semantic:
            out.write_text("semantic.md", "# Semantic relations\n\n" + "\n".join(md_semantic)
                           + f"\nCommand: `{cmd_line}`\n")
            out.write_text("semantic.json", json.dumps({"command": command, "tasks": doc_semantic}, indent=1))
        if md_audioset:
            out.write_text("audioset.md", "# Source task (clip level)\n\n" + "\n".join(md_audioset)
                           + f"\nCommand: `{cmd_line}`\n")
            out.write_text("audioset.json", json.dumps({"command": command, **doc_audioset}, indent=1))
        files = out.files()
    return TransferSummary(files=files, rows=result.rows, seconds=seconds, out=cfg.out)


def _merge(into, part, key: str) -> None:
    for row in part.rows:
        into.add(row, part.details[f"{row.task}: {row.label}"])
    if part.extra:
        into.extra.setdefault(key, {}).update(part.extra)
