"""docs/prometheus and docs/grafana against the real tools and a real node.

- promtool accepts alerts.yml and the example prometheus.yml, and the alerts fire (and
  stay quiet) as intended on synthetic series (`promtool test rules`);
- a real node's /metrics passes `promtool check metrics`, and the metric names it
  exposes are exactly the ones tests/unit/test_dashboards.py checks the dashboard
  against;
- Debian's `prometheus` scrapes a real node (via scripts/prometheus-local.sh), sees it
  as leader, evaluates every alert rule without error, puts the broker alert in
  pending for a node without RabbitMQ, and answers every dashboard query.

The node here is given a RabbitMQ port where nothing listens: nothing it does reaches
the shared broker, and the broker-down alert has something to see.

prometheus and promtool come from Debian's `prometheus` package. When they are missing
these tests fail (they do not skip): install with
`DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus`.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.unit.helpers import ALERTS, dashboard_expressions, exported_series, load_dashboard

from .conftest import REPO, free_port, wait_until

PROM_DIR = os.path.join(REPO, "docs", "prometheus")
SCRIPT = os.path.join(REPO, "scripts", "prometheus-local.sh")
INSTALL = ("DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
           "prometheus")

# Lint messages of `promtool check metrics` we accept. None today: the exposition lints
# clean. Add a substring here only for a warning you decided to live with, and say why.
ACCEPTED_LINT: tuple = ()


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; it comes with Debian's prometheus package: "
                    f"run `{INSTALL}` (or `apt-get install -y prometheus`)")
    return path


def run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


# (a) promtool on the files ##################################################

def test_promtool_accepts_alerts_and_example_config():
    promtool = tool("promtool")
    out = run(promtool, "check", "rules", ALERTS)
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(promtool, "check", "config", os.path.join(PROM_DIR, "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


# Synthetic series, 15 s apart, and what each alert must do with them. promtool
# compares annotations too; they are covered by `check rules` (template syntax) and by
# the live test below (rendering), so the rules are tested from a copy without them.
RULE_TESTS = """
evaluation_interval: 15s
tests:
  - name: one leader among three is fine; none for a minute is critical
    interval: 15s
    input_series:
      - {series: 'distriqueue_raft_is_leader{job="dqorch",instance="a"}', values: '1 1 0x20'}
      - {series: 'distriqueue_raft_is_leader{job="dqorch",instance="b"}', values: '0x22'}
      - {series: 'distriqueue_raft_is_leader{job="dqorch",instance="c"}', values: '0x22'}
    alert_rule_test:
      - {eval_time: 20s, alertname: DqorchNoLeader, exp_alerts: []}
      - {eval_time: 1m, alertname: DqorchNoLeader, exp_alerts: []}
      - eval_time: 2m
        alertname: DqorchNoLeader
        exp_alerts: [{exp_labels: {severity: critical, job: dqorch}}]

  - name: node down, log not writable, broker down, unresponsive workers
    interval: 15s
    input_series:
      - {series: 'up{job="dqorch",instance="a"}', values: '1 0x20'}
      - {series: 'up{job="dqorch",instance="b"}', values: '1x20'}
      - {series: 'distriqueue_log_writable{job="dqorch",instance="a"}', values: '1 0x20'}
      - {series: 'distriqueue_log_writable{job="dqorch",instance="b"}', values: '1x20'}
      - {series: 'distriqueue_broker_connected{job="dqorch",instance="a"}', values: '1 0x20'}
      - {series: 'distriqueue_broker_connected{job="dqorch",instance="b"}', values: '1x20'}
      - {series: 'distriqueue_workers{job="dqorch",instance="a",status="unresponsive"}', values: '0 2x20'}
      - {series: 'distriqueue_workers{job="dqorch",instance="b",status="unresponsive"}', values: '0x20'}
      - {series: 'distriqueue_workers{job="dqorch",instance="b",status="active"}', values: '5x20'}
    alert_rule_test:
      - {eval_time: 30s, alertname: DqorchNodeDown, exp_alerts: []}
      - eval_time: 2m
        alertname: DqorchNodeDown
        exp_alerts: [{exp_labels: {severity: critical, job: dqorch, instance: a}}]
      - eval_time: 2m
        alertname: DqorchLogNotWritable
        exp_alerts: [{exp_labels: {severity: critical, job: dqorch, instance: a}}]
      - eval_time: 2m
        alertname: DqorchBrokerDisconnected
        exp_alerts: [{exp_labels: {severity: critical, job: dqorch, instance: a}}]
      - {eval_time: 1m, alertname: DqorchWorkersUnresponsive, exp_alerts: []}
      - eval_time: 4m
        alertname: DqorchWorkersUnresponsive
        exp_alerts: [{exp_labels: {severity: warning, job: dqorch, instance: a, status: unresponsive}}]

  - name: a slow disk for minutes is a warning; a spell of one minute is not
    interval: 15s
    input_series:
      - {series: 'distriqueue_raft_fsync_in_thread{job="dqorch",instance="a"}', values: '0 1x30'}
      - {series: 'distriqueue_raft_fsync_in_thread{job="dqorch",instance="b"}', values: '0 1x4 0x25'}
    alert_rule_test:
      - {eval_time: 4m, alertname: DqorchSlowDisk, exp_alerts: []}
      - eval_time: 7m
        alertname: DqorchSlowDisk
        exp_alerts: [{exp_labels: {severity: warning, job: dqorch, instance: a}}]

  - name: a job queue that keeps returning jobs; one back within a round is no alert
    interval: 15s
    input_series:
      - {series: 'distriqueue_queue_unroutable{job="dqorch",instance="a",queue="job.high"}', values: '0 1x20'}
      - {series: 'distriqueue_queue_unroutable{job="dqorch",instance="a",queue="job.low"}', values: '0 1 0x19'}
    alert_rule_test:
      - {eval_time: 1m, alertname: DqorchJobQueueUnroutable, exp_alerts: []}
      - eval_time: 3m
        alertname: DqorchJobQueueUnroutable
        exp_alerts: [{exp_labels: {severity: critical, instance: a, queue: job.high}}]

  - name: a queue with ready messages and no consumer, and one a worker consumes
    interval: 1m
    input_series:
      - {series: 'distriqueue_rabbitmq_messages_ready{job="dqorch",instance="a",queue="job.low"}', values: '5+1x20'}
      - {series: 'distriqueue_rabbitmq_consumers{job="dqorch",instance="a",queue="job.low"}', values: '0x20'}
      - {series: 'distriqueue_rabbitmq_messages_ready{job="dqorch",instance="a",queue="job.high"}', values: '5+1x20'}
      - {series: 'distriqueue_rabbitmq_consumers{job="dqorch",instance="a",queue="job.high"}', values: '2x20'}
    alert_rule_test:
      - {eval_time: 5m, alertname: DqorchQueueWithoutConsumers, exp_alerts: []}
      - eval_time: 15m
        alertname: DqorchQueueWithoutConsumers
        exp_alerts: [{exp_labels: {severity: warning, job: dqorch, instance: a, queue: job.low}}]

  - name: confirms overdue, and snapshots that only fail
    interval: 1m
    input_series:
      - {series: 'distriqueue_broker_oldest_unconfirmed_seconds{job="dqorch",instance="a"}', values: '0 0 60+60x40'}
      - {series: 'distriqueue_broker_oldest_unconfirmed_seconds{job="dqorch",instance="b"}', values: '2x40'}
      - {series: 'distriqueue_raft_snapshots_total{job="dqorch",instance="a",outcome="failed"}', values: '0+1x60'}
      - {series: 'distriqueue_raft_snapshots_total{job="dqorch",instance="a",outcome="written"}', values: '3x60'}
      - {series: 'distriqueue_raft_snapshots_total{job="dqorch",instance="b",outcome="failed"}', values: '0+1x60'}
      - {series: 'distriqueue_raft_snapshots_total{job="dqorch",instance="b",outcome="written"}', values: '0+1x60'}
    alert_rule_test:
      - {eval_time: 2m, alertname: DqorchBrokerConfirmsOverdue, exp_alerts: []}
      - eval_time: 5m
        alertname: DqorchBrokerConfirmsOverdue
        exp_alerts: [{exp_labels: {severity: critical, job: dqorch, instance: a}}]
      - {eval_time: 10m, alertname: DqorchSnapshotsFailing, exp_alerts: []}
      - eval_time: 40m
        alertname: DqorchSnapshotsFailing
        exp_alerts: [{exp_labels: {severity: warning, job: dqorch, instance: a, outcome: failed}}]

  - name: a follower holds its broker connection; a witness exports none; a leader cut off alerts
    interval: 15s
    input_series:
      - {series: 'distriqueue_raft_is_leader{job="dqorch",instance="l"}', values: '1x20'}
      - {series: 'distriqueue_broker_connected{job="dqorch",instance="l"}', values: '1 0x20'}
      - {series: 'distriqueue_raft_is_leader{job="dqorch",instance="f"}', values: '0x20'}
      - {series: 'distriqueue_broker_connected{job="dqorch",instance="f"}', values: '1x20'}
      - {series: 'distriqueue_raft_is_leader{job="dqorch",instance="w"}', values: '0x20'}
    alert_rule_test:
      - eval_time: 3m
        alertname: DqorchBrokerDisconnected
        exp_alerts: [{exp_labels: {severity: critical, job: dqorch, instance: l}}]

  - name: a growing publish backlog and old pending jobs; a steady backlog is fine
    interval: 15s
    input_series:
      - {series: 'distriqueue_publish_backlog{job="dqorch",instance="a"}', values: '0+10x80'}
      - {series: 'distriqueue_publish_backlog{job="dqorch",instance="b"}', values: '500x80'}
      - {series: 'distriqueue_oldest_job_age_seconds{job="dqorch",instance="a",queue="job.low",status="pending"}', values: '0+15x80'}
      - {series: 'distriqueue_oldest_job_age_seconds{job="dqorch",instance="a",queue="job.low",status="queued"}', values: '0+15x80'}
      - {series: 'distriqueue_oldest_job_age_seconds{job="dqorch",instance="a",queue="job.high",status="pending"}', values: '2x80'}
      - {series: 'distriqueue_raft_is_leader{job="dqorch",instance="a"}', values: '1x80'}
      - {series: 'distriqueue_oldest_job_age_seconds{job="dqorch",instance="f",queue="job.low",status="pending"}', values: '0+15x80'}
      - {series: 'distriqueue_raft_is_leader{job="dqorch",instance="f"}', values: '0x80'}
    alert_rule_test:
      - {eval_time: 4m, alertname: DqorchPublishBacklogGrowing, exp_alerts: []}
      - eval_time: 12m
        alertname: DqorchPublishBacklogGrowing
        exp_alerts: [{exp_labels: {severity: warning, job: dqorch, instance: a}}]
      - {eval_time: 8m, alertname: DqorchJobsStuckPending, exp_alerts: []}
      - eval_time: 12m
        alertname: DqorchJobsStuckPending
        exp_alerts: [{exp_labels: {severity: warning, job: dqorch, instance: a, queue: job.low}}]

  - name: failure rate over 25% with enough volume; low volume or low rate is fine
    interval: 15s
    input_series:
      - {series: 'distriqueue_job_transitions_total{job="dqorch",instance="a",from="running",to="failed"}', values: '0+3x120'}
      - {series: 'distriqueue_job_transitions_total{job="dqorch",instance="a",from="running",to="completed"}', values: '0+3x120'}
      - {series: 'distriqueue_job_transitions_total{job="dqorch",instance="a",from="running",to="pending"}', values: '0+50x120'}
    alert_rule_test:
      - {eval_time: 3m, alertname: DqorchJobFailureRateHigh, exp_alerts: []}
      - eval_time: 10m
        alertname: DqorchJobFailureRateHigh
        exp_alerts: [{exp_labels: {severity: warning, job: dqorch}}]
  - name: failures but few jobs
    interval: 15s
    input_series:
      - {series: 'distriqueue_job_transitions_total{job="dqorch",instance="a",from="running",to="failed"}', values: '0+0.01x120'}
    alert_rule_test:
      - {eval_time: 20m, alertname: DqorchJobFailureRateHigh, exp_alerts: []}
  - name: few failures among many jobs
    interval: 15s
    input_series:
      - {series: 'distriqueue_job_transitions_total{job="dqorch",instance="a",from="running",to="failed"}', values: '0+1x120'}
      - {series: 'distriqueue_job_transitions_total{job="dqorch",instance="a",from="running",to="completed"}', values: '0+9x120'}
    alert_rule_test:
      - {eval_time: 20m, alertname: DqorchJobFailureRateHigh, exp_alerts: []}

  - name: disk low now, and disk full within a day
    interval: 1m
    input_series:
      - {series: 'node_filesystem_avail_bytes{job="node",instance="a",mountpoint="/var/lib/dqorch",fstype="ext4"}', values: '5x60'}
      - {series: 'node_filesystem_size_bytes{job="node",instance="a",mountpoint="/var/lib/dqorch",fstype="ext4"}', values: '100x60'}
      - {series: 'node_filesystem_avail_bytes{job="node",instance="b",mountpoint="/var/lib/dqorch",fstype="ext4"}', values: '1000-4x60'}
      - {series: 'node_filesystem_size_bytes{job="node",instance="b",mountpoint="/var/lib/dqorch",fstype="ext4"}', values: '3000x60'}
      - {series: 'node_filesystem_avail_bytes{job="node",instance="c",mountpoint="/",fstype="ext4"}', values: '1x60'}
      - {series: 'node_filesystem_size_bytes{job="node",instance="c",mountpoint="/",fstype="ext4"}', values: '100x60'}
    alert_rule_test:
      - eval_time: 10m
        alertname: DqorchDataDirDiskLow
        exp_alerts:
          - exp_labels: {severity: warning, job: node, instance: a, mountpoint: /var/lib/dqorch, fstype: ext4}
      - {eval_time: 20m, alertname: DqorchDataDirDiskFullSoon, exp_alerts: []}
      - eval_time: 50m
        alertname: DqorchDataDirDiskFullSoon
        exp_alerts:
          - exp_labels: {severity: warning, job: node, instance: b, mountpoint: /var/lib/dqorch, fstype: ext4}
"""


def test_alerts_fire_as_intended_on_synthetic_series(tmp_path):
    promtool = tool("promtool")
    with open(ALERTS) as f:
        rules = yaml.safe_load(f)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    tests = yaml.safe_load(RULE_TESTS)
    tests["rule_files"] = ["alerts.yml"]
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]}
    defined = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert tested == defined, f"alerts without a rule test: {sorted(defined - tested)}"
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(tests))
    out = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


# (b) and (c): a real node ##################################################

@pytest.fixture
def node(make_node):
    """A node whose RabbitMQ port has no listener, with a little traffic behind it:
    jobs registered, one running, one completed, one failed, one left pending (it can
    never be published), and a worker heartbeat."""
    n = make_node(rabbit_port=free_port())
    c = n.client()
    for i, prio in enumerate(("low", "medium", "high", "low")):
        status, body = c.call("POST", "/api/jobs/register",
                              {"id": f"prom-{i}", "type": "t", "priority": prio,
                               "maxRetries": 0})
        assert status == 202, body
    status, body = c.call("POST", "/api/workers/heartbeat",
                          {"workerId": "prom-worker", "workerType": "python"})
    assert status == 200, body
    for job, reports in (("prom-0", ("running",)), ("prom-1", ("running", "completed")),
                         ("prom-2", ("running", "failed"))):
        for s in reports:
            status, body = c.call("POST", "/api/jobs/status",
                                  {"jobId": job, "status": s, "workerId": "prom-worker"})
            assert status == 200, body
    c.close()
    return n


def _exposed_series(text: str) -> tuple[set, dict]:
    """(series names declared by # TYPE lines, {sample name: label names seen})."""
    declared, samples = set(), {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            name, kind = m.groups()
            if kind == "histogram":
                declared |= {name + "_bucket", name + "_count", name + "_sum"}
            else:
                declared.add(name)
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', line.split("}")[0]))
            samples.setdefault(name, set()).update(labels)
    return declared, samples


def test_node_metrics_pass_promtool(node):
    promtool = tool("promtool")
    text = fetch(f"http://127.0.0.1:{node.metrics_port}/metrics")
    out = run(promtool, "check", "metrics", input=text)
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    # 0: clean; 3: lint problems only (listed); 1 or anything else: could not parse.
    assert out.returncode in (0, 3), "promtool check metrics failed:\n" + "\n".join(lines)
    unexpected = [ln for ln in lines if not any(a in ln for a in ACCEPTED_LINT)]
    assert not unexpected, "promtool check metrics:\n" + "\n".join(unexpected)

    # What the unit test believes the node exports is what it exports.
    declared, samples = _exposed_series(text)
    expected = exported_series()
    assert declared == set(expected), (
        f"exposed but unknown to exported_series() in tests/unit/helpers.py: "
        f"{sorted(declared - set(expected))}; "
        f"known but not exposed: {sorted(set(expected) - declared)}")
    for name, labels in samples.items():
        assert labels <= set(expected[name]), (name, labels, expected[name])
    # The traffic above shows up.
    for name in ("distriqueue_job_queue_wait_seconds_bucket", "distriqueue_job_run_seconds_bucket",
                 "distriqueue_job_transitions_total", "distriqueue_oldest_job_age_seconds"):
        assert name in samples, name


def _grafana_to_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, as Grafana would."""
    return (expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
            .replace("$__range", "5m").replace('"$job"', '"dqorch"')
            .replace('"$instance"', '".*"'))


def test_prometheus_scrapes_node_and_evaluates_rules_and_dashboard(node, tmp_path):
    tool("promtool")
    tool("prometheus")
    port = free_port()
    target = f"127.0.0.1:{node.metrics_port}"
    env = dict(os.environ, PROM_PORT=str(port), PROM_DIR=str(tmp_path / "prometheus"),
               PROM_TARGETS=target, PROM_INTERVAL="1s")
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(q: str) -> dict:
        return get_json(f"{api}/query?" + urllib.parse.urlencode({"query": q}))

    started = run("bash", SCRIPT, "start", env=env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pid = int((tmp_path / "prometheus" / "prometheus.pid").read_text())

        def leader_seen() -> bool:
            res = query("distriqueue_raft_is_leader")["data"]["result"]
            return any(r["metric"].get("instance") == target and r["value"][1] == "1"
                       for r in res)
        wait_until(leader_seen, 60, 0.2, "Prometheus to scrape distriqueue_raft_is_leader 1")

        # Every rule has been evaluated, and none failed.
        def rules_evaluated() -> bool:
            rules = [r for g in get_json(f"{api}/rules")["data"]["groups"]
                     for r in g["rules"]]
            bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
            assert not bad, f"alert rules failed to evaluate: {bad}"
            return len(rules) >= 8 and all(r["health"] == "ok" for r in rules)
        wait_until(rules_evaluated, 60, 0.2, "every alert rule evaluated")

        # Nothing listens on the node's RabbitMQ port: the broker alert goes pending
        # (it fires after 1m), with its annotations rendered; there is a leader.
        def broker_alert() -> dict | None:
            for a in get_json(f"{api}/alerts")["data"]["alerts"]:
                if a["labels"]["alertname"] == "DqorchBrokerDisconnected" \
                        and a["labels"].get("instance") == target:
                    return a
            return None
        wait_until(lambda: broker_alert() is not None, 60, 0.2, "DqorchBrokerDisconnected")
        alert = broker_alert()
        assert alert["state"] in ("pending", "firing"), alert
        assert target in alert["annotations"]["summary"], alert
        for text in alert["annotations"].values():
            assert "<no value>" not in text and "error expanding" not in text, alert
        firing = {a["labels"]["alertname"] for a in get_json(f"{api}/alerts")["data"]["alerts"]}
        assert "DqorchNoLeader" not in firing and "DqorchNodeDown" not in firing, firing

        # Every dashboard query is valid PromQL for this Prometheus...
        exprs = dashboard_expressions(load_dashboard())
        for where, expr in exprs:
            q = _grafana_to_promql(expr)
            if q.startswith("label_values("):
                continue          # a Grafana function, not PromQL
            body = query(q)
            assert body["status"] == "success", (where, q, body)

        # ...and the main panels have data from the node.
        by_title = {}
        for where, expr in exprs:
            by_title.setdefault(where.split(": ", 1)[1], []).append(_grafana_to_promql(expr))
        for title in ("Leader", "Jobs by status", "Status transitions", "Register latency",
                      "Queue wait by queue", "Run time by queue", "Oldest waiting job age",
                      "Commit latency", "In flight and backlogs", "Term"):
            assert title in by_title, title
            wait_until(lambda: all(query(q)["data"]["result"] for q in by_title[title]),
                       60, 0.2, f"data for dashboard panel {title!r}")
        statuses = {r["metric"]["status"]: float(r["value"][1])
                    for r in query(by_title["Jobs by status"][0])["data"]["result"]}
        assert {s: statuses.get(s) for s in ("pending", "running", "completed", "failed")} \
            == {"pending": 1, "running": 1, "completed": 1, "failed": 1}, statuses
        p99 = query(by_title["Register latency"][2])["data"]["result"]
        assert p99 and (math.isnan(float(p99[0]["value"][1])) or float(p99[0]["value"][1]) >= 0)
    finally:
        stopped = run("bash", SCRIPT, "stop", env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    if started.returncode == 0:
        assert not os.path.exists(f"/proc/{pid}") or \
            "prometheus" not in open(f"/proc/{pid}/cmdline").read(), "prometheus still runs"
