"""Jobs that wait for others (issue 29): `waiting` until every parent completed, then
pending (or scheduled); a parent failed or cancelled cancels the child unless
on_parent_failure is "run"; chains settle in one command; the batch checks."""
import json

import pytest

from dqorch import api, jobs
from dqorch import state as S
from dqorch.errors import ApiError

from tests.unit.helpers import T0, cancel, check, fresh, reg, rep, run


def done(id_, at):
    return [rep(id_, "running", at), rep(id_, "completed", at + 1)]


def test_a_child_waits_for_every_parent_then_is_published():
    st = fresh(reg("a", T0), reg("b", T0))
    out = run(st, reg("c", T0 + 1, depends_on=["a", "b"]))
    assert st.jobs["c"]["status"] == "waiting" and not out.get("publish_ids")
    why = jobs.why(st.jobs["c"], T0 + 2, None, 1, parent_status=lambda p: st.jobs[p].status)
    assert why == "waiting for 2 of 2 jobs to complete: a, b"
    run(st, *done("a", T0 + 2))
    assert st.jobs["c"]["status"] == "waiting"
    out = run(st, rep("b", "running", T0 + 4), rep("b", "completed", T0 + 5))
    assert st.jobs["c"]["status"] == "pending" and out["publish_ids"] == ["c"]
    assert ("c", "waiting", "pending") in out["moves"]
    assert jobs.history_of(st.jobs["c"])[-1][2:4] == ("parent", "its parents are done")


def test_parents_already_complete_release_the_child_at_once():
    st = fresh(reg("a", T0), *done("a", T0 + 1))
    out = run(st, reg("c", T0 + 5, depends_on=["a"]))
    assert st.jobs["c"]["status"] == "pending" and out["publish_ids"] == ["c"]


def test_a_failed_parent_cancels_the_chain_below_it_in_one_command():
    st = fresh(reg("a", T0, maxRetries=0), reg("b", T0, depends_on=["a"]),
               reg("c", T0, depends_on=["b"]), reg("d", T0, depends_on=["c"]))
    out = run(st, rep("a", "running", T0 + 1),
              rep("a", "failed", T0 + 2, errorMessage="boom"))
    assert [st.jobs[i]["status"] for i in "abcd"] == ["failed", "cancelled", "cancelled",
                                                       "cancelled"]
    assert [m[0] for m in out["moves"] if m[2] == "cancelled"] == ["b", "c", "d"]
    assert jobs.history_of(st.jobs["b"])[-1][2:4] == ("parent", "parent a failed")
    assert [e["status"] for e in (st.outbox[k] for k in sorted(st.outbox))][-3:] == \
        ["CANCELLED"] * 3


def test_on_parent_failure_run_runs_the_child_anyway():
    st = fresh(reg("a", T0), reg("b", T0, depends_on=["a"], on_parent_failure="run"))
    run(st, cancel("a", T0 + 1))
    assert st.jobs["b"]["status"] == "pending"
    assert jobs.api_json(st.jobs["b"])["on_parent_failure"] == "run"


def test_a_retried_parent_is_not_an_end():
    """A failure with retries left is a new attempt, not a failed parent."""
    st = fresh(reg("a", T0, maxRetries=1), reg("b", T0, depends_on=["a"]))
    run(st, rep("a", "running", T0 + 1), rep("a", "failed", T0 + 2))
    assert st.jobs["a"]["status"] == "pending" and st.jobs["b"]["status"] == "waiting"


def test_a_child_with_a_time_waits_for_its_parents_then_for_its_time():
    st = fresh(reg("a", T0), reg("b", T0, depends_on=["a"], delay=60))
    out = run(st, *done("a", T0 + 1))
    assert st.jobs["b"]["status"] == "scheduled" and out["scheduled"] == T0 + 60_000
    assert S.due_ids(st, T0 + 60_000, 10) == ["b"]


def test_a_parent_registered_later_in_the_batch_is_waited_for():
    st = fresh(reg("child", T0, depends_on=["parent"]), reg("parent", T0))
    assert st.jobs["child"]["status"] == "waiting"
    run(st, *done("parent", T0 + 1))
    assert st.jobs["child"]["status"] == "pending"


def test_a_waiting_job_cancelled_cancels_its_own_children():
    st = fresh(reg("a", T0), reg("b", T0, depends_on=["a"]), reg("c", T0, depends_on=["b"]))
    run(st, cancel("b", T0 + 1))
    assert st.jobs["c"]["status"] == "cancelled" and st.jobs["a"]["status"] == "pending"
    assert "a" not in st.waiters


def test_waiting_jobs_survive_a_snapshot():
    st = fresh(reg("a", T0), reg("b", T0, depends_on=["a"]), reg("c", T0, depends_on=["a"]))
    back = S.from_snapshot(json.loads(json.dumps(S.to_snapshot(st),
                                                 default=jobs.Job.to_record)))
    check(back)
    run(back, *done("a", T0 + 1))
    assert back.jobs["b"]["status"] == back.jobs["c"]["status"] == "pending"


@pytest.mark.parametrize("body, says", [
    ({"depends_on": []}, "1-100"),
    ({"depends_on": "a"}, "1-100"),
    ({"depends_on": ["a", "a"]}, "twice"),
    ({"depends_on": ["j1"]}, "itself"),
    ({"depends_on": ["a/b"]}, "'/'"),
    ({"depends_on": ["a"], "on_parent_failure": "ignore"}, "cancel or run"),
])
def test_bad_parents_are_refused(body, says):
    with pytest.raises(ApiError) as e:
        reg("j1", T0, **body)
    assert e.value.status == 400 and says in e.value.message


def test_a_batch_refuses_unknown_parents_and_cycles_and_keeps_the_rest():
    items = [reg("x", T0, depends_on=["y"]), reg("y", T0, depends_on=["x"]),
             reg("chain-2", T0, depends_on=["chain-1"]), reg("chain-1", T0),
             reg("orphan", T0, depends_on=["nobody"]), reg("old", T0, depends_on=["held"])]
    api.refuse_bad_parents(items, {"held": object()})
    kinds = [type(i).__name__ if isinstance(i, ApiError) else i["id"] for i in items]
    assert kinds == ["ApiError", "ApiError", "chain-2", "chain-1", "ApiError", "old"]
    assert "cycle" in items[0].message and "nobody" in items[4].message
