"""`weaksound tag` streams a file: decoded and resampled block by block, scored chunk by chunk, never held whole."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from data_prep import audio
from inference import tag
from trainer.config import preset
from trainer.export import export_model, load_exported
from trainer.model import WeakLabelCNN


def _model(tmp_path):
    cfg = preset("cpu-small")
    torch.manual_seed(0)
    model = WeakLabelCNN(cfg.model, cfg.frontend.n_mels).eval()
    vocab = [{"index": i, "id": f"c{i}", "name": f"class {i}"} for i in range(cfg.model.num_classes)]
    export_model(str(tmp_path / "model"), model, frontend=cfg.frontend, architecture=cfg.model, vocabulary=vocab,
                 training={})
    return load_exported(str(tmp_path / "model"))


def _noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t * (1 + 0.1 * np.sin(t)))[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    return x.astype(np.float32)


@pytest.mark.parametrize("rate_in", [44100, 22050, 48000, 16000])
def test_streamed_blocks_join_into_the_whole_file_resampled_at_once(tmp_path, rate_in):
    x = _noise(7.3, rate_in, channels=2)
    path = tmp_path / "a.wav"
    sf.write(path, x, rate_in, subtype="FLOAT")
    whole = audio.resample(audio.to_mono(x), rate_in, 16000)
    with open(path, "rb") as f:
        blocks = list(audio.stream_mono(f, str(path), 16000, block_seconds=1.0))
    assert len(blocks) > 5  # really streamed
    joined = np.concatenate(blocks)
    assert joined.shape == whole.shape
    np.testing.assert_allclose(joined, whole, atol=1e-5)  # the seams match resampling the whole file


def test_tagging_a_file_streams_it_and_equals_tagging_the_decoded_waveform(tmp_path):
    exported = _model(tmp_path)
    x = _noise(95.0, 44100)
    path = tmp_path / "long.wav"
    sf.write(path, x, 44100, subtype="PCM_16")
    streamed = tag.tag_file(exported, str(path), chunk_seconds=20.0)
    decoded, rate = sf.read(path, dtype="float32")
    reference = tag.tag_waveform(exported, audio.resample(decoded, rate, 16000), chunk_seconds=20.0)
    assert streamed.segment_scores.shape == reference.segment_scores.shape
    np.testing.assert_allclose(streamed.segment_scores, reference.segment_scores, atol=1e-4)
    assert streamed.duration_s == pytest.approx(reference.duration_s)


def test_memory_for_a_long_file_is_bounded_by_the_chunk_not_the_file(tmp_path):
    exported = _model(tmp_path)
    seconds, rate = 20 * 60, 16000
    path = tmp_path / "twenty_minutes.wav"
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:  # written in pieces: the test holds no copy
        for i in range(20):
            f.write(_noise(60.0, rate, seed=i))
    whole_float32 = seconds * rate * 4  # 77 MB decoded at once
    tracemalloc.start()
    try:
        result = tag.tag_file(exported, str(path), chunk_seconds=30.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.duration_s == pytest.approx(seconds)
    assert peak < whole_float32 / 4, f"peak {peak / 2**20:.0f} MiB for a {whole_float32 / 2**20:.0f} MiB file"


def test_a_silent_or_non_finite_file_is_a_named_reject(tmp_path):
    exported = _model(tmp_path)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 3, np.float32), 16000)
    with pytest.raises(audio.AudioError, match="silent.wav"):
        tag.tag_file(exported, str(silent))
    bad = tmp_path / "nan.wav"
    x = _noise(2.0, 16000)
    x[100] = np.nan
    sf.write(bad, x, 16000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="nan.wav"):
        tag.tag_file(exported, str(bad))
