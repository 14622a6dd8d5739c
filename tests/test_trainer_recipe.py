"""The training recipe beyond the paper (augmentation, AdamW, warm-up + cosine, weight EMA, balanced
sampling), its presets and flags, the prep validation split, and one trainer per run folder."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from data_prep.cli import build_parser as prep_parser
from data_prep.cli import config_from_args
from data_prep.job import with_validation_split
from data_prep.records import ClipRecord, LabelVocab, SourceListing
from runtime import storage
from trainer.checkpoint import load_checkpoint
from trainer.config import PRESETS, AugmentConfig, FrontEndConfig, ModelConfig, OptimConfig, TrainConfig, preset
from trainer.engine import augment_generator, ema_weights, make_ema, make_optimizer, train_step
from trainer.export import load_exported
from trainer.frontend import LogMel
from trainer.main import build_parser, main, resolve_config
from trainer.model import WeakLabelCNN
from trainer.run_state import RunState, checkpoint_writer, resume, write_epoch_files

SMALL = ModelConfig(channels=(4, 8, 8, 8, 8), convs_per_block=(1, 1, 1, 1, 1), f1_channels=16, num_classes=4)
FE = FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)
RECIPE = PRESETS["cpu-small-plus"].augment


def _batch(seed=5, seconds=(0.6, 1.2, 0.9, 0.7)):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * FE.sample_rate) for s in seconds])
    wave = torch.randn(len(seconds), int(lengths.max()), generator=g) * 0.1
    for i, n in enumerate(lengths):
        wave[i, n:] = 0
    return {"waveform": wave, "lengths": lengths, "targets": torch.eye(4)[: len(seconds)]}


def _losses(steps=2, **kwargs):
    torch.manual_seed(0)
    model, frontend = WeakLabelCNN(SMALL, 64), LogMel(FE, min_frames=SMALL.segment_frames)
    model.train()
    opt = make_optimizer(model.parameters(), OptimConfig())
    out = [train_step(model, frontend, opt, _batch(seed=s), world_size=1, **kwargs) for s in range(steps)]
    return torch.stack(out), model


# -- presets and flags ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["paper", "cpu-small"])
def test_the_paper_presets_train_without_augmentation_ema_weight_decay_or_resampling(name):
    cfg = preset(name)
    assert cfg.augment == AugmentConfig() and not cfg.augment.enabled
    assert cfg.optim.ema_decay == 0 and cfg.optim.weight_decay == 0 and not cfg.optim.decoupled_weight_decay
    assert (cfg.optim.schedule, cfg.optim.warmup_steps) == ("constant", 0)
    assert cfg.loader.sampling == "natural"


@pytest.mark.parametrize("plus, base", [("paper-plus", "paper"), ("cpu-small-plus", "cpu-small")])
def test_the_plus_presets_turn_every_part_of_the_recipe_on_for_the_same_network(plus, base):
    cfg, ref = preset(plus), preset(base)
    assert (cfg.model, cfg.frontend) == (ref.model, ref.frontend)
    a = cfg.augment
    assert a.spec_augment and a.mixup_alpha > 0 and 0 < a.mel_width <= cfg.frontend.n_mels // 4
    assert cfg.optim.schedule == "cosine" and cfg.optim.warmup_steps > 0
    assert cfg.optim.decoupled_weight_decay and cfg.optim.weight_decay > 0 and 0 < cfg.optim.ema_decay < 1
    assert cfg.loader.sampling == "balanced"
    assert TrainConfig.from_dict(dataclasses.asdict(cfg)) == cfg


def test_every_recipe_flag_reaches_its_config_field_and_states_its_default():
    args = build_parser().parse_args(
        ["--data", "d", "--time-masks", "3", "--time-width", "7", "--mel-masks", "1", "--mel-width", "5",
         "--mixup-alpha", "0.3", "--warmup-steps", "9", "--schedule", "cosine", "--min-lr-ratio", "0.05",
         "--weight-decay", "0.02", "--decoupled-weight-decay", "--ema-decay", "0.9", "--sampling", "balanced",
         "--select-split", "holdout", "--lr", "0.002"])
    cfg = resolve_config(args)
    assert cfg.augment == AugmentConfig(time_masks=3, time_width=7, mel_masks=1, mel_width=5, mixup_alpha=0.3)
    o = cfg.optim
    assert (o.warmup_steps, o.schedule, o.min_lr_ratio, o.weight_decay, o.decoupled_weight_decay, o.ema_decay,
            o.lr) == (9, "cosine", 0.05, 0.02, True, 0.9, 0.002)
    assert (cfg.loader.sampling, cfg.loader.select_split) == ("balanced", "holdout")
    assert resolve_config(build_parser().parse_args(["--data", "d"])) == dataclasses.replace(preset("paper"),
                                                                                             data="d", out=cfg.out)
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in (action.help or ""), action.option_strings


def test_a_selection_split_that_is_the_eval_or_train_split_is_refused():
    from trainer.config import DataConfig

    for bad in ("eval", "train"):
        with pytest.raises(ValueError, match="select_split"):
            DataConfig(select_split=bad)
    with pytest.raises(ValueError, match="refit on train\\+val chooses nothing"):
        DataConfig(train_split="train+val")  # val would choose the model it also trained


def test_a_refit_trains_on_train_and_val_and_chooses_nothing():
    cfg = resolve_config(build_parser().parse_args(["--data", "d", "--train-split", "train+val", "--select-split", ""]))
    assert (cfg.loader.train_split, cfg.loader.select_split) == ("train+val", "")


# -- the train step ----------------------------------------------------------------------------------

def test_the_paper_step_is_unchanged_byte_for_byte_when_the_recipe_is_off():
    plain, m1 = _losses()
    off, m2 = _losses(augment=AugmentConfig(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain, off)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_augmented_steps_train_on_other_inputs_and_repeat_for_the_same_generator_seed():
    plain, _ = _losses()
    aug1, _ = _losses(augment=RECIPE, generator=augment_generator(0, 0, 0, 0))
    aug2, _ = _losses(augment=RECIPE, generator=augment_generator(0, 0, 0, 0))
    other, _ = _losses(augment=RECIPE, generator=augment_generator(0, 1, 0, 0))
    assert aug1.shape == plain.shape == (2, 4) and torch.isfinite(aug1).all()
    assert torch.equal(aug1, aug2) and not torch.equal(aug1, plain) and not torch.equal(aug1, other)
    with pytest.raises(ValueError, match="generator"):
        _losses(augment=RECIPE)


def test_each_rank_and_epoch_draws_its_own_augmentation_stream():
    draws = {(r, e): torch.rand(4, generator=augment_generator(0, r, e, 0)) for r in range(2) for e in range(2)}
    assert len({tuple(v.tolist()) for v in draws.values()}) == 4
    assert torch.equal(torch.rand(4, generator=augment_generator(0, 1, 1, 0)), draws[(1, 1)])


def test_decoupled_weight_decay_means_adamw_and_the_default_stays_adam():
    params = [torch.nn.Parameter(torch.ones(2))]
    assert type(make_optimizer(params, OptimConfig())) is torch.optim.Adam
    opt = make_optimizer(params, OptimConfig(weight_decay=0.01, decoupled_weight_decay=True))
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["weight_decay"] == 0.01


# -- the weight EMA ----------------------------------------------------------------------------------

def test_the_ema_follows_the_weights_and_buffers_with_a_warmed_up_decay():
    torch.manual_seed(0)
    model = WeakLabelCNN(SMALL, 64)
    assert make_ema(model, 0.0) is None
    ema = make_ema(model, 0.9)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.blocks[0].convs[0][1].running_mean.add_(1.0)
    ema.update_parameters(model)
    got = ema_weights(ema.state_dict())
    d = min(0.9, (1 + 1) / (10 + 1))  # the decay is warmed up: after one update it is 2/11
    name = "blocks.0.convs.0.0.weight"
    torch.testing.assert_close(got[name], d * first[name] + (1 - d) * (first[name] + 1.0))
    bn = "blocks.0.convs.0.1.running_mean"
    torch.testing.assert_close(got[bn], d * first[bn] + (1 - d) * (first[bn] + 1.0))
    assert [min(0.9, (1 + n) / (10 + n)) for n in (1, 80, 1000)] == [2 / 11, 0.9, 0.9]  # then plain EMA
    fresh = WeakLabelCNN(SMALL, 64)
    fresh.load_state_dict(got, strict=True)  # loads into the plain network: what the export writes


def test_the_ema_travels_in_the_checkpoint_and_best_exports_the_ema_weights(tmp_path):
    cfg = dataclasses.replace(preset("cpu-small-plus"), name="ema", model=dataclasses.replace(preset("cpu-small").model,
                                                                                              num_classes=4))
    torch.manual_seed(0)
    model, frontend = WeakLabelCNN(cfg.model, 64), LogMel(FE, min_frames=cfg.model.segment_frames)
    opt, ema = make_optimizer(model.parameters(), cfg.optim), make_ema(model, cfg.optim.ema_decay)
    model.train()
    for s in range(3):
        train_step(model, frontend, opt, _batch(seed=s), world_size=1, augment=cfg.augment,
                   generator=augment_generator(0, 0, 0, s))
        ema.update_parameters(model)
    state = RunState(epoch=0, step=3)
    vocab = [{"index": i, "id": f"c{i}", "name": f"C{i}"} for i in range(4)]
    new_best = state.add_epoch({"epoch": 0, "step": 3, "val_mAP": 0.5}, select="val")
    write_epoch_files(str(tmp_path / "run"), cfg, state, model=ema.module, vocabulary=vocab, new_best=new_best,
                      select_split="val")
    best = load_exported(str(tmp_path / "run" / "best"))
    torch.testing.assert_close(best.model.state_dict(), ema.module.state_dict())
    raw, got = model.state_dict(), best.model.state_dict()
    assert any(not torch.equal(got[k], raw[k]) for k in raw if raw[k].is_floating_point())  # not the raw weights

    checkpoint_writer(cfg, state, model=model, optimizer=opt, ema=ema)(str(tmp_path / "ckpt"))
    info = load_checkpoint(tmp_path / "ckpt", restore_rng=False)
    assert set(ema_weights(info["extra"]["ema"])) == set(model.state_dict())
    again_model = WeakLabelCNN(cfg.model, 64)
    again_ema = make_ema(again_model, cfg.optim.ema_decay)
    resume(str(tmp_path / "ckpt"), model=again_model, optimizer=make_optimizer(again_model.parameters(), cfg.optim),
           device="cpu", ema=again_ema)
    torch.testing.assert_close(again_ema.state_dict(), ema.state_dict())
    checkpoint_writer(cfg, state, model=model, optimizer=opt)(str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="EMA"):  # asking for an EMA the checkpoint never kept fails loudly
        resume(str(tmp_path / "plain"), model=again_model, optimizer=make_optimizer(again_model.parameters(),
                                                                                     cfg.optim),
               device="cpu", ema=again_ema)


# -- the prep validation split ------------------------------------------------------------------------

def _listing():
    vocab = LabelVocab(ids=("a", "b"), names=("A", "B"))
    recs = [ClipRecord(f"c{i}", f"/x/c{i}.wav", ("a" if i % 2 else "b",), "train" if i < 80 else "eval",
                       source_id=f"rec{i // 4}") for i in range(100)]
    return SourceListing("t", vocab, recs, [])


def test_val_fraction_moves_whole_source_recordings_of_the_train_split_only():
    out = with_validation_split(_listing(), 0.25)
    val = [r for r in out.records if r.split == "val"]
    assert 0 < len(val) < 80 and {r.split for r in out.records} == {"train", "val", "eval"}
    assert sum(r.split == "eval" for r in out.records) == 20
    val_sources = {r.source_id for r in val}
    assert all(r.split == "val" for r in out.records if r.source_id in val_sources)  # never straddles
    assert with_validation_split(_listing(), 0.25).records == out.records  # deterministic
    assert with_validation_split(_listing(), 0.0).records == _listing().records


def test_the_prep_val_fraction_flag_renders_back_and_defaults_to_none(tmp_path):
    parser = prep_parser()
    assert config_from_args(parser.parse_args(["synthetic", "--out", "o"])).val_fraction == 0.0
    cfg = config_from_args(parser.parse_args(["synthetic", "--out", "o", "--val-fraction", "0.1"]))
    assert cfg.val_fraction == 0.1 and "--val-fraction 0.1" in cfg.command()
    assert config_from_args(parser.parse_args(cfg.argv()[1:])) == cfg
    grouped = config_from_args(parser.parse_args(["synthetic", "--out", "o", "--val-fraction", "0.1",
                                                  "--val-groups", "g.csv"]))
    assert grouped.val_groups == "g.csv" and config_from_args(parser.parse_args(grouped.argv()[1:])) == grouped
    with pytest.raises(ValueError, match="needs a val_fraction"):
        config_from_args(parser.parse_args(["synthetic", "--out", "o", "--val-groups", "g.csv"]))


def test_a_groups_file_drives_the_val_carve_and_one_naming_no_train_clip_is_refused(tmp_path, capsys):
    groups = tmp_path / "groups.csv"
    groups.write_text("clip_id,group\n" + "".join(f"c{i},mix{i % 3}\nc{i},shared\n" for i in range(40)))
    out = with_validation_split(_listing(), 0.4, str(groups))
    assert sum(r.split == "eval" for r in out.records) == 20
    assert "names 40 of 80 train clips" in capsys.readouterr().out
    # every named clip shares the group "shared": drawn or not, the 40 named clips move together
    assert len({r.split for r in out.records if r.clip_id in {f"c{i}" for i in range(40)}}) == 1
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("clip_id,group\nYT_abc,r1\n")
    with pytest.raises(ValueError, match="names none of the 80 train clips"):
        with_validation_split(_listing(), 0.4, str(wrong))


# -- one trainer per run folder ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_tones(tmp_path_factory):
    from test_trainer_data import make_tone_dataset

    tmp = tmp_path_factory.mktemp("tiny")
    return make_tone_dataset(tmp / "wav", str(tmp / "shards"), n_train=8, n_eval=4)


def test_a_second_trainer_on_a_held_run_folder_stops_with_an_error_naming_the_holder(tiny_tones, tmp_path, capsys):
    out = str(tmp_path / "runs")
    holder = storage.Lease(storage.join(out, "same"), owner="weaksound train same (first)").acquire()
    try:
        code = main(["--data", tiny_tones, "--out", out, "--name", "same", "--preset", "cpu-small", "--no-progress"])
    finally:
        holder.release()
    err = capsys.readouterr().err
    assert code == 2 and "weaksound train same (first)" in err and "in use" in err
    again = storage.Lease(storage.join(out, "same"), owner="the re-run").acquire()  # released: a re-run may take it
    again.release()


def test_a_lease_held_by_another_live_process_blocks_this_one(tmp_path):
    import subprocess
    import sys

    folder = str(tmp_path / "run")
    code = ("import sys, time; from runtime import storage; storage.Lease(sys.argv[1], owner='other-trainer')"
            ".acquire(); print('held', flush=True); time.sleep(60)")
    repo = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", code, folder], stdout=subprocess.PIPE, text=True, cwd=repo)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(storage.LeaseHeld, match="other-trainer"):
            storage.Lease(folder, owner="me").acquire()
    finally:
        proc.kill()
        proc.wait()
    storage.Lease(folder, owner="me").acquire().release()  # its holder died: the lease is taken over


def test_metrics_json_records_the_selection_split(tmp_path):
    cfg = dataclasses.replace(preset("cpu-small"), name="sel", model=dataclasses.replace(preset("cpu-small").model,
                                                                                         num_classes=4))
    state = RunState()
    state.add_epoch({"epoch": 0, "eval_mAP": 0.9})
    write_epoch_files(str(tmp_path), cfg, state, model=WeakLabelCNN(cfg.model, 64), vocabulary=[], new_best=False)
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["selection_split"] is None and doc["best"]["epoch"] == -1 and not (tmp_path / "best").exists()


def test_the_epoch_line_shows_the_selection_split_before_eval():
    from trainer.reporter import epoch_line

    line = epoch_line({"epoch": 2, "train_loss": 0.5, "val_mAP": 0.61, "eval_mAP": 0.4, "eval_auc": 0.8,
                       "eval_d_prime": 1.2, "clips_per_s": 10.0, "data_wait_fraction": 0.1})
    assert "val mAP 0.6100, eval mAP 0.4000" in line
