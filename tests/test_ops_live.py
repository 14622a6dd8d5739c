"""The monitoring stack for real: a two-node local Ray cluster (cluster/local_multinode.sh), a
metric producer, Debian's Prometheus started by cluster/start_monitoring.sh on loopback, and
every dashboard query and every rule queried over Prometheus' HTTP API.

The producer is pluggable (`PRODUCERS`, or WEAKSOUND_LIVE_PRODUCER=module:function): it gets a
`ProducerContext` (the cluster's addresses, a port for a prometheus_client endpoint) while
Prometheus is already scraping, emits metrics, and returns a `ProducerReport` saying which runs
it produced, which of Ray's optional metric families it exercised (a Ray Train run, GPUs) and
which alerts must have fired. The default `synthetic_producer` drives data_prep.telemetry from
Ray tasks and actors spread over both nodes (backend "ray") and from this test process (backend
"prometheus"); a producer that runs a short real training job can be dropped in the same way.

Slow (~1.5 min on 2 cores): `pytest -m slow tests/test_ops_live.py`.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from test_ops_dashboards import DASHBOARD_FILES, panel_queries
from test_ops_prometheus import _install_prometheus, load_ops_module

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
monitoring = load_ops_module("cluster/monitoring.py")
# rate windows as Grafana would set them for 1 s scrapes; $run matches every run
LIVE_VARS = {"$__rate_interval": "15s", "$__interval": "1s", "$__range": "5m", "${run}": ".*", "$run": ".*"}


# -- the producer interface --------------------------------------------------------------------

@dataclass(frozen=True)
class ProducerContext:
    ray_address: str            # GCS address for ray.init(address=...)
    dashboard_url: str          # job API for `ray job submit --address`
    app_port: int               # serve a prometheus_client Telemetry here (scraped as job weaksound-app)
    python: str                 # the interpreter the cluster runs
    env: dict                   # environment for subprocesses (PYTHONPATH, RAY_AUTH_MODE, ...)
    workdir: Path


@dataclass
class ProducerReport:
    runs: set[str]                                   # run labels that must appear
    exercised: set[str] = field(default_factory=lambda: {"always"})  # cluster/ray_metrics.txt classes
    expected_alerts: set[str] = field(default_factory=set)           # must be pending or firing
    exact: dict[str, float] = field(default_factory=dict)            # PromQL -> value at the end
    close: Callable[[], None] = lambda: None                         # called after all queries


Producer = Callable[[ProducerContext], ProducerReport]

_RAY_DRIVER = textwrap.dedent(r'''
    """Emit every weaksound metric from Ray tasks and actors on both nodes (backend "ray")."""
    import json, sys, time
    from types import SimpleNamespace
    import ray
    from data_prep.telemetry import Telemetry

    address, run = sys.argv[1], sys.argv[2]
    ray.init(address=address, log_to_driver=False)

    @ray.remote(num_cpus=1)
    def prep_shard(run, clips, silent):
        tel = Telemetry("ray", run=run, kind="prep")
        tel.record_shard(SimpleNamespace(clips=clips, bytes=clips * 200_000, seconds=1.5,
                                         rejects=[{"reason": "silent"}] * silent + [{"reason": "missing_audio"}]))
        time.sleep(0.5)
        return ray.get_runtime_context().get_node_id()

    @ray.remote(num_cpus=1)
    class Rank:
        def __init__(self, run, rank, restarted):
            self.tel = Telemetry("ray", run=run, kind="train", rank=rank)
            if restarted:
                self.tel.counter("weaksound_train_restarts_total").inc()

        def train(self, steps, loss):
            for _ in range(steps):
                with self.tel.histogram("weaksound_train_step_seconds").time():
                    time.sleep(0.02)
                self.tel.counter("weaksound_train_steps_total").inc()
            g = self.tel.gauge
            g("weaksound_train_loss").set(loss)
            g("weaksound_train_learning_rate").set(1e-3)
            g("weaksound_train_clips_per_second").set(160.0)
            g("weaksound_train_audio_seconds_per_second").set(1600.0)
            g("weaksound_train_data_wait_fraction").set(0.1)
            return ray.get_runtime_context().get_node_id()

        def evaluate(self, m, auc):
            self.tel.gauge("weaksound_train_eval_map").set(m)
            self.tel.gauge("weaksound_train_eval_auc").set(auc)
            self.tel.histogram("weaksound_train_checkpoint_seconds").observe(0.8)

    @ray.remote(num_cpus=1)
    class Embedder:
        def __init__(self, run):
            self.tel = Telemetry("ray", run=run, kind="embed")

        def shard(self, clips):
            time.sleep(0.3)
            self.tel.record_embed({"clips": clips, "seconds": 0.5})

    nodes = set()
    for wave in range(3):                       # 6 shards of 100 clips, 10 % rejected
        nodes |= set(ray.get([prep_shard.remote(run, 100, 10) for _ in range(2)]))
        time.sleep(2)
    ranks = [Rank.remote(run, r, False) for r in range(2)]
    for epoch in range(3):
        nodes |= set(ray.get([rk.train.remote(10, 1.0 - 0.1 * epoch) for rk in ranks]))
        ray.get([rk.evaluate.remote(0.30, 0.90) for rk in ranks])
        time.sleep(2)
    for rk in ranks:                            # a worker-group restart: new processes, resumed
        ray.kill(rk)
    ranks = [Rank.remote(run, r, True) for r in range(2)]
    for epoch in range(3):
        ray.get([rk.train.remote(10, 0.6) for rk in ranks])
        ray.get([rk.evaluate.remote(0.20, 0.85) for rk in ranks])   # mAP drops by 0.10
        time.sleep(2)
    for rk in ranks:
        ray.kill(rk)
    emb = Embedder.remote(run)
    for _ in range(6):
        ray.get(emb.shard.remote(50))
        time.sleep(1)
    time.sleep(5)                               # let the last values reach the exporters
    print(json.dumps({"nodes": sorted(nodes)}))
''')


def synthetic_producer(ctx: ProducerContext) -> ProducerReport:
    """All contract metrics: Ray tasks/actors (both nodes) + a prometheus_client process."""
    from data_prep.telemetry import Telemetry

    app = Telemetry("prometheus", run="live-app", kind="prep")
    app.serve(ctx.app_port)
    for i in range(5):  # a prep process outside Ray (e.g. --executor local --metrics-port)
        app.counter("weaksound_prep_clips_total").inc(40)
        app.counter("weaksound_prep_bytes_written_total").inc(40 * 150_000)
        app.histogram("weaksound_prep_shard_write_seconds").observe(0.7)
        time.sleep(1)
    script = ctx.workdir / "ray_driver.py"
    script.write_text(_RAY_DRIVER)
    proc = subprocess.run([ctx.python, str(script), ctx.ray_address, "live-ray"], env=ctx.env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"producer driver failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    nodes = json.loads(proc.stdout.strip().splitlines()[-1])["nodes"]
    assert len(nodes) == 2, f"work ran on {nodes}: expected both Ray nodes"
    return ProducerReport(
        runs={"live-app", "live-ray"},
        expected_alerts={"WeaksoundPrepRejectShareHigh", "WeaksoundWorkerRestarted", "WeaksoundEvalMapDropped"},
        exact={'sum(ray_weaksound_prep_clips_total{run="live-ray"})': 600,
               'sum(ray_weaksound_prep_rejects_total{run="live-ray",reason="silent"})': 60,
               'sum(ray_weaksound_prep_missing_total{run="live-ray"})': 6,
               'sum(ray_weaksound_prep_clips_total{run="live-app",job="weaksound-app"})': 200,
               'sum(ray_weaksound_embed_clips_total{run="live-ray"})': 300},
        close=app.close)


PRODUCERS: dict[str, Producer] = {"synthetic": synthetic_producer}


def _selected_producer() -> Producer:
    spec = os.environ.get("WEAKSOUND_LIVE_PRODUCER", "synthetic")
    if spec in PRODUCERS:
        return PRODUCERS[spec]
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


# -- plumbing ----------------------------------------------------------------------------------

def _free_ports(n: int, consecutive: int = 1) -> list[int]:
    """n free loopback ports, each the first of `consecutive` free ports."""
    out: list[int] = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        ok = True
        for p in range(base, base + consecutive):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok and base + consecutive < 65535 and not set(range(base, base + consecutive)) & set(out):
            out.append(base)
    return out


class Prom:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}/api/v1/"

    def get(self, path: str, **params) -> dict:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        doc = json.loads(urllib.request.urlopen(url, timeout=30).read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list:
        return self.get("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float) -> list:
        return self.get("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")["result"]


@dataclass
class Live:
    prom: Prom
    report: ProducerReport
    start: float
    end: float
    ray_state: Path


@pytest.fixture(scope="module")
def live():
    reason = _install_prometheus()
    if reason or not shutil.which("prometheus"):
        pytest.skip(reason or "prometheus server binary missing")
    python = sys.executable
    ray_bin = Path(python).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("the ray CLI is not installed next to this Python")
    state = Path(tempfile.mkdtemp(prefix="wslive-", dir="/tmp"))  # short: Ray's socket paths
    gcs, dashboard, client, prom_port, app_port = _free_ports(5)
    metrics, agent = _free_ports(2, consecutive=2)
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY=str(ray_bin),
               RAY_metrics_report_interval_ms="1000",
               WEAKSOUND_RAY_STATE=str(state / "ray"), WEAKSOUND_RAY_WORKERS="1",
               WEAKSOUND_RAY_HEAD_CPUS="1", WEAKSOUND_RAY_WORKER_CPUS="1", WEAKSOUND_RAY_OBJECT_STORE_MB="256",
               WEAKSOUND_RAY_PORT=str(gcs), WEAKSOUND_RAY_DASHBOARD_PORT=str(dashboard),
               WEAKSOUND_RAY_CLIENT_PORT=str(client), WEAKSOUND_RAY_METRICS_PORT=str(metrics),
               WEAKSOUND_RAY_AGENT_PORT=str(agent),
               WEAKSOUND_MONITORING_STATE=str(state / "mon"), WEAKSOUND_PROMETHEUS_PORT=str(prom_port),
               WEAKSOUND_APP_TARGETS=f"127.0.0.1:{app_port}", WEAKSOUND_SCRAPE_INTERVAL="1s",
               WEAKSOUND_GRAFANA="no", PYTHON=python)
    env.pop("WEAKSOUND_RAY_METRICS_TARGETS", None)  # taken from the cluster's env file
    report = None
    try:
        subprocess.run(["bash", str(CLUSTER / "local_multinode.sh"), "start"], env=env, check=True, timeout=300)
        subprocess.run(["bash", str(CLUSTER / "start_monitoring.sh"), "start"], env=env, check=True, timeout=120)
        prom = Prom(prom_port)
        ctx = ProducerContext(ray_address=f"127.0.0.1:{gcs}", dashboard_url=f"http://127.0.0.1:{dashboard}",
                              app_port=app_port, python=python, env=env, workdir=state)
        start = time.time() - 5
        report = _selected_producer()(ctx)
        # wait until the last values are scraped and the recording rules have caught up
        wanted = [f'{name}{{run=~"{"|".join(sorted(report.runs))}"}}' for name in sorted(monitoring.exported_series_names())]
        wanted += [f'ALERTS{{alertname="{a}"}}' for a in sorted(report.expected_alerts)]
        deadline = time.time() + 90
        while True:
            missing = [q for q in wanted if not prom.query_range(q, start, time.time())]
            if not missing or time.time() > deadline:
                break
            time.sleep(2)
        yield Live(prom, report, start, time.time(), state / "ray")
    finally:
        if report is not None:
            report.close()
        subprocess.run(["bash", str(CLUSTER / "start_monitoring.sh"), "stop"], env=env, timeout=120)
        subprocess.run(["bash", str(CLUSTER / "local_multinode.sh"), "stop"], env=env, timeout=300)
        shutil.rmtree(state, ignore_errors=True)


def _live_expr(expr: str) -> str:
    for var, value in LIVE_VARS.items():
        expr = expr.replace(var, value)
    return expr


def _requirement(expr: str) -> str:
    """The availability class (cluster/ray_metrics.txt) a query needs: always, gpu or train."""
    ray = monitoring.ray_metrics()
    classes = {ray[n] for n in monitoring.promql_metric_names(expr) if n in ray} - {"always"}
    return classes.pop() if classes else "always"


# -- the checks -----------------------------------------------------------------------------------

def test_both_ray_nodes_and_the_app_process_are_scraped(live):
    up = {(r["metric"]["job"], r["metric"]["instance"]): r["value"][1] for r in live.prom.query("up")}
    assert sorted(job for job, _ in up) == ["ray", "ray", "weaksound-app"]
    env = dict(line.split("=", 1) for line in (live.ray_state / "env").read_text().split())
    assert {i for job, i in up if job == "ray"} == set(env["WEAKSOUND_RAY_METRICS_TARGETS"].split(","))


def test_counter_totals_are_exact(live):
    for expr, value in live.report.exact.items():
        result = live.prom.query_range(expr, live.start, live.end)
        assert result, f"no data: {expr}"
        seen = max(float(v) for _, v in result[0]["values"])
        assert seen == pytest.approx(value), expr


def test_every_dashboard_query_returns_data(live):
    skipped, empty, checked = [], [], 0
    for path in DASHBOARD_FILES:
        dash = json.loads(path.read_text())
        for title, expr in panel_queries(dash):
            need = _requirement(expr)
            if need not in live.report.exercised:
                skipped.append((need, title))
                continue
            checked += 1
            if not live.prom.query_range(_live_expr(expr), live.start, live.end):
                empty.append(f"{dash['uid']} / {title}: {expr}")
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                metric = next(iter(monitoring.grafana_variable_query_metrics(var["query"]["query"])))
                values = {r["metric"].get("run") for r in live.prom.query_range(f"group by (run) ({metric})",
                                                                                live.start, live.end)}
                assert values & live.report.runs, f"{dash['uid']}: variable run has no values"
    assert empty == []
    assert checked >= 30, checked
    # only GPU panels (no GPU here) may be skipped, and only when the producer had no GPU
    assert {need for need, _ in skipped} <= {"gpu", "train"} - live.report.exercised, skipped


def test_rules_are_healthy_and_every_recorded_series_has_data(live):
    groups = live.prom.get("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(monitoring.recorded_names()) + sum(1 for r in rules if r["type"] == "alerting")
    assert {r["name"]: r.get("lastError", "") for r in rules if r["health"] != "ok"} == {}
    empty = [name for name in sorted(monitoring.recorded_names())
             if not live.prom.query_range(name, live.start, live.end)]
    assert empty == []


def test_every_alert_has_data_and_the_expected_ones_fired(live):
    recorded = monitoring.recorded_names()
    alerts = [r for g in live.prom.get("rules")["groups"] for r in g["rules"] if r["type"] == "alerting"]
    for alert in alerts:  # each alert compares recorded series that exist
        inputs = monitoring.promql_metric_names(alert["query"])
        assert inputs and inputs <= recorded, alert["name"]
        for name in inputs:
            assert live.prom.query_range(name, live.start, live.end), f"{alert['name']}: {name} has no data"
    for name in sorted(live.report.expected_alerts):
        states = {r["metric"]["alertstate"] for r in live.prom.query_range(f'ALERTS{{alertname="{name}"}}',
                                                                          live.start, live.end)}
        assert states & {"pending", "firing"}, f"alert {name} never became pending/firing"


def test_rays_always_present_families_exist(live):
    always = [n for n, a in monitoring.ray_metrics().items() if a == "always"]
    missing = [n for n in always if not live.prom.query_range(n, live.start, live.end)]
    assert missing == []
