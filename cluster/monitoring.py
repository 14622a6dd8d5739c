"""Render the local monitoring configs (used by cluster/start_monitoring.sh and the tests).

    python cluster/monitoring.py prometheus --out DIR --ray-targets 127.0.0.1:8080,127.0.0.1:8081 \\
        [--app-targets 127.0.0.1:9105] [--scrape-interval 5s]
    python cluster/monitoring.py grafana --out DIR --prometheus-url http://127.0.0.1:9090 \\
        [--dashboards DIR]

``prometheus`` writes DIR/prometheus.yml: cluster/prometheus/prometheus.yml with the given
targets, an absolute path to cluster/prometheus/rules.yml and the given scrape/evaluation
interval; everything else (job names, the relabeling that adds ``ray_`` to prometheus_client
metrics) stays as in the checked-in file. ``grafana`` writes a Grafana provisioning folder
(DIR/datasources/weaksound.yml, DIR/dashboards/weaksound.yml) pointing at that Prometheus and at
the dashboards in cluster/grafana.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_YML = ROOT / "cluster" / "prometheus" / "prometheus.yml"
RULES_YML = ROOT / "cluster" / "prometheus" / "rules.yml"
DASHBOARDS_DIR = ROOT / "cluster" / "grafana"
DATASOURCE_UID = "weaksound-prometheus"


def _targets(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def render_prometheus_config(ray_targets: list[str], app_targets: list[str], *,
                             scrape_interval: str = "5s", rules: Path = RULES_YML) -> str:
    """The local prometheus.yml with these targets (a job with no target is dropped)."""
    doc = copy.deepcopy(yaml.safe_load(PROMETHEUS_YML.read_text()))
    doc["global"]["scrape_interval"] = scrape_interval
    doc["global"]["evaluation_interval"] = scrape_interval
    doc["global"].pop("scrape_timeout", None)  # must not exceed the interval; default = interval
    doc["rule_files"] = [str(Path(rules).resolve())]
    wanted = {"ray": ray_targets, "weaksound-app": app_targets}
    jobs = []
    for job in doc["scrape_configs"]:
        targets = wanted.get(job["job_name"])
        if targets is None:
            jobs.append(job)
        elif targets:
            job["static_configs"] = [{"targets": list(targets)}]
            jobs.append(job)
    doc["scrape_configs"] = jobs
    return yaml.safe_dump(doc, sort_keys=False)


def render_grafana_provisioning(prometheus_url: str, dashboards: Path = DASHBOARDS_DIR) -> dict[str, str]:
    """Relative path -> text of a Grafana provisioning folder."""
    datasource = {"apiVersion": 1, "datasources": [{
        "name": "Prometheus (weaksound)", "type": "prometheus", "uid": DATASOURCE_UID, "access": "proxy",
        "url": prometheus_url, "isDefault": True, "jsonData": {"timeInterval": "5s"}}]}
    provider = {"apiVersion": 1, "providers": [{
        "name": "weaksound", "folder": "weaksound", "type": "file", "disableDeletion": False,
        "allowUiUpdates": True, "options": {"path": str(dashboards)}}]}
    return {"datasources/weaksound.yml": yaml.safe_dump(datasource, sort_keys=False),
            "dashboards/weaksound.yml": yaml.safe_dump(provider, sort_keys=False)}


# ---------------------------------------------------------------------------------------------
# Which metric names queries may use (dashboards, rules)

CONTRACTS_MD = ROOT / "docs" / "contracts.md"
RAY_METRICS_TXT = ROOT / "cluster" / "ray_metrics.txt"
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                 "and", "or", "unless", "inf", "nan", "start", "end"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (a lexical scan, enough for our queries).

    Removes string literals, label matchers ``{...}``, ranges ``[...]`` and grouping clauses
    ``by (...)`` first; then every identifier that is not a function call, a keyword or part of
    a number/duration/Grafana variable is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_.:$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[m.end():].lstrip().startswith("("):
            continue  # a function (or an aggregation without a by clause)
        if m.group(0).lower() in _PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def grafana_variable_query_metrics(query: str) -> set[str]:
    """Metric names in a Grafana template query such as ``label_values(metric, run)``."""
    m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query)
    return promql_metric_names(m.group(1)) if m else promql_metric_names(query)


def contract_metrics() -> dict[str, str]:
    """name -> type of the metrics table in docs/contracts.md (names without ``ray_``)."""
    table: dict[str, str] = {}
    for line in CONTRACTS_MD.read_text().splitlines():
        m = re.match(r"\|\s*(weaksound_[a-z0-9_]+)(?:\{[^}]*\})?\s*\|\s*(counter|gauge|histogram)\s*\|", line)
        if m:
            table[m.group(1)] = m.group(2)
    return table


def ray_metrics() -> dict[str, str]:
    """Ray's own metric families listed in cluster/ray_metrics.txt: name -> availability."""
    out: dict[str, str] = {}
    for line in RAY_METRICS_TXT.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, availability = line.split()
            out[name] = availability
    return out


def recorded_names() -> set[str]:
    doc = yaml.safe_load(RULES_YML.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def exported_series_names() -> set[str]:
    """Every sample name our metrics produce as Prometheus sees them (``ray_`` prefixed)."""
    names: set[str] = set()
    for name, kind in contract_metrics().items():
        base = "ray_" + name
        names |= {base + "_bucket", base + "_sum", base + "_count"} if kind == "histogram" else {base}
    return names


def allowed_metric_names() -> set[str]:
    return exported_series_names() | set(ray_metrics()) | recorded_names()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    pr = sub.add_parser("prometheus", help="write DIR/prometheus.yml")
    pr.add_argument("--out", type=Path, required=True)
    pr.add_argument("--ray-targets", default="127.0.0.1:8080,127.0.0.1:8081",
                    help="Ray metrics export endpoints, comma-separated (default: %(default)s)")
    pr.add_argument("--app-targets", default="127.0.0.1:9105",
                    help="prometheus_client endpoints, comma-separated; empty for none (default: %(default)s)")
    pr.add_argument("--scrape-interval", default="5s", help="scrape and rule interval (default: %(default)s)")
    gr = sub.add_parser("grafana", help="write a Grafana provisioning folder under DIR")
    gr.add_argument("--out", type=Path, required=True)
    gr.add_argument("--prometheus-url", default="http://127.0.0.1:9090")
    gr.add_argument("--dashboards", type=Path, default=DASHBOARDS_DIR,
                    help="folder with the dashboard JSON as Grafana sees it (default: %(default)s)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "prometheus":
        text = render_prometheus_config(_targets(args.ray_targets), _targets(args.app_targets),
                                        scrape_interval=args.scrape_interval)
        (args.out / "prometheus.yml").write_text(text)
    else:
        for rel, text in render_grafana_provisioning(args.prometheus_url, args.dashboards).items():
            (args.out / rel).parent.mkdir(parents=True, exist_ok=True)
            (args.out / rel).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
