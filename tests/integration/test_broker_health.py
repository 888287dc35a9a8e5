"""The broker as operators see it (issue 8), through real dqorch processes: a broker
that stops answering (SIGSTOP: the connection stays open, nothing comes back) turns
GET /api/health degraded, with jobs in flight by the overdue confirms (not before), with
nothing in flight by the AMQP heartbeat (rabbitmq_heartbeat_s, which the connection
negotiates); a broker that is not there is told in the log once per state change,
without pika's own lines."""
from __future__ import annotations

import os
import re

from dqorch.broker import CONFIRM_OVERDUE_S

from .conftest import all_jobs, free_port, own_broker, wait_until

# A broker of its own, frozen and thawed by these tests (not the shared one).
PORT = int(os.environ.get("DQ_TEST_STALL_RABBIT_PORT", "5677"))
rabbit = own_broker(PORT)


def broker_check(node) -> dict:
    return node.health()[1]["checks"]["broker"]


def test_frozen_broker_with_jobs_in_flight_is_degraded_once_confirms_are_overdue(rabbit, make_node):
    # A long heartbeat: within the bound below only the overdue confirms can tell.
    node = make_node(rabbit_port=PORT, rabbitmq_heartbeat_s=120).wait_healthy()
    c = node.client()
    with rabbit.frozen():
        for i in range(200):
            assert c.call("POST", "/api/jobs/register", {"id": f"stall-{i}", "type": "st"})[0] == 202
        # Unconfirmed is not yet overdue: still healthy until the confirm watchdog.
        wait_until(lambda: broker_check(node)["in_flight"] == 200, 10, 0.1, "200 in flight")
        assert broker_check(node)["ok"] is True, "degraded before the confirms were overdue"
        wait_until(lambda: node.health()[1]["status"] == "degraded", CONFIRM_OVERDUE_S + 10,
                   0.1, "degraded while the broker is frozen\n" + node.log_tail())
        status, health = node.health()
        broker = health["checks"]["broker"]
        assert status == 200 and broker["ok"] is False and broker["connected"] is True
        assert re.fullmatch(r"confirms overdue \d+ s \(in_flight=200\)", broker["error"]), broker
        assert broker["in_flight"] == 200 and broker["oldest_unconfirmed_s"] >= CONFIRM_OVERDUE_S
        assert all(j["status"] == "pending" for j in all_jobs(c, type="st"))
    node.wait_healthy(60)
    wait_until(lambda: {j["status"] for j in all_jobs(c, type="st")} == {"queued"}, 60, 0.2,
               "jobs queued after the broker thawed")
    broker = broker_check(node)
    assert broker["ok"] and broker["error"] is None and broker["oldest_unconfirmed_s"] == 0


def test_frozen_idle_broker_is_noticed_by_the_heartbeat(rabbit, make_node):
    node = make_node(rabbit_port=PORT, rabbitmq_heartbeat_s=2).wait_healthy()
    # The setting reaches the connection (before: pika's own 30 s was negotiated). How
    # long the node takes to notice is bench/ material, not a test's.
    (conn,) = rabbit.ctl_json("list_connections", "timeout")
    assert conn["timeout"] == 2, conn
    with rabbit.frozen():
        # Nothing in flight: only the heartbeat can tell. pika drops a connection that
        # received nothing for a whole check interval of heartbeat + 5 s (2 x 7 s here).
        wait_until(lambda: broker_check(node)["connected"] is False, 60, 0.1,
                   "connection dropped by the heartbeat\n" + node.log_tail())
        assert node.health()[1]["status"] == "degraded"
        assert re.search(r"WARNING dqorch\.broker broker disconnected .*error=AMQPHeartbeatTimeout",
                         node.log_tail(200)), node.log_tail()
    node.wait_healthy(60)


def test_broker_not_there_is_one_line_not_pika_noise(make_node):
    node = make_node(rabbit_port=free_port())    # nothing listens there
    wait_until(lambda: broker_check(node)["stats"]["connect_failures"] >= 5, 30, 0.1,
               "5 failed connect attempts")
    lines = node.log_path.read_text().splitlines()
    # Before: 7 ERROR lines from pika.adapters.* per attempt.
    assert [line for line in lines if re.match(r"\S+ \S+ \w+ pika", line)] == []
    broker_lines = [line for line in lines if " dqorch.broker " in line]
    assert 1 <= len(broker_lines) <= 2, "\n".join(broker_lines)
    assert "WARNING dqorch.broker broker connect failed" in broker_lines[0]
    assert "ConnectionRefusedError" in broker_lines[0]
    health = node.health()[1]
    assert health["status"] == "degraded" and "ConnectionRefusedError" in \
        health["checks"]["broker"]["error"]
