"""trainer/finetune.py: a trained network with a new output layer, frozen lower blocks; and the
export of such a network (N_T^II's extra layer included) in N_S's format."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from trainer.config import FrontEndConfig, ModelConfig, TrainConfig, preset
from trainer.export import CONFIG, WEIGHTS, export_model, exported_from_bytes, load_exported, read_export_config
from trainer.finetune import (build_model, freeze_lower_blocks, init_from_export, param_groups, replace_output_layer,
                              train_mode)
from trainer.model import WeakLabelCNN

SMALL = ModelConfig(channels=(4, 8, 8, 8, 8), convs_per_block=(1, 1, 1, 1, 1), f1_channels=16, num_classes=5)
FE = FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)


def _base():
    torch.manual_seed(0)
    return WeakLabelCNN(SMALL, 64).eval()


def test_a_new_output_layer_keeps_f1_and_is_seeded_by_its_seed_alone():
    base = _base()
    x = torch.randn(2, 1, 128, 64)
    a = replace_output_layer(base, 3, seed=7).eval()
    torch.manual_seed(123)  # the global RNG does not matter ...
    b = replace_output_layer(base, 3, seed=7).eval()
    with torch.no_grad():
        ref, out = base(x), a(x)
    assert out.segments.shape == (2, ref.segments.shape[1], 3) and a.cfg.num_classes == 3
    torch.testing.assert_close(out.f1, ref.f1)
    torch.testing.assert_close(a.f2.weight, b.f2.weight)  # ... only the seed
    assert base.f2.out_channels == 5  # the base is untouched
    wide = replace_output_layer(base, 3, hidden=12, seed=0)
    assert isinstance(wide.f2, torch.nn.Sequential) and wide.cfg.f2_hidden == 12 and wide.f2[0].out_channels == 12


def test_frozen_blocks_get_no_gradient_and_keep_their_batchnorm_statistics():
    model = replace_output_layer(_base(), 3, seed=0)
    freeze_lower_blocks(model, 2)
    assert not any(p.requires_grad for b in model.blocks[:2] for p in b.parameters())
    assert all(p.requires_grad for b in model.blocks[2:] for p in b.parameters())
    train_mode(model, 2)
    assert not any(m.training for b in model.blocks[:2] for m in b.modules())
    assert all(m.training for b in model.blocks[2:] for m in b.modules()) and model.f1.training
    before = model.blocks[0].convs[0][1].running_mean.clone()
    model(torch.randn(2, 1, 128, 64) * 5 + 1)
    torch.testing.assert_close(model.blocks[0].convs[0][1].running_mean, before)
    with pytest.raises(ValueError, match="cannot freeze 6 blocks"):
        freeze_lower_blocks(model, 6)


def test_param_groups_put_the_new_layer_at_lr_and_pretrained_layers_at_the_scaled_lr():
    model = replace_output_layer(_base(), 3, seed=0)
    freeze_lower_blocks(model, 5)
    groups = param_groups(model, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)] and [g["lr_scale"] for g in groups] == [1.0, 0.1]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.f2.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.f1.parameters()}
    only_new = param_groups(replace_output_layer(_base(), 3, seed=0), 1e-3, 0.0)
    assert len(only_new) == 1


def test_an_adapted_network_with_an_extra_layer_exports_and_loads_like_n_s(tmp_path):
    model = replace_output_layer(_base(), 3, hidden=12, seed=0).eval()
    vocab = [{"index": i, "id": f"c{i}", "name": f"C{i}"} for i in range(3)]
    url = export_model(str(tmp_path / "nt2"), model, frontend=FE, architecture=model.cfg, vocabulary=vocab)
    loaded = load_exported(url)
    assert loaded.architecture.f2_hidden == 12 and loaded.vocabulary == vocab
    x = torch.randn(1, 1, 160, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).clip, model(x).clip)
    same = exported_from_bytes(loaded.config, (tmp_path / "nt2" / WEIGHTS).read_bytes())
    torch.testing.assert_close(same.model.state_dict(), loaded.model.state_dict())
    assert read_export_config(url) == (FE, model.cfg)
    assert (tmp_path / "nt2" / CONFIG).exists()


def test_init_from_takes_the_exports_front_end_and_architecture_with_the_new_vocabulary(tmp_path):
    url = export_model(str(tmp_path / "src"), _base(), frontend=FE, architecture=SMALL,
                       vocabulary=[{"index": i, "id": str(i)} for i in range(5)])
    cfg = dataclasses.replace(preset("paper"), init_from=url, freeze_blocks=2, seed=3)
    resolved = init_from_export(cfg, num_classes=2)
    assert resolved.frontend == FE and resolved.model == dataclasses.replace(SMALL, num_classes=2)
    model = build_model(resolved)
    assert model.cfg.num_classes == 2 and not any(p.requires_grad for p in model.blocks[1].parameters())
    torch.testing.assert_close(model.blocks[0].convs[0][0].weight, _base().blocks[0].convs[0][0].weight)
    plain = init_from_export(preset("cpu-small"), num_classes=7)
    assert plain.model.num_classes == 7 and isinstance(build_model(plain), WeakLabelCNN)
    with pytest.raises(ValueError, match="freeze_blocks needs init_from"):
        TrainConfig(freeze_blocks=1)
    with pytest.raises(ValueError, match="loss_target"):
        TrainConfig(loss_target="strong")
