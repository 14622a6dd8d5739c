"""`weaksound export --model M --onnx FILE`: the exported model as one ONNX graph, waveforms in.

The graph includes the log-mel front end (STFT, mel filterbank, per-clip dB floor): feed it
float32 mono audio at the model's sample rate, ``waveform (batch, samples)`` zero-padded beyond
each clip, with ``lengths (batch,)`` in samples; it returns ``clip``, ``segments``, ``f1`` and
``num_segments``. Batch and time axes are dynamic. The model's config.json (vocabulary, sample
rate, segment geometry) is in the ONNX metadata under ``weaksound_config``.

After writing, the graph is run with onnxruntime (CPU) against PyTorch on noise clips of
--check-seconds and the largest difference of each output is printed.
"""
from __future__ import annotations

import argparse
import sys

from inference.onnx_export import ExportConfig


def _seconds_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seconds, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive seconds, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    d = ExportConfig(model="", onnx="")
    p = argparse.ArgumentParser(prog="weaksound export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="exported model folder/URL (model.safetensors + config.json); required")
    p.add_argument("--onnx", required=True, metavar="FILE",
                   help="write the ONNX graph (front end included) to this path or s3:// URL; required")
    p.add_argument("--opset", type=int, default=d.opset, help="ONNX opset version (default: %(default)s)")
    p.add_argument("--check-seconds", type=_seconds_list, default=d.check_seconds, metavar="S,S,...",
                   help="clip lengths on which onnxruntime is compared with PyTorch after export "
                        f"(default: {','.join(map(str, d.check_seconds))})")
    p.add_argument("--no-check", action="store_true",
                   help="skip the onnxruntime-vs-PyTorch comparison (default: compare)")
    return p


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    return ExportConfig(model=args.model, onnx=args.onnx, opset=args.opset, check=not args.no_check,
                        check_seconds=args.check_seconds)


def main(argv: list[str] | None = None) -> int:
    from inference.onnx_export import run_export

    summary = run_export(config_from_args(build_parser().parse_args(argv)))
    print(f"[export] {summary.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
