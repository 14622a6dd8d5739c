"""Log-mel front end of the paper (librosa-compatible), computed with torchaudio on any device.

The paper's features are ``librosa.power_to_db(librosa.feature.melspectrogram(y, sr=44100,
n_fft=1024, hop_length=512, n_mels=128))``: power 2, Hann window, centred frames padded with
zeros, Slaney mel scale and norm, ``10*log10(max(1e-10, S))`` with ``ref=1.0`` and a floor 80 dB
below the clip's maximum. :class:`LogMel` reproduces that for padded batches: the floor is taken
per clip over its valid frames only, so zero padding in a batch never changes a clip's features.

Layout is time-major, ``(B, 1, T, n_mels)``, as the released model expects.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from trainer.config import FrontEndConfig

__all__ = ["LogMel", "frames_from_samples", "masked_power_to_db", "fill_short"]

AMIN = 1e-10  # librosa power_to_db's amin


def frames_from_samples(num_samples, hop_length: int):
    """Number of centred STFT frames for ``num_samples`` samples: ``1 + num_samples // hop``.

    Works on ints and integer tensors alike.
    """
    return 1 + num_samples // hop_length


def masked_power_to_db(power: torch.Tensor, num_frames: torch.Tensor, top_db: float | None) -> torch.Tensor:
    """``10*log10(max(AMIN, power))`` floored at ``max - top_db`` per clip over its valid frames.

    Args:
        power: ``(B, n_mels, T)`` mel power spectrogram.
        num_frames: ``(B,)`` valid frames per clip (``<= T``); frames beyond are set to 0 dB here
            and are ignored for the per-clip maximum.
        top_db: dynamic range below each clip's maximum, or ``None`` for no floor.

    Returns:
        ``(B, n_mels, T)`` log power in dB (``ref=1.0``, as librosa's default).
    """
    db = 10.0 * torch.log10(torch.clamp(power, min=AMIN))
    t = torch.arange(db.shape[-1], device=db.device)
    valid = (t[None, :] < num_frames[:, None])[:, None, :]  # (B, 1, T)
    if top_db is not None:
        peak = db.masked_fill(~valid, float("-inf")).amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1)
        db = torch.maximum(db, peak - top_db)
    return db.masked_fill(~valid, 0.0)


def fill_short(features: torch.Tensor, num_frames: torch.Tensor, min_frames: int, mode: str):
    """Pad clips shorter than ``min_frames`` up to it, in the dB domain.

    ``mode="zero"`` fills with 0 dB (what the released extractor does), ``"min"`` with the clip's
    own minimum over its valid frames. Returns ``(features, num_frames)`` where the time axis is at
    least ``min_frames`` long and ``num_frames >= min_frames``.

    Args:
        features: ``(B, 1, T, n_mels)`` with zeros beyond each clip's ``num_frames``.
        num_frames: ``(B,)`` valid frames per clip.
    """
    T = features.shape[2]
    if T < min_frames:
        features = nn.functional.pad(features, (0, 0, 0, min_frames - T))
    if mode == "min":
        t = torch.arange(features.shape[2], device=features.device)
        valid = (t[None, :] < num_frames[:, None])[:, None, :, None]  # (B, 1, T, 1)
        low = features.masked_fill(~valid, float("inf")).amin(dim=(1, 2, 3), keepdim=True)
        fill = (~valid) & (t[None, None, :, None] < min_frames)
        features = torch.where(fill, low, features)
    elif mode != "zero":
        raise ValueError(f"mode must be 'zero' or 'min', got {mode!r}")
    return features, torch.clamp(num_frames, min=min_frames)


class LogMel(nn.Module):
    """Waveforms ``(B, N)`` -> log-mel ``(B, 1, T, n_mels)`` plus valid frames ``(B,)``.

    Runs on the device of its input (move the module with ``.to(device)``; the window and the mel
    filterbank are buffers). Always computed in float32, also under autocast.

    Args:
        cfg: front-end parameters (sample_rate, n_fft, hop_length, n_mels, f_min, f_max, top_db,
            short_pad).
        min_frames: clips with fewer valid frames are padded up to this (one segment, 128 frames
            for the paper's network); 0 disables.

    Example:
        >>> fe = LogMel(FrontEndConfig(), min_frames=128)
        >>> x, n = fe(torch.randn(2, 44100), torch.tensor([44100, 22050]))
        >>> x.shape, n.tolist()
        (torch.Size([2, 1, 128, 128]), [128, 128])
    """

    def __init__(self, cfg: FrontEndConfig, min_frames: int = 0):
        super().__init__()
        self.cfg = cfg
        self.min_frames = int(min_frames)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.n_fft, hop_length=cfg.hop_length,
            f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels, power=2.0, center=True,
            pad_mode="constant",  # librosa pads centred frames with zeros; "reflect" differs at edges
            norm="slaney", mel_scale="slaney")

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None):
        """Args:
            waveform: ``(B, N)`` float samples, zero-padded beyond each clip's length.
            lengths: ``(B,)`` valid samples per clip; ``None`` means all ``N``.

        Returns:
            ``(features (B, 1, T, n_mels), num_frames (B,))``.
        """
        if waveform.dim() != 2:
            raise ValueError(f"expected waveform of shape (B, N), got {tuple(waveform.shape)}")
        B, N = waveform.shape
        if lengths is None:
            lengths = torch.full((B,), N, dtype=torch.long, device=waveform.device)
        lengths = lengths.to(device=waveform.device, dtype=torch.long)
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            power = self.mel(waveform.float())  # (B, n_mels, T)
            num_frames = frames_from_samples(lengths, self.cfg.hop_length)
            db = masked_power_to_db(power, num_frames, self.cfg.top_db)
        features = db.transpose(1, 2).unsqueeze(1)  # (B, 1, T, n_mels), time-major
        if self.min_frames:
            features, num_frames = fill_short(features, num_frames, self.min_frames, self.cfg.short_pad)
        return features, num_frames
