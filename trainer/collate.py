"""Batch assembly shared by every input path: pad variable-length waveforms into one tensor.

:func:`pad_waveforms` is the one pad-and-stack used by the trainer's loaders (in-process and Ray
Data), and meant for ``inference/embed.py`` and ``transfer/adapt.py`` as well. :func:`collate`
turns bucketed items (:class:`trainer.bucketing.BatchItem` carrying a decoded clip) into the
training batch dict, applying each item's crop.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from trainer.bucketing import BatchItem

__all__ = ["pad_waveforms", "collate"]


def pad_waveforms(waves: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D waveforms -> ``(B, N)`` float32 zero-padded to the longest, and ``(B,)`` int64 lengths.

    Integer PCM is not rescaled: convert to float in [-1, 1] first.
    """
    if len(waves) == 0:
        raise ValueError("pad_waveforms needs at least one waveform")
    arrays = [w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w) for w in waves]
    for a in arrays:
        if a.ndim != 1:
            raise ValueError(f"pad_waveforms expects 1-D waveforms, got shape {a.shape}")
    lengths = torch.tensor([a.size for a in arrays], dtype=torch.long)
    out = np.zeros((len(arrays), int(lengths.max())), dtype=np.float32)  # also takes read-only inputs
    for i, a in enumerate(arrays):
        out[i, :a.size] = a
    out = torch.from_numpy(out)
    return out, lengths


def collate(batch: list[BatchItem], num_classes: int, sample_rate: int) -> dict:
    """Bucketed items -> padded tensors.

    Each ``item.item`` is a dict with ``key``, ``audio`` (1-D float32), ``labels`` (class indices)
    and ``duration_s``; ``item.offset_s``/``item.duration_s`` select the crop. Returns
    ``{"waveform": (B, N) zero-padded, "lengths": (B,) samples, "targets": (B, C) multi-hot,
    "durations": (B,) seconds of the full clip, "keys": [str]}``.
    """
    waves = []
    for it in batch:
        audio = it.item["audio"]
        start = int(round(it.offset_s * sample_rate))
        n = min(int(round(it.duration_s * sample_rate)), audio.size - start)
        waves.append(audio[start:start + n])
    wave, lengths = pad_waveforms(waves)
    targets = np.zeros((len(batch), num_classes), dtype=np.float32)
    for i, it in enumerate(batch):
        targets[i, list(it.item["labels"])] = 1.0
    return {"waveform": wave, "lengths": lengths, "targets": torch.from_numpy(targets),
            "durations": torch.tensor([it.item["duration_s"] for it in batch], dtype=torch.float64),
            "keys": [it.item["key"] for it in batch]}
