"""Jobs that run later (issue 29): a register with run_at or delay is `scheduled`, the
leader's `release` makes it pending when due, and the due index survives snapshots."""
import json

import pytest

from dqorch import jobs, parse
from dqorch import state as S
from dqorch.errors import ApiError

from tests.unit.helpers import T0, cancel, check, fresh, reg, rep, run


def release(ids, at_ms) -> dict:
    return {"op": "release", "ids": list(ids), "at_ms": at_ms}


def test_a_delayed_register_is_scheduled_and_not_published():
    st = S.State()
    out = run(st, reg("j1", T0, delay=60))
    assert out["outcome"] == "created" and not out.get("publish")
    assert out["scheduled"] == T0 + 60_000
    job = st.jobs["j1"]
    assert job["status"] == "scheduled" and job["run_at"] == T0 + 60_000
    assert jobs.api_json(job)["run_at"] == T0 + 60_000
    assert S.next_due(st) == T0 + 60_000


def test_run_at_in_ms_and_iso_with_a_zone_mean_the_same_time():
    iso = jobs.iso_ms(T0 + 5_000)
    a, b = fresh(reg("a", T0, run_at=T0 + 5_000)), fresh(reg("a", T0, run_at=iso))
    assert a.jobs["a"]["run_at"] == b.jobs["a"]["run_at"] == T0 + 5_000
    c = fresh(reg("a", T0, run_at=iso.replace("Z", "-02:00")))     # two hours later
    assert c.jobs["a"]["run_at"] == T0 + 5_000 + 2 * 3600_000


def test_a_time_already_past_runs_now():
    st = fresh()
    out = run(st, reg("j1", T0, run_at=T0 - 1))
    assert out["publish"] and st.jobs["j1"]["status"] == "pending"
    assert "run_at" not in st.jobs["j1"]


def test_release_moves_only_jobs_due_at_its_stamp():
    st = fresh(reg("early", T0, delay=1), reg("late", T0, delay=10))
    assert S.due_ids(st, T0 + 999, 10) == []
    assert S.due_ids(st, T0 + 1_000, 10) == ["early"]
    # A release whose stamp is before a job's time changes nothing (a leader's clock
    # ahead of the stamp, or a late command).
    out = run(st, release(["early", "late"], T0 + 1_000))
    assert out["publish_ids"] == ["early"]
    assert st.jobs["early"]["status"] == "pending" and st.jobs["late"]["status"] == "scheduled"
    assert run(st, release(["early"], T0 + 2_000))["publish_ids"] == []     # once
    assert S.due_ids(st, T0 + 20_000, 10) == ["late"]


def test_due_ids_are_earliest_first_and_limited():
    st = fresh(*(reg(f"j{i}", T0, delay=d) for i, d in enumerate([5, 1, 3, 1])))
    assert S.due_ids(st, T0 + 10_000, 10) == ["j1", "j3", "j2", "j0"]
    assert S.due_ids(st, T0 + 10_000, 2) == ["j1", "j3"]
    assert S.next_due(st) == T0 + 1_000


def test_a_scheduled_job_can_be_cancelled_and_is_then_never_due():
    st = fresh(reg("j1", T0, delay=5))
    assert run(st, cancel("j1", T0 + 1))["outcome"] == "cancelled"
    assert S.due_ids(st, T0 + 10_000, 10) == [] and S.next_due(st) is None
    assert run(st, release(["j1"], T0 + 10_000))["publish_ids"] == []


def test_a_finished_job_registered_again_with_a_delay_waits_again():
    st = fresh(reg("j1", T0), rep("j1", "running", T0 + 1), rep("j1", "completed", T0 + 2))
    out = run(st, reg("j1", T0 + 10, delay=30))
    assert out["outcome"] == "restarted" and out["scheduled"] == T0 + 30_010
    assert st.jobs["j1"]["status"] == "scheduled" and st.jobs["j1"]["attempt"] == 1
    run(st, release(["j1"], T0 + 30_010))
    assert st.jobs["j1"]["status"] == "pending"
    run(st, rep("j1", "running", T0 + 30_020), rep("j1", "completed", T0 + 30_030))
    run(st, {"op": "retry", "ids": ["j1"], "at_ms": T0 + 40_000})
    assert st.jobs["j1"]["status"] == "pending" and "run_at" not in st.jobs["j1"]


def test_a_report_on_a_scheduled_job_is_what_happened():
    """The gateway publishes jobs itself: a worker may run one before its time."""
    st = fresh(reg("j1", T0, delay=60), rep("j1", "running", T0 + 1))
    assert st.jobs["j1"]["status"] == "running" and S.next_due(st) is None


def test_the_due_index_survives_a_snapshot():
    st = fresh(reg("a", T0, delay=9), reg("b", T0, delay=2), reg("c", T0))
    data = json.loads(json.dumps(S.to_snapshot(st), default=jobs.Job.to_record))
    back = S.from_snapshot(data)
    check(back)
    assert S.due_ids(back, T0 + 10_000, 10) == ["b", "a"]
    rows = json.loads(json.dumps({"job_blocks": [[j.to_row() for j in st.jobs.values()]],
                                  **{k: v for k, v in S.to_snapshot(st).items()
                                     if k != "jobs"}}, default=jobs.Job.to_record))
    assert S.due_ids(S.from_snapshot(rows), T0 + 10_000, 10) == ["b", "a"]


def test_why_says_when_and_how_long():
    st = fresh(reg("j1", T0, delay=180))
    job = st.jobs["j1"]
    assert jobs.why(job, T0, None, 1) == (
        f"scheduled for {jobs.iso_ms(T0 + 180_000)[11:19]} UTC, in 3 min 0 s")
    late = jobs.why(job, T0 + 182_000, None, 1)
    assert late.endswith("due 2 s ago: the leader releases it to pending"), late
    far = fresh(reg("j2", T0, delay=8 * 86400)).jobs["j2"]
    assert jobs.iso_ms(T0 + 8 * 86400_000)[:10] in jobs.why(far, T0, None, 1)


@pytest.mark.parametrize("body, field, says", [
    ({"run_at": 1_700_000_000}, "run_at", "not seconds"),
    ({"run_at": "2026-12-07T10:42:01"}, "run_at", "no zone"),
    ({"run_at": "tomorrow"}, "run_at", "ISO-8601"),
    ({"runAt": True}, "runAt", "ms since the epoch"),
    ({"run_at": [1]}, "run_at", "ms since the epoch"),
    ({"delay": -1}, "delay", "seconds from 0"),
    ({"delay": "5"}, "delay", "seconds from 0"),
    ({"delay": 1e12}, "delay", "seconds from 0"),
    ({"delay": 5, "run_at": T0}, "delay", "not both"),
])
def test_bad_times_are_refused_naming_the_field(body, field, says):
    with pytest.raises(ApiError) as e:
        reg("j1", T0, **body)
    assert e.value.status == 400 and e.value.field == field and says in e.value.message


def test_a_delay_needs_publish_on_register():
    with pytest.raises(ApiError) as e:
        reg("j1", T0, publish=False, delay=5)
    assert "publish_on_register" in e.value.message


def test_null_times_count_as_absent():
    """The gateway sends every field, unset ones as null."""
    cmd = parse.register({"id": "j1", "run_at": None, "delay": None}, new_id=None,
                         max_retries=3, execution_timeout=300, max_job_bytes=60000,
                         publish=True)
    assert "run_at" not in cmd and "delay_ms" not in cmd


def test_a_queue_paused_is_in_the_state_and_its_snapshot_and_why_says_so():
    st = fresh()
    out = run(st, {"op": "queue_pause", "queue": "job.low", "paused": True, "at_ms": T0})
    assert out["outcome"] == "paused" and st.paused_queues == {"job.low": T0}
    again = run(st, {"op": "queue_pause", "queue": "job.low", "paused": True,
                     "at_ms": T0 + 5})
    assert again["outcome"] == "unchanged" and st.paused_queues == {"job.low": T0}
    run(st, reg("j1", T0 + 1, priority=1))
    why = jobs.why(st.jobs["j1"], T0 + 2, None, 1, st.paused_queues.get("job.low"))
    assert why.startswith("pending: job.low is paused since ") and "resume" in why
    back = S.from_snapshot(json.loads(json.dumps(S.to_snapshot(st),
                                                 default=jobs.Job.to_record)))
    assert back.paused_queues == {"job.low": T0}
    run(st, {"op": "queue_pause", "queue": "job.low", "paused": False, "at_ms": T0 + 3})
    assert st.paused_queues == {} and "paused_queues" not in S.to_snapshot(st)
