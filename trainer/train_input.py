"""Where a training epoch's batches come from: the in-process loader or the Ray Data shard.

``input="local"`` (:mod:`trainer.data`): every rank reads and decodes its planned shards itself;
the number of steps is known up front, and an epoch can start at any step exactly (mid-epoch
resume yields batches ``k..`` of the uninterrupted epoch).

``input="ray_data"`` (:mod:`trainer.ray_data_input`): read+decode tasks anywhere in the cluster,
``ray.train.get_dataset_shard("train")`` per rank; the ranks stop together when one runs dry,
so the step count is known only at the end. Ray Data has no iterator checkpoint: an epoch
resumed at step ``k`` re-reads the epoch's data from its beginning and *skips* (reads, decodes,
never trains) each rank's first ``k`` batches. Ray Data hands rows to ranks dynamically, so the
skipped batches are about, not exactly, the ones trained before the failure: in that one epoch
a few clips may be trained twice and as many not at all. The log line says so.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from trainer.config import TrainConfig
from trainer.data import EpochPlan, make_loader

__all__ = ["epoch_batches"]


def epoch_batches(cfg: TrainConfig, plan: EpochPlan, *, rank: int, world_size: int, epoch: int,
                  start_step: int = 0, log: Callable[[str], object] = print) -> tuple[Iterator[dict], int | None]:
    """This rank's training batches of ``epoch`` from step ``start_step`` on, and the epoch's
    number of steps (``None`` on the Ray Data path, where it is known only at its end).

    Every rank gets the same number of batches; iterate to the end on every rank."""
    if cfg.loader.input == "local":
        loader = make_loader(plan, cfg.loader, rank=rank, world_size=world_size, epoch=epoch, seed=cfg.seed,
                             train=True, start_step=start_step)
        return iter(loader), start_step + len(loader)
    if cfg.loader.input != "ray_data":
        raise ValueError(f"unknown training input {cfg.loader.input!r}")
    import ray.train

    from trainer.ray_data_input import iter_ray_batches

    shard = ray.train.get_dataset_shard("train")
    if shard is None:
        raise ValueError("input='ray_data' but this Train run has no 'train' dataset: the driver must pass "
                         "TorchTrainer(datasets={'train': trainer.ray_data_input.build_train_dataset(...)})")
    batches = iter_ray_batches(shard, plan, epoch=epoch, seed=cfg.seed, rank=rank)
    if start_step:
        t0, skipped = time.perf_counter(), 0
        for _ in range(start_step):  # every rank skips as many: their per-step all-reduce stays paired
            if next(batches, None) is None:
                break
            skipped += 1
        log(f"[trainer] epoch {epoch} resumed at step {start_step} on the Ray Data path: its data restarted "
            f"from the beginning and {skipped} batches were skipped untrained ({time.perf_counter() - t0:.1f} s); "
            "Ray Data has no iterator checkpoint, so this epoch's clips are only approximately the planned "
            "ones (some may be trained twice, as many not at all)")
    return batches, None
