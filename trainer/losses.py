"""Per-clip training losses on the network's outputs, always computed in float32.

Each function returns one loss per clip, ``(B,)``: the engine sums them and scales by the
number of clips of the step on all ranks, so a step's gradient is the mean over every clip
whatever each rank's batch size. ``targets`` is ``(B, C)`` multi-hot (one-hot for single-label
tasks).

- ``weak``: BCE between the pooled clip probabilities and the clip labels, averaged over
  classes -- how N_S is trained from weak labels (arXiv 1711.01369, section 2).
- ``slat``: the strong-label assumption (N_S^slat, the paper's comparison): every valid
  segment gets the clip's labels and BCE is taken on the segment outputs, averaged over
  classes and the clip's valid segments.
- ``ce``: softmax cross-entropy of the pooled segment logits (single-label adaptation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.model import WeakLabelOutput, pool_segments

__all__ = ["LOSSES", "EPS", "per_clip_loss", "weak_label_loss", "segment_label_loss", "pooled_softmax_loss"]

EPS = 1e-7  # probabilities are clamped to [EPS, 1 - EPS] before the log (BCE on probabilities)


def weak_label_loss(out: WeakLabelOutput, targets: torch.Tensor, pooling: str = "avg") -> torch.Tensor:
    p = out.clip.float().clamp(EPS, 1 - EPS)
    return F.binary_cross_entropy(p, targets.float(), reduction="none").mean(dim=1)


def segment_label_loss(out: WeakLabelOutput, targets: torch.Tensor, pooling: str = "avg") -> torch.Tensor:
    p = out.segments.float().clamp(EPS, 1 - EPS)  # (B, K, C)
    y = targets.float()[:, None, :].expand_as(p)
    per_segment = F.binary_cross_entropy(p, y, reduction="none").mean(dim=2)  # (B, K)
    k = torch.arange(p.shape[1], device=p.device)
    valid = (k[None, :] < out.num_segments[:, None]).to(per_segment.dtype)
    return (per_segment * valid).sum(dim=1) / valid.sum(dim=1)


def pooled_softmax_loss(out: WeakLabelOutput, targets: torch.Tensor, pooling: str = "avg") -> torch.Tensor:
    pooled = pool_segments(out.logits.float(), out.num_segments, pooling)  # (B, C)
    return F.cross_entropy(pooled, targets.argmax(dim=1), reduction="none")


LOSSES = {"weak": weak_label_loss, "slat": segment_label_loss, "ce": pooled_softmax_loss}


def per_clip_loss(name: str, out: WeakLabelOutput, targets: torch.Tensor, pooling: str = "avg") -> torch.Tensor:
    """The loss ``name`` (one of :data:`LOSSES`) of every clip, ``(B,)`` float32."""
    try:
        fn = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}") from None
    return fn(out, targets, pooling)
