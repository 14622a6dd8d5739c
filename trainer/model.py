"""The weak-label CNN N_S of Kumar et al. (ICASSP 2018, arXiv 1711.01369), section 2.

Fully convolutional over a time-major log-mel ``(B, 1, T, n_mels)``:

- blocks B1..B6: 3x3 convs (padding 1) + BatchNorm + ReLU, then a 2x2 max-pool;
- F1: a 2x2 conv without padding (+ BN + ReLU) -> one 1024-d vector per segment;
- F2: a 1x1 conv with one filter per class and a sigmoid -> segment-level class scores
  (``ModelConfig.f2_hidden > 0`` puts a 1x1 conv + ReLU of that width before it: N_T^II);
- global average or max pooling over the *valid* segments gives the clip-level score that the
  weak (clip) labels train.

For the paper's 6 blocks each segment is 128 frames on the output grid with a 64-frame hop, so
``K = floor(T / 64) - 1`` segments for ``T >= 128`` frames (896 -> 13, 431 -> 5, 862 -> 12).

Padding never changes a prediction: given each clip's valid frame count, activations beyond the
clip are zeroed after every conv layer (exactly what the conv's own zero padding shows a clip
scored alone), and pooling ignores segments past the clip's end. In eval mode a clip scored
alone and inside a padded batch therefore give the same outputs (up to float rounding).

The sigmoid and the pooling always run in float32, also under bf16 autocast: in bf16 a
probability of ~0.998 or more rounds to exactly 1.0, the loss's clamp then passes no gradient
and confident wrong negatives would stop learning.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from trainer.config import FrontEndConfig, ModelConfig

__all__ = ["WeakLabelCNN", "WeakLabelOutput", "output_layer", "pool_segments", "num_segments", "segment_geometry"]


class WeakLabelOutput(NamedTuple):
    clip: torch.Tensor  # (B, C) clip-level probabilities (pooled F2)
    segments: torch.Tensor  # (B, K, C) segment-level probabilities (F2, sigmoid)
    f1: torch.Tensor  # (B, K, F1) F1 activations, the embedding layer
    num_segments: torch.Tensor  # (B,) valid segments per clip (segments beyond are padding)
    logits: torch.Tensor  # (B, K, C) F2 before the sigmoid, float32


def num_segments(num_frames, num_blocks: int = 6):
    """Valid segments for ``num_frames`` input frames: ``floor(T / 2**num_blocks) - 1``, at least 1.

    Inputs shorter than one segment are padded to one segment, hence the minimum of 1.
    """
    if isinstance(num_frames, torch.Tensor):
        return torch.clamp(num_frames // 2**num_blocks - 1, min=1)
    return max(num_frames // 2**num_blocks - 1, 1)


def segment_geometry(frontend: FrontEndConfig, model: ModelConfig) -> tuple[float, float]:
    """``(segment_seconds, hop_seconds)`` of one F1/F2 output on the output grid.

    A segment of S frames spans ``(S - 1) * hop + n_fft`` samples (paper: 1.498 s); neighbouring
    segments are ``S/2 * hop`` samples apart (paper: 0.743 s).
    """
    seg = ((model.segment_frames - 1) * frontend.hop_length + frontend.n_fft) / frontend.sample_rate
    hop = model.segment_hop_frames * frontend.hop_length / frontend.sample_rate
    return seg, hop


def pool_segments(values: torch.Tensor, num_segments: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Average or max over the first ``num_segments[b]`` segments of ``values (B, K, D)`` -> ``(B, D)``."""
    if num_segments is None:
        return values.mean(dim=1) if mode == "avg" else values.amax(dim=1)
    k = torch.arange(values.shape[1], device=values.device)
    valid = (k[None, :] < num_segments[:, None])[:, :, None]  # (B, K, 1)
    if mode == "avg":
        total = values.masked_fill(~valid, 0.0).sum(dim=1)
        return total / num_segments[:, None].to(values.dtype)
    if mode == "max":
        return values.masked_fill(~valid, float("-inf")).amax(dim=1)
    raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")


class _ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, padding: int):
        super().__init__(nn.Conv2d(c_in, c_out, kernel_size, stride=1, padding=padding),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _Block(nn.Module):
    """``n`` 3x3 conv+BN+ReLU layers followed by a 2x2 max-pool (stride 2, floor)."""

    def __init__(self, c_in: int, c_out: int, n: int):
        super().__init__()
        self.convs = nn.ModuleList(_ConvBNReLU(c_in if i == 0 else c_out, c_out, 3, 1) for i in range(n))
        self.pool = nn.MaxPool2d(2)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for conv in self.convs:
            h = conv(h)
            if mask is not None:
                h = h * mask  # what the next conv's zero padding shows a clip scored alone
        return self.pool(h)


def output_layer(f1_channels: int, num_classes: int, hidden: int = 0) -> nn.Module:
    """F2: a 1x1 conv with one filter per class; with ``hidden > 0`` a 1x1 conv + ReLU of that
    width comes first (an ``nn.Sequential``). Parameters are drawn from torch's global RNG in
    construction order."""
    if hidden > 0:
        return nn.Sequential(nn.Conv2d(f1_channels, hidden, kernel_size=1), nn.ReLU(),
                             nn.Conv2d(hidden, num_classes, kernel_size=1))
    return nn.Conv2d(f1_channels, num_classes, kernel_size=1)


class WeakLabelCNN(nn.Module):
    """N_S: conv blocks -> F1 (2x2) -> F2 (1x1, sigmoid) -> masked global pooling.

    Args:
        cfg: architecture (channels per block, convs per block, F1 width, classes, pooling).
        n_mels: mel bands of the input; the poolings must leave exactly 2 rows for F1.

    Example:
        >>> m = WeakLabelCNN(ModelConfig(num_classes=527), n_mels=128).eval()
        >>> out = m(torch.zeros(1, 1, 896, 128))
        >>> out.segments.shape, out.f1.shape
        (torch.Size([1, 13, 527]), torch.Size([1, 13, 1024]))
    """

    def __init__(self, cfg: ModelConfig, n_mels: int):
        super().__init__()
        if n_mels // 2**cfg.num_blocks != 2:
            raise ValueError(f"n_mels={n_mels} must leave exactly 2 rows after {cfg.num_blocks} "
                             f"poolings (F1 is 2x2 without padding)")
        self.cfg = cfg
        self.n_mels = n_mels
        c_in, blocks = 1, []
        for c_out, n in zip(cfg.channels, cfg.convs_per_block):
            blocks.append(_Block(c_in, c_out, n))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.f1 = _ConvBNReLU(c_in, cfg.f1_channels, kernel_size=2, padding=0)
        self.f2 = output_layer(cfg.f1_channels, cfg.num_classes, cfg.f2_hidden)

    def forward(self, x: torch.Tensor, num_frames: torch.Tensor | None = None) -> WeakLabelOutput:
        """Args:
            x: ``(B, 1, T, n_mels)`` log-mel, zero beyond each clip's valid frames.
            num_frames: ``(B,)`` valid frames per clip; ``None`` = every clip fills all ``T``.
        """
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[3] != self.n_mels:
            raise ValueError(f"expected input (B, 1, T, {self.n_mels}), got {tuple(x.shape)}")
        seg = self.cfg.segment_frames
        if x.shape[2] < seg:  # shorter than one segment: zero-pad (dB domain), as the released code
            x = nn.functional.pad(x, (0, 0, 0, seg - x.shape[2]))
        lengths = None
        if num_frames is not None:
            lengths = torch.clamp(num_frames.to(device=x.device, dtype=torch.long), min=seg)
        h = x
        for block in self.blocks:
            mask = None
            if lengths is not None:
                t = torch.arange(h.shape[2], device=h.device)
                mask = (t[None, :] < lengths[:, None]).to(h.dtype)[:, None, :, None]  # (B, 1, T_l, 1)
                h = h * mask
            h = block(h, mask)
            if lengths is not None:
                lengths = lengths // 2  # floor, as MaxPool2d(2)
        f1 = self.f1(h)  # (B, F1, K, 1)
        logits = self.f2(f1).float().squeeze(3).transpose(1, 2)  # (B, K, C), float32 under autocast too
        seg_scores = torch.sigmoid(logits)
        f1 = f1.squeeze(3).transpose(1, 2)  # (B, K, F1)
        K = seg_scores.shape[1]
        if lengths is None:
            n_seg = torch.full((x.shape[0],), K, dtype=torch.long, device=x.device)
        else:
            n_seg = torch.clamp(lengths - 1, min=1, max=K)
        clip = pool_segments(seg_scores, n_seg, self.cfg.pooling)  # (B, C)
        return WeakLabelOutput(clip=clip, segments=seg_scores, f1=f1, num_segments=n_seg, logits=logits)
