"""`weaksound detect --model M --out DIR FILE...`: the command line of ``inference.detect.run_detect``.

Sound events (onset, offset, label) from the network's segment scores. Each file is scored
segment by segment (as `weaksound tag` does, in chunks for long files); a class is active in a
segment when its score reaches its threshold; a median filter over --median-window segments
smooths the activity; each run of active segments becomes an event.

Writes to DIR: events.tsv (DCASE style: filename, onset, offset, event_label), events.json
(the same with scores, thresholds and durations), <stem>.timeline.png per file and, with
--reference, metrics.json (event-based and segment-based F1 from sed_eval).
"""
from __future__ import annotations

import argparse
import sys

from inference.detect import DetectConfig


def _class_threshold(text: str) -> tuple[str, float]:
    label, sep, value = text.rpartition("=")
    try:
        if not sep or not label:
            raise ValueError
        return label, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LABEL=VALUE, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    d = DetectConfig(model="", files=("-",), out="")
    p = argparse.ArgumentParser(prog="weaksound detect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (local paths or s3:// URLs)")
    p.add_argument("--model", required=True,
                   help="exported model folder/URL (model.safetensors + config.json); required")
    p.add_argument("--out", required=True,
                   help="output folder/URL for events.tsv, events.json and timeline PNGs; required")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help="segment score at which a class is active, for every class (default: %(default)s)")
    p.add_argument("--class-threshold", type=_class_threshold, action="append", default=[], metavar="LABEL=VALUE",
                   help="threshold of one class (name or id); repeatable; overrides --threshold and "
                        "--thresholds (default: none)")
    p.add_argument("--thresholds", default=d.thresholds_file, metavar="JSON",
                   help='JSON file {"label": threshold, ...} of per-class thresholds, e.g. tuned on '
                        "validation data (default: %(default)s)")
    p.add_argument("--median-window", type=int, default=d.median_window,
                   help="median filter length in segments, odd; 1 disables it (default: %(default)s)")
    p.add_argument("--chunk-seconds", type=float, default=d.chunk_seconds,
                   help="audio scored per forward pass; bounds memory for long files (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=d.top_k,
                   help="classes drawn in each timeline PNG (default: %(default)s)")
    p.add_argument("--reference", default=d.reference, metavar="TSV",
                   help="reference annotations (DCASE TSV) to score the events against (default: %(default)s)")
    p.add_argument("--t-collar", type=float, default=d.t_collar,
                   help="event-based onset/offset collar in seconds (default: %(default)s)")
    p.add_argument("--time-resolution", type=float, default=d.time_resolution,
                   help="segment-based evaluation grid in seconds (default: %(default)s)")
    return p


def config_from_args(args: argparse.Namespace) -> DetectConfig:
    return DetectConfig(model=args.model, files=tuple(args.files), out=args.out, threshold=args.threshold,
                        class_thresholds=tuple(args.class_threshold), thresholds_file=args.thresholds,
                        median_window=args.median_window, chunk_seconds=args.chunk_seconds, top_k=args.top_k,
                        reference=args.reference, t_collar=args.t_collar, time_resolution=args.time_resolution)


def main(argv: list[str] | None = None) -> int:
    from inference.detect import run_detect

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        summary = run_detect(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad thresholds, a missing model or reference
        parser.error(str(e))
    for path, reason in summary.skipped:
        print(f"[detect] {path}: skipped: {reason}", file=sys.stderr)
    print(f"[detect] {summary.line()}")
    return 1 if summary.files == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
