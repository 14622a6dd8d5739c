"""trainer/config.py: presets, dict round trip, strict overrides."""
import dataclasses

import pytest

from trainer.config import (PRESETS, DataConfig, FrontEndConfig, ModelConfig, TrainConfig, apply_overrides,
                            preset)


def test_paper_preset_is_the_papers_network_and_front_end():
    cfg = preset("paper")
    assert (cfg.frontend.sample_rate, cfg.frontend.n_fft, cfg.frontend.hop_length, cfg.frontend.n_mels) == \
        (44100, 1024, 512, 128)
    assert cfg.frontend.top_db == 80.0
    assert cfg.model.channels == (16, 32, 64, 128, 256, 512)
    assert cfg.model.convs_per_block == (2, 2, 2, 2, 2, 1)
    assert cfg.model.f1_channels == 1024 and cfg.model.pooling == "avg"
    assert cfg.optim.lr == 1e-3


def test_cpu_small_preset_is_the_same_family_at_lower_cost():
    small, paper = preset("cpu-small"), preset("paper")
    assert small.frontend.sample_rate < paper.frontend.sample_rate
    assert max(small.model.channels) < max(paper.model.channels)
    assert small.frontend.n_mels // 2 ** small.model.num_blocks == 2  # F1 2x2 still closes the mel axis


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_asdict(name):
    cfg = preset(name)
    assert TrainConfig.from_dict(dataclasses.asdict(cfg)) == cfg


def test_from_dict_accepts_json_lists_for_tuples():
    d = dataclasses.asdict(preset("paper"))
    d["model"]["channels"] = list(d["model"]["channels"])
    assert TrainConfig.from_dict(d).model.channels == (16, 32, 64, 128, 256, 512)


def test_from_dict_rejects_unknown_keys_naming_them():
    d = dataclasses.asdict(preset("paper"))
    d["optim"]["learning_rate"] = 0.1
    with pytest.raises(KeyError, match="learning_rate"):
        TrainConfig.from_dict(d)


def test_from_dict_rejects_wrong_types():
    d = dataclasses.asdict(preset("paper"))
    d["epochs"] = "ten"
    with pytest.raises(TypeError, match="epochs"):
        TrainConfig.from_dict(d)


def test_overrides_change_nested_fields_and_fail_loudly_on_typos():
    cfg = apply_overrides(preset("paper"), ["optim.lr=3e-4", "model.pooling=max", "epochs=2"])
    assert (cfg.optim.lr, cfg.model.pooling, cfg.epochs) == (3e-4, "max", 2)
    with pytest.raises(KeyError, match="lrr"):
        apply_overrides(cfg, ["optim.lrr=1"])
    with pytest.raises(TypeError):
        apply_overrides(cfg, ["workers=two"])


def test_invalid_values_raise_with_the_offending_value():
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="median")
    with pytest.raises(ValueError, match="max_crop_s"):
        DataConfig(max_crop_s=100.0, batch_seconds=50.0)
    with pytest.raises(ValueError, match="n_mels=64"):  # 6 poolings of 64 mel leave 1 row, F1 needs 2
        TrainConfig(frontend=FrontEndConfig(n_mels=64))


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(KeyError, match="cpu-small"):
        preset("huge")


def test_cli_flags_for_the_loss_target_and_fine_tuning_reach_the_config(tmp_path):
    from trainer.main import build_parser, resolve_config

    args = build_parser().parse_args(["--data", "d", "--loss-target", "slat", "--init-from", "models/ns",
                                      "--freeze-blocks", "3", "--preset", "cpu-small"])
    cfg = resolve_config(args)
    assert (cfg.loss_target, cfg.freeze_blocks) == ("slat", 3)
    assert cfg.init_from.endswith("/models/ns") and cfg.init_from.startswith("/")  # absolute for the workers
    defaults = resolve_config(build_parser().parse_args(["--data", "d"]))
    assert (defaults.loss_target, defaults.init_from, defaults.freeze_blocks) == ("weak", "", 0)
    assert TrainConfig.from_dict(dataclasses.asdict(cfg)) == cfg


def test_old_configs_without_the_new_fields_still_load():
    d = dataclasses.asdict(preset("cpu-small"))
    for key in ("loss_target", "init_from", "freeze_blocks"):
        d.pop(key)
    d["model"].pop("f2_hidden")
    assert TrainConfig.from_dict(d) == preset("cpu-small")
