"""Embedding extraction throughput against the pure model-forward ceiling, in one run.

  ceiling    log-mel + model forward on in-memory waveform tensors (same batches, no I/O)
  data path  ShardEmbedder.embed_shard: read tar, decode FLAC, batch, forward, write .npz
  ray        the `weaksound embed` actor pool over every core (steady state, start-up excluded)
Per-core numbers use one torch thread in this process. Ratio = data path / ceiling.

    .venv/bin/python bench/embed.py [--preset cpu-small] [--clips 240] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch  # noqa: E402

from data_prep.manifest import read_manifest  # noqa: E402
from data_prep.pipeline import run_prep  # noqa: E402
from data_prep.shards import ShardConfig, iter_shard  # noqa: E402
from data_prep.sources.synthetic import load_synthetic  # noqa: E402
from trainer.config import preset  # noqa: E402
from trainer.export import export_model  # noqa: E402
from trainer.model import WeakLabelCNN  # noqa: E402
from inference.config import EmbedConfig  # noqa: E402
from inference.embed import ShardEmbedder, _batches, run_embed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-small", help="model preset (default: %(default)s)")
    p.add_argument("--clips", type=int, default=240, help="synthetic 5 s event clips (default: %(default)s)")
    p.add_argument("--batch-seconds", type=float, default=EmbedConfig.batch_seconds, help="padded seconds per batch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats, best kept (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = preset(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "events")
        run_prep(load_synthetic("events", num_clips=args.clips), data,
                 ShardConfig(sample_rate=cfg.frontend.sample_rate, max_clips_per_shard=60), executor="local",
                 progress=False)
        manifest = read_manifest(data)
        arch = cfg.model.__class__(**{**cfg.model.__dict__, "num_classes": 527})
        model = WeakLabelCNN(arch, n_mels=cfg.frontend.n_mels).eval()
        vocab = [{"index": i, "id": str(i), "name": str(i)} for i in range(527)]
        model_url = export_model(os.path.join(tmp, "model"), model, frontend=cfg.frontend, architecture=arch,
                                 vocabulary=vocab)
        embedder = ShardEmbedder(model_url, args.batch_seconds, threads=1)
        samples = [s for url in manifest.shard_urls() for s in iter_shard(url)]
        rate = cfg.frontend.sample_rate
        batches = []
        for batch in _batches(samples, args.batch_seconds, rate):  # identical batches, as tensors in memory
            lengths = torch.tensor([s.audio.size for s in batch])
            wave = torch.zeros(len(batch), int(lengths.max()))
            for i, s in enumerate(batch):
                wave[i, : s.audio.size] = torch.from_numpy(s.audio)
            batches.append((wave, lengths))
        audio_s = sum(s.audio.size for s in samples) / rate

        def ceiling() -> float:
            t0 = time.perf_counter()
            with torch.inference_mode():
                for wave, lengths in batches:
                    feats, frames = embedder.log_mel(wave, lengths)
                    embedder.exported.model(feats, frames)
            return len(samples) / (time.perf_counter() - t0)

        def data_path(r: int) -> float:
            t0 = time.perf_counter()
            for i, url in enumerate(manifest.shard_urls()):
                embedder.embed_shard(url, os.path.join(tmp, f"emb{r}", f"{i}.npz"))
            return len(samples) / (time.perf_counter() - t0)

        ceiling()  # warm-up
        c = d = 0.0
        for r in range(args.repeats):
            c, d = max(c, ceiling()), max(d, data_path(r))
        # Ray actor pool over every core: wall clock (with Ray and actor start-up) and busy throughput
        cores = os.cpu_count() or 1
        ray_run = run_embed(EmbedConfig(model_url, data, os.path.join(tmp, "ray"), progress=False))
        ray_rate = ray_run.clips / (ray_run.busy_s / min(cores, len(manifest.shards)))
    per_clip_audio = audio_s / len(samples)
    print(f"preset {args.preset}, {len(samples)} clips of {per_clip_audio:.1f} s at {rate} Hz, one torch thread per core")
    print(f"ceiling (forward on in-memory tensors): {c:7.1f} clips/s/core  ({c * per_clip_audio:6.0f}x real time/core)")
    print(f"data path (tar+FLAC+forward+npz)      : {d:7.1f} clips/s/core  ({d * per_clip_audio:6.0f}x real time/core)"
          f"  ratio to ceiling {d / c:.2f}")
    print(f"Ray actor pool, {cores} cores            : {ray_rate:7.1f} clips/s while busy ({ray_rate * per_clip_audio:6.0f}x "
          f"real time); wall clock incl. Ray + actor start-up {ray_run.seconds:.1f} s")


if __name__ == "__main__":
    main()
