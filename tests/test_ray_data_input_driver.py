"""The driver side of the Ray Data input (trainer/main.py + trainer/ray_data_input.py): capacity check,
placement on labelled data nodes, and a whole run with ``loader.input="ray_data"`` on a real local Ray."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest

from runtime import storage
from test_trainer_data import make_tone_dataset
from trainer.config import DataConfig, preset
from trainer.main import build_parser, resolve_config, run
from trainer.ray_data_input import check_decode_capacity, decode_options, worker_label_selector

RAY_DATA = DataConfig(input="ray_data", decode_cpus=1.0)


def node(cpus: float, **labels: str) -> dict:
    """One entry of ``ray.nodes()`` as the capacity check reads it."""
    return {"Alive": True, "Resources": {"CPU": cpus}, "Labels": {"ray.io/node-id": "x", **labels}}


def test_capacity_check_refuses_a_cluster_whose_cpus_the_train_workers_take_entirely():
    with pytest.raises(ValueError, match=r"2 Train workers x 1 CPUs = 2.*read\+decode task 1.*cluster has 2 CPUs"):
        check_decode_capacity([node(2)], workers=2, cpus_per_worker=1.0, loader=RAY_DATA)


def test_capacity_check_accepts_one_spare_decode_task_and_names_the_spare_cpus():
    line = check_decode_capacity([node(2), node(1)], workers=2, cpus_per_worker=1.0, loader=RAY_DATA)
    assert "1 of 3 CPUs beyond the Train workers' 2" in line


def test_capacity_check_ignores_dead_nodes():
    dead = dict(node(8), Alive=False)
    with pytest.raises(ValueError, match="cluster has 2 CPUs"):
        check_decode_capacity([node(2), dead], workers=2, cpus_per_worker=1.0, loader=RAY_DATA)


def test_decode_nodes_need_a_live_node_with_the_label_and_room_for_one_task():
    loader = dataclasses.replace(RAY_DATA, decode_nodes="node-group=cpu-data", decode_cpus=2.0)
    with pytest.raises(ValueError, match=r"0 alive node\(s\) carry the label.*ray start --labels node-group=cpu-data"):
        check_decode_capacity([node(4), node(4, **{"node-group": "gpu"})], workers=2, cpus_per_worker=1.0,
                              loader=loader)
    with pytest.raises(ValueError, match=r"1 alive node\(s\) carry the label \(CPUs: 1\)"):
        check_decode_capacity([node(4), node(1, **{"node-group": "cpu-data"})], workers=2, cpus_per_worker=1.0,
                              loader=loader)


def test_decode_nodes_leave_the_train_workers_only_the_unlabelled_nodes():
    loader = dataclasses.replace(RAY_DATA, decode_nodes="node-group=cpu-data")
    data = node(8, **{"node-group": "cpu-data"})
    with pytest.raises(ValueError, match="nodes without the label .* have 1 CPUs"):
        check_decode_capacity([node(1), data], workers=2, cpus_per_worker=1.0, loader=loader)
    line = check_decode_capacity([node(2), data, data], workers=2, cpus_per_worker=1.0, loader=loader)
    assert "on 2 node(s) labelled node-group=cpu-data (16 CPUs)" in line and "other 1 (2 CPUs)" in line


def test_decode_nodes_select_the_read_tasks_onto_the_label_and_the_train_workers_off_it():
    loader = dataclasses.replace(RAY_DATA, decode_nodes="node-group=cpu-data", decode_cpus=0.5, decode_concurrency=3)
    assert decode_options(loader) == {"decode_num_cpus": 0.5, "decode_concurrency": 3,
                                      "label_selector": {"node-group": "cpu-data"}}
    assert worker_label_selector(loader) == {"node-group": "!cpu-data"}
    assert decode_options(RAY_DATA) == {"decode_num_cpus": 1.0, "decode_concurrency": None, "label_selector": None}
    assert worker_label_selector(RAY_DATA) is None and worker_label_selector(DataConfig()) is None


@pytest.mark.parametrize("bad", ["node-group", "=cpu-data", "node-group=", "node-group=!cpu", "a=b=c",
                                 "node group=cpu"])
def test_decode_nodes_must_be_one_key_value_label(bad):
    with pytest.raises(ValueError, match="one node label key=value"):
        DataConfig(input="ray_data", decode_nodes=bad)


def test_decode_nodes_need_the_ray_data_input():
    with pytest.raises(ValueError, match="needs input='ray_data'"):
        DataConfig(input="local", decode_nodes="node-group=cpu-data")


def test_the_command_line_sets_the_decode_nodes_and_states_the_default():
    parser = build_parser()
    cfg = resolve_config(parser.parse_args(["--data", "d", "--preset", "cpu-small", "--input", "ray_data",
                                            "--decode-nodes", "node-group=cpu-data"]))
    assert cfg.loader.decode_nodes == "node-group=cpu-data"
    assert "default: none" in next(a.help for a in parser._actions if "--decode-nodes" in a.option_strings)


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tones_driver")
    # clips of >= 2 segments (a one-clip batch of a one-segment clip cannot train BatchNorm in F1)
    return make_tone_dataset(tmp / "wav", str(tmp / "shards"), n_train=24, n_eval=8, clips_per_shard=6,
                             durations=(1.6, 2.2, 2.8, 3.0), seed=11)


def _cfg(data: str, out: str, name: str, **top):
    cfg = preset("cpu-small")
    loader = dataclasses.replace(cfg.loader, input="ray_data", decode_cpus=0.5, max_crop_s=2.0, batch_seconds=8.0,
                                 shuffle_buffer=8, select_split="")
    return dataclasses.replace(cfg, data=data, out=out, name=name, workers=2, cpus_per_worker=0.5, epochs=2,
                               loader=loader, **top)


def test_a_run_refuses_the_ray_data_input_when_the_train_workers_take_every_cpu(tones, tmp_path, ray_local):
    cfg = dataclasses.replace(_cfg(tones, str(tmp_path / "runs"), "full"), cpus_per_worker=1.0)  # 2 of 2 CPUs
    with pytest.raises(ValueError, match=r"2 Train workers x 1 CPUs = 2.*cluster has 2 CPUs \(0 spare\)"):
        run(cfg, progress=False)


@pytest.mark.slow
def test_a_run_on_the_ray_data_input_trains_each_epoch_on_a_fresh_read_of_the_train_clips(tones, tmp_path,
                                                                                          ray_local, monkeypatch):
    from trainer.clip_log import read_clip_log
    from trainer.export import load_exported

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # cheap per-epoch reports
    out = str(tmp_path / "runs")
    summary = run(_cfg(tones, out, "rd", clip_log=True), progress=False)
    assert summary["epochs_done"] == 2
    assert [v["id"] for v in load_exported(summary["export"]).vocabulary] == ["tone300", "tone900", "tone2200",
                                                                             "tone5000"]
    epochs = json.loads(storage.read_text(storage.join(summary["run_dir"], "metrics.json")))["epochs"]
    log = read_clip_log(summary["run_dir"])
    train_clips = {f"clip{i:04d}" for i in range(24)}
    order = {}
    for e in epochs:
        steps = [r for r in log if r["epoch"] == e["epoch"]]
        trained = Counter(c for r in steps for c in r["clip_ids"])
        assert trained and set(trained) <= train_clips and set(trained.values()) == {1}  # each clip once at most
        assert e["train_clips"] == sum(trained.values())  # the meter counted what the ranks trained on
        assert e["steps_per_rank"][0] == e["steps_per_rank"][1]  # the ranks stopped together
        order[e["epoch"]] = [c for r in sorted(steps, key=lambda r: (r["rank"], r["step_in_epoch"]))
                             for c in r["clip_ids"]]
    assert order[0] != order[1]  # epoch 1 re-read the shards, in another order


def test_the_last_batches_of_a_ray_data_stream_hold_no_lone_clip_where_another_batch_has_room():
    from trainer.bucketing import BatchItem
    from trainer.data import EpochPlan
    from trainer.ray_data_input import _without_single_clip_batches

    plan = EpochPlan(shard_urls=(), num_classes=4, sample_rate=16000, duration_bins=(1.0,),
                     steps_per_epoch=0, num_clips=0, audio_seconds=0.0, batches_per_pass=0, batch_seconds=8.0,
                     max_batch_clips=8)
    full, lone = [BatchItem(f"a{i}", 0.0, 2.0) for i in range(3)], [BatchItem("b", 0.0, 0.9)]
    assert sorted(map(len, _without_single_clip_batches([full, lone], plan))) == [4]
    crowded = [BatchItem(f"c{i}", 0.0, 2.0) for i in range(4)]  # 4 x 2 s: no room left in 8 s
    out = _without_single_clip_batches([crowded, lone], plan)
    assert sorted(map(len, out)) == [2, 3] and sorted(it.item for b in out for it in b) == ["b", "c0", "c1", "c2", "c3"]
