"""A node whose state comes from a snapshot must take every command a node that built
its state from the log takes, and must start again afterwards.

Issue: "a node that took a snapshot can crash and never start again". Each test runs a
real node with snapshot_entries: 1000 (the minimum), brings jobs to every status,
registers enough padding jobs that a snapshot-*.json is written, stops the node
(SIGTERM) and starts it again on the same data_dir, so that its state is loaded from
that snapshot. Then it drives the commands through the HTTP API against the jobs that
came from the snapshot, and restarts once more to check that the node starts and holds
what it held.

Fixture jobs are HIGH priority (job.high), padding jobs LOW (job.low), so that the
messages of the fixture jobs can be read without the padding's. Waiting is polling
with a deadline; no test asserts how long anything took.
"""
from __future__ import annotations

import glob
import json
import os
import re
import time

import gevent
import gevent.pool
import pytest

from dqorch.jobs import ROW

from .conftest import SHARED_PORT, Client, all_jobs, drain, wait_until

SNAPSHOT_ENTRIES = 1000          # the minimum config allows
PADDING = 1100                   # registers after the fixture jobs: > SNAPSHOT_ENTRIES
HEARTBEAT_TIMEOUT_S = 1.5        # worker_heartbeat_timeout_s
BACKOFF_S = 0.2                  # job_retry_backoff_s
# execution_timeout of the jobs the node must time out after the restart. It must be
# longer than the rest of the first run (fixture reports, padding, snapshot, stop,
# start); the test checks that it was (no "job timed out" before the restart) and
# stops with a clear message if the machine was too slow.
SHORT_TIMEOUT_S = 12
LONG_TIMEOUT_S = 3600            # jobs that must stay running across every restart


# Helpers ###################################################################

def ok(resp, status=200):
    code, body = resp
    assert code == status, f"expected {status}, got {code} {body}"
    return body


def get(c, id_):
    return ok(c.call("GET", f"/api/jobs/{id_}"))


def reasons(job) -> str:
    return " | ".join(h["reason"] or "" for h in job["history"])


def register(c, id_, **fields):
    body = ok(c.call("POST", "/api/jobs/register",
                     dict({"id": id_, "type": "snap", "priority": "HIGH"}, **fields)), 202)
    assert body == {"status": "accepted", "job_id": id_}


def report(c, id_, status, worker, **extra):
    return ok(c.call("POST", "/api/jobs/status",
                     dict({"jobId": id_, "status": status, "workerId": worker}, **extra)))


def heartbeat(c, worker):
    assert ok(c.call("POST", "/api/workers/heartbeat",
                     {"workerId": worker, "workerType": "python", "capacity": 4})) \
        == {"status": "acknowledged"}


def wait_job(c, id_, pred, what, timeout_s=30):
    wait_until(lambda: pred(get(c, id_)), timeout_s, 0.05, f"{id_}: {what}")
    return get(c, id_)


def wait_status(c, id_, *statuses, timeout_s=30):
    return wait_job(c, id_, lambda j: j["status"] in statuses, f"status in {statuses}",
                    timeout_s)


def wait_quiet(c, timeout_s=60):
    """No job waits for RabbitMQ (every pending job confirmed and marked queued)."""
    wait_until(lambda: ok(c.call("GET", "/api/jobs?status=pending&limit=1"))["count"] == 0,
               timeout_s, 0.05, "no pending jobs")


def pad(node, n=PADDING, prefix="pad"):
    """Register n LOW jobs from 10 keep-alive connections: > SNAPSHOT_ENTRIES commands."""
    ids = [f"{prefix}-{i:05d}" for i in range(n)]

    def client(chunk):
        c = node.client()
        try:
            for id_ in chunk:
                ok(c.call("POST", "/api/jobs/register",
                          {"id": id_, "type": "padding", "priority": "LOW"}), 202)
        finally:
            c.close()
    pool = gevent.pool.Pool(10)
    for i in range(10):
        pool.spawn(client, ids[i::10])
    pool.join(raise_error=True)
    return ids


def log_text(node) -> str:
    return node.log_path.read_text(errors="replace")


def log_since(node, offset: int) -> str:
    return log_text(node)[offset:]


def snapshots(node) -> list:
    return sorted(glob.glob(os.path.join(node.cfg["data_dir"], "snapshot-*.json")))


def snapshot_jobs(path) -> dict:
    """{id: job} from a snapshot file, read here without the node's loader: lines
    "<crc32 hex> <json>", a head ({"format": 4, ..., "jobs": n}), blocks (lists of
    job rows: the values of jobs.ROW, then a dict of the job's other fields or 0),
    a trailer ({"end": n, ...}). Only the JSON is read; the node checks the rest."""
    head, out = None, {}
    with open(path, "rb") as f:
        for raw in f:
            obj = json.loads(raw.split(b" ", 1)[1])
            if head is None:
                head = obj
                assert head["format"] == 4, head
            elif isinstance(obj, list):
                for row in obj:
                    job = dict(zip(ROW, row[:len(ROW)]), **(row[len(ROW)] or {})) \
                        if isinstance(row, list) else row
                    out[job["id"]] = job
    assert head is not None and len(out) == head["jobs"], \
        "the snapshot holds as many jobs as its head says"
    return out


def wait_snapshot(node, offset: int) -> dict:
    """A snapshot file is written (its log line too); its jobs."""
    wait_until(lambda: snapshots(node) and "snapshot written" in log_since(node, offset),
               60, 0.05, "a snapshot-*.json and the log line 'snapshot written'\n"
               + node.log_tail())
    return snapshot_jobs(snapshots(node)[-1])


def restart(node) -> int:
    """SIGTERM (exit 0), start on the same data_dir; the log offset of the new run."""
    assert node.stop() == 0, node.log_tail()
    offset = len(log_text(node))
    node.start()
    node.wait_healthy()
    return offset


def restart_from_snapshot(node) -> int:
    offset = restart(node)
    started = log_since(node, offset)
    assert re.search(r"loaded snapshot index=\d+ jobs=\d+", started), \
        "the restarted node loads its state from the snapshot\n" + node.log_tail()
    return offset


def metric(node, name) -> float:
    code, text = Client(node.metrics_port).call("GET", "/metrics")
    assert code == 200
    text = text.decode() if isinstance(text, bytes) else json.dumps(text)
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def poll(predicate, timeout_s, describe):
    """wait_until, but the failure says what was seen last (describe())."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {describe()}")
        gevent.sleep(0.1)


def full_jobs(c, ids) -> dict:
    """GET of each job without `why` (which reads the clock)."""
    out = {}
    for id_ in ids:
        j = get(c, id_)
        j.pop("why")
        out[id_] = j
    return out


def alive_register(node, c, id_, **fields):
    """Register that names the node's death (and its log) when the node dies on it."""
    try:
        code, body = c.call("POST", "/api/jobs/register",
                            dict({"id": id_, "type": "snap", "priority": "HIGH"}, **fields))
    except OSError as e:
        code, body = None, repr(e)
    gevent.sleep(0)
    if node.proc.poll() is not None or code != 202:
        try:
            node.proc.wait(5)
        except Exception:
            pass
        pytest.fail(f"register of {id_} (loaded from the snapshot) answered {code} {body}; "
                    f"node exit code {node.proc.poll()}\n{node.log_tail(25)}")
    assert body == {"status": "accepted", "job_id": id_}


@pytest.fixture
def node_cfg():
    return dict(snapshot_entries=SNAPSHOT_ENTRIES,
                worker_heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
                job_retry_backoff_s=BACKOFF_S,
                job_execution_timeout_s=LONG_TIMEOUT_S)


# Every command on jobs loaded from a snapshot ###################################

FIXTURE = {
    # id: status in the snapshot
    "L-queued-cancel": "queued",
    "L-queued-run": "queued",
    "L-queued-idem": "queued",
    "L-run-complete": "running",
    "L-run-fail": "running",
    "L-run-fail0": "running",
    "L-run-cancel": "running",
    "L-run-timeout": "running",
    "L-run-timeout0": "running",
    "L-run-hb": "running",
    "L-run-hb0": "running",
    "L-ghost": "queued",            # its worker went silent before the snapshot: retried
    "L-completed": "completed",
    "L-failed": "failed",
    "L-cancelled": "cancelled",
    "L-done-late": "completed",
}


def build_fixture(node, c):
    # A worker that sends heartbeats, takes a job and stops: the job is retried before
    # the snapshot, which then holds it queued with its abandoned attempt's worker.
    heartbeat(c, "ghost")
    register(c, "L-ghost", max_retries=2)
    report(c, "L-ghost", "running", "ghost")
    heartbeat(c, "ghost")
    j = wait_job(c, "L-ghost", lambda j: j["status"] == "queued" and j["retry_count"] == 1,
                 "retried after ghost went silent")
    assert "ghost stopped sending heartbeats" in reasons(j)

    for id_ in ("L-queued-cancel", "L-queued-run", "L-queued-idem"):
        register(c, id_)
    # Running on workers that have sent no heartbeat: never declared dead, and with a
    # long execution_timeout, so they run until the test reports on them.
    for id_, extra in (("L-run-complete", {}), ("L-run-fail", {"max_retries": 2}),
                       ("L-run-fail0", {"max_retries": 0}), ("L-run-cancel", {})):
        register(c, id_, **extra)
        assert report(c, id_, "running", "w-a") == {"status": "updated"}
    register(c, "L-run-hb", max_retries=1)
    register(c, "L-run-hb0", max_retries=0)
    for id_ in ("L-run-hb", "L-run-hb0"):
        report(c, id_, "running", "w-hb")
    # Finished before the snapshot.
    for id_ in ("L-completed", "L-done-late"):
        register(c, id_)
        report(c, id_, "running", "w-done")
        report(c, id_, "completed", "w-done", result={"n": id_})
    register(c, "L-failed", max_retries=0)
    report(c, "L-failed", "running", "w-done")
    report(c, "L-failed", "failed", "w-done", errorMessage="disk full")
    register(c, "L-cancelled")
    ok(c.call("POST", "/api/jobs/L-cancelled/cancel"))
    # Last, as its execution timeout runs from now.
    register(c, "L-run-timeout", max_retries=1, timeout=SHORT_TIMEOUT_S)
    register(c, "L-run-timeout0", max_retries=0, timeout=SHORT_TIMEOUT_S)
    for id_ in ("L-run-timeout", "L-run-timeout0"):
        report(c, id_, "running", "w-t")
    wait_quiet(c)
    got = {id_: get(c, id_)["status"] for id_ in FIXTURE}
    assert got == FIXTURE


def test_every_command_on_jobs_loaded_from_a_snapshot(make_node, clean_queues, node_cfg):
    node = make_node(**node_cfg).wait_healthy()
    c = node.client()
    build_fixture(node, c)
    pad(node)
    snap = wait_snapshot(node, 0)
    assert {id_: snap[id_]["status"] for id_ in FIXTURE} == FIXTURE, \
        "the snapshot holds every fixture job in its status"
    # owes attempt 1's end; it stopped heartbeating (state.OWED_IF_ALIVE)
    assert snap["L-ghost"]["past"] == [["ghost", 0, 2, None]]
    wait_quiet(c)
    c.close()
    offset = restart_from_snapshot(node)
    c = node.client()
    assert "job timed out" not in log_text(node)[:offset], \
        f"setup: the first run outlasted SHORT_TIMEOUT_S={SHORT_TIMEOUT_S}; raise it"
    assert {id_: get(c, id_)["status"] for id_ in FIXTURE} == FIXTURE, \
        "the restarted node holds the snapshot's jobs"
    drain(SHARED_PORT, "job.high")

    # A new job.
    register(c, "N-new")
    assert wait_status(c, "N-new", "queued")["retry_count"] == 0

    # Register again a loaded job that is not finished: nothing changes.
    before = get(c, "L-queued-idem")
    register(c, "L-queued-idem")
    after = get(c, "L-queued-idem")
    assert after["status"] == "queued" and after["history"] == before["history"]

    # Status reports of each status on loaded jobs.
    assert report(c, "L-queued-run", "running", "w-new") == {"status": "updated"}
    j = get(c, "L-queued-run")
    assert j["status"] == "running" and j["worker_id"] == "w-new"
    assert j["why"].startswith("running on w-new for ")

    assert report(c, "L-run-complete", "completed", "w-a", result={"ok": True}) \
        == {"status": "updated"}
    j = get(c, "L-run-complete")
    assert j["status"] == "completed" and j["result"] == {"ok": True}
    assert j["completed_at"] is not None and j["why"].startswith("completed by w-a")

    assert report(c, "L-run-fail", "failed", "w-a", errorMessage="boom") \
        == {"status": "updated"}
    j = get(c, "L-run-fail")
    assert j["status"] in ("pending", "queued") and j["retry_count"] == 1
    assert j["worker_id"] is None and j["error_message"] == "boom"
    assert "failed: boom; retry 1 of 2" in reasons(j)
    wait_status(c, "L-run-fail", "queued")         # published again, after the backoff

    assert report(c, "L-run-fail0", "failed", "w-a", errorMessage="bad input") \
        == {"status": "updated"}
    j = get(c, "L-run-fail0")
    assert j["status"] == "failed" and j["why"] == "failed after 1 attempt: bad input"

    assert report(c, "L-run-cancel", "cancelled", "w-a") == {"status": "updated"}
    j = get(c, "L-run-cancel")
    assert j["status"] == "cancelled" and j["completed_at"] is not None

    # A late report on a job finished before the snapshot; cancel of one: 409.
    assert report(c, "L-done-late", "failed", "w-done") \
        == {"status": "ignored", "reason": "terminal"}
    code, body = c.call("POST", "/api/jobs/L-done-late/cancel")
    assert code == 409 and body["error"] == "conflict" \
        and body["message"] == "job is already completed"
    assert get(c, "L-done-late")["status"] == "completed"

    # The loaded abandoned attempt: its worker's late word is noted and ignored.
    assert report(c, "L-ghost", "completed", "ghost") \
        == {"status": "ignored", "reason": "stale_attempt"}
    j = get(c, "L-ghost")
    assert j["status"] == "queued" \
        and j["history"][-1]["reason"] == "attempt 1 completed late on ghost"

    # Cancel a loaded queued job; a later report on it is discarded.
    assert ok(c.call("POST", "/api/jobs/L-queued-cancel/cancel")) \
        == {"status": "cancelled", "job_id": "L-queued-cancel"}
    assert get(c, "L-queued-cancel")["why"].startswith("cancelled by api")
    assert report(c, "L-queued-cancel", "completed", "w-x") \
        == {"status": "ignored", "reason": "terminal"}
    assert ok(c.call("POST", "/api/jobs/nope-never-registered/cancel"), 404)["error"] \
        == "not_found"

    # Execution timeout of loaded running jobs: retried, or failed without retries.
    j = wait_job(c, "L-run-timeout", lambda j: j["status"] != "running", "timed out",
                 timeout_s=SHORT_TIMEOUT_S + 30)
    assert j["status"] in ("pending", "queued") and j["retry_count"] == 1, j
    assert j["error_message"] == f"timed out after {SHORT_TIMEOUT_S} s on w-t"
    assert f"timed out after {SHORT_TIMEOUT_S} s on w-t; retry 1 of 1" in reasons(j)
    j = wait_status(c, "L-run-timeout0", "failed", timeout_s=30)
    assert j["error_message"].startswith(f"timed out after {SHORT_TIMEOUT_S} s")
    assert j["why"].startswith("failed after 1 attempt: timed out")

    # A worker that sends a heartbeat (to this run) and then stops: its loaded running
    # jobs are given up: retried, or failed without retries.
    heartbeat(c, "w-hb")
    j = wait_job(c, "L-run-hb", lambda j: j["status"] != "running",
                 "given up after w-hb went silent")
    assert j["status"] in ("pending", "queued") and j["retry_count"] == 1
    assert "worker w-hb stopped sending heartbeats; retry 1 of 1" in reasons(j)
    j = wait_status(c, "L-run-hb0", "failed")
    assert j["error_message"] == "worker w-hb stopped sending heartbeats"
    workers = {w["worker_id"]: w for w in ok(c.call("GET", "/api/workers"))["workers"]}
    assert workers["w-hb"]["status"] == "unresponsive" and workers["w-hb"]["running_jobs"] == 0

    # Register again jobs that were finished in the snapshot (the gateway's retry):
    # each goes back to pending with a new attempt and is published again.
    for id_, was in (("L-completed", "completed"), ("L-failed", "failed"),
                     ("L-cancelled", "cancelled")):
        assert get(c, id_)["status"] == was
        alive_register(node, c, id_, max_retries=1)
        j = wait_status(c, id_, "queued")
        assert j["retry_count"] == 0 and j["max_retries"] == 1
        assert j["result"] is None and j["completed_at"] is None and j["worker_id"] is None
        assert j["history"][-2]["status"] == "pending" \
            and j["history"][-2]["reason"] == "registered again"
        assert [h["status"] for h in j["history"]].count(was) == 1
    published = {}
    wait_until(lambda: published.update(
        (p.message_id, (p.headers["x-dq-attempt"], b)) for p, b in drain(SHARED_PORT, "job.high"))
        or {"L-completed", "L-failed", "L-cancelled"} <= set(published), 30, 0.1,
        "the jobs registered again are published again")
    for id_ in ("L-completed", "L-failed", "L-cancelled"):
        attempt, body = published[id_]
        assert attempt == 0 and body["status"] == "pending" and body["result"] is None
    # A new attempt runs like any other.
    report(c, "L-completed", "running", "w-again")
    report(c, "L-completed", "completed", "w-again", result={"again": True})
    j = get(c, "L-completed")
    assert j["status"] == "completed" and j["result"] == {"again": True}

    # Restart once more: the node starts, and holds what it held.
    wait_quiet(c)
    assert get(c, "L-run-fail")["status"] == "queued"
    ids = list(FIXTURE) + ["N-new"]
    before_list = all_jobs(c)
    before_full = full_jobs(c, ids)
    c.close()
    restart(node)
    c = node.client()
    assert all_jobs(c) == before_list
    assert full_jobs(c, ids) == before_full
    c.close()


# Retention of jobs loaded from a snapshot ######################################

TERMINAL_FIXTURE = ("E-completed-1", "E-failed", "E-cancelled-api", "E-completed-2",
                    "E-cancelled-report")
NEW_AFTER_RESTART = 10


def test_retention_evicts_jobs_that_were_terminal_at_the_snapshot(make_node, clean_queues,
                                                                    node_cfg):
    # Held before the restart: the terminal jobs, one live job and the padding. With
    # NEW_AFTER_RESTART more registered after the restart, 5 jobs too many are held:
    # the oldest finished ones, the 5 loaded from the snapshot, must go.
    held = len(TERMINAL_FIXTURE) + 1 + PADDING
    node = make_node(job_retention_max=held + NEW_AFTER_RESTART - len(TERMINAL_FIXTURE),
                     **node_cfg).wait_healthy()
    c = node.client()
    for id_ in TERMINAL_FIXTURE + ("E-live",):
        register(c, id_, max_retries=0)
    for id_ in ("E-completed-1", "E-completed-2"):
        report(c, id_, "completed", "w-e")
    report(c, "E-failed", "failed", "w-e", errorMessage="boom")
    ok(c.call("POST", "/api/jobs/E-cancelled-api/cancel"))
    report(c, "E-cancelled-report", "cancelled", "w-e")
    pad(node)
    snap = wait_snapshot(node, 0)
    assert {id_: snap[id_]["status"] for id_ in TERMINAL_FIXTURE} == {
        "E-completed-1": "completed", "E-failed": "failed", "E-cancelled-api": "cancelled",
        "E-completed-2": "completed", "E-cancelled-report": "cancelled"}
    wait_quiet(c)
    assert ok(c.call("GET", "/api/jobs?limit=1"))["count"] == held     # nothing evicted yet
    assert metric(node, "distriqueue_jobs_evicted_total") == 0
    c.close()
    restart_from_snapshot(node)
    c = node.client()
    assert ok(c.call("GET", "/api/jobs?limit=1"))["count"] == held

    # Past job_retention_max: the 5 oldest finished jobs are the loaded ones. One job
    # that finishes after the restart is younger and stays.
    for i in range(NEW_AFTER_RESTART):
        register(c, f"E-new-{i}")
    report(c, "E-new-0", "completed", "w-e")

    limit = held + NEW_AFTER_RESTART - len(TERMINAL_FIXTURE)

    def seen():
        return {"held": ok(c.call("GET", "/api/jobs?limit=1"))["count"],
                "job_retention_max": limit,
                "evicted_total": metric(node, "distriqueue_jobs_evicted_total"),
                "GET": {id_: c.call("GET", f"/api/jobs/{id_}")[0]
                        for id_ in TERMINAL_FIXTURE + ("E-new-0",)}}
    poll(lambda: seen()["held"] <= limit, 15,
         lambda: f"at most job_retention_max jobs held; now {seen()}")
    assert seen() == {"held": limit, "job_retention_max": limit,
                      "evicted_total": len(TERMINAL_FIXTURE),
                      "GET": dict({id_: 404 for id_ in TERMINAL_FIXTURE}, **{"E-new-0": 200})}, \
        "the loaded terminal jobs are evicted (404), the younger E-new-0 is kept"
    assert get(c, "E-live")["status"] == "queued"
    assert ok(c.call("GET", "/api/metrics"))["jobs"]["cancelled"] == 0

    # Restart once more: the same jobs, the same eviction count.
    wait_quiet(c)
    before = all_jobs(c)
    c.close()
    restart(node)
    c = node.client()
    assert all_jobs(c) == before
    assert metric(node, "distriqueue_jobs_evicted_total") == len(TERMINAL_FIXTURE)
    c.close()


# The crash loop ##############################################################

def test_node_starts_again_after_a_loaded_completed_job_is_registered_again(
        make_node, clean_queues, node_cfg):
    """The gateway's retry of a job completed before the snapshot. Whatever happens to
    the node that takes it, the command is in the log: every later start replays it,
    and the node must start."""
    node = make_node(**node_cfg).wait_healthy()
    c = node.client()
    register(c, "R-done")
    report(c, "R-done", "running", "w-r")
    report(c, "R-done", "completed", "w-r", result={"first": True})
    pad(node)
    snap = wait_snapshot(node, 0)
    assert snap["R-done"]["status"] == "completed"
    wait_quiet(c)
    c.close()
    offset = restart_from_snapshot(node)
    c = node.client()
    try:
        code, _ = c.call("POST", "/api/jobs/register",
                         {"id": "R-done", "type": "snap", "priority": "HIGH"})
    except OSError:
        code = None                          # the node died on it: judged below
    c.close()
    died = log_since(node, offset)
    # Stop it if it lives (exit 0 expected then), and start it again.
    rc = node.stop()
    assert node.proc.returncode is not None
    start_offset = len(log_text(node))
    node.start(wait=False)

    def started():
        if node.proc.poll() is not None:
            return True
        try:
            return node.health()[0] == 200
        except OSError:
            return False
    wait_until(started, 60, 0.05, "the node answers or exits")
    if node.proc.poll() is not None:
        pytest.fail(f"the node cannot start again: exit {node.proc.returncode} "
                    f"(after the register answered {code}, first run ended with {rc})\n"
                    f"first crash:\n{_traceback(died)}\n"
                    f"this start:\n{_traceback(log_since(node, start_offset))}")
    assert code == 202 and rc == 0, f"register answered {code}, node exited {rc}"
    c = node.client()
    j = wait_status(c, "R-done", "queued")
    assert j["retry_count"] == 0 and j["result"] is None and j["completed_at"] is None
    assert any(h["reason"] == "registered again" for h in j["history"])
    c.close()


def _traceback(text: str) -> str:
    """The first traceback in text, through its exception line; else the last lines."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "Traceback" in line:
            for k in range(i + 1, len(lines)):
                if not lines[k].startswith(" "):
                    return "\n".join(lines[max(0, i - 1):k + 1])
            return "\n".join(lines[i - 1:])
    return "\n".join(lines[-12:])


def test_a_job_s_own_json_comes_back_exact_after_a_snapshot_and_a_restart(
        make_node, clean_queues, node_cfg):
    """Snapshot job lines are read with orjson, which reads an integer beyond 64 bits
    as a float: the payload, result and metadata a client sent must come back byte for
    byte anyway (they are stored as JSON text)."""
    big = 123456789012345678901234567890
    payload = {"n": big, "f": 1e16, "s": "é\u2028\U0001f600", "nested": [{"a": None}]}
    node = make_node(**node_cfg).wait_healthy()
    c = node.client()
    register(c, "R-exact", payload=payload, metadata={"m": big})
    report(c, "R-exact", "running", "w-x")
    report(c, "R-exact", "completed", "w-x", result={"big": -big, "list": [1.5, "x"]})
    before = get(c, "R-exact")
    pad(node)
    wait_snapshot(node, 0)
    wait_quiet(c)
    c.close()
    restart_from_snapshot(node)
    c = node.client()
    after = get(c, "R-exact")
    assert after["payload"] == payload and after["payload"]["n"] == big
    assert after["result"] == {"big": -big, "list": [1.5, "x"]}
    assert after["metadata"] == {"m": big}
    assert {k: v for k, v in after.items() if k != "why"} == \
        {k: v for k, v in before.items() if k != "why"}
    c.close()
