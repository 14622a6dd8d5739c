"""The FFmpeg fallback (torchcodec) for formats libsndfile lacks: m4a/aac, raw AAC, webm/opus, mp4.

Every file is encoded here with torchcodec's AudioEncoder (FFmpeg's own muxers and encoders), never
stored in the repository. The FFmpeg-backed tests skip only where the FFmpeg libraries genuinely cannot
be had (not root, or no apt-get); as root with apt, scripts/test.sh installs them and a missing
library is a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep import audio
from data_prep.manifest import read_manifest
from data_prep.pipeline import run_prep
from data_prep.records import ClipRecord, SourceListing
from data_prep.shards import ShardConfig, iter_shard
from audio_fixtures import VOCAB

# name, extension, sample rate, channels, seconds, tone (Hz), allowed extra decoded frames.
# Raw AAC (ADTS) carries no encoder-delay/padding info, so it decodes up to two 1024-sample frames long.
CASES = [
    ("stereo_m4a", "m4a", 44100, 2, 1.5, 440.0, 0),
    ("mono_aac", "aac", 22050, 1, 1.0, 660.0, 2048),
    ("stereo_webm", "webm", 48000, 2, 1.2, 880.0, 0),
    ("mono_mp4", "mp4", 16000, 1, 2.0, 330.0, 0),
]
EXPECTED_CODEC = {"m4a": "aac", "aac": "aac", "webm": "opus", "mp4": "aac"}


def _ffmpeg_problem() -> str | None:
    """None when torchcodec can decode here, else why not (the reject detail decode_bytes would give)."""
    try:
        audio._decode_with_ffmpeg(b"not audio at all")
    except audio.FFmpegUnavailable as missing:
        return str(missing)
    except Exception:  # FFmpeg ran and (rightly) refused the bytes
        return None
    return None


FFMPEG_PROBLEM = _ffmpeg_problem()
CAN_INSTALL = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


@pytest.fixture(scope="module")
def ffmpeg():
    if FFMPEG_PROBLEM is not None:
        if CAN_INSTALL:
            pytest.fail(f"FFmpeg decoding unavailable although root with apt-get (scripts/test.sh installs "
                        f"the libraries): {FFMPEG_PROBLEM}")
        pytest.skip(f"FFmpeg libraries unavailable and cannot be installed here (not root / no apt-get): "
                    f"{FFMPEG_PROBLEM}")


def _signal(rate: int, channels: int, seconds: float, freq: float) -> np.ndarray:
    """(channels, frames) float32: a tone, quieter and phase-shifted on the second channel."""
    t = np.arange(int(round(seconds * rate))) / rate
    rows = [0.4 / (1 + c) * np.sin(2 * np.pi * freq * t + c) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def _encode(path: Path, rate: int, channels: int, seconds: float, freq: float) -> Path:
    import torch
    from torchcodec.encoders import AudioEncoder

    AudioEncoder(torch.from_numpy(_signal(rate, channels, seconds, freq)), sample_rate=rate).to_file(str(path))
    return path


def _dominant_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum)) * rate / wave.size


@pytest.fixture(scope="module")
def encoded(ffmpeg, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ffmpeg_audio")
    return {name: _encode(root / f"{name}.{ext}", rate, ch, sec, hz) for name, ext, rate, ch, sec, hz, _ in CASES}


@pytest.mark.parametrize("name, ext, rate, channels, seconds, freq, slack", CASES, ids=[c[0] for c in CASES])
def test_decode_bytes_falls_back_to_ffmpeg_with_the_right_rate_channels_and_duration(
        encoded, name, ext, rate, channels, seconds, freq, slack):
    from torchcodec.decoders import AudioDecoder

    data = encoded[name].read_bytes()
    assert AudioDecoder(data).metadata.codec == EXPECTED_CODEC[ext]
    with pytest.raises(sf.LibsndfileError):  # so the fallback, not libsndfile, is what decodes it
        sf.read(encoded[name])

    samples, got_rate = audio.decode_bytes(data, str(encoded[name]))
    assert samples.dtype == np.float32 and samples.flags.c_contiguous
    assert got_rate == rate
    assert samples.ndim == 2 and samples.shape[1] == channels
    frames = int(round(seconds * rate))
    assert frames <= samples.shape[0] <= frames + slack, (samples.shape, frames)
    assert abs(_dominant_hz(samples[:, 0], rate) - freq) < 5.0
    if channels == 2:  # channels kept apart, in order: the second was encoded at half the level
        rms = np.sqrt(np.mean(samples ** 2, axis=0))
        assert rms[1] == pytest.approx(rms[0] / 2, rel=0.1)


def test_prep_writes_ffmpeg_formats_into_shards_as_flac_and_reports_a_corrupt_m4a(encoded, tmp_path):
    records = [ClipRecord(name, str(encoded[name]), ("tone",), "train") for name, *_ in CASES]
    corrupt = tmp_path / "broken.m4a"
    corrupt.write_bytes(encoded["stereo_m4a"].read_bytes()[: 300])  # header of a real m4a, no audio
    records.append(ClipRecord("broken", str(corrupt), ("tone",), "train"))
    out = tmp_path / "out"
    summary = run_prep(SourceListing("ffmpeg", VOCAB, records, []), str(out),
                       ShardConfig(sample_rate=16000, max_clips_per_shard=3), executor="local", progress=False)

    assert summary.clips_written == len(CASES)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["path"], r["reason"]) for r in rejects] == [(str(corrupt), "unreadable")]
    assert str(corrupt) in rejects[0]["detail"] and "FFmpeg:" in rejects[0]["detail"]
    assert "Traceback" not in rejects[0]["detail"] and ".cpp:" not in rejects[0]["detail"]

    manifest = read_manifest(str(out))
    stored = {}
    for url in manifest.shard_urls("train"):
        with tarfile.open(url) as tar:
            names = tar.getnames()
        assert names and all(n.endswith((".flac", ".json")) for n in names)
        for sample in iter_shard(url):
            stored[sample.meta["clip_id"]] = sample
    assert sorted(stored) == sorted(c[0] for c in CASES)
    for name, ext, rate, channels, seconds, freq, slack in CASES:
        sample = stored[name]
        assert sample.audio.ndim == 1 and sample.meta["sample_rate"] == 16000  # mono FLAC at the target rate
        assert sample.meta["audio"] == str(encoded[name])
        assert seconds <= sample.meta["duration_s"] <= seconds + slack / rate + 1e-3
        assert abs(_dominant_hz(sample.audio, 16000) - freq) < 5.0


def test_a_corrupt_m4a_is_unreadable_by_name_with_or_without_ffmpeg(tmp_path):
    path = tmp_path / "garbage.m4a"
    data = b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00" + b"\x5a" * 4000
    with pytest.raises(audio.AudioError) as caught:
        audio.decode_bytes(data, str(path))
    assert caught.value.reason == "unreadable"
    assert caught.value.detail.startswith(f"{path}: libsndfile:")
    assert "Traceback" not in caught.value.detail and "\n" not in caught.value.detail
    if FFMPEG_PROBLEM is None:
        assert "FFmpeg: Failed to open input buffer" in caught.value.detail
    else:  # no FFmpeg: the detail says what to install
        assert "apt-get install" in caught.value.detail and "libavcodec59" in caught.value.detail


@pytest.mark.skipif(FFMPEG_PROBLEM is None, reason="the FFmpeg libraries are installed here; this checks the "
                                                    "reject detail on machines without them")
def test_without_ffmpeg_libraries_the_reject_says_what_to_install(tmp_path):
    with pytest.raises(audio.AudioError) as caught:
        audio.decode_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 64, "clip.webm")
    detail = caught.value.detail
    assert caught.value.reason == "unreadable" and detail.startswith("clip.webm: libsndfile:")
    assert "FFmpeg fallback unavailable" in detail and "libavcodec59" in detail and "\n" not in detail
    assert len(detail) < 600, detail


def test_without_torchcodec_the_reject_says_what_to_install(monkeypatch):
    """torchcodec is imported lazily: blocking the import (as if it were not installed) gives a
    one-line reject detail that names the packages, not an ImportError."""
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    monkeypatch.setattr(audio, "_ffmpeg_problem", None)
    with pytest.raises(audio.AudioError) as caught:
        audio.decode_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100, "x.mp4")
    detail = caught.value.detail
    assert caught.value.reason == "unreadable"
    assert "pip install torchcodec==0.17.0" in detail and "apt-get install" in detail and "\n" not in detail
