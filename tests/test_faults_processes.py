"""Process-level faults on a real `weaksound prep` (subprocesses, real files, a real moto S3 server):
two writers racing for one output, and the S3 server made unreachable or killed mid-prep. In every
case no clip is lost and the user is told what happened."""
from __future__ import annotations

import subprocess
import time

import pytest

from audio_fixtures import tree_bytes
from data_prep import cli
from factories import (MotoServer, prep_command, prep_env, race_commands, stored_clip_ids,
                       stored_clip_ids_via, write_folder_dataset)

N_CLIPS = 30


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("race-data")
    csv_path = write_folder_dataset(root, N_CLIPS)
    reference = root / "reference"
    assert cli.main(prep_command(csv_path, str(reference))[3:]) == 0
    return csv_path, reference


def test_two_preps_racing_for_one_output_one_wins_and_the_other_names_the_lease_holder(dataset, tmp_path):
    csv_path, reference = dataset
    out = str(tmp_path / "out")
    first, second = race_commands([prep_command(csv_path, out), prep_command(csv_path, out)],
                                  tmp_path / "start", prep_env())

    assert sorted([first.returncode, second.returncode]) == [0, 1], (first.stderr[-800:], second.stderr[-800:])
    loser = first if first.returncode else second
    assert "LeaseHeld" in loser.stderr and "is in use by run 'prep folder" in loser.stderr
    assert tree_bytes(out) == tree_bytes(str(reference))  # as if only the winner had run


@pytest.fixture
def moto():
    with MotoServer() as server:
        server.client().create_bucket(Bucket="faults")
        yield server


def _wait_for_index(moto: MotoServer, proc: subprocess.Popen, prefix: str) -> int:
    deadline = time.time() + 120
    while True:
        done = [k for k in moto.keys("faults", prefix) if k.endswith(".index.json")]
        if done:
            return len(done)
        assert proc.poll() is None, "prep finished before the fault could be injected"
        assert time.time() < deadline, "no shard index appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_an_s3_server_that_stops_answering_for_a_while_mid_prep_loses_no_clip(dataset, moto):
    csv_path, _ = dataset
    proc = subprocess.Popen(prep_command(csv_path, "s3://faults/out"), env=moto.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_index(moto, proc, "out/shards/")
    moto.pause()  # requests now hang (connections accepted by the kernel, never answered)
    time.sleep(3)
    moto.resume()
    _, err = proc.communicate(timeout=300)

    assert proc.returncode == 0, err[-2000:]
    ids = stored_clip_ids_via(moto.env(), "s3://faults/out")
    assert sorted(ids) == sorted(stored_clip_ids(str(dataset[1])))
    assert len(ids) == N_CLIPS == len(set(ids))


@pytest.mark.slow
def test_an_s3_server_killed_mid_prep_fails_the_prep_clearly_and_a_rerun_completes(dataset, moto):
    csv_path, _ = dataset
    proc = subprocess.Popen(prep_command(csv_path, "s3://faults/out"), env=moto.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_index(moto, proc, "out/shards/")
    moto.kill()
    _, err = proc.communicate(timeout=600)

    assert proc.returncode != 0
    assert f"127.0.0.1:{moto.port}" in err  # the error names the endpoint that went away

    moto.start()  # same port; moto keeps no state across a restart: the bucket is recreated empty
    moto.client().create_bucket(Bucket="faults")
    rerun = subprocess.run(prep_command(csv_path, "s3://faults/out"), env=moto.env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ids = stored_clip_ids_via(moto.env(), "s3://faults/out")
    assert sorted(ids) == sorted(stored_clip_ids(str(dataset[1])))
    assert len(ids) == N_CLIPS == len(set(ids))


def test_a_rerun_removes_the_temporary_file_a_killed_atomic_write_left_behind(dataset, tmp_path):
    from runtime import storage

    csv_path, reference = dataset
    out = tmp_path / "out"
    assert cli.main(prep_command(csv_path, str(out))[3:]) == 0
    # what runtime.storage.write_bytes_atomic leaves when SIGKILLed between creating and renaming its file
    (out / "shards" / (storage.unique_name() + "-train-000003.index.json")).write_bytes(b'{"parts": [')
    assert cli.main(prep_command(csv_path, str(out))[3:]) == 0
    assert tree_bytes(str(out)) == tree_bytes(str(reference))
