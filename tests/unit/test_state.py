"""Unit tests for dqorch.state: SortedSeqs, the apply rules of CONTRACT §2.1-2.3, the
list/count queries, and determinism (same log -> same state; snapshot + rest of the
log -> same state). Pure: commands are built by parse.py and stamped with `at_ms` by
the test, as the leader would; randomness is a seeded random.Random."""

import bisect
import copy
import functools
import json
import random

import pytest

from dqorch.jobs import Job
from dqorch import jobs, parse
from dqorch import state as S
from dqorch.jobs import TERMINAL
from dqorch.state import SortedSeqs, State, apply
from tests.unit.helpers import (T0, cancel, check, events, fingerprint, fresh, job_in,
                                mark_queued, reg, rep, run)


def mark_published(upto, at_ms) -> dict:
    return {"op": "mark_published", "upto": upto, "at_ms": at_ms}


# SortedSeqs ################################################################

@pytest.mark.parametrize("block", [1, 2, 5, 1024])
def test_sorted_seqs_behaves_like_a_sorted_list(monkeypatch, block):
    monkeypatch.setattr(SortedSeqs, "BLOCK", block)
    rng = random.Random(block)
    s, ref = SortedSeqs(), []
    for step in range(3000):
        r = rng.random()
        if ref and r < 0.4:
            x = rng.choice(ref)
            s.remove(x)
            ref.remove(x)
        else:
            # mostly the largest so far (new jobs), sometimes anywhere
            x = (ref[-1] + rng.randint(1, 3) if ref else 0) if r < 0.75 \
                else rng.randrange(-50, 6000)
            if x in ref:
                continue
            s.add(x)
            bisect.insort(ref, x)
        if step % 17 == 0 or len(ref) < 8:
            assert list(s) == ref and len(s) == len(ref) and bool(s) == bool(ref)
            assert list(s.below()) == ref[::-1]
            bounds = [None, -100, 10_000] + [rng.randrange(-60, 6100) for _ in range(3)]
            if ref:
                bounds += [ref[0], ref[-1], rng.choice(ref)]
            for b in bounds:
                want = ref[::-1] if b is None else [x for x in reversed(ref) if x < b]
                assert list(s.below(b)) == want, (b, step)
            # block structure: each max is its block's last, no empty blocks
            assert s._maxes == [lst[-1] for lst in s._lists]
            assert all(0 < len(lst) <= 2 * block + 1 for lst in s._lists)


def test_sorted_seqs_below_a_present_value_excludes_it():
    s = SortedSeqs()
    for x in (1, 3, 5, 7):
        s.add(x)
    assert list(s.below(5)) == [3, 1]
    assert list(s.below(1)) == []
    assert list(s.below(8)) == [7, 5, 3, 1]


@pytest.mark.parametrize("present, absent", [([], 1), ([2, 4], 3), ([2, 4], 1), ([2, 4], 5)])
def test_sorted_seqs_remove_of_absent_value_is_key_error(present, absent):
    s = SortedSeqs()
    for x in present:
        s.add(x)
    with pytest.raises(KeyError):
        s.remove(absent)
    assert list(s) == present


# Register (CONTRACT §2.1) ##################################################

def test_register_creates_a_pending_job_to_publish():
    st = State()
    out = run(st, reg("j1", T0, type="resize", priority="HIGH", payload={"a": 1}))
    assert out == {"outcome": "created", "publish": True, "moved": ("pending", "pending")}
    j = st.jobs["j1"]
    assert (j["status"], j["type"], j["priority"], j["queue"]) == \
        ("pending", "resize", 10, "job.high")
    assert (j["created_at"], j["seq"], "from_report" in j) == (T0, 1, False)
    assert jobs.history_of(j) == [(T0, "pending", "api", "registered")]
    assert st.outbox == {}


def test_register_with_publish_off_records_the_job_as_queued():
    st = State()
    out = run(st, reg("j1", T0, publish=False))
    assert out["outcome"] == "created" and not out["publish"]
    assert out["moved"] == ("pending", "queued")
    j = st.jobs["j1"]
    assert (j["status"], j["queued_at"]) == ("queued", T0)


@pytest.mark.parametrize("status", ["pending", "queued", "running"])
def test_register_of_a_non_terminal_job_changes_nothing_and_publishes_nothing(status):
    st = job_in(status)
    before = fingerprint(st)
    out = run(st, reg("j1", T0 + 100, type="other", priority=1, payload={"new": 1},
                      maxRetries=9))
    assert out == {"outcome": "exists"}
    assert fingerprint(st) == before


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_register_of_a_terminal_job_starts_a_new_attempt(status):
    st = job_in(status, type="old", priority=1, maxRetries=3)
    n_events = len(st.outbox)
    out = run(st, reg("j1", T0 + 100, type="new", priority=12, payload={"v": 2},
                      maxRetries=1))
    assert out == {"outcome": "restarted", "publish": True, "moved": (status, "pending")}
    j = st.jobs["j1"]
    assert (j["status"], j["type"], j["priority"], j["queue"]) == \
        ("pending", "new", 12, "job.high")
    assert (j["payload"], j["max_retries"], j["retry_count"]) == (b'{"v":2}', 1, 0)
    for k in ("worker_id", "result", "error_message", "progress", "queued_at",
              "started_at", "completed_at"):
        assert j.get(k) is None, k
    assert j["seq"] == 1 and len(st.jobs) == 1
    assert S.running_counts(st) == {}
    assert len(st.outbox) == n_events            # a new attempt is not a status event


def test_register_of_a_terminal_job_with_publish_off_is_queued_again():
    st = job_in("completed")
    out = run(st, reg("j1", T0 + 100, publish=False))
    assert out["outcome"] == "restarted" and not out["publish"]
    assert st.jobs["j1"]["status"] == "queued"


@pytest.mark.parametrize("reported", ["running", "completed", "failed", "cancelled"])
def test_register_after_a_report_fills_fields_keeps_status_and_does_not_publish(reported):
    st = fresh(rep("j1", reported, T0, worker="w9", result=[1]))
    events_before = events(st)
    out = run(st, reg("j1", T0 + 5, type="resize", priority=15, payload={"p": 1},
                      metadata={"m": 1}, maxRetries=7, timeout=60, createdAt="c"))
    assert out == {"outcome": "filled"}
    assert "publish" not in out
    j = st.jobs["j1"]
    assert j["status"] == reported and j["worker_id"] == "w9"
    assert (j["type"], j["priority"], j["queue"]) == ("resize", 15, "job.high")
    assert (j["payload"], j["metadata"], j["client_created_at"]) == (b'{"p":1}', b'{"m":1}', "c")
    assert (j["max_retries"], j["execution_timeout"]) == (7, 60)
    assert "from_report" not in j
    assert events(st) == events_before
    # Now that it is registered, a second register behaves as for any job.
    again = run(st, reg("j1", T0 + 6))
    assert again["outcome"] == ("exists" if reported == "running" else "restarted")


def test_job_filled_after_a_running_report_is_retried_on_failure():
    st = fresh(rep("j1", "running", T0), reg("j1", T0 + 1, maxRetries=2))
    out = run(st, rep("j1", "failed", T0 + 2))
    assert out["outcome"] == "retrying" and out["publish"]
    assert st.jobs["j1"]["status"] == "pending"


# Report (CONTRACT §2.2) ####################################################

def test_report_on_an_unknown_id_creates_the_job_as_type_unknown():
    st = State()
    out = run(st, rep("ghost", "running", T0, worker="w1", progress=10))
    assert out == {"outcome": "created", "moved": ("pending", "running")}
    j = st.jobs["ghost"]
    assert (j["type"], j["status"], j["worker_id"], j["started_at"]) == \
        ("unknown", "running", "w1", T0)
    assert (j["max_retries"], j["execution_timeout"], j["from_report"]) == (3, 300, True)
    assert [h[1] for h in jobs.history_of(j)] == ["pending", "running"]
    assert S.running_counts(st) == {"w1": 1}
    assert events(st) == [{"job": "ghost", "status": "RUNNING", "worker": "w1",
                           "at_ms": T0, "progress": 10}]


def test_failed_report_on_a_job_known_only_from_reports_is_final():
    # We hold no payload to run it again.
    st = fresh(rep("ghost", "running", T0))
    out = run(st, rep("ghost", "failed", T0 + 1, errorMessage="boom"))
    assert out["outcome"] == "updated" and "publish" not in out
    assert st.jobs["ghost"]["status"] == "failed"


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("late", ["running", "completed", "failed", "cancelled"])
def test_a_terminal_job_never_moves_on_a_late_report(terminal, late):
    st = job_in(terminal)
    before = fingerprint(st)
    out = run(st, rep("j1", late, T0 + 1000, worker="late-worker", progress=99,
                      result={"x": 1}, errorMessage="e"))
    assert out == {"outcome": "ignored", "reason": "terminal"}
    assert fingerprint(st) == before


def test_late_running_after_completed_is_ignored():
    st = fresh(reg("j1", T0), rep("j1", "running", T0 + 1), rep("j1", "completed", T0 + 2))
    out = run(st, rep("j1", "running", T0 + 1))
    assert out["outcome"] == "ignored"
    assert st.jobs["j1"]["status"] == "completed"
    assert [e["status"] for e in events(st)] == ["RUNNING", "COMPLETED"]


def test_running_sets_worker_and_started_at_only_the_first_time():
    st = fresh(reg("j1", T0), rep("j1", "running", T0 + 1, worker="a"))
    assert S.running_counts(st) == {"a": 1}
    out = run(st, rep("j1", "running", T0 + 2, worker="b"))
    j = st.jobs["j1"]
    assert out["moved"] == ("running", "running")
    assert (j["worker_id"], j["started_at"]) == ("b", T0 + 1)
    assert S.running_counts(st) == {"b": 1}


def test_repeated_running_report_from_the_same_worker_updates_progress_only():
    st = fresh(reg("j1", T0), rep("j1", "running", T0 + 1, worker="a"))
    before = len(st.outbox)
    out = run(st, rep("j1", "in_progress", T0 + 2, worker="a", progress=60))
    assert out == {"outcome": "updated"}
    assert st.jobs["j1"]["progress"] == 60 and len(st.outbox) == before
    out = run(st, rep("j1", "running", T0 + 3, worker=None))
    assert out == {"outcome": "updated"} and st.jobs["j1"]["worker_id"] == "a"


def test_completed_sets_result_completed_at_and_publishes_an_event():
    st = fresh(reg("j1", T0), rep("j1", "running", T0 + 1, worker="a"))
    out = run(st, rep("j1", "done", T0 + 2, worker="a", result=[1, 2]))
    assert out == {"outcome": "updated", "moved": ("running", "completed")}
    j = st.jobs["j1"]
    assert (j["status"], j["result"], j["completed_at"]) == ("completed", b"[1,2]", T0 + 2)
    assert S.running_counts(st) == {}
    ev = events(st)[-1]
    assert (ev["status"], ev["worker"], ev["result"]) == ("COMPLETED", "a", [1, 2])
    assert jobs.event_body(ev)["result"] == {"value": [1, 2]}


def test_completed_without_result_has_no_result_in_the_event():
    st = fresh(reg("j1", T0), rep("j1", "completed", T0 + 1))
    assert "result" not in events(st)[-1]


def test_failed_with_retries_left_goes_back_to_pending_and_is_published_again():
    st = fresh(reg("j1", T0, maxRetries=2), mark_queued([("j1", 0)], T0 + 1),
               rep("j1", "running", T0 + 2, worker="a"))
    out = run(st, rep("j1", "error", T0 + 3, worker="a", errorMessage="disk full"))
    assert out == {"outcome": "retrying", "publish": True, "moved": ("running", "pending")}
    j = st.jobs["j1"]
    assert (j["status"], j["retry_count"], j["worker_id"]) == ("pending", 1, None)
    assert j["error_message"] == "disk full"
    assert S.running_counts(st) == {}
    assert events(st)[-1] == {"job": "j1", "status": "RETRYING", "worker": "a",
                              "at_ms": T0 + 3, "error": "disk full"}


def test_failed_without_retries_left_is_failed_with_the_error():
    st = fresh(reg("j1", T0, maxRetries=1), rep("j1", "running", T0 + 1, worker="a"),
               rep("j1", "failed", T0 + 2, worker="a", errorMessage="first"),
               rep("j1", "running", T0 + 3, worker="b"))
    assert st.jobs["j1"]["retry_count"] == 1
    out = run(st, rep("j1", "failure", T0 + 4, worker="b", errorMessage="second"))
    assert out == {"outcome": "updated", "moved": ("running", "failed")}
    j = st.jobs["j1"]
    assert (j["status"], j["error_message"], j["completed_at"]) == \
        ("failed", "second", T0 + 4)
    assert S.running_counts(st) == {}
    assert [e["status"] for e in events(st)] == ["RUNNING", "RETRYING", "RUNNING", "FAILED"]
    assert events(st)[-1]["error"] == "second"


def test_failed_with_max_retries_zero_fails_at_once():
    st = fresh(reg("j1", T0, maxRetries=0))
    out = run(st, rep("j1", "failed", T0 + 1))
    assert out["outcome"] == "updated" and st.jobs["j1"]["status"] == "failed"


def test_worker_cancelled_report_cancels_the_job():
    st = fresh(reg("j1", T0), rep("j1", "running", T0 + 1, worker="a"))
    run(st, rep("j1", "canceled", T0 + 2, worker="a"))
    assert st.jobs["j1"]["status"] == "cancelled"
    assert events(st)[-1]["status"] == "CANCELLED" and S.running_counts(st) == {}


def test_events_of_a_job_are_in_commit_order():
    st = fresh(reg("j1", T0), rep("j1", "running", T0 + 1), rep("j1", "completed", T0 + 2),
               reg("j2", T0 + 3), cancel("j2", T0 + 4))
    assert [(k, e["job"], e["status"]) for k, e in sorted(st.outbox.items())] == [
        (1, "j1", "RUNNING"), (2, "j1", "COMPLETED"), (3, "j2", "CANCELLED")]


def test_history_is_capped():
    st = fresh(reg("j1", T0))
    for i in range(S.HISTORY_MAX + 10):
        run(st, rep("j1", "running", T0 + i, worker="w%d" % i))
    hist = jobs.history_of(st.jobs["j1"])
    assert len(hist) == S.HISTORY_MAX
    assert hist[-1][2] == "w%d" % (S.HISTORY_MAX + 9)


# Cancel (CONTRACT §2.3) ####################################################

@pytest.mark.parametrize("status", ["pending", "queued", "running"])
def test_cancel_of_a_non_terminal_job_cancels_it(status):
    st = job_in(status)
    out = run(st, cancel("j1", T0 + 50))
    assert out == {"outcome": "cancelled", "moved": (status, "cancelled")}
    j = st.jobs["j1"]
    assert (j["status"], j["completed_at"]) == ("cancelled", T0 + 50)
    assert S.running_counts(st) == {}
    assert events(st)[-1]["status"] == "CANCELLED"
    # never published again, and a later report is discarded
    assert "publish" not in out
    assert run(st, mark_queued([("j1", 0)], T0 + 51))["queued"] == 0
    assert run(st, rep("j1", "completed", T0 + 52))["outcome"] == "ignored"
    assert st.jobs["j1"]["status"] == "cancelled"


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_cancel_of_terminal_job_is_conflict(status):
    st = job_in(status)
    before = fingerprint(st)
    assert run(st, cancel("j1", T0 + 50)) == {"outcome": "conflict", "status": status}
    assert fingerprint(st) == before


def test_cancel_of_unknown_job_is_not_found():
    st = fresh(reg("j1", T0))
    before = fingerprint(st)
    assert run(st, cancel("nope", T0 + 1)) == {"outcome": "not_found"}
    assert fingerprint(st) == before


# Broker confirms and the outbox ############################################

def test_mark_queued_queues_pending_jobs_of_the_confirmed_attempt():
    st = fresh(reg("a", T0), reg("b", T0), reg("c", T0, maxRetries=3),
               rep("c", "failed", T0 + 1))
    assert st.jobs["c"]["retry_count"] == 1
    out = run(st, mark_queued([("a", 0), ("c", 0), ("b", 1), ("zzz", 0)], T0 + 5))
    assert out == {"outcome": "queued", "queued": 1}
    assert st.jobs["a"]["status"] == "queued" and st.jobs["a"]["queued_at"] == T0 + 5
    assert st.jobs["b"]["status"] == "pending"          # stale: attempt 1 never existed
    assert st.jobs["c"]["status"] == "pending"          # stale: confirm of attempt 0
    assert "zzz" not in st.jobs
    assert run(st, mark_queued([("c", 1)], T0 + 6))["queued"] == 1


@pytest.mark.parametrize("status", ["queued", "running", "completed", "cancelled"])
def test_mark_queued_ignores_jobs_that_are_not_pending(status):
    st = job_in(status)
    before = fingerprint(st)
    assert run(st, mark_queued([("j1", 0)], T0 + 99))["queued"] == 0
    assert fingerprint(st) == before


def test_mark_published_trims_the_outbox_up_to_n():
    st = fresh(*[rep("j%d" % i, "running", T0 + i) for i in range(4)])
    assert sorted(st.outbox) == [1, 2, 3, 4]
    run(st, mark_published(2, T0 + 10))
    assert (sorted(st.outbox), st.outbox_done) == ([3, 4], 2)
    run(st, mark_published(1, T0 + 11))                  # never goes back
    assert (sorted(st.outbox), st.outbox_done) == ([3, 4], 2)
    run(st, mark_published(99, T0 + 12))                 # never past what exists
    assert (st.outbox, st.outbox_done, st.outbox_next) == ({}, 4, 5)
    run(st, rep("j9", "running", T0 + 13))
    assert sorted(st.outbox) == [5]


def test_unknown_op_raises():
    with pytest.raises(KeyError):
        apply(State(), {"op": "explode", "at_ms": T0})


def test_noop_changes_nothing():
    st = job_in("running")
    before = fingerprint(st)
    assert run(st, {"op": "noop", "at_ms": T0}) == {"outcome": "noop"}
    assert fingerprint(st) == before


# Queries ###################################################################

def ids(page) -> list:
    return [j["id"] for j in page]


def test_list_jobs_newest_first_with_cursor_pages():
    st = fresh(*[reg("j%d" % i, T0 + i) for i in range(5)])
    page, count, nxt = S.list_jobs(st, {}, 100, None)
    assert (ids(page), count, nxt) == (["j4", "j3", "j2", "j1", "j0"], 5, None)
    page, count, nxt = S.list_jobs(st, {}, 2, None)
    assert (ids(page), count) == (["j4", "j3"], 5)
    page, count, nxt = S.list_jobs(st, {}, 2, nxt)
    assert ids(page) == ["j2", "j1"] and nxt is not None
    page, count, nxt = S.list_jobs(st, {}, 2, nxt)
    assert (ids(page), nxt) == (["j0"], None)
    page, _, nxt = S.list_jobs(st, {}, 5, None)
    assert len(page) == 5 and nxt is None               # an exactly full last page


def small_mix() -> State:
    return fresh(
        reg("a", T0, type="x", priority=10), reg("b", T0, type="y", priority=1),
        reg("c", T0, type="x", priority=1), reg("d", T0, type="x", priority=10),
        rep("a", "running", T0 + 1, worker="w1"), rep("c", "running", T0 + 1, worker="w2"),
        rep("d", "completed", T0 + 2, worker="w1"), rep("e", "running", T0 + 3, worker="w1"))


@pytest.mark.parametrize("filters, want", [
    ({"status": "running"}, ["e", "c", "a"]),
    ({"status": "pending"}, ["b"]),
    ({"status": "failed"}, []),
    ({"type": "x"}, ["d", "c", "a"]),
    ({"type": "unknown"}, ["e"]),
    ({"type": "never"}, []),
    ({"worker_id": "w1"}, ["e", "d", "a"]),
    ({"worker_id": "nobody"}, []),
    ({"queue": "job.high"}, ["d", "a"]),
    ({"queue": "job.low"}, ["c", "b"]),
    ({"status": "running", "type": "x"}, ["c", "a"]),
    ({"status": "running", "worker_id": "w1"}, ["e", "a"]),
    ({"type": "x", "queue": "job.high", "worker_id": "w1"}, ["d", "a"]),
    ({"type": "x", "queue": "job.high", "status": "completed"}, ["d"]),
    ({"type": "y", "worker_id": "w1"}, []),
])
def test_list_jobs_filters(filters, want):
    page, count, nxt = S.list_jobs(small_mix(), filters, 100, None)
    assert (ids(page), count, nxt) == (want, len(want), None)


def test_counts_by_queue_and_status():
    st = small_mix()
    assert S.counts_by_status(st) == {"waiting": 0, "scheduled": 0, "pending": 1, "queued": 0, "running": 3,
                                      "completed": 1, "failed": 0, "cancelled": 0}
    q = S.counts_by_queue(st)
    assert q["job.high"]["running"] == 1 and q["job.high"]["completed"] == 1
    assert q["job.medium"]["running"] == 1 and q["job.low"]["running"] == 1
    assert sum(sum(c.values()) for c in q.values()) == 5
    q["job.high"]["running"] = 99                       # a copy, not the live counters
    assert st.queue_counts["job.high"]["running"] == 1


# Random logs ###############################################################

IDS = ["j%d" % i for i in range(24)]
WORKERS = ["w0", "w1", "w2", None]


def random_cmd(rng: random.Random, st: State, at_ms: int) -> dict:
    r = rng.random()
    if r < 0.28:
        body = {}
        if rng.random() < 0.7:
            body["type"] = rng.choice(["a", "b", "c"])
        if rng.random() < 0.7:
            body["priority"] = rng.choice([1, 3, 5, 9, 10, 15, "HIGH", "low", 7.5])
        if rng.random() < 0.5:
            body["payload"] = {"n": rng.randrange(100)}
        if rng.random() < 0.5:
            body["maxRetries"] = rng.randrange(4)
        if rng.random() < 0.2:
            body["metadata"] = {"k": rng.choice(["v", 1, None, True])}
        return reg(rng.choice(IDS), at_ms, publish=rng.random() < 0.8, **body)
    if r < 0.68:
        body = {}
        if rng.random() < 0.3:
            body["progress"] = rng.randrange(101)
        if rng.random() < 0.3:
            body["result"] = rng.choice([{"ok": 1}, [1], "s", 0])
        if rng.random() < 0.3:
            body["errorMessage"] = rng.choice(["boom", "oom"])
        status = rng.choice(["running", "running", "started", "completed", "done",
                             "failed", "error", "cancelled"])
        return rep(rng.choice(IDS + ["x%d" % rng.randrange(3)]), status, at_ms,
                   worker=rng.choice(WORKERS), **body)
    if r < 0.76:
        return cancel(rng.choice(IDS + ["nope"]), at_ms)
    if r < 0.92:
        items = [(st.by_seq[s], st.jobs[st.by_seq[s]]["attempt"])
                 for s in st.by_status["pending"] if rng.random() < 0.6]
        if items and rng.random() < 0.3:                 # a stale confirm
            id_, attempt = rng.choice(items)
            items.append((id_, attempt - 1))
        if rng.random() < 0.1:
            items.append(("nope", 0))
        rng.shuffle(items)
        return mark_queued(items, at_ms)
    if r < 0.98:
        return mark_published(rng.randint(st.outbox_done - 1, st.outbox_next + 1), at_ms)
    return {"op": "noop", "at_ms": at_ms}


@functools.lru_cache(maxsize=None)
def random_log(seed: int, n: int) -> tuple:
    """A seeded log of commands as a leader would commit them (mark_queued items come
    from the state the log has built so far)."""
    rng = random.Random(seed)
    driver = State()
    log, at = [], T0
    for _ in range(n):
        at += rng.randrange(0, 40)
        cmd = random_cmd(rng, driver, at)
        apply(driver, copy.deepcopy(cmd))
        log.append(cmd)
    return tuple(log)          # shared between tests: apply must not (and does not) mutate


def replay(log: list, st: State | None = None) -> tuple:
    st = State() if st is None else st
    outcomes = [apply(st, json.loads(json.dumps(cmd))) for cmd in log]
    return st, outcomes


SEEDS = range(25)


@pytest.mark.parametrize("seed", SEEDS)
def test_indexes_and_counters_match_a_recomputation_after_a_random_log(monkeypatch, seed):
    monkeypatch.setattr(SortedSeqs, "BLOCK", 2)          # many blocks, many splits
    st = State()
    for cmd in random_log(seed, 300):
        run(st, cmd)                                     # check() after every command


@pytest.mark.parametrize("seed", range(12))
def test_every_move_is_allowed_and_terminal_jobs_move_only_by_register(seed):
    st = State()
    for cmd in random_log(seed, 300):
        def shown(j):               # all but the notes and what late reports are still owed
            return json.dumps(dict(j.to_record(), history=None, past=None))
        ended = {id_: (shown(j), len(jobs.history_of(j)))
                 for id_, j in st.jobs.items() if j["status"] in TERMINAL}
        out = apply(st, cmd)
        if cmd["op"] == "evict":
            ended = {id_: v for id_, v in ended.items() if id_ in st.jobs}
        if cmd["op"] != "register":
            # Only a note about an ignored late report may be added to the history.
            for id_, (text, n_hist) in ended.items():
                job = st.jobs[id_]
                assert shown(job) == text, (seed, cmd)
                assert all("ignored late" in h[3] or " late on " in h[3]
                           for h in jobs.history_of(job)[n_hist:])
        frm, to = out.get("moved", (None, None))
        if cmd["op"] == "register":
            assert frm is None or frm in TERMINAL or frm == "pending"
            assert to in (None, "pending", "queued")
        elif frm is not None and frm != to:
            assert to in jobs.TRANSITIONS[frm], (frm, to, cmd)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_same_log_gives_the_same_state_and_outcomes(seed):
    log = random_log(seed, 400)
    a, outs_a = replay(log)
    b, outs_b = replay(log)
    assert fingerprint(a) == fingerprint(b)
    assert outs_a == outs_b
    assert a.queue_counts == b.queue_counts
    assert S.running_counts(a) == S.running_counts(b)
    assert ids(S.list_jobs(a, {}, 10_000, None)[0]) == ids(S.list_jobs(b, {}, 10_000, None)[0])


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_round_trip_is_identical(seed):
    st, _ = replay(random_log(seed, 400))
    snap = json.loads(json.dumps(S.to_snapshot(st), default=Job.to_record))     # as it goes to and from disk
    restored = S.from_snapshot(snap)
    check(restored)
    assert fingerprint(restored) == fingerprint(st)
    assert restored.queue_counts == st.queue_counts
    assert S.running_counts(restored) == S.running_counts(st)
    assert {k: list(v) for k, v in restored.by_type.items()} == \
        {k: list(v) for k, v in st.by_type.items()}


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_mid_log_then_the_rest_equals_the_straight_run(seed):
    log = random_log(seed, 400)
    cut = random.Random(seed).randrange(len(log) + 1)
    straight, outs_straight = replay(log)
    head, outs_head = replay(log[:cut])
    snap = json.loads(json.dumps(S.to_snapshot(head), default=Job.to_record))
    resumed, outs_tail = replay(log[cut:], S.from_snapshot(snap))
    check(resumed)
    assert fingerprint(resumed) == fingerprint(straight)
    assert outs_head + outs_tail == outs_straight


@pytest.mark.parametrize("seed", range(8))
def test_cursor_pagination_visits_every_matching_job_once(monkeypatch, seed):
    monkeypatch.setattr(SortedSeqs, "BLOCK", 3)
    st, _ = replay(random_log(seed, 500))
    rng = random.Random(seed)
    newest_first = sorted(st.jobs.values(), key=lambda j: -j["seq"])
    filter_sets = [{}, {"status": "running"}, {"status": "pending"}, {"type": "a"},
                   {"worker_id": "w1"}, {"queue": "job.high"},
                   {"type": "b", "status": "completed"},
                   {"queue": "job.low", "worker_id": "w0", "type": "a"}]
    for filters in filter_sets:
        want = [j["id"] for j in newest_first
                if all(j[k] == v for k, v in filters.items())]
        for limit in (1, 2, rng.randint(3, 9), 10_000):
            seen, cursor = [], None
            for _ in range(len(want) + 2):               # a stuck cursor fails, not hangs
                page, count, cursor = S.list_jobs(st, filters, limit, cursor)
                assert count == len(want)
                assert 0 < len(page) <= limit or (not want and not page)
                seen += ids(page)
                if cursor is None:
                    break
            assert seen == want, (filters, limit)


def test_status_plus_type_or_worker_count_needs_no_walk(monkeypatch):
    st = State()
    for i in range(30):
        run(st, reg(f"p{i}", T0 + i, type="a" if i % 3 else "b"))
    for i in range(0, 30, 2):
        run(st, rep(f"p{i}", "running", T0 + 100 + i, worker="w%d" % (i % 4)))
    check(st)
    want = sum(1 for j in st.jobs.values() if j["type"] == "a" and j["status"] == "running")
    monkeypatch.setattr(S, "SCAN_MAX", 3)          # a walk would be cut short
    _, count, _ = S.list_jobs(st, {"type": "a", "status": "running"}, 2, None)
    assert count == want
    _, count, _ = S.list_jobs(st, {"worker_id": "w0", "status": "running"}, 2, None)
    assert count == sum(1 for j in st.jobs.values() if j["worker_id"] == "w0")


def test_a_sparse_walk_stops_and_hands_back_a_cursor(monkeypatch):
    st = State()
    run(st, reg("s0", T0, type="x", priority=5))          # the one match, oldest
    for i in range(1, 11):
        run(st, reg(f"s{i}", T0 + i, type="x", priority=1))
        run(st, reg(f"t{i}", T0 + i, type="y", priority=5))
    monkeypatch.setattr(S, "SCAN_MAX", 5)
    seen, cursor, rounds = [], None, 0
    while True:
        page, count, cursor = S.list_jobs(st, {"type": "x", "queue": "job.medium"}, 10,
                                          cursor)
        seen += [j["id"] for j in page]
        rounds += 1
        if cursor is None:
            break
    assert seen == ["s0"] and count == 1 and rounds > 1


def test_the_outbox_is_bounded_and_drops_the_oldest_event(monkeypatch):
    monkeypatch.setattr(S, "OUTBOX_MAX", 5)
    st = State()
    for i in range(8):
        apply(st, reg(f"j{i}", T0 + i))
        apply(st, rep(f"j{i}", "running", T0 + i))
    assert len(st.outbox) == 5 and st.events_dropped == 3
    assert min(st.outbox) == st.outbox_done + 1 and max(st.outbox) == st.outbox_next - 1
    again = S.from_snapshot(json.loads(json.dumps(S.to_snapshot(st), default=Job.to_record)))
    assert again.events_dropped == 3 and list(again.outbox) == list(st.outbox)


# A reported result is held to max_job_bytes ################################

def test_a_result_that_would_make_the_job_too_large_is_cut_and_so_is_its_event():
    cmd = parse.report({"jobId": "j1", "status": "completed", "workerId": "w1",
                        "result": {"blob": "x" * 50_000}}, None, max_retries=3,
                       execution_timeout=300, max_job_bytes=10_000)
    assert cmd["max_job_bytes"] == 10_000
    cmd["at_ms"] = T0 + 5
    st = fresh(reg("j1", T0, payload={"p": "y" * 4000}))
    run(st, cmd)
    j = st.jobs["j1"]
    stored = json.loads(j["result"])
    assert stored["truncated"] is True and stored["bytes"] > 50_000
    assert len(j["payload"]) + len(j["result"]) <= 10_000
    assert events(st)[-1]["result"] == stored            # the event carries the marker
    # a result that fits is kept as it is, and without a limit nothing is cut
    run(st, reg("j2", T0), rep("j2", "completed", T0 + 1, result={"ok": 1}))
    assert json.loads(st.jobs["j2"]["result"]) == {"ok": 1}
    assert "max_job_bytes" not in parse.report(
        {"jobId": "j", "status": "running"}, None, max_retries=3, execution_timeout=3,
        max_job_bytes=10)
