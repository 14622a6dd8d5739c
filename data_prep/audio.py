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
import re
from dataclasses import dataclass
from fractions import Fraction

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
    """What a decoded input may be. The upper bounds are checked on the file's header, before any
    sample is decoded, so one hostile file cannot take a worker's memory: decoding keeps at most
    ``max_duration_s * rate`` mono float32 samples (10 min at 192 kHz: 0.46 GB, x2 while resampling).
    """
    min_duration_s: float = 0.25     # shorter clips carry no event a 1.5 s segment model can learn
    min_sample_rate: int = 8000      # below telephone band: "wrong-rate" input, not web audio
    max_duration_s: float = 600.0    # longer inputs are truncated here (counted, never silent); 0 = no limit
    max_sample_rate: int = 192_000   # the highest rate recorders use; beyond it a header is garbage or hostile
    max_channels: int = 32           # beyond 7.1/ambisonics layouts; each is read and downmixed block by block

    def __post_init__(self):
        if self.max_sample_rate < self.min_sample_rate:
            raise ValueError(f"max_sample_rate {self.max_sample_rate} < min_sample_rate {self.min_sample_rate}")
        if self.max_channels < 1 or self.max_duration_s < 0:
            raise ValueError("max_channels must be >= 1 and max_duration_s >= 0")

    def check_header(self, rate: int, channels: int, name: str) -> None:
        """Reject by the header alone (rate, channels), before decoding anything."""
        if rate < self.min_sample_rate:
            raise AudioError("bad_sample_rate", f"{name} is sampled at {rate} Hz (< {self.min_sample_rate} Hz)")
        if rate > self.max_sample_rate:
            raise AudioError("bad_sample_rate", f"{name} is sampled at {rate} Hz (> {self.max_sample_rate} Hz, "
                                                "the max_sample_rate limit)")
        if channels < 1 or channels > self.max_channels:
            raise AudioError("unreadable", f"{name} has {channels} channels (limit: 1..{self.max_channels}, "
                                           "the max_channels limit)")

    def frames_kept(self, rate: int) -> int | None:
        """How many input frames are decoded at most (None: all)."""
        return int(self.max_duration_s * rate) if self.max_duration_s > 0 else None


# Formats libsndfile lacks are decoded by FFmpeg from memory; 10 min of 320 kbit/s AAC is 24 MB.
MAX_FFMPEG_INPUT_BYTES = 256 * 2**20
# Samples (frames x channels) decoded per block: bounds the memory of one read whatever the channel count.
_BLOCK_SAMPLES = 1 << 20


def read_mono(source, name: str, limits: ValidationLimits) -> tuple[np.ndarray, int, bool]:
    """(mono float32, rate, truncated) of a file object or bytes, reading only what is kept.

    The header is checked against ``limits`` first; then at most ``limits.frames_kept(rate)``
    frames are decoded, block by block, each block downmixed at once (a many-channel file never
    exists decoded in full). Raises AudioError.
    """
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioError("empty", f"{name} is a 0-byte file")
        source = io.BytesIO(source)
    try:
        f = sf.SoundFile(source)
    except Exception as error:  # libsndfile could not parse it: FFmpeg, bounded the same way
        sf_error = str(error).rsplit(": ", 1)[-1]
        source.seek(0)
        data = source.read(MAX_FFMPEG_INPUT_BYTES + 1)
        if len(data) > MAX_FFMPEG_INPUT_BYTES:  # FFmpeg decodes from memory: bound what is read
            raise AudioError("unreadable", f"{name}: libsndfile: {sf_error}; larger than "
                                           f"{MAX_FFMPEG_INPUT_BYTES // 2**20} MiB, too large for the FFmpeg fallback") from None
        if len(data) == 0:
            raise AudioError("empty", f"{name} is a 0-byte file") from None
        samples, rate = _decode_fallback(data, name, sf_error, limits)
        keep = limits.frames_kept(rate)
        return to_mono(samples), rate, keep is not None and len(samples) >= keep
    with f:
        rate, channels = int(f.samplerate), int(f.channels)
        limits.check_header(rate, channels, name)
        keep = limits.frames_kept(rate)
        total = f.frames if f.seekable() else None
        want = total if keep is None else (keep if total is None else min(total, keep))
        block = max(1, _BLOCK_SAMPLES // channels)
        pieces, got = [], 0
        while want is None or got < want:
            n = block if want is None else min(block, want - got)
            try:
                chunk = f.read(n, dtype="float32", always_2d=True)
            except RuntimeError as error:  # sf.LibsndfileError: the header parsed, a frame does not
                raise AudioError("unreadable", f"{name}: libsndfile: {error}") from None
            if len(chunk) == 0:
                break
            pieces.append(to_mono(chunk))
            got += len(chunk)
        truncated = keep is not None and got >= keep and (total is None or total > keep)
    mono = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return mono, rate, truncated


def stream_mono(source, name: str, rate_out: int, block_seconds: float = 30.0,
                limits: ValidationLimits | None = None):
    """Mono float32 blocks of a file at ``rate_out``, decoded and resampled block by block.

    Memory stays at a few blocks whatever the file's length: each block is read, downmixed and
    resampled with enough neighbouring input on both sides that the seams match resampling the whole
    file (the polyphase filter is shorter than the context). The header is checked against ``limits``
    (rate, channels; duration is not bounded). Files libsndfile cannot read go through
    :func:`decode_bytes` (FFmpeg, bounded in size). Raises AudioError for an empty, silent or
    non-finite file.
    """
    limits = limits or ValidationLimits(min_duration_s=0.0, max_duration_s=0)
    try:
        f = sf.SoundFile(source)
    except Exception:  # noqa: BLE001 - not a libsndfile format: the bounded in-memory FFmpeg path
        data = source.read(MAX_FFMPEG_INPUT_BYTES + 1) if hasattr(source, "read") else source
        samples, rate = decode_bytes(data, name, limits)
        wave = resample(to_mono(samples), rate, rate_out)
        check_waveform(wave, rate_out, limits, name)
        yield wave
        return
    with f:
        rate = int(f.samplerate)
        limits.check_header(rate, int(f.channels), name)
        up, down = resample_ratio(rate, rate_out) if rate != rate_out else (1, 1)
        block = max(down, int(block_seconds * rate) // down * down)  # a multiple of down: outputs align
        context = down * max(1, -(-64 * max(up, down) // (up * down)))  # input samples either side, >= filter
        previous = np.zeros(0, np.float32)
        peak, total = 0.0, 0

        def read(n):
            try:
                return to_mono(f.read(n, dtype="float32", always_2d=True))
            except RuntimeError as error:  # the header parsed, a frame does not
                raise AudioError("unreadable", f"{name}: libsndfile: {error}") from None

        current = read(block)
        while current.size:
            following = read(block)
            if not np.isfinite(current).all():
                raise AudioError("non_finite", f"{name} has NaN/Inf samples")
            peak, total = max(peak, float(np.abs(current).max())), total + current.size
            if up == down == 1:
                yield current
            else:
                left, right = previous[-context:], following[:context]
                out = resample(np.concatenate([left, current, right]), rate, rate_out)
                skip = left.size * up // down
                yield out[skip:skip + -(-current.size * up // down)]
            previous, current = current, following
        if total == 0:
            raise AudioError("empty", f"{name} decodes to 0 samples")
        if peak == 0.0:
            raise AudioError("silent", f"{name} is digital silence")


def decode_bytes(data: bytes, name: str = "<bytes>", limits: ValidationLimits | None = None
                 ) -> tuple[np.ndarray, int]:
    """(samples as float32 (frames, channels), sample rate). Raises AudioError.

    The header is checked against ``limits`` before decoding and at most
    ``limits.frames_kept(rate)`` frames are decoded (use ``read_mono`` to also downmix block by
    block). Without ``limits``, rate and channels are bounded by the defaults and the duration is
    not (a caller that decodes whole recordings, e.g. tagging, must not lose their end silently).
    """
    limits = limits or ValidationLimits(max_duration_s=0.0)
    if len(data) == 0:
        raise AudioError("empty", f"{name} is a 0-byte file")
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception as error:  # libsndfile could not parse it: try FFmpeg
        # soundfile's message names the BytesIO object (a memory address): keep only the cause
        sf_error = str(error).rsplit(": ", 1)[-1]
        return _decode_fallback(data, name, sf_error, limits)
    with f:
        limits.check_header(int(f.samplerate), int(f.channels), name)
        keep = limits.frames_kept(int(f.samplerate))
        try:
            samples = f.read(-1 if keep is None else keep, dtype="float32", always_2d=True)
        except RuntimeError as error:  # sf.LibsndfileError: the header parsed, a frame does not
            raise AudioError("unreadable", f"{name}: libsndfile: {error}") from None
        return samples, int(f.samplerate)


def _decode_fallback(data: bytes, name: str, sf_error: str, limits: ValidationLimits) -> tuple[np.ndarray, int]:
    try:
        return _decode_with_ffmpeg(data, name, limits)
    except AudioError:
        raise
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


def _decode_with_ffmpeg(data: bytes, name: str = "<bytes>", limits: ValidationLimits | None = None
                        ) -> tuple[np.ndarray, int]:
    """Decode in-memory bytes with FFmpeg (torchcodec), header checked against ``limits`` first.

    Raises FFmpegUnavailable when it cannot run."""
    limits = limits or ValidationLimits()
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
        meta = decoder.metadata
        limits.check_header(int(meta.sample_rate or 0), int(meta.num_channels or 0), name)
        decoded = (decoder.get_all_samples() if not limits.max_duration_s else
                   decoder.get_samples_played_in_range(0.0, limits.max_duration_s))
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
    keep = limits.frames_kept(rate)
    if keep is not None and len(samples) > keep:
        samples = samples[:keep]
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


# resample_poly's filter has ~20 x max(up, down) taps: an input rate sharing no factor with the
# output rate (999,983 Hz -> 44.1 kHz: up 44100, down 999983) would need a 1 GB filter. Ratios
# are therefore approximated with denominators up to this bound (every common rate is exact:
# 8/11.025/16/22.05/24/32/48/88.2/96/192 kHz -> 44.1 kHz; any other ratio of rates in 8-192 kHz is
# off by < 0.06 %, a pitch change of < 0.01 semitone).
MAX_RESAMPLE_FACTOR = 1000


def resample_ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    """(up, down) of the polyphase resampler, each at most MAX_RESAMPLE_FACTOR-ish."""
    ratio = Fraction(rate_out, rate_in).limit_denominator(MAX_RESAMPLE_FACTOR)
    if ratio.numerator > 50 * MAX_RESAMPLE_FACTOR:  # extreme upsampling: rates outside any limit
        raise ValueError(f"cannot resample {rate_in} Hz to {rate_out} Hz")
    return ratio.numerator, ratio.denominator


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return wave.astype(np.float32, copy=False)
    up, down = resample_ratio(rate_in, rate_out)
    return resample_poly(wave.astype(np.float32, copy=False), up, down).astype(np.float32)


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
    peak = float(np.max(np.abs(mono)))
    if peak > 1.0:  # float files may exceed full scale (up to ~3.4e38): scale first, resampling would overflow
        mono = (mono / np.float32(peak)).astype(np.float32)
    out = resample(mono, rate, target_rate)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if not np.isfinite(peak):
        raise AudioError("non_finite", f"{name} has no finite samples after resampling to {target_rate} Hz")
    if peak > 1.0:  # resampling overshoot near full scale: scale rather than clip
        out = out / peak
    if peak < SILENCE_PEAK:  # never store a clip that became silence on the way
        raise AudioError("silent", f"{name} is digital silence after resampling to {target_rate} Hz "
                                   f"(peak {peak:.2e})")
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
