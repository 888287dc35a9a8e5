"""Every Prometheus metric of the node, and the metrics WSGI app (`/metrics`,
`/health`) served on `metrics_port`. Names start with distriqueue_; labels come from
closed sets (status, queue, outcome, route), never from job or worker ids.

Gauges for "how many now" are read from the live objects at scrape time (a custom
collector), so nothing has to keep them in step.
"""
from __future__ import annotations

import gevent.monkey
import prometheus_client.metrics
import prometheus_client.registry
import prometheus_client.values
from prometheus_client import (CollectorRegistry, Counter, Histogram, ProcessCollector,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# prometheus_client takes a lock in every inc() and observe(). Monkey-patched, that is
# gevent's lock, acquired in Python (12.6 acquires a register with publishing, one
# connection: cProfile). Its locked sections never yield and only the hub's thread
# touches a metric (the threadpool runs fsyncs, hard-state writes, unlinks and snapshot
# reads, none of which counts), so the C lock of the
# unpatched threading module does the same job, without a Python call.
_Lock = gevent.monkey.get_original("_thread", "allocate_lock")
for _module in (prometheus_client.values, prometheus_client.metrics,
                prometheus_client.registry):
    _module.Lock = _Lock

disable_created_metrics()     # no *_created series: they double the exposition
REGISTRY = CollectorRegistry(auto_describe=True)
# Memory, CPU, open files, start time (restarts show as a new start time).
ProcessCollector(namespace="distriqueue", registry=REGISTRY)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SLOW = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)

HTTP_REQUESTS = Counter("distriqueue_http_requests_total", "HTTP requests answered",
                        ["route", "code"], registry=REGISTRY)
HTTP_SECONDS = Histogram("distriqueue_http_request_seconds", "HTTP request latency",
                         ["route"], buckets=_FAST, registry=REGISTRY)
TRANSITIONS = Counter("distriqueue_job_transitions_total", "Job status changes",
                      ["from", "to"], registry=REGISTRY)
REGISTERS = Counter("distriqueue_job_registers_total", "Register commands by outcome",
                    ["outcome"], registry=REGISTRY)
REPORTS = Counter("distriqueue_job_reports_total", "Worker status reports by outcome",
                  ["outcome"], registry=REGISTRY)
PUBLISHED = Counter("distriqueue_publish_total", "Publishes to RabbitMQ by outcome",
                    ["kind", "outcome"], registry=REGISTRY)
PUBLISH_CONFIRM_SECONDS = Histogram("distriqueue_publish_confirm_seconds",
                                    "Job publish to broker confirm", buckets=_FAST,
                                    registry=REGISTRY)
COMMIT_SECONDS = Histogram("distriqueue_raft_commit_seconds",
                           "Log append + fsync of one batch", buckets=_FAST,
                           registry=REGISTRY)
COMMIT_ENTRIES = Histogram("distriqueue_raft_commit_batch_entries", "Entries per commit",
                           buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
                           registry=REGISTRY)
QUEUE_WAIT_SECONDS = Histogram("distriqueue_job_queue_wait_seconds",
                               "Register (or retry) to running, by queue", ["queue"],
                               buckets=_SLOW, registry=REGISTRY)
RUN_SECONDS = Histogram("distriqueue_job_run_seconds", "Running to terminal, by queue",
                        ["queue"], buckets=_SLOW, registry=REGISTRY)
SCHEDULED_LATE_SECONDS = Histogram(
    "distriqueue_scheduled_late_seconds", "A scheduled job's time to its release to "
    "pending (then published as any pending job)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600), registry=REGISTRY)
JOBS_FINISHED = Counter("distriqueue_jobs_finished_total",
                        "Jobs that ended completed or failed (for good), by type "
                        "(metrics_job_types of them; the rest as other)",
                        ["type", "status"], registry=REGISTRY)
TYPE_RUN_SECONDS = Histogram("distriqueue_job_type_run_seconds",
                             "Running to completed or failed, by type (as "
                             "distriqueue_jobs_finished_total)", ["type"],
                             buckets=_SLOW, registry=REGISTRY)


class TypeLabels:
    """A job type as a label value: itself for the first `n` types seen, "other" for
    the rest, so that a client inventing types cannot grow the series without bound.
    First seen, not most seen: a counter's series must not change name midway."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._known: dict = {}

    def __call__(self, type_: str) -> str:
        label = self._known.get(type_)
        if label is None:
            label = type_ if len(self._known) < self.n else "other"
            if label != "other" or len(self._known) < self.n + 10_000:
                self._known[type_] = label      # bounded too (a flood of types)
        return label


SCHEDULE_RUNS = Counter("distriqueue_schedule_runs_total",
                        "Schedule ticks by outcome: fired (a job registered), skipped_late "
                        "(older than catchup_window), skipped_overlap (overlap policy)",
                        ["outcome"], registry=REGISTRY)
SCHEDULE_LATE_SECONDS = Histogram(
    "distriqueue_schedule_fire_late_seconds", "A schedule's tick to its run's register",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=REGISTRY)
UNROUTABLE_EPISODES = Counter(
    "distriqueue_queue_unroutable_episodes_total", "Times a job queue began returning "
    "its jobs unroutable (deleted in RabbitMQ, or its binding), by queue", ["queue"],
    registry=REGISTRY)
HEARTBEATS = Counter("distriqueue_worker_heartbeats_total", "Worker heartbeats received",
                     registry=REGISTRY)
WORKERS_LOST = Counter("distriqueue_workers_unresponsive_total",
                       "Workers that became unresponsive", registry=REGISTRY)


_children: dict = {}


def child(metric, *labels):
    """metric.labels(*labels), cached: labels() costs more than the inc() itself and
    runs for every command on the request path."""
    key = (id(metric), labels)
    c = _children.get(key)
    if c is None:
        c = _children[key] = metric.labels(*labels)
    return c


def transitions(frm: str, to: str):
    return child(TRANSITIONS, frm, to)


# Read from the live objects at scrape time (app.Node._gauges gives the values): name
# -> (help, label names). A name ending in _total is a counter (kept by another object:
# the broker's stats), anything else a gauge.
LIVE = {
    "distriqueue_jobs": ("Jobs held, by status", ("status",)),
    "distriqueue_schedules": ("Schedules held, by state", ("state",)),
    "distriqueue_queue_jobs": ("Jobs held, by queue and status", ("queue", "status")),
    "distriqueue_workers": ("Workers known, by liveness", ("status",)),
    "distriqueue_clock_skew_seconds": (
        "This member's wall clock minus the cluster's time (the median of the members' "
        "clocks, clock.py)", ()),
    "distriqueue_broker_connected": (
        "1 when the RabbitMQ connection is up (the leader publishes on it; a follower "
        "holds it for when it leads); absent on a witness", ()),
    "distriqueue_broker_events_total": ("RabbitMQ connection and publish events",
                                        ("event",)),
    "distriqueue_broker_in_flight": ("Messages published, not yet confirmed", ()),
    "distriqueue_broker_oldest_unconfirmed_seconds": (
        "Age of the oldest publish not yet confirmed (0 when none)", ()),
    "distriqueue_queue_unroutable": (
        "1 while a job queue returns its jobs unroutable (deleted in RabbitMQ, or its "
        "binding): the node declares the queues again and retries with backoff",
        ("queue",)),
    "distriqueue_queue_paused": (
        "1 while publishing to a job queue is paused (POST /api/queues/{queue}/pause)",
        ("queue",)),
    "distriqueue_rabbitmq_messages_ready": (
        "RabbitMQ's ready messages in a job queue (a passive declare; the leader only)",
        ("queue",)),
    "distriqueue_rabbitmq_consumers": (
        "RabbitMQ's consumers of a job queue (a passive declare; the leader only)",
        ("queue",)),
    "distriqueue_publish_held": (
        "Pending jobs held back: by their type's limit (the leader's count) or by "
        "their queue's pause", ("reason",)),
    "distriqueue_publish_backlog": ("Jobs waiting to be published", ()),
    "distriqueue_outbox_backlog": ("Status events not yet published", ()),
    "distriqueue_jobs_evicted_total": ("Terminal jobs forgotten by retention", ()),
    "distriqueue_oldest_job_age_seconds": (
        "Age of the oldest pending or queued job, by queue", ("queue", "status")),
    "distriqueue_raft_term": ("Current Raft term", ()),
    "distriqueue_raft_commit_index": ("Raft commit index", ()),
    "distriqueue_raft_applied_index": ("Raft applied index", ()),
    "distriqueue_raft_is_leader": ("1 when this node is the leader", ()),
    "distriqueue_raft_role": ("1 for this node's Raft role", ("role",)),
    "distriqueue_raft_events_total": (
        "Elections this node started, leader changes it saw, and times a slow disk "
        "moved its fsyncs to a thread (raft/node.py Rule 5)", ("event",)),
    "distriqueue_raft_fsync_in_thread": (
        "1 while a slow disk has the commit loop's fsyncs in a thread (Rule 5)", ()),
    "distriqueue_raft_messages_dropped_total": (
        "Raft messages dropped, by reason (datagram checks, then decoding)", ("reason",)),
    "distriqueue_raft_fragments_total": (
        "Large Raft messages repaired (transport.py Rule 3): NACKs sent, fragments "
        "resent, NACKs for messages forgotten, partial messages given up", ("event",)),
    "distriqueue_raft_members": (
        "Members of the configuration in force, by place (voter, learner, witness)",
        ("member",)),
    "distriqueue_raft_config_index": (
        "Log index of the configuration in force (0: raft_peers, none in the log)", ()),
    "distriqueue_raft_replication_lag_entries": (
        "Leader only: entries each follower lacks", ("peer",)),
    "distriqueue_forwarded_requests_total": (
        "Writes this follower passed to the leader, by outcome", ("outcome",)),
    "distriqueue_log_writable": ("1 when the last log write succeeded", ()),
    "distriqueue_proposals_refused_total": (
        "Client writes refused with 503 because max_pending_proposals wait", ()),
    "distriqueue_listener_errors_total": (
        "Exceptions raised by metrics or dispatch hooks after a commit (contained)", ()),
    "distriqueue_raft_snapshots_total": ("Snapshots written or failed", ("outcome",)),
    "distriqueue_data_dir_free_bytes": ("Free bytes on data_dir's file system", ()),
    "distriqueue_publish_backoff_jobs": ("Jobs waiting out a retry backoff", ()),
    "distriqueue_events_dropped_total": (
        "Status events dropped unpublished (more than state.OUTBOX_MAX waited)", ()),
    "distriqueue_workers_dropped_total": (
        "Workers dropped from a full worker table (MAX_WORKERS), longest silent first", ()),
    "distriqueue_tls_handshake_failures_total": (
        "TLS handshakes on http_port that failed or timed out", ()),
}


class LiveGauges:
    """The LIVE metrics, their values read at scrape time by `read`."""

    def __init__(self, read) -> None:
        self.read = read      # () -> {name: value, or {labels tuple: value}}

    def collect(self):
        values = self.read()
        for name, (doc, labelnames) in LIVE.items():
            family = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            g = family(name, doc, labels=list(labelnames) or None)
            if labelnames:
                for labels, v in values[name].items():
                    g.add_metric(list(labels), v)
            elif values[name] is not None:        # None: no sample (not kept here)
                g.add_metric([], values[name])
            yield g


def install_gauges(read) -> None:
    REGISTRY.register(LiveGauges(read))


def wsgi_app(health):
    """/metrics: exposition; /health: `200 OK` or `503 UNAVAILABLE` from health()."""
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body = generate_latest(REGISTRY)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if path == "/health":
            ok = health()
            body = b"OK\n" if ok else b"UNAVAILABLE\n"
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        body = b"not found\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body)))])
        return [body]
    return app
