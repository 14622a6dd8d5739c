"""HEAR 2021 API over an exported weak-label CNN: ``load_model``, ``get_scene_embeddings``,
``get_timestamp_embeddings`` (https://hearbenchmark.com, "common API").

Validate with the HEAR validator::

    hear-validator inference.hear -m runs/demo/model -d cpu

- ``load_model(model_file_path)``: ``model_file_path`` is an exported model folder/URL
  (``model.safetensors`` + ``config.json``, see trainer/export.py). Returns a :class:`HearModel`
  (a ``torch.nn.Module``) with ``sample_rate`` (the model's front-end rate),
  ``timestamp_embedding_size`` (F1 width) and ``scene_embedding_size``.
- Timestamp embeddings are the F1 activations of every segment (the embedding layer of
  arXiv 1711.01369), stamped at the segment's centre in milliseconds: one every
  ``segment_hop_frames * hop_length / sample_rate`` (743 ms at the paper's settings).
- Scene embeddings map the segment F1s to one vector, by default ``max+avg``: [max over segments,
  mean over segments] concatenated, the paper's best recording-level mapping for transfer
  (``"max"`` or ``"avg"`` alone on request).

Audio is a float32 ``(n_sounds, n_samples)`` batch of mono waveforms at ``model.sample_rate``;
sounds shorter than one segment are scored as one (zero-padded) segment.
"""
from __future__ import annotations

import torch
from torch import nn

from inference.detect import SegmentGrid
from trainer.export import ExportedModel, load_exported
from trainer.frontend import frames_from_samples
from trainer.model import num_segments as segments_of_frames
from trainer.model import pool_segments

__all__ = ["HearModel", "load_model", "get_timestamp_embeddings", "get_scene_embeddings", "SCENE_MAPPINGS"]

SCENE_MAPPINGS = ("max+avg", "max", "avg")


class HearModel(nn.Module):
    """The exported network with its log-mel front end, and the attributes the HEAR API requires.

    Args:
        exported: a loaded export (``trainer.export.load_exported``).
        scene_mapping: how segment F1s become a scene vector: ``"max+avg"``, ``"max"`` or ``"avg"``.
        batch_seconds: audio seconds per forward pass (sounds are scored in groups within it), so a
            large batch of long sounds does not hold every activation at once.
    """

    def __init__(self, exported: ExportedModel, scene_mapping: str = "max+avg", batch_seconds: float = 120.0):
        super().__init__()
        if scene_mapping not in SCENE_MAPPINGS:
            raise ValueError(f"scene_mapping must be one of {SCENE_MAPPINGS}, got {scene_mapping!r}")
        self.network = exported.model
        self.log_mel = exported.log_mel()
        self.frontend, self.architecture = exported.frontend, exported.architecture
        self.vocabulary = exported.vocabulary
        self.scene_mapping = scene_mapping
        self.batch_seconds = float(batch_seconds)
        self.sample_rate = int(exported.frontend.sample_rate)
        self.timestamp_embedding_size = int(exported.architecture.f1_channels)
        self.scene_embedding_size = self.timestamp_embedding_size * len(scene_mapping.split("+"))
        self.eval()

    def forward(self, audio: torch.Tensor):
        """``(n_sounds, n_samples)`` waveforms -> the network's ``WeakLabelOutput`` (all sounds full length)."""
        features, frames = self.log_mel(audio)
        return self.network(features, frames)

    def segment_f1(self, audio: torch.Tensor) -> torch.Tensor:
        """``(n_sounds, K, F1)`` F1 activations, scored in groups of at most ``batch_seconds`` of audio."""
        if not isinstance(audio, torch.Tensor) or audio.dim() != 2:
            raise ValueError(f"audio must be a (n_sounds, n_samples) torch tensor, got "
                             f"{getattr(audio, 'shape', type(audio))}")
        if audio.shape[1] == 0:
            raise ValueError("audio has no samples")
        device = next(self.network.parameters()).device
        per_pass = max(1, int(self.batch_seconds * self.sample_rate) // audio.shape[1])
        parts = []
        with torch.inference_mode():
            for start in range(0, audio.shape[0], per_pass):
                out = self(audio[start:start + per_pass].to(device=device, dtype=torch.float32))
                parts.append(out.f1.float())
        if not parts:  # no sounds: K as for any sound of this length
            k = self.num_segments(audio.shape[1])
            return torch.zeros(0, k, self.timestamp_embedding_size, device=device)
        return torch.cat(parts)

    def num_segments(self, num_samples: int) -> int:
        frames = max(frames_from_samples(num_samples, self.frontend.hop_length), self.architecture.segment_frames)
        return segments_of_frames(frames, self.architecture.num_blocks)

    def timestamps_ms(self, num_segments: int, num_samples: int) -> torch.Tensor:
        """``(K,)`` segment centres in milliseconds (float64 arithmetic, float32 result)."""
        grid = SegmentGrid.of_model(self.frontend, self.architecture, num_samples / self.sample_rate)
        return torch.from_numpy(grid.centres(num_segments) * 1000.0).float()


def load_model(model_file_path: str = "", *, scene_mapping: str = "max+avg", device: str = "cpu") -> HearModel:
    """Load an exported model folder/URL as a HEAR model (see module doc)."""
    if not model_file_path:
        raise ValueError("load_model needs an exported model folder (model.safetensors + config.json); "
                         "this module ships no default weights")
    return HearModel(load_exported(model_file_path, device=device), scene_mapping=scene_mapping)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_sounds, n_timestamps, timestamp_embedding_size)`` F1 per segment and
    ``(n_sounds, n_timestamps)`` segment centres in milliseconds, both float32."""
    f1 = model.segment_f1(audio)
    stamps = model.timestamps_ms(f1.shape[1], audio.shape[1]).to(f1.device)
    return f1, stamps.expand(f1.shape[0], -1).contiguous()


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """``(n_sounds, scene_embedding_size)`` float32: the segment F1s mapped by ``model.scene_mapping``."""
    f1 = model.segment_f1(audio)
    parts = [pool_segments(f1, None, mode) for mode in model.scene_mapping.split("+")]
    return torch.cat(parts, dim=1).float()
