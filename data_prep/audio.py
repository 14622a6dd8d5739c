"""Decode, downmix, resample, validate and encode audio. Pure functions over numpy arrays.

Decoding uses libsndfile (soundfile: wav, flac, ogg/vorbis, opus, mp3, aiff, ...); formats it
lacks (m4a/aac, webm/opus, mp4) fall back to FFmpeg through torchcodec, which is imported only
then and needs the system's FFmpeg shared libraries (Debian 12: FFMPEG_DEBIAN_PACKAGES). Without
them those files are rejected as "unreadable" with a detail that says what to install.
Resampling is polyphase FIR filtering with a Kaiser window (scipy.signal.resample_poly), which
low-pass filters before decimating, so downsampling does not alias.
"""
from __future__ import annotations

import ctypes.util
import io
import math
import re
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
    except Exception as error:  # libsndfile could not parse it: try FFmpeg
        # soundfile's message names the BytesIO object (a memory address): keep only the cause
        sf_error = str(error).rsplit(": ", 1)[-1]
    try:
        return _decode_with_ffmpeg(data)
    except FFmpegUnavailable as missing:
        raise AudioError("unreadable", f"{name}: libsndfile: {sf_error}; FFmpeg fallback unavailable: "
                         f"{missing}") from None
    except Exception as ff_error:
        raise AudioError("unreadable", f"{name}: libsndfile: {sf_error}; FFmpeg: {_short(ff_error)}") from None


# Debian 12 (bookworm) ships FFmpeg 5.1; these are the shared libraries torchcodec loads.
FFMPEG_DEBIAN_PACKAGES = ("libavcodec59", "libavformat59", "libavutil57", "libswresample4", "libswscale6",
                          "libavfilter8", "libavdevice59")
_INSTALL_HINT = ("install Debian's FFmpeg libraries: apt-get install --no-install-recommends "
                 + " ".join(FFMPEG_DEBIAN_PACKAGES) + " (scripts/test.sh does this when run as root)")
# Encoders pad the last AAC/Opus frame; drop at most this much decoded audio past the container's duration.
_MAX_TRAILING_PADDING = 8192


class FFmpegUnavailable(Exception):
    """torchcodec, or the FFmpeg shared libraries it loads, cannot be used in this process."""


_ffmpeg_problem: str | None = None  # set once known: a big job must not retry the library loads per file


def _decode_with_ffmpeg(data: bytes) -> tuple[np.ndarray, int]:
    """Decode in-memory bytes with FFmpeg (torchcodec). Raises FFmpegUnavailable when it cannot run."""
    global _ffmpeg_problem
    if _ffmpeg_problem is not None:
        raise FFmpegUnavailable(_ffmpeg_problem)
    try:
        from torchcodec.decoders import AudioDecoder  # imported here: it pulls in torch
    except ImportError as error:
        _ffmpeg_problem = f"torchcodec is not importable ({_short(error)}); pip install torchcodec==0.17.0 and " \
                          + _INSTALL_HINT
        raise FFmpegUnavailable(_ffmpeg_problem) from None
    except Exception as error:  # some torchcodec releases load FFmpeg at import time
        _ffmpeg_problem = _library_problem(error)
        raise FFmpegUnavailable(_ffmpeg_problem) from None
    try:
        decoder = AudioDecoder(data)  # loads the FFmpeg-linked libraries on first use
        decoded = decoder.get_all_samples()
    except Exception as error:
        if _is_library_load_error(error):
            _ffmpeg_problem = _library_problem(error)
            raise FFmpegUnavailable(_ffmpeg_problem) from None
        raise
    rate = int(decoded.sample_rate)
    samples = np.ascontiguousarray(decoded.data.numpy().T, dtype=np.float32)  # (ch, frames) -> (frames, ch)
    header = decoder.metadata.duration_seconds_from_header
    if header:  # trailing encoder padding (AAC in mp4/m4a decodes to whole 1024-sample frames)
        frames = int(round(header * rate))
        if 0 < frames < len(samples) <= frames + _MAX_TRAILING_PADDING:
            samples = samples[:frames]
    return samples, rate


def _is_library_load_error(error: Exception) -> bool:
    text = str(error)
    return isinstance(error, OSError) or "libtorchcodec" in text or "cannot open shared object file" in text


def _library_problem(error: Exception) -> str:
    """One readable sentence (never torchcodec's multi-page traceback) saying what is missing."""
    present = ctypes.util.find_library("avutil")
    if present is None:
        return f"the FFmpeg shared libraries are missing (no libavutil found); {_INSTALL_HINT}"
    # FFmpeg is there but torchcodec still cannot load. Its message holds one traceback per FFmpeg
    # major it tried; the innermost error of each is its first "...Error:" line. Majors whose
    # libraries are simply absent are expected to fail, so only the other causes are worth naming.
    causes = []
    for major, section in re.findall(r"^FFmpeg version (\d+):\n(.*?)(?=^FFmpeg version |\Z)", str(error),
                                     flags=re.M | re.S):
        first = re.search(r"^(\w*Error: .*)$", section, flags=re.M)
        if first and not re.search(r"lib(av|sw|postproc)\w*\.so[.\d]*: cannot open shared object file", first[1]):
            causes.append(f"FFmpeg {major}: {first[1].strip()}")
    cause = "; ".join(causes[:2]) or _short(error)
    return (f"torchcodec cannot load its FFmpeg-linked libraries although {present} is present ({cause}); "
            "the working pairing is torch==2.14.1 + torchcodec==0.17.0 with Debian 12's FFmpeg 5.1 "
            f"({' '.join(FFMPEG_DEBIAN_PACKAGES)})")


def _short(error: Exception) -> str:
    """First line of an error, without torchcodec's C++ source location prefix."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"^\w+, \S+\.(?:cpp|cc|h):\d+, ", "", lines[0])


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
