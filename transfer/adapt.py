"""Network adaptation N_T^I / N_T^II / N_T^III (arXiv 1711.01369, section 3.4): the driver.

Per variant: one Ray Train run that fits the network once per test fold k, each on the other
folds' clips only (transfer/adapt_train.py, trainer/engine.py); each fold's network is exported
like N_S under ``adapted/<task>/N_T-<variant>/fold<k>/`` (``model.safetensors`` + ``config.json``,
loadable with ``trainer.export.load_exported``, with the target task's vocabulary; ``adapt.json``
beside them: format ``weaksound-adapted/1``, source model URL, spec, settings, test fold, the
training clip ids, loss per epoch). F1 and F2 (max/avg) are then re-extracted from every fold's
network for every clip (one Ray task per shard, which runs all the folds' networks on it) and
fold k's features are scored with the SVM protocol for test fold k only. (The SVM's inner
validation then runs on features of a network that was trained on those same training folds,
which flatters the inner scores, on the real-audio kit's ESC-like set 96 % inner against 77 %
test; the test fold stays unseen by both the network and the choice of C. Such rows are marked
``inner_scores_seen`` and are never chosen by inner validation.) What each variant is: transfer/adapt_network.py.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from transfer.adapt_network import NETWORK_NAMES, AdaptConfig, AdaptSpec, build_adapted, variant_spec
from transfer.adapt_train import (ADAPTED_FORMAT, META, FitResult, adapt_loop_per_worker, fit_adapted,
                                  fit_adapted_folds, load_training_clips)

__all__ = [
    "ADAPTED_FORMAT",
    "ADAPT_FEATURE_SETS",
    "AdaptConfig",
    "AdaptSpec",
    "FitResult",
    "META",
    "NETWORK_NAMES",
    "adapt_loop_per_worker",
    "adapted_features",
    "build_adapted",
    "fit_adapted",
    "fit_adapted_folds",
    "load_training_clips",
    "merge_fold_results",
    "run_adaptation",
    "variant_spec",
]

ADAPT_FEATURE_SETS = ("F1 max", "F1 avg", "F2 max", "F2 avg")  # the paper's grid


def adapted_shard_features(shard_url: str, networks: Sequence[tuple[dict, bytes]], batch_seconds: float,
                           device: str = "cpu") -> list[dict[str, np.ndarray]]:
    """clip_id + F1/F2 max/avg of every clip of one shard through each exported network held in
    memory (``networks``: (its config.json, its model.safetensors) pairs); the shard is read and
    decoded once for all of them."""
    import torch

    from data_prep.manifest import read_samples
    from inference.embed import embed_samples
    from trainer.export import exported_from_bytes

    if device == "cpu":
        torch.set_num_threads(1)
    samples = list(read_samples(shard_url))
    out = []
    for config, weights in networks:
        exported = exported_from_bytes(config, weights, device)
        arrays = embed_samples(exported, exported.log_mel(), samples, batch_seconds)
        out.append({k: arrays[k] for k in ("clip_id", "f1_max", "f1_avg", "f2_max", "f2_avg")})
    return out


def adapted_features(fits: FitResult | Sequence[FitResult], shard_urls: Sequence[str], clip_ids: Sequence[str],
                     cfg: AdaptConfig, *, executor: str = "ray", max_in_flight: int = 0):
    """The paper's four feature sets from each adapted network, rows in ``clip_ids`` order: one
    dict per fit of ``fits`` (a single ``FitResult``: its dict). One Ray task per shard runs every
    network on it; the exports are ``ray.put`` once."""
    from runtime.parallel import bounded_map
    from transfer.feature_sets import feature_sets_from_pooled

    single = isinstance(fits, FitResult)
    fits = [fits] if single else list(fits)
    gpu = False
    if executor == "ray":
        import ray

        gpu = cfg.use_gpu and ray.cluster_resources().get("GPU", 0) > 0
    parts = bounded_map(adapted_shard_features, list(shard_urls),
                        shared=([(f.config, f.weights) for f in fits], cfg.batch_seconds, "cuda" if gpu else "cpu"),
                        executor=executor, max_in_flight=max_in_flight,
                        ray_options={"num_cpus": 1, "num_gpus": 1 if gpu else 0})
    row = {}
    for p, per_net in enumerate(parts):
        for i, cid in enumerate(per_net[0]["clip_id"].tolist()):
            row[cid] = (p, i)
    missing = [c for c in clip_ids if c not in row]
    if missing:
        raise ValueError(f"{len(missing)} clips missing from the shards (e.g. {missing[:3]})")
    out = []
    for n in range(len(fits)):
        pooled = {k: np.stack([parts[row[c][0]][n][k][row[c][1]] for c in clip_ids])
                  for k in ("f1_max", "f1_avg", "f2_max", "f2_avg")}
        out.append(feature_sets_from_pooled(pooled["f1_max"], pooled["f1_avg"], pooled["f2_max"], pooled["f2_avg"],
                                            combinations=True))
    return out[0] if single else out


def merge_fold_results(parts: Sequence) -> object:
    """One ``FoldResults`` from single-fold results of the same feature set (one per test fold)."""
    from transfer.svm import FoldResults

    parts = sorted(parts, key=lambda r: r.folds[0])
    if not parts or any(len(p.folds) != 1 for p in parts):
        raise ValueError("merge_fold_results takes one single-fold FoldResults per test fold")
    names = {p.feature_set for p in parts}
    if len(names) != 1 or len({p.c_grid for p in parts}) != 1:
        raise ValueError(f"cannot merge different feature sets or C grids: {sorted(names)}")
    labels = parts[0].labels
    predictions = np.full(labels.shape, -1, dtype=np.int64)
    for p in parts:
        sel = p.predictions >= 0
        if np.any(predictions[sel] >= 0):
            raise ValueError("two results predict the same clips")
        predictions[sel] = p.predictions[sel]
    return FoldResults(
        feature_set=parts[0].feature_set, folds=tuple(p.folds[0] for p in parts),
        accuracies=tuple(p.accuracies[0] for p in parts), chosen_C=tuple(p.chosen_C[0] for p in parts),
        c_grid=parts[0].c_grid, inner_scores=tuple(p.inner_scores[0] for p in parts),
        inner_validation_folds=tuple(p.inner_validation_folds[0] for p in parts), labels=labels.copy(),
        predictions=predictions, n_convergence_warnings=sum(p.n_convergence_warnings for p in parts))


def run_adaptation(target, proto, specs: Sequence[AdaptSpec], cfg: AdaptConfig, out_folder, *,
                   test_folds: Sequence[int] | None = None, storage_path: str | None = None,
                   feature_sets: Sequence[str] = ADAPT_FEATURE_SETS):
    """Every (variant, test fold) fit, re-extraction, and the SVM protocol per test fold.

    Args:
        target: ``transfer.experiments.Target``.
        proto: ``transfer.experiments.Protocol`` (C grid, executor, ...).
        specs: the adapted networks to build.
        cfg: fine-tuning settings.
        out_folder: local results folder; each adapted network is exported to
            ``adapted/<task>/N_T-<variant>/fold<k>/``.
        test_folds: subset of the official folds to test on (default all).
        storage_path: Ray Train storage (shared storage on a multi-node cluster); default a
            temporary local folder.

    Returns:
        ``TaskResult`` with one row per (network, feature set); ``extra`` records per fit the
        training clip count, the loss history and the seconds taken.
    """
    import shutil
    import uuid
    from pathlib import Path

    from data_prep.manifest import read_manifest
    from trainer.export import WEIGHTS
    from transfer.experiments import TaskResult, _svm_job
    from transfer.feature_sets import feature_set_names
    from transfer.parallel import run_svm_units
    from transfer.results import transfer_row

    folds = list(test_folds) if test_folds else target.fold_ids
    unknown = sorted(set(folds) - set(target.fold_ids))
    if unknown:
        raise ValueError(f"test folds {unknown} are not folds of {target.url} ({target.fold_ids})")
    bad = [n for n in feature_sets if n not in feature_set_names()]
    if bad:
        raise ValueError(f"unknown feature sets {bad}")
    manifest = read_manifest(target.data_url)
    shard_urls = manifest.shard_refs(target.emb.index.get("split", "all"))  # reads checked against the manifest
    clip_ids = target.clip_ids
    own_storage = storage_path is None
    storage_path = storage_path or tempfile.mkdtemp(prefix="weaksound-adapt-train-")
    run_tag = uuid.uuid4().hex[:8]
    jobs, fits = [], []
    try:
        for spec in specs:
            train_ids = {k: [c for c, f in zip(clip_ids, target.folds.tolist()) if f != k] for k in folds}
            rels = {k: f"adapted/{target.task}/N_T-{spec.variant}/fold{k}" for k in folds}
            print(f"[adapt] {spec.network}: one Ray Train run, {cfg.workers} worker(s), {cfg.epochs} epochs per test "
                  f"fold; test folds {folds} in turn, each trained on the other folds' clips "
                  f"({', '.join(str(len(train_ids[k])) for k in folds)} clips)", flush=True)
            done = fit_adapted_folds(target.model_url, shard_urls, train_ids, target.class_names, spec, cfg,
                                     storage_path=storage_path, run_name=f"adapt-{spec.variant}-{run_tag}",
                                     export_urls={k: str(Path(out_folder) / rels[k]) for k in folds},
                                     progress=proto.progress)
            for fit in done:
                print(f"[adapt] {spec.network} test fold {fit.test_fold}: loss {fit.meta['history'][-1]['loss']:.4f} "
                      f"after {len(fit.meta['history'])} epochs on {len(fit.meta['train_clip_ids'])} clips, "
                      f"{fit.seconds:.1f} s", flush=True)
            # re-extraction: every fold's network in one pass over the shards
            for fit, feats in zip(done, adapted_features(done, shard_urls, clip_ids, cfg, executor=proto.executor,
                                                         max_in_flight=proto.max_in_flight)):
                k = fit.test_fold
                jobs.append(_svm_job(f"{spec.variant}/{k}", target, {n: feats[n] for n in feature_sets}, proto,
                                     test_folds=[k]))
                fits.append({"network": spec.network, "test_fold": k, "train_clips": len(fit.meta["train_clip_ids"]),
                             "history": fit.meta["history"], "seconds": round(fit.seconds, 2),
                             "weights": f"{rels[k]}/{WEIGHTS}", "export": rels[k]})
    finally:
        if own_storage:
            shutil.rmtree(storage_path, ignore_errors=True)
    results = run_svm_units(jobs, executor=proto.executor, max_in_flight=proto.max_in_flight,
                            progress=proto.progress)
    out = TaskResult(extra={"adaptation": {"config": asdict(cfg), "specs": [asdict(s) for s in specs],
                                           "test_folds": folds, "fits": fits}})
    for spec in specs:
        for name in feature_sets:
            fr = merge_fold_results([results[f"{spec.variant}/{k}"][name] for k in folds])
            out.add(transfer_row(target.heading, spec.network, fr, inner_scores_seen=True), fr)
    return out
