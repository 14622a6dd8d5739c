"""Decode, downmix, resample, validate and encode audio. Pure functions over numpy arrays.

Decoding uses libsndfile (soundfile: wav, flac, ogg/vorbis, opus, mp3, aiff, ...); formats it
lacks (m4a/aac, webm, mp4) fall back to FFmpeg through torchcodec when that is installed.
Resampling is polyphase FIR filtering with a Kaiser window (scipy.signal.resample_poly), which
low-pass filters before decimating, so downsampling does not alias.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

# One 16-bit LSB: a file whose peak is below this is digital silence once stored as 16-bit FLAC.
SILENCE_PEAK = 1.0 / 32768.0


class AudioError(Exception):
    """A file that cannot become a training clip. ``reason`` is one of records.REJECT_REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ValidationLimits:
    min_duration_s: float = 0.25     # shorter clips carry no event a 1.5 s segment model can learn
    min_sample_rate: int = 8000      # below telephone band: "wrong-rate" input, not web audio
    max_duration_s: float = 0.0      # 0 = keep everything; >0 truncates (counted, never silent)


def decode_bytes(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """(samples as float32 (frames, channels), sample rate). Raises AudioError."""
    if len(data) == 0:
        raise AudioError("empty", f"{name} is a 0-byte file")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return samples, int(rate)
    except Exception as error:  # libsndfile could not parse it: try FFmpeg if available
        # soundfile's message names the BytesIO object (a memory address): keep only the cause
        sf_error = str(error).rsplit(": ", 1)[-1]
        try:
            return _decode_with_ffmpeg(data)
        except ImportError:
            raise AudioError("unreadable", f"{name}: libsndfile: {sf_error}; FFmpeg fallback unavailable "
                             "(install torchcodec and FFmpeg libraries for m4a/aac/webm)") from None
        except Exception as ff_error:
            raise AudioError("unreadable", f"{name}: libsndfile: {sf_error}; FFmpeg: {ff_error}") from None


def _decode_with_ffmpeg(data: bytes) -> tuple[np.ndarray, int]:
    from torchcodec.decoders import AudioDecoder  # optional dependency

    decoded = AudioDecoder(data).get_all_samples()
    samples = decoded.data.numpy().T.astype(np.float32)  # (channels, frames) -> (frames, channels)
    return samples, int(decoded.sample_rate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,) float32 by averaging channels."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.shape[1] == 1:
        return np.ascontiguousarray(samples[:, 0], dtype=np.float32)
    weights = np.full(samples.shape[1], 1.0 / samples.shape[1], dtype=np.float32)
    return samples.astype(np.float32, copy=False) @ weights  # 40x faster than mean(dtype=float64)


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return wave.astype(np.float32, copy=False)
    g = math.gcd(rate_in, rate_out)
    return resample_poly(wave.astype(np.float32, copy=False), rate_out // g, rate_in // g).astype(np.float32)


def check_waveform(wave: np.ndarray, rate: int, limits: ValidationLimits, name: str) -> None:
    """Raise AudioError when a decoded mono waveform is unusable."""
    if wave.size == 0:
        raise AudioError("empty", f"{name} decodes to 0 samples")
    if rate < limits.min_sample_rate:
        raise AudioError("bad_sample_rate", f"{name} is sampled at {rate} Hz (< {limits.min_sample_rate} Hz)")
    finite = np.isfinite(wave)
    if not finite.all():
        raise AudioError("non_finite", f"{name} has {int((~finite).sum())} NaN/Inf samples")
    duration = wave.size / rate
    if duration < limits.min_duration_s:
        raise AudioError("too_short", f"{name} lasts {duration:.3f} s (< {limits.min_duration_s} s)")
    peak = float(np.max(np.abs(wave)))
    if peak < SILENCE_PEAK:
        raise AudioError("silent", f"{name} is digital silence (peak {peak:.2e})")


def prepare_waveform(samples: np.ndarray, rate: int, target_rate: int, limits: ValidationLimits,
                     name: str) -> tuple[np.ndarray, bool]:
    """Decoded samples -> validated mono float32 at ``target_rate``; also says whether it was truncated."""
    mono = to_mono(samples)
    check_waveform(mono, rate, limits, name)
    truncated = False
    if limits.max_duration_s > 0 and mono.size > limits.max_duration_s * rate:
        mono = mono[: int(limits.max_duration_s * rate)]
        truncated = True
    out = resample(mono, rate, target_rate)
    peak = float(np.max(np.abs(out)))
    if peak > 1.0:  # resampling overshoot near full scale: scale rather than clip
        out = out / peak
    return out, truncated


def encode_flac(wave: np.ndarray, rate: int) -> bytes:
    """Mono float32 in [-1, 1] -> 16-bit FLAC bytes (deterministic for the same input)."""
    pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)  # quantise once, here
    buf = io.BytesIO()
    sf.write(buf, pcm, rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit FLAC bytes -> (mono float32, rate)."""
    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return to_mono(wave), int(rate)
