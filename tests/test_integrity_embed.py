"""`weaksound embed` keeps nothing it did not make: every .npz records the model and shard data it
came from, a re-run with another model or over changed data refuses (or redoes) the old files,
a folder mixing files of two runs does not load, and a damaged shard fails the run naming it."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from audio_fixtures import make_listing
from data_prep.manifest import read_manifest
from data_prep.pipeline import run_prep
from data_prep.shards import ShardConfig
from inference.config import EmbedConfig
from inference.embed import load_embeddings, read_fingerprint, run_embed
from trainer.config import preset
from trainer.export import export_model
from trainer.model import WeakLabelCNN


def _export(url: str, seed: int) -> str:
    cfg = preset("cpu-small")
    arch = cfg.model.__class__(**{**cfg.model.__dict__, "num_classes": 5})
    torch.manual_seed(seed)
    model = WeakLabelCNN(arch, n_mels=cfg.frontend.n_mels).eval()
    vocab = [{"index": i, "id": f"c{i}", "name": f"Class {i}"} for i in range(5)]
    return export_model(url, model, frontend=cfg.frontend, architecture=arch, vocabulary=vocab)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    listing, _ = make_listing(root / "audio", n_good=6)
    data = str(root / "data")
    run_prep(listing, data, ShardConfig(sample_rate=16000, max_clips_per_shard=3), executor="local", progress=False)
    return data


def _embed(model, data, out, **kw):
    return run_embed(EmbedConfig(model, data, str(out), executor="local", progress=False, **kw))


def _files(out) -> dict[str, bytes]:
    shards = os.path.join(out, "shards")
    return {n: open(os.path.join(shards, n), "rb").read() for n in sorted(os.listdir(shards))}


def test_a_rerun_with_another_model_refuses_by_default_and_leaves_the_old_files(dataset, tmp_path):
    model = str(tmp_path / "model")
    _export(model, seed=1)
    out = tmp_path / "emb"
    _embed(model, dataset, out)
    before = _files(out)
    again = _embed(model, dataset, out)  # same model, same data: everything is reused
    assert again.shards_done == 0 and again.shards_skipped == len(before)
    _export(model, seed=2)  # the same URL now holds another model
    with pytest.raises(ValueError, match=r"another model.*--on-mismatch redo"):
        _embed(model, dataset, out)
    assert _files(out) == before


def test_redo_recomputes_every_file_of_another_model_and_relabels_the_index(dataset, tmp_path):
    model_a, model_b = str(tmp_path / "a"), str(tmp_path / "b")
    _export(model_a, seed=1)
    _export(model_b, seed=2)
    out, fresh = tmp_path / "emb", tmp_path / "fresh"
    _embed(model_a, dataset, out)
    summary = _embed(model_b, dataset, out, on_mismatch="redo")
    assert summary.shards_skipped == 0 and summary.shards_done == len(read_manifest(dataset).shards)
    _embed(model_b, dataset, fresh)
    redone, expected = load_embeddings(str(out)), load_embeddings(str(fresh))
    assert redone.index["model_fingerprint"] == expected.index["model_fingerprint"]
    np.testing.assert_allclose(redone.arrays["f1_max"], expected.arrays["f1_max"], rtol=1e-5, atol=1e-6)
    assert all(read_fingerprint(os.path.join(out, "shards", n))["model"] == redone.index["model_fingerprint"]
               for n in _files(out))


def test_a_folder_mixing_files_of_two_models_does_not_load(dataset, tmp_path):
    model_a, model_b = str(tmp_path / "a"), str(tmp_path / "b")
    _export(model_a, seed=1)
    _export(model_b, seed=2)
    emb_a, emb_b = tmp_path / "emb_a", tmp_path / "emb_b"
    _embed(model_a, dataset, emb_a)
    _embed(model_b, dataset, emb_b)
    name = sorted(_files(emb_a))[0]
    with open(os.path.join(emb_b, "shards", name), "wb") as f:  # one file of A's run inside B's folder
        f.write(_files(emb_a)[name])
    with pytest.raises(ValueError, match=rf"{name}.*another model"):
        load_embeddings(str(emb_b))


def test_a_truncated_shard_fails_the_run_naming_it(dataset, tmp_path):
    model = str(tmp_path / "model")
    _export(model, seed=1)
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    part = read_manifest(str(data)).shards[1].name
    with open(data / part, "r+b") as f:
        f.truncate(os.path.getsize(data / part) - 512)
    with pytest.raises(ValueError, match=rf"{os.path.basename(part)}.*(truncated|bytes)"):
        _embed(model, str(data), tmp_path / "emb")


def test_a_shard_altered_after_prep_fails_the_run_naming_it(dataset, tmp_path):
    model = str(tmp_path / "model")
    _export(model, seed=1)
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    part = read_manifest(str(data)).shards[0].name
    raw = bytearray((data / part).read_bytes())
    raw[-10] ^= 0xFF  # same size, one byte of the end padding changed: only the sha256 tells
    (data / part).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{os.path.basename(part)}.*sha256"):
        _embed(model, str(data), tmp_path / "emb")
