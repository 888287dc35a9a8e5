"""The API pieces the console uses, against a real dqorch.py node and the real broker:
the listing's search filters and offsets, discarding finished jobs (a command in the
log: it stays discarded after a restart), bulk actions by filter, and workers that
stopped or are forgotten (docs/API.md)."""
from __future__ import annotations

import pytest

from .conftest import wait_until


@pytest.fixture
def node(make_node, clean_queues):
    return make_node(job_max_retries=0, worker_heartbeat_timeout_s=1).wait_healthy()


@pytest.fixture
def c(node):
    client = node.client()
    yield client
    client.close()


def ok(c, method: str, path: str, body=None, want: int = 200):
    status, out = c.call(method, path, body)
    assert status == want, (method, path, status, out)
    return out


def fail(c, id_: str, error: str, worker: str = "w1") -> None:
    ok(c, "POST", "/api/jobs/register", {"id": id_, "type": "search"}, 202)
    for status in ("running", "failed"):
        ok(c, "POST", "/api/jobs/status", {"jobId": id_, "status": status,
                                           "workerId": worker, "errorMessage": error})


def ids(c, query: str) -> tuple:
    out = ok(c, "GET", "/api/jobs?" + query)
    return [j["id"] for j in out["jobs"]], out["count"]


def test_search_filters_and_offsets_on_a_real_node(c):
    for i in range(6):
        ok(c, "POST", "/api/jobs/register", {"id": f"inv-{i}", "type": "search"}, 202)
    fail(c, "inv-bad", "SMTP timeout")
    fail(c, "pay-bad", "card declined")
    created = ok(c, "GET", "/api/jobs/inv-3")["created_at"]
    finished = ok(c, "GET", "/api/jobs/pay-bad")["completed_at"]

    assert ids(c, "id_prefix=inv-&limit=3") == (["inv-bad", "inv-5", "inv-4"], 7)
    assert ids(c, "id_prefix=inv-&limit=3&offset=6") == (["inv-0"], 7)
    assert ids(c, "error=smtp") == (["inv-bad"], 1)
    assert ids(c, f"created_since={created}&id_prefix=inv-")[0][-1] == "inv-3"
    assert ids(c, f"created_before={created}")[0] == ["inv-2", "inv-1", "inv-0"]
    assert ids(c, f"finished_since={finished}") == (["pay-bad"], 1)
    assert ids(c, "retry_count_min=1") == ([], 0)
    status, out = c.call("GET", "/api/jobs?offset=-1")
    assert (status, out["error"], out["field"]) == (400, "invalid_request", "offset")


def test_discard_is_logged_and_survives_a_restart(make_node, clean_queues):
    node = make_node(job_max_retries=0).wait_healthy()
    c = node.client()
    try:
        fail(c, "gone-1", "e")
        fail(c, "gone-2", "e")
        ok(c, "POST", "/api/jobs/register", {"id": "live-1"}, 202)
        assert ok(c, "DELETE", "/api/jobs/gone-1") == {"status": "discarded", "job_id": "gone-1"}
        status, out = c.call("DELETE", "/api/jobs/live-1")
        assert (status, out["error"]) == (409, "conflict")
        assert ok(c, "POST", "/api/jobs/discard", {"status": "failed", "all": True}) == \
            {"discarded": 1}
    finally:
        c.close()
    node.stop()
    node.start().wait_healthy()
    c = node.client()
    try:
        assert c.call("GET", "/api/jobs/gone-1")[0] == 404
        assert c.call("GET", "/api/jobs/gone-2")[0] == 404
        assert ok(c, "GET", "/api/jobs/live-1")["status"] in ("pending", "queued")
    finally:
        c.close()


def test_bulk_retry_leaves_cancelled_jobs_and_bulk_cancel_takes_a_filter(c):
    fail(c, "f-1", "e")
    ok(c, "POST", "/api/jobs/register", {"id": "x-1"}, 202)
    ok(c, "POST", "/api/jobs/x-1/cancel")
    assert ok(c, "POST", "/api/jobs/retry", {}, 202) == {"retried": 1}
    assert ok(c, "GET", "/api/jobs/x-1")["status"] == "cancelled"
    assert ok(c, "POST", "/api/jobs/cancel", {"id_prefix": "f-", "all": True}) == \
        {"cancelled": 1}
    assert ok(c, "GET", "/api/jobs/f-1")["status"] == "cancelled"


def test_a_worker_that_said_goodbye_is_stopped_and_can_be_forgotten(c):
    ok(c, "POST", "/api/workers/heartbeat", {"workerId": "idle", "currentLoad": 0})
    ok(c, "POST", "/api/workers/heartbeat", {"workerId": "busy", "currentLoad": 3})
    wait_until(lambda: ok(c, "GET", "/api/metrics")["workers"] ==
               {"total": 2, "active": 0, "unresponsive": 1, "stopped": 1}, 20, 0.1,
               "one stopped, one unresponsive")
    detail = ok(c, "GET", "/api/workers/idle")
    assert detail["status"] == "stopped" and [p[1] for p in detail["load_history"]] == [0]
    assert ok(c, "DELETE", "/api/workers/idle") == {"status": "forgotten", "worker_id": "idle"}
    assert [w["worker_id"] for w in ok(c, "GET", "/api/workers")["workers"]] == ["busy"]
    assert c.call("DELETE", "/api/workers/idle")[0] == 404
