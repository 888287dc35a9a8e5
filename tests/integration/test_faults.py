"""Jepsen-style fault runs (short mode for CI): a 3-node cluster under a register and
worker load through every node, with a fault every couple of seconds (kill -9 then
restart, SIGSTOP/SIGCONT of the leader, datagram loss/delay/duplication, partitions
full and one-way through faults.UdpProxy, RabbitMQ connections and forwarded writes
cut by faults.TcpProxy, a node's disk full, a follower's log cut below its recorded
commit, which must be refused, a member replaced online, the leader alone cut off
from RabbitMQ, a member's clock 2 h off), then heal, settle, and history.check
(campaign.py). Plus unit-style tests that the checker catches planted violations in
hand-made bad histories. Long mode: scripts/fault-run.py --minutes N."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import gevent
import pytest

from . import history as H
from .conftest import Client, all_jobs
from .campaign import campaign, slow_disk_violations
from .faults import FaultCluster

FAULT_S = float(os.environ.get("DQ_FAULT_S", "40"))


def test_a_member_cut_off_never_says_404_for_a_job_the_others_accepted(tmp_path_factory,
                                                                      clean_queues):
    """Found by a 30-minute fault run: the isolated old leader answered 404 from its own
    state for a job the majority had accepted meanwhile."""
    c = FaultCluster(tmp_path_factory, 3, seed=1)
    try:
        c.start()
        old = c.wait_leader()
        name = c.name_of(old)
        c.udp.isolate(name)
        c.api[name].refuse(600)
        rest = [n for n in c.nodes.values() if n is not old]
        new = c.wait_leader(among=rest)
        assert new.client().call("POST", "/api/jobs/register", {"id": "while-cut"})[0] == 202
        code, body = old.client().call("GET", "/api/jobs/while-cut")
        assert code == 503 and body["error"] == "unavailable", (code, body)
        c.heal()
        from .broker_fixtures import wait_until
        wait_until(lambda: old.client().call("GET", "/api/jobs/while-cut")[0] == 200, 60,
                   0.1, "the old leader caught up")
    finally:
        c.stop()


def started_with_jobs(c, prefix: str, n: int):
    """Start c, register n jobs through its leader; (their ids, a follower's name)."""
    c.start()
    lead = c.wait_leader()
    ids = [f"{prefix}-{i}" for i in range(n)]
    for i in ids:
        assert lead.client().call("POST", "/api/jobs/register", {"id": i})[0] == 202
    return ids, next(x for x in c.names if x != c.name_of(lead))


def test_the_log_cut_fault_is_refused_then_the_repaired_member_catches_up(
        tmp_path_factory, clean_queues):
    """The campaign's log_cut: it must see the refusal, or report log_cut_not_refused."""
    c = FaultCluster(tmp_path_factory, 3, seed=2)
    try:
        ids, victim = started_with_jobs(c, "cut", 150)
        member = c.nodes[victim]
        from .broker_fixtures import wait_until
        wait_until(lambda: member.client().call("GET", "/api/raft/status")[1][
            "commit_index"] >= 151, 30, 0.05, "the member has every job")
        wait_until(lambda: json.loads((Path(member.cfg["data_dir"]) / "hardstate.json")
                                      .read_text())["commit"] >= 151, 30, 0.05,
                   "the member recorded its commit")
        assert c.cut_log(victim)
        (cut,) = c.log_cuts
        assert cut["outcome"] == "refused", cut
        assert "the log ends at index" in cut["line"]
        c.restart(victim)

        def caught_up() -> bool:
            try:
                return {j["id"] for j in all_jobs(member.client())} >= set(ids)
            except (OSError, AssertionError):
                return False
        wait_until(caught_up, 60, 0.1, "the repaired member caught up")
    finally:
        c.stop()


def test_a_cluster_under_faults_keeps_every_accepted_job(tmp_path_factory, clean_queues):
    seed = int(os.environ.get("DQ_FAULT_SEED", str(int(time.time()))))
    hist, violations, c, figures = campaign(tmp_path_factory, FAULT_S, seed, settle_s=45)
    print(figures)
    out = tmp_path_factory.mktemp("fault-report") / "report.txt"
    out.write_text(H.report(hist, violations, stories=20) + f"\n{figures}\n")
    print(f"report in {out}")
    assert figures["jobs_accepted"] > 50, figures
    assert sum(figures["faults"].values()) >= 5, figures
    assert not figures["client_crashes"], figures
    assert not violations, H.report(hist, violations) + f"\n{figures}\n" + c.logs(30)


# ------------------------------------------------ the checker catches planted violations

def _rec(t0, node, op, job, method, path, body, status, resp, t1=None, err=None):
    return dict(t0=t0, t1=t1 if t1 is not None else t0 + 0.01, node=node, method=method,
                path=path, body=body, status=status, resp=resp, err=err, op=op, job=job,
                client="hand")


def _good_history() -> H.History:
    h = H.History()
    h.http += [
        _rec(1.0, "a", "register", "x", "POST", "/api/jobs/register", {"id": "x"}, 202,
             {"status": "accepted", "job_id": "x"}),
        _rec(2.0, "b", "report", "x", "POST", "/api/jobs/status",
             {"jobId": "x", "status": "running"}, 200, {"status": "updated"}),
        _rec(3.0, "c", "report", "x", "POST", "/api/jobs/status",
             {"jobId": "x", "status": "completed"}, 200, {"status": "updated"}),
        _rec(4.0, "a", "get", "x", "GET", "/api/jobs/x", None, 200, {"status": "completed"}),
    ]
    h.msgs.append(dict(t=1.5, queue="job.medium", message_id="x", attempt=0, term=2,
                       body_id="x", retry_count=0, max_retries=3, worker="w",
                       redelivered=False))
    job = {"id": "x", "status": "completed", "retry_count": 0, "worker_id": "w",
           "result": {"by": "w", "attempt": 0}}
    h.final = {"a": {"x": dict(job)}, "b": {"x": dict(job)}, "c": {"x": dict(job)}}
    return h


def test_the_checker_passes_a_good_history():
    h = _good_history()
    assert H.check(h) == [], H.report(h, H.check(h))


@pytest.mark.parametrize("plant,want", [
    ("lost", "accepted_lost"), ("diverge", "diverged"), ("flip", "terminal_changed"),
    ("flip_read", "terminal_changed"), ("500", "no_5xx"), ("stuck", "stuck"),
    ("term_down", "message"), ("hang", "hang"), ("node_backwards", "terminal_changed"),
    ("late_result", "result_attempt"), ("early", "early"),
])
def test_the_checker_catches_a_planted_violation(plant, want, capsys):
    h = _good_history()
    if plant == "lost":
        del h.final["b"]["x"]
    elif plant == "diverge":
        h.final["b"]["x"]["status"] = "failed"
    elif plant == "flip":
        for jobs in h.final.values():
            jobs["x"]["status"] = "failed"
    elif plant == "flip_read":
        h.http.append(_rec(5.0, "b", "get", "x", "GET", "/api/jobs/x", None, 200,
                           {"status": "cancelled"}))
    elif plant == "500":
        h.http.append(_rec(5.0, "b", "get", "x", "GET", "/api/jobs/x", None, 500,
                           {"error": "internal"}))
    elif plant == "stuck":
        for jobs in h.final.values():
            jobs["x"]["status"] = "queued"
        h.http = h.http[:1]
        h.why["x"] = "queued in job.medium for 60 s; 3 responsive workers"
    elif plant == "term_down":
        h.msgs.append(dict(h.msgs[0], t=2.5, attempt=1, retry_count=1, term=1))
    elif plant == "hang":
        h.http.append(_rec(5.0, "b", "get", "x", "GET", "/api/jobs/x", None, None, None,
                           t1=5.0 + H.CLIENT_TIMEOUT_S, err="timeout"))
    elif plant == "node_backwards":
        listing = {"jobs": [{"id": "x", "status": "completed"}]}
        h.http.append(_rec(5.0, "b", "list", None, "GET", "/api/jobs", None, 200, listing))
        h.http.append(_rec(6.0, "b", "list", None, "GET", "/api/jobs", None, 200,
                           {"jobs": [{"id": "x", "status": "running"}]}))
    elif plant == "late_result":       # attempt 0's late result completed attempt 1
        h.msgs.append(dict(h.msgs[0], t=2.5, attempt=1, retry_count=1))
        for jobs in h.final.values():
            jobs["x"]["retry_count"] = 1
    elif plant == "early":             # delivered 5 s before its run_at
        h.msgs[0]["wall_ms"] = 1_800_000_000_000
        for jobs in h.final.values():
            jobs["x"]["run_at"] = 1_800_000_005_000
    v = H.check(h)
    text = H.report(h, v)
    print(text)
    assert any(name == want for name, _j, _m in v), text
    assert "=== story of x" in text


def _schedule_history(ticks, fired=None, late=0) -> H.History:
    h = H.History()
    h.schedule_runs = {jobs_run_id(t) for t in ticks}
    h.schedule = {"fired": len(ticks) if fired is None else fired, "skipped_late": late,
                  "skipped_overlap": 0}
    job = {"status": "completed", "retry_count": 0}
    h.final = {n: {i: dict(job, id=i) for i in h.schedule_runs} for n in "abc"}
    return h


def jobs_run_id(t: int) -> str:
    from dqorch.jobs import run_id
    return run_id(H.SCHEDULE_ID, t)


@pytest.mark.parametrize("ticks, fired, late, bad", [
    ([2000, 4000, 6000], None, 0, False),
    ([2000, 6000], None, 0, True),                   # a tick without a run
    ([2000, 4000], 3, 0, True),                      # fired more than listed
    ([2000, 4000], None, 1, True),                   # skipped, with an hour's window
    ([2000, 4500], None, 0, True),                   # a run off the ticks
])
def test_the_checker_wants_one_run_per_tick_of_the_schedule(ticks, fired, late, bad):
    base = 1_800_000_000_000
    h = _schedule_history([base + t for t in ticks], fired, late)
    v = [x for x in H.check(h) if x[0] == "schedule"]
    assert bool(v) == bad, v


def test_a_stopped_node_excuses_a_timeout_but_a_restart_resets_per_node_order():
    h = _good_history()
    h.http.append(_rec(5.0, "b", "get", "x", "GET", "/api/jobs/x", None, None, None,
                       t1=5.0 + H.CLIENT_TIMEOUT_S, err="timeout"))
    h.faults = [(4.5, "sigstop", "b"), (9.0, "sigcont", "b")]
    assert H.check(h) == []
    listing = {"jobs": [{"id": "x", "status": "completed"}]}
    h.http.append(_rec(30.0, "c", "list", None, "GET", "/api/jobs", None, 200, listing))
    h.http.append(_rec(32.0, "c", "list", None, "GET", "/api/jobs", None, 200,
                       {"jobs": [{"id": "x", "status": "running"}]}))
    h.restarts["c"] = [31.0]
    assert H.check(h) == []


@pytest.mark.parametrize("op,method,path", [("cancel", "POST", "/api/jobs/x/cancel"),
                                            ("get", "GET", "/api/jobs/x")])
def test_the_checker_catches_a_404_after_the_202(op, method, path):
    h = _good_history()
    h.http.append(_rec(5.0, "b", op, "x", method, path, None, 404, {"error": "not_found"}))
    assert [x[0] for x in H.check(h)] == ["not_found"]


def test_the_checker_counts_jobs_accepted_in_a_batch():
    h = _good_history()
    h.http.append(_rec(1.2, "b", "batch", None, "POST", "/api/jobs/batch",
                       {"jobs": [{"id": "y"}, {"id": "bad", "priority": 99}]}, 202,
                       {"results": [{"job_id": "y", "status": "accepted"},
                                    {"index": 1, "error": "invalid_request"}],
                        "accepted": 1, "rejected": 1}))
    assert h.accepted() == {"x", "y"}
    v = H.check(h)
    assert [(name, job) for name, job, _m in v] == [("accepted_lost", "y")], H.report(h, v)
    assert "POST /api/jobs/batch" in H.story(h, "y")


@pytest.mark.parametrize("first", [(None, None), (503, {"error": "unavailable", "message":
                                    "lost leadership; the outcome is unknown"})])
def test_a_late_result_is_excused_only_when_its_report_was_resent_after_an_unknown_outcome(
        first):
    """The node cannot tell a resent report from the next attempt's (jobs.py's last
    blind spot): the checker excuses result_attempt for that job, and only then."""
    h = _good_history()
    h.msgs.append(dict(h.msgs[0], t=2.5, attempt=1, retry_count=1))
    for jobs in h.final.values():
        jobs["x"]["retry_count"] = 1
    done = {"jobId": "x", "status": "completed"}
    h.http.insert(2, _rec(2.8, "c", "report", "x", "POST", "/api/jobs/status", done,
                          200, {"status": "ignored", "reason": "stale_attempt"}))
    assert [n for n, _j, _m in H.check(h)] == ["result_attempt"]       # sent once: caught
    status, resp = first
    h.http[2] = _rec(2.8, "c", "report", "x", "POST", "/api/jobs/status", done, status, resp)
    assert H.check(h) == []


def test_a_late_result_is_excused_when_its_attempt_was_published_twice():
    """A second publish of attempt 0 (a broker cut, a fail-over) whose run starts after
    the retry is made is a whole run of the job, taken for the retry's (jobs.py,
    "Attempts"), like a redelivery: excused. Once published: caught."""
    h = _good_history()
    h.msgs.append(dict(h.msgs[0], t=2.5, attempt=1, retry_count=1))
    for jobs in h.final.values():
        jobs["x"]["retry_count"] = 1
    assert [n for n, _j, _m in H.check(h)] == ["result_attempt"]
    h.msgs.append(dict(h.msgs[0], t=2.6))
    assert H.check(h) == []


def test_a_log_cut_above_a_big_snapshot_is_still_seen_refused(tmp_path_factory,
                                                              clean_queues):
    """Found by a 30-minute fault run (seed 20261223): with a snapshot of ~20 MB the cut
    member answers "503 starting" for a second while it loads it, and log_cut took
    that answer for a member serving with a hole (log_cut_not_refused, five times);
    the refusal came after. Starting is not serving."""
    c = FaultCluster(tmp_path_factory, 3, seed=3, snapshot_entries=1000)
    try:
        c.start()
        lead = c.wait_leader()
        blob = "x" * 20000

        def load(k: int) -> None:
            cc = lead.client()
            for i in range(k, 1030, 4):
                status, body = cc.call("POST", "/api/jobs/register",
                                       {"id": f"big-{i}", "payload": {"b": blob}})
                assert status == 202, body
        gevent.joinall([gevent.spawn(load, k) for k in range(4)], raise_error=True)
        victim = next(x for x in c.names if x != c.name_of(lead))
        member = c.nodes[victim]
        data = Path(member.cfg["data_dir"])
        from .broker_fixtures import wait_until
        wait_until(lambda: any(p.stat().st_size > 10 << 20
                               for p in data.glob("snapshot-*.json")), 60, 0.1,
                   "the member wrote a big snapshot\n" + member.log_tail())
        wait_until(lambda: json.loads((data / "hardstate.json").read_text())["commit"]
                   >= 1031, 30, 0.05, "the member recorded its commit")
        assert c.cut_log(victim)
        (cut,) = c.log_cuts
        assert cut["outcome"] == "refused", cut
    finally:
        c.stop()


def test_a_slow_disk_fault_that_never_reached_rule_5_is_a_violation():
    events = [(1.0, "kill9", "n1"), (2.0, "slow_disk", "n2@127.0.0.1 40 ms"),
              (8.0, "slow_disk_heal", "n2@127.0.0.1")]
    assert [v[0] for v in slow_disk_violations(events, 0)] == ["slow_disk_not_engaged"]
    assert slow_disk_violations(events, 1) == []
    assert slow_disk_violations(events[:1], 0) == []     # no such fault: nothing to reach


def test_a_member_emptied_under_its_old_name_loses_no_acknowledged_job(
        tmp_path_factory, clean_queues):
    """Issue 27's scenario, rerun: a follower's data_dir emptied and the member started
    again under its name (what docs/CLUSTER.md once said to do), the other follower
    cut off, writes through the leader, the leader killed, the cut healed. Before,
    the cut-off follower and the emptied member elected a leader between them and
    every write of the cut was gone from all three. Now the emptied member's messages
    carry a new member id: they count for nothing, so nothing it "acknowledged" is
    answered 202, and it helps elect nobody. Every 202 is on every member at the end."""
    from .broker_fixtures import wait_until
    c = FaultCluster(tmp_path_factory, 3, seed=3)
    try:
        c.start()
        lead = c.wait_leader()
        for i in range(20):
            assert lead.client().call("POST", "/api/jobs/register", {"id": f"pre-{i}"})[0] == 202

        def ids_known():
            st = c.status(lead)
            return st is not None and all(m["id"] for m in st["members"])
        wait_until(ids_known, 30, 0.1, "the leader records every member's id")
        emptied, cut_off = [n for n in c.names if n != c.name_of(lead)]
        c.kill9(emptied)
        data = Path(c.nodes[emptied].cfg["data_dir"])
        for f in data.iterdir():
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        c.restart(emptied)
        c.udp.isolate(cut_off)
        answers = {}

        def register(i):
            try:
                answers[i] = Client(lead.http_port).call(
                    "POST", "/api/jobs/register", {"id": f"during-{i}"})[0]
            except OSError:
                answers[i] = None
        gevent.joinall([gevent.spawn(register, i) for i in range(30)], timeout=40)
        acked = {f"during-{i}" for i, code in answers.items() if code == 202}
        wait_until(lambda: "messages refused member=" + emptied in
                   lead.log_path.read_text(), 30, 0.1, "the leader names the emptied member")
        c.kill9(c.name_of(lead))
        c.udp.heal()
        gevent.sleep(3)                  # the two left must not elect a leader between them
        st = c.status(c.nodes[cut_off])
        assert st is not None and st["leader"] in (None, c.name_of(lead)), st
        c.restart(c.name_of(lead))
        new = c.wait_leader(among=[c.nodes[n] for n in c.names if n != emptied])
        held = {j["id"] for j in all_jobs(new.client())}
        assert {f"pre-{i}" for i in range(20)} | acked <= held, acked - held
        for n in (c.name_of(lead), cut_off):
            wait_until(lambda: {f"pre-{i}" for i in range(20)} | acked <=
                       {j["id"] for j in all_jobs(c.nodes[n].client())}, 30, 0.2,
                       f"every 202 on {n}")
    finally:
        c.stop()


def test_the_replace_fault_follows_the_documented_procedure_and_keeps_every_job(
        tmp_path_factory, clean_queues):
    """The campaign's replace: a follower emptied, removed, started with --join, added
    as a learner, promoted once caught up; it ends a voter holding every job."""
    from .broker_fixtures import wait_until
    c = FaultCluster(tmp_path_factory, 3, seed=4)
    try:
        ids, victim = started_with_jobs(c, "rep", 50)
        assert c.replace_member(victim)
        (rec,) = c.replaced
        assert rec["outcome"] == "replaced", rec
        st = c.status(c.wait_leader())
        roles = {m["node"]: m["member"] for m in st["members"]}
        assert roles[victim] == "voter", st
        member = c.nodes[victim]
        wait_until(lambda: {j["id"] for j in all_jobs(member.client())} >= set(ids), 60,
                   0.1, "the replacement holds every job\n" + member.log_tail())
        assert "member id made" in member.log_path.read_text()   # a new member, not the old
    finally:
        c.stop()


def test_a_run_that_cannot_make_its_own_vhost_stops_with_one_message():
    """Issue 28 §4: fault-run.py against a broker it cannot administer fell back to
    vhost "/" and its workers took another run's jobs."""
    from .faults import NoPrivateVhost, free_port, private_vhost
    with pytest.raises(NoPrivateVhost, match="cannot make a vhost of its own"):
        private_vhost(free_port())
