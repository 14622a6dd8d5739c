"""Training throughput of the real Ray Train pipeline: 1 vs 2 DDP workers, and the data-wait share.

Prepares (once) a synthetic web-like corpus with data_prep (``load_synthetic("source")``:
long-tailed clip lengths, 27 classes) at the preset's sample rate, then runs
``trainer.main.run`` with 1 and with 2 workers on it (fresh run names, fixed steps per epoch)
and prints, for the last epoch of each (the first warms up), clips/s and audio-seconds/s summed
over ranks, the share of step time spent waiting for the next batch, and the 2-vs-1 ratio.

    python bench/train_throughput.py                       # cpu-small, 400 clips, 2 x 30 steps
    python bench/train_throughput.py --data s3://b/synth    # existing shards instead
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


from runtime import storage  # noqa: E402
from trainer.config import apply_overrides, preset  # noqa: E402


def prepare(out: str, clips: int, sample_rate: int) -> str:
    from data_prep.pipeline import run_prep
    from data_prep.shards import ShardConfig
    from data_prep.sources.synthetic import load_synthetic

    if not storage.exists(storage.join(out, "manifest.json")):
        run_prep(load_synthetic("source", num_clips=clips), out,
                 ShardConfig(sample_rate=sample_rate, max_clips_per_shard=max(8, clips // 16)),
                 executor="local", progress=False)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="shards URL (default: synthetic corpus prepared under --work)")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "weaksound-bench"),
                   help="folder for the synthetic corpus and the runs (default: $TMPDIR/weaksound-bench)")
    p.add_argument("--preset", default="cpu-small", help="trainer preset (default: cpu-small)")
    p.add_argument("--clips", type=int, default=400, help="synthetic clips to prepare (default: 400)")
    p.add_argument("--steps", type=int, default=30, help="steps per epoch and rank (default: 30)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last is measured (default: 2)")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="DataLoader processes per Train worker (default: 0 = decode in the worker)")
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default: 1,2)")
    args = p.parse_args(argv)

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # cheap per-epoch reports
    from trainer.main import run

    base = preset(args.preset)
    data = args.data or prepare(os.path.join(args.work, f"synthetic-{base.frontend.sample_rate}"), args.clips,
                                base.frontend.sample_rate)
    rows = []
    for n in [int(x) for x in args.workers.split(",")]:
        name = f"tput-w{n}-{int(time.time())}"
        cfg = apply_overrides(base, [f"data={json.dumps(data)}", f"out={json.dumps(os.path.join(args.work, 'runs'))}",
                                     f"name={json.dumps(name)}", f"workers={n}", f"epochs={args.epochs}",
                                     f"loader.steps_per_epoch={args.steps}",
                                     f"loader.loader_workers={args.loader_workers}"])
        summary = run(cfg, progress=False)
        last = json.loads(storage.read_text(storage.join(summary["run_dir"], "metrics.json")))["epochs"][-1]
        rows.append((n, last))
    print(f"\n{'workers':>7} {'clips/s':>9} {'audio s/s':>10} {'data wait':>10} {'clips/batch':>12}")
    for n, e in rows:
        print(f"{n:>7d} {e['clips_per_s']:>9.1f} {e['audio_s_per_s']:>10.1f} {100 * e['data_wait_fraction']:>9.1f}% "
              f"{e['train_clips'] / (n * args.steps):>12.1f}")
    if len(rows) >= 2:
        (n0, a), (n1, b) = rows[0], rows[-1]
        print(f"\n{n1} vs {n0} workers: {b['clips_per_s'] / a['clips_per_s']:.2f}x clips/s, "
              f"{b['audio_s_per_s'] / a['audio_s_per_s']:.2f}x audio s/s (preset {args.preset}, "
              f"{os.cpu_count()} cores on this machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
