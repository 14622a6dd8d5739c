"""cluster/prometheus: configs and rules checked by promtool (Debian's prometheus package).

promtool is installed on demand when missing and we are root with apt-get (as scripts/test.sh
does); otherwise these tests skip with the reason.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "cluster" / "prometheus"


def load_ops_module(rel: str):
    """Import a script of cluster/ (not a package) by path."""
    name = "weaksound_ops_" + Path(rel).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / rel)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


monitoring = load_ops_module("cluster/monitoring.py")


def _install_prometheus() -> str | None:
    """Install Debian's prometheus (promtool + server) if allowed; the reason it was not, else None."""
    if shutil.which("promtool"):
        return None
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return "promtool missing and cannot install it (needs root and apt-get): apt-get install prometheus"
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, capture_output=True, env=env, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
        if subprocess.run(cmd, capture_output=True, env=env, timeout=600).returncode != 0:
            return "apt-get install prometheus failed"
    return None if shutil.which("promtool") else "prometheus installed but promtool not on PATH"


@pytest.fixture(scope="session")
def promtool() -> str:
    reason = _install_prometheus()
    if reason:
        pytest.skip(reason)
    return shutil.which("promtool")


def run_promtool(promtool: str, *args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _rules() -> list[dict]:
    doc = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-cluster.yml"])
def test_checked_in_configs_pass_promtool(promtool, config):
    out = run_promtool(promtool, "check", "config", config, cwd=PROM_DIR)
    assert "SUCCESS" in out


def test_rules_pass_promtool_check_and_unit_tests(promtool):
    out = run_promtool(promtool, "check", "rules", "rules.yml", cwd=PROM_DIR)
    assert f"SUCCESS: {len(_rules())} rules found" in out
    # the alert logic on synthetic series (restarts as new WorkerId series, reject share, NaN loss, ...)
    assert "SUCCESS" in run_promtool(promtool, "test", "rules", "rules_test.yml", cwd=PROM_DIR)


def test_rendered_local_config_passes_promtool(promtool, tmp_path):
    text = monitoring.render_prometheus_config(["127.0.0.1:18080", "127.0.0.1:18081"], ["127.0.0.1:19105"],
                                               scrape_interval="1s")
    (tmp_path / "prometheus.yml").write_text(text)
    run_promtool(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    doc = yaml.safe_load(text)
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert jobs["ray"]["static_configs"] == [{"targets": ["127.0.0.1:18080", "127.0.0.1:18081"]}]
    assert jobs["weaksound-app"]["static_configs"] == [{"targets": ["127.0.0.1:19105"]}]
    assert doc["rule_files"] == [str(PROM_DIR / "rules.yml")]
    # no app process: that job is dropped rather than left pointing at nothing
    doc = yaml.safe_load(monitoring.render_prometheus_config(["127.0.0.1:18080"], []))
    assert [j["job_name"] for j in doc["scrape_configs"]] == ["ray"]


def test_local_targets_are_loopback_and_app_metrics_get_the_ray_prefix():
    doc = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    for job in doc["scrape_configs"]:
        for sc in job["static_configs"]:
            assert all(t.startswith("127.0.0.1:") for t in sc["targets"]), job["job_name"]
    app = next(j for j in doc["scrape_configs"] if j["job_name"] == "weaksound-app")
    (relabel,) = app["metric_relabel_configs"]
    assert relabel["regex"] == "(weaksound_.*)" and relabel["replacement"] == "ray_$1"


def test_rules_use_contract_metrics_and_alerts_compare_recorded_series():
    allowed = monitoring.allowed_metric_names()
    recorded = monitoring.recorded_names()
    alerts = [r for r in _rules() if "alert" in r]
    assert {a["alert"] for a in alerts} >= {"WeaksoundTrainingStalled", "WeaksoundPrepRejectShareHigh",
                                            "WeaksoundWorkerRestarted", "WeaksoundEvalMapDropped"}
    for rule in _rules():
        names = monitoring.promql_metric_names(rule["expr"])
        assert names and names <= allowed, (rule, names - allowed)
        assert rule.get("record", "weaksound:").startswith("weaksound:")
    for alert in alerts:
        # so that the live test can show each alert has data: query its recorded input
        assert monitoring.promql_metric_names(alert["expr"]) <= recorded, alert["alert"]
        assert alert["labels"]["severity"] in ("info", "warning", "critical")
        assert alert["annotations"]["summary"]


def test_prometheus_rule_copy_for_kubernetes_matches():
    copy = yaml.safe_load((REPO / "k8s" / "base" / "monitoring" / "prometheusrule.yaml").read_text())
    assert copy["spec"]["groups"] == yaml.safe_load((PROM_DIR / "rules.yml").read_text())["groups"]
