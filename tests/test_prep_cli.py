"""`weaksound prep` from the command line: kill the driver part-way, re-run, and the output is
byte-identical to an uninterrupted run; nothing usable -> non-zero exit."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from audio_fixtures import tree_bytes
from data_prep import cli

REPO = Path(__file__).resolve().parents[1]


def _folder_layout(root: Path, n: int) -> Path:
    (root / "audio").mkdir(parents=True)
    rows = ["path,labels"]
    for i in range(n):
        t = np.arange(int(16000 * (1 + i % 3))) / 16000
        sf.write(root / "audio" / f"c{i:03d}.wav", (0.2 * np.sin(2 * np.pi * (100 + 20 * i) * t)).astype(np.float32),
                 16000)
        rows.append(f"c{i:03d}.wav,{'low' if i % 2 else 'high;other'}")
    csv = root / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _prep_cmd(root: Path, csv: Path, out: Path, executor: str) -> list[str]:
    return [sys.executable, "-m", "data_prep.cli", "folder", "--root", str(root / "audio"), "--csv", str(csv),
            "--out", str(out), "--sample-rate", "22050", "--clips-per-shard", "2", "--executor", executor,
            "--no-progress"]


def test_killing_the_prep_driver_and_rerunning_gives_byte_identical_output(tmp_path):
    csv = _folder_layout(tmp_path, 80)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    subprocess.run(_prep_cmd(tmp_path, csv, reference, "local"), check=True, env=env, cwd=REPO)

    proc = subprocess.Popen(_prep_cmd(tmp_path, csv, resumed, "ray"), env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not list((resumed / "shards").glob("*.index.json")) if (resumed / "shards").exists() else True:
        assert proc.poll() is None, "prep finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    done_before = len(list((resumed / "shards").glob("*.index.json")))
    assert not (resumed / "manifest.json").exists()
    assert done_before < 40

    result = subprocess.run(_prep_cmd(tmp_path, csv, resumed, "ray"), env=env, cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "already done (resumed)" in result.stdout
    assert tree_bytes(str(resumed)) == tree_bytes(str(reference))


def test_nothing_usable_exits_non_zero_with_a_clear_message(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "empty.wav").write_bytes(b"")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,labels\nempty.wav,x\n")
    rc = cli.main(["folder", "--root", str(tmp_path / "audio"), "--csv", str(csv), "--out", str(tmp_path / "out"),
                   "--executor", "local", "--no-progress"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "no usable clip" in captured.err
    assert "rejected 1 (empty 1)" in captured.out


def test_every_prep_option_documents_its_default():
    for source in ("synthetic", "esc50", "dcase2016", "audioset", "folder"):
        sub = cli.build_parser()._subparsers._group_actions[0].choices[source]
        for action in sub._actions:
            if action.dest in ("help", "root", "csv", "split", "out") or action.required:
                continue
            assert action.help and ("default" in action.help or "%(default)" in action.help
                                    or sub.formatter_class.__name__.startswith("ArgumentDefaults")), action.dest


def _every_source_spec():
    from data_prep.sources import SOURCES

    return [SOURCES["synthetic"](), SOURCES["synthetic"](task="events", num_clips=40, seed=7),
            SOURCES["esc50"](root="ESC-50 master"), SOURCES["dcase2016"](root="tut"),
            SOURCES["audioset"](root="csvs", split="eval"),
            SOURCES["audioset"](root="csvs", split="balanced_train", audio="clips"),
            SOURCES["folder"](root="mine", csv="labels.csv")]


def test_the_rendered_command_parses_back_to_the_same_config():
    """A prep run built in code (the demo) prints a command that repeats exactly that run."""
    import shlex

    from data_prep import audio
    from data_prep.job import PrepConfig
    from data_prep.shards import ShardConfig

    shard = ShardConfig(sample_rate=16000, max_clips_per_shard=100, max_shard_bytes=3 * 2**19,
                        limits=audio.ValidationLimits(min_duration_s=0.5, min_sample_rate=4000, max_duration_s=0))
    for source in _every_source_spec():
        for cfg in (PrepConfig(source, out="s3://b/out dir"),
                    PrepConfig(source, out="data/x", shard=shard, executor="local", address="10.0.0.1:6379",
                               max_in_flight=3, progress=False, metrics_port=9100, metrics_linger_s=0.0)):
            argv = shlex.split(cfg.command())
            assert argv[:3] == ["weaksound", "prep", source.name]
            assert cli.config_from_args(cli.build_parser().parse_args(argv[2:])) == cfg


def test_every_registered_source_has_a_prep_sub_command_and_back():
    from dataclasses import fields

    from data_prep.sources import SOURCES

    subcommands = cli.build_parser()._subparsers._group_actions[0].choices
    assert set(subcommands) == set(SOURCES)
    for name, spec in SOURCES.items():
        dests = {a.dest for a in subcommands[name]._actions}
        assert {f.name for f in fields(spec)} <= dests, name
