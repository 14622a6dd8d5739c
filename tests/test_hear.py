"""HEAR 2021 API (inference/hear.py): the contract's attributes, shapes, dtypes and timestamps on an
exported model, and the official `hear-validator` on it (slow: it imports TensorFlow)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference import hear
from trainer.config import ModelConfig, preset
from trainer.export import export_model

# cpu-small: 16 kHz, hop 256, 5 blocks -> segments of 64 frames, 32 frames (512 ms) apart,
# the first centred on frame 31.5 (504 ms).
HOP_MS, FIRST_CENTRE_MS = 32 * 256 / 16, 31.5 * 256 / 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    cfg = preset("cpu-small")
    arch = ModelConfig(**{**cfg.model.__dict__, "num_classes": 4})
    torch.manual_seed(0)
    from trainer.model import WeakLabelCNN

    network = WeakLabelCNN(arch, n_mels=cfg.frontend.n_mels).eval()
    vocab = [{"index": i, "id": f"c{i}", "name": f"class {i}"} for i in range(4)]
    return export_model(str(tmp_path_factory.mktemp("hear") / "model"), network, frontend=cfg.frontend,
                        architecture=arch, vocabulary=vocab)


def _noise(n_sounds: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_sounds, int(seconds * 16000), generator=g) * 2 - 1


def test_load_model_gives_a_torch_module_with_the_hear_attributes(model_dir):
    model = hear.load_model(model_dir)
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert model.timestamp_embedding_size == 128                # F1 width of cpu-small
    assert model.scene_embedding_size == 256                    # F1 max + F1 avg
    assert hear.load_model(model_dir, scene_mapping="max").scene_embedding_size == 128


def test_load_model_without_a_model_folder_is_a_clear_error():
    with pytest.raises(ValueError, match="exported model folder"):
        hear.load_model("")


def test_timestamp_embeddings_are_f1_per_segment_stamped_at_segment_centres_in_ms(model_dir):
    model = hear.load_model(model_dir)
    audio = _noise(3, 4.0)
    emb, stamps = hear.get_timestamp_embeddings(audio, model)
    frames = 1 + audio.shape[1] // 256
    k = frames // 32 - 1
    assert emb.shape == (3, k, 128) and emb.dtype == torch.float32
    assert stamps.shape == (3, k) and stamps.dtype == torch.float32
    expected = torch.tensor([FIRST_CENTRE_MS + HOP_MS * i for i in range(k)])
    for row in stamps:
        torch.testing.assert_close(row, expected)
    assert float(stamps[0, -1]) < 4000.0  # every centre lies inside the sound


def test_scene_embeddings_are_the_max_and_mean_of_the_timestamp_embeddings(model_dir):
    model = hear.load_model(model_dir)
    audio = _noise(2, 3.74, seed=1)
    emb, _ = hear.get_timestamp_embeddings(audio, model)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (2, model.scene_embedding_size) and scene.dtype == torch.float32
    torch.testing.assert_close(scene, torch.cat([emb.amax(dim=1), emb.mean(dim=1)], dim=1))


def test_a_sound_embeds_the_same_alone_and_inside_a_batch_scored_in_groups(model_dir):
    model = hear.load_model(model_dir)
    audio = _noise(5, 2.0, seed=2)
    model.batch_seconds = 4.0  # two 2 s sounds per forward pass: three passes
    batched, _ = hear.get_timestamp_embeddings(audio, model)
    alone, _ = hear.get_timestamp_embeddings(audio[3:4], model)
    torch.testing.assert_close(batched[3:4], alone, atol=1e-5, rtol=1e-4)


def test_a_sound_shorter_than_one_segment_has_one_timestamp(model_dir):
    model = hear.load_model(model_dir)
    emb, stamps = hear.get_timestamp_embeddings(_noise(2, 0.3), model)
    assert emb.shape == (2, 1, 128) and stamps.shape == (2, 1)
    assert hear.get_scene_embeddings(_noise(2, 0.3), model).shape == (2, 256)


def test_audio_that_is_not_a_2d_batch_is_rejected(model_dir):
    model = hear.load_model(model_dir)
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(16000), model)


@pytest.mark.slow
def test_the_official_hear_validator_accepts_the_module(model_dir):
    pytest.importorskip("hearvalidator", reason="hearvalidator (and TensorFlow) not installed")
    validator = shutil.which("hear-validator", path=str(Path(sys.executable).parent)) or shutil.which("hear-validator")
    assert validator, "hearvalidator is installed but its hear-validator script is not on PATH"
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([validator, "inference.hear", "-m", model_dir, "-d", "cpu"], cwd=repo,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Looks good!" in done.stdout
