"""Exports and checkpoints are published whole: a reader never pairs the weights of one save with
the config of another, and an interrupted export leaves the previous one loadable."""
import json
import os
import shutil
import threading

import pytest
import torch

from runtime import storage
from trainer.checkpoint import SIDECAR, TENSORS, load_checkpoint, save_checkpoint
from trainer.config import FrontEndConfig, ModelConfig
from trainer.export import CONFIG, WEIGHTS, export_model, load_exported, read_export_config
from trainer.model import WeakLabelCNN

FE = FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)


def _arch(classes: int) -> ModelConfig:
    return ModelConfig(channels=(4, 8, 8, 8, 8), convs_per_block=(1, 1, 1, 1, 1), f1_channels=16,
                       num_classes=classes)


def _export(url, seed: int, classes: int = 5, **kwargs):
    torch.manual_seed(seed)
    model = WeakLabelCNN(_arch(classes), 64).eval()
    vocab = [{"index": i, "id": f"s{seed}c{i}", "name": f"Seed {seed} class {i}"} for i in range(classes)]
    export_model(str(url), model, frontend=FE, architecture=_arch(classes), vocabulary=vocab, **kwargs)
    return model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_reader_that_resolved_an_export_keeps_one_whole_version_while_a_new_one_is_published(tmp_path):
    url = tmp_path / "best"
    first = _export(url, seed=1, classes=5)
    version = storage.resolve_folder(str(url))
    second = _export(url, seed=2, classes=3)  # another vocabulary size: a mixed pair could not even load
    old, new = load_exported(version), load_exported(str(url))
    assert _same_weights(old.model, first) and old.vocabulary[0]["id"] == "s1c0"
    assert _same_weights(new.model, second) and new.vocabulary[0]["id"] == "s2c0"
    assert read_export_config(str(url))[1].num_classes == 3
    assert sorted(p.name for p in url.iterdir()) == sorted([WEIGHTS, CONFIG])


def test_weights_and_config_from_two_exports_are_refused_naming_the_mismatch(tmp_path):
    _export(tmp_path / "a", seed=1)
    _export(tmp_path / "b", seed=2)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tmp_path / "a" / CONFIG, mixed / CONFIG)
    shutil.copy(tmp_path / "b" / WEIGHTS, mixed / WEIGHTS)
    with pytest.raises(ValueError, match="different exports"):
        load_exported(str(mixed))


def test_an_interrupted_export_leaves_the_previous_one_loadable(tmp_path):
    url = tmp_path / "model"
    first = _export(url, seed=1)
    # the export fails after writing weights and config into its new version, before switching to it
    with pytest.raises(ValueError, match="not a relative path"):
        _export(url, seed=2, extra_files={"../outside.json": b"{}"})
    assert _same_weights(load_exported(str(url)).model, first)
    assert not (tmp_path / "outside.json").exists()


def test_an_export_written_in_place_by_an_older_version_is_replaced_whole(tmp_path):
    legacy = tmp_path / "model"
    _export(tmp_path / "staging", seed=1)
    legacy.mkdir()
    for name in (WEIGHTS, CONFIG):  # the old layout: two plain files in a plain folder
        shutil.copy(os.path.realpath(tmp_path / "staging" / name), legacy / name)
    assert load_exported(str(legacy)).vocabulary[0]["id"] == "s1c0"
    second = _export(legacy, seed=2)
    assert os.path.islink(legacy) and _same_weights(load_exported(str(legacy)).model, second)


def test_extra_files_are_published_in_the_same_version_as_the_export(tmp_path):
    url = tmp_path / "adapted"
    _export(url, seed=1, extra_files={"adapt.json": json.dumps({"fold": 1}).encode()})
    _export(url, seed=2, extra_files={"adapt.json": json.dumps({"fold": 2}).encode()})
    version = storage.resolve_folder(str(url))
    assert json.loads(storage.read_text(storage.join(version, "adapt.json"))) == {"fold": 2}
    assert json.loads(storage.read_text(storage.join(version, CONFIG)))["vocabulary"][0]["id"] == "s2c0"


def test_a_checkpoint_whose_tensors_come_from_another_save_is_refused(tmp_path):
    torch.manual_seed(0)
    a, b = WeakLabelCNN(_arch(5), 64), WeakLabelCNN(_arch(5), 64)
    save_checkpoint(tmp_path / "a", model=a, counters={"step": 1})
    save_checkpoint(tmp_path / "b", model=b, counters={"step": 2})
    shutil.copy(tmp_path / "b" / TENSORS, tmp_path / "a" / TENSORS)
    with pytest.raises(ValueError, match="different saves"):
        load_checkpoint(tmp_path / "a", model=WeakLabelCNN(_arch(5), 64))


def test_concurrent_checkpoint_saves_never_trip_over_each_others_temporary_files(tmp_path):
    """Two writers into one folder (e.g. two runs by mistake) each finish every save; no temporary
    file is left behind. (Which pair survives is the lease's business, not the checkpoint's.)"""
    torch.manual_seed(0)
    model = WeakLabelCNN(_arch(5), 64)
    errors = []

    def saves(n: int) -> None:
        try:
            for step in range(n):
                save_checkpoint(tmp_path, model=model, counters={"step": step}, include_rng=False)
        except Exception as error:  # collected: a failure in a thread must fail the test
            errors.append(error)

    threads = [threading.Thread(target=saves, args=(15,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TENSORS, SIDECAR])


def test_an_export_on_s3_is_switched_by_its_pointer_and_read_from_one_version(s3_bucket):
    url = f"{s3_bucket}/runs/r1/best"
    _export(url, seed=1, classes=5)
    version = storage.resolve_folder(url)
    second = _export(url, seed=2, classes=3)
    assert storage.resolve_folder(url) != version
    assert _same_weights(load_exported(url).model, second) and read_export_config(url)[1].num_classes == 3
    assert load_exported(version).vocabulary[0]["id"] == "s1c0"  # the previous version stays readable
