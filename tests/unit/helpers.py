"""The helpers the unit tests share, and the one place tests import helpers from.

What is here: T0, a fixed clock; the commands a leader commits, built the way api.py
and the leader's timers build them and stamped with `at_ms` (reg, rep, fail, cancel,
mark_queued, timeout); the invariants and views of a State (check, fingerprint,
events); and ways to get a State (run, fresh, job_in, running_job).

Test modules import helpers only from this module, never from one another: a helper
kept in a test module makes that file's edits ripple into every test that borrows it,
and pytest collects it as part of that test module. A helper used by one test module
only stays in that module.
"""

import collections
import json

from dqorch import jobs, parse
from dqorch import state as S
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
    steps = {
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
