"""The monitoring files in deploy/: valid for Prometheus, tested, documented, and naming only
metrics Breakwater exports.

A renamed metric in `breakwater.metrics.CATALOG` would leave alerts that never fire and
panels that stay empty, with no error anywhere; these tests turn that into a failure. They run
Debian's `promtool` (the `promtool` fixture fails the test where it is missing).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from breakwater.config import Settings
from breakwater.metrics import CATALOG
from breakwater.metrics_http import PROMETHEUS_PATH

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus.yml"
ALERTS = DEPLOY / "alerts.yml"
ALERT_TESTS = DEPLOY / "alerts.test.yml"
RUNBOOK = DEPLOY / "RUNBOOK.md"
DASHBOARD = DEPLOY / "grafana" / "breakwater-dashboard.json"

GRID_WIDTH = 24  # Grafana's dashboard grid is 24 columns wide
SEVERITIES = {"critical", "warning"}
PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?")


def exported_metric_names() -> set[str]:
    """Every series name Prometheus sees on Breakwater's endpoint, plus `up`."""
    names = {"up"}
    for metric in CATALOG.values():
        if metric.kind == "counter":
            names.add(f"{metric.name}_total")
        elif metric.kind == "gauge":
            names.add(metric.name)
        else:
            names.update(f"{metric.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not function calls,
    keywords, label names (in matchers and grouping clauses), durations or numbers."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    return {
        name
        for name, call in _IDENTIFIER.findall(text)
        if not call and name.lower() not in PROMQL_KEYWORDS
    }


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings: lower case, punctuation but - and _ dropped, spaces
    to hyphens, and -1, -2 ... on repeats."""
    anchors: set[str] = set()
    seen: Counter[str] = Counter()
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if in_fence or not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]


def run_promtool(promtool: str, *args: str, cwd: Path = DEPLOY) -> str:
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# -- the extraction helpers themselves ---------------------------------------------------------


def test_metric_names_keeps_metrics_and_drops_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, sink) (rate(ais_sink_write_seconds_bucket{sink="db"}[5m])))'
        ' / on(instance) group_left up{job="a b"} > bool 1e-9 and time() - foo offset 5m'
    )
    assert metric_names(expr) == {"ais_sink_write_seconds_bucket", "up", "foo"}


def test_github_anchors_follow_github_slugs() -> None:
    markdown = "# Breakwater runbook\n## BreakwaterDLQFull\n## What to do?\n## What to do?\n"
    fenced = "```\n# not a heading\n```\n"
    expected = {"breakwater-runbook", "breakwaterdlqfull", "what-to-do", "what-to-do-1"}
    assert github_anchors(markdown + fenced) == expected


# -- Prometheus --------------------------------------------------------------------------------


def test_prometheus_config_is_valid(promtool: str) -> None:
    output = run_promtool(promtool, "check", "config", PROMETHEUS_CONFIG.name)
    assert "SUCCESS" in output


def test_prometheus_config_scrapes_the_endpoint_breakwater_serves() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert config["rule_files"] == [ALERTS.name]
    assert set(jobs) == {"breakwater", "ray"}
    breakwater = jobs["breakwater"]
    assert breakwater["metrics_path"] == PROMETHEUS_PATH
    defaults = Settings()
    assert breakwater["static_configs"] == [{"targets": [f"{defaults.metrics_host}:{defaults.metrics_port}"]}]
    assert jobs["ray"]["file_sd_configs"] == [{"files": ["/tmp/ray/prom_metrics_service_discovery.json"]}]


def test_alert_rules_are_valid(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", ALERTS.name)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    output = run_promtool(promtool, "test", "rules", ALERT_TESTS.name)
    assert "SUCCESS" in output


def test_every_alert_fires_in_a_test_and_stays_quiet_in_another() -> None:
    tests = load_yaml(ALERT_TESTS)
    assert tests["rule_files"] == [ALERTS.name]
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    alerts = {rule["alert"] for rule in alert_rules()}
    assert sorted(alerts - firing) == [], "alerts with no case that fires them"
    assert sorted(alerts - quiet) == [], "alerts with no case where they stay quiet"
    assert sorted((firing | quiet) - alerts) == [], "test cases for alerts that do not exist"


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules), "alert names repeat"
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        url = annotations["runbook_url"]
        assert url == f"deploy/RUNBOOK.md#{name.lower()}", name
        assert url.split("#")[1] in anchors, f"{name}: RUNBOOK.md has no section {url}"


def test_runbook_sections_and_links_match_the_alerts() -> None:
    text = RUNBOOK.read_text()
    sections = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert sorted(sections) == sorted(rule["alert"] for rule in alert_rules())
    anchors = github_anchors(text)
    broken = [link for link in re.findall(r"\]\(#([^)]+)\)", text) if link not in anchors]
    assert broken == []


def test_alert_expressions_name_only_exported_metrics() -> None:
    allowed = exported_metric_names()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert sorted(names - allowed) == [], rule["alert"]


# -- Grafana -----------------------------------------------------------------------------------


def test_dashboard_is_structurally_valid() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "breakwater"
    assert dashboard["title"] == "Breakwater"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        title = panel["title"]
        assert panel["type"] in {"timeseries", "stat"}, title
        assert title
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= GRID_WIDTH, title
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{title} overlaps {cells[(x, y)]}"
                cells[(x, y)] = title
        assert panel["targets"], title
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), title
        for target in panel["targets"]:
            assert target["expr"].strip(), title


def test_dashboard_expressions_name_only_exported_metrics() -> None:
    allowed = exported_metric_names()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        assert sorted(names - allowed) == [], expr


def test_dashboard_expressions_parse(promtool: str, tmp_path: Path) -> None:
    """promtool has no parser command of its own: each expression becomes a recording rule."""
    rules = [{"record": f"dashboard:expr_{i}", "expr": expr} for i, expr in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool(promtool, "check", "rules", path.name, cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in output


def test_dashboard_shows_what_operators_need() -> None:
    """The panels the runbook sends operators to: throughput, failures, latency, queue, breakers."""
    used = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    wanted = {
        "ais_messages_processed_total", "ais_messages_failed_db_total", "ais_messages_failed_redis_total",
        "ais_latency_p50_ms", "ais_latency_p95_ms", "ais_latency_p99_ms",
        "ais_end_to_end_latency_seconds_bucket",
        "ais_dlq_size", "ais_dlq_dead", "circuit_breaker_state", "ais_lines_rejected_total",
        "ais_sink_write_seconds_bucket", "ais_batches_in_flight", "ais_active_connections",
    }
    assert sorted(wanted - used) == []
