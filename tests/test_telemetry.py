"""runtime.telemetry: contract names, tag rules, and a real /metrics endpoint scraped over HTTP.

The Ray backend is exercised for real (inside a Ray actor, scraped from Ray's exporter by a real
Prometheus) in tests/test_ops_live.py.
"""
from __future__ import annotations

import pickle
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from data_prep.prep_metrics import PREP_METRICS, record_listing_rejects, record_shard
from inference.embed_metrics import EMBED_METRICS, record_embed
from runtime import telemetry as tm
from runtime.telemetry import MetricSpec, MetricTable, Telemetry
from trainer.train_metrics import TRAIN_METRICS

METRICS = {spec.name: spec for table in (PREP_METRICS, TRAIN_METRICS, EMBED_METRICS) for spec in table}

REPO = Path(__file__).resolve().parents[1]


def _contract_table() -> dict[str, str]:
    rows = {}
    for line in (REPO / "docs" / "contracts.md").read_text().splitlines():
        m = re.match(r"\|\s*(weaksound_[a-z0-9_]+)(?:\{[^}]*\})?\s*\|\s*(counter|gauge|histogram)\s*\|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """GET /metrics and parse the text format into {(name, labels): value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert m, line
        labels = frozenset(re.findall(r'([a-zA-Z_]+)="([^"]*)"', m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def test_metric_table_matches_docs_contracts():
    assert {name: spec.kind for name, spec in METRICS.items()} == _contract_table()


def test_tags_follow_the_contract():
    for name, spec in METRICS.items():
        expected = {"run", "kind"} | ({"rank"} if spec.job == "train" else set()) \
            | ({"reason"} if name == "weaksound_prep_rejects_total" else set())
        assert set(spec.tag_keys) == expected, name
        assert (spec.kind == "histogram") == bool(spec.buckets), name
        assert list(spec.buckets) == sorted(spec.buckets)


def test_prometheus_backend_serves_real_values_on_loopback():
    tel = Telemetry("prometheus", PREP_METRICS, run="as-r1")
    port = tel.serve(0)
    try:
        assert tel._server.server_address[0] == "127.0.0.1"
        tel.counter("weaksound_prep_clips_total").inc(120)
        tel.counter("weaksound_prep_clips_total").inc(8)
        tel.counter("weaksound_prep_rejects_total").inc(2, reason="silent")
        tel.counter("weaksound_prep_rejects_total").inc(reason="unreadable")
        tel.counter("weaksound_prep_bytes_written_total").inc(4096)
        tel.histogram("weaksound_prep_shard_write_seconds").observe(0.3)
        tel.histogram("weaksound_prep_shard_write_seconds").observe(7.0)
        s = _scrape(port)
    finally:
        tel.close()
    base = frozenset({("run", "as-r1"), ("kind", "prep")})
    assert s[("weaksound_prep_clips_total", base)] == 128
    assert s[("weaksound_prep_rejects_total", base | {("reason", "silent")})] == 2
    assert s[("weaksound_prep_rejects_total", base | {("reason", "unreadable")})] == 1
    assert s[("weaksound_prep_bytes_written_total", base)] == 4096
    assert s[("weaksound_prep_shard_write_seconds_count", base)] == 2
    assert s[("weaksound_prep_shard_write_seconds_sum", base)] == pytest.approx(7.3)
    assert s[("weaksound_prep_shard_write_seconds_bucket", base | {("le", "0.5")})] == 1
    assert s[("weaksound_prep_shard_write_seconds_bucket", base | {("le", "10.0")})] == 2
    # nothing that was never touched, and no process/platform collectors in a private registry
    assert not any(name.startswith(("process_", "python_")) for name, _ in s)
    assert not any(name.startswith("weaksound_prep_missing") for name, _ in s)


def test_two_objects_have_separate_registries_and_servers():
    a = Telemetry("prometheus", TRAIN_METRICS, run="a", rank=0)
    b = Telemetry("prometheus", TRAIN_METRICS, run="a", rank=1)
    pa, pb = a.serve(0), b.serve(0)
    try:
        a.gauge("weaksound_train_loss").set(0.5)
        b.gauge("weaksound_train_loss").set(0.25)
        a.gauge("weaksound_train_data_wait_fraction").set(0.1)
        with b.histogram("weaksound_train_step_seconds").time():
            pass
        sa, sb = _scrape(pa), _scrape(pb)
    finally:
        a.close()
        b.close()
    lab = lambda r: frozenset({("run", "a"), ("kind", "train"), ("rank", r)})  # noqa: E731
    assert sa[("weaksound_train_loss", lab("0"))] == 0.5
    assert sb[("weaksound_train_loss", lab("1"))] == 0.25
    assert ("weaksound_train_data_wait_fraction", lab("0")) in sa
    assert not any(n.startswith("weaksound_train_data_wait") for n, _ in sb)
    assert sb[("weaksound_train_step_seconds_count", lab("1"))] == 1


def test_close_stops_the_server_and_is_idempotent():
    tel = Telemetry("prometheus", EMBED_METRICS, run="r")
    port = tel.serve(0)
    tel.counter("weaksound_embed_clips_total").inc(3)
    assert "weaksound_embed_clips_total" in tel.text()
    tel.close()
    tel.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_close_with_linger_serves_the_final_values_a_little_longer():
    import threading
    import time

    tel = Telemetry("prometheus", EMBED_METRICS, run="r")
    port = tel.serve(0)
    closing = threading.Thread(target=tel.close, kwargs={"linger_s": 1.0})
    started = time.monotonic()
    tel.counter("weaksound_embed_clips_total").inc(7)  # the job's last update ...
    closing.start()                                     # ... then it ends, and a scrape comes late
    time.sleep(0.3)
    assert _scrape(port)[("weaksound_embed_clips_total", frozenset({("run", "r"), ("kind", "embed")}))] == 7
    closing.join(timeout=10)
    assert time.monotonic() - started >= 1.0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    Telemetry("none", EMBED_METRICS, run="r").close(linger_s=60)  # nothing served: returns at once


@pytest.mark.parametrize("call, error", [
    (lambda t: t.counter("weaksound_prep_clip_total"), KeyError),             # not in the contract
    (lambda t: t.gauge("weaksound_prep_clips_total"), TypeError),              # wrong type
    (lambda t: t.counter("weaksound_train_steps_total"), KeyError),            # another stage's table
    (lambda t: t.counter("weaksound_prep_rejects_total").inc(), ValueError),   # reason missing
    (lambda t: t.counter("weaksound_prep_clips_total").inc(clip="x"), ValueError),  # unknown tag
    (lambda t: t.counter("weaksound_prep_clips_total").inc(-1), ValueError),
    (lambda t: t.histogram("weaksound_prep_shard_write_seconds").observe(-0.1), ValueError),
    (lambda t: t.serve(0), RuntimeError),                                      # none backend
])
def test_misuse_fails_loudly(call, error):
    with pytest.raises(error):
        call(Telemetry("none", PREP_METRICS, run="r"))


def test_constructor_checks():
    with pytest.raises(ValueError, match="backend"):
        Telemetry("statsd", PREP_METRICS, run="r")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MetricTable"):
        Telemetry("none", {"weaksound_prep_clips_total": None}, run="r")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank"):
        Telemetry("none", TRAIN_METRICS, run="r")
    with pytest.raises(ValueError, match="rank"):
        Telemetry("none", PREP_METRICS, run="r", rank=0)
    with pytest.raises(ValueError):
        Telemetry("none", PREP_METRICS, run="")


def test_a_table_refuses_metrics_of_another_job_kind_or_a_misplaced_rank_tag():
    with pytest.raises(ValueError, match="does not belong"):
        MetricTable("prep", (MetricSpec("weaksound_train_loss", "gauge", "x", ("run", "kind")),))
    with pytest.raises(ValueError, match="rank tag"):
        MetricTable("train", (MetricSpec("weaksound_train_loss", "gauge", "x", ("run", "kind")),), ranked=True)


def test_cardinality_guard_refuses_per_clip_tags():
    tel = Telemetry("none", PREP_METRICS, run="r")
    rejects = tel.counter("weaksound_prep_rejects_total")
    for i in range(tm.MAX_SERIES_PER_METRIC):
        rejects.inc(reason=f"r{i}")
    rejects.inc(reason="r0")  # an existing series is fine
    with pytest.raises(ValueError, match="low-cardinality"):
        rejects.inc(reason="clip-123456")


def test_zero_increment_is_a_noop_but_still_checked():
    tel = Telemetry("prometheus", PREP_METRICS, run="r")
    tel.counter("weaksound_prep_clips_total").inc(0)
    assert "weaksound_prep_clips_total{" not in tel.text()
    with pytest.raises(ValueError):
        tel.counter("weaksound_prep_rejects_total").inc(0)  # reason still required


def test_pickling_ray_and_none_but_not_prometheus():
    t = pickle.loads(pickle.dumps(Telemetry("none", TRAIN_METRICS, run="r", rank=3)))
    assert (t.backend, t.run, t.kind, t.rank) == ("none", "r", "train", 3)
    with pytest.raises(TypeError, match="bound to its process"):
        pickle.dumps(Telemetry("prometheus", PREP_METRICS, run="r"))


def test_ray_backend_needs_a_ray_process():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is active in this test process")
    tel = Telemetry("ray", PREP_METRICS, run="r")  # a driver may build it before ray.init ...
    with pytest.raises(RuntimeError, match="ray.init"):
        tel.counter("weaksound_prep_clips_total").inc()  # ... but not record without Ray
    with pytest.raises(RuntimeError, match="Ray's metrics exporter"):
        tel.serve(0)
    assert tm.default_backend() == "none"


@dataclass
class _Shard:          # the attributes of data_prep.shards.ShardResult that telemetry reads
    clips: int
    bytes: int
    seconds: float
    rejects: list = field(default_factory=list)


@dataclass
class _Reject:
    reason: str


def test_prep_and_embed_conveniences():
    tel = Telemetry("prometheus", PREP_METRICS, run="as")
    record_shard(tel, _Shard(100, 2_000_000, 4.0, [{"reason": "silent"}, {"reason": "silent"},
                                                   {"reason": "missing_audio"}]))
    record_shard(tel, _Shard(50, 1_000_000, 2.0))
    record_listing_rejects(tel, [_Reject("bad_csv_row"), _Reject("missing_audio"), _Reject("missing_audio")])
    port = tel.serve(0)
    try:
        s = _scrape(port)
    finally:
        tel.close()
    base = frozenset({("run", "as"), ("kind", "prep")})
    assert s[("weaksound_prep_clips_total", base)] == 150
    assert s[("weaksound_prep_bytes_written_total", base)] == 3_000_000
    assert s[("weaksound_prep_shard_write_seconds_count", base)] == 2
    assert s[("weaksound_prep_rejects_total", base | {("reason", "silent")})] == 2
    assert s[("weaksound_prep_rejects_total", base | {("reason", "missing_audio")})] == 3
    assert s[("weaksound_prep_rejects_total", base | {("reason", "bad_csv_row")})] == 1
    assert s[("weaksound_prep_missing_total", base)] == 3

    emb = Telemetry("prometheus", EMBED_METRICS, run="esc50")
    record_embed(emb, {"clips": 40, "audio_s": 200.0, "bytes": 1, "seconds": 2.0})
    record_embed(emb, {"clips": 10, "seconds": 0.0})
    text = emb.text()
    assert 'weaksound_embed_clips_total{kind="embed",run="esc50"} 50.0' in text
    assert 'weaksound_embed_clips_per_second{kind="embed",run="esc50"} 20.0' in text
