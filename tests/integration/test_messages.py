"""RabbitMQ side of CONTRACT §3 with a real node: topology the clients can re-declare,
the job message's properties and 15-key body, and the status event body."""
from __future__ import annotations

import json
from urllib.parse import quote

import pika
import pytest

from .conftest import SHARED_PORT, all_jobs, blocking_channel, drain, wait_until

BODY_KEYS = {"id", "type", "priority", "status", "worker_id", "payload", "result",
             "error_message", "retry_count", "max_retries", "execution_timeout",
             "created_at", "started_at", "completed_at", "metadata"}


@pytest.fixture
def node(make_node, clean_queues):
    return make_node().wait_healthy()


@pytest.fixture
def events(shared_rabbit):
    """A private queue bound '#' to status.exchange, like the gateway's status.queue."""
    conn, ch = blocking_channel(SHARED_PORT)
    q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
    ch.queue_bind(q, "status.exchange", "#")

    def take(n, timeout_s=30):
        got = []

        def more():
            method, props, body = ch.basic_get(q, auto_ack=True)
            if method is not None:
                got.append((method, props, json.loads(body)))
            return len(got) >= n
        wait_until(more, timeout_s, 0.01, f"{n} status events")
        return got
    yield take
    conn.close()


def test_clients_can_redeclare_the_topology(node):
    conn, ch = blocking_channel(SHARED_PORT)
    try:
        # Exactly what the Python/Rust/Java clients declare: any difference -> 406.
        ch.exchange_declare("jobs.exchange", "direct", durable=True, auto_delete=False,
                            internal=False, arguments=None)
        ch.exchange_declare("status.exchange", "topic", durable=True, auto_delete=False)
        for q, maxp in (("job.high", 10), ("job.medium", 5), ("job.low", 1)):
            ch.queue_declare(q, durable=True, exclusive=False, auto_delete=False,
                             arguments={"x-max-priority": maxp})
            ch.queue_declare(q, passive=True)
            ch.queue_bind(q, "jobs.exchange", q)
        ch.exchange_declare("jobs.exchange", passive=True)
        ch.exchange_declare("status.exchange", passive=True)
    finally:
        conn.close()


def test_a_different_declaration_is_refused(node):
    """The check above can fail: a wrong argument really is a 406."""
    conn, ch = blocking_channel(SHARED_PORT)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("job.high", durable=True, arguments={"x-max-priority": 5})
        assert e.value.reply_code == 406
    finally:
        conn.close()


@pytest.mark.parametrize("priority,queue,amqp", [(12, "job.high", 10), (5, "job.medium", 5),
                                                 (2, "job.low", 1)])
def test_job_message_properties_and_body(node, priority, queue, amqp):
    c = node.client()
    assert c.call("POST", "/api/jobs/register", {
        "id": f"msg-{priority}", "type": "t", "priority": priority,
        "payload": {"k": "v"}, "metadata": {"m": 1}})[0] == 202
    wait_until(lambda: c.call("GET", f"/api/jobs/msg-{priority}")[1]["status"] == "queued",
               30, 0.02, "job queued")
    [(props, body)] = drain(SHARED_PORT, queue)
    assert props.delivery_mode == 2 and props.priority == amqp
    assert props.content_type == "application/json" and props.app_id == "dqorch"
    assert props.message_id == f"msg-{priority}" and isinstance(props.timestamp, int)
    term = c.call("GET", "/api/raft/status")[1]["term"]
    assert props.headers == {"x-dq-attempt": 0, "x-dq-term": term}
    assert set(body) >= BODY_KEYS
    assert body["id"] == f"msg-{priority}" and body["type"] == "t"
    assert body["priority"] == priority and body["status"] == "pending"
    assert body["payload"] == {"k": "v"} and body["metadata"] == {"m": 1}
    assert body["retry_count"] == 0 and body["max_retries"] == 3
    assert body["execution_timeout"] == 300 and isinstance(body["created_at"], int)
    for k in ("worker_id", "result", "error_message", "started_at", "completed_at"):
        assert body[k] is None


def test_status_event_bodies(node, events):
    c = node.client()
    c.call("POST", "/api/jobs/register", {"id": "ev-1"})
    c.call("POST", "/api/jobs/status", {"jobId": "ev-1", "status": "running",
                                        "workerId": "w-1", "progress": 10})
    c.call("POST", "/api/jobs/status", {"jobId": "ev-1", "status": "completed",
                                        "workerId": "w-1", "result": "plain"})
    c.call("POST", "/api/jobs/register", {"id": "ev-2", "max_retries": 1})
    c.call("POST", "/api/jobs/ev-2/status", {"status": "failed", "errorMessage": "e1"})
    c.call("POST", "/api/jobs/ev-2/status", {"status": "failed", "errorMessage": "e2"})
    c.call("POST", "/api/jobs/register", {"id": "ev-3"})
    c.call("POST", "/api/jobs/ev-3/cancel")
    got = events(5)
    for method, props, _ in got:
        assert method.routing_key == "status.update"
        assert props.content_type == "application/json" and props.delivery_mode == 2
    bodies = [b for _, _, b in got]
    for b in bodies:
        assert b["timestamp"].endswith("Z") and "T" in b["timestamp"]
        del b["timestamp"]
    assert bodies == [
        {"jobId": "ev-1", "jobStatus": "RUNNING", "workerId": "w-1", "progress": 10},
        {"jobId": "ev-1", "jobStatus": "COMPLETED", "workerId": "w-1",
         "result": {"value": "plain"}, "progress": 10},
        {"jobId": "ev-2", "jobStatus": "RETRYING", "workerId": "unknown", "errorMessage": "e1"},
        {"jobId": "ev-2", "jobStatus": "FAILED", "workerId": "unknown", "errorMessage": "e2"},
        {"jobId": "ev-3", "jobStatus": "CANCELLED", "workerId": "unknown"},
    ]


def test_publish_on_register_off_queues_without_publishing(make_node, clean_queues):
    node = make_node(publish_on_register=False).wait_healthy()
    c = node.client()
    c.call("POST", "/api/jobs/register", {"id": "nopub", "max_retries": 1})
    assert c.call("GET", "/api/jobs/nopub")[1]["status"] == "queued"
    c.call("POST", "/api/jobs/nopub/status", {"status": "failed"})   # a retry is published
    wait_until(lambda: c.call("GET", "/api/jobs/nopub")[1]["status"] == "queued", 30, 0.02,
               "retry queued")
    msgs = drain(SHARED_PORT, "job.medium")
    assert [(p.message_id, p.headers["x-dq-attempt"]) for p, _ in msgs] == [("nopub", 1)]


def test_an_id_too_long_for_a_message_id_is_published_without_one(node):
    """CONTRACT allows ids of 256 characters; an AMQP message_id holds 255 bytes. Such
    a job must not stop publishing (a step that raised was retried for ever, and every
    job after it waited): it goes without message_id, and so do the jobs after it."""
    c = node.client()
    ids = ["x" * 256, "é" * 200, "after-the-long-ones"]
    for id_ in ids:
        assert c.call("POST", "/api/jobs/register", {"id": id_})[0] == 202
    for id_ in ids:
        wait_until(lambda: c.call("GET", "/api/jobs/" + quote(id_))[1]["status"] == "queued",
                   30, 0.02, "job queued")
    got = {body["id"]: props for props, body in drain(SHARED_PORT, "job.medium")}
    assert set(got) == set(ids)
    assert got["x" * 256].message_id is None and got["é" * 200].message_id is None
    assert got["after-the-long-ones"].message_id == "after-the-long-ones"
