"""Shards -> bucketed batches for every DDP rank: exact epochs, resumable at any step.

Training (the plan is :mod:`trainer.batch_plan`; sampling is :mod:`trainer.sampling`):

1. :func:`plan_epoch` (driver, once) reads the manifest's per-clip durations (and, for
   ``sampling="balanced"``, the per-clip labels, turned into draw weights); no audio is decoded.
2. Every rank plans the same epoch from that metadata: shuffled shard order, contiguous segments
   of the sequence per *stream* (a rank has ``max(1, loader_workers)`` streams, one per DataLoader
   worker), shuffle buffer + duration bucketing per stream, then the same number of batches on
   every stream (surplus batches handed over, largest batches halved where short). Each drawn
   clip is in exactly one batch, and every rank runs the same number of steps in every epoch.
   Tail: none when the plan was made with ``epochs``; otherwise an epoch whose bucketing forms
   more batches than epoch 0 drops its smallest surplus batches (see :func:`plan_epoch`).
3. The loader executes its part of the plan: it reads its shards sequentially, decodes only the
   clips its remaining batches need, and emits the planned batches in order. Started at step
   ``k`` (mid-epoch resume), it yields exactly batches ``k..`` of the uninterrupted epoch and
   skips whole shards (and never decodes clips) that only earlier batches used.

With ``DataConfig.steps_per_epoch = N > 0`` an epoch is instead ``N`` steps taken from
consecutive exact passes (pass ``p`` of epoch ``e`` is planned with ``(seed, e, p)``).

Evaluation streams read the split once, in manifest order, without shuffling or cropping, and
every clip lands on exactly one rank (ranks may get different batch counts; evaluation runs no
collective per batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_prep.manifest import Manifest
from data_prep.shards import iter_shard
from runtime import storage
from trainer.batch_plan import BatchingSpec, PassPlan, plan_pass
from trainer.bucketing import BatchItem, BucketBatcher, estimate_duration_bins
from trainer.collate import collate, pad_waveforms
from trainer.config import DataConfig
from trainer.sampling import SAMPLING_MODES, balanced_weights, clip_labels, epoch_multiplicities

__all__ = ["EpochPlan", "plan_epoch", "pass_of", "steps_in_epoch", "ShardStream", "make_loader", "collate",
           "pad_waveforms"]


@dataclass(frozen=True)
class EpochPlan:
    """What every rank must agree on; computed once on the driver and passed to the workers."""

    shard_urls: tuple[str, ...]
    num_classes: int
    sample_rate: int
    duration_bins: tuple[float, ...]
    steps_per_epoch: int  # per rank, of epoch 0 (exact passes vary by a few steps per epoch); 0 for eval
    num_clips: int
    audio_seconds: float
    batches_per_pass: int  # bucketed batches of epoch 0's pass, over all streams
    shard_sizes: tuple[int, ...] = ()  # clips per shard, manifest order
    clip_durations: tuple[float, ...] = ()  # seconds per clip, manifest order
    clip_weights: tuple[float, ...] = ()  # draw probabilities ("balanced"); empty = natural
    sampling: str = "natural"
    world_size: int = 1
    streams_per_rank: int = 1
    seed: int = 0
    batch_seconds: float = 160.0
    max_batch_clips: int | None = None
    max_crop_s: float | None = None
    shuffle_buffer: int = 0
    fixed_steps: int = 0  # DataConfig.steps_per_epoch: 0 = one exact pass per epoch
    steps_per_stream: int = 0  # T of every exact pass (0 = each pass its own ceil(M / streams))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> EpochPlan:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def spec(self) -> BatchingSpec:
        return BatchingSpec(self.duration_bins, self.batch_seconds, self.max_batch_clips, self.max_crop_s,
                            self.shuffle_buffer)


def plan_epoch(manifest: Manifest, split: str, cfg: DataConfig, world_size: int, *, train: bool,
               seed: int = 0, sampling: str = "natural", epochs: int | None = None) -> EpochPlan:
    """Bucket bins, per-clip metadata and steps per epoch from the manifest (no decoding).

    ``sampling``: ``"natural"`` draws every clip once per epoch; ``"balanced"`` draws as many
    clips with replacement, weighted from the clips' labels so classes are seen about equally
    often (see :mod:`trainer.sampling`). Training plans use ``max(1, cfg.loader_workers)``
    streams per rank: the loader must be built with the same ``loader_workers``.

    Every epoch has the same ``steps_per_epoch``. With ``epochs`` given, it is the largest that
    any of those epochs needs, so no epoch drops a clip (each epoch is planned once here: a few
    seconds per million clips). Without, it is epoch 0's, and a later epoch whose bucketing
    forms more batches drops its smallest surplus batches (the tail, normally a batch or two).
    """
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    shards = manifest.shards_of(split)
    durations = np.asarray([d for s in shards for d in s.durations_s], dtype=np.float64)
    if durations.size == 0:
        raise ValueError(f"{manifest.url}: split {split!r} has no clips")
    crop = cfg.max_crop_s if train else None
    eff = np.minimum(durations, crop) if crop else durations
    bins = estimate_duration_bins(eff, cfg.num_buckets)
    weights: tuple[float, ...] = ()
    if train and sampling == "balanced":
        weights = tuple(balanced_weights(clip_labels(manifest, split), manifest.num_classes).tolist())
    plan = EpochPlan(shard_urls=tuple(manifest.shard_urls(split)), num_classes=manifest.num_classes,
                     sample_rate=manifest.sample_rate, duration_bins=tuple(float(b) for b in bins),
                     steps_per_epoch=0, num_clips=int(durations.size), audio_seconds=float(durations.sum()),
                     batches_per_pass=0, shard_sizes=tuple(s.num_samples for s in shards),
                     clip_durations=tuple(durations.tolist()), clip_weights=weights, sampling=sampling,
                     world_size=world_size, streams_per_rank=max(1, cfg.loader_workers) if train else 1,
                     seed=seed, batch_seconds=cfg.batch_seconds if train else cfg.eval_batch_seconds,
                     max_batch_clips=cfg.max_batch_clips if train else None, max_crop_s=crop,
                     shuffle_buffer=cfg.shuffle_buffer if train else 0,
                     fixed_steps=cfg.steps_per_epoch if train else 0)
    if not train:
        return plan
    first = pass_of(plan, epoch=0, pass_index=0, seed=seed)
    t = first.steps_per_stream
    if not plan.fixed_steps and epochs:
        t = max([t] + [pass_of(plan, epoch=e, pass_index=0, seed=seed).steps_per_stream for e in range(1, epochs)])
    steps = plan.fixed_steps or t * plan.streams_per_rank
    return EpochPlan(**{**plan.__dict__, "steps_per_epoch": int(steps), "batches_per_pass": first.num_batches,
                        "steps_per_stream": 0 if plan.fixed_steps else int(t)})


def pass_of(plan: EpochPlan, *, epoch: int, pass_index: int, seed: int) -> PassPlan:
    """The exact pass ``pass_index`` of ``epoch`` (all streams of all ranks)."""
    multiplicity = None
    if plan.clip_weights:
        rng = np.random.default_rng([seed, epoch, pass_index, 30_000])
        multiplicity = epoch_multiplicities(np.asarray(plan.clip_weights), plan.num_clips, rng)
    return plan_pass(plan.clip_durations, plan.shard_sizes, plan.spec,
                     num_streams=plan.world_size * plan.streams_per_rank, seed=seed, epoch=epoch,
                     pass_index=pass_index, multiplicity=multiplicity, steps_per_stream=plan.steps_per_stream or None)


def steps_in_epoch(plan: EpochPlan, epoch: int, seed: int) -> int:
    """Steps every rank runs in ``epoch``: ``plan.steps_per_epoch``, the same in every epoch."""
    if plan.fixed_steps or plan.steps_per_stream:
        return plan.steps_per_epoch
    return pass_of(plan, epoch=epoch, pass_index=0, seed=seed).steps_per_stream * plan.streams_per_rank


@dataclass
class _RankPass:
    """One pass as seen by one rank: its streams' batches as rows (position, offset, duration, clip)."""

    steps: int  # steps of this rank in this pass (= T x streams per rank)
    streams: list[list[np.ndarray]] = field(default_factory=list)
    own: list[int] = field(default_factory=list)


def _rank_pass(p: PassPlan, rank: int, k: int) -> _RankPass:
    rp = _RankPass(steps=p.steps_per_stream * k)
    for s in range(rank * k, rank * k + k):
        rp.streams.append([np.column_stack([b, p.sequence[b[:, 0].astype(np.int64)]]) for b in p.streams[s]])
        rp.own.append(p.own[s])
    return rp


def _read_members(url: str, wanted: set[int], durations: dict[int, float], num_classes: int
                  ) -> Iterator[tuple[int, dict]]:
    """Decode only the samples (stored-order index) in ``wanted`` of one shard, through the shards'
    own checked reader, and stop after the last; each must last what the manifest says."""
    for index, sample in zip(sorted(wanted), iter_shard(url, num_classes=num_classes, wanted=wanted)):
        duration = float(sample.meta["duration_s"])
        if abs(duration - durations[index]) > 1e-3:
            raise ValueError(f"{url}: sample {index} ({sample.key}) lasts {duration} s but the manifest says "
                             f"{durations[index]} s; the manifest does not match the shards")
        yield index, {"key": sample.key, "audio": sample.audio, "labels": list(sample.meta["labels"]),
                      "duration_s": duration}


class ShardStream(IterableDataset):
    """Batches for one rank (one exact epoch from ``start_step``, or one evaluation pass).

    Args:
        plan: the split's :class:`EpochPlan`.
        cfg: data options; for training they must match the plan's ``loader_workers``.
        rank, world_size: this rank and the number of ranks (training: as planned).
        epoch, seed: with the plan, determine every batch.
        train: training stream (exact epoch, shuffled, cropped) or evaluation stream.
        start_step: first step of the epoch to produce (mid-epoch resume); training only.
    """

    def __init__(self, plan: EpochPlan, cfg: DataConfig, *, rank: int, world_size: int, epoch: int, seed: int,
                 train: bool, start_step: int = 0):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.plan, self.cfg = plan, cfg
        self.rank, self.world_size, self.epoch, self.seed, self.train = rank, world_size, epoch, seed, train
        self.start_step = start_step
        self._passes: list[_RankPass] = []
        if not train:
            return
        if world_size != plan.world_size:
            raise ValueError(f"the plan was made for {plan.world_size} ranks, not {world_size}: re-plan the epoch")
        if max(1, cfg.loader_workers) != plan.streams_per_rank:
            raise ValueError(f"the plan has {plan.streams_per_rank} streams per rank but loader_workers="
                             f"{cfg.loader_workers}: plan with the same loader_workers")
        k = plan.streams_per_rank
        total = 0
        while not self._passes or (plan.fixed_steps and total < plan.fixed_steps):
            rp = _rank_pass(pass_of(plan, epoch=epoch, pass_index=len(self._passes), seed=seed), rank, k)
            self._passes.append(rp)
            total += rp.steps
        self.steps_per_epoch = plan.fixed_steps or total
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside the epoch's {self.steps_per_epoch} steps")

    def __len__(self) -> int:
        """Batches this rank still yields (training); evaluation streams have no fixed length."""
        if not self.train:
            raise TypeError("evaluation streams have no planned length")
        return self.steps_per_epoch - self.start_step

    # -- training ------------------------------------------------------------------------------

    def _work(self, first: int, every: int) -> Iterator[tuple[int, int, int, int]]:
        """(pass, stream, first batch, end batch) runs of the steps first, first+every, ... < steps."""
        k = self.plan.streams_per_rank
        base = 0
        for p, rp in enumerate(self._passes):
            end = min(base + rp.steps, self.steps_per_epoch)
            g0 = first if first >= base else first + -(-(base - first) // every) * every
            local = [g - base for g in range(g0, end, every)]
            if local:
                assert len({i % k for i in local}) == 1, "a loader worker must serve one stream"
                yield p, local[0] % k, local[0] // k, local[-1] // k + 1
            base += rp.steps

    def _execute(self, batches: list[np.ndarray]) -> Iterator[dict]:
        """Read the shards these batches need (ascending positions), emit batches in order."""
        if not batches:
            return
        p = self.plan
        starts = np.concatenate([[0], np.cumsum(p.shard_sizes)])
        batch_of: dict[int, int] = {}
        for j, b in enumerate(batches):
            for pos in b[:, 0].astype(np.int64).tolist():
                batch_of[pos] = j
        missing = [len(b) for b in batches]
        store: dict[int, dict] = {}
        nxt = 0
        rows = np.concatenate(batches)
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        shard_of = np.searchsorted(starts, rows[:, 3].astype(np.int64), side="right") - 1
        i = 0
        while i < len(rows):
            shard = int(shard_of[i])
            j = i
            while j < len(rows) and shard_of[j] == shard:
                j += 1
            members: dict[int, list[int]] = {}
            for pos, clip in zip(rows[i:j, 0].astype(np.int64).tolist(), rows[i:j, 3].astype(np.int64).tolist()):
                members.setdefault(clip - int(starts[shard]), []).append(pos)
            durs = {m: p.clip_durations[int(starts[shard]) + m] for m in members}
            for member, sample in _read_members(p.shard_urls[shard], set(members), durs, p.num_classes):
                for pos in members[member]:
                    store[pos] = sample
                    missing[batch_of[pos]] -= 1
                while nxt < len(batches) and missing[nxt] == 0:
                    b = batches[nxt]
                    items = [BatchItem(store.pop(int(r[0])), float(r[1]), float(r[2])) for r in b]
                    yield collate(items, p.num_classes, p.sample_rate)
                    nxt += 1
            i = j
        if nxt != len(batches):
            raise RuntimeError(f"planned batches {nxt}..{len(batches) - 1} could not be completed")

    def _train_iter(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        for p, s, lo, hi in self._work(self.start_step + worker, workers):
            rp = self._passes[p]
            own = rp.own[s]
            yield from self._execute(rp.streams[s][lo:min(hi, own)])  # from the stream's own segment
            yield from self._execute(rp.streams[s][max(lo, own):hi])  # batches handed over by others

    # -- evaluation ----------------------------------------------------------------------------

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

    def _eval_iter(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        p = self.plan
        batcher = BucketBatcher(p.duration_bins, batch_seconds=self.cfg.eval_batch_seconds,
                                rng=np.random.default_rng(0))
        samples = self._samples(list(p.shard_urls), self.rank * workers + worker, self.world_size * workers)
        for batch in batcher((s["duration_s"], s) for s in samples):
            yield collate(batch, p.num_classes, p.sample_rate)

    def __iter__(self) -> Iterator[dict]:
        return self._train_iter() if self.train else self._eval_iter()


def make_loader(plan: EpochPlan, cfg: DataConfig, *, rank: int, world_size: int, epoch: int, seed: int,
                train: bool, start_step: int = 0) -> DataLoader:
    """A DataLoader over :class:`ShardStream`. Training: ``len(loader)`` batches, batches
    ``start_step..`` of the epoch in order (DataLoader workers take turns, one stream each)."""
    ds = ShardStream(plan, cfg, rank=rank, world_size=world_size, epoch=epoch, seed=seed, train=train,
                     start_step=start_step)
    workers = cfg.loader_workers
    return DataLoader(ds, batch_size=None, num_workers=workers,
                      # forking a Ray worker process can deadlock; forkserver is what Ray recommends
                      multiprocessing_context="forkserver" if workers > 0 else None,
                      prefetch_factor=4 if workers > 0 else None, persistent_workers=False)
