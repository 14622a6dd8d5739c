"""cluster/grafana: generated, well-formed, every query parses (promtool) and names only known metrics.

Known metrics = docs/contracts.md (with Ray's `ray_` prefix and histogram suffixes), Ray's own
families in cluster/ray_metrics.txt, and the `weaksound:*` recording rules. A dashboard that
names anything else fails here; tests/test_ops_live.py then runs every query for real.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from test_ops_prometheus import load_ops_module, promtool, run_promtool  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "cluster" / "grafana"
monitoring = load_ops_module("cluster/monitoring.py")
generate = load_ops_module("cluster/generate.py")

DASHBOARD_FILES = sorted(GRAFANA.glob("*.json"))
# Grafana's built-in variables, replaced the way Grafana would for a 1-hour view
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "${run}": ".*", "$run": ".*"}


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query target of every panel."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
        for inner in panel.get("panels", []):  # collapsed rows keep their panels inside
            out += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return out


def with_grafana_vars(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unhandled Grafana variable in {expr}"
    return expr


def unknown_metrics(dashboard: dict) -> list[str]:
    """Problems: metric names in panel or variable queries that are not known."""
    allowed = monitoring.allowed_metric_names()
    problems = []
    for title, expr in panel_queries(dashboard):
        names = monitoring.promql_metric_names(expr)
        if not names:
            problems.append(f"{title}: selects no metric: {expr}")
        problems += [f"{title}: unknown metric {n}" for n in sorted(names - allowed)]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            names = monitoring.grafana_variable_query_metrics(var["query"]["query"])
            problems += [f"variable {var['name']}: unknown metric {n}" for n in sorted(names - allowed)]
    return problems


@pytest.fixture(scope="module", params=[p.name for p in DASHBOARD_FILES])
def dashboard(request) -> dict:
    return json.loads((GRAFANA / request.param).read_text())


def test_dashboards_are_generated_and_up_to_date():
    assert [p.name for p in DASHBOARD_FILES] == sorted(f"{d.uid}.json" for d in generate.DASHBOARDS)
    assert generate.stale_files() == [], "run: python cluster/generate.py"


def test_dashboard_structure(dashboard):
    assert dashboard["uid"].startswith("weaksound-") and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert names == {"datasource", "run"}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_every_query_names_only_known_metrics(dashboard):
    assert unknown_metrics(dashboard) == []


def test_an_unknown_metric_name_is_caught():
    bad = json.loads(DASHBOARD_FILES[0].read_text())
    bad["panels"][1]["targets"][0]["expr"] = 'sum(rate(ray_weaksound_prep_clip_total{run=~"$run"}[5m]))'
    bad["templating"]["list"][1]["query"]["query"] = "label_values(weaksound_prep_clips, run)"
    problems = unknown_metrics(bad)
    assert any("ray_weaksound_prep_clip_total" in p for p in problems)
    assert any("weaksound_prep_clips" in p and "variable" in p for p in problems)


def test_every_contract_metric_is_on_a_dashboard():
    used = set()
    for path in DASHBOARD_FILES:
        for _, expr in panel_queries(json.loads(path.read_text())):
            used |= monitoring.promql_metric_names(expr)
    rules = yaml.safe_load((REPO / "cluster" / "prometheus" / "rules.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        used |= monitoring.promql_metric_names(rule["expr"])
    missing = [name for name, kind in monitoring.contract_metrics().items()
               if not any(u == "ray_" + name or (kind == "histogram" and u.startswith("ray_" + name + "_"))
                          for u in used)]
    assert missing == []


def test_metric_name_scanner():
    scan = monitoring.promql_metric_names
    assert scan('histogram_quantile(0.9, sum by (run, le) (rate(ray_x_bucket{run=~"$run"}[$__rate_interval])))') \
        == {"ray_x_bucket"}
    assert scan("a - (a offset 15m or a * 0)") == {"a"}
    assert scan('count by (run) (abs(ray_loss) == Inf) or vector(0)') == {"ray_loss"}
    assert scan("max_over_time(weaksound:x:max[6h]) - weaksound:x:max > 0.05") == {"weaksound:x:max"}
    assert scan('sum without (WorkerId) (ray_a{reason="x"}) / on (run) group_left () ray_b') == {"ray_a", "ray_b"}


def test_every_panel_query_parses_with_promtool(promtool, tmp_path):
    """promtool has no 'parse expression' command: check all queries as recording rules."""
    rules = []
    for path in DASHBOARD_FILES:
        dash = json.loads(path.read_text())
        for i, (_, expr) in enumerate(panel_queries(dash)):
            rules.append({"record": f"dashboard:{dash['uid'].replace('-', '_')}:q{i}", "expr": with_grafana_vars(expr)})
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = run_promtool(promtool, "check", "rules", str(tmp_path / "queries.yml"))
    assert f"SUCCESS: {len(rules)} rules found" in out
