"""ONNX export of an exported model, log-mel front end included: waveforms in, scores out.

The graph (:class:`WaveformScorer`) takes

- ``waveform``: float32 ``(batch, samples)`` mono audio at the model's sample rate, zero-padded
  beyond each clip's length (any length; shorter than one segment is padded to one inside);
- ``lengths``: int64 ``(batch,)`` valid samples of each clip,

and returns ``clip (batch, C)``, ``segments (batch, K, C)``, ``f1 (batch, K, F1)`` and
``num_segments (batch,)`` exactly as ``WeakLabelCNN`` does after ``LogMel`` (see trainer/model.py);
batch and time axes are dynamic. It is traced with ``torch.onnx.export(dynamo=True)``; STFT, mel
filterbank and the per-clip dB floor are in the graph, so no Python front end is needed at
inference. The model's ``config.json`` (vocabulary, front end, segment geometry) is stored in the
ONNX metadata under ``weaksound_config``.

:func:`compare_with_torch` runs onnxruntime (CPU) and PyTorch on the same clips and returns the
largest absolute difference of each output.
"""
from __future__ import annotations

import json
import shlex
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from runtime import storage
from trainer.export import ExportedModel, load_exported

__all__ = ["WaveformScorer", "export_onnx", "compare_with_torch", "ExportConfig", "ExportSummary", "run_export",
           "INPUTS", "OUTPUTS", "METADATA_KEY"]

INPUTS = ("waveform", "lengths")
OUTPUTS = ("clip", "segments", "f1", "num_segments")
METADATA_KEY = "weaksound_config"
DEFAULT_OPSET = 18


class WaveformScorer(nn.Module):
    """``(waveform (B, N), lengths (B,))`` -> ``(clip, segments, f1, num_segments)``: LogMel + network."""

    def __init__(self, exported: ExportedModel):
        super().__init__()
        self.log_mel = exported.log_mel()
        self.network = exported.model
        # samples whose centred frames fill one segment: shorter input is zero-padded up to it
        self.min_samples = exported.architecture.segment_frames * exported.frontend.hop_length

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor):
        # sym_max keeps the time axis symbolic: no branch on the length is baked into the graph.
        # Padding beyond `lengths` changes nothing (LogMel masks it, the network ignores it).
        missing = torch.sym_max(self.min_samples - waveform.shape[1], 0)
        waveform = nn.functional.pad(waveform, (0, missing))
        features, frames = self.log_mel(waveform, lengths)
        out = self.network(features, frames)
        return out.clip, out.segments, out.f1, out.num_segments


def export_onnx(exported: ExportedModel, url: str, *, opset: int = DEFAULT_OPSET) -> int:
    """Write the ONNX graph of ``exported`` (front end included) to ``url``; returns its size in bytes."""
    import onnx

    scorer = WaveformScorer(exported).cpu().eval()
    rate = exported.frontend.sample_rate
    example = (torch.zeros(2, 3 * rate), torch.tensor([3 * rate, 2 * rate], dtype=torch.long))
    batch = torch.export.Dim("batch", min=1)
    samples = torch.export.Dim("samples", min=1)
    with warnings.catch_warnings():  # the exporter notes that both inputs share the batch axis: intended
        warnings.filterwarnings("ignore", message=".*axis name: batch will not be used", category=UserWarning)
        program = torch.onnx.export(scorer, example, dynamo=True, external_data=False, opset_version=opset,
                                    input_names=list(INPUTS), output_names=list(OUTPUTS), verbose=False,
                                    dynamic_shapes={"waveform": {0: batch, 1: samples}, "lengths": {0: batch}})
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(exported.config)})
    data = proto.SerializeToString()
    storage.write_bytes_atomic(url, data)
    return len(data)


def _session(onnx_bytes: bytes):
    import onnxruntime

    return onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


def compare_with_torch(exported: ExportedModel, onnx_url: str, clip_seconds=(0.4, 3.0, 11.5), batch: int = 3,
                       seed: int = 0) -> dict[str, float]:
    """Largest absolute difference between onnxruntime and PyTorch, per output, over clips of each
    length in ``clip_seconds`` (a batch of ``batch`` clips whose valid lengths fall from 100 % to 50 %)."""
    session = _session(storage.read_bytes(onnx_url))
    scorer = WaveformScorer(exported).cpu().eval()
    rate = exported.frontend.sample_rate
    rng = np.random.default_rng(seed)
    worst = dict.fromkeys(OUTPUTS, 0.0)
    for seconds in clip_seconds:
        n = max(1, int(seconds * rate))
        lengths = np.linspace(n, max(1, n // 2), batch).astype(np.int64)
        wave = (0.1 * rng.standard_normal((batch, n))).astype(np.float32)
        wave[np.arange(n)[None, :] >= lengths[:, None]] = 0.0
        got = session.run(list(OUTPUTS), {"waveform": wave, "lengths": lengths})
        with torch.inference_mode():
            want = scorer(torch.from_numpy(wave), torch.from_numpy(lengths))
        for name, a, b in zip(OUTPUTS, got, want):
            b = b.numpy()
            if a.shape != b.shape:
                raise AssertionError(f"{name}: onnxruntime gives {a.shape}, PyTorch {b.shape} for {seconds} s clips")
            worst[name] = max(worst[name], float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0)
    return worst


# ----------------------------------------------------------------------------------------------
# `weaksound export --onnx FILE`
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportConfig:
    """One `weaksound export` run.

    Attributes:
        model: exported model folder/URL (model.safetensors + config.json).
        onnx: where to write the .onnx file (local path or s3:// URL).
        opset: ONNX opset of the graph.
        check: after writing, run onnxruntime against PyTorch and report the differences.
        check_seconds: clip lengths of that check.
    """

    model: str
    onnx: str
    opset: int = DEFAULT_OPSET
    check: bool = True
    check_seconds: tuple[float, ...] = (0.4, 3.0, 11.5)

    def __post_init__(self):
        object.__setattr__(self, "check_seconds", tuple(float(s) for s in self.check_seconds))
        if not self.check_seconds or any(not s > 0 for s in self.check_seconds):
            raise ValueError(f"check_seconds must be positive, got {self.check_seconds}")

    def argv(self) -> list[str]:
        from data_prep.job import changed_options

        d = ExportConfig(self.model, self.onnx)
        return ["export", "--model", self.model, "--onnx", self.onnx, *changed_options([
            ("--opset", self.opset, d.opset),
            ("--check-seconds", ",".join(map(str, self.check_seconds)), ",".join(map(str, d.check_seconds))),
        ])] + ([] if self.check else ["--no-check"])

    def command(self) -> str:
        return shlex.join(["weaksound", *self.argv()])


@dataclass
class ExportSummary:
    onnx: str
    bytes: int
    seconds: float
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per output; empty without the check

    def line(self) -> str:
        text = f"wrote {self.onnx} ({self.bytes / 1e6:.1f} MB) in {self.seconds:.1f} s"
        if self.max_abs_diff:
            text += "; onnxruntime vs PyTorch, max |diff|: " + ", ".join(
                f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        return text


def run_export(cfg: ExportConfig) -> ExportSummary:
    started = time.perf_counter()
    exported = load_exported(cfg.model)
    size = export_onnx(exported, cfg.onnx, opset=cfg.opset)
    seconds = time.perf_counter() - started
    diff = compare_with_torch(exported, cfg.onnx, cfg.check_seconds) if cfg.check else {}
    return ExportSummary(onnx=cfg.onnx, bytes=size, seconds=seconds, max_abs_diff=diff)
