"""The Grafana dashboard and the Prometheus alert rules (``deploy/observability/``) name only
metrics the platform exports, and the connection budget the operator's guide states is the
one the process table gives."""
from __future__ import annotations

import json
import re

import yaml

from deploy.processes import BY_NAME, connection_budget
from shared.config import PROJECT_ROOT
from shared.db import pool_limits

OBSERVABILITY = PROJECT_ROOT / "deploy" / "observability"
DECLARATION = re.compile(r"""\b(Counter|Gauge|Histogram|GaugeCollector)\(\s*["']([a-z_:][a-z0-9_:]*)["']""")
# What a query holds besides metric names: strings, label matchers, ranges, grouping clauses.
NOT_NAMES = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)')
# A name not inside a number and not called like a function.
NAME = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
KEYWORDS = {"and", "or", "unless", "bool", "offset"}
SUFFIXES = {"Counter": ("_total",), "Histogram": ("_bucket", "_count", "_sum"), "Gauge": ("",),
            "GaugeCollector": ("",)}
BUILTIN = {"up"}  # Prometheus' own, per scrape target


def exported() -> set[str]:
    names = set(BUILTIN)
    for path in [*(PROJECT_ROOT / "services").rglob("*.py"), *(PROJECT_ROOT / "shared").rglob("*.py")]:
        for kind, name in DECLARATION.findall(path.read_text(encoding="utf-8")):
            base = name.removesuffix("_total") if kind == "Counter" else name  # prometheus_client adds it once
            names.update(base + suffix for suffix in SUFFIXES[kind])
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_queries() -> list[str]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def metric_names(query: str) -> set[str]:
    """The metrics a PromQL query reads, with or without label matchers."""
    return set(NAME.findall(NOT_NAMES.sub(" ", query))) - KEYWORDS


def test_the_code_declares_the_metrics_the_issue_asks_for():
    assert {"http_requests_total", "http_request_duration_seconds_bucket", "gateway_open_websockets",
            "render_jobs_total", "render_seconds_bucket", "render_queue_wait_seconds_bucket",
            "render_overhead_seconds_bucket", "render_queue_depth", "render_queue_oldest_age_seconds",
            "credits_held", "render_comfyui_up"} <= exported()


def test_metric_names_are_found_in_a_query_with_or_without_label_matchers():
    query = 'sum by (queue) (rate(jobs_total{outcome="failed"}[5m])) / max(slots) > 0.5 and absent(up == 1) offset 5m'
    assert metric_names(query) == {"jobs_total", "slots", "up"}


def test_dashboard_and_alerts_name_only_metrics_that_exist():
    queries = dashboard_queries() + alert_queries()
    assert len(queries) >= 10
    named = {name for query in queries for name in metric_names(query)}
    assert named, "no metric found in the queries"
    assert named <= exported(), f"not exported by any process: {sorted(named - exported())}"


def test_the_guide_states_the_connection_budget_of_the_table():
    guide = (PROJECT_ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    for workers in (1, 16, 64):
        assert f"| {workers} | {connection_budget(workers)} |" in guide
    assert BY_NAME["worker"].db_pool == (2, 2)
    assert pool_limits(BY_NAME["worker"].own_env()) == (2, 2)
    assert pool_limits({}) == (10, 20)
