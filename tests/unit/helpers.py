"""The helpers the unit tests share, and the one place tests import them from.

What is here: T0, a fixed clock; the commands a leader commits, built the way api.py
and the leader's timers build them and stamped with `at_ms` (reg, rep, fail, cancel,
mark_queued, timeout); the invariants and views of a State (check, fingerprint,
events); ways to get a State (run, fresh, job_in, running_job); random logs for the
property tests (steps, a hypothesis strategy of templates, and build(), which turns a
template into a command); and what the node exports and what the Grafana dashboard
asks for (exported_series, gauge_metrics, load_dashboard, dashboard_expressions,
ALERTS), which the integration test_prometheus uses too; read_to_close, for the tests
that speak raw HTTP on a socket; fake_services (api.Services over FakeNode, a leader
whose propose applies at once to a real State), for the in-process API tests and
bench/hot_routes.py.

Test modules import these helpers only from this module, never from one another: a
helper kept in a test module makes that file's edits ripple into every test that
borrows it, and pytest collects it as part of that test module. A helper used by one
test module only stays in that module.
"""

import collections
import json
import os

from hypothesis import strategies as hs

from dqorch import api, config, jobs, metrics, parse
from dqorch import state as S
from dqorch.rates import Rates
from dqorch.workers import WorkerTable
from dqorch.jobs import QUEUES, STATUSES, TERMINAL, Job
from dqorch.state import State, apply

T0 = 1_700_000_000_000


# Commands, built the way api.py builds them #################################

def _no_new_id() -> str:
    raise AssertionError("every test register names its id")


def reg(id_, at_ms, *, publish=True, **body) -> dict:
    cmd = parse.register(dict(body, id=id_), new_id=_no_new_id, max_retries=3,
                         execution_timeout=300, max_job_bytes=60000, publish=publish)
    cmd["at_ms"] = at_ms
    return cmd


def rep(id_, status, at_ms, worker="w1", **body) -> dict:
    body = dict(body, jobId=id_, status=status)
    if worker is not None:
        body["workerId"] = worker
    cmd = parse.report(body, None, max_retries=3, execution_timeout=300)
    cmd["at_ms"] = at_ms
    return cmd


def fail(id_, at_ms, worker="w1", backoff_ms=0, **body) -> dict:
    """A failed report as api.py builds it, with the configured backoff."""
    body = dict(body, jobId=id_, status="failed", workerId=worker)
    cmd = parse.report(body, None, max_retries=3, execution_timeout=300,
                       retry_backoff_ms=backoff_ms)
    cmd["at_ms"] = at_ms
    return cmd


def cancel(id_, at_ms) -> dict:
    return dict(parse.cancel(id_), at_ms=at_ms)


def mark_queued(items, at_ms) -> dict:
    return {"op": "mark_queued", "items": [list(i) for i in items], "at_ms": at_ms}


# Commands the leader's timers propose (dispatch.Timers) ####################

def timeout(id_, attempt, at_ms, backoff_ms=0) -> dict:
    return {"op": "timeout", "id": id_, "attempt": attempt,
            "retry_backoff_ms": backoff_ms, "at_ms": at_ms}


# Invariants ################################################################

def check(st: State) -> None:
    """Every index and counter equals a recomputation from st.jobs."""
    all_jobs = list(st.jobs.values())
    seqs = sorted(j["seq"] for j in all_jobs)
    assert list(st.all) == seqs and len(st.all) == len(seqs)
    assert st.by_seq == {j["seq"]: j["id"] for j in all_jobs}
    assert all(s < st.next_seq for s in seqs)

    def seqs_where(pred):
        return sorted(j["seq"] for j in all_jobs if pred(j))

    for s in STATUSES:
        assert list(st.by_status[s]) == seqs_where(lambda j: j["status"] == s), s
    for q in QUEUES:
        assert list(st.by_queue[q]) == seqs_where(lambda j: j["queue"] == q), q
        for s in STATUSES:
            want = sum(1 for j in all_jobs if j["queue"] == q and j["status"] == s)
            assert st.queue_counts[q][s] == want, (q, s)
    types = {j["type"] for j in all_jobs}
    assert {t: list(ix) for t, ix in st.by_type.items()} == \
        {t: seqs_where(lambda j: j["type"] == t) for t in types}
    workers = {j["worker_id"] for j in all_jobs if j["worker_id"] is not None}
    assert {w: list(ix) for w, ix in st.by_worker.items()} == \
        {w: seqs_where(lambda j: j["worker_id"] == w) for w in workers}
    running = collections.Counter(j["worker_id"] for j in all_jobs
                                  if j["status"] == "running" and j["worker_id"] is not None)
    assert S.running_counts(st) == dict(running)
    pairs = collections.Counter((f, j[f], j["status"]) for j in all_jobs
                                for f in ("type", "worker_id") if j[f] is not None)
    assert {(f, v, s): n for (f, v), c in st.pair_counts.items() for s, n in c.items()} \
        == dict(pairs)
    assert S.counts_by_status(st) == {s: sum(1 for j in all_jobs if j["status"] == s)
                                      for s in STATUSES}
    for j in all_jobs:
        assert j["queue"] == jobs.queue_for(j["priority"])
        assert len(jobs.history_of(j)) <= S.HISTORY_MAX
    assert sorted(st.outbox) == list(range(st.outbox_done + 1, st.outbox_next))
    assert sorted(st.terminal_fifo) == seqs_where(lambda j: j["status"] in TERMINAL)
    assert list(st.due) == sorted(S.due_key(j["run_at"], j["seq"]) for j in all_jobs
                                  if j["status"] == "scheduled")
    waiters: dict = {}
    for j in sorted(all_jobs, key=lambda j: j["seq"]):
        if j["status"] == "waiting":
            for p in j["depends_on"]:
                waiters.setdefault(p, []).append(j["id"])
    assert {p: sorted(k) for p, k in st.waiters.items()} == \
        {p: sorted(k) for p, k in waiters.items()}
    assert st.woken == []


def fingerprint(st: State) -> str:
    return json.dumps(S.to_snapshot(st), default=Job.to_record)


def run(st: State, *cmds) -> dict:
    """Apply each command, check the indexes and that apply left the command alone;
    return the last outcome."""
    out = None
    for cmd in cmds:
        before = json.dumps(cmd)
        out = apply(st, cmd)
        assert json.dumps(cmd) == before, "apply mutated the command"
        check(st)
    return out


def fresh(*cmds) -> State:
    st = State()
    run(st, *cmds)
    return st


def job_in(status: str, id_="j1", **body) -> State:
    """A state holding one registered job in `status`."""
    st = fresh(reg(id_, T0, **body))
    if status == "scheduled":
        st = fresh(reg(id_, T0, delay=60, **body))
    if status == "waiting":
        st = fresh(reg("parent-of-" + id_, T0), reg(id_, T0, depends_on=["parent-of-" + id_],
                                                       **body))
    steps = {
        "waiting": [],
        "scheduled": [],
        "pending": [],
        "queued": [mark_queued([(id_, 0)], T0 + 1)],
        "running": [mark_queued([(id_, 0)], T0 + 1), rep(id_, "running", T0 + 2)],
        "completed": [rep(id_, "running", T0 + 2), rep(id_, "completed", T0 + 3,
                                                       result={"ok": True})],
        # each retry is a new attempt: the worker reports running again first
        "failed": [step for i in range(4) for step in (
            rep(id_, "running", T0 + 2 + 2 * i),
            rep(id_, "failed", T0 + 3 + 2 * i, errorMessage="boom"))],
        "cancelled": [cancel(id_, T0 + 2)],
    }[status]
    run(st, *steps)
    assert st.jobs[id_]["status"] == status
    return st


def running_job(id_="j1", worker="w1", at_ms=T0, **body) -> State:
    """One registered job, confirmed and running on `worker` (attempt 0)."""
    return fresh(reg(id_, at_ms, **body), mark_queued([(id_, 0)], at_ms + 1),
                 rep(id_, "running", at_ms + 2, worker=worker))


def events(st: State) -> list:
    return [st.outbox[k] for k in sorted(st.outbox)]


# Random logs for the property tests: steps and build() #####################
# A template is a plain tuple; build() turns it into the command a leader would
# commit, reading the state only where the leader does (attempts, outbox position).

IDS = ("a", "b", "c", "d")
WORKERS = ("w1", "w2", "w3")
CURRENT = "current"            # resolved to the job's attempt when the command is built

ids = hs.sampled_from(IDS)
workers = hs.sampled_from(("w1", "w1") + WORKERS + (None,))     # w1 thrice: jobs share it
attempts = hs.one_of(hs.just(CURRENT), hs.integers(0, 4))
backoffs = hs.sampled_from([0, 0, 1000, 250])

register_bodies = hs.fixed_dictionaries({"maxRetries": hs.integers(0, 2)}, optional={
    "type": hs.sampled_from(["a", "b"]),
    "priority": hs.sampled_from([1, 5, 10, 15, "HIGH"]),
    "payload": hs.sampled_from([{"n": 1}, {}, None]),
    "timeout": hs.sampled_from([1, 60]),
    "metadata": hs.just({"k": "v"}),
    "delay": hs.sampled_from([0, 0.5, 1, 60]),       # scheduled (dropped unpublished)
    "depends_on": hs.sampled_from([["a"], ["b"], ["c", "d"], ["zz"]]),   # waiting
    "on_parent_failure": hs.sampled_from(["cancel", "run"]),
})
report_extras = hs.fixed_dictionaries({}, optional={
    "result": hs.sampled_from([{"ok": 1}, [1], "s"]),
    "errorMessage": hs.sampled_from(["boom", "oom"]),
    "progress": hs.integers(0, 100),
})
statuses = hs.sampled_from(["running", "failed", "completed", "running", "running",
                            "started", "error", "done", "cancelled", "failed"])

TEMPLATES = {
    "register": hs.tuples(hs.just("register"), ids, register_bodies, hs.booleans()),
    "report": hs.tuples(hs.just("report"), ids, statuses, workers, report_extras, backoffs),
    "cancel": hs.tuples(hs.just("cancel"), ids),
    "timeout": hs.tuples(hs.just("timeout"), ids, attempts, backoffs),
    "expire_worker": hs.tuples(hs.just("expire_worker"), hs.sampled_from([0, 0, 1, 3]),
                               backoffs),
    "mark_queued": hs.tuples(hs.just("mark_queued"),
                             hs.lists(hs.tuples(ids, attempts), min_size=1, max_size=3)),
    "mark_published": hs.tuples(hs.just("mark_published"), hs.integers(-1, 3)),
    "noop": hs.just(("noop",)),
    "release": hs.tuples(hs.just("release"), hs.sampled_from([0, 1, 10])),
    "evict": hs.tuples(hs.just("evict"), hs.lists(hs.sampled_from(IDS + ("zz",)),
                                                  min_size=1, max_size=3)),
}
# Repeats weight the ops: most of a real log is registers and reports. noop comes
# first because hypothesis shrinks towards the first choice: a shrunk failing log is
# its few real commands padded with noops up to min_size.
OPS = ["noop"] + ["register"] * 3 + ["report"] * 6 + ["expire_worker"] * 2 + \
    ["mark_queued"] * 2 + ["cancel", "timeout", "mark_published", "evict", "release"]
templates = hs.sampled_from(OPS).flatmap(TEMPLATES.__getitem__)
steps = hs.lists(hs.tuples(hs.sampled_from([0, 0, 1, 700, 60_000]), templates),
                 min_size=25, max_size=100)


def _attempt(st: State, id_: str, attempt) -> int:
    if attempt != CURRENT:
        return attempt
    job = st.jobs.get(id_)
    return job["attempt"] if job is not None else 0


def build(st: State, template: tuple, at_ms: int) -> dict:
    op = template[0]
    if op == "register":
        _, id_, body, publish = template
        if not publish:
            body = {k: v for k, v in body.items() if k not in ("delay", "depends_on")}
        if id_ in body.get("depends_on", ()):
            body = dict(body, depends_on=[p for p in IDS if p != id_][:1])
        return reg(id_, at_ms, publish=publish, **body)
    if op == "report":
        _, id_, status, worker, extras, backoff_ms = template
        body = dict(extras, jobId=id_, status=status)
        if worker is not None:
            body["workerId"] = worker
        cmd = parse.report(body, None, max_retries=2, execution_timeout=300,
                           retry_backoff_ms=backoff_ms)
    elif op == "cancel":
        cmd = parse.cancel(template[1])
    elif op == "timeout":
        _, id_, attempt, backoff_ms = template
        cmd = {"op": "timeout", "id": id_, "attempt": _attempt(st, id_, attempt),
               "retry_backoff_ms": backoff_ms}
    elif op == "expire_worker":
        # The leader expires workers that run something; busiest first here, so that
        # several jobs end at once. Index 3 may name a worker that runs nothing.
        busy = sorted(st.running_on, key=lambda w: (-len(st.running_on[w]), w))
        names = busy + [w for w in WORKERS if w not in busy]
        cmd = {"op": "expire_worker", "worker_id": names[template[1] % len(names)],
               "retry_backoff_ms": template[2]}
    elif op == "mark_queued":
        cmd = {"op": "mark_queued",
               "items": [[id_, _attempt(st, id_, a)] for id_, a in template[1]]}
    elif op == "mark_published":
        cmd = {"op": "mark_published", "upto": st.outbox_done + template[1]}
    elif op == "evict":
        cmd = {"op": "evict", "ids": list(template[1])}
    elif op == "release":
        # What the leader sees due (up to n of them), or, with n 0, every scheduled
        # job: a release of one not yet due must change nothing.
        n = template[1]
        cmd = {"op": "release", "ids": S.due_ids(st, at_ms, n) if n else
               [st.by_seq[seq] for seq in st.by_status["scheduled"]]}
    else:
        cmd = {"op": "noop"}
    cmd["at_ms"] = at_ms
    return cmd


# What the node exports, and what the Grafana dashboard asks for ############

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(REPO, "docs", "grafana", "dqorch.json")
ALERTS = os.path.join(REPO, "docs", "prometheus", "alerts.yml")


def _static_metrics() -> dict:
    """{family name: (type, labelnames)} of the metrics registered at import time.
    LiveGauges is left out: it is only registered by a starting node, and its names
    come from gauge_metrics()."""
    out = {}
    collectors = list(metrics.REGISTRY._collector_to_names)
    assert collectors, "dqorch.metrics.REGISTRY has no collectors: did its API change?"
    for c in collectors:
        if isinstance(c, metrics.LiveGauges):
            continue
        labelnames = tuple(getattr(c, "_labelnames", ()))
        # ProcessCollector has no describe(); its collect() only reads /proc.
        families = c.describe() if hasattr(c, "describe") else c.collect()
        for family in families:
            out[family.name] = (family.type, labelnames)
    return out


def gauge_metrics() -> dict:
    """{name: ("gauge" or "counter", labelnames)} of the live metrics (metrics.LIVE)."""
    # LiveGauges: a name ending in _total is a counter, anything else a gauge.
    return {name: ("counter" if name.endswith("_total") else "gauge", tuple(labels))
            for name, (_help, labels) in metrics.LIVE.items()}


def exported_series() -> dict:
    """{series name as it appears in /metrics: labelnames}."""
    out = {}
    for name, (kind, labels) in _static_metrics().items():
        if kind == "counter":
            out[name + "_total"] = labels
        elif kind == "histogram":
            out[name + "_bucket"] = labels + ("le",)
            out[name + "_count"] = labels
            out[name + "_sum"] = labels
        else:
            out[name] = labels
    for name, (kind, labels) in gauge_metrics().items():
        out[name] = labels        # CounterMetricFamily("x_total") is exposed as x_total
    return out


def dashboard_expressions(dash: dict) -> list:
    """[(where, expression)]: every target expr, annotation expr and variable query."""
    out = []

    def walk(node, where):
        if isinstance(node, dict):
            here = node.get("title") or node.get("name") or where
            for k, v in node.items():
                if k == "expr" and isinstance(v, str):
                    out.append((f"dashboard: {here}", v))
                elif k == "query" and node.get("type") == "query":
                    out.append((f"dashboard variable: {here}",
                                v["query"] if isinstance(v, dict) else v))
                else:
                    walk(v, here)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    walk(dash, "dashboard")
    return out


def load_dashboard() -> dict:
    with open(DASHBOARD) as f:
        return json.load(f)


def read_to_close(sock) -> bytes:
    """Everything sock receives until the peer closes it; b"<open>" appended when the
    socket's timeout passed first (the raw-HTTP tests: a server that keeps a connection
    it should close)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except TimeoutError:
        out += b"<open>"
    return out


# The API's collaborators, faked: no log, no sockets, no broker ###############

class FakeNode:
    """The Raft node as the API sees it: a leader whose propose applies at once."""

    def __init__(self) -> None:
        self.state = S.State()
        self.role, self.leader, self.applied_index = "leader", "n1", 0
        self.proposed: list = []
        self.fail: Exception | None = None     # raised by the next propose

    def propose(self, cmd: dict) -> dict:
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        cmd = dict(cmd, at_ms=T0 + len(self.proposed))
        self.proposed.append(cmd)
        self.applied_index += 1
        return S.apply(self.state, cmd)

    def propose_many(self, cmds: list) -> list:
        return [self.propose(c) for c in cmds]

    def status(self) -> dict:
        return {"role": self.role, "term": 1, "leader": self.leader,
                "commit_index": self.applied_index, "applied_index": self.applied_index,
                "last_log_index": self.applied_index}

    def has_quorum_contact(self, lease: bool = False) -> bool:
        return True


def fake_services() -> api.Services:
    node = FakeNode()
    ids = iter(range(1, 1000))

    def now_ms() -> int:
        return T0 + 5_000

    return api.Services(
        cfg=config.Config(), raft=node, state=lambda: node.state,
        workers=WorkerTable(30, now_ms), forwarder=None, rates=Rates(now_ms),
        health=lambda: (200, {"status": "healthy"}),
        cluster_status=lambda: {"node": "n1", "leader": "n1", "term": 1, "members": []},
        broker_status=lambda: {"connected": True}, broker_down_since=lambda: None,
        why_returned=lambda job: None, dispatch_backlog=dict,
        new_id=lambda: "gen-%d" % next(ids), now_ms=now_ms)
