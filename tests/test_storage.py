"""Storage: local paths and s3:// URLs behave the same, and writes are atomic."""
import os

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
