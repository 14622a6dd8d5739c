"""Hostile audio: a small file must not be able to cost a prep worker more than its limits allow.

Headers are checked before decoding (rate, channels), decoding stops at the maximum duration,
many channels are downmixed block by block, and a float file far beyond full scale is scaled, not
stored as silence. Every rejected file is reported by name with a reason; nothing else is lost.
"""
from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep import audio
from data_prep.manifest import read_manifest
from data_prep.pipeline import run_prep
from data_prep.records import ClipRecord, LabelVocab, SourceListing
from data_prep.shards import ShardConfig, iter_shard, load_mono
from factories import HOSTILE_AUDIO, sine, write_hostile_audio, write_wav

VOCAB = LabelVocab(ids=("x",), names=("X",))
CFG = ShardConfig(sample_rate=16000, max_clips_per_shard=8)


def _file(tmp_path: Path, kind: str) -> str:
    path = tmp_path / f"{kind}.{'flac' if kind == 'many_channels' else 'wav'}"
    write_hostile_audio(path, kind)
    return str(path)


class CountingReader(io.RawIOBase):
    """A file object that counts the bytes handed out (the decoder reads through it)."""

    def __init__(self, data: bytes):
        self.inner, self.bytes_read = io.BytesIO(data), 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self.inner.seek(offset, whence)

    def tell(self):
        return self.inner.tell()

    def readinto(self, buf):
        data = self.inner.read(len(buf))
        buf[:len(data)] = data
        self.bytes_read += len(data)
        return len(data)


def test_default_limits_bound_rate_channels_and_duration():
    limits = ShardConfig().limits
    assert 0 < limits.max_duration_s <= 3600
    assert limits.min_sample_rate <= 48000 <= limits.max_sample_rate <= 384000
    assert 2 <= limits.max_channels <= 64


def test_a_999983_hz_wav_is_rejected_from_its_header_before_decoding(tmp_path):
    path = _file(tmp_path, "huge_rate")
    with pytest.raises(audio.AudioError) as caught:
        load_mono(path, 16000, CFG.limits)
    assert caught.value.reason == "bad_sample_rate"
    assert "999983 Hz" in caught.value.detail and path in caught.value.detail


def test_a_file_with_more_channels_than_the_limit_is_rejected_naming_the_limit(tmp_path):
    path = _file(tmp_path, "too_many_channels")
    with pytest.raises(audio.AudioError, match="64 channels") as caught:
        load_mono(path, 16000, CFG.limits)
    assert caught.value.reason == "unreadable" and "max_channels" in caught.value.detail


def test_resampling_from_a_prime_rate_uses_a_small_filter_and_keeps_the_duration():
    wave = sine(1000.0, 0.3, 999_983)
    tracemalloc.start()
    try:
        out = audio.resample(wave, 999_983, 44100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # the exact ratio 44100/999983 needs a ~1 GB filter
    assert abs(out.size / (wave.size * 44100 / 999_983) - 1) < 6e-4


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 192000])
def test_common_rates_are_resampled_with_the_exact_ratio(rate):
    import math

    g = math.gcd(rate, 44100)
    assert audio.resample_ratio(rate, 44100) == (44100 // g, rate // g)


def test_decoding_reads_only_the_bytes_of_the_frames_kept(tmp_path):
    data = io.BytesIO()
    sf.write(data, sine(440.0, 30.0), 16000, format="WAV", subtype="PCM_16")
    reader = CountingReader(data.getvalue())
    mono, rate, truncated = audio.read_mono(reader, "long.wav", audio.ValidationLimits(max_duration_s=2.0))
    assert (mono.size, rate, truncated) == (32000, 16000, True)
    assert reader.bytes_read < len(data.getvalue()) / 5  # 2 s of 30 s plus libsndfile's read-ahead


def test_an_eight_channel_96_khz_flac_is_downmixed_block_by_block_not_decoded_whole(tmp_path):
    path = _file(tmp_path, "many_channels")
    assert Path(path).stat().st_size < 100_000
    decoded_whole = 30 * 96000 * 8 * 4   # 92 MB of float32
    mono_kept = 30 * 96000 * 4           # 11.5 MB
    tracemalloc.start()
    try:
        mono, rate, truncated = load_mono(path, 16000, audio.ValidationLimits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (mono.size, rate, truncated) == (30 * 96000, 96000, False)
    assert abs(float(np.max(np.abs(mono))) - 0.25) < 1e-3
    assert peak < mono_kept + decoded_whole / 4


def test_a_long_input_is_cut_at_the_maximum_duration_and_counted(tmp_path):
    path = write_wav(tmp_path / "long.wav", sine(440.0, 5.0))
    listing = SourceListing("unit", VOCAB, [ClipRecord("long", str(path), ("x",), "train")], [])
    cfg = ShardConfig(sample_rate=16000, limits=audio.ValidationLimits(max_duration_s=2.0))
    summary = run_prep(listing, str(tmp_path / "out"), cfg, executor="local", progress=False)
    assert summary.clips_written == 1 and summary.truncated == 1
    assert read_manifest(str(tmp_path / "out")).duration_s() == pytest.approx(2.0)


def test_a_float_wav_near_the_float32_maximum_is_scaled_not_stored_as_silence(tmp_path):
    path = _file(tmp_path, "float_overflow")
    listing = SourceListing("unit", VOCAB, [ClipRecord("huge", path, ("x",), "train")], [])
    out = str(tmp_path / "out")
    summary = run_prep(listing, out, ShardConfig(sample_rate=44100), executor="local", progress=False)
    assert summary.clips_written == 1 and summary.rejected == {}
    (sample,) = [s for url in read_manifest(out).shard_urls() for s in iter_shard(url)]
    assert np.isfinite(sample.audio).all()
    assert float(np.max(np.abs(sample.audio))) > 0.9  # the sine at full scale, not zeros


def test_prep_reports_every_hostile_file_by_name_and_keeps_the_good_ones(tmp_path):
    records, expected = [], {}
    for kind, (_, reason) in HOSTILE_AUDIO.items():
        path = _file(tmp_path, kind)
        records.append(ClipRecord(kind, path, ("x",), "train"))
        if reason:
            expected[path] = reason
    good = write_wav(tmp_path / "good.wav", sine(440.0, 1.0))
    records.append(ClipRecord("good", str(good), ("x",), "train"))
    out = tmp_path / "out"
    summary = run_prep(SourceListing("unit", VOCAB, records, []), str(out), CFG, executor="local", progress=False)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["path"]: r["reason"] for r in rejects} == expected
    assert summary.clips_written == len(records) - len(expected)
