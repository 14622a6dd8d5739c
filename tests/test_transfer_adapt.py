"""Network adaptation N_T^I / N_T^II / N_T^III (transfer/adapt.py, adapt_network.py, adapt_train.py).

Invariants:
- every variant has a new output layer with one filter per target class and leaves F1 as N_S
  computed it (before training); II adds a layer; III freezes the conv blocks, BatchNorm included;
- a fit trains on the clips of the training folds only: the test fold is never read into
  training, and a test-fold clip handed to training is an error;
- `weaksound transfer adapt` trains with one Ray Train run per variant that fits every test fold in
  turn, each fold's network trained as a run of that fold alone would train it; it exports each
  adapted network like N_S (model.safetensors + config.json with the target's vocabulary) beside
  the clip ids the fit trained on, and scores re-extracted F1/F2 in the paper's grid;
- a worker group restarted after a failure knows, from the run's latest checkpoint, which folds
  are done.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from transfer_fixtures import CLASSES, N_FOLDS, build_target

from data_prep.manifest import read_manifest
from trainer.export import load_exported
from trainer.finetune import param_groups, train_mode
from trainer.losses import per_clip_loss
from transfer.adapt import (AdaptConfig, build_adapted, fit_adapted, load_training_clips, merge_fold_results,
                            variant_spec)
from transfer.adapt_network import frozen_block_count
from transfer.adapt_train import clip_batch, fold_training_clips, folds_done_in, load_clips
from transfer.cli import main
from inference.embed import load_embeddings
from transfer.svm import TransferData, combine_units, evaluate_feature_sets, plan_units, run_unit


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_target(tmp_path_factory.mktemp("tiny-adapt"))


def _clips_by_fold(emb_url: str) -> dict[int, list[str]]:
    e = load_embeddings(emb_url)
    out: dict[int, list[str]] = {}
    for cid, fold in zip(e.arrays["clip_id"].tolist(), e.arrays["fold"].tolist()):
        out.setdefault(int(fold), []).append(cid)
    return out


def test_every_variant_has_a_new_output_layer_and_keeps_n_s_f1(tiny):
    base = load_exported(tiny["model"]).model
    x = torch.randn(2, 1, 160, base.n_mels)
    with torch.no_grad():
        ref = base(x)
    for variant in ("I", "II", "III"):
        model = build_adapted(base, variant_spec(variant), num_classes=3).eval()
        with torch.no_grad():
            out = model(x)
        assert out.segments.shape == (2, ref.segments.shape[1], 3), variant
        torch.testing.assert_close(out.f1, ref.f1)  # F1 is N_S's until trained
    assert base(x).segments.shape[-1] == 4  # N_S itself is untouched
    two = build_adapted(base, variant_spec("II"), num_classes=3)
    assert isinstance(two.f2, torch.nn.Sequential) and two.f2[0].out_channels == base.cfg.f1_channels
    assert build_adapted(base, variant_spec("II", extra_channels=16), 3).f2[0].out_channels == 16
    assert isinstance(build_adapted(base, variant_spec("I"), 3).f2, torch.nn.Conv2d)


def test_n_t_iii_freezes_the_conv_blocks_and_their_batchnorm_statistics(tiny):
    base = load_exported(tiny["model"]).model
    spec = variant_spec("III")
    model = build_adapted(base, spec, num_classes=3)
    assert not any(p.requires_grad for p in model.blocks.parameters())
    assert all(p.requires_grad for p in model.f1.parameters()) and all(p.requires_grad for p in model.f2.parameters())
    train_mode(model, frozen_block_count(model, spec))
    assert not any(m.training for m in model.blocks.modules()) and model.f1.training
    frozen = {id(p) for p in model.blocks.parameters()}
    groups = param_groups(model, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    assert not frozen & {id(p) for g in groups for p in g["params"]}
    assert variant_spec("III", iii_base="II").extra_layer
    i_model = build_adapted(base, variant_spec("I"), 3)
    assert all(p.requires_grad for p in i_model.parameters())


def test_training_clips_are_the_listed_ones_and_never_the_test_fold(tiny):
    urls = read_manifest(tiny["data"]).shard_urls()
    by_fold = _clips_by_fold(tiny["embeddings"])
    train_ids = [c for f, ids in by_fold.items() if f != 1 for c in ids]
    clips = load_training_clips(urls, train_ids, test_fold=1)
    assert [c[0] for c in clips] == sorted(train_ids)
    assert not {c[0] for c in clips} & set(by_fold[1])
    assert all(c[1].dtype == np.int16 and c[1].size == 32000 for c in clips)
    e = load_embeddings(tiny["embeddings"])
    label = dict(zip(e.arrays["clip_id"].tolist(), e.single_labels().tolist()))
    assert all(c[2] == label[c[0]] for c in clips)
    # two ranks: disjoint shares that cover the list
    r0 = {c[0] for c in load_training_clips(urls, train_ids, 1, rank=0, world=2)}
    r1 = {c[0] for c in load_training_clips(urls, train_ids, 1, rank=1, world=2)}
    assert not r0 & r1 and r0 | r1 == set(train_ids) and abs(len(r0) - len(r1)) <= 1
    with pytest.raises(ValueError, match="belongs to test fold 1"):
        load_training_clips(urls, train_ids + [by_fold[1][0]], test_fold=1)
    with pytest.raises(ValueError, match="not in the shards"):
        load_training_clips(urls, train_ids + ["no-such-clip"], test_fold=1)


def test_clips_for_several_folds_are_read_once_and_each_fold_refuses_its_own_test_clips(tiny):
    urls = read_manifest(tiny["data"]).shard_urls()
    by_fold = _clips_by_fold(tiny["embeddings"])
    every = {c for ids in by_fold.values() for c in ids}
    store = load_clips(urls, every)
    assert set(store) == every and {fold for _, _, fold in store.values()} == set(by_fold)
    for k in by_fold:
        train = [c for f, ids in by_fold.items() if f != k for c in ids]
        assert [c[0] for c in fold_training_clips(store, train, k)] == sorted(train)
        with pytest.raises(ValueError, match=f"belongs to test fold {k}"):
            fold_training_clips(store, train + by_fold[k][:1], k)


def test_a_restarted_run_reads_the_folds_done_from_its_latest_checkpoint(tiny, tmp_path):
    from ray.train import Checkpoint

    from trainer.checkpoint import save_checkpoint

    model = build_adapted(load_exported(tiny["model"]).model, variant_spec("I"), num_classes=3)
    save_checkpoint(tmp_path / "ckpt", model=model, extra={"adapt": {"test_fold": 3}, "folds_done": [1, 3]})
    assert folds_done_in(Checkpoint.from_directory(str(tmp_path / "ckpt"))) == [1, 3]
    assert folds_done_in(None) == []


def test_bce_scores_the_pooled_clip_output_and_ce_the_pooled_logits(tiny):
    base = load_exported(tiny["model"]).model
    model = build_adapted(base, variant_spec("II"), num_classes=3).train()
    x, y = torch.randn(4, 1, 128, base.n_mels), torch.tensor([0, 1, 2, 1])
    out = model(x)
    onehot = F.one_hot(y, 3).float()
    bce = per_clip_loss("weak", out, onehot).mean()  # AdaptConfig.loss "bce"
    torch.testing.assert_close(bce, F.binary_cross_entropy(out.clip, onehot))
    ce = per_clip_loss("ce", out, onehot).mean()
    logits = torch.logit(out.segments.double(), eps=0).mean(dim=1)  # sigmoid^-1 of F2, averaged over segments
    torch.testing.assert_close(ce.double(), F.cross_entropy(logits, y), rtol=1e-4, atol=1e-4)
    ce.backward()
    assert model.f2[2].weight.grad is not None and model.blocks[0].convs[0][0].weight.grad is not None


def test_a_training_batch_crops_long_clips_and_carries_one_hot_targets():
    pcm = [np.full(100, 16384, np.int16), np.arange(40, dtype=np.int16)]
    clips = [("a", pcm[0], 2), ("b", pcm[1], 0)]
    batch = clip_batch(clips, [0, 1], np.random.default_rng(0), crop=60, num_classes=3)
    assert batch["lengths"].tolist() == [60, 40] and batch["waveform"].shape == (2, 60)
    assert torch.all(batch["waveform"][0] == 0.5) and torch.all(batch["waveform"][1, 40:] == 0)
    assert batch["targets"].tolist() == [[0, 0, 1], [1, 0, 0]]


def test_single_fold_results_merge_into_one_row_per_feature_set():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 5)) + 3 * np.eye(5)[y]
    folds = np.tile([1, 2, 3], 20)
    data = TransferData({"F1 max": x}, y, folds)
    units = plan_units(data, (0.1, 1.0))
    per_fold = [combine_units([u for u in units if u.test_fold == k],
                              [run_unit(u, data) for u in units if u.test_fold == k], data)["F1 max"]
                for k in (3, 1, 2)]
    merged = merge_fold_results(per_fold)
    whole = evaluate_feature_sets({"F1 max": x}, y, folds, (0.1, 1.0))["F1 max"]
    assert merged.folds == (1, 2, 3) and merged.accuracies == whole.accuracies
    assert merged.chosen_C == whole.chosen_C and np.array_equal(merged.predictions, whole.predictions)
    with pytest.raises(ValueError, match="same clips"):
        merge_fold_results([per_fold[0], per_fold[0]])


def test_adapt_trains_with_ray_train_on_the_training_folds_only(tiny, tmp_path, ray_local):
    out = tmp_path / "adapt"
    assert main(["adapt", "--embeddings", tiny["embeddings"], "--variants", "I", "--folds", "1,2", "--epochs", "1",
                 "--c-grid", "0.1,1", "--out", str(out), "--no-progress"]) == 0
    by_fold = _clips_by_fold(tiny["embeddings"])
    for k in (1, 2):  # two test folds, one run: each fold's network saw the other folds' clips only
        meta = json.loads((out / f"adapted/events/N_T-I/fold{k}/adapt.json").read_text())
        assert meta["test_fold"] == k and meta["spec"]["variant"] == "I"
        assert meta["train_clip_ids"] == sorted(c for f, ids in by_fold.items() if f != k for c in ids)
        assert not set(meta["train_clip_ids"]) & set(by_fold[k])  # the test fold is never seen
    weights = load_file(str(out / "adapted/events/N_T-I/fold2/model.safetensors"))
    assert weights["f2.weight"].shape[0] == len(CLASSES)
    net = load_exported(str(out / "adapted/events/N_T-I/fold2"))  # exported like N_S
    assert net.architecture.num_classes == len(CLASSES)
    assert [v["name"] for v in net.vocabulary] == list(load_embeddings(tiny["embeddings"]).target_names)
    assert net.config["training"]["network"] == "N_T^I" and net.config["training"]["test_fold"] == 2

    doc = json.loads((out / "results.json").read_text())
    rows = {r["label"]: r for r in doc["rows"]}
    grid = [f"{n}, {layer}, {m}()" for n in ("N_S", "N_T^I") for layer in ("F1", "F2") for m in ("max", "avg")]
    assert set(grid + ["Baseline, MFCC stats"]) <= set(rows)
    other = set(rows) - set(grid) - {"Baseline, MFCC stats"}
    assert all(r.startswith("N_S + MFCC, ") for r in other)  # N_S joined with the baseline (FUSED_SETS)
    assert all(list(r["per_fold"]) == ["1", "2"] for r in rows.values())  # every row on the same test folds
    assert rows["N_T^I, F1, max()"]["mean"] > 1 / len(CLASSES) + 0.3
    fits = doc["extra"]["tasks"]["events_adapt"]["adaptation"]["fits"]
    assert [(f["network"], f["test_fold"], f["train_clips"]) for f in fits] == [("N_T^I", 1, 24), ("N_T^I", 2, 24)]
    assert (out / "events_adapted_confusion.png").is_file()


@pytest.mark.slow
def test_a_fold_fitted_after_others_in_one_run_is_the_network_a_run_of_that_fold_alone_trains(tiny, tmp_path,
                                                                                                ray_local):
    out = tmp_path / "both"
    assert main(["adapt", "--embeddings", tiny["embeddings"], "--variants", "I", "--folds", "1,2", "--epochs", "2",
                 "--c-grid", "0.1", "--no-baseline", "--out", str(out), "--no-progress"]) == 0
    target_emb = load_embeddings(tiny["embeddings"])
    by_fold = _clips_by_fold(tiny["embeddings"])
    alone = fit_adapted(tiny["model"], read_manifest(tiny["data"]).shard_urls(),
                        [c for f, ids in by_fold.items() if f != 2 for c in ids], list(target_emb.target_names), 2,
                        variant_spec("I"), AdaptConfig(epochs=2), storage_path=str(tmp_path / "ray"),
                        run_name="fold2-alone", export_url=str(tmp_path / "alone"))
    in_run = load_file(str(out / "adapted/events/N_T-I/fold2/model.safetensors"))
    assert alone.meta["history"] == json.loads((out / "adapted/events/N_T-I/fold2/adapt.json").read_text())["history"]
    for name, tensor in load_file(str(tmp_path / "alone" / "model.safetensors")).items():
        torch.testing.assert_close(in_run[name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_the_full_adaptation_grid_over_every_fold_with_two_ddp_workers(tiny, tmp_path, ray_local):
    out = tmp_path / "grid"
    assert main(["adapt", "--embeddings", tiny["embeddings"], "--epochs", "2", "--workers", "2",
                 "--c-grid", "0.1,1", "--no-baseline", "--out", str(out), "--no-progress"]) == 0
    by_fold = _clips_by_fold(tiny["embeddings"])
    for variant in ("I", "II", "III"):
        for k in range(1, N_FOLDS + 1):
            meta = json.loads((out / f"adapted/events/N_T-{variant}/fold{k}/adapt.json").read_text())
            assert meta["world_size"] == 2
            assert meta["train_clip_ids"] == sorted(c for f, ids in by_fold.items() if f != k for c in ids)
    rows = {r["label"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert len(rows) == 4 * 4  # (N_S, N_T^I, N_T^II, N_T^III) x (F1, F2) x (max, avg)
    for net in ("N_T^I", "N_T^II", "N_T^III"):
        assert list(rows[f"{net}, F1, max()"]["per_fold"]) == ["1", "2", "3"]
        assert rows[f"{net}, F1, max()"]["mean"] > 0.8
