"""The Grafana dashboard and the Prometheus alerts only name metrics the node exports.

A typo in a PromQL expression is not an error anywhere: the panel stays empty and the
alert never fires. So every expression in docs/grafana/dqorch.json and
docs/prometheus/alerts.yml is read here, and each distriqueue_* series it names must be
one the node really exposes, each label it matches on must exist on that metric, and
the values it matches for a few closed label sets (route, status, queue, ...) must be
values the node can produce.

The exported names come from the code, not from a list kept here: the static metrics
from dqorch.metrics.REGISTRY, and the live gauges from dqorch.metrics.LIVE;
helpers.py's exported_series() reads them, for the integration test_prometheus too.
"""
from __future__ import annotations

import inspect
import re
from types import SimpleNamespace

import pytest
import yaml

from dqorch import api, broker, config, jobs, workers
from tests.unit.helpers import (ALERTS, dashboard_expressions, exported_series, gauge_metrics,
                                load_dashboard)

TARGET_LABELS = {"job", "instance"}         # added by Prometheus to every series
OTHER_METRICS = {"up", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![\w:$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
_SELECTOR = re.compile(r"(?<![\w:])(distriqueue_[a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


# What the node exports #####################################################

def known_label_values() -> dict:
    """Closed label sets the node can produce, from the code that produces them."""
    routes = {r.rule for r in api.make_app(SimpleNamespace(cfg=config.Config())).routes}
    stats_keys = inspect.getsource(broker)   # the event label: keys of Broker.stats
    events = set(re.findall(r'self\.stats\["(\w+)"\]', stats_keys))
    return {
        "route": routes,
        "status": set(jobs.STATUSES) | {workers.ACTIVE, workers.UNRESPONSIVE},
        "from": set(jobs.STATUSES),
        "to": set(jobs.STATUSES),
        "queue": set(jobs.QUEUES),
        "event": events,
        "kind": {"job", "event"},
    }


# What the dashboard and alerts ask for #####################################

def alert_rules() -> list:
    with open(ALERTS) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"]]


def alert_expressions() -> list:
    return [(f"alert: {r.get('alert') or r.get('record')}", r["expr"]) for r in alert_rules()]


def all_expressions() -> list:
    return dashboard_expressions(load_dashboard()) + alert_expressions()


def referenced_names(expr: str) -> set:
    """Metric names an expression selects (strings removed first, so label values and
    Grafana's $variables never count as names)."""
    bare = _STRING.sub('""', expr)
    return {m for m in _NAME.findall(bare) if m.startswith("distriqueue_")}


def problems(exprs: list, series: dict, label_values: dict) -> list:
    """Every reference in exprs to a series, label or label value the node lacks."""
    out = []
    for where, expr in exprs:
        for name in sorted(referenced_names(expr)):
            if name not in series:
                out.append(f"{where}: {name} is not a metric the node exports")
        for name, body in _SELECTOR.findall(expr):
            if name not in series:
                continue
            for label, op, value in _MATCHER.findall(body):
                if label not in set(series[name]) | TARGET_LABELS:
                    out.append(f"{where}: {name} has no label {label!r}")
                    continue
                allowed = label_values.get(label)
                if allowed is None or "$" in value or op not in ("=", "=~"):
                    continue
                wanted = value.split("|") if op == "=~" else [value]
                for v in wanted:
                    if v not in allowed:
                        out.append(f"{where}: {name}{{{label}={v!r}}} never exists; "
                                   f"{label} is one of {sorted(allowed)}")
    return out


@pytest.fixture(scope="module")
def series():
    return exported_series()


@pytest.fixture(scope="module")
def label_values():
    return known_label_values()


# Tests ######################################################################

def test_exported_names_are_read_from_the_code(series):
    # Both sources must have been read, or every check below would be vacuous.
    for name in ("distriqueue_http_request_seconds_bucket",     # histogram, static
                 "distriqueue_job_transitions_total",           # counter, static
                 "distriqueue_raft_is_leader",                  # gauge, metrics.LIVE
                 "distriqueue_broker_events_total"):            # counter, metrics.LIVE
        assert name in series, name
    assert len(gauge_metrics()) >= 10
    assert series["distriqueue_job_transitions_total"] == ("from", "to")
    assert series["distriqueue_oldest_job_age_seconds"] == ("queue", "status")
    assert "/api/jobs/register" in known_label_values()["route"]
    assert {"connects", "published", "confirmed"} <= known_label_values()["event"]


def test_there_are_expressions_to_check():
    assert len(dashboard_expressions(load_dashboard())) >= 30
    assert len(alert_expressions()) >= 8
    for where, expr in all_expressions():
        assert expr.strip(), where


def test_every_expression_names_real_metrics_labels_and_values(series, label_values):
    found = problems(all_expressions(), series, label_values)
    assert not found, "\n".join(found)


def test_the_check_catches_made_up_names(series, label_values):
    bad = [
        ("made up", "rate(distriqueue_made_up_total[5m])"),
        ("gauge as histogram", "distriqueue_jobs_bucket"),
        ("histogram without suffix", "distriqueue_http_request_seconds"),
        ("counter without _total", "rate(distriqueue_job_transitions[5m])"),
        ("wrong label", 'distriqueue_jobs{stauts="pending"}'),
        ("wrong route", 'distriqueue_http_request_seconds_bucket{route="/api/job/register"}'),
        ("wrong status in regex", 'distriqueue_jobs{status=~"pending|done"}'),
    ]
    for where, expr in bad:
        assert problems([(where, expr)], series, label_values), f"not caught: {where}"
    good = [("good", 'sum by (le) (rate(distriqueue_http_request_seconds_bucket'
                     '{job="$job", route="/api/jobs/register"}[5m]))'),
            ("label value is not a name", 'up{job="distriqueue_nothing"}')]
    assert problems(good, series, label_values) == []


def test_other_metrics_are_the_documented_ones():
    # Metrics from elsewhere (Prometheus' up, node_exporter) are named in README.md.
    for where, expr in all_expressions():
        for name in re.findall(r"(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr):
            assert name.startswith("distriqueue_") or name in OTHER_METRICS, (where, name)


def test_alerts_cover_the_operations_brief():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for r in rules:
        assert r.get("labels", {}).get("severity") in ("critical", "warning"), r["alert"]
        ann = r.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), r["alert"]
    used = set().union(*(referenced_names(e) | set(_NAME.findall(_STRING.sub('""', e)))
                         for _, e in alert_expressions()))
    for metric in ("distriqueue_raft_is_leader", "up", "distriqueue_broker_connected",
                   "distriqueue_publish_backlog", "distriqueue_oldest_job_age_seconds",
                   "distriqueue_workers", "distriqueue_job_transitions_total",
                   "distriqueue_log_writable", "node_filesystem_avail_bytes"):
        assert metric in used, f"no alert uses {metric}"


def test_dashboard_shape_and_coverage():
    dash = load_dashboard()
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for p in panels:
        for key in ("h", "w", "x", "y"):
            assert isinstance(p["gridPos"][key], int), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
    used = set().union(*(referenced_names(e) for _, e in dashboard_expressions(dash)))
    for metric in ("distriqueue_jobs", "distriqueue_job_transitions_total",
                   "distriqueue_http_request_seconds_bucket",
                   "distriqueue_raft_commit_seconds_bucket",
                   "distriqueue_publish_confirm_seconds_bucket",
                   "distriqueue_job_queue_wait_seconds_bucket",
                   "distriqueue_job_run_seconds_bucket",
                   "distriqueue_oldest_job_age_seconds", "distriqueue_broker_connected",
                   "distriqueue_broker_in_flight", "distriqueue_broker_events_total",
                   "distriqueue_workers", "distriqueue_raft_term",
                   "distriqueue_raft_commit_index"):
        assert metric in used, f"no panel shows {metric}"


def test_the_node_gives_a_value_for_every_live_metric_and_no_other():
    """LiveGauges reads values[name] for each of metrics.LIVE at scrape time: a name
    missing from Node._gauges breaks /metrics, an extra one is never exported. Read with
    ast (calling it needs a running node); test_prometheus scrapes a real one."""
    import ast
    import inspect
    import textwrap
    from dqorch import app, metrics
    fn = ast.parse(textwrap.dedent(inspect.getsource(app.Node._gauges)))
    returned = [n.value for n in ast.walk(fn) if isinstance(n, ast.Return)]
    assert len(returned) == 1 and isinstance(returned[0], ast.Dict)
    keys = [k.value for k in returned[0].keys]
    assert keys == list(metrics.LIVE)
