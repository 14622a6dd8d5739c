"""Ray execution of the transfer protocol: SVM units and per-shard baseline features.

- ``run_svm_units``: the (feature set, test fold, C) units of one or more ``TransferData``, one
  Ray task per (feature set, test fold). Each ``TransferData`` is ``ray.put`` once and every task
  receives the reference;
  at most ``max_in_flight`` tasks are pending (``ray.wait``), and results are combined with
  ``transfer.svm.combine_units``, so the numbers equal the sequential path exactly
  (``executor="local"`` runs the same units in this process).
- ``mfcc_features``: the MFCC-statistics baseline from the dataset's audio shards, one Ray task
  per shard; a task returns clip ids and an (n, D) matrix, never audio.

Ray is imported only inside the functions, so the module loads without it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.parallel import Progress, bounded_map
from transfer.svm import FoldResults, SVMUnit, TransferData, UnitScore, combine_units, run_units

__all__ = ["SVMJob", "mfcc_features", "mfcc_shard", "run_svm_units"]


class SVMJob:
    """One ``TransferData`` and the units to run on it (``plan_units`` output, possibly filtered)."""

    def __init__(self, name: str, data: TransferData, units: Sequence[SVMUnit]):
        if not units:
            raise ValueError(f"job {name!r} has no units")
        self.name = name
        self.data = data
        self.units = list(units)


def _run_job_units(item: tuple[int, list[SVMUnit]], datas: tuple[TransferData, ...]) -> list[UnitScore]:
    k, units = item
    return run_units(units, datas[k])


def run_svm_units(jobs: Sequence[SVMJob], *, executor: str = "ray", max_in_flight: int = 0,
                  progress: bool = False) -> dict[str, dict[str, FoldResults]]:
    """Run every unit of every job; returns job name -> feature set -> ``FoldResults``.

    One task per (job, feature set, test fold): its C values share standardisation and one
    warm-started solver path (``transfer.svm.run_units``), and a task is large enough that
    scheduling does not dominate.

    Args:
        jobs: the data and units; job names must be unique.
        executor: ``"ray"`` (one task per group, cluster-wide) or ``"local"`` (this process).
        max_in_flight: pending Ray tasks at most; 0 = ``default_in_flight()``.
        progress: show a tqdm bar over tasks.
    """
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")
    groups: dict[tuple[int, str, int], list[SVMUnit]] = {}
    for k, job in enumerate(jobs):
        for u in job.units:
            groups.setdefault((k, u.feature_set, u.test_fold), []).append(u)
    items = [(key[0], units) for key, units in groups.items()]
    datas = tuple(job.data for job in jobs)
    results = bounded_map(_run_job_units, items, shared=(datas,), executor=executor, max_in_flight=max_in_flight,
                          progress=Progress("svm (feature set, fold)", unit="task") if progress else None)
    scores: list[list[UnitScore]] = [[] for _ in jobs]
    for (k, _units), group_scores in zip(items, results):
        scores[k].extend(group_scores)
    return {job.name: combine_units(job.units, scores[k], job.data) for k, job in enumerate(jobs)}


def mfcc_shard(shard, sample_rate: int, n_mfcc: int = 20, delta_order: int = 1
               ) -> tuple[list[str], np.ndarray]:
    """(clip ids, (n, D) MFCC statistics) of every clip of one shard, in stored order."""
    from runtime import storage
    from data_prep.manifest import read_samples
    from transfer.baseline import MFCCStats

    extractor = MFCCStats(sample_rate, n_mfcc=n_mfcc, delta_order=delta_order)
    ids, rows = [], []
    shard_url = getattr(shard, "url", shard)
    for s in read_samples(shard):
        if s.meta["sample_rate"] != sample_rate:
            raise ValueError(f"{s.meta['clip_id']} in {shard_url} is at {s.meta['sample_rate']} Hz, "
                             f"the manifest says {sample_rate} Hz")
        ids.append(s.meta["clip_id"])
        rows.append(extractor(s.audio))
    return ids, (np.stack(rows) if rows else np.zeros((0, extractor.dim)))


def mfcc_features(data_url: str, clip_ids: Sequence[str], *, n_mfcc: int = 20, delta_order: int = 1,
                  executor: str = "ray", max_in_flight: int = 0, progress: bool = False) -> np.ndarray:
    """MFCC statistics of the listed clips of the dataset at ``data_url``, rows in ``clip_ids`` order.

    One Ray task per shard of the manifest. Raises ``ValueError`` if a listed clip is missing
    from the shards (the embeddings and the dataset disagree).
    """
    from data_prep.manifest import read_manifest

    manifest = read_manifest(data_url)
    shard_urls = manifest.shard_refs()  # each read checked against the manifest (size, sha256, labels)
    found: dict[str, np.ndarray] = {}

    def done(_i: int, out: tuple[list[str], np.ndarray]) -> None:
        for cid, row in zip(out[0], out[1]):
            found[cid] = row

    bounded_map(mfcc_shard, shard_urls, shared=(manifest.sample_rate, n_mfcc, delta_order), executor=executor,
                max_in_flight=max_in_flight, on_done=done,
                progress=Progress("mfcc baseline", unit="shard") if progress else None)
    missing = [c for c in clip_ids if c not in found]
    if missing:
        raise ValueError(f"{len(missing)} embedded clips are not in the shards of {data_url} "
                         f"(e.g. {missing[:3]}); were the embeddings made from another dataset?")
    return np.stack([found[c] for c in clip_ids])
