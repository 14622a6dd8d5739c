"""Prep throughput: the whole prep path against its decode+resample ceiling, local vs S3.

Prints, from one run on the same input files:
  ceiling    decode + downmix + resample only (no validation, no FLAC encode, no tar, no storage)
  local      the whole prep path (data_prep.shards.build_shard) writing to a local folder
  s3         the same, writing to a real S3-protocol server on loopback (moto_server)
All numbers are clips/s on ONE core (in-process executor), so they scale per core with Ray tasks.

    .venv/bin/python bench/prep.py [--clips 120] [--seconds 8] [--input-rate 48000] [--rate 44100]
"""
from __future__ import annotations

import os

# one core means one BLAS/OpenMP thread too (numpy's matmul in the downmix would use two)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf


from data_prep import audio
from runtime import storage  # noqa: E402
from data_prep.pipeline import run_prep  # noqa: E402
from data_prep.records import ClipRecord, LabelVocab, SourceListing  # noqa: E402
from data_prep.shards import ShardConfig, load_audio  # noqa: E402


def make_inputs(folder: Path, clips: int, seconds: float, rate: int) -> SourceListing:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    t = np.arange(int(seconds * rate)) / rate
    for i in range(clips):
        tone = 0.2 * np.sin(2 * np.pi * (200 + 10 * i) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        wave = np.stack([tone + 0.05 * rng.standard_normal(t.size), tone], axis=1).astype(np.float32)
        path = folder / f"clip_{i:04d}.flac"   # web audio arrives compressed, stereo, 48 kHz
        sf.write(path, wave, rate, subtype="PCM_16")
        records.append(ClipRecord(f"clip_{i:04d}", str(path), ("tone",), "train"))
    return SourceListing("bench", LabelVocab(("tone",), ("Tone",)), records, [])


def ceiling(listing: SourceListing, rate: int) -> float:
    started = time.perf_counter()
    for rec in listing.records:
        raw, r = load_audio(rec.audio, rate)
        audio.resample(audio.to_mono(raw), r, rate)
    return len(listing.records) / (time.perf_counter() - started)


def whole_path(listing: SourceListing, out: str, rate: int) -> float:
    cfg = ShardConfig(sample_rate=rate, max_clips_per_shard=40)
    summary = run_prep(listing, out, cfg, executor="local", progress=False)
    assert summary.clips_written == len(listing.records)
    return summary.clips_per_second


def start_moto() -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except Exception:
            time.sleep(0.2)
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return proc, endpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=120, help="input clips (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per clip (default: %(default)s)")
    p.add_argument("--input-rate", type=int, default=48000, help="input sample rate, stereo FLAC (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats, best kept (default: %(default)s)")
    p.add_argument("--rate", type=int, default=44100, help="target rate (default: %(default)s)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        listing = make_inputs(Path(tmp, "in"), args.clips, args.seconds, args.input_rate)
        ceiling(SourceListing("warm", listing.vocab, listing.records[:5], []), args.rate)  # warm caches
        proc, _ = start_moto()
        c = local = s3 = 0.0
        try:  # interleaved, best of --repeats: robust to other load on the machine
            for r in range(args.repeats):
                c = max(c, ceiling(listing, args.rate))
                local = max(local, whole_path(listing, str(Path(tmp, f"out{r}")), args.rate))
                s3 = max(s3, whole_path(listing, f"s3://bench/out{r}", args.rate))
        finally:
            proc.terminate()
    audio_s = args.seconds
    print(f"input: {args.clips} clips x {args.seconds:.0f} s, {args.input_rate} Hz stereo FLAC -> {args.rate} Hz mono FLAC shards")
    print(f"ceiling (decode+resample only): {c:7.1f} clips/s/core  ({c * audio_s:7.0f}x real time)")
    print(f"whole prep path, local folder : {local:7.1f} clips/s/core  ({local * audio_s:7.0f}x real time)  "
          f"ratio to ceiling {local / c:.2f}")
    print(f"whole prep path, S3 (moto)    : {s3:7.1f} clips/s/core  ({s3 * audio_s:7.0f}x real time)  "
          f"ratio to ceiling {s3 / c:.2f}, S3/local {s3 / local:.2f}")


if __name__ == "__main__":
    main()
