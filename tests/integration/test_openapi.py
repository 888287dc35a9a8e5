"""Contract test: a real dqorch.py process against the OpenAPI document it serves at
GET /api/openapi.json, driven by schemathesis' Python API.

- test_document_is_served: the route answers the same document as dqorch.openapi.SPEC.
- test_known_states_match_the_document: jobs seeded into every status (and workers,
  ignored reports, 404/405/409/413, ...) are fetched through schemathesis Cases built by
  hand, so the detailed response schemas (job JSON with history and `why`, listings,
  errors) are checked on real data, not only on what the fuzzer happens to reach.
- test_api_conforms (one subtest per operation): schemathesis' examples, coverage and
  fuzzing phases (positive and negative data, at most MAX_EXAMPLES fuzzed cases per
  operation) with the checks below. A 5xx or a response that does not match the
  document fails. Schemathesis never fuzzes the operation that served the schema
  (GET /api/openapi.json); the two tests above cover it.

The node is pointed at a closed port instead of the shared RabbitMQ, with
publish_on_register off: the fuzzer registers and fails hundreds of jobs, and none of
them may land in the job queues that other tests (and other test runs) count. Health
is then `degraded` (200); a broker-connected node is checked in test_health_with_broker.
"""
from __future__ import annotations

import json
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from dqorch.openapi import SPEC

from .conftest import SHARED_PORT, NodeProc, free_port
from .openapi_checks import CHECKS, MAX_EXAMPLES, load_schema


@pytest.fixture(scope="module")
def isolated_node(tmp_path_factory):
    """A node whose broker never answers (see the module docstring)."""
    n = NodeProc(tmp_path_factory.mktemp("openapi"), free_port(), publish_on_register=False,
                 job_max_retries=1, job_retry_backoff_s=0).start()
    yield n
    n.stop()


@pytest.fixture
def api_schema(isolated_node):
    return load_schema(isolated_node.http_port)


def call(schema, path: str, method: str, **kw):
    """One hand-built case through schemathesis: send it, run every check, return the
    response (status_code, json())."""
    case = schema[path][method].Case(**kw)
    return case.call_and_validate(checks=CHECKS)


def test_document_is_served(isolated_node):
    url = f"http://127.0.0.1:{isolated_node.http_port}/api/openapi.json"
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers.get_content_type() == "application/json"
        assert json.loads(resp.read()) == json.loads(json.dumps(SPEC))


def test_known_states_match_the_document(api_schema):
    s = api_schema
    reg = lambda body: call(s, "/api/jobs/register", "POST", body=body)  # noqa: E731

    def report(id_, status, **body):
        return call(s, "/api/jobs/{job_id}/status", "PUT", path_parameters={"job_id": id_},
                    body=dict(body, status=status))

    assert call(s, "/api/workers/heartbeat", "POST",
                body={"workerId": "oa-w1", "workerType": "python", "capacity": 4,
                      "currentLoad": -1, "cpuUsage": 0.5}).json() == {"status": "acknowledged"}
    for st in ("queued", "pending", "running", "completed", "failed", "cancelled"):
        r = reg({"jobId": f"oa-{st}", "type": "invoice", "priority": "high",
                 "payload": {"n": 1}, "maxRetries": 1 if st == "pending" else 0,
                 "metadata": {"k": "v", "n": 1, "b": True, "z": None},
                 "createdAt": "2026-01-01T00:00:00Z"})
        assert r.status_code == 202 and r.json()["job_id"] == f"oa-{st}"
    report("oa-running", "running", workerId="oa-w1", progress=40)
    report("oa-completed", "STARTED", workerId="oa-w1")
    report("oa-completed", "done", workerId="oa-w1", result={"pdf": "s3://x"}, progress=100)
    for id_ in ("oa-pending", "oa-failed"):
        report(id_, "running", worker_id="oa-w1")
        report(id_, "failed", worker_id="oa-w1", errorMessage="boom")
    assert call(s, "/api/jobs/{job_id}/cancel", "POST",
                path_parameters={"job_id": "oa-cancelled"}).json()["status"] == "cancelled"
    # reported before registered, with a result that is not an object
    r = call(s, "/api/jobs/status", "POST",
             body={"job_id": "oa-reported", "status": "success", "result": [1, "two"]})
    assert r.json() == {"status": "updated"}
    r = report("oa-completed", "failed")
    assert r.json() == {"status": "ignored", "reason": "terminal"}

    want = {"oa-queued": "queued", "oa-pending": "pending", "oa-running": "running",
            "oa-completed": "completed", "oa-failed": "failed",
            "oa-cancelled": "cancelled", "oa-reported": "completed"}
    for id_, status in want.items():
        r = call(s, "/api/jobs/{job_id}", "GET", path_parameters={"job_id": id_})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["status"] == status, job
        assert job["history"] and job["why"], job
    assert call(s, "/api/jobs/{job_id}", "GET",
                path_parameters={"job_id": "oa-running"}).json()["progress"] == 40
    for query in ({}, {"full": "1"}, {"status": "completed", "limit": 1},
                  {"queue": "job.high", "type": "invoice", "worker_id": "oa-w1"}):
        r = call(s, "/api/jobs", "GET", query=query)
        assert r.status_code == 200 and r.json()["jobs"], (query, r.text)
    page = call(s, "/api/jobs", "GET", query={"limit": 2}).json()
    assert page["next"] is not None
    call(s, "/api/jobs", "GET", query={"limit": 2, "cursor": page["next"]})
    workers = {w["worker_id"]: w for w in call(s, "/api/workers", "GET").json()["workers"]}
    assert workers["oa-w1"]["running_jobs"] == 1 and workers["oa-w1"]["current_load"] == 0
    for path in ("/api/health", "/api/raft/status", "/api/cluster/status", "/api/metrics",
                 "/api/openapi.json"):
        assert call(s, path, "GET").status_code == 200, path

    # Errors, each checked against its documented shape.
    cases = [
        ("/api/jobs/{job_id}", "GET", {"path_parameters": {"job_id": "oa-nope"}}, 404),
        ("/api/jobs/{job_id}", "GET", {"path_parameters": {"job_id": "x/cancel"}}, 405),
        ("/api/jobs/{job_id}/cancel", "POST", {"path_parameters": {"job_id": "oa-nope"}}, 404),
        ("/api/jobs/{job_id}/cancel", "POST", {"path_parameters": {"job_id": "oa-failed"}},
         409),
        ("/api/jobs/{job_id}/cancel", "POST", {"path_parameters": {"job_id": "a\x01"}}, 400),
        ("/api/jobs/register", "POST", {"body": {"priority": "urgent"}}, 400),
        ("/api/jobs/register", "POST", {"body": {"payload": {"x": "y" * 70000}}}, 413),
        ("/api/jobs/register", "POST", {"body": [1]}, 400),
        ("/api/jobs/status", "POST", {"body": {"status": "running"}}, 400),
        ("/api/jobs/{job_id}/status", "POST",
         {"path_parameters": {"job_id": "j"}, "body": {"status": "paused"}}, 400),
        ("/api/workers/heartbeat", "POST", {"body": {}}, 400),
        ("/api/jobs", "GET", {"query": {"limit": 0}}, 400),
        ("/api/jobs", "GET", {"query": {"status": "lost"}}, 400),
    ]
    for path, method, kw, code in cases:
        r = call(s, path, method, **kw)
        assert r.status_code == code, (path, method, kw, r.status_code, r.text)
    r = call(s, "/api/jobs/{job_id}", "GET", path_parameters={"job_id": "x/cancel"})
    assert r.headers["allow"] == ["POST"], r.headers


def test_health_with_broker(make_node, shared_rabbit):
    """Read-only operations on a node connected to the shared broker (it publishes
    nothing: no job is registered)."""
    node = make_node(SHARED_PORT).wait_healthy()
    s = load_schema(node.http_port)
    body = call(s, "/api/health", "GET").json()
    assert body["status"] == "healthy" and body["checks"]["broker"]["connected"] is True
    for path in ("/api/metrics", "/api/raft/status", "/api/cluster/status", "/api/workers",
                 "/api/jobs"):
        assert call(s, path, "GET").status_code == 200, path


lazy = schemathesis.pytest.from_fixture("api_schema")


@lazy.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case):
    case.call_and_validate(checks=CHECKS)


# Bugs found while writing this test, fixed since (no fuzzer reaches them: hypothesis
# never generates lone surrogates nor percent-encoded bytes that are not UTF-8).

def test_lone_surrogates_are_a_400_and_harm_nothing(tmp_path):
    node = NodeProc(tmp_path, free_port(), publish_on_register=False).start()
    try:
        c = node.client()
        for path, raw in (("/api/jobs/register", rb'{"id":"s\ud800"}'),
                          ("/api/jobs/register", rb'{"id":"s1","payload":{"k":"\udfff"}}'),
                          ("/api/workers/heartbeat", rb'{"workerId":"w1","note":"\ud83d"}'),
                          ("/api/jobs/status",
                           rb'{"jobId":"s2","status":"running","workerId":"w\ud800"}')):
            status, body = c.call("POST", path, raw=raw)
            assert status == 400 and body["error"] in ("invalid_json", "invalid_request"), \
                (path, raw, status, body)
        assert c.call("GET", "/api/workers")[0] == 200
        status, body = c.call("POST", "/api/jobs/register", {"id": "after-surrogates"})
        assert status == 202, (status, body)
    finally:
        node.stop()


def test_query_that_is_not_utf8_is_a_400(isolated_node):
    c = isolated_node.client()
    status, body = c.call("GET", "/api/jobs?type=%FF")
    assert status == 400 and body["error"] == "invalid_request", (status, body)
