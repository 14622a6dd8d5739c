"""`weaksound export --onnx`: one ONNX graph, front end included, with dynamic batch and time axes,
whose onnxruntime outputs (CPU) match PyTorch's on clips of several lengths.

Tolerance: 1e-4 absolute on every output (sigmoid scores in [0, 1]; F1 activations of order 1).
Measured differences are around 1e-7 (float32 rounding of a different operation order)."""
from __future__ import annotations

import contextlib
import io
import json
import shlex

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from inference import export_cli, onnx_export
from trainer.config import ModelConfig, preset
from trainer.export import export_model, load_exported
from trainer.model import WeakLabelCNN

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported_onnx(tmp_path_factory):
    """A cpu-small model with non-trivial BatchNorm statistics, exported through the CLI."""
    root = tmp_path_factory.mktemp("onnx")
    cfg = preset("cpu-small")
    arch = ModelConfig(**{**cfg.model.__dict__, "num_classes": 5})
    torch.manual_seed(0)
    network = WeakLabelCNN(arch, n_mels=cfg.frontend.n_mels)
    for m in network.modules():  # as after training: BN statistics away from (0, 1)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    vocab = [{"index": i, "id": f"/m/{i}", "name": f"class {i}"} for i in range(5)]
    model_dir = export_model(str(root / "model"), network.eval(), frontend=cfg.frontend, architecture=arch,
                             vocabulary=vocab)
    path = root / "model.onnx"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = export_cli.main(["--model", model_dir, "--onnx", str(path), "--check-seconds", "0.3,2.0"])
    return {"model": model_dir, "onnx": str(path), "code": code, "stdout": out.getvalue()}


def test_the_export_command_writes_the_graph_and_reports_its_check(exported_onnx):
    assert exported_onnx["code"] == 0
    assert "max |diff|" in exported_onnx["stdout"] and "segments" in exported_onnx["stdout"]
    onnx.checker.check_model(onnx.load(exported_onnx["onnx"]))


@pytest.mark.parametrize("seconds", [0.3, 2.0, 9.7])  # shorter than one segment (1.02 s), a few, many
def test_onnxruntime_matches_the_pytorch_front_end_and_network_on_padded_batches(exported_onnx, seconds):
    exported = load_exported(exported_onnx["model"])
    session = onnxruntime.InferenceSession(exported_onnx["onnx"], providers=["CPUExecutionProvider"])
    n = int(seconds * 16000)
    lengths = np.array([n, 2 * n // 3, n // 2], dtype=np.int64)
    rng = np.random.default_rng(int(seconds * 10))
    wave = (0.2 * rng.standard_normal((3, n))).astype(np.float32)
    wave[np.arange(n)[None, :] >= lengths[:, None]] = 0.0
    clip, segments, f1, num_segments = session.run(None, {"waveform": wave, "lengths": lengths})
    with torch.inference_mode():  # the path inference/tag.py and inference/embed.py take
        feats, frames = exported.log_mel()(torch.from_numpy(wave), torch.from_numpy(lengths))
        want = exported.model(feats, frames)
    assert segments.shape == tuple(want.segments.shape) and f1.shape == tuple(want.f1.shape)
    np.testing.assert_array_equal(num_segments, want.num_segments.numpy())
    np.testing.assert_allclose(clip, want.clip.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(segments, want.segments.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(f1, want.f1.numpy(), atol=ATOL, rtol=0)


def test_batch_and_time_axes_are_dynamic_and_the_model_config_travels_in_the_metadata(exported_onnx):
    graph = onnx.load(exported_onnx["onnx"])
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert set(dims) == {"waveform", "lengths"}
    assert all(isinstance(d, str) for d in dims["waveform"]), dims  # symbolic, not fixed numbers
    assert dims["lengths"][0] == dims["waveform"][0]
    outputs = [o.name for o in graph.graph.output]
    assert outputs == ["clip", "segments", "f1", "num_segments"]
    meta = {p.key: p.value for p in graph.metadata_props}
    config = json.loads(meta[onnx_export.METADATA_KEY])
    assert [v["id"] for v in config["vocabulary"]] == [f"/m/{i}" for i in range(5)]
    assert config["frontend"]["sample_rate"] == 16000


def test_the_comparison_reports_every_output_within_tolerance(exported_onnx):
    diffs = onnx_export.compare_with_torch(load_exported(exported_onnx["model"]), exported_onnx["onnx"],
                                           clip_seconds=(1.5,), batch=2)
    assert set(diffs) == set(onnx_export.OUTPUTS)
    assert max(diffs.values()) < ATOL


@pytest.mark.parametrize("cfg", [
    onnx_export.ExportConfig("runs/r/model", "model.onnx"),
    onnx_export.ExportConfig("s3://b/model", "s3://b/m x.onnx", opset=17, check=False, check_seconds=(1.0, 2.5)),
])
def test_an_export_config_renders_the_command_that_parses_back_to_it(cfg):
    argv = shlex.split(cfg.command())
    assert argv[:2] == ["weaksound", "export"]
    assert export_cli.config_from_args(export_cli.build_parser().parse_args(argv[2:])) == cfg


def test_every_export_option_states_its_default():
    for action in export_cli.build_parser()._actions:
        if action.option_strings and action.dest not in ("help", "model", "onnx"):
            assert "default" in (action.help or ""), action.dest
