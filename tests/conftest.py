"""Shared fixtures: real components started and stopped by the tests themselves.

- ``s3_endpoint``: a real S3-protocol server (moto_server) on loopback, for the whole session.
- ``s3_bucket``: a fresh bucket on it; returns "s3://<bucket>".
- ``ray_local``: a real local Ray instance (2 CPUs) shared by the session's Ray tests.
"""
from __future__ import annotations

import os
import sys
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
for path in (str(REPO), str(REPO / "tests")):  # project packages and tests' helper modules
    if path not in sys.path:
        sys.path.insert(0, path)

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _venv_bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    proc = subprocess.Popen([_venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint):
    import boto3

    name = "ws-" + uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(s3_endpoint):
    """Started after the S3 server so that its workers inherit the AWS_* settings."""
    import ray

    if not ray.is_initialized():
        from runtime.ray_cluster import pinned_gcs_port

        with pinned_gcs_port() as gcs_address:  # Ray Train's cleaner must not look at another local Ray
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
                     runtime_env={"env_vars": {"RAY_ADDRESS": gcs_address}})
    yield ray
    ray.shutdown()


def kill_processes_mentioning(*markers: str) -> None:
    """SIGKILL the processes of the Ray head this test started (and their children), by pid.

    Never `ray stop`: that would also stop every other Ray instance on a shared machine.
    """
    table = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                args = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            table[int(p)] = (ppid, args)
    chosen = {pid for pid, (_, args) in table.items() if any(m in args for m in markers) and pid != os.getpid()}
    todo = list(chosen)
    while todo:
        parent = todo.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in chosen:
                chosen.add(pid)
                todo.append(pid)
    for pid in chosen:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
