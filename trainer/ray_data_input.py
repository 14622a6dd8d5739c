"""Training input through Ray Data: decode anywhere in the cluster, bucket in the Train worker.

Driver side, :func:`build_train_dataset` turns an :class:`~trainer.data.EpochPlan` (the shards
the manifest lists) into a Ray Data pipeline:

- ``ray.data.read_webdataset`` selecting only ``*.flac`` / ``*.json`` members, with our own
  decoder :func:`decode_sample` in place of the datasource's default one (which could unpickle
  ``.pyd``/``.pickle`` members; advisory GHSA-hhrp-gw25-jr43): the read tasks (``num_cpus``
  each, placeable on CPU-only nodes through ``ray_remote_args`` such as a ``label_selector``)
  decode FLAC and the JSON metadata into rows ``key, audio (float32 samples as raw bytes),
  labels (multi-hot uint8 as bytes), duration_s``. Decoding in the read operator spares a
  second operator's copy of every clip through the object store.

Pass it to ``TorchTrainer(datasets={"train": ds})``; Ray Train splits it across ranks with
``streaming_split(equal=True)`` (equal rows per rank). Worker side, :func:`iter_ray_batches`
reads ``ray.train.get_dataset_shard("train")`` and runs the same shuffle buffer, crop,
duration bucketing and collate as the in-process loader (:mod:`trainer.bucketing`,
:mod:`trainer.collate`).

Epoch semantics on this path: each rank receives an equal share of rows, every row is batched
(partial buckets are flushed at the end), and with ``sync=True`` the ranks agree before every
step that all of them still have a batch (one 1-element all-reduce), so no rank waits on a
collective the others never join. The tail lost is the few batches by which one rank's
bucketing outnumbers the shortest rank's. Not (yet) on this path: mid-epoch resume (Ray Data
has no iterator checkpoint) and ``sampling="balanced"``; use the in-process loader for those.
"""

from __future__ import annotations

import functools
import json
from typing import Iterator

import numpy as np

from data_prep.audio import decode_flac
from trainer.bucketing import BatchItem, BucketBatcher, buffer_shuffle
from trainer.collate import collate
from trainer.data import EpochPlan

__all__ = ["build_train_dataset", "decode_sample", "iter_ray_batches", "MEMBER_SUFFIXES"]

MEMBER_SUFFIXES = ("flac", "json")  # the only tar members ever read


def _select_member(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in MEMBER_SUFFIXES


def decode_sample(sample: dict, num_classes: int) -> dict:
    """The read operator's decoder: one sample's raw ``flac``/``json`` bytes -> a decoded row
    ``key, audio (float32 samples as raw bytes), labels (multi-hot uint8 as bytes), duration_s``.

    Replaces ``read_webdataset``'s default decoder entirely (that one could unpickle members).
    Raw bytes columns move through Arrow far cheaper than variable-shaped tensor columns.
    """
    key, url = sample["__key__"], sample.get("__url__", "?")
    try:
        meta = json.loads(sample["json"])
        wave = decode_flac(sample["flac"])[0]
    except Exception as e:  # a corrupt member: name it; the read task fails with this message
        raise ValueError(f"{url}: sample {key}: {e}") from e
    multi_hot = np.zeros(num_classes, dtype=np.uint8)
    multi_hot[list(meta["labels"])] = 1
    return {"key": str(key).rsplit("/", 1)[-1], "audio": wave.astype(np.float32, copy=False).tobytes(),
            "labels": multi_hot.tobytes(), "duration_s": float(meta["duration_s"])}


def build_train_dataset(plan: EpochPlan, *, seed: int = 0, decode_num_cpus: float = 1.0,
                        decode_concurrency: int | None = None, ray_remote_args: dict | None = None):
    """The training split of ``plan`` as a Ray Data dataset of decoded rows (lazy, streaming).

    Shard files are shuffled per execution with ``seed``. ``decode_num_cpus`` per read+decode
    task, at most ``decode_concurrency`` at once (None = Ray decides); ``ray_remote_args`` go to
    those tasks (e.g. ``{"label_selector": {"node-group": "cpu-data"}}`` keeps decoding off the
    GPU nodes).
    """
    import ray.data
    from ray.data import FileShuffleConfig

    from runtime import storage

    urls = list(plan.shard_urls)
    filesystem = None
    if urls and urls[0].startswith("s3://"):
        import pyarrow.fs

        filesystem = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(storage.s3_filesystem()))
        urls = [u[len("s3://"):] for u in urls]
    return ray.data.read_webdataset(urls, filesystem=filesystem, fileselect=_select_member,
                                    suffixes=list(MEMBER_SUFFIXES), shuffle=FileShuffleConfig(seed=seed),
                                    decoder=functools.partial(decode_sample, num_classes=plan.num_classes),
                                    num_cpus=decode_num_cpus, concurrency=decode_concurrency,
                                    ray_remote_args=ray_remote_args)


def _rows(shard, batch_rows: int, prefetch_batches: int) -> Iterator[dict]:
    # pandas batches: the read tasks emit pandas blocks, so this format costs no conversion and
    # the audio bytes are viewed in place
    for b in shard.iter_batches(batch_size=batch_rows, batch_format="pandas", prefetch_batches=prefetch_batches):
        for key, audio, labels, duration in zip(b["key"].tolist(), b["audio"].tolist(), b["labels"].tolist(),
                                                b["duration_s"].tolist()):
            yield {"key": key, "audio": np.frombuffer(audio, dtype=np.float32),
                   "labels": np.flatnonzero(np.frombuffer(labels, dtype=np.uint8)).tolist(),
                   "duration_s": float(duration)}


def _everyone_has_a_batch(mine: bool) -> bool:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mine
    flag = torch.tensor([1 if mine else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def iter_ray_batches(shard, plan: EpochPlan, *, epoch: int, seed: int, rank: int, sync: bool = True,
                     batch_rows: int = 64, prefetch_batches: int = 2) -> Iterator[dict]:
    """Training batches from a Ray Data shard (``ray.train.get_dataset_shard("train")``).

    Shuffle buffer, crop and duration bucketing as the plan says, in this worker; same batch
    dicts as :class:`trainer.data.ShardStream`. With ``sync`` (and torch.distributed up), stops
    on every rank as soon as one rank has no batch left.
    """
    if plan.sampling != "natural":
        raise ValueError(f"sampling={plan.sampling!r} needs the in-process loader; the Ray Data path "
                         "draws every row once")
    rng = np.random.default_rng([seed, epoch, rank, 40_000])
    batcher = BucketBatcher(plan.duration_bins, batch_seconds=plan.batch_seconds,
                            max_batch_clips=plan.max_batch_clips, max_crop_s=plan.max_crop_s, rng=rng)

    def batches() -> Iterator[list[BatchItem]]:
        for row in buffer_shuffle(_rows(shard, batch_rows, prefetch_batches), plan.shuffle_buffer, rng):
            b = batcher.add(row["duration_s"], row)
            if b is not None:
                yield b
        yield from batcher.flush()

    it = batches()
    while True:
        b = next(it, None)
        if sync and not _everyone_has_a_batch(b is not None):
            return
        if b is None:
            return
        yield collate(b, plan.num_classes, plan.sample_rate)
