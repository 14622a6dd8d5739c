"""`weaksound tag --model URL FILE...`: the command line of ``inference.tag.run_tag``.

Clip-level tags and a segment-level timeline for audio files of any length (under a second to
hours): each file is decoded once and scored in chunks of --chunk-seconds, so memory stays bounded.
With --out DIR, per FILE: <stem>.tags.json (top-k clip labels), <stem>.timeline.csv (onset, offset,
label, score of every event at or above --threshold, consecutive segments merged) and
<stem>.timeline.png (score of the top classes over time).
"""
from __future__ import annotations

import argparse
import sys

from inference.config import TagConfig


def build_parser() -> argparse.ArgumentParser:
    d = TagConfig(model="", files=("-",))
    p = argparse.ArgumentParser(prog="weaksound tag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (local paths or s3:// URLs)")
    p.add_argument("--model", required=True,
                   help="exported model folder/URL (model.safetensors + config.json); required")
    p.add_argument("--top-k", type=int, default=d.top_k, help="clip labels to print (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help="segment score above which a timeline event is reported (default: %(default)s)")
    p.add_argument("--chunk-seconds", type=float, default=d.chunk_seconds,
                   help="audio scored per forward pass; bounds memory for long files (default: %(default)s)")
    p.add_argument("--out", default=d.out, help="folder for <stem>.tags.json/.timeline.csv/.timeline.png "
                                                "(default: %(default)s = print only)")
    return p


def config_from_args(args: argparse.Namespace) -> TagConfig:
    return TagConfig(model=args.model, files=tuple(args.files), top_k=args.top_k, threshold=args.threshold,
                     chunk_seconds=args.chunk_seconds, out=args.out)


def main(argv: list[str] | None = None) -> int:
    from inference.tag import run_tag

    cfg = config_from_args(build_parser().parse_args(argv))
    summary = run_tag(cfg)
    for path, reason in summary.skipped:
        print(f"[tag] {path}: skipped: {reason}", file=sys.stderr)
    for result, written in summary.tagged:
        tags = ", ".join(f"{name} {score:.2f}" for name, score in result.top(cfg.top_k))
        print(f"{result.path} ({result.duration_s:.1f} s, {len(result.segment_starts_s)} segments): {tags}")
        if written:
            print(f"  -> {written['timeline.csv']}, {written['timeline.png']}")
    return 1 if not summary.tagged else 0


if __name__ == "__main__":
    sys.exit(main())
