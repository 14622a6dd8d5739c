"""Generate the Grafana dashboards and their Kubernetes copies from one definition.

    python cluster/generate.py           # (re)write the files below
    python cluster/generate.py --check   # exit 1 and name the stale files (used by the tests)

Writes:
- ``cluster/grafana/weaksound-{prep,training,extraction}.json``: Grafana dashboards (import them,
  or let cluster/start_monitoring.sh provision them);
- ``k8s/base/monitoring/dashboards/*.json``: byte-identical copies, because kustomize's
  configMapGenerator only reads files under the kustomization's own folder;
- ``k8s/base/monitoring/prometheusrule.yaml``: a PrometheusRule carrying the groups of
  ``cluster/prometheus/rules.yml`` unchanged.

Every panel queries our ``ray_weaksound_*`` metrics (docs/contracts.md), the ``weaksound:*``
recording rules, or Ray's own node metrics; tests/test_ops_dashboards.py checks the names and
parses every query with promtool, and tests/test_ops_live.py runs every query against a live
Prometheus.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_DIR = ROOT / "cluster" / "grafana"
RULES_FILE = ROOT / "cluster" / "prometheus" / "rules.yml"
K8S_MONITORING = ROOT / "k8s" / "base" / "monitoring"
K8S_DASHBOARDS = K8S_MONITORING / "dashboards"
K8S_RULE = K8S_MONITORING / "prometheusrule.yaml"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RUN = 'run=~"$run"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"      # or "stat"
    width: int = 12
    height: int = 8
    extra_defaults: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    run_metric: str               # metric whose `run` label values fill the $run variable
    rows: tuple[Row, ...]


def q(expr: str, legend: str = "") -> Query:
    return Query(" ".join(expr.split()), legend)


def _rate_hist(metric: str, quantile: float, by: str = "run") -> str:
    return (f"histogram_quantile({quantile}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{RUN}}}[$__rate_interval])))")


# ---------------------------------------------------------------------------------------------
# Ray's own panels, shared by the dashboards (cluster-wide: Ray metrics carry no run label)

NODE_CPU = Panel("Ray node CPU utilization", (
    q("avg by (ip, RayNodeType) (ray_node_cpu_utilization)", "{{ip}} {{RayNodeType}}"),), unit="percent",
    description="Per Ray node, 0-100 %. Decode-bound jobs show every worker node near 100 %.")
NODE_MEM = Panel("Ray node memory used", (
    q("max by (ip) (ray_node_mem_used / ray_node_mem_total)", "{{ip}}"),), unit="percentunit",
    description="Ray's memory monitor kills workers near 95 %.")
NODE_NET = Panel("Ray node network", (
    q("sum by (ip) (ray_node_network_receive_speed)", "{{ip}} in"),
    q("sum by (ip) (ray_node_network_send_speed)", "{{ip}} out")), unit="Bps",
    description="S3 reads and writes show up here.")
OBJECT_STORE = Panel("Object store memory", (
    q("sum by (Location) (ray_object_store_memory)", "{{Location}}"),), unit="bytes",
    description="SPILLED > 0 means the object store overflowed to disk.")
ACTIVE_NODES = Panel("Active Ray nodes", (
    q("sum(ray_cluster_active_nodes)", "nodes"),), kind="stat", width=6, height=4)
GPU_UTIL = Panel("GPU utilization", (
    q("avg by (ip) (ray_node_gpus_utilization)", "{{ip}}"),), unit="percent",
    description="Only GPU nodes export this.")
GPU_MEM = Panel("GPU memory used", (
    q("sum by (ip) (ray_node_gram_used)", "{{ip}}"),), unit="decmbytes",
    description="Only GPU nodes export this.")
TASKS = Panel("Ray tasks by state", (
    q("sum by (State) (ray_tasks)", "{{State}}"),))


DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard(
        uid="weaksound-prep", title="weaksound / data prep",
        description="Raw audio -> WebDataset shards (weaksound prep): throughput, rejects, shard writes, nodes.",
        run_metric="ray_weaksound_prep_clips_total",
        rows=(
            Row("Progress", (
                Panel("Clips written / s", (
                    q(f"sum by (run) (rate(ray_weaksound_prep_clips_total{{{RUN}}}[$__rate_interval]))", "{{run}}"),),
                    unit="short"),
                Panel("Clips written", (
                    q(f"sum by (run) (ray_weaksound_prep_clips_total{{{RUN}}})", "{{run}}"),),
                    kind="stat", width=6),
                Panel("Missing audio", (
                    q(f"sum by (run) (ray_weaksound_prep_missing_total{{{RUN}}})", "{{run}}"),),
                    kind="stat", width=6,
                    description="Listed clips without an audio file (counted as rejects with reason missing_audio too)."),
            )),
            Row("Rejects", (
                Panel("Rejects / s by reason", (
                    q(f"sum by (run, reason) (rate(ray_weaksound_prep_rejects_total{{{RUN}}}[$__rate_interval]))",
                      "{{run}} {{reason}}"),)),
                Panel("Rejected share (5 min)", (
                    q(f"weaksound:prep_reject_share:ratio_rate5m{{{RUN}}}", "{{run}}"),), unit="percentunit",
                    description="Alert WeaksoundPrepRejectShareHigh fires above 5 % for 5 minutes."),
            )),
            Row("Shard writes", (
                Panel("Shard bytes written / s", (
                    q(f"sum by (run) (rate(ray_weaksound_prep_bytes_written_total{{{RUN}}}[$__rate_interval]))",
                      "{{run}}"),), unit="Bps"),
                Panel("Shard build+write time", (
                    q(_rate_hist("ray_weaksound_prep_shard_write_seconds", 0.5), "p50 {{run}}"),
                    q(_rate_hist("ray_weaksound_prep_shard_write_seconds", 0.9), "p90 {{run}}")), unit="s"),
            )),
            Row("Ray cluster", (NODE_CPU, NODE_MEM, NODE_NET, TASKS)),
        ),
    ),
    Dashboard(
        uid="weaksound-training", title="weaksound / training",
        description="Ray Train DDP of the weak-label CNN: throughput, data wait, loss, eval, checkpoints, restarts.",
        run_metric="ray_weaksound_train_steps_total",
        rows=(
            Row("Throughput", (
                Panel("Clips / s (all ranks)", (
                    q(f"sum by (run) (ray_weaksound_train_clips_per_second{{{RUN}}})", "{{run}}"),)),
                Panel("Audio seconds / s (x real time, all ranks)", (
                    q(f"sum by (run) (ray_weaksound_train_audio_seconds_per_second{{{RUN}}})", "{{run}}"),)),
                Panel("Optimizer steps / s", (
                    q(f"sum by (run) (rate(ray_weaksound_train_steps_total{{{RUN}}}[$__rate_interval]))", "{{run}}"),)),
                Panel("Step time", (
                    q(_rate_hist("ray_weaksound_train_step_seconds", 0.5), "p50 {{run}}"),
                    q(_rate_hist("ray_weaksound_train_step_seconds", 0.9), "p90 {{run}}")), unit="s"),
            )),
            Row("Input pipeline", (
                Panel("Data-wait share of step time, per rank", (
                    q(f"max by (run, rank) (ray_weaksound_train_data_wait_fraction{{{RUN}}})", "{{run}} rank {{rank}}"),),
                    unit="percentunit",
                    description="Above ~0.3 the GPUs wait for decoding: see docs/scaling.md."),
                Panel("Clips / s per rank", (
                    q(f"max by (run, rank) (ray_weaksound_train_clips_per_second{{{RUN}}})", "{{run}} rank {{rank}}"),)),
            )),
            Row("Optimisation", (
                Panel("Training loss", (
                    q(f"avg by (run) (ray_weaksound_train_loss{{{RUN}}})", "{{run}}"),)),
                Panel("Learning rate", (
                    q(f"max by (run) (ray_weaksound_train_learning_rate{{{RUN}}})", "{{run}}"),), unit="none"),
                Panel("Eval mAP / mean AUC (last epoch)", (
                    q(f"max by (run) (ray_weaksound_train_eval_map{{{RUN}}})", "mAP {{run}}"),
                    q(f"max by (run) (ray_weaksound_train_eval_auc{{{RUN}}})", "AUC {{run}}")), unit="percentunit"),
                Panel("Eval mAP below its 6 h best", (
                    q(f"weaksound:train_eval_map:drop_from_best_6h{{{RUN}}}", "{{run}}"),), unit="percentunit",
                    description="Alert WeaksoundEvalMapDropped fires above 0.05."),
            )),
            Row("Fault tolerance", (
                Panel("Checkpoint write time", (
                    q(_rate_hist("ray_weaksound_train_checkpoint_seconds", 0.9), "p90 {{run}}"),
                    q(f"max by (run) (ray_weaksound_train_checkpoint_seconds_sum{{{RUN}}}"
                      f" / ray_weaksound_train_checkpoint_seconds_count{{{RUN}}})", "mean {{run}}")), unit="s"),
                Panel("Worker starts beyond the first", (
                    q(f"sum by (run) (ray_weaksound_train_restarts_total{{{RUN}}})", "{{run}}"),), kind="stat", width=6),
                Panel("Restarts in the last 15 min", (
                    q(f"weaksound:train_restarts:increase15m{{{RUN}}}", "{{run}}"),), kind="stat", width=6),
            )),
            Row("Ray cluster", (GPU_UTIL, GPU_MEM, NODE_CPU, NODE_MEM, OBJECT_STORE, ACTIVE_NODES)),
        ),
    ),
    Dashboard(
        uid="weaksound-extraction", title="weaksound / embedding extraction",
        description="weaksound embed: clips/s overall and per actor, and the nodes doing it.",
        run_metric="ray_weaksound_embed_clips_total",
        rows=(
            Row("Throughput", (
                Panel("Clips embedded / s", (
                    q(f"sum by (run) (rate(ray_weaksound_embed_clips_total{{{RUN}}}[$__rate_interval]))", "{{run}}"),)),
                Panel("Clips / s of the last shard, per reporting process", (
                    q(f"sum by (run, NodeAddress) (ray_weaksound_embed_clips_per_second{{{RUN}}})",
                      "{{run}} {{NodeAddress}}"),)),
                Panel("Clips embedded", (
                    q(f"sum by (run) (ray_weaksound_embed_clips_total{{{RUN}}})", "{{run}}"),), kind="stat", width=6),
            )),
            Row("Ray cluster", (GPU_UTIL, NODE_CPU, NODE_MEM, OBJECT_STORE, ACTIVE_NODES)),
        ),
    ),
)


# ---------------------------------------------------------------------------------------------
# Grafana JSON


def _panel_json(panel: Panel, pid: int, x: int, y: int) -> dict:
    targets = [{"datasource": DATASOURCE, "refId": chr(ord("A") + i), "expr": query.expr,
                "legendFormat": query.legend or "__auto", "range": True}
               for i, query in enumerate(panel.queries)]
    doc = {
        "id": pid, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit, **panel.extra_defaults}, "overrides": []},
    }
    if panel.kind == "timeseries":
        doc["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    else:
        doc["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    return doc


def dashboard_json(dash: Dashboard) -> dict:
    panels: list[dict] = []
    pid, y = 1, 0
    for row in dash.rows:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x, row_h = pid + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, row_h = 0, y + row_h, 0
            panels.append(_panel_json(panel, pid, x, y))
            pid, x, row_h = pid + 1, x + panel.width, max(row_h, panel.height)
        y += row_h
    run_query = f"label_values({dash.run_metric}, run)"
    return {
        "uid": dash.uid, "title": dash.title, "description": dash.description,
        "tags": ["weaksound", "ray"], "editable": True, "graphTooltip": 1, "timezone": "browser",
        "refresh": "10s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "options": []},
            {"name": "run", "label": "Run", "type": "query", "datasource": DATASOURCE,
             "definition": run_query, "query": {"query": run_query, "refId": "run"},
             "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2,
             "sort": 1, "hide": 0, "options": []},
        ]},
        "panels": panels,
    }


def render_dashboard(dash: Dashboard) -> str:
    return json.dumps(dashboard_json(dash), indent=2, sort_keys=False) + "\n"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, descriptions) as YAML block scalars."""


def _str_representer(dumper: yaml.SafeDumper, text: str):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _str_representer)


def render_prometheus_rule() -> str:
    rules = yaml.safe_load(RULES_FILE.read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "weaksound", "labels": {"app.kubernetes.io/part-of": "weaksound",
                                                     "release": "prometheus"}},
        "spec": {"groups": rules["groups"]},
    }
    header = ("# GENERATED by cluster/generate.py from cluster/prometheus/rules.yml: edit that file and\n"
              "# re-run `python cluster/generate.py` (tests fail while this copy is stale).\n")
    return header + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=110, allow_unicode=True)


def expected_files() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for dash in DASHBOARDS:
        text = render_dashboard(dash)
        files[GRAFANA_DIR / f"{dash.uid}.json"] = text
        files[K8S_DASHBOARDS / f"{dash.uid}.json"] = text
    files[K8S_RULE] = render_prometheus_rule()
    return files


def stale_files() -> list[Path]:
    """Generated files that are missing or differ from what this script would write."""
    return [path for path, text in expected_files().items()
            if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = p.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run python cluster/generate.py)")
        return 1 if stale else 0
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
