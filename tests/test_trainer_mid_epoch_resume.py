"""Mid-epoch checkpoints and resume (trainer/mid_epoch.py, run_state.py, clip_log.py, loop.py).

Unit parts first (the checkpoint decision, the checkpoint's round trip, the plan check, the clip
log), then one end-to-end run on a real local Ray cluster (slow) in which a Train worker is
SIGKILLed mid-epoch after a step checkpoint and the clip log proves the epoch was finished exactly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from runtime import storage
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.clip_log import ClipLog, effective_steps, read_clip_log
from trainer.config import preset
from trainer.meter import EpochMeter
from trainer.engine import augment_generator
from trainer.mid_epoch import StepCheckpoints, check_same_plan, plan_fingerprint
from trainer.model import WeakLabelCNN
from trainer.run_state import RunState, checkpoint_writer, resume, step_scalars


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the decision ------------------------------------------------------------------------------

def test_by_steps_a_checkpoint_is_due_every_n_steps_of_the_epoch_but_never_at_its_last_step():
    saves = StepCheckpoints(every_s=600.0, every_steps=4, world_size=1)
    assert [k for k in range(1, 13) if saves.due(k, steps_in_epoch=12)] == [4, 8]
    # on the Ray Data path the epoch's length is unknown: every 4th step
    assert [k for k in range(1, 13) if saves.due(k, steps_in_epoch=None)] == [4, 8, 12]


def test_by_time_a_checkpoint_is_due_once_the_interval_has_passed_since_the_last_one():
    clock = FakeClock()
    saves = StepCheckpoints(every_s=10.0, every_steps=0, world_size=1, clock=clock)
    clock.now = 9.0
    assert not saves.due(3, 100)
    clock.now = 10.0
    assert saves.due(4, 100)
    saves.restart_clock()
    clock.now = 19.0
    assert not saves.due(5, 100)
    clock.now = 25.0
    assert not saves.due(100, 100)  # the epoch's own checkpoint follows


def test_with_both_settings_zero_no_step_checkpoint_is_ever_due():
    clock = FakeClock()
    saves = StepCheckpoints(every_s=0.0, every_steps=0, world_size=1, clock=clock)
    clock.now = 1e9
    assert not saves.enabled and not any(saves.due(k, None) for k in range(1, 50))


def test_the_augmentation_rng_of_a_step_depends_on_seed_rank_epoch_and_step_alone():
    draw = lambda *key: torch.rand(4, generator=augment_generator(*key))  # noqa: E731
    assert torch.equal(draw(0, 1, 2, 3), draw(0, 1, 2, 3))
    others = [draw(1, 1, 2, 3), draw(0, 0, 2, 3), draw(0, 1, 1, 3), draw(0, 1, 2, 4)]
    assert all(not torch.equal(draw(0, 1, 2, 3), o) for o in others)


# -- what a step checkpoint holds ----------------------------------------------------------------

def _model_and_optimizer(cfg):
    torch.manual_seed(0)
    model = WeakLabelCNN(cfg.model, cfg.frontend.n_mels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 64, 64)).clip.sum().backward()
    opt.step()
    return model, opt


@pytest.fixture
def small_cfg():
    cfg = preset("cpu-small")
    return dataclasses.replace(cfg, name="unit", model=dataclasses.replace(cfg.model, num_classes=2))


def test_a_step_checkpoint_resumes_at_its_step_of_the_same_epoch_with_every_ranks_partial_sums(tmp_path, small_cfg):
    model, opt = _model_and_optimizer(small_cfg)
    meters = [[3.5, 12, 20.0, 0.5, 4.0, 3, 0.25], [2.5, 10, 18.0, 0.25, 4.5, 3, 0.2]]
    plan = {"sha256": "ab" * 32, "input": "local", "world_size": 2, "loader_workers": 1, "steps_per_epoch": 9,
            "num_clips": 40}
    state = RunState(epoch=2, step=21, step_in_epoch=3, starts=0, history=[{"epoch": 0}, {"epoch": 1}],
                     meters=meters, plan=plan)
    checkpoint_writer(small_cfg, state, model=model, optimizer=opt)(str(tmp_path / "ckpt"))
    fresh, fresh_opt = WeakLabelCNN(small_cfg.model, small_cfg.frontend.n_mels), None
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    again = resume(str(tmp_path / "ckpt"), model=fresh, optimizer=fresh_opt, device="cpu")
    assert (again.epoch, again.step_in_epoch, again.step, again.starts) == (2, 3, 21, 1)
    assert again.meters == meters and again.plan == plan and again.history == state.history
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())
    continued = EpochMeter.from_row(again.meters[1])
    assert (continued.clips, continued.steps, continued.loss_sum) == (10, 3, 2.5)
    assert step_scalars(again) == {"epoch": 2, "step": 21, "step_in_epoch": 3, "mid_epoch": 1, "start": 1}


def test_an_epoch_checkpoint_and_one_written_before_step_positions_existed_resume_at_the_next_epoch(tmp_path,
                                                                                                   small_cfg):
    model, opt = _model_and_optimizer(small_cfg)
    state = RunState(epoch=1, step=20, step_in_epoch=0, meters=[[1.0] * 7], plan={"x": 1})
    checkpoint_writer(small_cfg, state, model=model, optimizer=opt)(str(tmp_path / "epoch"))
    extra = load_checkpoint(tmp_path / "epoch", restore_rng=False)["extra"]
    assert "meters" not in extra and "plan" not in extra  # an epoch checkpoint carries no position
    again = resume(str(tmp_path / "epoch"), model=model, optimizer=opt, device="cpu")
    assert (again.epoch, again.step_in_epoch, again.meters, again.plan) == (2, 0, None, None)
    save_checkpoint(tmp_path / "old", model=model, optimizer=opt, counters={"epoch": 4, "step": 50, "starts": 1},
                    extra={"best": state.best, "history": []})
    old = resume(str(tmp_path / "old"), model=model, optimizer=opt, device="cpu")
    assert (old.epoch, old.step_in_epoch, old.starts) == (5, 0, 2)


def test_a_meter_continued_from_its_gathered_row_sums_on_as_if_never_interrupted():
    whole, first = EpochMeter(), EpochMeter()
    losses = [torch.tensor([0.5, 0.25]), torch.tensor([1.0]), torch.tensor([0.75, 0.5, 0.25])]
    for i, loss in enumerate(losses):
        whole.add(loss, audio_s=2.0 * i, wait_s=0.1, step_s=1.0)
    for i, loss in enumerate(losses[:2]):
        first.add(loss, audio_s=2.0 * i, wait_s=0.1, step_s=1.0)
    (row,) = first.gather(world_size=1)
    second = EpochMeter.from_row(json.loads(json.dumps(row)))  # as it travels in the checkpoint's JSON
    second.add(losses[2], audio_s=4.0, wait_s=0.1, step_s=1.0)
    assert second.summary(1) == whole.summary(1)


# -- the plan a position refers to -------------------------------------------------------------

def _plan(world_size=2, streams=1, num_clips=40):
    from trainer.data import EpochPlan

    return EpochPlan(shard_urls=("a.tar", "b.tar"), num_classes=4, sample_rate=16000, duration_bins=(1.0, 2.0),
                     steps_per_epoch=9, num_clips=num_clips, audio_seconds=60.0, batches_per_pass=18,
                     world_size=world_size, streams_per_rank=streams)


def test_a_mid_epoch_resume_on_another_plan_is_refused_saying_how_to_proceed():
    saved = plan_fingerprint(_plan(), "local")
    check_same_plan(saved, plan_fingerprint(_plan(), "local"), epoch=1, step_in_epoch=4, where="ckpt")
    with pytest.raises(ValueError, match=r"world_size 2 then, 4 now.*--workers 2 and loader.loader_workers=1"):
        check_same_plan(saved, plan_fingerprint(_plan(world_size=4), "local"), epoch=1, step_in_epoch=4,
                        where="ckpt")
    with pytest.raises(ValueError, match="loader_workers 1 then, 2 now"):
        check_same_plan(saved, plan_fingerprint(_plan(streams=2), "local"), epoch=1, step_in_epoch=4, where="ckpt")
    with pytest.raises(ValueError, match="num_clips 40 then, 41 now"):
        check_same_plan(saved, plan_fingerprint(_plan(num_clips=41), "local"), epoch=1, step_in_epoch=4,
                        where="ckpt")
    # the Ray Data path holds no exact position: it resumes approximately whatever the plan
    check_same_plan(saved, plan_fingerprint(_plan(world_size=4), "ray_data"), epoch=1, step_in_epoch=4,
                    where="ckpt")


def test_the_local_input_started_at_step_k_yields_the_rest_of_the_epoch_and_counts_all_of_its_steps(tmp_path):
    from data_prep.manifest import read_manifest
    from test_trainer_data import CFG, make_tone_dataset
    from trainer.data import plan_epoch
    from trainer.train_input import epoch_batches

    url = make_tone_dataset(tmp_path / "wav", str(tmp_path / "shards"), n_train=24, n_eval=2, seed=3)
    plan = plan_epoch(read_manifest(url), "train", CFG, world_size=2, train=True, epochs=2)
    cfg = dataclasses.replace(preset("cpu-small"), loader=CFG)
    for rank in (0, 1):
        whole, steps = epoch_batches(cfg, plan, rank=rank, world_size=2, epoch=1)
        whole = [b["keys"] for b in whole]
        rest, same_steps = epoch_batches(cfg, plan, rank=rank, world_size=2, epoch=1, start_step=2)
        assert steps == same_steps == len(whole) == plan.steps_per_epoch
        assert [b["keys"] for b in rest] == whole[2:]


# -- the clip log ------------------------------------------------------------------------------

def test_the_clip_log_keeps_per_step_the_record_of_the_latest_start_and_skips_a_torn_last_line(tmp_path):
    run = str(tmp_path / "run")
    first = ClipLog(run, rank=0, start=0)
    for step in range(4):
        first.write(epoch=0, step_in_epoch=step, clip_ids=[f"a{step}"])
    first.close()
    with open(first.path, "a") as f:
        f.write('{"epoch": 0, "step_in_ep')  # a kill mid-write
    second = ClipLog(run, rank=0, start=1)  # resumed at step 2
    for step in (2, 3):
        second.write(epoch=0, step_in_epoch=step, clip_ids=[f"b{step}"])
    second.close()
    records = read_clip_log(run)
    assert len(records) == 6
    steps = effective_steps(records)
    assert [steps[(0, 0, s)]["clip_ids"] for s in range(4)] == [["a0"], ["a1"], ["b2"], ["b3"]]


def test_the_clip_log_refuses_a_remote_run_folder():
    with pytest.raises(ValueError, match="local run folder.*without --clip-log"):
        ClipLog("s3://bucket/runs/x", rank=0, start=0)


# -- end to end: a worker killed mid-epoch -----------------------------------------------------

@pytest.fixture
def _fast_reports(monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # propagated to the Train controller


def _registered_step_checkpoint(run: Path) -> tuple[int, int] | None:
    """(epoch, step_in_epoch) of the latest checkpoint Ray Train has registered, when mid-epoch.

    Ray Train V2's controller records the checkpoints it registered, with their report's metrics,
    in ``checkpoint_manager_snapshot.json``; a checkpoint merely on disk may not be registered
    yet when a worker dies, and a restart then begins from the one before."""
    try:
        latest = json.loads((run / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not there yet, or being written
    metrics = (latest or {}).get("metrics") or {}
    return (metrics["epoch"], metrics["step_in_epoch"]) if metrics.get("mid_epoch") else None


def _last_logged_step(path: Path) -> tuple[int, int, int] | None:
    """(start, epoch, step_in_epoch) of the last complete line of one rank's clip log."""
    try:
        lines = [line for line in path.read_text().split("\n")[:-1] if line]
    except OSError:
        return None
    if not lines:
        return None
    r = json.loads(lines[-1])
    return r["start"], r["epoch"], r["step_in_epoch"]


@pytest.mark.slow  # ~2 min on 2 busy cores: two Ray Train worker-group starts dominate
def test_a_worker_killed_mid_epoch_resumes_at_the_step_checkpoint_and_the_epoch_trains_each_clip_once(
        tmp_path, ray_local, _fast_reports):
    import ray

    from test_trainer_data import make_tone_dataset
    from trainer.main import main

    data = make_tone_dataset(tmp_path / "wav", str(tmp_path / "shards"), n_train=96, n_eval=16, clips_per_shard=20)
    out, name, every = str(tmp_path / "runs"), "midkill", 3
    run = Path(out) / name
    killed: dict = {}
    seen: list = []  # what the killer saw, for the failure message

    def killer():
        deadline = time.time() + 300
        pid = None
        while time.time() < deadline and not killed:
            if pid is None:
                try:
                    r1 = ray.get(ray.get_actor(f"weaksound-progress-{name}").get.remote(), timeout=5).get(1)
                    pid = r1["pid"] if r1 and r1["starts"] == 0 else None
                except Exception as e:
                    seen.append(repr(e)[:80])
            at = _last_logged_step(run / "clip_log" / "rank1.jsonl")
            saved = _registered_step_checkpoint(run)
            if not seen or seen[-1] != (pid, at, saved):
                seen.append((pid, at, saved))
            # rank 1 past a registered step checkpoint of the epoch it is in: the steps since are redone
            if pid and at and saved and at[0] == 0 and at[1] == saved[0] and at[2] >= saved[1] + 1:
                os.kill(pid, signal.SIGKILL)  # a real worker process dies mid-epoch
                killed.update(epoch=at[1], step_in_epoch=at[2], checkpoint=saved[1])
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    args = ["--data", data, "--out", out, "--name", name, "--preset", "cpu-small-plus", "--sampling", "natural",
            "--workers", "2", "--no-progress", "--set", "loader.max_crop_s=2.0", "--set", "loader.batch_seconds=4",
            "--epochs", "3", "--checkpoint-every-steps", str(every), "--clip-log", "--max-failures", "2"]
    assert main(args) == 0
    t.join(timeout=5)
    assert killed, f"the worker was never killed mid-epoch after a step checkpoint; the killer saw {seen[-40:]}"

    epochs = json.loads(storage.read_text(str(run / "metrics.json")))["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]  # one record per epoch, none from the step reports
    k = killed["epoch"]
    assert [e["start"] for e in epochs] == [0 if e < k else 1 for e in range(3)]
    assert epochs[-1]["step"] == sum(e["steps_per_rank"][0] for e in epochs)  # no step lost or run twice

    records = read_clip_log(str(run))
    resumed = min(r["step_in_epoch"] for r in records if r["start"] == 1 and r["epoch"] == k)
    assert resumed > 0 and resumed % every == 0 and resumed >= killed["checkpoint"]  # a mid-epoch resume
    redone = [r for r in records if r["start"] == 0 and r["epoch"] == k and r["step_in_epoch"] >= resumed]
    if resumed <= killed["step_in_epoch"]:  # (unless Ray registered a later checkpoint in the kill's instant)
        assert redone, "the steps after the checkpoint were trained before the kill and again after it"
    again = {(r["rank"], r["step_in_epoch"]): r["clip_ids"] for r in records if r["start"] == 1 and r["epoch"] == k}
    assert all(again[(r["rank"], r["step_in_epoch"])] == r["clip_ids"] for r in redone)  # the same batches

    train_clips = Counter(f"clip{i:04d}" for i in range(96))
    steps = effective_steps(records)
    for e in epochs:
        for rank in (0, 1):
            assert sorted(s for (ep, r, s) in steps if ep == e["epoch"] and r == rank) == \
                list(range(e["steps_per_rank"][rank]))
        trained = Counter(c for (ep, _, _), rec in steps.items() if ep == e["epoch"] for c in rec["clip_ids"])
        assert trained == train_clips  # every clip of the epoch's plan exactly once
        assert e["train_clips"] == 96  # the epoch's meter counted each once across the restart
    # the epoch killed: start 0 up to the resumed step + start 1 from it is exactly the plan
    spliced = Counter(c for r in records if r["epoch"] == k and (r["start"] == 0) == (r["step_in_epoch"] < resumed)
                      for c in r["clip_ids"])
    assert spliced == train_clips
