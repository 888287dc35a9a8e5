"""POST /api/jobs/batch against a real node and the real broker: per-item results in
order, each error case, a mixed batch, a batch of 1,000, a duplicate id inside one
batch, the limits, and that accepted jobs are durable and published."""
from __future__ import annotations

import json

import pytest

from .conftest import SHARED_PORT, JOB_QUEUES, NodeProc, drain, wait_until


@pytest.fixture(scope="module")
def node(tmp_path_factory, shared_rabbit):
    n = NodeProc(tmp_path_factory.mktemp("batch"), SHARED_PORT, max_batch_jobs=1000,
                 max_batch_body_bytes=2_000_000).start().wait_healthy()
    yield n
    n.stop()


def batch(node, jobs):
    return node.client().call("POST", "/api/jobs/batch", {"jobs": jobs})


def test_a_mixed_batch_answers_each_item_in_order(node):
    status, out = batch(node, [
        {"id": "b-ok-1", "type": "email", "priority": "HIGH"},
        {"id": "b-bad-prio", "priority": "urgent"},
        "not an object",
        {"jobId": "b-ok-2", "maxRetries": 2},
        {"id": "b-bad-id\x01"},
        {"type": "no-id"},                         # gets an id of its own
    ])
    assert status == 202, out
    r = out["results"]
    assert (out["accepted"], out["rejected"], out["duplicates"]) == (3, 3, 0) and len(r) == 6
    assert r[0] == {"job_id": "b-ok-1", "status": "accepted"}
    assert (r[1]["index"], r[1]["error"], r[1]["field"]) == (1, "invalid_request", "priority")
    assert (r[2]["index"], r[2]["error"]) == (2, "invalid_request")
    assert r[3] == {"job_id": "b-ok-2", "status": "accepted"}
    assert (r[4]["index"], r[4]["field"]) == (4, "id")
    assert r[5]["status"] == "accepted" and r[5]["job_id"]
    c = node.client()
    for id_ in ("b-ok-1", "b-ok-2", r[5]["job_id"]):
        assert c.call("GET", f"/api/jobs/{id_}")[0] == 200
    assert c.call("GET", "/api/jobs/b-bad-prio")[0] == 404
    assert c.call("GET", "/api/jobs/b-ok-1")[1]["queue"] == "job.high"


def test_a_duplicate_id_inside_one_batch_is_one_job_and_says_so(node):
    status, out = batch(node, [{"id": "b-dup", "type": "a"}, {"id": "b-dup2"},
                               {"id": "b-dup", "type": "b"}, {"jobId": "b-dup"},
                               {"id": "b-dup2", "priority": "urgent"}])   # refused: no repeat
    assert status == 202, out
    assert (out["accepted"], out["duplicates"], out["rejected"]) == (2, 2, 1), out
    r = out["results"]
    assert r[0] == {"job_id": "b-dup", "status": "accepted"}
    assert r[2] == {"job_id": "b-dup", "status": "duplicate", "index": 2, "duplicate_of": 0}
    assert r[3] == {"job_id": "b-dup", "status": "duplicate", "index": 3, "duplicate_of": 0}
    assert (r[4]["index"], r[4]["field"]) == (4, "priority")
    job = node.client().call("GET", "/api/jobs/b-dup")[1]
    assert job["type"] == "a"                      # the second was a repeat: no change
    assert [h["reason"] for h in job["history"]].count("registered") == 1


def test_a_batch_of_1000_is_durable_and_published(node, clean_queues):
    ids = [f"b-k-{i:04d}" for i in range(1000)]
    status, out = batch(node, [{"id": i, "type": "bulk", "payload": {"n": i}} for i in ids])
    assert status == 202 and out["accepted"] == 1000, out["rejected"]
    assert [r["job_id"] for r in out["results"]] == ids
    c = node.client()
    wait_until(lambda: c.call("GET", "/api/jobs?type=bulk&status=queued&limit=1")[1]
               ["count"] == 1000, 60, 0.1, "all queued")
    seen = {props.message_id for q in JOB_QUEUES for props, _ in drain(SHARED_PORT, q)}
    assert set(ids) <= seen
    node.stop()                                     # and they survive a restart
    node.start()
    assert node.client().call("GET", "/api/jobs?type=bulk&limit=1")[1]["count"] == 1000


@pytest.mark.parametrize("body,status,field", [
    ({"jobs": []}, 400, "jobs"), ({"jobs": {"id": "x"}}, 400, "jobs"), ({}, 400, "jobs"),
    ({"jobs": [{"id": f"b-big-{i}"} for i in range(1001)]}, 413, "jobs"),
])
def test_a_batch_that_is_not_a_batch_is_refused_whole(node, body, status, field):
    got, out = node.client().call("POST", "/api/jobs/batch", body)
    assert (got, out.get("field")) == (status, field), out
    assert node.client().call("GET", "/api/jobs/b-big-0")[0] == 404


def test_the_batch_body_has_its_own_limit(node):
    big = [{"id": f"b-l-{i}", "payload": {"d": "x" * 50_000}} for i in range(30)]
    raw = json.dumps({"jobs": big}).encode()       # ~1.5 MB: over max_body_bytes
    assert len(raw) > 1_048_576
    got, out = node.client().call("POST", "/api/jobs/batch", raw=raw)
    assert got == 202 and out["accepted"] == 30
    raw = json.dumps({"jobs": big * 2}).encode()   # ~3 MB: over max_batch_body_bytes
    got, out = node.client().call("POST", "/api/jobs/batch", raw=raw)
    assert (got, out["error"]) == (413, "payload_too_large")
