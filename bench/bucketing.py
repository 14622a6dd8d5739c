"""Bucketed batching vs pad-to-longest random batches vs fixed 10 s crop/pad, in one run.

On a web-like long-tailed duration distribution (log-normal, median ~3 s, 0.5..60 s) the three
batching strategies get the same memory budget (a padded batch holds at most ``--batch-seconds``
of audio, i.e. 16 clips x 10 s by default) and the same 10 s crop of long clips:

- bucketed: trainer.bucketing.BucketBatcher (duration buckets, variable clips per batch);
- random:   shuffled batches of budget/10 clips, padded to the longest clip in the batch;
- fixed:    every clip cropped or zero-padded to exactly 10 s, budget/10 clips per batch.

It prints the padding fraction of each, then times real training steps (log-mel front end +
forward + backward + Adam on the chosen preset's network, synthetic audio, no loader) for
``--seconds`` per strategy and prints clips/s, audio-seconds/s (real audio, padding excluded)
and the ratios side by side.

    python bench/bucketing.py                    # cpu-small network, 20 s per strategy
    python bench/bucketing.py --preset paper --seconds 60
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import torch


from trainer.bucketing import BucketBatcher, estimate_duration_bins, padding_fraction, random_batches  # noqa: E402
from trainer.config import preset  # noqa: E402
from trainer.frontend import LogMel  # noqa: E402
from trainer.model import WeakLabelCNN  # noqa: E402


def web_like_durations(n: int, seed: int) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).lognormal(np.log(3.0), 1.0, n), 0.5, 60.0)


def strategies(d: np.ndarray, batch_seconds: float, crop: float, num_buckets: int, seed: int) -> dict:
    """name -> list of batches, each a list of (padded_len_s, used_s) per clip."""
    per_batch = int(batch_seconds // crop)
    bins = estimate_duration_bins(np.minimum(d[:5000], crop), num_buckets)
    bucketed = BucketBatcher(bins, batch_seconds=batch_seconds, max_batch_clips=4 * per_batch, max_crop_s=crop,
                             rng=np.random.default_rng(seed))
    b = [[e.duration_s for e in batch] for batch in bucketed((x, i) for i, x in enumerate(d))]
    r = random_batches(d, per_batch, np.random.default_rng(seed), max_crop_s=crop)
    f = [[crop] * len(x) for x in random_batches(d, per_batch, np.random.default_rng(seed))]
    used_f = [list(np.minimum(x, crop)) for x in random_batches(d, per_batch, np.random.default_rng(seed))]
    return {"bucketed": (b, b), "random": (r, r), "fixed-10s": (f, used_f)}


class _Timer:
    """Training steps of one strategy on its own model copy."""

    def __init__(self, batches, used, cfg, seed: int):
        torch.manual_seed(seed)
        self.batches, self.used, self.cfg = batches, used, cfg
        self.model = WeakLabelCNN(cfg.model, cfg.frontend.n_mels)
        self.frontend = LogMel(cfg.frontend, min_frames=cfg.model.segment_frames)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.rng = np.random.default_rng(seed)
        self.i = self.steps = 0
        self.busy = self.clips = self.audio = 0.0

    def step(self) -> None:
        sr = self.cfg.frontend.sample_rate
        lens, real = self.batches[self.i % len(self.batches)], self.used[self.i % len(self.batches)]
        self.i += 1
        wave = torch.zeros(len(lens), int(max(lens) * sr))
        for j, x in enumerate(real):  # real audio; the rest of each row is padding
            k = int(x * sr)
            wave[j, :k] = torch.from_numpy(self.rng.standard_normal(k).astype(np.float32) * 0.1)
        # fixed-10s: the model sees the padded 10 s as content (no mask), as fixed-length pipelines do
        lengths = torch.tensor([int(x * sr) for x in lens])
        y = torch.from_numpy((self.rng.random((len(lens), self.cfg.model.num_classes)) < 0.05).astype(np.float32))
        t0 = time.perf_counter()
        x, nf = self.frontend(wave, lengths)
        loss = torch.nn.functional.binary_cross_entropy(self.model(x, nf).clip.clamp(1e-7, 1 - 1e-7), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.busy += time.perf_counter() - t0
        self.steps += 1
        self.clips += len(lens)
        self.audio += float(sum(real))


def time_training(plans: dict, cfg, seconds: float, seed: int) -> dict:
    """Round-robin one step of each strategy at a time, so load from other processes on a shared
    machine hits every strategy alike; stops when each has ``seconds`` of compute."""
    timers = {name: _Timer(lens, used, cfg, seed) for name, (lens, used) in plans.items()}
    for t in timers.values():  # warm-up step (allocator, threads), not timed
        t.step()
        t.busy = t.clips = t.audio = 0.0
        t.steps = 0
    while min(t.busy for t in timers.values()) < seconds:
        for t in timers.values():
            if t.busy < seconds:
                t.step()
    return {name: {"steps": t.steps, "clips_per_s": t.clips / t.busy, "audio_s_per_s": t.audio / t.busy}
            for name, t in timers.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu-small", help="network/front end to time (default: cpu-small)")
    p.add_argument("--clips", type=int, default=20000, help="clips in the duration sample (default: 20000)")
    p.add_argument("--batch-seconds", type=float, default=160.0, help="padded audio per batch (default: 160)")
    p.add_argument("--crop", type=float, default=10.0, help="crop of long clips in seconds (default: 10)")
    p.add_argument("--num-buckets", type=int, default=30, help="duration buckets (default: 30)")
    p.add_argument("--seconds", type=float, default=20.0, help="compute time per strategy (default: 20; 0 = skip)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = p.parse_args(argv)

    d = web_like_durations(args.clips, args.seed)
    print(f"durations: {len(d)} clips, median {np.median(d):.2f} s, mean {d.mean():.2f} s, "
          f"{100 * (d > args.crop).mean():.1f}% longer than {args.crop:g} s (cropped)")
    cfg = preset(args.preset)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=527))  # AudioSet-sized head
    plans = strategies(d, args.batch_seconds, args.crop, args.num_buckets, args.seed)
    rows = {}
    for name, (lens, used) in plans.items():
        pad = 1 - sum(map(sum, used)) / sum(len(b) * max(b) for b in lens)  # padded share of batch tensors
        rows[name] = {"padding": pad, "batches": len(lens), "clips_per_batch": float(np.mean([len(x) for x in lens]))}
    assert abs(rows["bucketed"]["padding"] - padding_fraction(plans["bucketed"][0])) < 1e-9
    if args.seconds > 0:
        for name, r in time_training(plans, cfg, args.seconds, args.seed).items():
            rows[name].update(r)
    print(f"\n{'strategy':<10} {'padding':>8} {'batches':>8} {'clips/batch':>12} {'clips/s':>9} {'audio s/s':>10}")
    for name, r in rows.items():
        print(f"{name:<10} {100 * r['padding']:>7.1f}% {r['batches']:>8d} {r['clips_per_batch']:>12.1f} "
              f"{r.get('clips_per_s', float('nan')):>9.1f} {r.get('audio_s_per_s', float('nan')):>10.1f}")
    if args.seconds > 0:
        b = rows["bucketed"]
        print(f"\nbucketed vs random: {b['audio_s_per_s'] / rows['random']['audio_s_per_s']:.2f}x audio s/s, "
              f"{b['clips_per_s'] / rows['random']['clips_per_s']:.2f}x clips/s; "
              f"bucketed vs fixed-10s: {b['audio_s_per_s'] / rows['fixed-10s']['audio_s_per_s']:.2f}x audio s/s, "
              f"{b['clips_per_s'] / rows['fixed-10s']['clips_per_s']:.2f}x clips/s  "
              f"(preset {args.preset}, {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
