"""A local Ray started by a job is its own: it never joins a Ray that `ray start` left running on
the machine, and code inside it that looks the cluster up without an address (Ray Train V2's
placement-group cleaner does, through the State API) finds this instance, not the newest one.
Without that, a second Ray on the machine made the cleaner of a healthy training run believe its
controller had died and remove the run's placement group."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))

PROBE = """
import json, os, ray
from runtime.ray_cluster import ensure_ray
started = ensure_ray(num_cpus=1)

@ray.remote
def lookup():
    from ray._private.services import canonicalize_bootstrap_address
    return canonicalize_bootstrap_address(None)

print(json.dumps({"started": started, "own": ray.get_runtime_context().gcs_address,
                  "seen_inside": ray.get(lookup.remote()),
                  "port_variable_left": os.environ.get("RAY_GCS_SERVER_PORT")}))
"""


def test_a_job_starts_its_own_ray_beside_a_running_one_and_its_workers_find_their_own(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    from conftest import free_port, kill_processes_mentioning

    port = free_port()
    temp = tempfile.mkdtemp(prefix="wsray", dir="/tmp")  # short: Ray's unix socket paths must fit 107 chars
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                        f"--temp-dir={temp}", "--disable-usage-stats"], env=env, check=True, capture_output=True,
                       timeout=120)
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        kill_processes_mentioning(temp, f":{port} ", f":{port}\n", f"--address=127.0.0.1:{port}")  # never `ray stop`
        shutil.rmtree(temp, ignore_errors=True)
    assert got["started"] is True
    assert not got["own"].endswith(f":{port}")  # did not join the `ray start` instance
    assert got["seen_inside"] == got["own"]  # a lookup inside the cluster finds this cluster
    assert got["port_variable_left"] is None  # the pinned GCS port does not leak into later starts
