"""Training-time augmentation beyond the paper (arXiv 1711.01369 trains without any): SpecAugment and
mixup for weak labels. Pure tensor functions; the caller passes a seeded ``torch.Generator``.

- :func:`spec_augment` zeroes random time and mel bands of the log-mel input (Park et al., 2019), only
  inside each clip's valid frames, so the padding of a bucketed batch stays untouched.
- :func:`mixup` mixes each waveform with another clip of the batch and mixes the label vectors with the
  same weight (Zhang et al., 2018, as PANNs uses it for AudioSet): a weak label says "present somewhere
  in the clip", so a mixture carries both clips' labels, each at its mixing weight.
"""
from __future__ import annotations

import torch

__all__ = ["spec_augment", "mixup"]


def _bands(n: int, width: int, limit: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random bands per row: widths in [0, width], starts so that each band ends by ``limit``."""
    rows = limit.shape[0]
    widths = torch.randint(0, width + 1, (rows, n), generator=generator)
    widths = torch.minimum(widths, limit[:, None])
    room = (limit[:, None] - widths + 1).clamp(min=1)
    starts = (torch.rand((rows, n), generator=generator) * room).long()
    return starts, starts + widths


def spec_augment(features: torch.Tensor, num_frames: torch.Tensor, *, time_masks: int, time_width: int,
                 freq_masks: int, freq_width: int, generator: torch.Generator) -> torch.Tensor:
    """Zero ``time_masks`` time bands (each up to ``time_width`` frames) and ``freq_masks`` mel bands
    (each up to ``freq_width`` bins) per clip.

    Args:
        features: ``(B, 1, T, n_mels)`` log-mel, time-major as trainer.frontend.LogMel returns it.
        num_frames: ``(B,)`` valid frames per clip; time masks stay inside them.
        generator: the seeded source of every random choice (CPU generator).

    Returns:
        A new tensor of the same shape (masked values are 0, the padding value of the front end).
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (B, 1, T, n_mels), got shape {tuple(features.shape)}")
    if min(time_masks, time_width, freq_masks, freq_width) < 0:
        raise ValueError("mask counts and widths must be >= 0")
    b, _, t, m = features.shape
    keep = torch.ones((b, t, m), dtype=torch.bool)
    frame = torch.arange(t)
    mel = torch.arange(m)
    if time_masks and time_width:
        lo, hi = _bands(time_masks, time_width, num_frames.cpu().clamp(max=t), generator)  # (B, n)
        inside = (frame[None, None, :] >= lo[:, :, None]) & (frame[None, None, :] < hi[:, :, None])  # (B, n, T)
        keep &= ~inside.any(dim=1)[:, :, None]
    if freq_masks and freq_width:
        lo, hi = _bands(freq_masks, freq_width, torch.full((b,), m), generator)
        inside = (mel[None, None, :] >= lo[:, :, None]) & (mel[None, None, :] < hi[:, :, None])  # (B, n, M)
        keep &= ~inside.any(dim=1)[:, None, :]
    return features * keep[:, None].to(features.device, features.dtype)


def mixup(waveforms: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, *, alpha: float,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix every clip with a random partner of the batch: ``lam * a + (1 - lam) * b`` for the
    waveforms and for the label vectors, ``lam ~ Beta(alpha, alpha)`` per clip.

    Args:
        waveforms: ``(B, N)`` padded waveforms; ``lengths``: ``(B,)`` valid samples.
        targets: ``(B, C)`` label vectors in [0, 1].
        alpha: Beta parameter; 0 returns the inputs unchanged.

    Returns:
        ``(waveforms, lengths, targets)`` of the mixtures; a mixture is as long as the longer clip.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if alpha == 0 or waveforms.shape[0] < 2:
        return waveforms, lengths, targets
    b = waveforms.shape[0]
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    # torch.distributions takes no generator: derive a seed from ours and sample inside a forked RNG,
    # so the global RNG is untouched and the draw repeats for the same generator state
    fork_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(fork_seed)
        lam = beta.sample((b,))
    partner = torch.randperm(b, generator=generator)
    lam_w = lam.to(waveforms.device, waveforms.dtype)[:, None]
    mixed = lam_w * waveforms + (1 - lam_w) * waveforms[partner.to(waveforms.device)]
    lam_t = lam.to(targets.device, targets.dtype)[:, None]
    mixed_targets = lam_t * targets + (1 - lam_t) * targets[partner.to(targets.device)]
    mixed_lengths = torch.maximum(lengths, lengths[partner.to(lengths.device)])
    return mixed, mixed_lengths, mixed_targets
