"""`weaksound embed --model M --data D --out E`: the command line of ``inference.embed.run_embed``.

Extracts the F1/F2 embeddings of every clip of a prepared dataset with Ray actors: one per CPU
core (or per GPU), each loading the exported model once, one call per shard. A re-run skips the
shards already embedded with the same model and shard data, so an interrupted extraction resumes;
an existing .npz made with another model or from other data is refused (default) or recomputed
(--on-mismatch redo). Every shard is checked against the manifest (size, sample count, sha256):
a truncated or altered one fails the run naming it.

Output (local folder or s3://): <OUT>/shards/<shard>.npz per input shard (numpy arrays, no
pickle, with the model and shard fingerprints) and <OUT>/embeddings.json, written last (model,
fingerprints, data, vocabularies, files, totals).
"""
from __future__ import annotations

import argparse
import sys

from inference.config import EmbedConfig


def build_parser() -> argparse.ArgumentParser:
    d = EmbedConfig(model="", data="", out="")
    p = argparse.ArgumentParser(prog="weaksound embed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="exported model folder/URL (model.safetensors + config.json); required")
    p.add_argument("--data", required=True, help="prepared dataset URL (with manifest.json); required")
    p.add_argument("--out", required=True, help="output URL for the embeddings (local folder or s3://); required")
    p.add_argument("--split", default=d.split, help="manifest split to embed, or 'all' (default: %(default)s)")
    p.add_argument("--batch-seconds", type=float, default=d.batch_seconds,
                   help="padded audio seconds per forward pass; bounds memory (default: %(default)s)")
    p.add_argument("--actors", type=int, default=d.actors,
                   help="model actors; 0 = one per GPU, else one per CPU core (default: %(default)s)")
    p.add_argument("--executor", choices=("ray", "local"), default=d.executor,
                   help="ray: actors over the cluster; local: this process (default: %(default)s)")
    p.add_argument("--address", default=d.address,
                   help="Ray cluster address (default: %(default)s = $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--metrics-port", type=int, default=d.metrics_port,
                   help="serve this process's Prometheus metrics on 127.0.0.1:PORT; 0 = the model actors export "
                        "them through Ray's metrics exporter instead (default: %(default)s)")
    p.add_argument("--metrics-linger", type=float, default=d.metrics_linger_s, metavar="SECONDS",
                   help="with --metrics-port: keep serving this long after the job, so that Prometheus scrapes "
                        "the final values (default: %(default)s)")
    p.add_argument("--on-mismatch", choices=("refuse", "redo"), default=d.on_mismatch,
                   help="an existing .npz in --out made with another model or from other shard data: refuse = "
                        "fail before embedding anything, naming it; redo = recompute and replace it "
                        "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")
    return p


def config_from_args(args: argparse.Namespace) -> EmbedConfig:
    return EmbedConfig(model=args.model, data=args.data, out=args.out, split=args.split,
                       batch_seconds=args.batch_seconds, actors=args.actors, executor=args.executor,
                       address=args.address, progress=not args.no_progress, metrics_port=args.metrics_port,
                       metrics_linger_s=args.metrics_linger, on_mismatch=args.on_mismatch)


def main(argv: list[str] | None = None) -> int:
    from inference.embed import run_embed

    cfg = config_from_args(build_parser().parse_args(argv))
    summary = run_embed(cfg)
    print(f"[embed] {summary.line()} -> {cfg.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
