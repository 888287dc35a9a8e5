"""The API's handlers called in-process (STYLE §3): the bottle app from api.make_app
over a fake node whose propose applies the command to a real State (no log, no
sockets, no broker). What a handler answers for each outcome of a proposal, and for
each failure a proposal can raise; the HTTP server itself is tested in
tests/component and through real sockets in tests/integration."""

import io
import json
from wsgiref.util import setup_testing_defaults

import pytest

from dqorch import api, config
from dqorch.errors import LogFailed, Overloaded, ProposeTimeout
from dqorch.raft.core import NotLeader
from tests.unit.helpers import T0, check, fake_services


@pytest.fixture
def svc():
    return fake_services()


def call(app, method: str, path: str, body=None) -> tuple:
    """(status code, headers dict, decoded JSON body) of one request."""
    raw = b"" if body is None else (body if isinstance(body, bytes)
                                    else json.dumps(body).encode())
    path, _, query = path.partition("?")
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
           "wsgi.input": io.BytesIO(raw)}
    if body is not None:
        env["CONTENT_LENGTH"] = str(len(raw))
    setup_testing_defaults(env)
    got = {}

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = int(status[:3]), dict(headers)

    out = b"".join(app(env, start_response))
    return got["status"], got["headers"], json.loads(out)


def test_register_proposes_the_job_with_the_configured_defaults(svc):
    app = api.make_app(svc)
    code, headers, out = call(app, "POST", "/api/jobs/register",
                              {"id": "j1", "type": "t", "priority": 10})
    assert (code, out) == (202, {"status": "accepted", "job_id": "j1"})
    assert headers["Content-Type"] == "application/json"
    cmd = svc.raft.proposed[-1]
    assert (cmd["op"], cmd["id"], cmd["job"]["max_retries"]) == \
        ("register", "j1", svc.cfg.job_max_retries)
    code, _, job = call(app, "GET", "/api/jobs/j1")
    assert (code, job["id"], job["queue"], job["status"]) == (200, "j1", "job.high", "pending")
    check(svc.raft.state)


def test_register_without_an_id_gets_one(svc):
    code, _, out = call(api.make_app(svc), "POST", "/api/jobs/register", {"type": "t"})
    assert code == 202 and out["job_id"] == "gen-1"


def test_reports_answer_updated_then_ignored_for_an_earlier_attempt(svc):
    app = api.make_app(svc)
    call(app, "POST", "/api/jobs/register", {"id": "j1", "type": "t"})
    report = {"jobId": "j1", "status": "running", "workerId": "w1"}
    assert call(app, "POST", "/api/jobs/status", report)[2] == {"status": "updated"}
    assert call(app, "POST", "/api/jobs/j1/cancel")[2] == \
        {"status": "cancelled", "job_id": "j1"}
    assert call(app, "POST", "/api/jobs/j1/retry")[:3:2] == \
        (202, {"status": "accepted", "job_id": "j1"})
    late = dict(report, status="completed", result={"n": 1})
    assert call(app, "POST", "/api/jobs/j1/status", late)[2] == \
        {"status": "ignored", "reason": "stale_attempt"}
    assert svc.raft.state.jobs["j1"]["status"] == "pending"


def test_cancel_of_an_unknown_job_is_404_and_of_a_finished_one_409(svc):
    app = api.make_app(svc)
    code, _, out = call(app, "POST", "/api/jobs/nope/cancel")
    assert (code, out["error"]) == (404, "not_found")
    call(app, "POST", "/api/jobs/register", {"id": "j1", "type": "t"})
    call(app, "POST", "/api/jobs/j1/cancel")
    code, _, out = call(app, "POST", "/api/jobs/j1/cancel")
    assert (code, out["error"], out["message"]) == (409, "conflict", "job is already cancelled")


@pytest.mark.parametrize("failure, words, retry_after", [
    (NotLeader("no leader"), "no leader", None),
    (LogFailed("disk full"), "disk full", None),
    (Overloaded("9 commands wait"), "9 commands wait", "1"),
    (ProposeTimeout("no outcome in 10 s"), "retrying is safe", None),
])
def test_a_proposal_that_fails_is_503_unavailable_in_the_error_shape(svc, failure, words,
                                                                     retry_after):
    app = api.make_app(svc)
    svc.raft.fail = failure
    code, headers, out = call(app, "POST", "/api/jobs/register", {"id": "j1", "type": "t"})
    assert (code, out["error"]) == (503, "unavailable")
    assert words in out["message"]
    assert headers.get("Retry-After") == retry_after
    assert "j1" not in svc.raft.state.jobs


def test_an_unexpected_error_is_a_logged_500_in_the_error_shape(svc, caplog):
    app = api.make_app(svc)
    svc.raft.fail = KeyError("bug")
    code, _, out = call(app, "POST", "/api/jobs/register", {"id": "j1", "type": "t"})
    assert (code, out) == (500, {"error": "internal", "message": "internal error"})
    assert any("unhandled error" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("body, code, error", [
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    ({"id": "j1", "priority": "urgent"}, 400, "invalid_request"),
    (b"x" * (config.Config().max_body_bytes + 1), 413, "payload_too_large"),
])
def test_bad_bodies_are_refused_before_anything_is_proposed(svc, body, code, error):
    got, headers, out = call(api.make_app(svc), "POST", "/api/jobs/register", body)
    assert (got, out["error"]) == (code, error)
    assert svc.raft.proposed == []
    if code == 413:
        assert headers.get("Connection") == "close"      # http_server.CLOSE_AFTER


# The console's routes: bulk actions, discard, workers ########################

def failed(app, svc, id_: str, error: str = "boom") -> None:
    call(app, "POST", "/api/jobs/register", {"id": id_, "type": "t", "maxRetries": 0})
    for status in ("running", "failed"):
        call(app, "POST", "/api/jobs/status", {"jobId": id_, "status": status,
                                               "workerId": "w1", "errorMessage": error})
    assert svc.raft.state.jobs[id_]["status"] == "failed"


def test_bulk_retry_without_a_status_leaves_cancelled_jobs(svc):
    app = api.make_app(svc)
    failed(app, svc, "f1")
    call(app, "POST", "/api/jobs/register", {"id": "c1", "type": "t"})
    call(app, "POST", "/api/jobs/c1/cancel")
    code, _, out = call(app, "POST", "/api/jobs/retry", {})
    assert (code, out) == (202, {"retried": 1})
    assert svc.raft.state.jobs["c1"]["status"] == "cancelled"
    assert svc.raft.state.jobs["f1"]["status"] == "pending"


def test_retry_all_takes_every_failed_job_in_chunks(svc, monkeypatch):
    monkeypatch.setattr(api, "BULK_CHUNK", 4)
    app = api.make_app(svc)
    for i in range(150):
        failed(app, svc, f"f{i}")
    before = len(svc.raft.proposed)
    code, _, out = call(app, "POST", "/api/jobs/retry", {"status": "failed", "all": True})
    assert (code, out) == (202, {"retried": 150})
    assert [c["op"] for c in svc.raft.proposed[before:]] == ["retry"] * 38
    assert call(app, "GET", "/api/jobs?status=failed")[2]["count"] == 0


def test_discard_forgets_a_finished_job_and_refuses_a_live_one(svc):
    app = api.make_app(svc)
    failed(app, svc, "f1")
    call(app, "POST", "/api/jobs/register", {"id": "live", "type": "t"})
    assert call(app, "DELETE", "/api/jobs/f1")[::2] == \
        (200, {"status": "discarded", "job_id": "f1"})
    assert call(app, "GET", "/api/jobs/f1")[0] == 404
    code, _, out = call(app, "DELETE", "/api/jobs/live")
    assert (code, out["error"]) == (409, "conflict") and "cancel it first" in out["message"]
    assert call(app, "DELETE", "/api/jobs/nope")[0] == 404
    check(svc.raft.state)


def test_bulk_discard_by_filter_and_bulk_cancel_by_ids(svc):
    app = api.make_app(svc)
    failed(app, svc, "disk-1", "disk full")
    failed(app, svc, "net-1", "connection reset")
    for i in range(3):
        call(app, "POST", "/api/jobs/register", {"id": f"q{i}", "type": "t"})
    assert call(app, "POST", "/api/jobs/discard", {"error": "DISK", "all": True})[::2] == \
        (200, {"discarded": 1})
    assert sorted(svc.raft.state.jobs) == ["net-1", "q0", "q1", "q2"]
    code, _, out = call(app, "POST", "/api/jobs/cancel", {"ids": ["q0", "q2", "net-1"]})
    assert (code, out) == (200, {"cancelled": 2})
    assert [svc.raft.state.jobs[i]["status"] for i in ("q0", "q1", "q2")] == \
        ["cancelled", "pending", "cancelled"]
    code, _, out = call(app, "POST", "/api/jobs/discard", {"status": "running"})
    assert (code, out["field"]) == (400, "status")


def test_listing_takes_the_where_filters_and_an_offset(svc):
    app = api.make_app(svc)
    for i in range(5):
        call(app, "POST", "/api/jobs/register", {"id": f"ab-{i}", "type": "t"})
    call(app, "POST", "/api/jobs/register", {"id": "zz", "type": "t"})
    code, _, out = call(app, "GET", "/api/jobs?id_prefix=ab-&limit=2&offset=1")
    assert code == 200
    assert ([j["id"] for j in out["jobs"]], out["count"]) == (["ab-3", "ab-2"], 5)
    code, _, out = call(app, "GET", "/api/jobs?offset=x")
    assert (code, out["field"]) == (400, "offset")


def test_a_worker_is_shown_with_its_load_history_and_forgotten(svc):
    app = api.make_app(svc)
    for load in (1, 3):
        call(app, "POST", "/api/workers/heartbeat", {"workerId": "w/9", "currentLoad": load})
    code, _, out = call(app, "GET", "/api/workers/w/9")
    assert code == 200 and out["worker_id"] == "w/9"
    assert [p[1] for p in out["load_history"]] == [1, 3]
    assert call(app, "DELETE", "/api/workers/w/9")[::2] == \
        (200, {"status": "forgotten", "worker_id": "w/9"})
    assert call(app, "GET", "/api/workers/w/9")[0] == 404
    assert call(app, "DELETE", "/api/workers/w/9")[0] == 404
    code, headers, out = call(app, "DELETE", "/api/workers/heartbeat")
    assert (code, out["error"], headers.get("Allow")) == (405, "method_not_allowed", "POST")


def test_a_worker_with_running_jobs_is_not_forgotten(svc):
    app = api.make_app(svc)
    call(app, "POST", "/api/workers/heartbeat", {"workerId": "w1", "currentLoad": 1})
    call(app, "POST", "/api/jobs/register", {"id": "j1", "type": "t"})
    call(app, "POST", "/api/jobs/status", {"jobId": "j1", "status": "running",
                                           "workerId": "w1"})
    code, _, out = call(app, "DELETE", "/api/workers/w1")
    assert (code, out["error"]) == (409, "conflict") and "1 running jobs" in out["message"]


# The hot routes (api.hot_routes): the same answers without bottle's per-request work

def raw_call(app, method: str, path: str, raw: bytes | None, fields=()) -> tuple:
    """(status line, header list, body bytes) exactly as the WSGI app gave them."""
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
           "wsgi.input": io.BytesIO(raw or b"")}
    if raw is not None:
        env["CONTENT_LENGTH"] = str(len(raw))
    env.update(fields)
    setup_testing_defaults(env)
    got = {}

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = status, list(headers)

    body = b"".join(app(env, start_response))
    return got["status"], got["headers"], body


HOT_CASES = [
    ("POST", "/api/jobs/register", b'{"id": "j1", "type": "t", "priority": 10}', None),
    ("POST", "/api/jobs/register", b'{"id": "j1", "type": "t", "priority": 10}', None),
    ("POST", "/api/jobs/register", b'{"type": "t"}', None),
    ("POST", "/api/jobs/register", b'{"id": "j2", "run_at": 4102444800000}', None),
    ("POST", "/api/jobs/register", b'{"id": 5', None),
    ("POST", "/api/jobs/register", b'[]', None),
    ("POST", "/api/jobs/register", None, None),
    ("POST", "/api/jobs/register", b'{"id": "big", "payload": "' + b"x" * 2_000_000 + b'"}',
     None),
    ("POST", "/api/jobs/register", b'{"id": "j3"}', NotLeader("no leader")),
    ("POST", "/api/jobs/register", b'{"id": "j3"}', Overloaded("9 commands wait")),
    ("POST", "/api/jobs/register", b'{"id": "j3"}', ProposeTimeout("no commit in 5 s")),
    ("POST", "/api/jobs/register", b'{"id": "j3"}', RuntimeError("a bug")),
    ("POST", "/api/jobs/batch", b'{"jobs": [{"id": "b1"}, {"id": "b1"}, {"id": ""}]}', None),
    ("POST", "/api/jobs/batch", b'{"jobs": 3}', None),
    ("POST", "/api/jobs/status", b'{"jobId": "j1", "status": "running", "workerId": "w"}',
     None),
    ("POST", "/api/jobs/status", b'{"jobId": "j1", "status": "completed", "result": 1}',
     None),
    ("POST", "/api/jobs/status", b'{"jobId": "nope", "status": "running"}', None),
    ("POST", "/api/jobs/status", b'{"jobId": "j1", "status": "sideways"}', None),
    ("POST", "/api/workers/heartbeat", b'{"workerId": "w1", "workerType": "py"}', None),
    ("POST", "/api/workers/heartbeat", b'{}', None),
    ("GET", "/api/jobs/j1", None, None),                  # not hot: bottle's either way
]


def test_hot_routes_answer_exactly_as_bottle_does():
    """Every outcome of the hot routes, byte for byte: status line, header list
    (order included) and body, through bottle and through hot_routes, each on a
    fresh node given the same requests in the same order."""
    answers = {}
    for way in ("bottle", "hot"):
        s = fake_services()
        app = api.make_app(s)
        wsgi = app if way == "bottle" else api.hot_routes(app)
        got = []
        for method, path, raw, failure in HOT_CASES:
            s.raft.fail = failure
            got.append(raw_call(wsgi, method, path, raw))
        answers[way] = got
    for case, b, h in zip(HOT_CASES, answers["bottle"], answers["hot"]):
        assert h == b, case[:3]
    statuses = [int(s[:3]) for s, _, _ in answers["hot"]]
    assert statuses == [202, 202, 202, 202, 400, 400, 411, 413, 503, 503, 503, 500,
                        202, 400, 200, 200, 200, 400, 200, 400, 200], statuses


def test_a_hot_route_is_counted_in_the_route_metrics():
    from dqorch import metrics
    s = fake_services()
    wsgi = api.hot_routes(api.make_app(s))
    counter = metrics.HTTP_REQUESTS.labels("/api/workers/heartbeat", "200")
    before = counter._value.get()
    raw_call(wsgi, "POST", "/api/workers/heartbeat", b'{"workerId": "w9"}')
    assert counter._value.get() == before + 1
