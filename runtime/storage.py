"""Every input and output location is a URL: a local path or ``s3://bucket/prefix``.

S3 goes through s3fs; the endpoint and credentials come from the standard AWS environment
variables (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ...), so the
same code talks to AWS, MinIO or a loopback moto server.

Atomicity: a local file is written under a temporary name in the same folder and renamed into
place; an S3 object is uploaded with a single PUT (or a multipart upload completed at the end),
which S3 never exposes half-written. Readers therefore see a whole object or none.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import posixpath
import secrets
import socket
import threading
import time
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


def child(url: str, relative: str) -> str:
    """``url`` joined with ``relative``, which must stay inside it.

    For names read from files (a manifest's shard names): an absolute path, a URL, a ``..``
    segment, a backslash or an empty segment is refused, so a document cannot point a reader
    or a writer outside its own folder (``join(base, "/etc/passwd")`` is ``/etc/passwd``).
    """
    segments = relative.split("/") if isinstance(relative, str) else [""]
    if (not relative or relative.startswith("/") or "\\" in relative or ":" in relative
            or any(seg in ("", ".", "..") for seg in segments)):
        raise ValueError(f"{relative!r} is not a relative path inside {url}")
    return join(url, *segments)


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


def sha256(url: str, block: int = 8 * 2**20) -> str:
    """Hex sha256 of an object, streamed (constant memory)."""
    h = hashlib.sha256()
    with open_url(url, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def open_url(url: str, mode: str = "rb") -> IO:
    """Open for streaming reads (or non-atomic writes; use write_bytes_atomic for outputs)."""
    fs, path = filesystem(url)
    if "w" in mode and not is_remote(url):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return fs.open(path, mode)


def unique_name(prefix: str = ".tmp-") -> str:
    """A name no other process or run picks: prefix + pid + 64 random bits."""
    return f"{prefix}{os.getpid()}-{secrets.token_hex(8)}"


def remove_stale_temp_files(folder_url: str) -> list[str]:
    """Delete the temporary files (``.tmp-<pid>-<hex>-*``) that a killed writer left under a local folder.

    Call it only while holding the folder's lease: then no live writer can own one of them. S3 needs
    nothing (an object appears whole or not at all). Returns the paths removed.
    """
    if is_remote(folder_url):
        return []
    root = local_path(folder_url)
    stale = re.compile(r"^\.tmp-\d+-[0-9a-f]{16}-")
    removed = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if stale.match(name):
                path = os.path.join(folder, name)
                os.unlink(path)
                removed.append(path)
    return removed


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so that readers never observe a partial object.

    Locally the bytes go to a uniquely named temporary file in the same folder (created with
    O_EXCL and mode 0666, so the process umask applies exactly as for ``open()``) and are renamed
    into place; concurrent writers never share a temporary file.
    """
    if url.startswith("s3://"):
        fs, path = filesystem(url)
        fs.pipe_file(path, data)  # one PUT: visible only when complete
        return
    if is_remote(url):
        raise ValueError(f"unsupported storage scheme for writing: {url}")
    path = os.path.abspath(_strip_file_scheme(url))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, unique_name() + "-" + os.path.basename(path)[:100])
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
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


# --------------------------------------------------------------------------------------------
# Multi-file folders published atomically (a model: weights + config; a checkpoint "best/")
# --------------------------------------------------------------------------------------------

VERSIONS_SUFFIX = ".versions"
CURRENT_POINTER = "_CURRENT"   # S3: the object under the folder URL naming its current version


def _versions_url(url: str) -> str:
    parent, name = _split_parent(url)
    return join(parent, f".{name}{VERSIONS_SUFFIX}")


def _split_parent(url: str) -> tuple[str, str]:
    stripped = url.rstrip("/")
    if is_remote(stripped):
        parent, _, name = stripped.rpartition("/")
        return parent, name
    path = os.path.abspath(_strip_file_scheme(stripped))
    return os.path.dirname(path), os.path.basename(path)


def publish_folder(url: str, files: dict[str, bytes], keep: int = 2) -> str:
    """Replace the folder ``url`` by ``files`` ({relative name: bytes}) in one step; returns the
    version folder that now holds them.

    The files are written into a new, uniquely named version folder beside ``url``
    (``.<name>.versions/<version>/``); only then does ``url`` switch to it: locally ``url`` is a
    symlink replaced by rename (readers opening ``url/x`` always get one whole version), on S3 the
    small object ``url/_CURRENT`` names the version (one PUT). Readers that open several files
    should call ``resolve_folder(url)`` once and read from what it returns. The ``keep`` newest
    versions stay (a reader still busy with the previous one is not cut off); older ones are removed.
    """
    if not files:
        raise ValueError("publish_folder needs at least one file")
    versions = _versions_url(url)
    older = _version_names(versions)  # listed once: the new version sorts after all of them
    version = _next_version(older)
    target = join(versions, version)
    for name, data in files.items():
        write_bytes_atomic(child(target, name), data)
    if is_remote(url):
        write_text_atomic(join(url.rstrip("/"), CURRENT_POINTER), version)
    else:
        path = local_path(url.rstrip("/"))
        if os.path.isdir(path) and not os.path.islink(path):  # a folder written in place by an older version
            legacy = f"0000000000000-legacy-{secrets.token_hex(6)}"  # sorts before every published version
            os.rename(path, os.path.join(local_path(versions), legacy))
            older.insert(0, legacy)
        link = os.path.join(os.path.dirname(path), unique_name() + "-link")
        os.symlink(os.path.relpath(local_path(target), os.path.dirname(path)), link)
        os.replace(link, path)  # atomic: the old link or the new one, never neither
    _prune_versions(versions, older, keep=max(1, keep))
    return target


def resolve_folder(url: str) -> str:
    """The concrete folder a published ``url`` stands for now (``url`` itself if never published)."""
    if is_remote(url):
        pointer = join(url.rstrip("/"), CURRENT_POINTER)
        try:
            version = read_text(pointer).strip()
        except FileNotFoundError:
            return url
        return child(_versions_url(url), version)
    return os.path.realpath(local_path(url))


def _version_names(versions: str) -> list[str]:
    """Version folder names, oldest first (their names sort in publication order)."""
    fs, path = filesystem(versions)
    try:
        return sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


def _next_version(older: list[str]) -> str:
    """A version name that sorts after every one of ``older`` (oldest first): the millisecond clock, or one
    past the newest when two publications share a millisecond (or the clock stepped back), so pruning by
    name always removes the oldest."""
    stamp = int(time.time() * 1000)
    if older:
        stamp = max(stamp, int(older[-1].split("-", 1)[0]) + 1)
    return f"{stamp:013d}-{secrets.token_hex(6)}"


def _prune_versions(versions: str, older: list[str], keep: int) -> None:
    """Remove the oldest of ``older`` so that ``keep`` versions remain, the one just published included."""
    fs, path = filesystem(versions)
    for name in older[: max(0, len(older) + 1 - keep)]:
        try:
            fs.rm(path.rstrip("/") + "/" + name, recursive=True)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------------------------
# Leases: one writer per output folder
# --------------------------------------------------------------------------------------------

LEASE_NAME = ".weaksound-lease.json"


class LeaseHeld(RuntimeError):
    """Another run holds the lease of an output folder."""


class Lease:
    """Exclusive use of an output folder by one run, taken with create-if-absent.

    Local disk: the lease file is created with O_EXCL; S3: with a conditional PUT
    (``If-None-Match: *``), which S3 (and moto) refuse with 412 when the object exists. A lease
    names its run, host and pid and expires ``ttl_s`` after its last renewal; a daemon thread
    renews it every ``ttl_s / 3``. A lease left by a crash can be taken over once it expired, or
    at once when it names a dead process on this host; the takeover is a compare-and-swap
    (S3: ``If-Match`` on the stale lease's ETag; local: under flock of the folder), so of two
    runs taking over, one wins. Use as a context manager, or ``acquire()`` / ``release()``.
    """

    def __init__(self, folder_url: str, owner: str, ttl_s: float = 120.0, renew: bool = True):
        self.url = join(folder_url, LEASE_NAME)
        self.folder = folder_url
        self.owner, self.ttl_s, self.renew = owner, float(ttl_s), renew
        self.token = secrets.token_hex(16)
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    # -- document ---------------------------------------------------------------------------
    def _document(self) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "token": self.token, "host": socket.gethostname(),
                           "pid": os.getpid(), "renewed": now, "expires": now + self.ttl_s},
                          sort_keys=True).encode()

    @staticmethod
    def _is_stale(doc: dict) -> bool:
        if time.time() >= float(doc.get("expires", 0)):
            return True
        if doc.get("host") == socket.gethostname():
            try:
                os.kill(int(doc.get("pid", 0)), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, ValueError, OverflowError):
                return False
        return False

    def _held_error(self, doc: dict) -> LeaseHeld:
        until = time.strftime("%H:%M:%S UTC", time.gmtime(float(doc.get("expires", 0))))
        return LeaseHeld(
            f"{self.folder} is in use by run {doc.get('owner')!r} (host {doc.get('host')}, pid {doc.get('pid')}, "
            f"lease valid until {until}); two writers into one folder would delete each other's files. "
            f"Use another output folder, wait for that run to end, or delete {self.url} if it is dead.")

    # -- acquire / renew / release ------------------------------------------------------------
    def acquire(self) -> "Lease":
        if is_remote(self.url):
            self._acquire_s3()
        else:
            self._acquire_local()
        if self.renew:
            self._thread = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
            self._thread.start()
        return self

    def _acquire_local(self) -> None:
        path = local_path(self.url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with _folder_lock(os.path.dirname(path)):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                doc = _read_json(self.url)
                if doc is not None and not self._is_stale(doc):
                    raise self._held_error(doc) from None
                write_bytes_atomic(self.url, self._document())  # stale: taken over under the lock
                return
            with os.fdopen(fd, "wb") as f:
                f.write(self._document())

    def _acquire_s3(self) -> None:
        client, bucket, key = self._s3()
        try:
            self._etag = client.put_object(Bucket=bucket, Key=key, Body=self._document(), IfNoneMatch="*")["ETag"]
            return
        except client.exceptions.ClientError as error:
            if _status(error) not in (409, 412):
                raise
        try:
            found = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:  # released meanwhile: one more create-if-absent
            self._etag = client.put_object(Bucket=bucket, Key=key, Body=self._document(), IfNoneMatch="*")["ETag"]
            return
        doc = json.loads(found["Body"].read())
        if not self._is_stale(doc):
            raise self._held_error(doc)
        try:  # compare-and-swap on the stale lease: of two runs taking over, one wins
            self._etag = client.put_object(Bucket=bucket, Key=key, Body=self._document(),
                                           IfMatch=found["ETag"])["ETag"]
        except client.exceptions.ClientError as error:
            if _status(error) in (409, 412):
                raise self._held_error(doc) from None
            raise

    def _s3(self):
        import boto3

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        bucket, _, key = self.url[len("s3://"):].partition("/")
        return boto3.client("s3", endpoint_url=endpoint), bucket, key

    def check(self) -> None:
        """Raise LeaseHeld if the lease was lost (expired and taken over by another run)."""
        if self.lost:
            raise LeaseHeld(f"lease on {self.folder} lost: {self.lost}")
        doc = _read_json(self.url)
        if doc is None or doc.get("token") != self.token:
            self.lost = f"{self.url} now belongs to run {doc.get('owner') if doc else None!r}"
            raise LeaseHeld(f"lease on {self.folder} lost: {self.lost}")

    def renew_now(self) -> None:
        if is_remote(self.url):
            client, bucket, key = self._s3()
            try:
                self._etag = client.put_object(Bucket=bucket, Key=key, Body=self._document(),
                                               IfMatch=self._etag)["ETag"]
            except client.exceptions.ClientError as error:
                if _status(error) in (404, 409, 412):
                    self.lost = "another run replaced it"
                    return
                raise
            return
        with _folder_lock(os.path.dirname(local_path(self.url))):
            doc = _read_json(self.url)
            if doc is None or doc.get("token") != self.token:
                self.lost = "another run replaced it"
                return
            write_bytes_atomic(self.url, self._document())

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew_now()
            except Exception as error:  # a transient storage error: try again at the next period
                logging.getLogger(__name__).warning("could not renew %s: %s", self.url, error)
            if self.lost:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost:
            return
        if is_remote(self.url):
            client, bucket, key = self._s3()
            try:
                client.delete_object(Bucket=bucket, Key=key, IfMatch=self._etag)
            except client.exceptions.ClientError as error:
                if _status(error) not in (404, 412):
                    raise
            return
        with _folder_lock(os.path.dirname(local_path(self.url))):
            doc = _read_json(self.url)
            if doc is not None and doc.get("token") == self.token:
                os.unlink(local_path(self.url))

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.release()
            return
        try:  # the job already failed: its error is the one to show, not a second one from the release
            self.release()
        except Exception as release_error:  # noqa: BLE001
            logging.getLogger(__name__).warning("could not release the lease of %s: %s", self.folder,
                                                release_error)


def acquire_lease(folder_url: str, owner: str, ttl_s: float = 120.0) -> Lease:
    """Take the lease of ``folder_url`` for run ``owner`` (raises LeaseHeld); release() when done."""
    return Lease(folder_url, owner, ttl_s).acquire()


def _status(error) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _read_json(url: str) -> dict | None:
    try:
        return json.loads(read_bytes(url))
    except FileNotFoundError:
        return None
    except ValueError:  # a half-written or foreign file: treat as stale
        return {}


@contextlib.contextmanager
def _folder_lock(folder: str):
    """flock on the folder itself (no lock file left behind); local disks only."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
