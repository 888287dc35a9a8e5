"""The retry command (state._apply_retry), its bulk selection (state.terminal_ids) and
its request parsing (parse.retry_query)."""
import pytest

from dqorch import jobs
from dqorch import parse
from dqorch import state as S
from dqorch.errors import ApiError
from tests.unit.helpers import T0, check, reg, rep, run


def finished(st, id_, status, at=T0):
    run(st, reg(id_, at, max_retries=0))
    attempt = S.get_job(st, id_)["attempt"]
    run(st, {"op": "mark_queued", "items": [[id_, attempt]], "at_ms": at + 1},
        rep(id_, "running", at + 2))
    if status == "cancelled":
        return run(st, {"op": "cancel", "id": id_, "at_ms": at + 3})
    return run(st, rep(id_, status, at + 3, errorMessage="boom"))


def test_a_terminal_job_gets_a_new_attempt_and_is_published_again():
    st = S.State()
    finished(st, "f", "failed")
    finished(st, "c", "cancelled")
    run(st, reg("r", T0))
    before = {i: S.get_job(st, i)["attempt"] for i in ("f", "c")}
    out = run(st, {"op": "retry", "ids": ["f", "c", "r", "nope"], "at_ms": T0 + 10})
    assert out["results"] == {"f": "retried", "c": "retried", "r": "pending",
                              "nope": "not_found"}
    assert sorted(out["publish_ids"]) == ["c", "f"]
    for id_ in ("f", "c"):
        job = S.get_job(st, id_)
        assert job["status"] == "pending" and job["retry_count"] == 0
        assert job["attempt"] == before[id_] + 1 and "error_message" not in job
        assert jobs.history_of(job)[-1][3] == "retried by request"
    check(st)


def test_terminal_ids_walk_only_the_asked_statuses_newest_first_up_to_the_limit():
    st = S.State()
    for i in range(5):
        finished(st, f"f{i}", "failed", T0 + 10 * i)
    finished(st, "c0", "cancelled", T0 + 100)
    finished(st, "ok", "completed", T0 + 200)
    assert S.terminal_ids(st, {}, ["failed"], 3) == ["f4", "f3", "f2"]
    assert S.terminal_ids(st, {}, ["failed", "cancelled"], 10) == \
        ["f4", "f3", "f2", "f1", "f0", "c0"]
    assert S.terminal_ids(st, {"type": "nope"}, ["failed"], 10) == []


def test_retry_query_defaults_to_the_failed_set_and_refuses_live_statuses():
    """Cancelled jobs were stopped on purpose: a retry without a status leaves them."""
    q = parse.retry_query({})
    assert q == {"ids": None, "filters": {}, "where": {}, "limit": 100,
                 "statuses": ["failed"]}
    q = parse.retry_query({"status": "completed", "type": "t", "limit": 5})
    assert q == {"ids": None, "filters": {"type": "t"}, "where": {}, "limit": 5,
                 "statuses": ["completed"]}
    q = parse.retry_query({"all": True, "error": "Disk", "retry_count_min": 1})
    assert (q["limit"], q["where"]) == (None, {"error": "disk", "retry_count_min": 1})
    q = parse.retry_query({"ids": ["a", "b", "a"]})
    assert (q["ids"], q["statuses"]) == (["a", "b"], ["cancelled", "completed", "failed"])
    for bad in ({"status": "running"}, {"limit": "5"}, {"limit": 0}, {"type": 3},
                {"status": "nope"}, [], {"ids": []}, {"ids": "a"}, {"ids": ["a\n"]},
                {"all": "yes"}, {"created_since": "x"}):
        with pytest.raises(ApiError):
            parse.retry_query(bad)
