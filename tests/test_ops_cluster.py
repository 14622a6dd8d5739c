"""cluster/: the `ray up` config against Ray's own schema, the scripts' interfaces, version pins.

The scripts are run for real in tests/test_ops_live.py (a two-node local cluster + Prometheus).
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from test_ops_prometheus import load_ops_module

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
monitoring = load_ops_module("cluster/monitoring.py")


@pytest.fixture(scope="module")
def aws() -> dict:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


def test_aws_config_passes_rays_own_validation(aws):
    util = pytest.importorskip("ray.autoscaler._private.util")
    prepared = util.prepare_config(copy.deepcopy(aws))  # merges Ray's AWS defaults, offline
    util.validate_config(prepared)                      # Ray's ray-schema.json + its own checks
    typo = copy.deepcopy(aws)
    typo["available_node_types"]["gpu"]["max_worker"] = 8
    with pytest.raises(Exception, match="max_worker"):
        util.validate_config(util.prepare_config(typo))


def test_aws_config_shape(aws):
    types = aws["available_node_types"]
    assert aws["head_node_type"] == "head" and set(types) == {"head", "gpu", "cpu"}
    assert types["head"]["resources"] == {"CPU": 0}
    assert types["gpu"]["resources"]["GPU"] >= 1 and types["gpu"]["max_workers"] > types["gpu"]["min_workers"]
    assert "GPU" not in types["cpu"]["resources"] and types["cpu"]["max_workers"] > 0
    assert sum(t.get("max_workers", 0) for n, t in types.items() if n != "head") >= aws["max_workers"]
    for name, t in types.items():  # S3 through the instance profile, never keys
        assert t["node_config"]["IamInstanceProfile"]["Name"], name
    text = (CLUSTER / "aws.yaml").read_text()
    assert not re.search(r"AWS_(SECRET_)?ACCESS_KEY|aws_access_key_id", text, re.I)
    head_cmd = " ".join(aws["head_start_ray_commands"])
    worker_cmd = " ".join(aws["worker_start_ray_commands"])
    assert "--num-cpus=0" in head_cmd
    assert "--metrics-export-port=8080" in head_cmd and "--metrics-export-port=8080" in worker_cmd
    assert any("pip install" in c and "weaksound" in c for c in aws["setup_commands"])
    assert aws["file_mounts"] == {"~/weaksound": ".", "~/.ray/auth_token": "~/.ray/auth_token"}


def test_aws_cluster_is_closed_to_the_internet(aws):
    """Without SecurityGroupIds Ray's launcher makes a group with SSH open to 0.0.0.0/0."""
    groups = {name: t["node_config"].get("SecurityGroupIds") for name, t in aws["available_node_types"].items()}
    assert all(groups.values()) and len({tuple(g) for g in groups.values()}) == 1, groups
    assert "0.0.0.0/0" not in json.dumps(aws.get("provider", {}))
    for commands in (aws["head_start_ray_commands"], aws["worker_start_ray_commands"]):
        start = " ".join(commands)
        assert "RAY_AUTH_MODE=token" in start
        assert "dashboard-host=0.0.0.0" not in start
    assert "--dashboard-host=127.0.0.1" in " ".join(aws["head_start_ray_commands"])


def test_local_cluster_uses_token_auth_unless_told_otherwise():
    script = (CLUSTER / "local_multinode.sh").read_text()
    assert 'RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"' in script
    assert "loopback-only" not in script and "umask 077" in script


def test_ray_version_is_the_same_everywhere(aws):
    pin = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert aws["docker"]["image"].startswith(f"rayproject/ray:{pin}-")
    assert f"FROM rayproject/ray:{pin}-" in (CLUSTER / "Dockerfile").read_text()
    for path in (REPO / "k8s" / "base").glob("ray*.yaml"):
        assert f'rayVersion: "{pin}"' in path.read_text(), path.name


@pytest.mark.parametrize("script", ["local_multinode.sh", "start_monitoring.sh"])
def test_scripts_parse_and_explain_their_usage(script, tmp_path):
    path = CLUSTER / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
    proc = subprocess.run(["bash", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr
    env = {"PATH": "/usr/bin:/bin", "WEAKSOUND_RAY_STATE": str(tmp_path / "none"),
           "WEAKSOUND_MONITORING_STATE": str(tmp_path / "none")}
    stop = subprocess.run(["bash", str(path), "stop"], capture_output=True, text=True, env=env)
    assert stop.returncode == 0, stop.stderr  # stopping nothing is fine


def test_stop_never_uses_ray_stop():
    """`ray stop` would kill every Ray on the machine, not just ours."""
    for script in ("local_multinode.sh", "start_monitoring.sh"):
        code = "\n".join(line.split("#", 1)[0] for line in (CLUSTER / script).read_text().splitlines())
        assert not re.search(r"\bray\"?\s+stop\b|\"\$RAY\" stop", code), script
        assert "pkill" not in code and "killall" not in code


def test_grafana_provisioning(tmp_path):
    files = monitoring.render_grafana_provisioning("http://127.0.0.1:9999", Path("/dash"))
    ds = yaml.safe_load(files["datasources/weaksound.yml"])["datasources"][0]
    assert ds["url"] == "http://127.0.0.1:9999" and ds["type"] == "prometheus" and ds["isDefault"]
    provider = yaml.safe_load(files["dashboards/weaksound.yml"])["providers"][0]
    assert provider["options"]["path"] == "/dash"
    rc = monitoring.main(["grafana", "--out", str(tmp_path), "--prometheus-url", "http://127.0.0.1:9999"])
    assert rc == 0 and (tmp_path / "datasources" / "weaksound.yml").is_file()
