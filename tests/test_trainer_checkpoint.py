"""trainer/checkpoint.py and trainer/export.py: safetensors + JSON round trips, no pickle."""
import json
import random

import numpy as np
import pytest
import torch

from trainer.checkpoint import SIDECAR, TENSORS, flatten, load_checkpoint, save_checkpoint, unflatten
from trainer.config import FrontEndConfig, ModelConfig
from trainer.export import CONFIG, WEIGHTS, export_model, load_exported
from trainer.model import WeakLabelCNN

SMALL = ModelConfig(channels=(4, 8, 8, 8, 8), convs_per_block=(1, 1, 1, 1, 1), f1_channels=16, num_classes=5)
FE = FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)


def _trained(seed=0):
    torch.manual_seed(seed)
    m = WeakLabelCNN(SMALL, 64)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    for _ in range(3):
        loss = m(torch.randn(2, 1, 128, 64)).clip.mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    return m, opt, sched


def test_flatten_round_trips_int_keys_tuples_and_tensors():
    obj = {"state": {0: {"step": torch.tensor(3.0), "m": torch.ones(2)}}, "groups": [{"betas": (0.9, 0.99)}],
           "none": None}
    tree, tensors = flatten(obj)
    back = unflatten(json.loads(json.dumps(tree)), tensors)
    assert back["groups"][0]["betas"] == (0.9, 0.99) and back["none"] is None
    assert torch.equal(back["state"][0]["m"], torch.ones(2))


def test_checkpoint_round_trip_restores_model_optimizer_scheduler_rng_and_counters(tmp_path):
    m, opt, sched = _trained()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    save_checkpoint(tmp_path, model=m, optimizer=opt, scheduler=sched, counters={"epoch": 2, "step": 3},
                    config={"name": "x"}, extra={"best_map": 0.25, "batcher": {"rng": {"state": 2**100}}})
    expected_draws = (random.random(), np.random.rand(), torch.rand(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TENSORS, SIDECAR])

    m2, opt2, sched2 = _trained(seed=1)
    info = load_checkpoint(tmp_path, model=m2, optimizer=opt2, scheduler=sched2)
    assert info["counters"] == {"epoch": 2, "step": 3} and info["config"] == {"name": "x"}
    assert info["extra"]["best_map"] == 0.25 and info["extra"]["batcher"]["rng"]["state"] == 2**100
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.state_dict()["last_epoch"] == 3
    assert opt2.state_dict()["param_groups"][0]["lr"] == opt.state_dict()["param_groups"][0]["lr"]
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg_sq"], s2[k]["exp_avg_sq"]) for k in s1)
    assert (random.random(), np.random.rand()) == expected_draws[:2] and torch.equal(torch.rand(1), expected_draws[2])


def test_checkpoint_of_another_architecture_fails_with_the_mismatched_keys(tmp_path):
    m, _, _ = _trained()
    save_checkpoint(tmp_path, model=m)
    with pytest.raises(RuntimeError, match="size mismatch|Missing|Unexpected"):
        load_checkpoint(tmp_path, model=WeakLabelCNN(ModelConfig(**{**SMALL.__dict__, "f1_channels": 32}), 64))


def test_export_is_rebuilt_from_json_alone_and_scores_identically(tmp_path):
    m, _, _ = _trained()
    m.eval()
    vocab = [{"index": i, "id": f"c{i}", "name": f"Class {i}"} for i in range(5)]
    export_model(str(tmp_path / "export"), m, frontend=FE, architecture=SMALL, vocabulary=vocab,
                 training={"epochs": 1})
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted([WEIGHTS, CONFIG])
    doc = json.loads((tmp_path / "export" / CONFIG).read_text())
    assert doc["frontend"]["sample_rate"] == 16000 and doc["pooling"] == "avg" and doc["vocabulary"] == vocab
    loaded = load_exported(str(tmp_path / "export"))
    wave = torch.randn(1, 16000 * 2)
    x, n = loaded.log_mel()(wave)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, n).clip, m(x, n).clip)
    assert loaded.architecture == SMALL and loaded.frontend == FE


def test_export_refuses_a_vocabulary_that_does_not_match_the_outputs(tmp_path):
    m, _, _ = _trained()
    with pytest.raises(ValueError, match="vocabulary has 2"):
        export_model(str(tmp_path), m, frontend=FE, architecture=SMALL,
                     vocabulary=[{"index": 0, "id": "a"}, {"index": 1, "id": "b"}])
