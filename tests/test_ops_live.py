"""The monitoring stack for real: a two-node local Ray cluster (cluster/local_multinode.sh), a
metric producer, Debian's Prometheus started by cluster/start_monitoring.sh on loopback, and
every dashboard query and every rule queried over Prometheus' HTTP API.

The producer is pluggable (`PRODUCERS`, or WEAKSOUND_LIVE_PRODUCER=name or module:function): it
gets a `ProducerContext` (the cluster's addresses, a port for a prometheus_client endpoint) while
Prometheus is already scraping, emits metrics, and returns a `ProducerReport` saying which runs
it produced, which of Ray's optional metric families it exercised (a Ray Train run, GPUs), which
alerts must have fired and which totals Prometheus must show exactly.

The default, `real_jobs_producer`, runs the production jobs against that cluster, each through
its command line in its own process:
- `weaksound prep synthetic --task source --num-clips 120 --sample-rate 16000` (Ray tasks on both
  nodes, the driver's Telemetry on Ray's exporter): run "live-source";
- `weaksound prep folder` of a folder with unreadable, silent, missing and badly listed inputs,
  `--executor local --metrics-port` (prometheus_client, scrape job weaksound-app): "live-messy";
- `trainer/main.py --preset cpu-small --workers 2 --epochs 2` (Ray Train, one worker per node);
  after epoch 0's checkpoint the test SIGKILLs one Train worker, so Ray Train restarts the worker
  group from that checkpoint and the restart counter and its alert come from a real restart:
  "live-train";
- `weaksound embed` of the eval split with the exported model (one model actor per node): "live-embed".
Counter totals are checked exactly against what the jobs wrote (manifest, rejects.jsonl,
metrics.json, embeddings.json).

Two expected alerts need a condition these short jobs do not produce reliably, so a small
synthetic driver (`_SYNTHETIC_COMPLEMENT`, run "live-synthetic", Ray tasks/actors recording
through runtime.telemetry) supplies series for them, and only for them: a rejected share above
5 % sustained over several scrapes (WeaksoundPrepRejectShareHigh: the real messy prep often
finishes within a scrape or two, too fast for rate() to see its rejects; when it does not, the
alert fires for "live-messy" too) and an eval mAP 0.1 below its best (WeaksoundEvalMapDropped: a
real 2-epoch run may or may not drop). Every dashboard panel, every recorded series and every
alert input must have data from the real runs alone (`ProducerReport.panel_runs`), and the
restart alert must fire for "live-train". `synthetic_producer` (WEAKSOUND_LIVE_PRODUCER=synthetic)
still drives every metric synthetically, without real jobs.

Slow (~2 min on 2 cores): `pytest -m slow tests/test_ops_live.py`.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
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
    # must be pending or firing: "AlertName", or "AlertName{run="x"}" for the alert of one run
    expected_alerts: set[str] = field(default_factory=set)
    exact: dict[str, float] = field(default_factory=dict)            # PromQL -> value at the end
    # runs that must give every panel, recorded series and alert input data on their own (not
    # counting series without a run label, e.g. Ray's node metrics); empty = any of `runs`
    panel_runs: set[str] = field(default_factory=set)
    close: Callable[[], None] = lambda: None                         # called after all queries


Producer = Callable[[ProducerContext], ProducerReport]

_RAY_DRIVER = textwrap.dedent(r'''
    """Emit every weaksound metric from Ray tasks and actors on both nodes (backend "ray")."""
    import json, sys, time
    from types import SimpleNamespace
    import ray
    from data_prep.prep_metrics import PREP_METRICS, record_shard
    from inference.embed_metrics import EMBED_METRICS, record_embed
    from runtime.telemetry import Telemetry
    from trainer.train_metrics import TRAIN_METRICS

    address, run = sys.argv[1], sys.argv[2]
    ray.init(address=address, log_to_driver=False)

    @ray.remote(num_cpus=1)
    def prep_shard(run, clips, silent):
        tel = Telemetry("ray", PREP_METRICS, run=run)
        record_shard(tel, SimpleNamespace(clips=clips, bytes=clips * 200_000, seconds=1.5,
                                         rejects=[{"reason": "silent"}] * silent + [{"reason": "missing_audio"}]))
        time.sleep(0.5)
        return ray.get_runtime_context().get_node_id()

    @ray.remote(num_cpus=1)
    class Rank:
        def __init__(self, run, rank, restarted):
            self.tel = Telemetry("ray", TRAIN_METRICS, run=run, rank=rank)
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
            self.tel = Telemetry("ray", EMBED_METRICS, run=run)

        def shard(self, clips):
            time.sleep(0.3)
            record_embed(self.tel, {"clips": clips, "seconds": 0.5})

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
    from runtime.telemetry import Telemetry

    app = Telemetry("prometheus", PREP_METRICS, run="live-app")
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


# -- the default producer: the real jobs ---------------------------------------------------------

_SYNTHETIC_COMPLEMENT = textwrap.dedent(r'''
    """Only what the short real jobs cannot show: a sustained reject share, an eval mAP drop."""
    import sys, time
    from types import SimpleNamespace
    import ray
    from data_prep.prep_metrics import PREP_METRICS, record_shard
    from runtime.telemetry import Telemetry
    from trainer.train_metrics import TRAIN_METRICS

    address, run = sys.argv[1], sys.argv[2]
    ray.init(address=address, log_to_driver=False)

    @ray.remote(num_cpus=0)  # no CPU: runs beside the real training, which holds both
    def prep_shard(run, clips, silent):
        record_shard(Telemetry("ray", PREP_METRICS, run=run), 
            SimpleNamespace(clips=clips, bytes=clips * 200_000, seconds=1.5, rejects=[{"reason": "silent"}] * silent))
        time.sleep(0.5)

    @ray.remote(num_cpus=0)
    class Evaluator:
        def __init__(self, run):
            self.tel = Telemetry("ray", TRAIN_METRICS, run=run, rank=0)

        def evaluate(self, m):
            self.tel.gauge("weaksound_train_eval_map").set(m)

    ev = Evaluator.remote(run)
    for m in (0.30, 0.30, 0.20, 0.20):   # 8 shards of 100 clips, 10 % rejected;
        ray.get([prep_shard.remote(run, 100, 10) for _ in range(2)] + [ev.evaluate.remote(m)])
        time.sleep(2.5)                  # the eval mAP drops by 0.10 after two "epochs"
    time.sleep(3)                                          # let the last values reach the exporter
''')

# the messy folder: good tones, and one input of each kind of problem a user's data has
_MESSY_GOOD, _MESSY_BAD = 8, {"silent": 2, "unreadable": 1, "missing_audio": 2, "bad_csv_row": 1}


def _messy_folder(root: Path) -> Path:
    import numpy as np
    import soundfile as sf

    audio = root / "audio"
    audio.mkdir(parents=True)
    t = np.arange(24000) / 16000.0
    rows = ["path,labels"]
    for i in range(_MESSY_GOOD):
        sf.write(audio / f"tone_{i}.wav", (0.3 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype(np.float32), 16000)
        rows.append(f"tone_{i}.wav,{'tone' if i % 2 else 'tone;low'}")
    for i in range(_MESSY_BAD["silent"]):
        sf.write(audio / f"silent_{i}.wav", np.zeros(16000, np.float32), 16000)
        rows.append(f"silent_{i}.wav,tone")
    (audio / "corrupt.wav").write_bytes(b"RIFF\x00\x00not audio" * 10)
    rows.append("corrupt.wav,tone")
    rows += [f"gone_{i}.wav,tone" for i in range(_MESSY_BAD["missing_audio"])]
    rows.append("tone_0_again.wav,")  # no labels
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return audio


class _Jobs:
    """The producer's subprocesses: each logs to a file; any still running at the end is killed."""

    def __init__(self, ctx: ProducerContext):
        self.ctx, self.procs = ctx, []
        self.logs = ctx.workdir / "logs"
        self.logs.mkdir(exist_ok=True)

    def start(self, name: str, cmd: list[str], env: dict | None = None, pipe: bool = False) -> subprocess.Popen:
        out = subprocess.PIPE if pipe else open(self.logs / f"{name}.log", "w")
        try:
            proc = subprocess.Popen(cmd, env=env or self.ctx.env, cwd=self.ctx.workdir, stdout=out,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
        finally:
            if not pipe:
                out.close()  # the child has its own copy
        proc.name = name
        self.procs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen, timeout: float) -> None:
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"{proc.name} did not finish within {timeout:.0f} s\n{self.tail(proc.name)}")
        assert rc == 0, f"{proc.name} exited with {rc}:\n{self.tail(proc.name)}"

    def run(self, name: str, cmd: list[str], timeout: float, env: dict | None = None) -> None:
        self.wait(self.start(name, cmd, env), timeout)

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


_TRAIN_WORKER_LINE = re.compile(r"\(RayTrainWorker pid=(\d+)[^)]*\).*\[trainer\] epoch (\d+):")


def _train_and_kill_a_worker(jobs: _Jobs, cmd: list[str], env: dict, timeout: float = 420) -> int:
    """Run the trainer; once epoch 0's checkpoint is reported, SIGKILL the Train worker that reported
    it (its pid is in Ray's log prefix). Returns the killed pid."""
    proc = jobs.start("train", cmd, env, pipe=True)
    seen: dict[int, float] = {}   # epoch -> when its "[trainer] epoch N:" line arrived
    pid_of: dict[int, int] = {}

    def read():
        with open(jobs.logs / "train.log", "w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                m = _TRAIN_WORKER_LINE.search(line)
                if m and int(m.group(2)) not in seen:
                    pid_of[int(m.group(2))] = int(m.group(1))
                    seen[int(m.group(2))] = time.time()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline, killed = time.time() + timeout, 0
    while not killed and proc.poll() is None and time.time() < deadline:
        # rank 0 prints after ray.train.report returned; give the controller (health check every
        # 0.5 s) time to register that checkpoint, so the restart resumes from it
        if 0 in seen and time.time() > seen[0] + 2.0:
            assert 1 not in seen, "epoch 1 ended before the worker could be killed: raise --steps-per-epoch"
            pid = pid_of[0]
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert title.startswith(b"ray::RayTrainWorker"), f"pid {pid} is not a Train worker: {title[:80]!r}"
            os.kill(pid, signal.SIGKILL)
            killed = pid
        time.sleep(0.1)
    assert killed, f"no Train worker was killed (epochs seen: {sorted(seen)})\n{jobs.tail('train')}"
    try:
        jobs.wait(proc, max(10.0, deadline - time.time()))
    finally:
        reader.join(timeout=10)
    return killed


def real_jobs_producer(ctx: ProducerContext) -> ProducerReport:
    """prep, train (with a killed worker) and embed on the cluster, plus `_SYNTHETIC_COMPLEMENT`."""
    work = ctx.workdir / "jobs"
    work.mkdir()
    ws = [ctx.python, "-m", "app.console"]   # the `weaksound` command, installed or not
    address = ["--address", ctx.ray_address]
    jobs = _Jobs(ctx)
    try:
        # prep: the synthetic source corpus through Ray (6-clip shards: 3 eval shards for 2 actors),
        # and a messy folder in a process outside Ray serving prometheus_client metrics
        messy = jobs.start("prep-messy", [*ws, "prep", "folder", "--root", str(_messy_folder(work / "messy")),
                                          "--csv", str(work / "messy" / "labels.csv"), "--out", str(work / "live-messy"),
                                          "--sample-rate", "16000", "--clips-per-shard", "2", "--executor", "local",
                                          "--metrics-port", str(ctx.app_port), "--metrics-linger", "4",
                                          "--no-progress"])
        jobs.run("prep-source", [*ws, "prep", "synthetic", "--task", "source", "--num-clips", "120",
                                 "--sample-rate", "16000", "--clips-per-shard", "6", "--out", str(work / "live-source"),
                                 "--executor", "ray", *address, "--no-progress"], timeout=240)
        jobs.wait(messy, timeout=120)

        # train, with the synthetic complement beside it (it needs no CPU)
        script = ctx.workdir / "synthetic_complement.py"
        script.write_text(_SYNTHETIC_COMPLEMENT)
        complement = jobs.start("synthetic", [ctx.python, str(script), ctx.ray_address, "live-synthetic"])
        steps = 120  # epoch 1 must outlast the kill's 2 s wait also on fast cores (24 steps took < 2 s)
        train_env = dict(ctx.env, RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5", RAY_DEDUP_LOGS="0")
        _train_and_kill_a_worker(jobs, [ctx.python, str(REPO / "trainer" / "main.py"), "--data", str(work / "live-source"),
                                        "--out", str(work / "runs"), "--name", "live-train", "--preset", "cpu-small",
                                        "--workers", "2", "--epochs", "2", "--steps-per-epoch", str(steps),
                                        "--max-failures", "1", *address, "--no-progress"], train_env)
        jobs.wait(complement, timeout=120)

        # embed the eval split with the model the run exported
        jobs.run("embed", [*ws, "embed", "--model", str(work / "runs" / "live-train" / "model"),
                           "--data", str(work / "live-source"), "--split", "eval", "--out", str(work / "live-embed"),
                           *address, "--no-progress"], timeout=240)
    finally:
        jobs.kill_all()

    # what the jobs wrote: the totals Prometheus must show
    source = json.loads((work / "live-source" / "manifest.json").read_text())
    rejects: dict[str, int] = {}
    for line in (work / "live-messy" / "rejects.jsonl").read_text().splitlines():
        reason = json.loads(line)["reason"]
        rejects[reason] = rejects.get(reason, 0) + 1
    assert rejects == _MESSY_BAD, rejects
    messy_clips = sum(s["num_samples"] for s in json.loads((work / "live-messy" / "manifest.json").read_text())["shards"])
    assert messy_clips == _MESSY_GOOD
    history = json.loads((work / "runs" / "live-train" / "metrics.json").read_text())["epochs"]
    assert [(e["epoch"], e["start"]) for e in history] == [(0, 0), (1, 1)], \
        f"the killed worker group should have resumed from epoch 0's checkpoint: {history}\n{jobs.tail('train')}"
    embedded = json.loads((work / "live-embed" / "embeddings.json").read_text())
    eval_shards = [s for s in source["shards"] if s["split"] == "eval"]
    assert embedded["num_clips"] == sum(s["num_samples"] for s in eval_shards) > 0
    after_restart = 'and on (WorkerId) ray_weaksound_train_restarts_total{run="live-train"}'
    exact = {
        'sum(ray_weaksound_prep_clips_total{run="live-source"})': sum(s["num_samples"] for s in source["shards"]),
        'sum(ray_weaksound_prep_bytes_written_total{run="live-source"})': sum(s["bytes"] for s in source["shards"]),
        'sum(ray_weaksound_prep_clips_total{run="live-messy",job="weaksound-app"})': _MESSY_GOOD,
        'sum(ray_weaksound_prep_missing_total{run="live-messy",job="weaksound-app"})': _MESSY_BAD["missing_audio"],
        **{f'sum(ray_weaksound_prep_rejects_total{{run="live-messy",reason="{r}"}})': n for r, n in rejects.items()},
        # both ranks restarted once; the new processes made exactly epoch 1's steps, one checkpoint
        'sum(ray_weaksound_train_restarts_total{run="live-train"})': 2,
        f'sum(ray_weaksound_train_steps_total{{run="live-train"}} {after_restart})': 2 * steps,
        f'sum(ray_weaksound_train_checkpoint_seconds_count{{run="live-train"}} {after_restart})': 1,
        'count(count by (instance) (ray_weaksound_train_steps_total{run="live-train"}))': 2,  # both nodes
        'sum(ray_weaksound_embed_clips_total{run="live-embed"})': embedded["num_clips"],
        'sum(ray_weaksound_prep_clips_total{run="live-synthetic"})': 800,
        'sum(ray_weaksound_prep_rejects_total{run="live-synthetic",reason="silent"})': 80,
    }
    if len(eval_shards) >= 2:  # one model actor per node (1 CPU each), each embedded a shard
        exact['count(count by (instance) (ray_weaksound_embed_clips_total{run="live-embed"}))'] = 2
    return ProducerReport(
        runs={"live-source", "live-messy", "live-train", "live-embed", "live-synthetic"},
        exercised={"always", "train"},
        # the restart alert from the real restart; the other two from the synthetic complement
        expected_alerts={'WeaksoundWorkerRestarted{run="live-train"}',
                         'WeaksoundPrepRejectShareHigh{run="live-synthetic"}',
                         'WeaksoundEvalMapDropped{run="live-synthetic"}'},
        exact=exact,
        panel_runs={"live-source", "live-messy", "live-train", "live-embed"})


PRODUCERS: dict[str, Producer] = {"real": real_jobs_producer, "synthetic": synthetic_producer}


def _selected_producer() -> Producer:
    spec = os.environ.get("WEAKSOUND_LIVE_PRODUCER", "real")
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

    def has_data(self, expr: str) -> bool:
        """Data between start and end from the producer's panel runs (or any of its runs); series
        without a run label (Ray's own) count too."""
        runs = self.report.panel_runs or self.report.runs
        return any("run" not in r["metric"] or r["metric"]["run"] in runs
                   for r in self.prom.query_range(expr, self.start, self.end))

    def missing(self) -> list[str]:
        """What the checks below query and does not have data (yet)."""
        exprs = [f'{name}{{run=~"{"|".join(sorted(self.report.runs))}"}}'
                 for name in sorted(monitoring.exported_series_names())]
        exprs += sorted(monitoring.recorded_names())
        exprs += [_live_expr(expr) for path in DASHBOARD_FILES for _, expr in panel_queries(json.loads(path.read_text()))
                  if _requirement(expr) in self.report.exercised]
        missing = [e for e in exprs if not self.has_data(e)]
        return missing + [a for a in sorted(self.report.expected_alerts)
                          if not self.prom.query_range(_alerts_selector(a), self.start, self.end)]


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
        # wait until the last values are scraped, rates have two samples and the recording rules
        # and alerts have caught up (the checks then report whatever is still missing)
        live = Live(prom, report, start, time.time(), state / "ray")
        deadline = time.time() + 90
        while live.missing() and time.time() < deadline:
            time.sleep(2)
            live.end = time.time()
        yield live
    finally:
        if report is not None:
            report.close()
        subprocess.run(["bash", str(CLUSTER / "start_monitoring.sh"), "stop"], env=env, timeout=120)
        subprocess.run(["bash", str(CLUSTER / "local_multinode.sh"), "stop"], env=env, timeout=300)
        shutil.rmtree(state, ignore_errors=True)


def _alerts_selector(expected: str) -> str:
    """'Name' or 'Name{run="x"}' -> the ALERTS selector of that alert."""
    name, _, matchers = expected.partition("{")
    return f'ALERTS{{alertname="{name}"' + (f",{matchers}" if matchers else "}")


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
            if not live.has_data(_live_expr(expr)):
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
             if not live.has_data(name)]
    assert empty == []


def test_every_alert_has_data_and_the_expected_ones_fired(live):
    recorded = monitoring.recorded_names()
    alerts = [r for g in live.prom.get("rules")["groups"] for r in g["rules"] if r["type"] == "alerting"]
    for alert in alerts:  # each alert compares recorded series that exist
        inputs = monitoring.promql_metric_names(alert["query"])
        assert inputs and inputs <= recorded, alert["name"]
        for name in inputs:
            assert live.has_data(name), f"{alert['name']}: {name} has no data"
    for name in sorted(live.report.expected_alerts):
        states = {r["metric"]["alertstate"] for r in live.prom.query_range(_alerts_selector(name),
                                                                          live.start, live.end)}
        assert states & {"pending", "firing"}, f"alert {name} never became pending/firing"


def test_rays_families_of_what_ran_exist(live):
    """Ray's "always" families, and the "train"/"gpu" ones when the producer ran Ray Train / had GPUs."""
    expected = [n for n, a in monitoring.ray_metrics().items() if a in live.report.exercised]
    missing = [n for n in expected if not live.prom.query_range(n, live.start, live.end)]
    assert missing == []
