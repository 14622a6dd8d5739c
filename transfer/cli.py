"""`weaksound transfer TASK`: the paper's transfer experiments on stored embeddings, as Ray jobs.

Tasks (embeddings folders come from `weaksound embed --model M --data D --out E`):

  events    ESC-50-style sound events (transductive): N_S feature sets F1/F2 x max/avg (and
            combinations) + the MFCC baseline, linear SVM per official fold, C chosen by nested
            validation on the training folds only; every (fold x feature set x C) unit is a Ray task
  scenes    acoustic scenes, DCASE-2016 style (inductive): the same protocol on its folds
  adapt     adapted networks N_T^I / N_T^II / N_T^III, one Ray Train fit per (variant, test fold)
            on the training folds' audio only; F1/F2 re-extracted and scored for that fold
  semantic  t-SNE map by class (and super-category), top source classes per target class
            (table + heatmap), class similarity matrix
  audioset  clip-level mAP / AUC of the source classes, for embeddings of the source dataset
  all       every task whose data is given: --events/--scenes (or --embeddings) -> events,
            scenes, semantic; + adapt with --adapt / --adapt-variants; + audioset with --audioset

Examples:
  weaksound transfer events --embeddings emb/esc50 --out results/esc50
  weaksound transfer scenes --embeddings s3://bucket/emb/dcase2016 --out s3://bucket/results/dcase
  weaksound transfer adapt --embeddings emb/esc50 --variants I,III --epochs 10 --out results/esc50-adapt
  weaksound transfer all --events emb/events --scenes emb/scenes --adapt-variants I --out results/all

The results folder holds results.md / results.csv / results.json (per-fold accuracy, mean +- std,
chosen C, the exact command), confusion-matrix and per-class-accuracy PNGs of the best feature
set, semantic.md/.json and PNGs, audioset.md/.json, and adapted weights (safetensors).
An s3:// --out is staged locally and each file uploaded atomically at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import storage  # noqa: E402
from transfer.svm import DEFAULT_C_GRID  # noqa: E402

TASKS = ("events", "scenes", "adapt", "semantic", "audioset", "all")
DEFAULT_VARIANTS = "I,II,III"
ADAPT_DEFAULT_SETS = "F1 max,F1 avg,F2 max,F2 avg"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _feature_sets(text: str) -> tuple[str, ...]:
    """'F1 max,F2_avg' -> ('F1 max', 'F2 avg'): '_' stands for the space, to spare shell quoting."""
    from transfer.feature_sets import feature_set_names

    names = tuple(n.replace("_", " ") for n in _names(text))
    unknown = [n for n in names if n not in feature_set_names()]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown feature sets {unknown}; choose from {feature_set_names()}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="weaksound transfer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=TASKS, metavar="TASK", help=f"one of {', '.join(TASKS)} (see above)")
    io_ = p.add_argument_group("inputs and outputs")
    io_.add_argument("--embeddings", default=None,
                     help="embeddings folder/URL (`weaksound embed` output) for the task; with `all`, one dataset "
                          "whose kind is inferred (default: %(default)s)")
    io_.add_argument("--events", default=None, help="`all`: embeddings of the sound-event dataset (default: %(default)s)")
    io_.add_argument("--scenes", default=None, help="`all`: embeddings of the scene dataset (default: %(default)s)")
    io_.add_argument("--audioset", default=None,
                     help="`all`: embeddings of the source (multi-label) dataset for the audioset task "
                          "(default: %(default)s)")
    io_.add_argument("--out", required=True,
                     help="results folder, local or s3:// (required; no default)")
    io_.add_argument("--task-name", choices=("events", "scenes"), default=None,
                     help="adapt/semantic: name the dataset's task (default: %(default)s = inferred from the "
                          "dataset name: scene/dcase -> scenes, else events)")

    sv = p.add_argument_group("SVM protocol")
    sv.add_argument("--feature-sets", type=_feature_sets, default=None,
                    help="comma-separated feature sets, e.g. 'F1 max,F2 avg' or F1_max,F2_avg "
                         "(default: %(default)s = every set "
                         "F1/F2 x max/avg plus combinations for events/scenes, and "
                         f"'{ADAPT_DEFAULT_SETS}' for adapt)")
    sv.add_argument("--c-grid", type=_floats, default=",".join(f"{c:g}" for c in DEFAULT_C_GRID),
                    help="candidate SVM C values, chosen per test fold by inner CV on the training folds "
                         "(default: %(default)s)")
    sv.add_argument("--inner-folds", type=int, default=0,
                    help="inner CV splits; 0 = leave one training fold out (default: %(default)s)")
    sv.add_argument("--no-baseline", action="store_true",
                    help="skip the MFCC-statistics baseline row (default: the baseline is computed)")
    sv.add_argument("--mfcc-coefficients", type=int, default=20,
                    help="baseline: MFCCs per frame, c0 included (default: %(default)s)")
    sv.add_argument("--mfcc-deltas", type=int, choices=(0, 1, 2), default=1,
                    help="baseline: 0 = MFCCs only, 1 = + deltas, 2 = + delta-deltas (default: %(default)s)")
    sv.add_argument("--seed", type=int, default=0,
                    help="seed of the SVM solver, t-SNE and adaptation (default: %(default)s)")

    ad = p.add_argument_group("network adaptation (adapt, or all with --adapt)")
    ad.add_argument("--variants", type=_names, default=DEFAULT_VARIANTS,
                    help="adapted networks to train, from I, II, III (default: %(default)s)")
    ad.add_argument("--adapt", action="store_true",
                    help="`all`: also run the adaptation with --variants (default: off)")
    ad.add_argument("--adapt-variants", type=_names, default=None,
                    help="`all`: run the adaptation with these variants, e.g. 'I' for a demo "
                         "(default: %(default)s = no adaptation unless --adapt)")
    ad.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per fit (default: %(default)s)")
    ad.add_argument("--folds", type=_ints, default=None,
                    help="adapt: test folds to run, e.g. '1,2' (default: %(default)s = every official fold)")
    ad.add_argument("--workers", type=int, default=1, help="Ray Train workers per fit (default: %(default)s)")
    ad.add_argument("--use-gpu", choices=("auto", "yes", "no"), default="auto",
                    help="train and re-extract on GPUs; auto = when the cluster has one (default: %(default)s)")
    ad.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the new layers (default: %(default)s)")
    ad.add_argument("--finetune-lr-scale", type=float, default=0.1,
                    help="pretrained layers learn at lr x this; 0 = train the new layers only (default: %(default)s)")
    ad.add_argument("--batch-clips", type=int, default=16,
                    help="clips per optimizer step per worker (default: %(default)s)")
    ad.add_argument("--crop-seconds", type=float, default=10.0,
                    help="random training crops of longer clips; 0 = full clips (default: %(default)s)")
    ad.add_argument("--loss", choices=("bce", "ce"), default="bce",
                    help="bce: sigmoid + BCE on one-hot targets (N_S's design); ce: softmax cross-entropy "
                         "(default: %(default)s)")
    ad.add_argument("--extra-channels", type=int, default=0,
                    help="N_T^II: width of the extra layer; 0 = F1's width (default: %(default)s)")
    ad.add_argument("--iii-base", choices=("I", "II"), default="I",
                    help="N_T^III = this variant with the conv blocks frozen (default: %(default)s)")
    ad.add_argument("--train-storage", default=None,
                    help="Ray Train storage path; must be shared storage (e.g. s3://) on a multi-node cluster "
                         "(default: %(default)s = a temporary local folder)")

    se = p.add_argument_group("semantic relations")
    se.add_argument("--tsne-features", default="F1 max",
                    help="feature set mapped by t-SNE and the similarity matrix (default: %(default)s)")
    se.add_argument("--top-k", type=int, default=5, help="source classes listed per target class (default: %(default)s)")
    se.add_argument("--perplexity", type=float, default=None,
                    help="t-SNE perplexity (default: %(default)s = min(30, (clips - 1) / 3))")
    se.add_argument("--super-categories", default=None,
                    help="JSON file/URL mapping class id or name -> super-category (default: %(default)s = read "
                         "from the vocabulary when it has them, e.g. ESC-50 or '<group>/<class>' ids)")

    rt = p.add_argument_group("execution")
    rt.add_argument("--executor", choices=("ray", "local"), default="ray",
                    help="ray: every unit/shard a Ray task; local: this process, same numbers (default: %(default)s)")
    rt.add_argument("--address", default=None,
                    help="Ray cluster address (default: %(default)s = $RAY_ADDRESS, else a local Ray)")
    rt.add_argument("--max-in-flight", type=int, default=0,
                    help="pending Ray tasks at most; 0 = twice the cluster's CPUs (default: %(default)s)")
    rt.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")
    return p


# --------------------------------------------------------------------------------------------
# Planning: which datasets feed which tasks (validated before anything runs)
# --------------------------------------------------------------------------------------------

def _is_multilabel(emb) -> bool:
    return any(len(l) != 1 for l in emb.labels()) or not (emb.arrays["fold"] > 0).all()


def _plan(args):
    """(classification targets by task, semantic targets, adaptation targets, audioset URL)."""
    from inference.embed import load_embeddings
    from transfer.experiments import Target, infer_task

    def need(url, what):
        if not url:
            raise ValueError(f"`{args.task}` needs --embeddings URL ({what})")
        return url

    classify, semantic, adapt, audioset = {}, [], [], None
    if args.task in ("events", "scenes"):
        classify[args.task] = Target.load(args.task, need(args.embeddings, f"a {args.task} dataset"))
    elif args.task in ("adapt", "semantic"):
        url = need(args.embeddings, "a single-label target dataset with folds")
        emb = load_embeddings(url)
        t = Target.from_embeddings(args.task_name or infer_task(emb.index), url, emb)
        if args.task == "adapt":
            adapt = [t]
        else:
            semantic.append(t)
    elif args.task == "audioset":
        audioset = need(args.embeddings, "embeddings of the multi-label source dataset")
    else:  # all
        given = {"events": args.events, "scenes": args.scenes}
        if args.embeddings:
            emb = load_embeddings(args.embeddings)
            if _is_multilabel(emb):
                audioset = args.embeddings
            else:
                kind = args.task_name or infer_task(emb.index)
                if given[kind]:
                    raise ValueError(f"--embeddings looks like a {kind} dataset but --{kind} is given too")
                classify[kind] = Target.from_embeddings(kind, args.embeddings, emb)
        for kind, url in given.items():
            if url:
                classify[kind] = Target.load(kind, url)
        if args.audioset:
            audioset = args.audioset
        if not classify and not audioset:
            raise ValueError("`all` found no data: give --events and/or --scenes (or --embeddings), "
                             "and/or --audioset")
        semantic = list(classify.values())
        if args.adapt or args.adapt_variants:  # every single-label dataset given, events first
            adapt = [classify[k] for k in ("events", "scenes") if k in classify]
    for t in adapt:
        unknown = sorted(set(args.folds or ()) - set(t.fold_ids))
        if unknown:
            raise ValueError(f"--folds {unknown} are not folds of {t.url} (folds: {t.fold_ids})")
    return classify, semantic, adapt, audioset


def _protocol(args, feature_sets):
    from transfer.experiments import Protocol

    return Protocol(c_grid=args.c_grid, inner_folds=args.inner_folds or None, seed=args.seed,
                    feature_sets=feature_sets, baseline=not args.no_baseline, n_mfcc=args.mfcc_coefficients,
                    mfcc_deltas=args.mfcc_deltas, executor=args.executor, max_in_flight=args.max_in_flight,
                    progress=not args.no_progress)


def run(args, argv: list[str]) -> dict:
    """Run the planned tasks; returns a summary dict (written files, rows, seconds)."""
    from transfer.adapt import ADAPT_FEATURE_SETS, AdaptConfig, run_adaptation, variant_spec
    from transfer.experiments import TaskResult, classification_plots, run_audioset, run_classification, run_semantic
    from transfer.outdir import ResultsDir
    from transfer.results import write_results

    started = time.perf_counter()
    command = ["weaksound", "transfer", *argv]
    classify, semantic, adapt_targets, audioset = _plan(args)  # validation (fold isolation) first
    variants = args.adapt_variants or args.variants
    specs = [variant_spec(v, iii_base=args.iii_base, extra_channels=args.extra_channels) for v in variants]
    groups = None
    if args.super_categories:
        groups = json.loads(storage.read_text(args.super_categories))
    uses_ray = args.executor == "ray" or bool(adapt_targets)
    if uses_ray:
        from runtime.ray_cluster import ensure_ray

        ensure_ray(args.address)
    use_gpu = False
    if adapt_targets:
        import ray

        use_gpu = {"yes": True, "no": False}.get(args.use_gpu, ray.cluster_resources().get("GPU", 0) > 0)
    adapt_cfg = AdaptConfig(epochs=args.epochs, batch_clips=args.batch_clips, lr=args.lr,
                            finetune_lr_scale=args.finetune_lr_scale, crop_seconds=args.crop_seconds,
                            loss=args.loss, workers=args.workers, use_gpu=use_gpu, seed=args.seed)

    result = TaskResult()
    md_semantic, doc_semantic, md_audioset, doc_audioset = [], [], [], {}
    with ResultsDir(args.out) as out:
        for kind, target in classify.items():
            print(f"[transfer] {target.heading}: {target.labels.size} clips, {len(target.class_names)} classes, "
                  f"folds {target.fold_ids}", flush=True)
            r = run_classification(target, _protocol(args, args.feature_sets))
            _merge(result, r, kind)
            best = r.best()
            if best is not None:
                classification_plots(out.path, kind, target, *best)
        for target in adapt_targets:
            sets = args.feature_sets or ADAPT_FEATURE_SETS
            proto = _protocol(args, tuple(sets))
            if args.task == "adapt":  # the grid's N_S rows and the baseline for the same test folds
                _merge(result, run_classification(target, proto, test_folds=args.folds), target.task)
            r = run_adaptation(target, proto, specs, adapt_cfg, out.path, test_folds=args.folds,
                               storage_path=args.train_storage, feature_sets=sets)
            _merge(result, r, f"{target.task}_adapt")
            best = r.best("N_T")
            if best is not None:
                classification_plots(out.path, f"{target.task}_adapted", target, *best)
        for target in semantic:
            md, doc, _ = run_semantic(target, out.path, prefix=target.task, features=args.tsne_features,
                                         top_k=args.top_k, seed=args.seed, perplexity=args.perplexity,
                                         group_mapping=groups)
            md_semantic.append(md)
            doc_semantic.append(doc)
        if audioset:
            md, doc, _ = run_audioset(audioset, out.path)
            md_audioset.append(md)
            doc_audioset = doc

        seconds = time.perf_counter() - started
        meta = {"seconds": round(seconds, 2), "executor": args.executor, "tasks": result.extra}
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
    return {"files": files, "rows": result.rows, "seconds": seconds, "out": args.out}


def _merge(into, part, key: str) -> None:
    for row in part.rows:
        into.add(row, part.details[f"{row.task}: {row.label}"])
    if part.extra:
        into.extra.setdefault(key, {}).update(part.extra)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        summary = run(args, argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"[transfer] error: {e}", file=sys.stderr)
        return 2
    if summary["rows"]:
        from transfer.results import results_markdown

        print(results_markdown(summary["rows"]))
    print(f"[transfer] {len(summary['files'])} files in {summary['out']} after {summary['seconds']:.1f} s: "
          + ", ".join(summary["files"][:12]) + (" ..." if len(summary["files"]) > 12 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
