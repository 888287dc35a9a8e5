"""Unit tests for the job lifecycle rules in dqorch.state and dqorch.jobs: retries and
their backoff, execution timeouts, dead workers, late reports from an abandoned
attempt, retention (evict, eviction_candidates), oldest_created_at and jobs.why().

Pure: every command goes through apply(), stamped with `at_ms` by the test as the
leader would; the indexes are checked against a recomputation after each one."""

import json

import pytest

from dqorch.jobs import Job
from dqorch import jobs, parse
from dqorch import state as S
from dqorch.state import State
from tests.unit.helpers import (T0, cancel, check, events, fail, fingerprint, fresh,
                                job_in, mark_queued, reg, rep, run, running_job, timeout)


# Commands the leader's timers propose (dispatch.Timers) ####################

def expire(worker, at_ms, backoff_ms=0) -> dict:
    return {"op": "expire_worker", "worker_id": worker, "retry_backoff_ms": backoff_ms,
            "at_ms": at_ms}


def evict(ids, at_ms) -> dict:
    return {"op": "evict", "ids": list(ids), "at_ms": at_ms}


def without_history(st: State, id_: str) -> str:
    return json.dumps(dict(st.jobs[id_].to_record(), history=None))


def end_attempt_by(cause: str, id_: str, worker: str, attempt: int, at_ms: int,
                   backoff_ms: int = 0) -> dict:
    """The command that ends the running attempt, for each of the three causes."""
    return {"report": fail(id_, at_ms, worker=worker, backoff_ms=backoff_ms,
                           errorMessage="boom"),
            "timeout": timeout(id_, attempt, at_ms, backoff_ms),
            "expire": expire(worker, at_ms, backoff_ms)}[cause]


# Execution timeout ##########################################################

def test_timeout_of_the_current_attempt_retries_while_retries_are_left():
    st = running_job(maxRetries=2, timeout=60)
    out = run(st, timeout("j1", 0, T0 + 61_000))
    assert out == {"outcome": "retrying", "publish": True, "moved": ("running", "pending")}
    j = st.jobs["j1"]
    assert (j["status"], j["retry_count"], j["attempt"], j["worker_id"]) == \
        ("pending", 1, 1, None)
    assert j["past"] == [["w1", 0, 1, None]]    # w1 owes attempt 0's terminal report
    assert "timed out after 60 s on w1" in j["error_message"]
    assert S.running_counts(st) == {}
    ev = events(st)[-1]
    assert (ev["status"], ev["worker"], ev["at_ms"]) == ("RETRYING", "w1", T0 + 61_000)
    assert "timed out" in ev["error"]
    assert list(jobs.history_of(j)[-1][1:3]) == ["pending", "timer"]
    assert "retry 1 of 2" in jobs.history_of(j)[-1][3]


def test_timeout_without_retries_left_fails_with_a_timeout_event():
    st = running_job(maxRetries=0, timeout=30)
    out = run(st, timeout("j1", 0, T0 + 40_000))
    assert out == {"outcome": "failed", "moved": ("running", "failed")}
    j = st.jobs["j1"]
    assert (j["status"], j["completed_at"], j["retry_count"]) == ("failed", T0 + 40_000, 0)
    assert "timed out after 30 s on w1" in j["error_message"]
    assert [e["status"] for e in events(st)] == ["RUNNING", "TIMEOUT"]
    assert events(st)[-1]["error"] == j["error_message"]
    assert S.running_counts(st) == {}


def test_a_timed_out_retry_fails_with_timeout_only_once_retries_are_used_up():
    st = running_job(maxRetries=1)
    run(st, timeout("j1", 0, T0 + 10), rep("j1", "running", T0 + 11, worker="w2"))
    assert st.jobs["j1"]["attempt"] == 1
    out = run(st, timeout("j1", 1, T0 + 20))
    assert out["outcome"] == "failed"
    assert [e["status"] for e in events(st)] == ["RUNNING", "RETRYING", "RUNNING", "TIMEOUT"]
    assert "on w2" in st.jobs["j1"]["error_message"]


def test_timeout_of_an_old_attempt_is_stale_and_changes_nothing():
    st = running_job(maxRetries=3)
    run(st, timeout("j1", 0, T0 + 10), rep("j1", "running", T0 + 11, worker="w2"))
    before = fingerprint(st)
    assert run(st, timeout("j1", 0, T0 + 12)) == {"outcome": "stale"}
    assert run(st, timeout("j1", 2, T0 + 13)) == {"outcome": "stale"}   # not yet
    assert fingerprint(st) == before


@pytest.mark.parametrize("status", ["pending", "queued", "completed", "failed", "cancelled"])
def test_timeout_of_a_job_that_is_not_running_is_stale(status):
    st = job_in(status)
    before = fingerprint(st)
    out = run(st, timeout("j1", st.jobs["j1"]["attempt"], T0 + 10_000_000))
    assert out == {"outcome": "stale"}
    assert fingerprint(st) == before


def test_timeout_of_an_unknown_job_is_stale():
    st = running_job()
    before = fingerprint(st)
    assert run(st, timeout("nope", 0, T0 + 10)) == {"outcome": "stale"}
    assert fingerprint(st) == before


# Dead workers ###############################################################

def test_expire_worker_ends_every_attempt_running_there_in_seq_order():
    st = fresh(reg("a", T0, maxRetries=0), reg("b", T0 + 1, maxRetries=2),
               reg("c", T0 + 2), reg("d", T0 + 3), reg("e", T0 + 4),
               # b starts before a on w1: the order of starting must not matter
               rep("b", "running", T0 + 10, worker="w1"),
               rep("a", "running", T0 + 11, worker="w1"),
               rep("c", "running", T0 + 12, worker="w2"),
               rep("e", "running", T0 + 13, worker="w1"),
               rep("e", "completed", T0 + 14, worker="w1"))
    n_events = len(st.outbox)
    out = run(st, expire("w1", T0 + 100))
    assert out == {"outcome": "expired",
                   "moves": [("a", "running", "failed"), ("b", "running", "pending")],
                   "publish_ids": ["b"]}
    new = events(st)[n_events:]
    assert [(e["job"], e["status"], e["worker"]) for e in new] == \
        [("a", "FAILED", "w1"), ("b", "RETRYING", "w1")]   # a dead worker is no timeout
    assert all("w1 stopped sending heartbeats" in e["error"] for e in new)
    assert st.jobs["b"]["retry_count"] == 1 and st.jobs["b"]["past"] == \
        [["w1", 0, S.OWED_IF_ALIVE, None]]
    # only the jobs running on w1
    assert st.jobs["c"]["status"] == "running" and st.jobs["c"]["worker_id"] == "w2"
    assert st.jobs["d"]["status"] == "pending"
    assert st.jobs["e"]["status"] == "completed"
    assert S.running_counts(st) == {"w2": 1}


def test_expire_worker_order_survives_a_snapshot():
    """Snapshot + the rest of the log gives the same outbox as the straight run."""
    head = [reg("a", T0), reg("b", T0 + 1),
            rep("b", "running", T0 + 2, worker="w1"), rep("a", "running", T0 + 3, worker="w1")]
    tail = [expire("w1", T0 + 10)]
    straight = fresh(*head, *tail)
    snap = json.loads(json.dumps(S.to_snapshot(fresh(*head)), default=Job.to_record))
    resumed = S.from_snapshot(snap)
    run(resumed, *tail)
    assert fingerprint(resumed) == fingerprint(straight)


def test_expire_of_a_worker_running_nothing_changes_nothing():
    st = running_job(worker="w1")
    before = fingerprint(st)
    assert run(st, expire("w9", T0 + 10)) == {"outcome": "expired", "moves": [],
                                               "publish_ids": []}
    assert fingerprint(st) == before


# Late reports from an earlier attempt (jobs.py, "Attempts") #################

@pytest.mark.parametrize("cause", ["timeout", "expire"])
@pytest.mark.parametrize("late", ["completed", "failed", "cancelled", "done"])
def test_the_owed_report_of_an_abandoned_attempt_goes_to_that_attempt(cause, late):
    st = running_job(maxRetries=3)
    run(st, end_attempt_by(cause, "j1", "w1", 0, T0 + 10))
    assert st.jobs["j1"]["status"] == "pending"
    before, n_hist, outbox = without_history(st, "j1"), len(jobs.history_of(st.jobs["j1"])), \
        dict(st.outbox)
    out = run(st, rep("j1", late, T0 + 20, worker="w1", result={"r": 1},
                      errorMessage="late", progress=80))
    assert out == {"outcome": "ignored", "reason": "stale_attempt"}
    j = st.jobs["j1"]
    paid = ["w1", 0, 0, jobs.REPORT_ALIASES[late]]
    assert j["past"] == [paid]                         # paid, with how it ended
    owed = S.OWED if cause == "timeout" else S.OWED_IF_ALIVE
    assert without_history(st, "j1").replace(json.dumps(paid), f'["w1", 0, {owed}, null]') \
        == before
    assert st.outbox == outbox
    hist = jobs.history_of(j)
    assert len(hist) == n_hist + 1
    assert list(hist[-1][:3]) == [T0 + 20, "pending", "w1"]
    assert hist[-1][3].startswith(f"attempt 1 {jobs.REPORT_ALIASES[late]} late on w1")
    assert hist[-1][3].endswith("result kept in history") and hist[-1][4] == {"r": 1}
    shown = jobs.api_json(j, history=True)["history"][-1]
    assert shown["result"] == {"r": 1}
    # once paid, a repeat of it is a repeat (rule C), still nothing changes
    assert run(st, rep("j1", late, T0 + 21, worker="w1"))["reason"] == "stale_attempt"
    assert "ignored late" in jobs.history_of(j)[-1][3] and j["status"] == "pending"


@pytest.mark.parametrize("cause", ["report", "timeout", "expire"])
def test_late_report_after_the_job_went_terminal_is_noted_and_ignored(cause):
    st = running_job(maxRetries=0)
    run(st, end_attempt_by(cause, "j1", "w1", 0, T0 + 10))
    assert st.jobs["j1"]["status"] == "failed"
    before, outbox = without_history(st, "j1"), dict(st.outbox)
    out = run(st, rep("j1", "completed", T0 + 20, worker="w1", result={"r": 1}))
    assert out == {"outcome": "ignored", "reason": "terminal"}
    after = without_history(st, "j1")
    owed = S.OWED if cause == "timeout" else S.OWED_IF_ALIVE
    assert (after if cause == "report"
            else after.replace('["w1", 0, 0, "completed"]', f'["w1", 0, {owed}, null]')) \
        == before
    assert st.outbox == outbox
    assert jobs.history_of(st.jobs["j1"])[-1][2] == "w1"
    if cause == "report":        # w1 reported the end: not owed, a repeat
        assert "ignored late completed" in jobs.history_of(st.jobs["j1"])[-1][3]
    else:
        assert "attempt 1 completed late on w1" in jobs.history_of(st.jobs["j1"])[-1][3]


@pytest.mark.parametrize("cause", ["report", "timeout", "expire"])
@pytest.mark.parametrize("waiting", ["pending", "queued"])
def test_running_report_from_the_last_worker_starts_the_new_attempt(cause, waiting):
    st = running_job(maxRetries=3)
    run(st, end_attempt_by(cause, "j1", "w1", 0, T0 + 10, backoff_ms=5000))
    if waiting == "queued":
        run(st, mark_queued([("j1", 1)], T0 + 11))
    assert st.jobs["j1"]["status"] == waiting
    at = T0 + 20
    if waiting == "pending":
        # During the backoff the retry is not published: a running then is a late one
        assert run(st, rep("j1", "running", at, worker="w1")) == \
            {"outcome": "ignored", "reason": "stale_attempt"}
        assert st.jobs["j1"]["status"] == "pending" and "backoff" in \
            jobs.history_of(st.jobs["j1"])[-1][3]
        at = T0 + 10 + 5000                                  # backoff over: published
    out = run(st, rep("j1", "running", at, worker="w1"))
    assert out == {"outcome": "updated", "moved": (waiting, "running")}
    j = st.jobs["j1"]
    assert (j["status"], j["worker_id"], j["running_since"], j["started_at"]) == \
        ("running", "w1", at, at)
    assert "not_before" not in j and "error_message" not in j
    assert events(st)[-1]["status"] == "RUNNING"
    if cause != "report":
        # w1 still owes attempt 1's end: its first terminal report is that one
        out = run(st, rep("j1", "completed", T0 + 30, worker="w1", result={"a": 1}))
        assert out == {"outcome": "ignored", "reason": "stale_attempt"}
        assert j["status"] == "running" and j["result"] is None
    # then the current attempt's completion counts
    out = run(st, rep("j1", "completed", T0 + 40, worker="w1", result={"a": 2}))
    assert out["moved"] == ("running", "completed")
    assert json.loads(j["result"]) == {"a": 2}


def test_timeout_then_the_same_worker_takes_the_retry():
    """The issue's case: a 5 s job with timeout 2 on one worker. Attempt 1 times out,
    w1 takes attempt 2, attempt 1's late completion arrives: it is attempt 1's."""
    st = running_job(maxRetries=3, timeout=2)
    run(st, timeout("j1", 0, T0 + 2_002), mark_queued([("j1", 1)], T0 + 2_010),
        rep("j1", "running", T0 + 2_020, worker="w1"))
    out = run(st, rep("j1", "completed", T0 + 5_002, worker="w1", result={"n": 1}))
    assert out == {"outcome": "ignored", "reason": "stale_attempt"}
    j = st.jobs["j1"]
    shown = jobs.api_json(j, history=True)
    assert (shown["status"], shown["worker_id"], shown["started_at"], shown["result"],
            shown["error_message"]) == ("running", "w1", T0 + 2_020, None, None)
    assert shown["history"][-1]["reason"] == \
        "attempt 1 completed late on w1, result kept in history"
    assert shown["history"][-1]["result"] == {"n": 1}
    out = run(st, rep("j1", "completed", T0 + 7_020, worker="w1", result={"n": 2}))
    assert out["moved"] == ("running", "completed")
    assert (json.loads(j["result"]), j.get("error_message")) == ({"n": 2}, None)
    assert jobs.why(j, T0 + 8_000, None, 1).startswith("completed by w1 in 5 s")


def test_a_slow_job_timing_out_again_on_the_same_worker_keeps_each_result_apart():
    """CI run of 2026-12-06 (fault seed 1796550205): attempt 1 times out on w3, w2 fails
    attempt 2, w3 takes attempt 3 and then sends attempt 1's late completion; attempt 3
    times out too (the job is slow), w3 takes attempt 4 and sends attempt 3's, then
    attempt 4's. Each report is its own attempt's: a worker reports in the order it
    began its runs (rule B), so attempt 3 still owes its report after w3 paid attempt
    1's while running it."""
    st = running_job(maxRetries=3, timeout=1, worker="w3")
    run(st, timeout("j1", 0, T0 + 1_000), mark_queued([("j1", 1)], T0 + 1_001),
        rep("j1", "running", T0 + 1_010, worker="w2"),
        fail("j1", T0 + 1_020, worker="w2"), mark_queued([("j1", 2)], T0 + 1_021),
        rep("j1", "running", T0 + 1_030, worker="w3"))
    out = run(st, rep("j1", "completed", T0 + 2_000, worker="w3", result={"n": 0}))
    assert out == {"outcome": "ignored", "reason": "stale_attempt"}
    run(st, timeout("j1", 2, T0 + 2_030), mark_queued([("j1", 3)], T0 + 2_031),
        rep("j1", "running", T0 + 2_040, worker="w3"))
    out = run(st, rep("j1", "completed", T0 + 3_030, worker="w3", result={"n": 2}))
    assert out == {"outcome": "ignored", "reason": "stale_attempt"}
    j = st.jobs["j1"]
    assert (j["status"], j["attempt"], j["result"]) == ("running", 3, None)
    out = run(st, rep("j1", "completed", T0 + 3_040, worker="w3", result={"n": 3}))
    assert out["moved"] == ("running", "completed")
    assert json.loads(j["result"]) == {"n": 3}
    late = [(h[3], h[4]) for h in jobs.history_of(j) if len(h) > 4]
    assert late == [("attempt 1 completed late on w3, result kept in history", {"n": 0}),
                    ("attempt 3 completed late on w3, result kept in history", {"n": 2})]


def test_every_attempt_of_a_too_slow_job_times_out_and_each_late_result_is_its_own():
    """The issue's case run on: a 5 s job with timeout 2 and 3 retries on one worker
    that takes each retry at once (it has several slots). Every attempt times out; each
    completion arrives 5 s after its start and lands on its own attempt."""
    st = running_job(maxRetries=3, timeout=2)
    starts, sent = [T0], set()
    for attempt in range(4):
        at = starts[attempt] + 2_000
        run(st, timeout("j1", attempt, at))
        for n, begun in enumerate(starts):
            if begun + 5_000 <= at and n not in sent:
                sent.add(n)
                run(st, rep("j1", "completed", begun + 5_000, worker="w1",
                            result={"n": n}))
        if attempt < 3:
            run(st, mark_queued([("j1", attempt + 1)], at + 1),
                rep("j1", "running", at + 2, worker="w1"))
            starts.append(at + 2)
    j = st.jobs["j1"]
    assert j["status"] == "failed"
    late = [h[4] for h in jobs.history_of(j) if len(h) > 4]
    assert late == [{"n": 0}, {"n": 1}]
    for n in (2, 3):
        out = run(st, rep("j1", "completed", starts[n] + 5_000, worker="w1",
                          result={"n": n}))
        assert out == {"outcome": "ignored", "reason": "terminal"}
    late = [h[4] for h in jobs.history_of(j) if len(h) > 4]
    assert late == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]


@pytest.mark.parametrize("again", ["retry", "register"])
def test_cancel_then_a_new_attempt_then_the_old_worker_finishes(again):
    """The issue's first case: the cancelled attempt's worker runs on; its completion
    must not complete the new attempt, which another worker then really runs."""
    st = running_job(maxRetries=3)
    run(st, cancel("j1", T0 + 10))
    run(st, {"op": "retry", "ids": ["j1"], "at_ms": T0 + 20} if again == "retry"
        else reg("j1", T0 + 20))
    j = st.jobs["j1"]
    assert (j["status"], j["attempt"], j["worker_id"], j["started_at"]) == \
        ("pending", 1, None, None)
    out = run(st, rep("j1", "completed", T0 + 30, worker="w1", result={"old": 1}))
    assert out == {"outcome": "ignored", "reason": "stale_attempt"}
    assert j["status"] == "pending" and j["result"] is None
    assert "attempt 1 completed late on w1" in jobs.history_of(j)[-1][3]
    run(st, mark_queued([("j1", 1)], T0 + 31), rep("j1", "running", T0 + 40, worker="w2"))
    out = run(st, rep("j1", "completed", T0 + 50, worker="w2", result={"new": 1}))
    assert out["moved"] == ("running", "completed")
    assert (j["worker_id"], json.loads(j["result"]), j["started_at"]) == \
        ("w2", {"new": 1}, T0 + 40)
    assert j["queued_at"] == T0 + 31 and j["started_at"] >= j["queued_at"]


def test_a_repeated_completed_after_a_retry_of_a_completed_job_is_a_repeat():
    """The Java worker posts asynchronously and retries: its completed of attempt 1
    arrives again after the job was retried: rule C, the new attempt is untouched."""
    st = running_job(maxRetries=3)
    run(st, rep("j1", "completed", T0 + 10, worker="w1", result={"a": 1}),
        {"op": "retry", "ids": ["j1"], "at_ms": T0 + 20})
    j = st.jobs["j1"]
    assert j["past"] == [["w1", 0, 0, "completed"]]
    for status in ("pending", "running"):
        if status == "running":
            run(st, rep("j1", "running", T0 + 30, worker="w2"))
        out = run(st, rep("j1", "completed", T0 + 31, worker="w1", result={"a": 1}))
        assert out == {"outcome": "ignored", "reason": "stale_attempt"}
        assert j["status"] == status and j["result"] is None
    # a late running of attempt 1 while w2 runs attempt 2 changes nothing either
    assert run(st, rep("j1", "running", T0 + 32, worker="w1"))["reason"] == "stale_attempt"
    assert j["worker_id"] == "w2"


def test_reports_from_other_workers_still_count_after_a_timeout():
    st = running_job(maxRetries=3)
    run(st, timeout("j1", 0, T0 + 10))
    out = run(st, rep("j1", "completed", T0 + 20, worker="w2"))
    assert out["moved"] == ("pending", "completed")


def test_reports_without_a_worker_go_to_the_current_attempt():
    st = running_job(maxRetries=3)
    run(st, timeout("j1", 0, T0 + 10))
    out = run(st, rep("j1", "completed", T0 + 20, worker=None))
    assert out["moved"] == ("pending", "completed")


def test_past_is_bounded():
    st = running_job(maxRetries=100)
    for n in range(S.PAST_MAX + 3):
        run(st, timeout("j1", n, T0 + 10 + 2 * n),
            rep("j1", "running", T0 + 11 + 2 * n, worker="w%d" % n))
    assert len(st.jobs["j1"]["past"]) == S.PAST_MAX
    # attempt n + 1 ran on w<n> and timed out
    assert st.jobs["j1"]["past"][-1] == ["w%d" % (S.PAST_MAX + 1), S.PAST_MAX + 2, 1, None]


def test_a_late_result_kept_in_history_is_capped():
    st = running_job(maxRetries=3)
    run(st, timeout("j1", 0, T0 + 10))
    big = {"blob": "x" * (2 * jobs.HISTORY_RESULT_BYTES)}
    run(st, rep("j1", "completed", T0 + 20, worker="w1", result=big))
    kept = jobs.history_of(st.jobs["j1"])[-1][4]
    assert kept["truncated"] is True and kept["bytes"] > jobs.HISTORY_RESULT_BYTES
    assert len(json.dumps(kept)) < jobs.HISTORY_RESULT_BYTES


# Retry backoff ##############################################################

@pytest.mark.parametrize("cause", ["report", "timeout", "expire"])
def test_backoff_before_each_retry_doubles(cause):
    st = running_job(maxRetries=4)
    at = T0 + 1000
    for n, factor in enumerate([1, 2, 4, 8]):
        run(st, end_attempt_by(cause, "j1", "w%d" % (n + 1), n, at, backoff_ms=1500))
        j = st.jobs["j1"]
        assert (j["status"], j["retry_count"]) == ("pending", n + 1)
        assert j["not_before"] == at + 1500 * factor
        at += 100
        run(st, rep("j1", "running", at, worker="w%d" % (n + 2)))
        assert "not_before" not in j            # the new attempt started
        at += 100
    run(st, end_attempt_by(cause, "j1", "w5", 4, at, backoff_ms=1500))
    assert st.jobs["j1"]["status"] == "failed" and "not_before" not in st.jobs["j1"]


@pytest.mark.parametrize("cause", ["report", "timeout", "expire"])
def test_zero_backoff_sets_no_not_before(cause):
    st = running_job(maxRetries=2)
    run(st, end_attempt_by(cause, "j1", "w1", 0, T0 + 10, backoff_ms=0))
    assert st.jobs["j1"]["status"] == "pending" and "not_before" not in st.jobs["j1"]


def test_failed_report_carries_the_backoff_only_when_configured():
    assert "retry_backoff_ms" not in fail("j1", T0, backoff_ms=0)
    assert fail("j1", T0, backoff_ms=250)["retry_backoff_ms"] == 250
    ran = parse.report({"jobId": "j1", "status": "running"}, None, max_retries=3,
                       execution_timeout=300, retry_backoff_ms=250)
    assert "retry_backoff_ms" not in ran


def test_broker_confirm_of_the_retry_clears_not_before():
    st = running_job(maxRetries=2)
    run(st, fail("j1", T0 + 10, backoff_ms=1000))
    assert st.jobs["j1"]["not_before"] == T0 + 1010
    run(st, mark_queued([("j1", 0)], T0 + 2000))                # stale confirm
    assert st.jobs["j1"]["not_before"] == T0 + 1010
    run(st, mark_queued([("j1", 1)], T0 + 2001))
    assert st.jobs["j1"]["status"] == "queued" and "not_before" not in st.jobs["j1"]


def test_a_new_register_clears_not_before_and_keeps_what_is_owed():
    st = running_job(maxRetries=2)
    run(st, timeout("j1", 0, T0 + 10, backoff_ms=60_000), cancel("j1", T0 + 20))
    j = st.jobs["j1"]
    assert (j["status"], j["past"], j["not_before"]) == \
        ("cancelled", [["w1", 0, 1, None]], T0 + 60_010)
    out = run(st, reg("j1", T0 + 30))
    assert out["outcome"] == "restarted"
    assert "not_before" not in j
    assert (j["retry_count"], j["attempt"]) == (0, 2)
    # w1's completed without a running is attempt 1's, still owed: not this attempt's
    assert run(st, rep("j1", "completed", T0 + 40, worker="w1")) == \
        {"outcome": "ignored", "reason": "stale_attempt"}
    # w1 taking the new attempt: its completion counts
    run(st, rep("j1", "running", T0 + 50, worker="w1"))
    assert run(st, rep("j1", "completed", T0 + 60, worker="w1"))["moved"] == \
        ("running", "completed")


# Cancellation in every non-terminal state ###################################

@pytest.mark.parametrize("cause", ["report", "timeout", "expire"])
def test_cancel_of_a_job_waiting_for_its_retry_cancels_it(cause):
    st = running_job(maxRetries=2)
    run(st, end_attempt_by(cause, "j1", "w1", 0, T0 + 10, backoff_ms=60_000))
    out = run(st, cancel("j1", T0 + 20))
    assert out == {"outcome": "cancelled", "moved": ("pending", "cancelled")}
    assert run(st, mark_queued([("j1", 1)], T0 + 21))["queued"] == 0
    assert run(st, timeout("j1", 1, T0 + 22)) == {"outcome": "stale"}
    assert st.jobs["j1"]["status"] == "cancelled"


# History ####################################################################

def test_history_stays_bounded_under_late_reports():
    st = running_job(maxRetries=0)
    run(st, timeout("j1", 0, T0 + 10))
    for i in range(S.HISTORY_MAX + 5):
        run(st, rep("j1", "completed", T0 + 20 + i, worker="w1"))
    hist = jobs.history_of(st.jobs["j1"])
    assert len(hist) == S.HISTORY_MAX
    assert hist[-1][0] == T0 + 20 + S.HISTORY_MAX + 4
    assert st.jobs["j1"]["status"] == "failed"


# Retention: evict ###########################################################

def mixed() -> State:
    """Jobs in every status, several on w1, in two queues."""
    return fresh(
        reg("p", T0, priority=1), reg("q", T0, publish=False), reg("r", T0, priority=12),
        reg("c", T0, priority=12), reg("f", T0, maxRetries=0), reg("x", T0),
        rep("r", "running", T0 + 1, worker="w1"),
        rep("c", "running", T0 + 2, worker="w1"), rep("c", "completed", T0 + 3, worker="w1"),
        rep("f", "running", T0 + 4, worker="w1"), rep("f", "failed", T0 + 5, worker="w1"),
        cancel("x", T0 + 6),
        rep("g", "completed", T0 + 7, worker="w2"))        # known only from a report


def test_evict_removes_only_terminal_jobs_and_keeps_every_index():
    st = mixed()
    out = run(st, evict(["p", "q", "r", "c", "f", "x", "g", "nope", "c"], T0 + 100))
    assert out == {"outcome": "evicted", "evicted": 4}
    assert sorted(st.jobs) == ["p", "q", "r"]
    assert st.evicted == 4
    assert S.running_counts(st) == {"w1": 1}
    assert {w: list(ix) for w, ix in st.by_worker.items()} == {"w1": [st.jobs["r"]["seq"]]}
    assert "unknown" not in st.by_type
    assert S.counts_by_queue(st)["job.high"] == {"waiting": 0, "scheduled": 0, "pending": 0, "queued": 0,
                                                  "running": 1,
                                                  "completed": 0, "failed": 0,
                                                  "cancelled": 0}
    assert S.eviction_candidates(st, T0 + 10**9, 0, 0) == []
    run(st, evict(["f"], T0 + 101))
    assert st.evicted == 4                       # counted once


def test_an_evicted_id_comes_back_as_a_new_job():
    st = mixed()
    seq = st.jobs["c"]["seq"]
    run(st, evict(["c"], T0 + 100), reg("c", T0 + 200))
    j = st.jobs["c"]
    assert j["seq"] > seq and j["status"] == "pending" and j["created_at"] == T0 + 200


def test_evict_of_a_job_that_became_non_terminal_again_keeps_it():
    st = mixed()
    ids = S.eviction_candidates(st, T0 + 10**6, 1000, 10**6)
    assert "c" in ids
    run(st, reg("c", T0 + 200))                   # retried by the gateway meanwhile
    before = fingerprint(st)
    out = run(st, evict(["c"], T0 + 201))
    assert out["evicted"] == 0 and st.jobs["c"]["status"] == "pending"
    assert json.loads(fingerprint(st))["jobs"] == json.loads(before)["jobs"]


# Retention: eviction_candidates ##############################################

def finished(n: int, *, step=1000, start=T0, priority=5) -> State:
    """n jobs, each completed `step` ms after the one before it; j0 first."""
    st = State()
    for i in range(n):
        at = start + i * step
        run(st, reg("j%d" % i, at, priority=priority), rep("j%d" % i, "completed", at))
    return st


def test_candidates_by_age_are_those_finished_at_or_before_the_cutoff():
    st = finished(5)
    now = T0 + 10_000
    # cutoff = now - 7000 = T0 + 3000: j0..j3
    assert S.eviction_candidates(st, now, 7000, 100) == ["j0", "j1", "j2", "j3"]
    assert S.eviction_candidates(st, now, 7001, 100) == ["j0", "j1", "j2"]
    assert S.eviction_candidates(st, now, 6000, 100) == ["j0", "j1", "j2", "j3", "j4"]
    assert S.eviction_candidates(st, now, 10_001, 100) == []


def test_candidates_by_count_are_the_oldest_terminal_jobs():
    st = finished(5)
    run(st, reg("p1", T0 + 9000), reg("p2", T0 + 9001))      # 7 jobs, 2 pending
    assert S.eviction_candidates(st, T0 + 10_000, 10**9, 4) == ["j0", "j1", "j2"]
    assert S.eviction_candidates(st, T0 + 10_000, 10**9, 7) == []
    # more excess than terminal jobs: never a pending one
    assert S.eviction_candidates(st, T0 + 10_000, 10**9, 0) == ["j0", "j1", "j2", "j3", "j4"]


def test_candidates_by_age_and_count_together():
    st = finished(6)
    # age alone picks j0, j1; count (max 2) needs 4
    assert S.eviction_candidates(st, T0 + 4000, 3000, 100) == ["j0", "j1"]
    assert S.eviction_candidates(st, T0 + 4000, 3000, 2) == ["j0", "j1", "j2", "j3"]


def test_candidates_are_never_non_terminal():
    st = fresh(reg("a", T0), reg("b", T0, publish=False), rep("c", "running", T0),
               reg("d", T0), rep("d", "completed", T0 + 1), reg("d", T0 + 2))
    assert st.jobs["d"]["status"] == "pending"
    assert S.eviction_candidates(st, T0 + 10**9, 0, 0) == []


def test_candidates_are_bounded_by_limit():
    st = finished(10)
    assert S.eviction_candidates(st, T0 + 10**9, 0, 0, limit=3) == ["j0", "j1", "j2"]
    assert S.eviction_candidates(st, T0 + 10**9, 0, 100, limit=3) == ["j0", "j1", "j2"]


def test_candidates_skip_what_was_evicted():
    st = finished(4)
    run(st, evict(["j0", "j2"], T0 + 10_000))
    assert S.eviction_candidates(st, T0 + 10**9, 0, 100) == ["j1", "j3"]


def test_eviction_keeps_up_round_after_round_with_a_small_limit():
    # Evicted entries must leave the head of the fifo, or the bounded walk would see
    # only them after a few rounds.
    st = finished(12)
    rounds = 0
    while True:
        ids = S.eviction_candidates(st, T0 + 10**9, 0, 10**6, limit=2)
        if not ids:
            break
        run(st, evict(ids, T0 + 10**9))
        rounds += 1
    assert (st.jobs, st.evicted, rounds) == ({}, 12, 6)
    assert len(st.terminal_fifo) == 0


def test_a_job_finished_again_does_not_hold_back_older_ones():
    # j0 finishes first, is registered again and finishes last: by age, j1..j3 are
    # old enough and j0 is not.
    st = finished(4)
    run(st, reg("j0", T0 + 50_000), rep("j0", "completed", T0 + 50_000))
    assert S.eviction_candidates(st, T0 + 20_000 + 3000, 20_000, 100) == ["j1", "j2", "j3"]
    # by count, the oldest finished first
    assert S.eviction_candidates(st, T0 + 50_000, 10**9, 2) == ["j1", "j2"]


def candidates_after_round_trip(st: State, *args) -> list:
    restored = S.from_snapshot(json.loads(json.dumps(S.to_snapshot(st), default=Job.to_record)))
    check(restored)
    return S.eviction_candidates(restored, *args)


@pytest.mark.parametrize("args", [
    (T0 + 10**9, 0, 10**6),           # everything terminal, by age
    (T0 + 30_000, 12_000, 10**6),     # by age, some
    (T0 + 30_000, 10**9, 6),          # by count
    (T0 + 30_000, 10**9, 0),
    (T0 + 30_000, 10**9, 0, 2),       # bounded by limit
])
def test_candidates_are_the_same_after_a_snapshot_round_trip(args):
    st = finished(8, step=2000)
    run(st, reg("j3", T0 + 20_001),                          # finished again, later
        rep("j3", "completed", T0 + 20_002),
        reg("j5", T0 + 20_003),                              # non-terminal again
        cancel("j5", T0 + 20_004), reg("j5", T0 + 20_005),
        reg("p", T0 + 20_006), rep("r", "running", T0 + 20_007),
        evict(["j1"], T0 + 20_008),
        rep("k", "failed", T0 + 20_009))
    want = S.eviction_candidates(st, *args)
    assert want, "the case must pick something"
    assert candidates_after_round_trip(st, *args) == want


# oldest_created_at ##########################################################

def test_oldest_created_at_per_queue():
    st = fresh(reg("h1", T0 + 1, priority=10), reg("h2", T0 + 2, priority=15),
               reg("l1", T0 + 3, priority=1), reg("m1", T0 + 4, priority=5),
               reg("l2", T0 + 5, priority=1, publish=False), reg("l3", T0 + 6, priority=1),
               reg("h3", T0 + 7, priority=10),
               mark_queued([("h1", 0)], T0 + 8), cancel("m1", T0 + 9))
    assert S.oldest_created_at(st, "pending") == {"job.high": T0 + 2, "job.low": T0 + 3}
    assert S.oldest_created_at(st, "queued") == {"job.high": T0 + 1, "job.low": T0 + 5}
    assert S.oldest_created_at(st, "running") == {}
    run(st, rep("h2", "running", T0 + 10), rep("l1", "running", T0 + 11),
        rep("l3", "running", T0 + 12))
    assert S.oldest_created_at(st, "pending") == {"job.high": T0 + 7}
    assert S.oldest_created_at(st, "running") == {"job.high": T0 + 2, "job.low": T0 + 3}


# jobs.why() #################################################################

def clock(at_ms: int) -> str:
    return jobs.iso_ms(at_ms)[11:19]


def test_why_pending_with_the_broker_down():
    st = job_in("pending")
    text = jobs.why(st.jobs["j1"], T0 + 5000, T0 + 1000, 3)
    assert text.startswith("pending")
    assert "RabbitMQ unreachable" in text and clock(T0 + 1000) in text


def test_why_pending_waiting_for_the_broker_to_confirm():
    st = job_in("pending", priority=12)
    text = jobs.why(st.jobs["j1"], T0 + 5000, None, 3)
    assert text.startswith("pending") and "job.high" in text and "confirm" in text
    assert "unreachable" not in text and "backoff" not in text


def test_why_pending_during_backoff_then_after_it():
    st = running_job(maxRetries=3)
    run(st, fail("j1", T0 + 10, backoff_ms=90_000))
    j = st.jobs["j1"]
    text = jobs.why(j, T0 + 20, T0 + 15, 3)              # backoff first, broker or not
    assert "retry 1 of 3" in text and "backoff" in text and clock(T0 + 90_010) in text
    text = jobs.why(j, T0 + 90_010, None, 3)
    assert "backoff" not in text and "confirm" in text


@pytest.mark.parametrize("workers, words", [(0, "0 responsive workers"),
                                            (1, "1 responsive worker"),
                                            (7, "7 responsive workers")])
def test_why_queued_says_how_long_and_how_many_workers(workers, words):
    st = job_in("queued", priority=1)          # queued_at = T0 + 1
    text = jobs.why(st.jobs["j1"], T0 + 1 + 185_000, None, workers)
    assert text.startswith("queued in job.low")
    assert "3 min 5 s" in text
    assert text.endswith(words)


def test_why_running_on_a_worker_for_x_of_y_seconds():
    st = running_job(worker="wk-7", timeout=120)      # running since T0 + 2
    text = jobs.why(st.jobs["j1"], T0 + 2 + 45_000, None, 1)
    assert "running on wk-7" in text and "45 s" in text and "of 120 s" in text
    text = jobs.why(st.jobs["j1"], T0 + 2 + 2 * 3600_000 + 60_000, None, 1)
    assert "2 h 1 min" in text


def test_why_completed_names_the_worker_and_the_run_time():
    st = running_job(worker="w3")
    run(st, rep("j1", "completed", T0 + 2 + 4000, worker="w3"))
    text = jobs.why(st.jobs["j1"], T0 + 10**6, None, 0)
    assert text.startswith("completed by w3") and "4 s" in text


def test_why_completed_does_not_time_a_run_it_never_saw():
    st = running_job(worker="w1", maxRetries=2)
    run(st, fail("j1", T0 + 4000), rep("j1", "completed", T0 + 600_000, worker="w2"))
    text = jobs.why(st.jobs["j1"], T0 + 10**6, None, 0)
    assert text.startswith("completed by w2")
    assert " in " not in text                # not "in 9 min 56 s", timed from attempt 0


@pytest.mark.parametrize("max_retries, attempts", [(0, "1 attempt:"), (2, "3 attempts:")])
def test_why_failed_gives_the_attempts_and_the_error(max_retries, attempts):
    st = running_job(maxRetries=max_retries)
    for n in range(max_retries + 1):
        run(st, rep("j1", "running", T0 + 10 + 2 * n, worker="w1"),
            rep("j1", "failed", T0 + 11 + 2 * n, worker="w1", errorMessage="disk %d" % n))
    text = jobs.why(st.jobs["j1"], T0 + 10**6, None, 0)
    assert text.startswith("failed after " + attempts)
    assert text.endswith("disk %d" % max_retries)


def test_why_failed_by_timeout_quotes_the_timeout():
    st = running_job(maxRetries=0, timeout=30)
    run(st, timeout("j1", 0, T0 + 40_000))
    assert "timed out after 30 s" in jobs.why(st.jobs["j1"], T0 + 10**6, None, 0)


@pytest.mark.parametrize("how, by", [("api", "api"), ("worker", "w1")])
def test_why_cancelled_says_by_whom_and_when(how, by):
    st = running_job()
    run(st, cancel("j1", T0 + 5000) if how == "api"
        else rep("j1", "cancelled", T0 + 5000, worker="w1"))
    text = jobs.why(st.jobs["j1"], T0 + 10**6, None, 0)
    assert text.startswith("cancelled by " + by) and clock(T0 + 5000) in text


def test_why_cancelled_is_not_confused_by_a_late_report_note():
    st = running_job(maxRetries=3)
    run(st, timeout("j1", 0, T0 + 10), cancel("j1", T0 + 5000),
        rep("j1", "completed", T0 + 6000, worker="w1"))
    assert jobs.history_of(st.jobs["j1"])[-1][2] == "w1"         # the ignored late report
    text = jobs.why(st.jobs["j1"], T0 + 10**6, None, 0)
    assert text.startswith("cancelled by api") and clock(T0 + 5000) in text


def test_why_has_a_line_for_every_status():
    for status in jobs.STATUSES:
        st = job_in(status)
        text = jobs.why(st.jobs["j1"], T0 + 10**6, None, 2)
        assert text.startswith(status) and "\n" not in text
