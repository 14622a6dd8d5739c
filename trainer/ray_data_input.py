"""Training input through Ray Data: decode anywhere in the cluster, bucket in the Train worker.

Driver side, :func:`build_train_dataset` turns an :class:`~trainer.data.EpochPlan` (the shards
the manifest lists) into a Ray Data pipeline:

- ``ray.data.read_webdataset`` selecting only ``*.flac`` / ``*.json`` members, with our own
  decoder :func:`decode_sample` in place of the datasource's default one (which could unpickle
  ``.pyd``/``.pickle`` members; advisory GHSA-hhrp-gw25-jr43): one read task per shard
  (``num_cpus`` each, kept on CPU-only nodes by a ``label_selector``) decodes FLAC and the JSON
  metadata into rows ``key, audio (float32 samples as raw bytes), labels (multi-hot uint8 as
  bytes), duration_s`` and, fused into the same task, turns the datasource's pandas blocks into
  Arrow tables, which cross the object store as buffers instead of pickled bytes objects.
  Decoding in the read operator spares a second operator's copy of every clip.

Pass it to ``TorchTrainer(datasets={"train": ds})`` (trainer/main.py does, with
:func:`decode_options` and :func:`worker_label_selector` from the run's :class:`DataConfig`, after
:func:`check_decode_capacity` has confirmed that a read task fits beside the Train workers);
Ray Train splits it across ranks with ``streaming_split(equal=True)`` (equal rows per rank) and
re-executes it every epoch, in a new shard order each time (``FileShuffleConfig`` reseeds per
execution). Worker side, :func:`iter_ray_batches` reads ``ray.train.get_dataset_shard("train")``
and runs the same shuffle buffer, crop, duration bucketing and collate as the in-process loader
(:mod:`trainer.bucketing`, :mod:`trainer.collate`).

Epoch semantics on this path: each rank receives an equal share of rows, every row is batched
(partial buckets are flushed at the end), and with ``sync=True`` the ranks agree before every
step that all of them still have a batch (one 1-element all-reduce), so no rank waits on a
collective the others never join. The tail lost is the few batches by which one rank's
bucketing outnumbers the shortest rank's. Not on this path: exact mid-epoch resume (Ray Data
has no iterator checkpoint; trainer/train_input.py skips batches instead) and
``sampling="balanced"``; use the in-process loader for those.
"""

from __future__ import annotations

import functools
import json
from typing import Iterator

import numpy as np

from data_prep.audio import decode_flac
from trainer.batch_plan import merge_single_clip_batches
from trainer.bucketing import BatchItem, BucketBatcher, buffer_shuffle
from trainer.collate import collate
from trainer.config import DataConfig
from trainer.data import EpochPlan

__all__ = ["build_train_dataset", "check_decode_capacity", "decode_options", "decode_sample", "iter_ray_batches",
           "worker_label_selector", "MEMBER_SUFFIXES"]

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
                        decode_concurrency: int | None = None, label_selector: dict | None = None):
    """The training split of ``plan`` as a Ray Data dataset of decoded rows (lazy, streaming).

    Shard files are shuffled per execution with ``seed``. ``decode_num_cpus`` per read+decode
    task, at most ``decode_concurrency`` at once (None = Ray decides); ``label_selector`` places
    those tasks (e.g. ``{"node-group": "cpu-data"}`` keeps decoding off the GPU nodes).
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
    # one read task per shard file: Ray's default cut of a small split into ~5 blocks per file
    # spends read-task CPU on block splitting and per-block bookkeeping for nothing
    rows = ray.data.read_webdataset(urls, filesystem=filesystem, fileselect=_select_member,
                                    suffixes=list(MEMBER_SUFFIXES), shuffle=FileShuffleConfig(seed=seed),
                                    decoder=functools.partial(decode_sample, num_classes=plan.num_classes),
                                    num_cpus=decode_num_cpus, concurrency=decode_concurrency,
                                    label_selector=label_selector, override_num_blocks=max(1, len(urls)))
    # fused into the read task (same resources): Arrow blocks cross the object store as buffers,
    # where the datasource's pandas blocks pickle every audio bytes object on both sides
    return rows.map_batches(_to_arrow, batch_format="pandas", batch_size=None, zero_copy_batch=True,
                            num_cpus=decode_num_cpus, concurrency=decode_concurrency, label_selector=label_selector)


def _to_arrow(frame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)


def _binary_values(column, dtype) -> list[np.ndarray]:
    """Each value of an Arrow binary column as its own array of ``dtype`` (copied out, so that a
    row held in the shuffle buffer does not pin its whole block in the object store)."""
    import pyarrow as pa

    out = []
    for chunk in column.chunks:
        if len(chunk) == 0:  # an empty block's column may not even be binary
            continue
        width = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=width)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = chunk.buffers()[2]
        size = np.dtype(dtype).itemsize
        for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
            out.append(np.frombuffer(data, dtype=dtype, count=(end - start) // size, offset=start).copy()
                       if end > start else np.zeros(0, dtype))
    return out


def _label(decode_nodes: str) -> tuple[str, str] | None:
    key, _, value = decode_nodes.partition("=")
    return (key, value) if decode_nodes else None


def decode_options(loader: DataConfig) -> dict:
    """:func:`build_train_dataset`'s placement keywords for ``loader`` (``decode_num_cpus``,
    ``decode_concurrency``, ``label_selector``): with ``decode_nodes`` the read tasks carry a
    label selector, so they run on the labelled (CPU-only data) nodes alone."""
    label = _label(loader.decode_nodes)
    return {"decode_num_cpus": loader.decode_cpus, "decode_concurrency": loader.decode_concurrency or None,
            "label_selector": {label[0]: label[1]} if label else None}


def worker_label_selector(loader: DataConfig) -> dict | None:
    """The Train workers' ``ScalingConfig.label_selector``: off the decode nodes (``!value`` also
    matches nodes without the label key), or None to place them anywhere."""
    label = _label(loader.decode_nodes) if loader.input == "ray_data" else None
    return {label[0]: f"!{label[1]}"} if label else None


def check_decode_capacity(nodes: list[dict], *, workers: int, cpus_per_worker: float, loader: DataConfig) -> str:
    """Fail fast when the cluster cannot run a read+decode task beside the Train workers.

    ``nodes`` as ``ray.nodes()`` gives them (``Alive``, ``Resources``, ``Labels``). Ray Data's read
    tasks need CPUs the Train workers have not reserved; without any, Ray Train starts and then
    waits on its first batch forever. Counts the nodes alive now: with an autoscaled data node
    group, keep at least one data node up. Returns a one-line description of the decode capacity.
    """
    alive = [n for n in nodes if n.get("Alive", True)]
    train_cpus = workers * cpus_per_worker
    label = _label(loader.decode_nodes)
    need = (f"{workers} Train workers x {cpus_per_worker:g} CPUs = {train_cpus:g}, and one read+decode task "
            f"{loader.decode_cpus:g} (--decode-cpus)")
    if label is None:
        total = sum(n["Resources"].get("CPU", 0.0) for n in alive)
        spare = total - train_cpus
        if spare < loader.decode_cpus or not any(n["Resources"].get("CPU", 0.0) >= loader.decode_cpus for n in alive):
            raise ValueError(
                f"input='ray_data' needs CPUs beyond the Train workers': {need}, but the cluster has {total:g} CPUs "
                f"({spare:g} spare); Ray Data would never start decoding. Lower --cpus-per-worker or --decode-cpus, "
                "start Ray with more CPUs, or add CPU-only data nodes (--decode-nodes)")
        return (f"Ray Data input: read+decode anywhere in the cluster, {spare:g} of {total:g} CPUs beyond the "
                f"Train workers' {train_cpus:g}")
    key, value = label
    data = [n for n in alive if n.get("Labels", {}).get(key) == value]
    rest = [n for n in alive if n.get("Labels", {}).get(key) != value]
    data_cpus = [n["Resources"].get("CPU", 0.0) for n in data]
    rest_cpus = sum(n["Resources"].get("CPU", 0.0) for n in rest)
    if not data_cpus or max(data_cpus) < loader.decode_cpus:
        raise ValueError(
            f"--decode-nodes {key}={value}: {need}, but {len(data)} alive node(s) carry the label "
            f"(CPUs: {', '.join(f'{c:g}' for c in data_cpus) or 'none'}); start data nodes with "
            f"`ray start --labels {key}={value}` (KubeRay: the data group's labels) or lower --decode-cpus")
    if rest_cpus < train_cpus:
        raise ValueError(
            f"--decode-nodes {key}={value}: {need}, but the nodes without the label (where the Train workers "
            f"go) have {rest_cpus:g} CPUs")
    return (f"Ray Data input: read+decode on {len(data)} node(s) labelled {key}={value} ({sum(data_cpus):g} CPUs), "
            f"Train workers on the other {len(rest)} ({rest_cpus:g} CPUs)")


def _rows(shard, batch_rows: int, prefetch_batches: int) -> Iterator[dict]:
    # Arrow batches: what the read tasks emit, so no conversion; the audio is read off the buffers
    for t in shard.iter_batches(batch_size=batch_rows, batch_format="pyarrow", prefetch_batches=prefetch_batches):
        audio = _binary_values(t.column("audio"), np.float32)
        labels = _binary_values(t.column("labels"), np.uint8)
        for key, wave, hot, duration in zip(t.column("key").to_pylist(), audio, labels,
                                            t.column("duration_s").to_pylist()):
            yield {"key": key, "audio": wave, "labels": np.flatnonzero(hot).tolist(), "duration_s": float(duration)}


def _without_single_clip_batches(batches: list[list[BatchItem]], plan: EpochPlan) -> list[list[BatchItem]]:
    """The in-process planner's rule for a stream's last batches: no one-clip batch where it can
    join another within the budget (one short clip alone leaves F1's BatchNorm a single value per
    channel, which stops training)."""
    if len(batches) < 2 or all(len(b) > 1 for b in batches):
        return batches
    items = [it for b in batches for it in b]
    rows, i = [], 0
    for b in batches:  # the planner's rows: (index into items, crop offset, seconds used)
        rows.append(np.array([(i + k, it.offset_s, it.duration_s) for k, it in enumerate(b)], dtype=np.float64))
        i += len(b)
    return [[items[int(r[0])] for r in b] for b in merge_single_clip_batches(rows, plan.spec) if len(b)]


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
        last = None  # the latest full batch is held back: the flushed partial ones may merge into it
        for row in buffer_shuffle(_rows(shard, batch_rows, prefetch_batches), plan.shuffle_buffer, rng):
            b = batcher.add(row["duration_s"], row)
            if b is not None:
                if last is not None:
                    yield last
                last = b
        yield from _without_single_clip_batches(([last] if last is not None else []) + batcher.flush(), plan)

    it = batches()
    while True:
        b = next(it, None)
        if sync and not _everyone_has_a_batch(b is not None):
            return
        if b is None:
            return
        yield collate(b, plan.num_classes, plan.sample_rate)
