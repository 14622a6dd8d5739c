"""`weaksound transfer TASK` end to end on a real local Ray cluster and a tiny embedded target task.

Invariants:
- every task writes its table / PNGs, with per-fold numbers and the exact command;
- the network rows and the MFCC baseline are scored with the same protocol in one table, far
  above chance on data with clear class structure;
- running every (fold x feature set x C) unit as a Ray task gives exactly the sequential result;
- a source recording in two folds aborts with a clear error before anything runs;
- an s3:// results folder receives every file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transfer_fixtures import CLASSES, N_FOLDS, build_source, build_target, leak_one_source

from runtime import storage
from trainer.metrics import clip_metrics
from transfer.cli import build_parser, config_from_args, main
from inference.embed import load_embeddings
from transfer.experiments import super_categories

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_target(tmp_path_factory.mktemp("tiny-target"))


@pytest.fixture(scope="module")
def source_emb(tiny):
    return build_source(Path(tiny["data"]).parent, tiny["model"])


def _rows(out: Path) -> dict[str, dict]:
    doc = json.loads((out / "results.json").read_text())
    return {r["label"]: r for r in doc["rows"]}


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_events_task_on_ray_writes_the_paper_table_with_the_baseline_and_plots(tiny, tmp_path, ray_local):
    out = tmp_path / "events"
    argv = ["events", "--embeddings", tiny["embeddings"], "--out", str(out), "--c-grid", "0.01,1", "--no-progress"]
    assert main(argv) == 0

    rows = _rows(out)
    # the paper's names for every feature set of N_S, plus the baseline, all over the 3 folds
    for label in ("N_S, F1, max()", "N_S, F1, avg()", "N_S, F2, max()", "N_S, F2, avg()", "N_S, F1, max()+avg()",
                  "N_S, F1+F2, max()+avg()", "Baseline, MFCC stats"):
        assert list(rows[label]["per_fold"]) == [str(f) for f in range(1, N_FOLDS + 1)], label
        assert set(rows[label]["chosen_C"].values()) <= {0.01, 1.0}
    chance = 1 / len(CLASSES)
    assert rows["N_S, F1, max()"]["mean"] > 0.8 > chance
    assert rows["Baseline, MFCC stats"]["mean"] > 0.8

    md = (out / "results.md").read_text().splitlines()
    table = [line for line in md if line.startswith("| ")]
    assert table[0] == "| network, layer, mapping | fold 1 | fold 2 | fold 3 | mean ± std |"
    assert table[1].startswith("| Baseline, MFCC stats |")  # read every row against it
    assert any(line.startswith("## events: tiny-events (transductive)") for line in md)
    assert (out / "results.csv").read_text().count("\n") == 1 + 12  # header + 9 sets + baseline + 2 fused
    # the fused rows: the headline and the richest set, each joined with the MFCC statistics
    assert {"N_S + MFCC, F1, max()", "N_S + MFCC, F1+F2, max()+avg()"} <= set(rows)

    doc = json.loads((out / "results.json").read_text())
    # the recorded command is the config's rendering: it reproduces this very run
    assert doc["argv"][:3] == ["weaksound", "transfer", "events"]
    parse = build_parser().parse_args
    assert config_from_args(parse(doc["argv"][2:])) == config_from_args(parse(argv))
    detail = doc["details"]["events: tiny-events (transductive): N_S, F1, max()"]
    assert len(detail["predictions"]) == 3 * 4 * N_FOLDS and min(detail["predictions"]) >= 0
    assert _is_png(out / "events_confusion.png") and _is_png(out / "events_per_class_accuracy.png")


def test_ray_units_give_exactly_the_sequential_result(tiny, tmp_path, ray_local):
    common = ["scenes", "--embeddings", tiny["embeddings"], "--feature-sets", "F1_max,F2 avg,F1+F2_max",
              "--c-grid", "0.001,0.1,10", "--no-progress"]
    assert main(common + ["--executor", "ray", "--out", str(tmp_path / "ray")]) == 0
    assert main(common + ["--executor", "local", "--out", str(tmp_path / "local")]) == 0
    a = json.loads((tmp_path / "ray" / "results.json").read_text())["details"]
    b = json.loads((tmp_path / "local" / "results.json").read_text())["details"]
    assert sorted(a) == sorted(b) and len(a) == 5  # 3 sets + the baseline + F1 max fused with it
    for label in a:
        for key in ("accuracies", "chosen_C", "inner_scores", "inner_validation_folds", "predictions"):
            assert a[label][key] == b[label][key], (label, key)


def test_a_source_recording_in_two_folds_aborts_before_anything_runs(tiny, tmp_path, capsys):
    leaked = str(tmp_path / "leaked")
    donor = leak_one_source(tiny["embeddings"], leaked)
    out = tmp_path / "out"
    assert main(["events", "--embeddings", leaked, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "more than one fold" in err and repr(donor) in err and "folds [1, 2]" in err
    assert not (out / "results.md").exists()


def test_semantic_task_writes_tsne_top_sources_and_similarity(tiny, tmp_path):
    out = tmp_path / "semantic"
    assert main(["semantic", "--embeddings", tiny["embeddings"], "--out", str(out), "--top-k", "2",
                 "--executor", "local", "--no-progress"]) == 0
    for name in ("events_tsne.png", "events_top_sources.png", "events_similarity.png"):
        assert _is_png(out / name), name
    doc = json.loads((out / "semantic.json").read_text())["tasks"][0]
    assert doc["super_categories"] == ["tonal", "noisy"]  # from the "<group>/<class>" ids
    assert sorted(doc["top_sources"]["top"]) == sorted(n for _, n in CLASSES)
    assert all(len(v) == 2 for v in doc["top_sources"]["top"].values())
    sim = np.asarray(doc["similarity"])
    assert sim.shape == (3, 3) and np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T)
    md = (out / "semantic.md").read_text()
    assert "| Low tone |" in md and "2 super-categories" in md


def test_super_categories_come_from_fields_prefixes_esc50_or_a_mapping_and_may_be_absent():
    fields = [{"id": "a", "super_category": "X"}, {"id": "b", "super_category": "Y"}, {"id": "c", "super_category": "X"}]
    idx, names = super_categories(fields)
    assert idx.tolist() == [0, 1, 0] and names == ["X", "Y"]
    idx, names = super_categories([{"id": "animal: dog"}, {"id": "animal: cat"}, {"id": "urban: siren"}])
    assert idx.tolist() == [0, 0, 1] and names == ["animal", "urban"]
    esc = [{"id": f"class{i}"} for i in range(50)]
    for i, cid in {0: "dog", 10: "rain", 20: "crying_baby", 30: "door_wood_knock", 40: "helicopter"}.items():
        esc[i] = {"id": cid}
    idx, names = super_categories(esc)
    assert len(names) == 5 and idx[:10].tolist() == [0] * 10 and idx[-1] == 4
    assert super_categories([{"id": "dog"}, {"id": "crying_baby"}]) is None
    idx, names = super_categories([{"id": "dog"}, {"id": "cat"}], {"dog": "pets", "cat": "pets"})
    assert names == ["pets"]
    with pytest.raises(ValueError, match="no entry"):
        super_categories([{"id": "dog"}, {"id": "cow"}], {"dog": "pets"})


def test_audioset_task_reports_the_source_classes_map_and_auc(source_emb, tmp_path):
    out = tmp_path / "audioset"
    assert main(["audioset", "--embeddings", source_emb, "--out", str(out), "--executor", "local",
                 "--no-progress"]) == 0
    doc = json.loads((out / "audioset.json").read_text())
    emb = load_embeddings(source_emb)
    targets = np.zeros((emb.num_clips, 4))
    for i, labels in enumerate(emb.labels()):  # the source dataset's vocabulary is the model's
        targets[i, labels] = 1
    expected = clip_metrics(targets, emb.arrays["f2_avg"])
    row = next(r for r in doc["rows"] if r["split"] == "all" and r["mapping"] == "avg()")
    assert row["num_clips"] == 24 and row["num_classes_scored"] == 4
    assert row["mAP"] == pytest.approx(expected["mAP"]) and row["mean_auc"] == pytest.approx(expected["mean_auc"])
    assert {r["split"] for r in doc["rows"]} == {"all", "train", "eval"}
    assert "| all | max() | 24 | 4 |" in (out / "audioset.md").read_text()
    assert _is_png(out / "audioset_per_class_ap.png")


def test_all_runs_every_task_whose_data_is_given(tiny, source_emb, tmp_path, ray_local):
    out = tmp_path / "all"
    assert main(["all", "--events", tiny["embeddings"], "--scenes", tiny["embeddings"], "--audioset", source_emb,
                 "--feature-sets", "F1_max,F2_avg", "--c-grid", "0.1,1", "--out", str(out), "--no-progress"]) == 0
    md = (out / "results.md").read_text()
    assert "## events: tiny-events (transductive)" in md and "## scenes: tiny-events (inductive)" in md
    assert len(_rows(out)) == 4  # the same labels in both sections: 2 sets + baseline + F1 max fused ...
    assert len(json.loads((out / "results.json").read_text())["rows"]) == 8  # ... per task
    for task in ("events", "scenes"):
        for suffix in ("confusion", "per_class_accuracy", "tsne", "top_sources", "similarity"):
            assert _is_png(out / f"{task}_{suffix}.png"), (task, suffix)
    sections = [l for l in (out / "semantic.md").read_text().splitlines() if l.startswith("## ")]
    assert sections == ["## events: tiny-events (transductive)", "## scenes: tiny-events (inductive)"]
    assert (out / "audioset.md").exists()
    assert not (out / "adapted").exists()  # no --adapt: no adaptation


def test_all_infers_the_task_of_one_embeddings_folder_and_adapts_it_when_asked(tiny, tmp_path, ray_local):
    out = tmp_path / "all-adapt"
    assert main(["all", "--embeddings", tiny["embeddings"], "--adapt-variants", "I", "--folds", "1", "--epochs", "1",
                 "--feature-sets", "F1_max", "--c-grid", "1", "--out", str(out), "--no-progress"]) == 0
    rows = _rows(out)
    assert sorted(rows) == ["Baseline, MFCC stats", "N_S + MFCC, F1, max()", "N_S, F1, max()", "N_T^I, F1, max()"]
    assert list(rows["N_S, F1, max()"]["per_fold"]) == ["1", "2", "3"]
    assert list(rows["N_T^I, F1, max()"]["per_fold"]) == ["1"]  # --folds restricts the adaptation only
    assert (out / "adapted/events/N_T-I/fold1/model.safetensors").is_file()
    assert _is_png(out / "events_tsne.png") and _is_png(out / "events_adapted_confusion.png")


def test_an_s3_results_folder_receives_every_file(tiny, s3_bucket):
    url = f"{s3_bucket}/results/semantic"
    assert main(["semantic", "--embeddings", tiny["embeddings"], "--out", url, "--executor", "local",
                 "--no-progress"]) == 0
    for name in ("semantic.md", "semantic.json", "events_tsne.png", "events_similarity.png"):
        assert storage.exists(storage.join(url, name)), name
    assert storage.read_bytes(storage.join(url, "events_tsne.png"))[:8] == PNG_MAGIC
    assert json.loads(storage.read_text(storage.join(url, "semantic.json")))["command"][:3] == \
        ["weaksound", "transfer", "semantic"]


def test_bad_requests_fail_with_a_message_before_any_work(tiny, source_emb, tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["events", "--embeddings", source_emb, "--out", out, "--no-progress"]) == 2
    assert "official fold" in capsys.readouterr().err
    assert main(["adapt", "--embeddings", tiny["embeddings"], "--folds", "7", "--out", out]) == 2
    assert "--folds [7] are not folds" in capsys.readouterr().err
    assert main(["events", "--out", out]) == 2
    assert "needs --embeddings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["events", "--embeddings", tiny["embeddings"], "--feature-sets", "F3 max", "--out", out])
    assert "unknown feature sets" in capsys.readouterr().err


def test_help_of_every_option_states_its_default():
    parser = build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in (action.help or ""), action.option_strings


def test_the_rendered_command_parses_back_to_the_same_config():
    """The demo runs `run_transfer(config)` and records `config.command()`: that command repeats the run."""
    import shlex

    from transfer.experiments import Protocol
    from transfer.job import AdaptOptions, SemanticOptions, TransferConfig

    custom = dict(protocol=Protocol(c_grid=(0.01, 1.0, 123.456789), inner_folds=2, seed=4,
                                    feature_sets=("F1 max", "F2 avg"), baseline=False, n_mfcc=13, mfcc_deltas=2,
                                    executor="local", max_in_flight=5, progress=False),
                  adapt=AdaptOptions(variants=("I", "III"), epochs=2, folds=(1, 3), workers=2, use_gpu="no",
                                     lr=0.01, finetune_lr_scale=0.0, batch_clips=4, crop_seconds=0.0, loss="ce",
                                     extra_channels=64, iii_base="II", train_storage="s3://b/train"),
                  semantic=SemanticOptions(tsne_features="F2 max", top_k=3, perplexity=5.0,
                                           super_categories="groups.json"),
                  address="10.0.0.1:6379", task_name="scenes")
    configs = [TransferConfig("events", "results dir", embeddings="s3://b/emb"),
               TransferConfig("adapt", "r", embeddings="e", **custom),
               TransferConfig("all", "r", events="a", scenes="b", audioset="c"),
               TransferConfig("all", "r", events="a", adapt_in_all=True),
               TransferConfig("all", "r", embeddings="e", adapt_in_all=True, **custom)]
    parser = build_parser()
    for cfg in configs:
        argv = shlex.split(cfg.command())
        assert argv[:3] == ["weaksound", "transfer", cfg.task]
        assert config_from_args(parser.parse_args(argv[2:])) == cfg, argv


def test_a_fused_row_joins_the_network_set_with_the_mfcc_statistics_and_can_be_turned_off(tiny, tmp_path):
    from transfer.experiments import BASELINE_NAME, Protocol, Target, baseline_features, fused_features

    target = Target.load("events", tiny["embeddings"])
    proto = Protocol(executor="local", progress=False)
    net = target.network_features(["F1 max", "F2 avg", "F1+F2 max+avg"])
    mfcc = baseline_features(target, proto)
    fused = fused_features(net, mfcc)
    assert sorted(fused) == ["F1 max + MFCC", "F1+F2 max+avg + MFCC"]  # F2 avg is not a fused set
    assert np.array_equal(fused["F1 max + MFCC"], np.concatenate([net["F1 max"], mfcc], axis=1))
    assert BASELINE_NAME not in fused

    argv = ["events", "--embeddings", tiny["embeddings"], "--feature-sets", "F1_max", "--c-grid", "1",
            "--executor", "local", "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "fused")]) == 0
    assert main(argv + ["--no-fusion", "--out", str(tmp_path / "plain")]) == 0
    assert set(_rows(tmp_path / "fused")) == {"Baseline, MFCC stats", "N_S, F1, max()", "N_S + MFCC, F1, max()"}
    assert set(_rows(tmp_path / "plain")) == {"Baseline, MFCC stats", "N_S, F1, max()"}


def test_the_rendered_command_of_a_transfer_run_parses_back_to_the_same_run():
    from dataclasses import replace

    parse = build_parser().parse_args
    base = config_from_args(parse(["events", "--embeddings", "emb", "--out", "out"]))
    for protocol in (replace(base.protocol, fuse_baseline=False), replace(base.protocol, baseline=False),
                     replace(base.protocol, c_grid=(0.5, 2.0), seed=3)):
        cfg = replace(base, protocol=protocol)
        assert config_from_args(parse(cfg.argv()[1:])) == cfg
