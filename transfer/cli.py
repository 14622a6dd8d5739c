"""`weaksound transfer TASK`: the paper's transfer experiments on stored embeddings, as Ray jobs.

The command line of ``transfer.job.run_transfer(TransferConfig)``.

Tasks (embeddings folders come from `weaksound embed --model M --data D --out E`):

  events    ESC-50-style sound events (transductive): N_S feature sets F1/F2 x max/avg (and
            combinations) + the MFCC baseline, linear SVM per official fold, C chosen by nested
            validation on the training folds only; every (fold x feature set x C) unit is a Ray task
  scenes    acoustic scenes, DCASE-2016 style (inductive): the same protocol on its folds
  adapt     adapted networks N_T^I / N_T^II / N_T^III, one Ray Train run per variant fitting each test
            fold in turn on that fold's training folds' audio only; F1/F2 re-extracted and scored for that fold
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
chosen C, the exact command), confusion-matrix and per-class-accuracy PNGs of the feature set
chosen by inner validation, semantic.md/.json and PNGs, audioset.md/.json, and adapted weights (safetensors).
An s3:// --out is staged locally and each file uploaded atomically at the end.
"""
from __future__ import annotations

import argparse
import sys

from transfer.experiments import Protocol
from transfer.job import TASKS, AdaptOptions, SemanticOptions, TransferConfig

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
    proto, adapt, sem = Protocol(), AdaptOptions(), SemanticOptions()
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
    sv.add_argument("--c-grid", type=_floats, default=",".join(f"{c:g}" for c in proto.c_grid),
                    help="candidate SVM C values, chosen per test fold by inner CV on the training folds "
                         "(default: %(default)s)")
    sv.add_argument("--inner-folds", type=int, default=0,
                    help="inner CV splits; 0 = leave one training fold out (default: %(default)s)")
    sv.add_argument("--no-baseline", action="store_true",
                    help="skip the MFCC-statistics baseline row (default: the baseline is computed)")
    sv.add_argument("--no-fusion", action="store_true",
                    help="skip the rows that join the network features 'F1 max' and 'F1+F2 max+avg' with the "
                         "MFCC statistics ('N_S + MFCC'; default: scored, when the baseline is)")
    sv.add_argument("--mfcc-coefficients", type=int, default=proto.n_mfcc,
                    help="baseline: MFCCs per frame, c0 included (default: %(default)s)")
    sv.add_argument("--mfcc-deltas", type=int, choices=(0, 1, 2), default=proto.mfcc_deltas,
                    help="baseline: 0 = MFCCs only, 1 = + deltas, 2 = + delta-deltas (default: %(default)s)")
    sv.add_argument("--seed", type=int, default=proto.seed,
                    help="seed of the SVM solver, t-SNE and adaptation (default: %(default)s)")

    ad = p.add_argument_group("network adaptation (adapt, or all with --adapt)")
    ad.add_argument("--variants", type=_names, default=",".join(adapt.variants),
                    help="adapted networks to train, from I, II, III (default: %(default)s)")
    ad.add_argument("--adapt", action="store_true",
                    help="`all`: also run the adaptation with --variants (default: off)")
    ad.add_argument("--adapt-variants", type=_names, default=None,
                    help="`all`: run the adaptation with these variants, e.g. 'I' for a demo "
                         "(default: %(default)s = no adaptation unless --adapt)")
    ad.add_argument("--epochs", type=int, default=adapt.epochs, help="fine-tuning epochs per fit (default: %(default)s)")
    ad.add_argument("--folds", type=_ints, default=None,
                    help="adapt: test folds to run, e.g. '1,2' (default: %(default)s = every official fold)")
    ad.add_argument("--workers", type=int, default=adapt.workers, help="Ray Train workers (DDP ranks) of each variant's run (default: %(default)s)")
    ad.add_argument("--use-gpu", choices=("auto", "yes", "no"), default=adapt.use_gpu,
                    help="train and re-extract on GPUs; auto = when the cluster has one (default: %(default)s)")
    ad.add_argument("--lr", type=float, default=adapt.lr, help="Adam learning rate of the new layers (default: %(default)s)")
    ad.add_argument("--finetune-lr-scale", type=float, default=adapt.finetune_lr_scale,
                    help="pretrained layers learn at lr x this; 0 = train the new layers only (default: %(default)s)")
    ad.add_argument("--batch-clips", type=int, default=adapt.batch_clips,
                    help="clips per optimizer step per worker (default: %(default)s)")
    ad.add_argument("--crop-seconds", type=float, default=adapt.crop_seconds,
                    help="random training crops of longer clips; 0 = full clips (default: %(default)s)")
    ad.add_argument("--loss", choices=("bce", "ce"), default=adapt.loss,
                    help="bce: sigmoid + BCE on one-hot targets (N_S's design); ce: softmax cross-entropy "
                         "(default: %(default)s)")
    ad.add_argument("--extra-channels", type=int, default=adapt.extra_channels,
                    help="N_T^II: width of the extra layer; 0 = F1's width (default: %(default)s)")
    ad.add_argument("--iii-base", choices=("I", "II"), default=adapt.iii_base,
                    help="N_T^III = this variant with the conv blocks frozen (default: %(default)s)")
    ad.add_argument("--train-storage", default=adapt.train_storage,
                    help="Ray Train storage path; must be shared storage (e.g. s3://) on a multi-node cluster "
                         "(default: %(default)s = a temporary local folder)")

    se = p.add_argument_group("semantic relations")
    se.add_argument("--tsne-features", default=sem.tsne_features,
                    help="feature set mapped by t-SNE and the similarity matrix (default: %(default)s)")
    se.add_argument("--top-k", type=int, default=sem.top_k, help="source classes listed per target class (default: %(default)s)")
    se.add_argument("--perplexity", type=float, default=sem.perplexity,
                    help="t-SNE perplexity (default: %(default)s = min(30, (clips - 1) / 3))")
    se.add_argument("--super-categories", default=sem.super_categories,
                    help="JSON file/URL mapping class id or name -> super-category (default: %(default)s = read "
                         "from the vocabulary when it has them, e.g. ESC-50 or '<group>/<class>' ids)")

    rt = p.add_argument_group("execution")
    rt.add_argument("--executor", choices=("ray", "local"), default=proto.executor,
                    help="ray: every unit/shard a Ray task; local: this process, same numbers (default: %(default)s)")
    rt.add_argument("--address", default=None,
                    help="Ray cluster address (default: %(default)s = $RAY_ADDRESS, else a local Ray)")
    rt.add_argument("--max-in-flight", type=int, default=proto.max_in_flight,
                    help="pending Ray tasks at most; 0 = twice the cluster's CPUs (default: %(default)s)")
    rt.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")
    return p


def config_from_args(args: argparse.Namespace) -> TransferConfig:
    """The typed run a parsed `weaksound transfer` command line stands for."""
    protocol = Protocol(c_grid=args.c_grid, inner_folds=args.inner_folds or None, seed=args.seed,
                        feature_sets=args.feature_sets, baseline=not args.no_baseline, fuse_baseline=not args.no_fusion,
                        n_mfcc=args.mfcc_coefficients,
                        mfcc_deltas=args.mfcc_deltas, executor=args.executor, max_in_flight=args.max_in_flight,
                        progress=not args.no_progress)
    adapt = AdaptOptions(variants=args.adapt_variants or args.variants, epochs=args.epochs, folds=args.folds,
                         workers=args.workers, use_gpu=args.use_gpu, lr=args.lr,
                         finetune_lr_scale=args.finetune_lr_scale, batch_clips=args.batch_clips,
                         crop_seconds=args.crop_seconds, loss=args.loss, extra_channels=args.extra_channels,
                         iii_base=args.iii_base, train_storage=args.train_storage)
    semantic = SemanticOptions(tsne_features=args.tsne_features, top_k=args.top_k, perplexity=args.perplexity,
                               super_categories=args.super_categories)
    return TransferConfig(task=args.task, out=args.out, embeddings=args.embeddings, events=args.events,
                          scenes=args.scenes, audioset=args.audioset, task_name=args.task_name, protocol=protocol,
                          adapt=adapt, adapt_in_all=args.task == "all" and bool(args.adapt or args.adapt_variants),
                          semantic=semantic, address=args.address)


def main(argv: list[str] | None = None) -> int:
    from transfer.job import run_transfer

    args = build_parser().parse_args(argv)
    try:
        summary = run_transfer(config_from_args(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"[transfer] error: {e}", file=sys.stderr)
        return 2
    if summary.rows:
        from transfer.results import results_markdown

        print(results_markdown(summary.rows))
    print(f"[transfer] {len(summary.files)} files in {summary.out} after {summary.seconds:.1f} s: "
          + ", ".join(summary.files[:12]) + (" ..." if len(summary.files) > 12 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
