"""Every input and output location is a URL: a local path or ``s3://bucket/prefix``.

S3 goes through s3fs; the endpoint and credentials come from the standard AWS environment
variables (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ...), so the
same code talks to AWS, MinIO or a loopback moto server.

Atomicity: a local file is written under a temporary name in the same folder and renamed into
place; an S3 object is uploaded with a single PUT (or a multipart upload completed at the end),
which S3 never exposes half-written. Readers therefore see a whole object or none.
"""
from __future__ import annotations

import os
import posixpath
import tempfile
from typing import IO

import fsspec

_S3_FILESYSTEMS: dict[int, object] = {}  # one client per process: fsspec's S3 client is not fork-safe


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _strip_file_scheme(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def s3_filesystem():
    """The S3 filesystem of this process, configured from the AWS environment variables."""
    pid = os.getpid()
    if pid not in _S3_FILESYSTEMS:
        import s3fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        _S3_FILESYSTEMS[pid] = s3fs.S3FileSystem(
            endpoint_url=endpoint,
            skip_instance_cache=True,
            default_block_size=8 * 2**20,
            default_cache_type="readahead",  # tar shards are read front to back
        )
    return _S3_FILESYSTEMS[pid]


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for a URL."""
    if url.startswith("s3://"):
        return s3_filesystem(), url[len("s3://"):]
    if is_remote(url):
        fs, path = fsspec.core.url_to_fs(url)
        return fs, path
    return fsspec.filesystem("file"), os.path.abspath(_strip_file_scheme(url))


def join(url: str, *parts: str) -> str:
    if is_remote(url):
        return posixpath.join(url.rstrip("/"), *parts)
    return os.path.join(_strip_file_scheme(url), *parts)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def size(url: str) -> int:
    fs, path = filesystem(url)
    return int(fs.size(path))


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return f.read()


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def open_url(url: str, mode: str = "rb") -> IO:
    """Open for streaming reads (or non-atomic writes; use write_bytes_atomic for outputs)."""
    fs, path = filesystem(url)
    if "w" in mode and not is_remote(url):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return fs.open(path, mode)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so that readers never observe a partial object."""
    if url.startswith("s3://"):
        fs, path = filesystem(url)
        fs.pipe_file(path, data)  # one PUT: visible only when complete
        return
    if is_remote(url):
        raise ValueError(f"unsupported storage scheme for writing: {url}")
    path = os.path.abspath(_strip_file_scheme(url))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(url: str, text: str) -> None:
    write_bytes_atomic(url, text.encode("utf-8"))


def remove(url: str) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path)


def local_path(url: str) -> str:
    """The filesystem path of a local URL (raises for remote URLs)."""
    if is_remote(url):
        raise ValueError(f"not a local path: {url}")
    return os.path.abspath(_strip_file_scheme(url))
