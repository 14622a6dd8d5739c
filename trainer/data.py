"""Streaming shards into bucketed batches, split across DDP ranks and loader workers.

Every (rank, loader worker) pair is one *stream*. Training streams:

1. take the split's shards from the manifest (local or ``s3://``, read with
   ``data_prep.shards.iter_shard``: tar members ``<key>.flac`` + ``<key>.json``, FLAC decode only);
2. shuffle the shard order with a seed shared by all ranks, then give stream ``i`` of ``n``
   every ``n``-th shard (with fewer shards than streams: every shard, every ``n``-th sample);
3. shuffle samples in a bounded buffer, crop long clips and form duration-bucketed batches
   (:class:`trainer.bucketing.BucketBatcher`);
4. never end: when its shards are used up the stream starts a new cycle with a new shard order.

The training loop takes exactly ``steps_per_epoch`` batches per rank, the same number on every
rank (:func:`plan_epoch` derives it on the driver from the manifest's per-sample durations), so no
rank runs dry and DDP cannot hang on uneven shards. An epoch is therefore *nominal*: about one
pass over the data per epoch in expectation; a rank whose shards hold more audio sees its tail
in a later epoch (shard order is reshuffled every cycle) rather than at the cost of a hang.

Evaluation streams read the split once, in manifest order, without shuffling or cropping, and
every clip lands on exactly one rank.

All randomness is derived from ``(seed, epoch, rank, worker, cycle)``: an epoch is reproducible,
and resuming at an epoch boundary needs no iterator state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_prep.manifest import Manifest
from data_prep.shards import iter_shard
from trainer.bucketing import BatchItem, BucketBatcher, estimate_duration_bins
from trainer.config import DataConfig

__all__ = ["EpochPlan", "plan_epoch", "ShardStream", "make_loader", "collate"]


@dataclass(frozen=True)
class EpochPlan:
    """What every rank must agree on; computed once on the driver and passed to the workers."""

    shard_urls: tuple[str, ...]
    num_classes: int
    sample_rate: int
    duration_bins: tuple[float, ...]
    steps_per_epoch: int  # per rank; 0 for evaluation plans
    num_clips: int
    audio_seconds: float
    batches_per_pass: int  # bucketed batches one pass over the split gives (simulated)

    def to_dict(self) -> dict:
        return {**self.__dict__, "shard_urls": list(self.shard_urls), "duration_bins": list(self.duration_bins)}

    @classmethod
    def from_dict(cls, d: dict) -> EpochPlan:
        return cls(**{**d, "shard_urls": tuple(d["shard_urls"]), "duration_bins": tuple(d["duration_bins"])})


def plan_epoch(manifest: Manifest, split: str, cfg: DataConfig, world_size: int, *, train: bool,
               seed: int = 0) -> EpochPlan:
    """Bucket bins and steps per epoch from the manifest's per-sample durations (no decoding).

    ``steps_per_epoch = ceil(B / world_size)`` where ``B`` is the number of batches the bucket
    batcher forms over one shuffled pass of the split (or ``cfg.steps_per_epoch`` when set).
    """
    shards = manifest.shards_of(split)
    durations = np.asarray([d for s in shards for d in s.durations_s], dtype=np.float64)
    if durations.size == 0:
        raise ValueError(f"{manifest.url}: split {split!r} has no clips")
    crop = cfg.max_crop_s if train else None
    eff = np.minimum(durations, crop) if crop else durations
    bins = estimate_duration_bins(eff, cfg.num_buckets)
    rng = np.random.default_rng(seed)
    batcher = BucketBatcher(bins, batch_seconds=cfg.batch_seconds if train else cfg.eval_batch_seconds,
                            max_batch_clips=cfg.max_batch_clips if train else None, max_crop_s=crop, rng=rng)
    order = rng.permutation(durations.size) if train else np.arange(durations.size)
    batches = sum(1 for _ in batcher((durations[i], None) for i in order))
    steps = (cfg.steps_per_epoch or math.ceil(batches / world_size)) if train else 0
    return EpochPlan(shard_urls=tuple(manifest.shard_urls(split)), num_classes=manifest.num_classes,
                     sample_rate=manifest.sample_rate, duration_bins=tuple(float(b) for b in bins),
                     steps_per_epoch=int(steps), num_clips=int(durations.size),
                     audio_seconds=float(durations.sum()), batches_per_pass=int(batches))


def collate(batch: list[BatchItem], num_classes: int, sample_rate: int) -> dict:
    """Bucketed items -> padded tensors.

    Returns ``{"waveform": (B, N) zero-padded, "lengths": (B,) samples, "targets": (B, C) multi-hot,
    "durations": (B,) seconds of the full clip, "keys": [str]}``.
    """
    waves = []
    for it in batch:
        audio = it.item["audio"]
        start = int(round(it.offset_s * sample_rate))
        n = min(int(round(it.duration_s * sample_rate)), audio.size - start)
        waves.append(audio[start:start + n])
    lengths = torch.tensor([w.size for w in waves], dtype=torch.long)
    wave = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        wave[i, :w.size] = torch.from_numpy(w)
    targets = torch.zeros(len(batch), num_classes)
    for i, it in enumerate(batch):
        targets[i, it.item["labels"]] = 1.0
    return {"waveform": wave, "lengths": lengths, "targets": targets,
            "durations": torch.tensor([it.item["duration_s"] for it in batch], dtype=torch.float64),
            "keys": [it.item["key"] for it in batch]}


class ShardStream(IterableDataset):
    """Batches for one rank (split further by DataLoader worker inside :meth:`__iter__`).

    Args:
        plan: the split's :class:`EpochPlan` (shard URLs, bins, classes, sample rate).
        cfg: data options (budget, crop, buffer).
        rank, world_size: this rank and the number of ranks.
        epoch, seed: derive every random choice; same epoch and seed give the same batches.
        train: training stream (infinite, shuffled, cropped) or evaluation stream (one ordered
            pass, full clips, each clip on exactly one rank).
    """

    def __init__(self, plan: EpochPlan, cfg: DataConfig, *, rank: int, world_size: int, epoch: int, seed: int,
                 train: bool):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.plan, self.cfg = plan, cfg
        self.rank, self.world_size, self.epoch, self.seed, self.train = rank, world_size, epoch, seed, train

    def _stream_index(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def _samples(self, urls: list[str], stream: int, streams: int) -> Iterator[dict]:
        """Samples of this stream: whole shards when there are enough, else every n-th sample."""
        if len(urls) >= streams:
            chosen, every = urls[stream::streams], None
        else:
            chosen, every = urls, streams
        i = 0
        for url in chosen:
            for s in iter_shard(url):
                if every is None or i % every == stream:
                    yield {"key": s.key, "audio": s.audio, "labels": list(s.meta["labels"]),
                           "duration_s": s.audio.size / self.plan.sample_rate}
                i += 1

    def _shuffled(self, samples: Iterator[dict], rng: np.random.Generator) -> Iterator[dict]:
        size = self.cfg.shuffle_buffer
        if size <= 1:
            yield from samples
            return
        buf: list[dict] = []
        for s in samples:
            if len(buf) < size:
                buf.append(s)
                continue
            j = int(rng.integers(len(buf)))
            buf[j], s = s, buf[j]
            yield s
        rng.shuffle(buf)
        yield from buf

    def __iter__(self) -> Iterator[dict]:
        stream, streams = self._stream_index()
        p = self.plan
        if not self.train:
            batcher = BucketBatcher(p.duration_bins, batch_seconds=self.cfg.eval_batch_seconds,
                                    rng=np.random.default_rng(0))
            samples = self._samples(list(p.shard_urls), stream, streams)
            for batch in batcher((s["duration_s"], s) for s in samples):
                yield collate(batch, p.num_classes, p.sample_rate)
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, stream])
        batcher = BucketBatcher(p.duration_bins, batch_seconds=self.cfg.batch_seconds,
                                max_batch_clips=self.cfg.max_batch_clips, max_crop_s=self.cfg.max_crop_s, rng=rng)
        cycle = 0
        while True:  # infinite: the loop takes exactly steps_per_epoch batches
            order = np.random.default_rng([self.seed, self.epoch, 10_000 + cycle]).permutation(len(p.shard_urls))
            seen = 0
            for s in self._shuffled(self._samples([p.shard_urls[i] for i in order], stream, streams), rng):
                seen += 1
                batch = batcher.add(s["duration_s"], s)
                if batch is not None:
                    yield collate(batch, p.num_classes, p.sample_rate)
            if seen == 0:
                raise RuntimeError(f"training stream {stream}/{streams} received no samples from "
                                   f"{len(p.shard_urls)} shards; check the manifest's shards")
            cycle += 1


def make_loader(plan: EpochPlan, cfg: DataConfig, *, rank: int, world_size: int, epoch: int, seed: int,
                train: bool) -> DataLoader:
    """A DataLoader over :class:`ShardStream` (batches are formed inside the workers)."""
    ds = ShardStream(plan, cfg, rank=rank, world_size=world_size, epoch=epoch, seed=seed, train=train)
    workers = cfg.loader_workers
    return DataLoader(ds, batch_size=None, num_workers=workers,
                      # forking a Ray worker process can deadlock; forkserver is what Ray recommends
                      multiprocessing_context="forkserver" if workers > 0 else None,
                      prefetch_factor=4 if workers > 0 else None, persistent_workers=False)
