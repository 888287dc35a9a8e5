"""Every route of CONTRACT §2 against a real dqorch.py process and the real broker:
success, field spellings, defaults, error cases, and that bad input changes nothing."""
from __future__ import annotations

import json

import pytest

from .conftest import SHARED_PORT, NodeProc, all_jobs

ERROR_KEYS = {"error", "message"}


@pytest.fixture(scope="module")
def node(tmp_path_factory, shared_rabbit):
    n = NodeProc(tmp_path_factory.mktemp("api"), SHARED_PORT, job_max_retries=2,
                 job_execution_timeout_s=120).start().wait_healthy()
    yield n
    n.stop()


@pytest.fixture
def c(node):
    client = node.client()
    yield client
    client.close()


def register(c, body):
    status, out = c.call("POST", "/api/jobs/register", body)
    assert status == 202, out
    assert out["status"] == "accepted"
    return out["job_id"]


def job(c, id_):
    status, out = c.call("GET", f"/api/jobs/{id_}")
    assert status == 200, out
    return out


def assert_error(status_body, status, code, field=None):
    got_status, body = status_body
    assert got_status == status, body
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    if field is not None:
        assert body.get("field") == field, body


# Health and status ##########################################################

def test_health_reports_checks(c):
    status, body = c.call("GET", "/api/health")
    assert status == 200
    assert body["status"] == "healthy"
    assert set(body["checks"]) == {"role", "log", "snapshot", "broker", "clock", "queues"}
    assert body["checks"]["clock"] == {"ok": True, "skew_s": 0, "members_heard": 0}
    assert body["checks"]["broker"]["connected"] is True
    assert isinstance(body["timestamp"], int)


def test_raft_status_is_a_leader_of_one(c, node):
    status, body = c.call("GET", "/api/raft/status")
    assert status == 200
    assert body["role"] == "leader" and body["leader"] == "orchestrator@127.0.0.1"
    assert body["term"] >= 1
    assert body["commit_index"] == body["applied_index"] == body["last_log_index"] >= 1


def test_cluster_status_lists_this_node(c, node):
    status, body = c.call("GET", "/api/cluster/status")
    assert status == 200
    assert body["leader"] == body["node"] == "orchestrator@127.0.0.1"
    [m] = body["members"]
    assert m["role"] == "leader" and m["api"] == f"127.0.0.1:{node.http_port}"
    # The contract's fields, and what online membership adds (docs/CLUSTER.md).
    assert set(m) == {"node", "role", "api", "last_contact_ms", "match_index",
                      "member", "id", "caught_up"}
    assert m["member"] == "voter" and body["config_index"] == 0


def test_metrics_json_counts_jobs(c):
    register(c, {"id": "metrics-1"})
    status, body = c.call("GET", "/api/metrics")
    assert status == 200
    assert set(body) >= {"jobs", "queues", "workers", "raft", "timestamp"}
    assert sum(body["jobs"].values()) >= 1
    assert set(body["queues"]) == {"job.high", "job.medium", "job.low"}


# Register ###################################################################

def test_register_defaults(c):
    id_ = register(c, {})
    j = job(c, id_)
    assert len(id_) == 36                       # a new uuid4
    assert j["type"] == "default" and j["priority"] == 5 and j["queue"] == "job.medium"
    assert j["payload"] == {} and j["metadata"] == {}
    assert j["max_retries"] == 2 and j["execution_timeout"] == 120   # from config
    assert j["retry_count"] == 0
    for k in ("worker_id", "result", "error_message", "started_at", "completed_at"):
        assert j[k] is None


@pytest.mark.parametrize("spelling", ["id", "jobId", "job_id"])
def test_register_id_spellings(c, spelling):
    id_ = register(c, {spelling: f"sp-{spelling}"})
    assert id_ == f"sp-{spelling}"


def test_register_first_listed_spelling_wins(c):
    id_ = register(c, {"jobId": "second", "id": "first-wins", "job_id": "third",
                       "maxRetries": 7, "max_retries": 1,
                       "timeout": 9, "executionTimeout": 8, "execution_timeout": 5})
    j = job(c, id_)
    assert id_ == "first-wins"
    assert j["max_retries"] == 1 and j["execution_timeout"] == 5


def test_register_camel_case_gateway_body(c):
    body = {"jobId": "gw-1", "type": "email", "priority": "HIGH", "payload": None,
            "maxRetries": 4, "executionTimeout": 60, "metadata": None,
            "createdAt": "2026-11-27T10:00:00Z", "status": None, "workerId": None}
    id_ = register(c, body)
    j = job(c, id_)
    assert (j["type"], j["priority"], j["queue"]) == ("email", 10, "job.high")
    assert j["payload"] == {} and j["metadata"] == {}
    assert j["max_retries"] == 4 and j["execution_timeout"] == 60
    assert j["client_created_at"] == "2026-11-27T10:00:00Z"


@pytest.mark.parametrize("given,want,queue", [
    (1, 1, "job.low"), (5, 5, "job.medium"), (10, 10, "job.high"), ("7", 7, "job.medium"),
    ("low", 1, "job.low"), ("Medium", 5, "job.medium"), ("CRITICAL", 15, "job.high"),
    (9.9, 9, "job.medium"), (0, 0, "job.low")])
def test_register_priority_forms(c, given, want, queue):
    id_ = register(c, {"priority": given})
    j = job(c, id_)
    assert (j["priority"], j["queue"]) == (want, queue)


def test_register_numeric_id_becomes_string(c):
    assert register(c, {"id": 123456}) == "123456"
    assert job(c, "123456")["id"] == "123456"


def test_register_is_idempotent_while_not_terminal(c):
    register(c, {"id": "idem", "type": "a", "payload": {"x": 1}})
    register(c, {"id": "idem", "type": "b", "payload": {"x": 2}})
    j = job(c, "idem")
    assert j["type"] == "a" and j["payload"] == {"x": 1}
    assert sum(1 for h in j["history"] if h["reason"] == "registered") == 1


def test_register_of_terminal_job_starts_new_attempt(c):
    register(c, {"id": "again", "type": "a"})
    assert c.call("POST", "/api/jobs/again/status", {"status": "failed", "workerId": "w"})[0] == 200
    c.call("POST", "/api/jobs/again/cancel")
    assert job(c, "again")["status"] == "cancelled"
    register(c, {"id": "again", "type": "b"})
    j = job(c, "again")
    assert j["type"] == "b" and j["status"] in ("pending", "queued")
    assert j["retry_count"] == 0 and j["completed_at"] is None


@pytest.mark.parametrize("body,field", [
    ({"id": ""}, "id"), ({"id": "x" * 10_000}, "id"), ({"id": "a\nb"}, "id"),
    ({"id": ["x"]}, "id"), ({"jobId": {"a": 1}}, "jobId"), ({"id": True}, "id"),
    ({"type": 5}, "type"), ({"type": ""}, "type"), ({"type": "t" * 129}, "type"),
    ({"priority": "urgent"}, "priority"), ({"priority": True}, "priority"),
    ({"priority": [1]}, "priority"), ({"payload": [1, 2]}, "payload"),
    ({"payload": "text"}, "payload"), ({"max_retries": -1}, "max_retries"),
    ({"maxRetries": 101}, "maxRetries"), ({"max_retries": "3"}, "max_retries"),
    ({"execution_timeout": 0}, "execution_timeout"), ({"timeout": 604801}, "timeout"),
    ({"metadata": [1]}, "metadata"), ({"metadata": {"k": {"nested": 1}}}, "metadata"),
    ({"createdAt": [1]}, "createdAt")])
def test_register_bad_field_is_400_naming_it(c, body, field):
    before = c.call("GET", "/api/jobs?limit=1")[1]["count"]
    assert_error(c.call("POST", "/api/jobs/register", body), 400, "invalid_request", field)
    assert c.call("GET", "/api/jobs?limit=1")[1]["count"] == before


def test_register_job_over_max_job_bytes_is_413(c):
    assert_error(c.call("POST", "/api/jobs/register",
                        {"id": "big", "payload": {"d": "x" * 70_000}}), 413, "payload_too_large")
    assert c.call("GET", "/api/jobs/big")[0] == 404


def test_body_over_max_body_bytes_is_413(c):
    raw = b'{"id":"huge","payload":{"d":"' + b"x" * (1024 * 1024 + 10) + b'"}}'
    status, body = c.call("POST", "/api/jobs/register", raw=raw)
    assert_error((status, body), 413, "payload_too_large")


@pytest.mark.parametrize("raw,code", [
    (b"{not json", "invalid_json"), (b"\xff\xfe{}", "invalid_json"),
    (b'{"id": "\xc3\x28"}', "invalid_json"), (b"[1,2]", "invalid_request"),
    (b'"text"', "invalid_request"), (b"42", "invalid_request"), (b"null", "invalid_request")])
def test_register_bad_body(c, raw, code):
    assert_error(c.call("POST", "/api/jobs/register", raw=raw), 400, code)


def test_any_content_type_is_accepted(c):
    status, out = c.call("POST", "/api/jobs/register", raw=b'{"id":"ct-1"}',
                         headers={"Content-Type": "text/plain"})
    assert status == 202 and out["job_id"] == "ct-1"


# Reports ####################################################################

def test_report_running_then_completed(c):
    register(c, {"id": "rep-1"})
    assert c.call("POST", "/api/jobs/rep-1/status", {"status": "running", "workerId": "w1"}) \
        == (200, {"status": "updated"})
    j = job(c, "rep-1")
    assert j["status"] == "running" and j["worker_id"] == "w1" and j["started_at"]
    assert c.call("PUT", "/api/jobs/rep-1/status",
                  {"status": "completed", "result": {"ok": True}})[0] == 200
    j = job(c, "rep-1")
    assert j["status"] == "completed" and j["result"] == {"ok": True} and j["completed_at"]


@pytest.mark.parametrize("idkey", ["jobId", "job_id", "id"])
def test_report_id_from_body(c, idkey):
    id_ = register(c, {"id": f"body-{idkey}"})
    assert c.call("POST", "/api/jobs/status", {idkey: id_, "status": "Started",
                                               "worker_id": "w2"})[0] == 200
    j = job(c, id_)
    assert j["status"] == "running" and j["worker_id"] == "w2"


@pytest.mark.parametrize("alias,want", [
    ("RUNNING", "running"), ("in-progress", "running"), ("processing", "running"),
    ("success", "completed"), ("DONE", "completed"), ("error", "failed"),
    ("canceled", "cancelled")])
def test_report_status_aliases(c, alias, want):
    id_ = register(c, {"max_retries": 0})
    assert c.call("POST", f"/api/jobs/{id_}/status", {"status": alias})[0] == 200
    assert job(c, id_)["status"] == want


def test_report_unknown_status_is_400_naming_allowed(c):
    register(c, {"id": "st-bad"})
    status, body = c.call("POST", "/api/jobs/st-bad/status", {"status": "exploded"})
    assert_error((status, body), 400, "invalid_request", "status")
    assert "running" in body["message"] and "completed" in body["message"]
    assert job(c, "st-bad")["status"] in ("pending", "queued")


@pytest.mark.parametrize("body,field", [
    ({}, "status"), ({"status": 3}, "status"), ({"status": "running", "progress": 101}, "progress"),
    ({"status": "failed", "errorMessage": 5}, "errorMessage"),
    ({"status": "running", "workerId": ["w"]}, "workerId")])
def test_report_bad_fields(c, body, field):
    assert_error(c.call("POST", "/api/jobs/x/status", body), 400, "invalid_request", field)


def test_report_without_id_is_400(c):
    assert_error(c.call("POST", "/api/jobs/status", {"status": "running"}), 400,
                 "invalid_request", "jobId")


def test_report_on_unknown_id_creates_the_job(c):
    assert c.call("POST", "/api/jobs/status", {"jobId": "ghost", "status": "running",
                                               "workerId": "w9"})[0] == 200
    j = job(c, "ghost")
    assert j["type"] == "unknown" and j["status"] == "running" and j["worker_id"] == "w9"
    register(c, {"id": "ghost", "type": "late", "payload": {"p": 1}})
    j = job(c, "ghost")
    assert j["type"] == "late" and j["payload"] == {"p": 1} and j["status"] == "running"


def test_terminal_job_ignores_late_reports(c):
    register(c, {"id": "term-1"})
    c.call("POST", "/api/jobs/term-1/status", {"status": "completed", "workerId": "w"})
    assert c.call("POST", "/api/jobs/term-1/status", {"status": "running", "workerId": "w"}) \
        == (200, {"status": "ignored", "reason": "terminal"})
    assert job(c, "term-1")["status"] == "completed"


def test_failed_with_retries_goes_back_to_pending(c):
    register(c, {"id": "retry-1", "max_retries": 1})
    c.call("POST", "/api/jobs/retry-1/status", {"status": "failed", "errorMessage": "boom"})
    j = job(c, "retry-1")
    assert j["retry_count"] == 1 and j["status"] in ("pending", "queued")
    c.call("POST", "/api/jobs/retry-1/status", {"status": "failed", "errorMessage": "boom2"})
    j = job(c, "retry-1")
    assert j["status"] == "failed" and j["error_message"] == "boom2" and j["retry_count"] == 1


# Cancel #####################################################################

def test_cancel_then_conflict_then_not_found(c):
    register(c, {"id": "can-1"})
    assert c.call("POST", "/api/jobs/can-1/cancel") == (200, {"status": "cancelled",
                                                               "job_id": "can-1"})
    status, body = c.call("POST", "/api/jobs/can-1/cancel")
    assert_error((status, body), 409, "conflict")
    assert body["message"] == "job is already cancelled"
    assert_error(c.call("POST", "/api/jobs/nobody/cancel"), 404, "not_found")


def test_cancelled_job_ignores_reports(c):
    register(c, {"id": "can-2"})
    c.call("POST", "/api/jobs/can-2/cancel")
    assert c.call("POST", "/api/jobs/can-2/status", {"status": "completed"})[1]["status"] \
        == "ignored"


# Heartbeats and workers #####################################################

def test_heartbeat_and_worker_listing(c):
    status, body = c.call("POST", "/api/workers/heartbeat", {
        "workerId": "hb-1", "workerType": "python", "capacity": 4, "currentLoad": -3,
        "cpuUsage": 12.5, "jobsProcessed": 7})
    assert (status, body) == (200, {"status": "acknowledged"})
    c.call("POST", "/api/workers/heartbeat", {"worker_id": "hb-2"})
    status, body = c.call("GET", "/api/workers")
    ws = {w["worker_id"]: w for w in body["workers"]}
    assert body["count"] == len(body["workers"]) >= 2
    assert ws["hb-1"]["worker_type"] == "python" and ws["hb-1"]["capacity"] == 4
    assert ws["hb-1"]["current_load"] == 0 and ws["hb-1"]["status"] == "active"
    assert ws["hb-1"]["stats"] == {"cpuUsage": 12.5, "jobsProcessed": 7}
    assert ws["hb-2"]["worker_type"] == "unknown" and ws["hb-2"]["capacity"] == 10


def test_the_worker_listing_pages_like_the_job_listing(c):
    import urllib.parse
    ids = [f"pg-{k} &#+{k}" for k in range(7)]        # ids a query string must escape
    for wid in ids:
        assert c.call("POST", "/api/workers/heartbeat", {"workerId": wid})[0] == 200
    status, whole = c.call("GET", "/api/workers")      # no limit: every worker, as before
    assert status == 200 and whole["next"] is None
    assert whole["count"] == whole["returned"] == len(whole["workers"]) >= 7
    seen, cursor, pages = [], None, 0
    while True:
        q = "limit=3" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        status, page = c.call("GET", "/api/workers?" + q)
        assert status == 200, page
        assert page["count"] == whole["count"] and page["returned"] == len(page["workers"]) <= 3
        seen += [w["worker_id"] for w in page["workers"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [w["worker_id"] for w in whole["workers"]] == sorted(seen)
    assert set(ids) <= set(seen) and pages == -(-whole["count"] // 3)
    assert_error(c.call("GET", "/api/workers?limit=0"), 400, "invalid_request", "limit")
    assert_error(c.call("GET", "/api/workers?cursor=%21%21"), 400, "invalid_request", "cursor")


@pytest.mark.parametrize("body,field", [({}, "workerId"), ({"workerId": 5}, "workerId"),
                                        ({"workerId": "w", "capacity": -1}, "capacity"),
                                        ({"workerId": "w", "currentLoad": "x"}, "currentLoad")])
def test_heartbeat_bad_fields(c, body, field):
    assert_error(c.call("POST", "/api/workers/heartbeat", body), 400, "invalid_request", field)


# Listing ####################################################################

def test_list_filters_and_pagination(c):
    for i in range(25):
        register(c, {"id": f"pg-{i:02d}", "type": "pagetest", "priority": i % 3 * 5})
    seen = all_jobs(c, type="pagetest")
    assert [j["id"] for j in seen] == [f"pg-{i:02d}" for i in reversed(range(25))]
    status, body = c.call("GET", "/api/jobs?type=pagetest&limit=10")
    assert body["count"] == 25 and body["returned"] == 10 and body["next"]
    assert "payload" not in body["jobs"][0] and "result" not in body["jobs"][0]
    status, body = c.call("GET", "/api/jobs?type=pagetest&queue=job.low&limit=100&full=1")
    assert body["count"] == 9 and all(j["queue"] == "job.low" for j in body["jobs"])
    assert "payload" in body["jobs"][0]


@pytest.mark.parametrize("query,field", [("limit=0", "limit"), ("limit=10001", "limit"),
                                         ("limit=x", "limit"), ("cursor=abc", "cursor"),
                                         ("status=sleeping", "status"), ("queue=job.x", "queue")])
def test_list_bad_query(c, query, field):
    assert_error(c.call("GET", "/api/jobs?" + query), 400, "invalid_request", field)


def test_get_unknown_job_is_404(c):
    assert_error(c.call("GET", "/api/jobs/no-such-job"), 404, "not_found")


# Protocol errors ############################################################

def test_unknown_path_is_404_json(c):
    assert_error(c.call("GET", "/api/nothing/here"), 404, "not_found")


def test_wrong_method_is_405_with_allow(c):
    status, body = c.call("DELETE", "/api/workers/heartbeat")
    assert_error((status, body), 405, "method_not_allowed")
    assert "POST" in c.last_headers.get("Allow", "")


def test_node_keeps_serving_after_bad_input(c, node):
    for raw in (b"\x00\x01", b"{" * 100_000, b'{"id": 1e999}', b"[" * 5000 + b"]" * 5000):
        status, body = c.call("POST", "/api/jobs/register", raw=raw)
        assert 400 <= status < 500, (raw[:20], body)
    assert node.health()[0] == 200


@pytest.mark.parametrize("head", [
    b"POST /api/jobs/register HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /api/jobs/register HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    b"GARBAGE\r\n\r\n",
])
def test_unparsable_http_gets_a_json_400(node, head):
    import socket
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), data
    assert b"application/json" in headers
    assert json.loads(body)["error"] == "invalid_request"
    assert node.health()[0] == 200


def _fail(c, id_):
    register(c, {"id": id_, "type": "retry-t", "max_retries": 0})
    assert c.call("POST", "/api/jobs/status", {"jobId": id_, "status": "running",
                                               "workerId": "w-r"})[0] == 200
    assert c.call("POST", "/api/jobs/status", {"jobId": id_, "status": "failed",
                                               "workerId": "w-r",
                                               "errorMessage": "boom"})[0] == 200
    assert c.call("GET", f"/api/jobs/{id_}")[1]["status"] == "failed"


def test_retry_runs_a_failed_job_again_and_refuses_live_and_unknown_ones(c):
    _fail(c, "retry-1")
    status, body = c.call("POST", "/api/jobs/retry-1/retry")
    assert (status, body) == (202, {"status": "accepted", "job_id": "retry-1"})
    job = c.call("GET", "/api/jobs/retry-1")[1]
    assert job["status"] in ("pending", "queued") and job["retry_count"] == 0, job
    status, body = c.call("POST", "/api/jobs/retry-1/retry")     # no longer terminal
    assert status == 409 and body["error"] == "conflict", body
    status, body = c.call("POST", "/api/jobs/no-such-job/retry")
    assert status == 404 and body["error"] == "not_found", body


def test_bulk_retry_takes_the_listings_filters_and_a_limit(c):
    for i in range(3):
        _fail(c, f"bulk-{i}")
    status, body = c.call("POST", "/api/jobs/retry", {"status": "failed",
                                                      "type": "retry-t", "limit": 2})
    assert (status, body) == (202, {"retried": 2}), body
    left = [j["id"] for j in all_jobs(c, status="failed", type="retry-t")]
    assert left == ["bulk-0"], left                  # newest first: 2 and 1 went
    status, body = c.call("POST", "/api/jobs/retry", {"status": "running"})
    assert status == 400 and body["field"] == "status", body


def test_rates_count_what_happened_this_second(c):
    before = c.call("GET", "/api/rates")[1]
    register(c, {"id": "rates-1"})
    after = c.call("GET", "/api/rates")[1]
    assert after["window_s"] == 600 and len(after["series"]["registered"]) == 600
    assert sum(after["series"]["registered"][-2:]) >= 1
    assert sum(after["series"]["registered"]) >= sum(before["series"]["registered"][1:]) + 1


def test_the_console_is_served_with_a_strict_policy_and_the_root_leads_there(c):
    status, _ = c.call("GET", "/")
    assert status == 302 and c.last_headers["Location"] == "/ui/"
    status, page = c.call("GET", "/ui/")
    assert status == 200 and c.last_headers["Content-Type"].startswith("text/html")
    csp = c.last_headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert b"<script" in page and b"unsafe-inline" not in page
    status, _ = c.call("GET", "/ui/app.js")
    assert status == 200 and "javascript" in c.last_headers["Content-Type"]
    status, body = c.call("GET", "/ui/../config.yaml")
    assert status == 404 and body["error"] == "not_found", body
