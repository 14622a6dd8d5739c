"""trainer/main.py + loop.py on a real local Ray cluster (no mocks): 2 DDP workers on CPU.

Each fit costs ~20-40 s on a 2-core machine (Ray Train V2 start-up dominates), so these are
marked slow. RAY_TRAIN_HEALTH_CHECK_INTERVAL_S is lowered so per-epoch reports are cheap.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from runtime import storage
from test_trainer_data import make_tone_dataset
from trainer.export import load_exported
from trainer.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fast_reports(monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # propagated to the Train controller


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tones")
    # 96 train clips in shards of 20: 4 full shards and one of 16, so the two ranks get uneven data
    return make_tone_dataset(tmp / "wav", str(tmp / "shards"), n_train=96, n_eval=32, clips_per_shard=20)


def _args(data, out, name, *extra):
    return ["--data", data, "--out", out, "--name", name, "--preset", "cpu-small", "--workers", "2",
            "--no-progress", "--set", "loader.max_crop_s=2.0", "--set", "loader.batch_seconds=16", *extra]


def _metrics(run_dir: str) -> dict:
    return json.loads(storage.read_text(storage.join(run_dir, "metrics.json")))


def test_two_workers_learn_write_checkpoints_eval_metrics_and_an_export(tones, tmp_path, ray_local):
    out = str(tmp_path / "runs")
    assert main(_args(tones, out, "learn", "--epochs", "3")) == 0
    m = _metrics(f"{out}/learn")
    epochs = m["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]  # the loss goes down
    for e in epochs:
        assert e["steps_per_rank"][0] == e["steps_per_rank"][1]  # equal steps on uneven shards
        assert e["eval_clips"] == 32 and 0.0 <= e["eval_mAP"] <= 1.0 and len(e["eval_per_class_ap"]) == 4
    assert epochs[-1]["eval_mAP"] > 0.6  # 4 tones in noise are easy: clearly above chance
    run = Path(out) / "learn"
    ckpts = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())
    assert ckpts and all((c / "state.safetensors").exists() and (c / "state.json").exists() for c in ckpts)
    assert (run / "curves.png").stat().st_size > 1000
    exported = load_exported(str(run / "model"))
    assert [v["id"] for v in exported.vocabulary] == ["tone300", "tone900", "tone2200", "tone5000"]
    # no 'val' split in this data: nothing is chosen on the eval split, the last epoch is the model
    assert m["selection_split"] is None and m["best"]["epoch"] == -1 and not (run / "best").exists()
    assert exported.config["training"]["weights"] == "last"


def test_rerunning_the_same_name_on_s3_resumes_instead_of_starting_over(tmp_path, s3_bucket, ray_local):
    # clips of >= 2 segments: a one-clip batch of a one-segment clip cannot train (BatchNorm in F1
    # sees a single value per channel), and the epoch planner may emit one-clip batches
    data = make_tone_dataset(tmp_path / "wav", f"{s3_bucket}/tones", n_train=40, n_eval=12, clips_per_shard=10,
                             durations=(1.6, 2.2, 2.8, 3.0))
    out = f"{s3_bucket}/runs"
    assert main(_args(data, out, "again", "--epochs", "1", "--steps-per-epoch", "4")) == 0
    assert main(_args(data, out, "again", "--epochs", "2", "--steps-per-epoch", "4")) == 0
    epochs = _metrics(f"{out}/again")["epochs"]
    # epoch 0 comes from the first command; the second started at epoch 1, from the checkpoint
    assert [(e["epoch"], e["step"], e["start"]) for e in epochs] == [(0, 4, 0), (1, 8, 1)]
    assert load_exported(f"{out}/again/model").config["training"]["epoch"] == 1  # the published export


def test_a_killed_worker_restarts_from_the_last_checkpoint_and_finishes_all_steps(tones, tmp_path, ray_local):
    import ray

    out, name, steps, n_epochs = str(tmp_path / "runs"), "killed", 60, 3
    killed: dict = {}

    def killer():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            try:
                ranks = ray.get(ray.get_actor(f"weaksound-progress-{name}").get.remote(), timeout=5)
            except Exception:
                time.sleep(0.2)
                continue
            r1 = ranks.get(1)
            # well inside epoch 1, so Ray has registered epoch 0's checkpoint (a kill right after a
            # report may land before the controller records it; then the restart begins earlier)
            if r1 and r1["epoch"] == 1 and steps // 3 <= r1["step_in_epoch"] < steps:
                os.kill(r1["pid"], signal.SIGKILL)  # a real worker process dies mid-epoch
                killed.update(r1)
            time.sleep(0.1)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    assert main(_args(tones, out, name, "--epochs", str(n_epochs), "--steps-per-epoch", str(steps),
                      "--max-failures", "2")) == 0
    t.join(timeout=5)
    assert killed, "the worker was never killed mid-epoch (training too fast?)"
    epochs = _metrics(f"{out}/{name}")["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]  # each epoch finished exactly once
    assert epochs[-1]["step"] == n_epochs * steps  # the expected total number of steps
    assert [e["start"] for e in epochs] == [0, 1, 1]  # epoch 1 was redone after the restart


def test_ray_job_submit_runs_the_trainer_against_a_head_started_here(tones, tmp_path):
    from conftest import free_port, kill_processes_mentioning  # tests/ is on sys.path (conftest.py puts it there)

    ray_bin = str(Path(sys.executable).parent / "ray")
    port, dash, client, agent, metrics = (free_port() for _ in range(5))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="wsray", dir="/tmp")  # short: Ray's unix socket paths must fit 107 chars
    try:
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={dash}", "--include-dashboard=true", f"--temp-dir={temp}",
                        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
                        f"--metrics-export-port={metrics}", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=120)
        out = str(tmp_path / "runs")
        job = subprocess.run(
            [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(REPO),
             "--runtime-env-json", json.dumps({"excludes": [".venv", ".git", "runs", "out", "*.tar"],
                                               "env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}}),
             "--", sys.executable, "trainer/main.py", *_args(tones, out, "job", "--epochs", "1",
                                                             "--steps-per-epoch", "3")],
            env=env, capture_output=True, text=True, timeout=400)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "[trainer] done" in job.stdout
        assert _metrics(f"{out}/job")["epochs"][0]["step"] == 3
    finally:
        kill_processes_mentioning(temp, f":{port} ", f":{port}\n", f"--address=127.0.0.1:{port}")
        shutil.rmtree(temp, ignore_errors=True)


def _new_vocabulary_dataset(root: Path) -> str:
    """3 classes the source model never saw (a low tone, a chirp, noise bursts), train + eval splits."""
    import numpy as np
    import soundfile as sf

    from data_prep.pipeline import run_prep
    from data_prep.records import ClipRecord, LabelVocab, SourceListing
    from data_prep.shards import ShardConfig
    from transfer_fixtures import CLASSES, RATE, _render

    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    records = []
    for i in range(24):
        cls = i % 3
        path = root / "audio" / f"c{i}.wav"
        sf.write(path, _render(cls, rng), RATE)
        records.append(ClipRecord(f"c{i}", str(path), (CLASSES[cls][0],), "train" if i < 18 else "eval"))
    vocab = LabelVocab(ids=tuple(c for c, _ in CLASSES), names=tuple(n for _, n in CLASSES))
    data = str(root / "shards")
    run_prep(SourceListing("new-vocab", vocab, records, []), data, ShardConfig(sample_rate=RATE, max_clips_per_shard=8),
             executor="local", progress=False)
    return data


@pytest.mark.slow
def test_fine_tuning_from_an_exported_model_learns_a_new_vocabulary_with_frozen_lower_blocks(tmp_path, ray_local):
    from transfer_fixtures import CLASSES, make_source_model

    source = load_exported(make_source_model(str(tmp_path / "source"), num_classes=4))
    data = _new_vocabulary_dataset(tmp_path / "new")
    out = str(tmp_path / "runs")
    assert main(_args(data, out, "tuned", "--epochs", "2", "--steps-per-epoch", "3",
                      "--init-from", str(tmp_path / "source"), "--freeze-blocks", "2")) == 0
    tuned = load_exported(f"{out}/tuned/model")
    assert [v["id"] for v in tuned.vocabulary] == [c for c, _ in CLASSES]
    assert tuned.architecture == dataclasses.replace(source.architecture, num_classes=3)
    before, after = source.model.state_dict(), tuned.model.state_dict()
    frozen = [k for k in before if k.startswith(("blocks.0.", "blocks.1."))]
    trained = [k for k in before if k.startswith(("blocks.2.", "f1.")) and k.endswith("weight")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # weights and BN statistics
    assert trained and not any(torch.equal(before[k], after[k]) for k in trained)
    assert after["f2.weight"].shape[0] == 3
    epochs = _metrics(f"{out}/tuned")["epochs"]
    assert [e["step"] for e in epochs] == [3, 6] and _metrics(f"{out}/tuned")["config"]["freeze_blocks"] == 2
