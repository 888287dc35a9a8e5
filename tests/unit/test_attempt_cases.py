"""Cases a hostile review of 08ecd5a (the first cut of jobs.py's "Attempts" rules)
found, each failing there: the Java worker's posts out of order, a late `running`
during a backoff, a worker displaced by a redelivery, `past` forgetting what is owed,
and a hung attempt whose worker takes the retries. Pure: apply() only, via the
helpers of tests/unit/helpers.py."""

from dqorch import jobs
from dqorch import state as S
from tests.unit.helpers import T0, cancel, fail, mark_queued, rep, run, running_job, timeout


def _retry(id_, at_ms):
    return {"op": "retry", "ids": [id_], "at_ms": at_ms}


def time_out_and_complete_on_w1(st, attempts, at: int, step_ms: int) -> int:
    """Each attempt times out; while the job is then pending, w1 takes the retry and
    reports running then completed, in order. Returns the time after the last."""
    for attempt in attempts:
        run(st, timeout("j1", attempt, at))
        if st.jobs["j1"]["status"] != "pending":
            break
        run(st, mark_queued([("j1", attempt + 1)], at + 1),
            rep("j1", "running", at + 2, worker="w1"),
            rep("j1", "completed", at + 3, worker="w1", result={"n": attempt + 1}))
        at += step_ms
    return at


# F1. Java worker, same worker takes the next attempt, its `completed` overtakes its
# `running` (CONTRACT §1). Rule C takes the completed for a repeat of attempt 1.
def test_f1_out_of_order_completed_of_a_new_attempt_on_the_same_worker_counts():
    st = running_job(maxRetries=3)
    run(st, fail("j1", T0 + 10, worker="w1", errorMessage="boom"),   # attempt 1 ends, reported
        mark_queued([("j1", 1)], T0 + 11))
    # w1 takes attempt 2; its async posts arrive completed first, then running
    out = run(st, rep("j1", "completed", T0 + 20, worker="w1", result={"a": 2}))
    late = run(st, rep("j1", "running", T0 + 21, worker="w1"))
    j = st.jobs["j1"]
    assert j["status"] == "completed", (out, late, j["status"])  # is: running, nobody to report


def test_f1b_one_dropped_completed_then_every_later_attempt_on_that_worker_is_eaten():
    """The consequence of F1 (and of documented blind spot 1: 'late, not wrong'): the
    timeout makes w1 owe the attempt whose completion was dropped; from then on each
    attempt's completed by w1 pays the previous one and the job ends FAILED although
    every run on w1 after the first completed."""
    st = running_job(maxRetries=3, timeout=60)
    run(st, fail("j1", T0 + 10, worker="w1"), mark_queued([("j1", 1)], T0 + 11),
        rep("j1", "completed", T0 + 20, worker="w1"),          # attempt 2, out of order
        rep("j1", "running", T0 + 21, worker="w1"))
    at = time_out_and_complete_on_w1(st, (1, 2, 3), T0 + 100_000, 100_000)
    assert st.jobs["j1"]["status"] == "completed", jobs.why(st.jobs["j1"], at, None, 1)


# F2. Documented blind spot 2 says the worker that really takes the waiting attempt
# rebinds it. During a retry backoff nobody takes it: the dispatcher publishes only a
# PENDING job once not_before passed (dispatch.JobPublisher.publish), and the late
# `running` made it RUNNING. The attempt is never published; the job sits on w1 until
# its execution timeout, which then makes w1 owe it (F1b cascade).
def test_f2_late_running_during_backoff_does_not_take_an_unpublished_attempt():
    st = running_job(maxRetries=3)
    run(st, fail("j1", T0 + 10, worker="w1", backoff_ms=30_000))
    assert st.jobs["j1"]["not_before"] == T0 + 30_010
    # the Java worker's retried `running` of attempt 1 arrives after its `failed`
    run(st, rep("j1", "running", T0 + 12, worker="w1"))
    j = st.jobs["j1"]
    assert (j["status"], j.get("not_before")) == ("pending", T0 + 30_010), \
        (j["status"], j.get("not_before"))


# F3. Rule A rebinds a running attempt to the worker RabbitMQ redelivered it to, but
# forgets the displaced worker (it is not put in `past`). If it was still running
# (its AMQP connection died, not the process; or an at-least-once duplicate), its
# terminal report later lands on the *next* attempt (rule D).
def test_f3_worker_displaced_by_redelivery_does_not_complete_the_next_attempt():
    st = running_job(maxRetries=3)
    run(st, rep("j1", "running", T0 + 5, worker="w2"),          # redelivered to w2
        timeout("j1", 0, T0 + 10), mark_queued([("j1", 1)], T0 + 11),
        rep("j1", "running", T0 + 20, worker="w3"))             # attempt 2 on w3
    out = run(st, rep("j1", "completed", T0 + 30, worker="w1", result={"old": 1}))
    j = st.jobs["j1"]
    assert (j["status"], j["worker_id"]) == ("running", "w3"), (out, j["status"])


def test_f3b_same_with_a_failed_report_of_the_redelivered_copy():
    st = running_job(maxRetries=3)
    run(st, rep("j1", "running", T0 + 5, worker="w2"),
        fail("j1", T0 + 10, worker="w2", errorMessage="boom"))   # attempt 1 ends on w2
    out = run(st, rep("j1", "completed", T0 + 30, worker="w1", result={"old": 1}))
    assert st.jobs["j1"]["status"] == "pending", out            # is: completed by attempt 1's run


# F4. PAST_MAX dropped the oldest entry even when it was still owed; the worker then
# fell under rule D and its late report completed the current attempt. Paid entries
# are forgotten first now.
def test_f4_an_owed_entry_outlives_paid_ones_past_past_max():
    st = running_job(maxRetries=100, worker="w0")
    run(st, timeout("j1", 0, T0 + 5))                          # w0 owes attempt 1
    for i in range(S.PAST_MAX + 1):                            # attempts that fail, reported
        run(st, rep("j1", "running", T0 + 10 + 2 * i, worker="w%d" % (i + 1)),
            fail("j1", T0 + 11 + 2 * i, worker="w%d" % (i + 1)))
    run(st, rep("j1", "running", T0 + 900, worker="wz"))
    assert len(st.jobs["j1"]["past"]) == S.PAST_MAX
    assert ["w0", 0, 1, None] in st.jobs["j1"]["past"]
    out = run(st, rep("j1", "completed", T0 + 1000, worker="w0", result={"late": 0}))
    assert out == {"outcome": "ignored", "reason": "stale_attempt"}
    assert st.jobs["j1"]["status"] == "running"


def test_f4b_same_with_cancel_and_manual_retry():
    st = running_job(maxRetries=3, worker="w0")
    run(st, cancel("j1", T0 + 5), _retry("j1", T0 + 6))        # w0 owes attempt 1
    for i in range(S.PAST_MAX + 1):                            # attempts its workers end
        run(st, rep("j1", "running", T0 + 10 + 3 * i, worker="w%d" % (i + 1)),
            rep("j1", "completed", T0 + 11 + 3 * i, worker="w%d" % (i + 1)),
            _retry("j1", T0 + 12 + 3 * i))
    run(st, rep("j1", "running", T0 + 900, worker="wz"))
    out = run(st, rep("j1", "completed", T0 + 1000, worker="w0", result={"late": 0}))
    assert out == {"outcome": "ignored", "reason": "stale_attempt"}
    assert st.jobs["j1"]["status"] == "running"


# F5. Rule A says a `running` from another worker moves a running attempt there (a
# redelivery). Rule C overrides it for any worker in `past`: the redelivered current
# attempt's running AND its completed are both dropped.
def test_f5_redelivery_to_a_worker_of_an_earlier_attempt_is_followed():
    st = running_job(maxRetries=3)
    run(st, fail("j1", T0 + 10, worker="w1"), mark_queued([("j1", 1)], T0 + 11),
        rep("j1", "running", T0 + 20, worker="w2"))           # attempt 2 on w2
    # w2's AMQP connection dies; RabbitMQ redelivers attempt 2 to w1, which runs it
    run(st, rep("j1", "running", T0 + 30, worker="w1"))
    out = run(st, rep("j1", "completed", T0 + 40, worker="w1", result={"a": 2}))
    assert st.jobs["j1"]["status"] == "completed", out        # is: running on w2, both ignored


# F6. Rule B assumes terminal reports come "in the order the deliveries began". A
# worker runs several jobs at once (heartbeat capacity, default 10): attempt 1 hangs on
# w1 (that is why it timed out), w1 takes attempt 2 and completes it; that completion
# pays attempt 1's debt; attempt 2 times out and w1 now owes it; ... The review asked
# for "late, not wrong". The first fix (a bound worker's payment left the current
# attempt owing nothing) made the in-order case wrong instead: a slow job timing out
# again on the same worker completed with an earlier run's result (CI, fault seed
# 1796550205; test_lifecycle's slow-job cases). Reports are read in order; the
# exception is a worker that stopped heartbeating, which may have died with its run.
def test_f6_a_hung_attempt_on_a_live_worker_is_documented_blind_spot_1():
    """jobs.py, "Attempts", blind spot 1: while the worker of a hung run alone takes
    the retries, each completion pays the run before it; the job fails, and every
    completed run's result is in its history."""
    st = running_job(maxRetries=2, timeout=60)
    time_out_and_complete_on_w1(st, (0, 1, 2), T0 + 61_000, 61_000)
    j = st.jobs["j1"]
    assert j["status"] == "failed"
    assert [h[4] for h in jobs.history_of(j) if len(h) > 4] == [{"n": 1}, {"n": 2}]


def test_f6b_a_run_lost_with_a_worker_that_stopped_heartbeating_costs_one_timeout():
    """A worker expired (heartbeats stopped) and came back under the same id: the run it
    died with never reports. Its next report pays that run's debt, and the attempt it
    runs then does not owe again: one timeout late, then completed."""
    st = running_job(maxRetries=2, timeout=60)
    run(st, {"op": "expire_worker", "worker_id": "w1", "at_ms": T0 + 40_000})
    run(st, mark_queued([("j1", 1)], T0 + 40_001),
        rep("j1", "running", T0 + 50_000, worker="w1"),
        rep("j1", "completed", T0 + 50_010, worker="w1", result={"n": 1}))
    assert st.jobs["j1"]["status"] == "running"
    at = time_out_and_complete_on_w1(st, (1,), T0 + 111_000, 61_000)
    assert st.jobs["j1"]["status"] == "completed", jobs.why(st.jobs["j1"], at, None, 1)


# F9. Attempt 1 published twice (a broker cut, a fail-over); the first delivery fails
# on w1 into attempt 2, then the second delivery reaches w1 before attempt 2 is
# published (fault seed 20261210). Decided (jobs.py, "Attempts"): a run begun after the
# retry was made is the retry's run. The job runs on it and completes with its result;
# attempt 2, no longer pending, is never published as well, so one run per attempt.
def test_f9_a_second_delivery_that_starts_after_the_retry_is_made_is_the_retrys_run():
    st = running_job(maxRetries=3)
    run(st, fail("j1", T0 + 10, worker="w1", errorMessage="boom"))
    assert st.jobs["j1"]["status"] == "pending" and st.jobs["j1"].attempt == 1
    assert run(st, rep("j1", "running", T0 + 11, worker="w1"))["outcome"] == "updated"
    j = st.jobs["j1"]
    assert (j["status"], j["worker_id"], j.attempt) == ("running", "w1", 1)
    assert "j1" not in st.by_status["pending"]             # the publisher's source
    run(st, rep("j1", "completed", T0 + 12, worker="w1", result={"n": 2}))
    j = st.jobs["j1"]
    assert (j["status"], j["retry_count"], j.get("error_message")) == ("completed", 1, None)
