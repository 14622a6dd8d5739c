"""`weaksound prep SOURCE ...`: turn a dataset layout into validated shards + manifest.

The command line of ``data_prep.job.run_prep_job(PrepConfig)``; each SOURCE is an entry of
``data_prep.sources.SOURCES``.

Examples:
  weaksound prep synthetic --out data/synthetic                     # the embedded default corpus
  weaksound prep esc50 --root ESC-50-master --out s3://bucket/esc50
  weaksound prep dcase2016 --root TUT-acoustic-scenes-2016-development --out data/dcase2016
  weaksound prep audioset --root audioset_csvs --split balanced_train --audio clips/ --out s3://bucket/as-bal
  weaksound prep folder --root my_audio --csv labels.csv --out data/mine
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from data_prep import audio
from data_prep.job import PrepConfig, PrepSummary, run_prep_job
from data_prep.shards import ShardConfig
from data_prep.sources import SOURCES, SYNTHETIC_TASKS


def _common(p: argparse.ArgumentParser) -> None:
    d = ShardConfig()
    lim = audio.ValidationLimits()
    job = PrepConfig(SOURCES["synthetic"](), out="-")
    p.add_argument("--out", required=True,
                   help="output URL: a local folder or s3://bucket/prefix (endpoint/credentials from AWS_* env vars); "
                        "required")
    p.add_argument("--sample-rate", type=int, default=d.sample_rate,
                   help="every clip is downmixed to mono and resampled to this rate (default: %(default)s, the paper's)")
    p.add_argument("--clips-per-shard", type=int, default=d.max_clips_per_shard,
                   help="clips per shard task/tar file (default: %(default)s)")
    p.add_argument("--max-shard-mb", type=float, default=d.max_shard_bytes / 2**20,
                   help="a shard rolls over to a new tar part beyond this many MiB (default: %(default)s)")
    p.add_argument("--min-duration", type=float, default=lim.min_duration_s,
                   help="clips shorter than this many seconds are rejected as too_short (default: %(default)s)")
    p.add_argument("--min-input-rate", type=int, default=lim.min_sample_rate,
                   help="inputs sampled below this rate (Hz) are rejected as bad_sample_rate (default: %(default)s)")
    p.add_argument("--max-duration", type=float, default=lim.max_duration_s,
                   help="truncate longer clips to this many seconds, counted in the summary; 0 keeps all (default: %(default)s)")
    p.add_argument("--max-input-rate", type=int, default=lim.max_sample_rate,
                   help="inputs whose header states a higher rate (Hz) are rejected as bad_sample_rate before "
                        "any decoding, bounding memory (default: %(default)s)")
    p.add_argument("--max-channels", type=int, default=lim.max_channels,
                   help="inputs with more channels are rejected before any decoding, bounding memory "
                        "(default: %(default)s)")
    p.add_argument("--address", default=job.address,
                   help="Ray cluster address to join (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--executor", choices=("ray", "local"), default=job.executor,
                   help="ray: one Ray task per shard; local: in this process, for debugging (default: %(default)s)")
    p.add_argument("--max-in-flight", type=int, default=job.max_in_flight,
                   help="shard tasks submitted at once; 0 = twice the cluster's CPUs (default: %(default)s)")
    p.add_argument("--metrics-port", type=int, default=job.metrics_port,
                   help="serve this driver's Prometheus metrics on 127.0.0.1:PORT; 0 = export them through "
                        "Ray's metrics exporter instead (default: %(default)s)")
    p.add_argument("--metrics-linger", type=float, default=job.metrics_linger_s, metavar="SECONDS",
                   help="with --metrics-port: keep serving this long after the job, so that Prometheus scrapes "
                        "the final values (default: %(default)s = two scrapes at the 5 s interval of "
                        "cluster/prometheus/prometheus.yml)")
    p.add_argument("--val-fraction", type=float, default=job.val_fraction, metavar="F",
                   help="move this share of the train split's clips to a 'val' split, chosen by a hash of the "
                        "source recording (else the clip id), so training can select its model and epoch "
                        "without looking at the eval split; layouts without a 'train' split are left as they "
                        "are (default: %(default)s = no val split)")
    p.add_argument("--val-groups", default=job.val_groups, metavar="CSV",
                   help="CSV (local or s3://) with the header clip_id,group and one row per train clip and "
                        "recording (source, speaker, uploader) it contains, for layouts that do not name the "
                        "recordings themselves; --val-fraction then draws that share of groups, and a clip goes "
                        "to val when any of its groups is drawn, so val holds recordings never trained on "
                        "(default: none: the layout's source recording, else the clip id)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weaksound prep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    fmt = argparse.RawDescriptionHelpFormatter  # every help text states its default itself

    p = sub.add_parser("synthetic", help="the embedded synthetic corpus (no download)", formatter_class=fmt,
                       description="Generate the embedded weakly-labelled corpus deterministically (same seed, same "
                                   "bytes). With --task all, writes OUT/source, OUT/events and OUT/scenes.")
    synthetic = SOURCES["synthetic"]()
    p.add_argument("--task", choices=("all", *SYNTHETIC_TASKS), default=synthetic.task,
                   help="source: web-like weakly labelled training corpus; events: ESC-50-like 5-fold target task; "
                        "scenes: scene-like 4-fold target task (default: %(default)s)")
    p.add_argument("--num-clips", type=int, default=synthetic.num_clips,
                   help="clips per task (default: each task's built-in size)")
    p.add_argument("--seed", type=int, default=synthetic.seed, help="corpus seed (default: %(default)s)")
    _common(p)

    p = sub.add_parser("esc50", help="ESC-50 repository layout (audio/, meta/esc50.csv)", formatter_class=fmt)
    p.add_argument("--root", required=True, help="the ESC-50 folder (with audio/ and meta/)")
    _common(p)

    p = sub.add_parser("dcase2016", help="TUT Acoustic Scenes 2016 development layout", formatter_class=fmt)
    p.add_argument("--root", required=True, help="folder with audio/, meta.txt and evaluation_setup/")
    _common(p)

    p = sub.add_parser("audioset", help="AudioSet CSV release + a folder of audio you downloaded", formatter_class=fmt)
    p.add_argument("--root", required=True, help="folder with class_labels_indices.csv and *_segments.csv")
    p.add_argument("--split", required=True,
                   help="balanced_train, unbalanced_train or eval (or a *_segments.csv file name)")
    p.add_argument("--audio", default=None, help="folder of audio files named YTID / Y<YTID> / YTID_<start>[_<end>] "
                                                 "(default: ROOT/audio)")
    _common(p)

    p = sub.add_parser("folder", help="any folder of audio + a CSV path,labels", formatter_class=fmt)
    p.add_argument("--root", required=True, help="audio folder; CSV paths are relative to it")
    p.add_argument("--csv", required=True, help="CSV with header path,labels (labels separated by ';' or ',')")
    _common(p)
    return parser


def config_from_args(args: argparse.Namespace) -> PrepConfig:
    """The typed run a parsed `weaksound prep` command line stands for."""
    spec = SOURCES[args.source]
    shard = ShardConfig(
        sample_rate=args.sample_rate, max_clips_per_shard=args.clips_per_shard,
        max_shard_bytes=int(args.max_shard_mb * 2**20),
        limits=audio.ValidationLimits(min_duration_s=args.min_duration, min_sample_rate=args.min_input_rate,
                                      max_duration_s=args.max_duration, max_sample_rate=args.max_input_rate,
                                      max_channels=args.max_channels))
    return PrepConfig(source=spec(**{f.name: getattr(args, f.name) for f in fields(spec)}), out=args.out,
                      shard=shard, executor=args.executor, address=args.address, max_in_flight=args.max_in_flight,
                      progress=not args.no_progress, metrics_port=args.metrics_port,
                      metrics_linger_s=args.metrics_linger, val_fraction=args.val_fraction,
                      val_groups=args.val_groups)


def _print_summary(summary: PrepSummary) -> None:
    for line in summary.lines():
        print(f"[prep] {line}")
    if summary.rejected:
        print(f"[prep] every rejected input is listed with its path and reason in "
              f"{summary.out.rstrip('/')}/rejects.jsonl")


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What an unreachable or refused object store raises: told in one line, not a traceback."""
    from runtime.storage import LeaseHeld

    errors: tuple[type[BaseException], ...] = (LeaseHeld, ConnectionError, TimeoutError, PermissionError)
    try:
        from botocore.exceptions import BotoCoreError

        errors += (BotoCoreError,)
    except ImportError:
        pass
    return errors


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(build_parser().parse_args(argv))
    try:
        summary = run_prep_job(cfg, on_dataset=_print_summary)
    except _storage_errors() as error:
        print(f"[prep] error: {type(error).__name__}: {error}", file=sys.stderr)
        print("[prep] nothing finished is lost: re-run the same command to resume", file=sys.stderr)
        return 1
    if summary.clips_written == 0:
        print("[prep] error: no usable clip was produced", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
