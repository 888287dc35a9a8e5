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
from dqorch import state as S
from dqorch.errors import LogFailed, Overloaded, ProposeTimeout
from dqorch.raft.core import NotLeader
from dqorch.rates import Rates
from dqorch.workers import WorkerTable
from tests.unit.helpers import T0, check


class FakeNode:
    """The Raft node as the API sees it: a leader whose propose applies at once."""

    def __init__(self) -> None:
        self.state = S.State()
        self.role, self.leader, self.applied_index = "leader", "n1", 0
        self.proposed: list = []
        self.fail: Exception | None = None     # raised by the next propose

    def propose(self, cmd: dict) -> dict:
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        cmd = dict(cmd, at_ms=T0 + len(self.proposed))
        self.proposed.append(cmd)
        self.applied_index += 1
        return S.apply(self.state, cmd)

    def propose_many(self, cmds: list) -> list:
        return [self.propose(c) for c in cmds]

    def status(self) -> dict:
        return {"role": self.role, "term": 1, "leader": self.leader,
                "commit_index": self.applied_index, "applied_index": self.applied_index,
                "last_log_index": self.applied_index}

    def has_quorum_contact(self, lease: bool = False) -> bool:
        return True


def fake_services() -> api.Services:
    node = FakeNode()
    ids = iter(range(1, 1000))

    def now_ms() -> int:
        return T0 + 5_000

    return api.Services(
        cfg=config.Config(), raft=node, state=lambda: node.state,
        workers=WorkerTable(30, now_ms), forwarder=None, rates=Rates(now_ms),
        health=lambda: (200, {"status": "healthy"}),
        cluster_status=lambda: {"node": "n1", "leader": "n1", "term": 1, "members": []},
        broker_status=lambda: {"connected": True}, broker_down_since=lambda: None,
        why_returned=lambda job: None, dispatch_backlog=dict,
        new_id=lambda: "gen-%d" % next(ids), now_ms=now_ms)


@pytest.fixture
def svc():
    return fake_services()


def call(app, method: str, path: str, body=None) -> tuple:
    """(status code, headers dict, decoded JSON body) of one request."""
    raw = b"" if body is None else (body if isinstance(body, bytes)
                                    else json.dumps(body).encode())
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(raw)}
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
