"""The batches of one exact pass over a split, planned from the manifest alone (no decoding).

A *pass* draws every clip of the split once (``natural``) or by the multiplicities of
:mod:`trainer.sampling` (``balanced``), and cuts the draws into duration-bucketed batches for
``num_streams = ranks x loader streams per rank`` streams that all end after the same number of
batches. It is a pure function of the per-clip durations and ``(seed, epoch, pass)``, so every
rank and loader process computes the same plan by itself, and a loader can start at any step.

1. *Sequence*: shard order shuffled with ``(seed, epoch, pass)``; inside a shard, stored order;
   a clip drawn ``m`` times occupies ``m`` consecutive positions. Streams read this sequence
   sequentially, never with random access.
2. *Segments*: the sequence is cut into ``num_streams`` contiguous segments of about equal
   (cropped) audio, so a shard is read by at most two streams.
3. *Per-stream batches*: each stream runs its segment through a bounded shuffle buffer and the
   :class:`~trainer.bucketing.BucketBatcher` (random crops), seeded per stream, and *flushes*
   its partial buckets at the end: every drawn position lands in exactly one batch.
4. *Equal steps*: every stream ends with the same ``T`` batches. Streams with more than ``T``
   hand their last (fullest first) batches to streams with fewer, which read those clips after
   their own; a stream still short of ``T`` halves its largest batches (a half of a batch keeps
   the budget). ``T`` defaults to ``ceil(M / num_streams)`` for ``M`` bucketed batches, so
   nothing is dropped. The caller may fix ``T`` (the same step count in every epoch, see
   :func:`trainer.data.plan_epoch`); only if a pass then forms more than ``T * num_streams``
   batches are the smallest surplus batches dropped: :attr:`PassPlan.dropped`, the tail.

A batch is an ``(n, 3)`` float array of rows ``(position, offset_s, duration_s)``; ``position``
indexes :attr:`PassPlan.sequence`, which maps it to the clip's index in manifest order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.bucketing import BucketBatcher, buffer_shuffle

__all__ = ["BatchingSpec", "PassPlan", "plan_pass", "pass_sequence"]


@dataclass(frozen=True)
class BatchingSpec:
    """How a training stream batches (copied from the data options into the plan)."""

    duration_bins: tuple[float, ...]
    batch_seconds: float
    max_batch_clips: int | None
    max_crop_s: float | None
    shuffle_buffer: int


@dataclass(frozen=True)
class PassPlan:
    sequence: np.ndarray  # clip index (manifest order) of every draw position
    streams: tuple[tuple[np.ndarray, ...], ...]  # per stream: its batches, in order
    own: tuple[int, ...]  # per stream: how many of its batches come from its own segment (first)
    steps_per_stream: int  # T, equal for every stream
    dropped: np.ndarray  # positions in the dropped tail batches
    num_batches: int  # M, before equalisation
    splits: int = 0  # batches halved to give every stream T batches

    def batch(self, stream: int, index: int) -> np.ndarray:
        return self.streams[stream][index]


def pass_sequence(shard_sizes, *, seed: int, epoch: int, pass_index: int,
                  multiplicity: np.ndarray | None = None) -> np.ndarray:
    """Clip indices (manifest order) in read order for one pass: shuffled shards, stored order inside."""
    sizes = np.asarray(shard_sizes, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    order = np.random.default_rng([seed, epoch, pass_index, 10_000]).permutation(sizes.size)
    clips = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in order]) if sizes.size else np.zeros(0, int)
    if multiplicity is not None:
        clips = np.repeat(clips, np.asarray(multiplicity, dtype=np.int64)[clips])
    return clips


def _stream_batches(positions: np.ndarray, durations: np.ndarray, spec: BatchingSpec,
                    rng: np.random.Generator) -> list[np.ndarray]:
    batcher = BucketBatcher(spec.duration_bins, batch_seconds=spec.batch_seconds,
                            max_batch_clips=spec.max_batch_clips, max_crop_s=spec.max_crop_s, rng=rng)
    out = []
    for pos in buffer_shuffle(positions.tolist(), spec.shuffle_buffer, rng):
        b = batcher.add(float(durations[pos]), pos)
        if b is not None:
            out.append(np.array([(e.item, e.offset_s, e.duration_s) for e in b], dtype=np.float64))
    out += [np.array([(e.item, e.offset_s, e.duration_s) for e in b], dtype=np.float64) for b in batcher.flush()]
    return merge_single_clip_batches(out, spec)


def merge_single_clip_batches(batches: list[np.ndarray], spec: BatchingSpec) -> list[np.ndarray]:
    """No one-clip batch in a stream (flushed partial buckets are where they come from).

    A training batch of one short clip has one value per channel at F1's BatchNorm, which cannot
    normalise it (and would stop training). A one-clip batch joins the last other batch it fits
    (clips x longest within the budget, at most ``max_batch_clips``); if none has room, it takes one
    clip from the last batch of three or more. Only when neither is possible does it stay alone.
    """
    def fits(rows: np.ndarray) -> bool:
        n_ok = spec.max_batch_clips is None or len(rows) <= spec.max_batch_clips
        return n_ok and len(rows) * float(rows[:, 2].max()) <= spec.batch_seconds + 1e-9

    out = list(batches)
    j = 0
    while j < len(out):
        if len(out[j]) != 1 or len(out) < 2:
            j += 1
            continue
        single = out[j]
        hosts = [k for k in range(len(out) - 1, -1, -1) if k != j and fits(np.concatenate([out[k], single]))]
        if hosts:
            out[hosts[0]] = np.concatenate([out[hosts[0]], single])
            del out[j]
            continue
        donors = [k for k in range(len(out) - 1, -1, -1) if k != j and len(out[k]) >= 3
                  and fits(np.concatenate([out[k][-1:], single]))]
        if donors:
            k = donors[0]
            out[j] = np.concatenate([out[k][-1:], single])
            out[k] = out[k][:-1]
        j += 1
    return out


def plan_pass(clip_durations, shard_sizes, spec: BatchingSpec, *, num_streams: int, seed: int, epoch: int,
              pass_index: int = 0, multiplicity: np.ndarray | None = None,
              steps_per_stream: int | None = None) -> PassPlan:
    """Plan one pass (see the module doc). ``clip_durations`` are per clip in manifest order.

    ``steps_per_stream``: batches per stream; None = ``ceil(M / num_streams)`` (nothing dropped).
    """
    if num_streams < 1:
        raise ValueError(f"num_streams must be >= 1, got {num_streams}")
    durations = np.asarray(clip_durations, dtype=np.float64)
    sequence = pass_sequence(shard_sizes, seed=seed, epoch=epoch, pass_index=pass_index, multiplicity=multiplicity)
    seq_d = durations[sequence]
    eff = np.minimum(seq_d, spec.max_crop_s) if spec.max_crop_s else seq_d
    cum = np.cumsum(eff)
    total = float(cum[-1]) if cum.size else 0.0
    cuts = np.searchsorted(cum, total * np.arange(1, num_streams) / num_streams, side="left")
    bounds = np.concatenate([[0], cuts, [sequence.size]]).astype(np.int64)

    per_stream = []
    for s in range(num_streams):
        rng = np.random.default_rng([seed, epoch, pass_index, s, 20_000])
        per_stream.append(_stream_batches(np.arange(bounds[s], bounds[s + 1]), seq_d, spec, rng))
    m = sum(len(b) for b in per_stream)
    t = -(-m // num_streams) if steps_per_stream is None else steps_per_stream
    if t * num_streams > sequence.size or t == 0:
        raise ValueError(f"{sequence.size} clips cannot fill {t} batches on each of {num_streams} streams "
                         "(ranks x loader workers): use fewer ranks or loader workers, or more data")

    surplus = [(len(b), s, j) for s, bs in enumerate(per_stream) for j, b in enumerate(bs[t:], start=t)]
    surplus.sort(key=lambda x: (-x[0], x[1], x[2]))  # hand over the fullest, drop (if ever) the smallest
    own = [list(bs[:t]) for bs in per_stream]
    received: list[list[np.ndarray]] = [[] for _ in range(num_streams)]
    k = 0
    for s in range(num_streams):
        while len(own[s]) + len(received[s]) < t and k < len(surplus):
            _, donor, j = surplus[k]
            received[s].append(per_stream[donor][j])
            k += 1
    dropped = [per_stream[d][j] for _, d, j in surplus[k:]]
    splits = 0
    for s in range(num_streams):
        while len(own[s]) + len(received[s]) < t:
            _split_largest(s, own, received)
            splits += 1
    streams = []
    for s in range(num_streams):
        moved_in = sorted(received[s], key=lambda b: float(b[:, 0].max()))  # read order of the donors' shards
        streams.append(tuple(own[s] + moved_in))
    dropped_pos = np.concatenate([b[:, 0] for b in dropped]).astype(np.int64) if dropped else np.zeros(0, np.int64)
    return PassPlan(sequence=sequence, streams=tuple(streams), own=tuple(len(o) for o in own),
                    steps_per_stream=t, dropped=dropped_pos, num_batches=m, splits=splits)


def _split_largest(s: int, own: list[list[np.ndarray]], received: list[list[np.ndarray]]) -> None:
    """One more batch for stream ``s``: halve its largest batch, or else another stream's largest
    batch and take one half over (the other stream keeps its count)."""
    def largest(lists):
        best = None
        for which, lst in enumerate(lists):
            for j, b in enumerate(lst):
                if len(b) >= 4 and (best is None or len(b) > len(lists[best[0]][best[1]])):
                    best = (which, j)  # halves of >= 2 clips: never a one-clip batch (see above)
        return best

    here = largest([own[s], received[s]])
    if here is not None:
        lst = (own[s], received[s])[here[0]]
        b = lst[here[1]]
        lst[here[1]:here[1] + 1] = [b[:len(b) // 2], b[len(b) // 2:]]
        return
    donors = [(len(b), d, which, j) for d in range(len(own)) if d != s
              for which, lst in enumerate((own[d], received[d])) for j, b in enumerate(lst) if len(b) >= 4]
    donors = donors or [(len(b), d, which, j) for d in range(len(own)) if d != s
                        for which, lst in enumerate((own[d], received[d])) for j, b in enumerate(lst) if len(b) >= 2]
    if not donors:  # too few clips for halves of two: halve whatever is largest here (clips >= streams x T)
        here = None
        for which, lst in enumerate((own[s], received[s])):
            for j, b in enumerate(lst):
                if len(b) >= 2 and (here is None or len(b) > len((own[s], received[s])[here[0]][here[1]])):
                    here = (which, j)
        lst = (own[s], received[s])[here[0]]
        b = lst[here[1]]
        lst[here[1]:here[1] + 1] = [b[:len(b) // 2], b[len(b) // 2:]]
        return
    _, d, which, j = max(donors)
    lst = (own[d], received[d])[which]
    b = lst[j]
    lst[j] = b[:len(b) // 2]
    received[s].append(b[len(b) // 2:])
