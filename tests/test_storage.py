"""Storage: local paths and s3:// URLs behave the same, writes are atomic (files and whole folders),
and one output folder has one writer at a time (leases)."""
import itertools
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runtime import storage


def test_local_atomic_write_leaves_no_temporary_files(tmp_path):
    url = str(tmp_path / "a" / "b" / "obj.bin")
    storage.write_bytes_atomic(url, b"payload")
    assert storage.read_bytes(url) == b"payload"
    assert os.listdir(tmp_path / "a" / "b") == ["obj.bin"]


def test_local_atomic_write_keeps_old_content_when_the_write_fails(tmp_path):
    url = str(tmp_path / "obj.bin")
    storage.write_bytes_atomic(url, b"old")

    try:
        storage.write_bytes_atomic(url, None)  # type: ignore[arg-type]  # fails inside the write
    except TypeError:
        pass
    assert storage.read_bytes(url) == b"old"
    assert os.listdir(tmp_path) == ["obj.bin"]


def test_s3_round_trip_through_a_real_s3_server(s3_bucket):
    url = storage.join(s3_bucket, "prefix", "obj.bin")
    assert not storage.exists(url)
    storage.write_bytes_atomic(url, b"x" * 1000)
    assert storage.exists(url)
    assert storage.size(url) == 1000
    assert storage.read_bytes(url) == b"x" * 1000
    with storage.open_url(url) as f:
        assert f.read(10) == b"x" * 10


def test_join_keeps_url_schemes():
    assert storage.join("s3://b/p/", "shards", "x.tar") == "s3://b/p/shards/x.tar"
    assert storage.join("/data", "x") == "/data/x"


# --- modes and temporary names ------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_the_umask_gives_a_plain_open(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        storage.write_bytes_atomic(str(tmp_path / "out.bin"), b"x")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out.bin").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode) == mode


def test_concurrent_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    url = str(tmp_path / "same.bin")
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: [storage.write_bytes_atomic(url, p) for _ in range(10)], payloads))
    assert storage.read_bytes(url) in payloads  # one whole payload, never a mix
    assert os.listdir(tmp_path) == ["same.bin"]
    assert len({storage.unique_name() for _ in range(1000)}) == 1000


# --- folders published in one step --------------------------------------------------------------

def test_a_published_folder_switches_from_one_whole_version_to_the_next(tmp_path):
    url = str(tmp_path / "run" / "best")
    storage.publish_folder(url, {"model.safetensors": b"w1", "config.json": b"c1"})
    seen_by_slow_reader = storage.resolve_folder(url)
    storage.publish_folder(url, {"model.safetensors": b"w2", "config.json": b"c2", "extra.txt": b"e"})
    assert sorted(os.listdir(url)) == ["config.json", "extra.txt", "model.safetensors"]
    assert storage.read_bytes(os.path.join(url, "model.safetensors")) == b"w2"
    # a reader that resolved the folder before the switch still reads one whole old version
    assert storage.read_bytes(os.path.join(seen_by_slow_reader, "config.json")) == b"c1"
    storage.publish_folder(url, {"model.safetensors": b"w3", "config.json": b"c3"})
    assert not os.path.exists(seen_by_slow_reader)  # only the newest two versions are kept
    assert sorted(os.listdir(url)) == ["config.json", "model.safetensors"]


def test_publications_within_one_millisecond_still_prune_the_oldest_version(tmp_path, monkeypatch):
    monkeypatch.setattr(storage.time, "time", lambda: 1_800_000_000.0)  # a clock that does not move
    falling = itertools.count(16 ** 12 - 1, -1)  # random parts that come out in falling order: newest sorts first
    monkeypatch.setattr(storage.secrets, "token_hex", lambda n=16: f"{next(falling):0{2 * n}x}")
    url = str(tmp_path / "run" / "best")
    firsts = []
    for i in range(4):
        storage.publish_folder(url, {"w": bytes([i])})
        firsts.append(storage.resolve_folder(url))
    assert storage.read_bytes(os.path.join(url, "w")) == bytes([3])
    assert [os.path.exists(f) for f in firsts] == [False, False, True, True]  # the newest two, whatever the hex


def test_publishing_replaces_a_folder_that_was_written_in_place(tmp_path):
    url = tmp_path / "model"
    url.mkdir()
    (url / "model.safetensors").write_bytes(b"old")
    storage.publish_folder(str(url), {"model.safetensors": b"new"})
    assert (url / "model.safetensors").read_bytes() == b"new"


def test_publish_refuses_file_names_outside_the_folder(tmp_path):
    with pytest.raises(ValueError):
        storage.publish_folder(str(tmp_path / "m"), {"../escape": b"x"})


def test_a_published_s3_folder_resolves_to_its_newest_whole_version(s3_bucket):
    url = storage.join(s3_bucket, "run", "best")
    assert storage.resolve_folder(url) == url  # never published: the folder itself
    storage.publish_folder(url, {"model.safetensors": b"w1", "config.json": b"c1"})
    first = storage.resolve_folder(url)
    storage.publish_folder(url, {"model.safetensors": b"w2", "config.json": b"c2"})
    current = storage.resolve_folder(url)
    assert current != first
    assert storage.read_bytes(storage.join(current, "model.safetensors")) == b"w2"
    assert storage.read_bytes(storage.join(first, "config.json")) == b"c1"
    storage.publish_folder(url, {"model.safetensors": b"w3", "config.json": b"c3"})
    assert not storage.exists(storage.join(first, "config.json"))  # only the newest two versions are kept
    assert storage.read_bytes(storage.join(storage.resolve_folder(url), "config.json")) == b"c3"


# --- leases ---------------------------------------------------------------------------------------

_HOLD = """
import sys, time
from runtime import storage
lease = storage.acquire_lease(sys.argv[1], "holder-run", ttl_s=60)
print("held", flush=True)
sys.stdin.readline()
lease.release()
"""


def _holder(folder: str):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=str(Path(__file__).resolve().parents[1]), env=os.environ.copy())
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_writer_of_a_folder_gets_a_clear_error_naming_the_first(tmp_path, request, where):
    folder = str(tmp_path / "out") if where == "local" else storage.join(request.getfixturevalue("s3_bucket"), "o")
    proc = _holder(folder)
    try:
        with pytest.raises(storage.LeaseHeld, match="in use by run 'holder-run'"):
            storage.acquire_lease(folder, "second-run")
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0
    storage.acquire_lease(folder, "second-run").release()  # free again once the first let go
    assert not storage.exists(storage.join(folder, storage.LEASE_NAME))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_lease_left_by_a_dead_process_is_taken_over(tmp_path, request, where):
    folder = str(tmp_path / "out") if where == "local" else storage.join(request.getfixturevalue("s3_bucket"), "o")
    proc = subprocess.Popen([sys.executable, "-c", _HOLD.replace("lease.release()", "import os; os._exit(9)"),
                             folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.stdout.readline().strip() == "held"
    proc.communicate("\n", timeout=60)  # crashes without releasing
    assert storage.exists(storage.join(folder, storage.LEASE_NAME))
    with storage.Lease(folder, "rerun") as lease:
        lease.check()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it_lost_it(tmp_path, request, where):
    folder = str(tmp_path / "out") if where == "local" else storage.join(request.getfixturevalue("s3_bucket"), "o")
    first = storage.Lease(folder, "first", ttl_s=0.0, renew=False).acquire()  # expires at once
    second = storage.acquire_lease(folder, "second")
    with pytest.raises(storage.LeaseHeld, match="lost"):
        first.check()
    first.release()  # must not delete the second run's lease
    second.check()
    second.release()


def test_two_preps_into_one_folder_are_refused(tmp_path):
    from data_prep.pipeline import run_prep
    from data_prep.shards import ShardConfig
    from audio_fixtures import make_listing

    listing, _ = make_listing(tmp_path / "audio", n_good=2)
    out = str(tmp_path / "out")
    proc = _holder(out)
    try:
        with pytest.raises(storage.LeaseHeld, match="holder-run"):
            run_prep(listing, out, ShardConfig(sample_rate=16000), executor="local", progress=False)
    finally:
        proc.communicate("\n", timeout=60)
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    run_prep(listing, out, ShardConfig(sample_rate=16000), executor="local", progress=False)
    assert sorted(os.listdir(out)) == ["manifest.json", "rejects.jsonl", "shards"]
