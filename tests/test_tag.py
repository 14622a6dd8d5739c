"""`weaksound tag`: chunked scoring covers every segment of a long file exactly once and matches
unchunked scoring away from chunk edges; outputs are written; unreadable files are skipped by name."""
from __future__ import annotations

import csv
import json

import numpy as np
import soundfile as sf
import torch

from trainer.config import preset
from trainer.export import export_model, load_exported
from trainer.model import WeakLabelCNN
from inference import tag, tag_cli
from inference.config import TagConfig


def _model(tmp_path):
    cfg = preset("cpu-small")
    arch = cfg.model.__class__(**{**cfg.model.__dict__, "num_classes": 3})
    torch.manual_seed(0)
    model = WeakLabelCNN(arch, n_mels=cfg.frontend.n_mels).eval()
    vocab = [{"index": i, "id": f"c{i}", "name": n} for i, n in enumerate(["Tone", "Noise", "Click"])]
    return export_model(str(tmp_path / "model"), model, frontend=cfg.frontend, architecture=arch, vocabulary=vocab)


def test_chunked_scoring_has_one_row_per_segment_of_the_whole_file(tmp_path):
    exported = load_exported(_model(tmp_path))
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000 * 95)).astype(np.float32)  # 95 s
    whole = tag.tag_waveform(exported, wave, chunk_seconds=1000.0)
    chunked = tag.tag_waveform(exported, wave, chunk_seconds=20.0)
    assert chunked.segment_scores.shape == whole.segment_scores.shape
    # segments well inside a chunk see the same input; the per-chunk dB floor only matters at edges
    np.testing.assert_allclose(chunked.segment_scores[5:30], whole.segment_scores[5:30], atol=0.02)
    assert np.all(np.diff(chunked.segment_starts_s) > 0)


def test_a_sub_second_clip_is_tagged_and_outputs_are_written(tmp_path):
    model_url = _model(tmp_path)
    short = tmp_path / "short.wav"
    sf.write(short, (0.3 * np.sin(np.arange(8000) / 5)).astype(np.float32), 22050)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    out = tmp_path / "tags"
    assert tag_cli.main(["--model", model_url, "--out", str(out), "--threshold", "0.0", str(short), str(broken)]) == 0
    top = json.loads((out / "short.tags.json").read_text())["top"]
    assert len(top) == 3 and all(0.0 <= t["score"] <= 1.0 for t in top)
    rows = list(csv.DictReader((out / "short.timeline.csv").open()))
    assert {r["label"] for r in rows} == {"Tone", "Noise", "Click"}  # threshold 0: every class fires
    assert (out / "short.timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "broken.tags.json").exists()


def test_the_tag_command_line_stands_for_exactly_its_config():
    import shlex

    for cfg in (TagConfig("model dir", ("a.wav",)),
                TagConfig("m", ("-odd.wav", "s3://b/c d.flac"), top_k=2, threshold=0.25, chunk_seconds=7.5,
                          out="tags")):
        argv = shlex.split(cfg.command())
        assert argv[:2] == ["weaksound", "tag"]
        assert tag_cli.config_from_args(tag_cli.build_parser().parse_args(argv[2:])) == cfg
    for action in tag_cli.build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in action.help or "required" in action.help, action.dest


def test_run_tag_reports_unreadable_files_by_name_and_tags_the_rest(tmp_path):
    model_url = _model(tmp_path)
    good = tmp_path / "good.wav"
    sf.write(good, (0.3 * np.sin(np.arange(32000) / 7)).astype(np.float32), 16000)
    summary = tag.run_tag(TagConfig(model_url, (str(good), str(tmp_path / "missing.wav")), top_k=2))
    assert [r.path for r, written in summary.tagged] == [str(good)]
    assert summary.tagged[0][1] == {}  # no --out: nothing written
    assert [p for p, _ in summary.skipped] == [str(tmp_path / "missing.wav")]
