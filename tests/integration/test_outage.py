"""The broker being down is normal operation: the node serves, jobs wait as pending,
health says degraded, and publishing resumes by itself (DESIGN §4)."""
from __future__ import annotations

import os

import gevent

from .conftest import JOB_QUEUES, all_jobs, drain, own_broker, wait_until

# A broker of its own, stopped and started by these tests (not the shared one).
PRIVATE_PORT = int(os.environ.get("DQ_TEST_OUTAGE_RABBIT_PORT", "5674"))
private_rabbit = own_broker(PRIVATE_PORT)


def count(c, status):
    return c.call("GET", f"/api/jobs?status={status}&limit=1")[1]["count"]


def test_start_without_broker_then_broker_arrives(private_rabbit, make_node):
    private_rabbit.stop()
    node = make_node(rabbit_port=PRIVATE_PORT)
    c = node.client()
    for i in range(50):
        assert c.call("POST", "/api/jobs/register", {"id": f"out-{i}"})[0] == 202
    assert count(c, "pending") == 50
    status, health = node.health()
    assert status == 200 and health["status"] == "degraded"
    assert health["checks"]["broker"]["connected"] is False
    assert health["checks"]["broker"]["down_since"] is not None

    private_rabbit.start()
    wait_until(lambda: count(c, "queued") == 50, 60, 0.1, "50 jobs queued after broker start")
    assert node.health()[1]["status"] == "healthy"
    ids = {p.message_id for q in JOB_QUEUES for p, _ in drain(PRIVATE_PORT, q)}
    assert ids == {f"out-{i}" for i in range(50)}


def test_broker_restart_under_load_loses_nothing(private_rabbit, make_node):
    for q in JOB_QUEUES:
        drain(PRIVATE_PORT, q)
    node = make_node(rabbit_port=PRIVATE_PORT).wait_healthy()
    acked: set = set()
    done = [False]

    def client(k):
        c = node.client()
        i = 0
        while not done[0]:
            id_ = f"rl-{k}-{i}"
            if c.call("POST", "/api/jobs/register", {"id": id_, "type": "rl"})[0] == 202:
                acked.add(id_)
            i += 1
            gevent.sleep(0.002)
        c.close()
    clients = [gevent.spawn(client, k) for k in range(5)]
    try:
        wait_until(lambda: len(acked) >= 300, 60, 0.01, "300 acks before the restart")
        private_rabbit.stop()
        n_down = len(acked)
        wait_until(lambda: len(acked) >= n_down + 200, 60, 0.01, "acks while broker down")
        private_rabbit.start()
        n_up = len(acked)
        wait_until(lambda: len(acked) >= n_up + 300, 60, 0.01, "acks after the restart")
    finally:
        done[0] = True
        gevent.joinall(clients, timeout=30)
    c = node.client()
    wait_until(lambda: count(c, "pending") == 0, 120, 0.1, "no pending jobs")
    jobs = all_jobs(c, type="rl")
    assert {j["id"] for j in jobs} == acked and len(jobs) == len(acked)
    assert {j["status"] for j in jobs} == {"queued"}
    in_broker = {p.message_id for q in JOB_QUEUES for p, _ in drain(PRIVATE_PORT, q)}
    missing = acked - in_broker
    assert not missing, f"{len(missing)} acknowledged jobs are not in RabbitMQ"
