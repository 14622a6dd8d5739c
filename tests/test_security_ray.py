"""Access to Ray: token authentication unless a caller turns it off explicitly, a token file only
its owner can read, and no AWS credentials in a job's runtime_env (Ray stores and shows it)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from runtime import ray_cluster

REPO = Path(__file__).resolve().parents[1]


def test_only_the_s3_endpoint_and_region_reach_the_workers(monkeypatch):
    secrets = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
               "AWS_SESSION_TOKEN": "session", "AWS_SECURITY_TOKEN": "legacy"}
    settings = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9001",
                "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}
    for k, v in {**secrets, **settings}.items():
        monkeypatch.setenv(k, v)
    assert ray_cluster.forwarded_env() == settings


def test_a_generated_token_is_readable_by_its_owner_only_and_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    path = ray_cluster.ensure_auth_token()
    assert path == str(tmp_path / ".ray" / "auth_token")
    token = Path(path).read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ray_cluster.ensure_auth_token() is None and Path(path).read_text() == token
    monkeypatch.setenv("RAY_AUTH_TOKEN", "given")
    os.unlink(path)
    assert ray_cluster.ensure_auth_token() is None and not os.path.exists(path)  # a configured token wins


_START = """
import json, os, ray
from runtime.ray_cluster import ensure_ray
started = ensure_ray(num_cpus=1)
from ray._raylet import AuthenticationMode, get_authentication_mode
token = os.path.expanduser("~/.ray/auth_token")
print(json.dumps({"started": started, "token_mode": get_authentication_mode() == AuthenticationMode.TOKEN,
                  "token_file_mode": oct(os.stat(token).st_mode & 0o777),
                  "task": ray.get(ray.remote(lambda: 41 + 1).remote())}))
ray.shutdown()
"""


def test_a_local_ray_started_by_default_requires_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # as a user's shell: no RAY_AUTH_MODE
    env.update(HOME=str(tmp_path), RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _START], env=env, cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"started": True, "token_mode": True, "token_file_mode": "0o600", "task": 42}
