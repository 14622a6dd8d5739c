"""The parts of the worker loop, each on its own: EpochMeter, Reporter, RunState and the epoch's save."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from runtime.telemetry import Telemetry
from trainer.checkpoint import load_checkpoint
from trainer.config import preset
from trainer.export import load_exported
from trainer.meter import EpochMeter
from trainer.model import WeakLabelCNN
from trainer.reporter import Reporter, epoch_line
from trainer.run_state import (METRICS_FILE, RunState, checkpoint_writer, epoch_scalars, resume,
                               write_epoch_files)
from trainer.train_metrics import TRAIN_METRICS


def test_meter_sums_clips_and_losses_and_summarises_the_epoch():
    m = EpochMeter()
    m.add(torch.tensor([1.0, 3.0]), audio_s=4.0, wait_s=0.5, step_s=2.0)
    m.add(torch.tensor([2.0]), audio_s=1.0, wait_s=0.5, step_s=2.0)
    assert (m.clips, m.steps, m.last_loss, m.mean_loss) == (3, 2, 2.0, 2.0)
    assert (m.clips_per_s, m.audio_s_per_s, m.wait_fraction) == (0.75, 1.25, 0.25)
    s = m.summary(world_size=1)
    assert s == {"train_loss": 2.0, "train_clips": 3, "train_audio_s": 5.0, "clips_per_s": 0.75,
                 "audio_s_per_s": 1.25, "data_wait_fraction": 0.25, "steps_per_rank": [2]}
    assert math.isnan(EpochMeter().mean_loss)


class _Clock:
    """A clock the test moves by hand (the reporter's rate limit, without sleeping)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _reporter(rank=0, **kw):
    tel = Telemetry("prometheus", TRAIN_METRICS, run="t", rank=rank)
    pushed, printed, clock = [], [], _Clock()
    r = Reporter(tel, rank=rank, epochs=2, starts=1, push=pushed.append, every_s=0.5, clock=clock,
                 log=printed.append, **kw)
    return r, tel, pushed, printed, clock


def _value(tel: Telemetry, name: str) -> float:
    for line in tel.text().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def test_reporter_counts_every_step_and_pushes_at_most_every_interval_and_at_epoch_ends():
    r, tel, pushed, _, clock = _reporter()
    meter = EpochMeter()
    done = []
    for i in range(1, 6):
        meter.add(torch.tensor([0.5, 0.7]), audio_s=2.0, wait_s=0.1, step_s=0.2)
        clock.now += 0.2
        done.append(r.step(meter, epoch=0, step_in_epoch=i, steps_in_epoch=5, global_step=i, lr=1e-3, step_s=0.2))
    # first step, then once 0.5 s have passed (t=0.8), then the epoch's last step
    assert done == [True, False, False, True, True]
    assert [p["step_in_epoch"] for p in pushed] == [1, 4, 5]
    last = pushed[-1]
    assert (last["epoch"], last["epochs"], last["steps_per_epoch"]) == (0, 2, 5)
    assert (last["global_step"], last["starts"]) == (5, 1)
    assert last["loss"] == pytest.approx(0.6) and last["clips_per_s"] == pytest.approx(10.0)
    assert _value(tel, "weaksound_train_steps_total") == 5
    assert _value(tel, "weaksound_train_loss") == pytest.approx(0.6)
    assert _value(tel, "weaksound_train_data_wait_fraction") == pytest.approx(0.5)


def test_reporter_prints_on_rank_0_only_and_records_eval_and_checkpoint_time():
    record = {"epoch": 3, "train_loss": 0.25, "clips_per_s": 12.0, "data_wait_fraction": 0.1,
              "eval_mAP": 0.5, "eval_auc": 0.75, "eval_d_prime": 1.0}
    r0, tel0, _, printed0, _ = _reporter(rank=0)
    r0.evaluated({"mAP": 0.5, "mean_auc": math.nan})
    r0.saved(record, 0.3)
    r0.restarted(epoch=2, step=40)
    r0.restarted(epoch=3, step=47, step_in_epoch=7)
    assert printed0 == [epoch_line(record), "[trainer] resumed from the end of epoch 2 (global step 40); start #1",
                        "[trainer] resumed from epoch 3 at its step 7 (global step 47); start #1"]
    assert "eval mAP 0.5000 AUC 0.7500 d' 1.000" in printed0[0] and "12.0 clips/s" in printed0[0]
    assert _value(tel0, "weaksound_train_eval_map") == 0.5 and _value(tel0, "weaksound_train_eval_auc") == 0.0
    assert _value(tel0, "weaksound_train_checkpoint_seconds_count") == 1
    assert _value(tel0, "weaksound_train_restarts_total") == 2
    r1, _, _, printed1, _ = _reporter(rank=1)
    r1.saved(record, 0.3)
    assert printed1 == []
    assert "eval" not in epoch_line({k: v for k, v in record.items() if not k.startswith("eval")})


def test_run_state_keeps_the_best_finite_validation_map_and_ignores_eval():
    s = RunState()
    assert not s.add_epoch({"epoch": 0, "train_loss": 1.0}, select="val")
    assert s.add_epoch({"epoch": 1, "val_mAP": 0.4, "eval_mAP": 0.1}, select="val")
    assert not s.add_epoch({"epoch": 2, "val_mAP": math.nan, "eval_mAP": 0.9}, select="val")
    assert not s.add_epoch({"epoch": 3, "val_mAP": 0.3, "eval_mAP": 0.95}, select="val")
    assert s.best == {"mAP": 0.4, "epoch": 1, "split": "val"} and len(s.history) == 4
    assert s.history[2]["val_mAP"] is None  # stored as strict JSON
    scalars = epoch_scalars({"epoch": 3, "lr": 1e-3, "eval_per_class_ap": [0.1], "name": "x"}, s)
    assert scalars == {"epoch": 3, "lr": 1e-3, "best_mAP": 0.4, "best_epoch": 1}


def test_without_a_selection_split_no_epoch_is_best_however_good_its_eval_map():
    s = RunState()
    assert not s.add_epoch({"epoch": 0, "eval_mAP": 0.9})
    assert s.best["epoch"] == -1
    with pytest.raises(ValueError, match="must not choose"):
        s.add_epoch({"epoch": 1, "eval_mAP": 0.9}, select="eval")


def test_an_epoch_save_writes_metrics_best_export_and_a_checkpoint_that_resumes(tmp_path):
    cfg = preset("cpu-small")
    cfg = dataclasses.replace(cfg, name="unit", model=dataclasses.replace(cfg.model, num_classes=2))
    torch.manual_seed(0)
    model = WeakLabelCNN(cfg.model, cfg.frontend.n_mels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 64, 64)).clip.sum().backward()
    opt.step()
    vocab = [{"index": 0, "id": "a", "name": "A"}, {"index": 1, "id": "b", "name": "B"}]
    state = RunState(epoch=1, step=20, starts=0)
    new_best = state.add_epoch({"epoch": 1, "step": 20, "val_mAP": 0.7}, select="val")
    run_dir = str(tmp_path / "run")
    write_epoch_files(run_dir, cfg, state, model=model, vocabulary=vocab, new_best=new_best, select_split="val")
    doc = json.loads((tmp_path / "run" / METRICS_FILE).read_text())
    assert doc["best"] == {"mAP": 0.7, "epoch": 1, "split": "val"} and doc["selection_split"] == "val"
    assert doc["vocabulary"] == vocab and doc["run"] == "unit"
    best = load_exported(run_dir + "/best")
    assert best.config["training"] == {"epoch": 1, "step": 20, "mAP": 0.7, "split": "val"}
    torch.testing.assert_close(best.model.state_dict(), model.state_dict())

    checkpoint_writer(cfg, state, model=model, optimizer=opt)(str(tmp_path / "ckpt"))
    assert load_checkpoint(tmp_path / "ckpt", restore_rng=False)["counters"] == {"epoch": 1, "step": 20, "starts": 0,
                                                                              "step_in_epoch": 0}
    fresh = WeakLabelCNN(cfg.model, cfg.frontend.n_mels)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    again = resume(str(tmp_path / "ckpt"), model=fresh, optimizer=fresh_opt, device="cpu")
    assert (again.epoch, again.step, again.starts, again.best) == (2, 20, 1, state.best)
    assert again.history == state.history
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
