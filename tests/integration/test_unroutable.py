"""A job queue deleted in RabbitMQ while a real dqorch.py publishes to it (the shared
test broker, as an operator's `rabbitmqctl delete_queue job.high` would): the node
declares the queues again, retries the returned job with a capped exponential backoff,
says so in GET /api/health (degraded, a check naming the queue), in the job's `why`,
in a metric and in one log line for the whole episode, and queues the job once the
queue stays.

Before: every job for the queue came back unroutable (basic.return) and was published
again every second for ever, with a WARNING each time, while health said `healthy` and
`why` said "waiting for RabbitMQ to confirm".
"""
from __future__ import annotations

import http.client
import re

import gevent
import pytest

from .broker_fixtures import SHARED_PORT, blocking_channel
from .conftest import drain, wait_until

JOB = {"id": "unroutable-1", "type": "unroutable", "priority": 10}     # -> job.high
WARNING = re.compile(r"WARNING dqorch\.dispatch job queue unroutable queue=job\.high ")


def scrape(node) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", node.metrics_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def sample(text: str, name: str, **labels) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return None if m is None else float(m.group(1))


def queue_exists(name: str) -> bool:
    import pika
    conn, ch = blocking_channel(SHARED_PORT)
    try:
        ch.queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if conn.is_open:
            conn.close()


class Deleter:
    """Deletes job.high again and again (a hostile operator), in a greenlet, until
    stopped: each declare the node makes is undone before its next retry."""

    def __init__(self) -> None:
        self.conn, self.ch = blocking_channel(SHARED_PORT)
        self.running = True
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while self.running:
            self.ch.queue_delete("job.high")
            gevent.sleep(0.05)

    def stop(self) -> None:
        self.running = False
        self.greenlet.join(10)
        self.conn.close()


@pytest.fixture
def deleter(shared_rabbit, clean_queues):
    made = []

    def start() -> Deleter:
        made.append(Deleter())
        return made[-1]
    yield start
    for d in made:
        if d.running:
            d.stop()


def test_a_deleted_job_queue_is_declared_again_with_backoff_and_said(make_node, deleter):
    node = make_node().wait_healthy()
    c = node.client()
    hostile = deleter()
    # The first delete must land before the register's publish: the node re-declares
    # the queues only once a job comes back (else the job is simply queued).
    wait_until(lambda: not queue_exists("job.high"), 10, 0.02, "job.high deleted")
    assert c.call("POST", "/api/jobs/register", JOB)[0] == 202

    def queues_check():
        return node.health()[1]["checks"]["queues"]
    # Three rounds: returned, declared again, retried after 1 s, returned, 2 s, ...
    wait_until(lambda: queues_check()["unroutable"].get("job.high", {}).get("rounds", 0)
               >= 3, 60, 0.05, "three rounds of returns\n" + node.log_tail())
    status, health = node.health()
    assert status == 200 and health["status"] == "degraded", health
    check = health["checks"]["queues"]
    assert check["ok"] is False and set(check["unroutable"]) == {"job.high"}, check
    high = check["unroutable"]["job.high"]
    assert re.fullmatch(r"job\.high returns jobs unroutable since \d\d:\d\d:\d\d UTC "
                        r"\(returns=\d+; no queue bound to its routing key: deleted\?\): "
                        r"declaring the queues again, next try in [\d.]+ s",
                        check["error"]), check
    # Backoff, not every second: one job, one return a round, each round twice as long.
    assert high["returned"] == high["rounds"], high
    assert high["retry_delay_s"] == min(30, 2 ** (high["rounds"] - 1)), high
    job = c.call("GET", f"/api/jobs/{JOB['id']}")[1]
    assert job["status"] == "pending"
    assert re.fullmatch(r"pending: job\.high returned it unroutable at \d\d:\d\d:\d\d UTC; "
                        r"re-declaring the queues", job["why"]), job["why"]
    text = scrape(node)
    assert sample(text, "distriqueue_queue_unroutable", queue="job.high") == 1
    assert sample(text, "distriqueue_queue_unroutable", queue="job.low") == 0
    assert sample(text, "distriqueue_queue_unroutable_episodes_total", queue="job.high") == 1
    assert sample(text, "distriqueue_broker_events_total", event="redeclares") >= 3

    hostile.stop()                     # the queue now stays once declared
    wait_until(lambda: c.call("GET", f"/api/jobs/{JOB['id']}")[1]["status"] == "queued",
               60, 0.1, "the job queued once job.high stays\n" + node.log_tail())
    messages = drain(SHARED_PORT, "job.high")
    assert [props.message_id for props, _ in messages] == [JOB["id"]]
    status, health = node.health()
    assert health["status"] == "healthy" and health["checks"]["queues"] == {
        "ok": True, "unroutable": {}, "error": None}, health
    assert sample(scrape(node), "distriqueue_queue_unroutable", queue="job.high") == 0
    log_text = node.log_path.read_text()
    # One line when the episode began, one when it ended: none per returned message.
    assert len(WARNING.findall(log_text)) == 1, node.log_tail()
    assert "broker refused jobs reason=returned" not in log_text
    assert re.search(r"INFO dqorch\.dispatch job queue routable again queue=job\.high "
                     r"returned=\d+ rounds=\d+", log_text), node.log_tail()


def test_a_queue_deleted_once_is_back_within_the_first_retry(make_node, shared_rabbit,
                                                             clean_queues):
    node = make_node().wait_healthy()
    conn, ch = blocking_channel(SHARED_PORT)
    try:
        ch.queue_delete("job.high")
    finally:
        conn.close()
    c = node.client()
    assert c.call("POST", "/api/jobs/register", dict(JOB, id="unroutable-2"))[0] == 202
    wait_until(lambda: c.call("GET", "/api/jobs/unroutable-2")[1]["status"] == "queued",
               30, 0.05, "queued after one re-declare\n" + node.log_tail())
    assert [p.message_id for p, _ in drain(SHARED_PORT, "job.high")] == ["unroutable-2"]
    conn, ch = blocking_channel(SHARED_PORT)
    try:       # declared as CONTRACT §3 says: a client's own declare is accepted (no 406)
        ch.queue_declare("job.high", durable=True, exclusive=False, auto_delete=False,
                         arguments={"x-max-priority": 10})
    finally:
        conn.close()
    log_text = node.log_path.read_text()
    assert len(WARNING.findall(log_text)) == 1, node.log_tail()
    assert "job queue routable again queue=job.high returned=1 rounds=1" in log_text
