"""`weaksound prep SOURCE ...`: turn a dataset layout into validated shards + manifest.

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

from data_prep import audio
from data_prep.shards import ShardConfig

SYNTHETIC_TASKS = ("source", "events", "scenes")


def _common(p: argparse.ArgumentParser) -> None:
    d = ShardConfig()
    lim = audio.ValidationLimits()
    p.add_argument("--out", required=True,
                   help="output URL: a local folder or s3://bucket/prefix (endpoint/credentials from AWS_* env vars)")
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
    p.add_argument("--address", default=None,
                   help="Ray cluster address to join (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray: one Ray task per shard; local: in this process, for debugging (default: %(default)s)")
    p.add_argument("--max-in-flight", type=int, default=0,
                   help="shard tasks submitted at once; 0 = twice the cluster's CPUs (default: %(default)s)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve this driver's Prometheus metrics on 127.0.0.1:PORT; 0 = export them through "
                        "Ray's metrics exporter instead (default: %(default)s)")
    p.add_argument("--metrics-linger", type=float, default=10.0, metavar="SECONDS",
                   help="with --metrics-port: keep serving this long after the job, so that Prometheus scrapes "
                        "the final values (default: %(default)s = two scrapes at the 5 s interval of "
                        "cluster/prometheus/prometheus.yml)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weaksound prep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("synthetic", help="the embedded synthetic corpus (no download)", formatter_class=fmt,
                       description="Generate the embedded weakly-labelled corpus deterministically (same seed, same "
                                   "bytes). With --task all, writes OUT/source, OUT/events and OUT/scenes.")
    p.add_argument("--task", choices=("all",) + SYNTHETIC_TASKS, default="all",
                   help="source: web-like weakly labelled training corpus; events: ESC-50-like 5-fold target task; "
                        "scenes: scene-like 4-fold target task")
    p.add_argument("--num-clips", type=int, default=None,
                   help="clips per task (default: each task's built-in size)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
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


def _listings(args):
    from data_prep import sources

    if args.source == "synthetic":
        from data_prep.sources.synthetic import load_synthetic

        tasks = SYNTHETIC_TASKS if args.task == "all" else (args.task,)
        for task in tasks:
            out = f"{args.out.rstrip('/')}/{task}" if args.task == "all" else args.out
            yield load_synthetic(task, num_clips=args.num_clips, seed=args.seed), out
    elif args.source == "esc50":
        yield sources.esc50.load_esc50(args.root), args.out
    elif args.source == "dcase2016":
        yield sources.dcase2016.load_dcase2016(args.root), args.out
    elif args.source == "audioset":
        yield sources.audioset.load_audioset(args.root, args.split, audio_dir=args.audio), args.out
    elif args.source == "folder":
        yield sources.folder.load_folder(args.root, args.csv), args.out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from data_prep.pipeline import run_prep
    from runtime import storage

    cfg = ShardConfig(
        sample_rate=args.sample_rate, max_clips_per_shard=args.clips_per_shard,
        max_shard_bytes=int(args.max_shard_mb * 2**20),
        limits=audio.ValidationLimits(min_duration_s=args.min_duration, min_sample_rate=args.min_input_rate,
                                      max_duration_s=args.max_duration))
    from data_prep.prep_metrics import PREP_METRICS
    from runtime.telemetry import Telemetry

    run_name = args.out.rstrip("/").rsplit("/", 1)[-1]
    if args.metrics_port:  # a process outside Ray's exporter: serve our own /metrics
        telemetry = Telemetry("prometheus", PREP_METRICS, run=run_name)
        telemetry.serve(args.metrics_port)
    else:  # ride Ray's per-node metrics exporter (no-op without Ray)
        if args.executor == "ray":
            from runtime.ray_cluster import ensure_ray

            ensure_ray(args.address)
        telemetry = Telemetry("ray" if args.executor == "ray" else "none", PREP_METRICS, run=run_name)
    total_written = 0
    try:
        for listing, out in _listings(args):
            summary = run_prep(listing, out, cfg, executor=args.executor, address=args.address,
                               max_in_flight=args.max_in_flight, progress=not args.no_progress, telemetry=telemetry)
            for line in summary.lines():
                print(f"[prep] {line}")
            if summary.rejected:
                print(f"[prep] every rejected input is listed with its path and reason in "
                      f"{out.rstrip('/')}/rejects.jsonl")
            total_written += summary.clips_written
        telemetry.close(linger_s=args.metrics_linger)  # no-op unless --metrics-port serves
    finally:
        telemetry.close()  # after a failure or Ctrl-C: stop serving without waiting
    if total_written == 0:
        print("[prep] error: no usable clip was produced", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
