"""Duration-bucketed batching for a stream of variable-length clips (pure, seeded, no torch/Ray).

Three separate pieces, as lhotse's dynamic bucketing splits them:

- :func:`estimate_duration_bins` -- equal-count duration bins from a sample of durations
  (e.g. the index sidecars of the shards), so each bucket receives about the same traffic.
- :class:`BucketBatcher` -- streaming batch former: each incoming clip is (randomly) cropped to
  ``max_crop_s``, dropped into the bucket of its duration, and a bucket is emitted as a batch as
  soon as the next clip would push it over the budget ``n_clips * longest <= batch_seconds`` (or
  over ``max_batch_clips``). Memory is bounded: at most one open batch per bucket.
- :func:`padding_fraction` -- the share of a padded batch tensor that is padding.

All randomness comes from the ``numpy.random.Generator`` passed in; its state and the open
buckets are part of :meth:`BucketBatcher.state_dict`, so a stopped stream resumes exactly.

Example::

    >>> rng = np.random.default_rng(0)
    >>> bins = estimate_duration_bins(rng.lognormal(1.1, 1.0, 2000), num_buckets=10)
    >>> batcher = BucketBatcher(bins, batch_seconds=60.0, max_crop_s=10.0, rng=rng)
    >>> batches = list(batcher(((d, i) for i, d in enumerate([3.0, 3.1, 12.0, 2.9]))))
    >>> sorted(len(b) for b in batches)
    [1, 3]
"""

from __future__ import annotations

import bisect
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

__all__ = ["BatchItem", "BucketBatcher", "estimate_duration_bins", "padding_fraction", "random_batches",
           "buffer_shuffle"]


class BatchItem(NamedTuple):
    item: Any  # whatever the stream carried (a key, a decoded sample, ...)
    offset_s: float  # crop start within the clip (0 unless the clip was longer than max_crop_s)
    duration_s: float  # seconds used from the clip, after cropping


def estimate_duration_bins(durations, num_buckets: int) -> np.ndarray:
    """Inner bucket boundaries (at most ``num_buckets - 1``, strictly increasing) at equal-count
    quantiles of ``durations``. Repeated values (e.g. many clips cropped to exactly 10 s) collapse
    duplicate boundaries, so fewer buckets may result. A clip of duration ``d`` goes to bucket
    ``searchsorted(bins, d, side="right")``.
    """
    d = np.asarray(durations, dtype=np.float64)
    if d.size == 0:
        raise ValueError("need at least one duration to estimate bins")
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    qs = np.quantile(d, np.arange(1, num_buckets) / num_buckets)
    return np.unique(qs)


def padding_fraction(batches: Iterable[Iterable[float]]) -> float:
    """Padded share of all batch tensors when each batch pads to its longest clip:
    ``1 - sum(durations) / sum(len(batch) * max(batch))``."""
    used = total = 0.0
    for b in batches:
        b = np.asarray(list(b), dtype=np.float64)
        if b.size:
            used += b.sum()
            total += b.size * b.max()
    return 0.0 if total == 0 else 1.0 - used / total


def buffer_shuffle(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Bounded-buffer shuffle of a stream (what a reader without random access can afford):
    hold ``size`` items, emit a random one for each new item, shuffle the rest at the end."""
    if size <= 1:
        yield from items
        return
    buf: list = []
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        j = int(rng.integers(len(buf)))
        buf[j], x = x, buf[j]
        yield x
    rng.shuffle(buf)
    yield from buf


def random_batches(durations, batch_size: int, rng: np.random.Generator, max_crop_s: float | None = None):
    """Baseline: shuffle, crop to ``max_crop_s``, cut into batches of ``batch_size`` (last one
    partial). Returns a list of duration lists, for :func:`padding_fraction`."""
    d = np.asarray(durations, dtype=np.float64)[rng.permutation(len(durations))]
    if max_crop_s is not None:
        d = np.minimum(d, max_crop_s)
    return [d[i:i + batch_size].tolist() for i in range(0, len(d), batch_size)]


class BucketBatcher:
    """Streaming duration-bucketed batcher with a padded-seconds budget.

    Args:
        duration_bins: inner bucket boundaries in seconds (see :func:`estimate_duration_bins`).
        batch_seconds: budget per batch: ``len(batch) * longest_in_batch <= batch_seconds``, i.e.
            the padded tensor holds at most this many seconds of audio.
        rng: the only source of randomness (crop offsets, flush order).
        max_batch_clips: cap on clips per batch (``None`` = only the budget limits).
        max_crop_s: clips longer than this are cropped to it at a uniformly random offset
            (``None`` = never crop; evaluation).
        drop_last: :meth:`flush` discards partial batches instead of emitting them.
    """

    def __init__(self, duration_bins, *, batch_seconds: float, rng: np.random.Generator,
                 max_batch_clips: int | None = None, max_crop_s: float | None = None,
                 drop_last: bool = False):
        bins = np.asarray(duration_bins, dtype=np.float64)
        if bins.ndim != 1 or np.any(np.diff(bins) <= 0):
            raise ValueError(f"duration_bins must be strictly increasing, got {bins.tolist()}")
        if batch_seconds <= 0:
            raise ValueError(f"batch_seconds must be positive, got {batch_seconds}")
        if max_crop_s is not None and max_crop_s > batch_seconds:
            raise ValueError(f"max_crop_s ({max_crop_s}) must not exceed batch_seconds ({batch_seconds})")
        self.bins = bins
        self._bin_list = bins.tolist()
        self.batch_seconds = float(batch_seconds)
        self.max_batch_clips = max_batch_clips
        self.max_crop_s = max_crop_s
        self.drop_last = drop_last
        self.rng = rng
        self._buckets: list[list[BatchItem]] = [[] for _ in range(len(bins) + 1)]
        self._longest = [0.0] * (len(bins) + 1)  # longest clip per open bucket: add() stays O(1)

    @property
    def num_buckets(self) -> int:
        return len(self._buckets)

    @property
    def num_buffered(self) -> int:
        return sum(len(b) for b in self._buckets)

    def bucket_of(self, duration_s: float) -> int:
        return bisect.bisect_right(self._bin_list, duration_s)  # = searchsorted(side="right"), faster on scalars

    def add(self, duration_s: float, item: Any) -> list[BatchItem] | None:
        """Add one clip; returns the batch it closed (the bucket it would have overflowed), if any."""
        offset, used = 0.0, float(duration_s)
        if self.max_crop_s is not None and used > self.max_crop_s:
            offset = float(self.rng.uniform(0.0, used - self.max_crop_s))
            used = float(self.max_crop_s)
        entry = BatchItem(item, offset, used)
        b = self.bucket_of(used)
        bucket = self._buckets[b]
        out = None
        if bucket:
            longest = max(used, self._longest[b])
            full = self.max_batch_clips is not None and len(bucket) + 1 > self.max_batch_clips
            if full or (len(bucket) + 1) * longest > self.batch_seconds:
                out = list(bucket)
                bucket.clear()
                self._longest[b] = 0.0
        bucket.append(entry)
        self._longest[b] = max(self._longest[b], used)
        return out

    def flush(self) -> list[list[BatchItem]]:
        """Close the stream: the open partial batches in random order (none with ``drop_last``)."""
        rest = [list(b) for b in self._buckets if b]
        for b in self._buckets:
            b.clear()
        self._longest = [0.0] * len(self._buckets)
        if self.drop_last:
            return []
        order = self.rng.permutation(len(rest))
        return [rest[i] for i in order]

    def __call__(self, stream: Iterable[tuple[float, Any]]) -> Iterator[list[BatchItem]]:
        """Batches from a stream of ``(duration_s, item)``; partial batches are flushed at its end."""
        for duration_s, item in stream:
            batch = self.add(duration_s, item)
            if batch is not None:
                yield batch
        yield from self.flush()

    # -- exact resume -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """RNG state, settings and the open buckets (items as given; JSON-serialisable if the
        items are, e.g. clip keys)."""
        return {"bins": self.bins.tolist(), "batch_seconds": self.batch_seconds,
                "max_batch_clips": self.max_batch_clips, "max_crop_s": self.max_crop_s,
                "rng": self.rng.bit_generator.state,
                "buckets": [[[e.item, e.offset_s, e.duration_s] for e in b] for b in self._buckets]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; refuses a state written with different batching settings."""
        state = dict(state)
        for key, mine in (("bins", self.bins.tolist()), ("batch_seconds", self.batch_seconds),
                          ("max_batch_clips", self.max_batch_clips), ("max_crop_s", self.max_crop_s)):
            theirs = state.pop(key)
            if theirs != mine:
                raise ValueError(f"cannot resume: the state was written with {key}={theirs!r} but this "
                                 f"batcher has {key}={mine!r}; batches would differ from the original run. "
                                 "Build the batcher with the saved settings, or start the epoch afresh.")
        self.rng.bit_generator.state = state.pop("rng")
        buckets = state.pop("buckets")
        assert not state, f"unexpected keys in batcher state: {sorted(state)}"
        if len(buckets) != self.num_buckets:
            raise ValueError(f"state has {len(buckets)} buckets, batcher has {self.num_buckets}")
        self._buckets = [[BatchItem(i, float(o), float(d)) for i, o, d in b] for b in buckets]
        self._longest = [max((e.duration_s for e in b), default=0.0) for b in self._buckets]
