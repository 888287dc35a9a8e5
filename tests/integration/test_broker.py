"""dqorch.broker against a real RabbitMQ: topology, confirms, returns, nacks, outages.

Tests that stop or restart a broker use the private one on 5673; the shared one on 5672
is only published to (job.low is purged before and after) and never stopped.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import re  # noqa: E402

import gevent  # noqa: E402
import pika  # noqa: E402
import pytest  # noqa: E402

from dqorch import amqp  # noqa: E402
from dqorch.broker import JOBS_EXCHANGE, STATUS_EXCHANGE  # noqa: E402
from dqorch.jobs import QUEUES as JOB_QUEUES  # noqa: E402

try:
    from .broker_fixtures import (blocking_channel, make_broker, message_count,  # noqa: F401,E402
                                  private_rabbit, purge, shared_rabbit, wait_until)
except ImportError:
    from broker_fixtures import (blocking_channel, make_broker, message_count,  # noqa: F401,E402
                                 private_rabbit, purge, shared_rabbit, wait_until)

BODY = b'{"id": "x", "type": "t"}'


def job_props(message_id, priority=1):
    return amqp.properties(delivery_mode=2, priority=priority,
                           content_type="application/json",
                           message_id=message_id, app_id="dqorch")


@pytest.fixture
def clean_job_low(shared_rabbit):
    purge(shared_rabbit.port, "job.low")
    yield shared_rabbit
    purge(shared_rabbit.port, "job.low")


def alternates(states, last):
    """on_state is called on every change and only on a change, starting connected.

    A broker that is shutting down may still accept one more connection, so tests
    across a stop/start check the shape, not an exact count of flips.
    """
    return (states[:1] == [True] and states[-1:] == [last]
            and all(a != b for a, b in zip(states, states[1:])))


def redeclare_exactly_as_clients_do(ch):
    """The declarations other clients make; any difference closes the channel (406)."""
    ch.exchange_declare(JOBS_EXCHANGE, exchange_type="direct", durable=True,
                        auto_delete=False, internal=False, arguments=None)
    ch.exchange_declare(STATUS_EXCHANGE, exchange_type="topic", durable=True,
                        auto_delete=False, internal=False, arguments=None)
    for name, max_priority in (("job.high", 10), ("job.medium", 5), ("job.low", 1)):
        ch.queue_declare(name, durable=True, exclusive=False, auto_delete=False,
                         arguments={"x-max-priority": max_priority})
        ch.queue_bind(name, JOBS_EXCHANGE, routing_key=name)


# Topology ###########################################################################

def test_topology_is_created_exactly_and_redeclarable(private_rabbit, make_broker):
    port = private_rabbit.port
    conn, ch = blocking_channel(port)
    for q in JOB_QUEUES:
        ch.queue_delete(q)
    ch.exchange_delete(JOBS_EXCHANGE)
    ch.exchange_delete(STATUS_EXCHANGE)
    conn.close()

    b, rec = make_broker(port)
    b.start()
    wait_until(lambda: b.connected, what="connected")
    assert rec.states == [True]
    assert b.disconnected_since_ms is None and b.stats["connects"] == 1

    conn, ch = blocking_channel(port)
    try:
        for q in JOB_QUEUES:
            ch.queue_declare(q, passive=True)
        ch.exchange_declare(JOBS_EXCHANGE, passive=True)
        ch.exchange_declare(STATUS_EXCHANGE, passive=True)
        redeclare_exactly_as_clients_do(ch)      # raises ChannelClosedByBroker on 406
        assert ch.is_open
        # The broker does compare arguments, so the re-declare above proves equality.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            ch.queue_declare("job.low", durable=True, arguments={"x-max-priority": 2})
        assert err.value.reply_code == 406
    finally:
        conn.close()

    queues = {q["name"]: q for q in private_rabbit.ctl_json(
        "list_queues", "name", "durable", "auto_delete", "exclusive", "arguments", "type")}
    assert set(queues) == {"job.high", "job.medium", "job.low"}
    for name, max_priority in JOB_QUEUES.items():
        q = queues[name]
        assert (q["durable"], q["auto_delete"], q["exclusive"], q["type"]) == \
            (True, False, False, "classic")
        assert q["arguments"] == [["x-max-priority", "signedint", max_priority]]

    exchanges = {e["name"]: e for e in private_rabbit.ctl_json(
        "list_exchanges", "name", "type", "durable", "auto_delete", "internal", "arguments")
        if e["name"] and not e["name"].startswith("amq.")}
    assert exchanges == {
        JOBS_EXCHANGE: {"name": JOBS_EXCHANGE, "type": "direct", "durable": True,
                        "auto_delete": False, "internal": False, "arguments": []},
        STATUS_EXCHANGE: {"name": STATUS_EXCHANGE, "type": "topic", "durable": True,
                          "auto_delete": False, "internal": False, "arguments": []},
    }
    bindings = {(x["source_name"], x["destination_name"], x["routing_key"])
                for x in private_rabbit.ctl_json("list_bindings") if x["source_name"]}
    assert bindings == {(JOBS_EXCHANGE, q, q) for q in JOB_QUEUES}


def connected_without_job_high(port: int, make_broker):
    """A started broker, connected, and job.high deleted behind its back."""
    b, rec = make_broker(port)
    b.start()
    wait_until(lambda: b.connected, what="connected")
    conn, ch = blocking_channel(port)
    ch.queue_delete("job.high")
    conn.close()
    return b, rec


def test_topology_is_declared_again_on_reconnect(private_rabbit, make_broker):
    port = private_rabbit.port
    b, rec = connected_without_job_high(port, make_broker)

    private_rabbit.ctl("close_all_connections", "test: force a reconnect")
    wait_until(lambda: b.stats["connects"] == 2 and b.connected, what="reconnected")
    assert rec.states == [True, False, True]
    conn, ch = blocking_channel(port)
    try:
        ch.queue_declare("job.high", passive=True)   # 404 if not declared again
    finally:
        conn.close()


def test_redeclare_puts_a_deleted_queue_back_on_the_open_connection(private_rabbit,
                                                                    make_broker):
    port = private_rabbit.port
    b, rec = connected_without_job_high(port, make_broker)
    assert b.publish("lost", JOBS_EXCHANGE, "job.high", BODY, job_props("r1", 10), True, "r1")
    wait_until(lambda: rec.settled() == 1, what="the return")
    assert rec.rejected == [("lost", "returned")]
    assert b.redeclare() is True
    assert b.redeclare() is False                 # one at a time
    wait_until(lambda: b.redeclare() is True, what="the first re-declare done")
    wait_until(lambda: b._redeclaring is None, what="the second re-declare done")
    assert b.publish("routed", JOBS_EXCHANGE, "job.high", BODY, job_props("r2", 10), True,
                     "r2")
    wait_until(lambda: rec.settled() == 2, what="the confirm")
    assert rec.confirmed == ["routed"]
    # Declared again on the same connection, with confirms still on: no reconnect.
    assert b.stats["connects"] == 1 and rec.states == [True] and b.stats["redeclares"] == 2
    conn, ch = blocking_channel(port)
    try:
        redeclare_exactly_as_clients_do(ch)       # the same arguments (no 406)
        assert ch.queue_declare("job.high", passive=True).method.message_count == 1
    finally:
        conn.close()


# Confirms, returns, nacks ###########################################################

def test_2000_mandatory_publishes_are_confirmed_in_publish_order(clean_job_low,
                                                                 make_broker):
    b, rec = make_broker(clean_job_low.port, window=1000)
    b.start()
    published = 0
    while published < 2000:
        assert b.wait_slot(timeout_s=30), "no free slot"
        while published < 2000 and b.free_slots() > 0:
            assert b.publish(published, JOBS_EXCHANGE, "job.low", BODY,
                             job_props("job-%d" % published), True, "job-%d" % published)
            published += 1
        assert b.in_flight() <= 1000
    wait_until(lambda: rec.settled() >= 2000, what="2000 confirms")
    assert rec.rejected == []
    assert rec.confirmed == list(range(2000))
    assert b.in_flight() == 0 and b.free_slots() == 1000
    assert b.stats["published"] == 2000 and b.stats["confirmed"] == 2000
    assert message_count(clean_job_low.port, "job.low") == 2000


def test_big_messages_arrive_whole_through_partial_sends(clean_job_low, make_broker):
    """40 messages of 1 MiB in one pass: more than the socket takes at once (the rest
    waits for pika's writability watcher) and several body frames each. Every byte
    and property must arrive as published, in order."""
    b, rec = make_broker(clean_job_low.port, window=100)
    b.start()
    assert b.wait_slot(timeout_s=30)
    bodies = [bytes([65 + i % 26]) * (1 << 20) + b"%d" % i for i in range(40)]
    for i, body in enumerate(bodies):
        assert b.publish(i, JOBS_EXCHANGE, "job.low", body, job_props("big-%d" % i), True,
                         "big-%d" % i)
    wait_until(lambda: rec.settled() >= 40, what="40 confirms")
    assert rec.confirmed == list(range(40)) and rec.rejected == []
    conn, ch = blocking_channel(clean_job_low.port)
    try:
        got = []
        while True:
            method, props, body = ch.basic_get("job.low", auto_ack=True)
            if method is None:
                break
            got.append((props.message_id, body))
    finally:
        conn.close()
    assert got == [("big-%d" % i, body) for i, body in enumerate(bodies)]


def test_publish_refuses_when_window_is_full(clean_job_low, make_broker):
    b, rec = make_broker(clean_job_low.port, window=3)
    b.start()
    assert b.wait_slot(timeout_s=30)
    results = [b.publish(i, JOBS_EXCHANGE, "job.low", BODY, job_props("w%d" % i), True, "w%d" % i)
               for i in range(4)]   # no switch in between: no confirm can free a slot
    assert results == [True, True, True, False]
    assert b.free_slots() == 0
    wait_until(lambda: rec.settled() >= 3, what="3 confirms")
    assert rec.confirmed == [0, 1, 2] and rec.rejected == []
    assert b.wait_slot(timeout_s=0)


def test_unroutable_mandatory_publish_is_returned_not_confirmed(clean_job_low,
                                                                make_broker):
    b, rec = make_broker(clean_job_low.port)
    b.start()
    assert b.wait_slot(timeout_s=30)
    assert b.publish("a", JOBS_EXCHANGE, "job.low", BODY, job_props("id-a"), True, "id-a")
    assert b.publish("b", JOBS_EXCHANGE, "no.such.queue", BODY, job_props("id-b"), True, "id-b")
    assert b.publish("c", JOBS_EXCHANGE, "job.low", BODY, job_props("id-c"), True, "id-c")
    wait_until(lambda: rec.settled() >= 3, what="3 settled")
    gevent.sleep(0.2)   # a duplicate report, if any, would arrive in this window
    assert sorted(rec.confirmed) == ["a", "c"]
    assert rec.rejected == [("b", "returned")]
    assert b.stats["returned"] == 1 and b.stats["confirmed"] == 2


def test_broker_nack_is_reported_as_rejected(shared_rabbit, make_broker):
    # A queue that refuses every message makes RabbitMQ nack the publish.
    conn, ch = blocking_channel(shared_rabbit.port)
    try:
        q = ch.queue_declare("", exclusive=True, arguments={
            "x-max-length": 0, "x-overflow": "reject-publish"}).method.queue
        b, rec = make_broker(shared_rabbit.port)
        b.start()
        assert b.wait_slot(timeout_s=30)
        assert b.publish("n", "", q, BODY, job_props("id-n"), True, "id-n")
        wait_until(lambda: rec.settled() >= 1, what="nack")
        assert rec.rejected == [("n", "nack")] and rec.confirmed == []
        assert b.stats["nacked"] == 1
    finally:
        conn.close()


def test_stop_reports_in_flight_tokens_once(clean_job_low, make_broker):
    b, rec = make_broker(clean_job_low.port)
    b.start()
    assert b.wait_slot(timeout_s=30)
    n = 0
    while b.publish(n, JOBS_EXCHANGE, "job.low", BODY, job_props("s%d" % n), True, "s%d" % n):
        n += 1
    assert n == 1000
    b.stop()
    assert not b.connected and b.in_flight() == 0 and b.free_slots() == 0
    reports = rec.reports()
    assert sorted(reports) == list(range(n))
    assert all(len(r) == 1 and r[0] in ("confirmed", "connection_lost")
               for r in reports.values())
    assert not b.publish("late", JOBS_EXCHANGE, "job.low", BODY, job_props("late"), True, "late")
    assert not b.wait_slot(timeout_s=0.1)


# Failures and outages ###############################################################

def test_bad_password_is_a_connect_failure_without_the_password(shared_rabbit,
                                                                make_broker):
    b, rec = make_broker(shared_rabbit.port, password="not-the-pw-93e1",
                         backoff_initial_s=0.05, backoff_max_s=0.1)
    b.start()
    wait_until(lambda: b.stats["connect_failures"] >= 2, what="two failures")
    assert not b.connected and rec.states == []
    assert b.disconnected_since_ms is not None
    assert "ACCESS_REFUSED" in b.last_error
    assert "not-the-pw-93e1" not in b.last_error


def test_reconnect_attempts_do_not_leak_file_descriptors(make_broker):
    def fds():
        return len(os.listdir("/proc/self/fd"))

    b, rec = make_broker(1, backoff_initial_s=0.01, backoff_max_s=0.01)   # refused
    b.start()
    wait_until(lambda: b.stats["connect_failures"] >= 5, what="5 failures")
    before = fds()
    wait_until(lambda: b.stats["connect_failures"] >= 55, what="55 failures")
    # pika's default GeventConnection makes a pipe per connection: +100 fds here.
    assert fds() - before < 10
    assert "ConnectionRefusedError" in b.last_error


def test_failed_connects_are_one_warning_then_still_down_with_the_attempts(
        make_broker, caplog, monkeypatch):
    import logging
    from dqorch import broker as broker_mod
    monkeypatch.setattr(broker_mod, "FAILURE_WARN_EVERY_S", 0.5)
    b, rec = make_broker(1, backoff_initial_s=0.02, backoff_max_s=0.02)   # refused
    with caplog.at_level(logging.INFO):
        b.start()
        wait_until(lambda: b.stats["connect_failures"] >= 10, what="10 failures")
        gevent.sleep(1.2)
        b.stop()
    failures = b.stats["connect_failures"]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if r.name.startswith("pika")]
    assert lines[0].startswith("broker connect failed host=127.0.0.1 port=1 "
                               "error=ConnectionRefusedError")
    still = lines[1:]
    assert 1 <= len(still) <= 3 and len(still) < failures - 5, lines
    attempts = [int(re.search(r" attempts=(\d+) ", m).group(1)) for m in still
                if m.startswith("broker still down host=127.0.0.1 port=1 ")]
    assert len(attempts) == len(still) and attempts == sorted(attempts) and attempts[0] > 1


def test_broker_down_means_disconnected_and_it_reconnects_by_itself(private_rabbit,
                                                                    make_broker):
    b, rec = make_broker(private_rabbit.port, backoff_initial_s=0.05, backoff_max_s=0.5)
    b.start()
    wait_until(lambda: b.connected, what="connected")
    try:
        private_rabbit.stop()
        wait_until(lambda: not b.connected, what="disconnected")
        assert alternates(rec.states, last=False)
        assert b.disconnected_since_ms is not None and b.last_error
        assert b.free_slots() == 0
        assert not b.publish("x", JOBS_EXCHANGE, "job.low", BODY, job_props("x"), True, "x")
        assert not b.wait_slot(timeout_s=0.1)
        wait_until(lambda: b.stats["connect_failures"] >= 2, what="failed reconnects")
        assert not b.connected and rec.rejected == [] and rec.confirmed == []
    finally:
        private_rabbit.start()
    wait_until(lambda: b.connected, timeout_s=60, what="reconnected")
    assert alternates(rec.states, last=True) and False in rec.states
    assert b.disconnected_since_ms is None and b.stats["connects"] >= 2
    assert b.publish("y", JOBS_EXCHANGE, "job.low", BODY, job_props("y"), True, "y")
    wait_until(lambda: rec.settled() >= 1, what="confirm after reconnect")
    assert rec.confirmed == ["y"] and rec.rejected == []
    purge(private_rabbit.port, "job.low")


def test_restart_with_messages_in_flight_reports_every_token_exactly_once(
        private_rabbit, make_broker):
    b, rec = make_broker(private_rabbit.port, window=500,
                         backoff_initial_s=0.05, backoff_max_s=0.5)
    published = []
    running = [True]

    def publisher():
        i = 0
        while running[0]:
            if not b.wait_slot(timeout_s=0.2):
                gevent.sleep(0.01)   # wait_slot returns at once on a stopped broker
                continue
            if b.publish(i, JOBS_EXCHANGE, "job.low", BODY, job_props("r%d" % i), True, "r%d" % i):
                published.append(i)
            i += 1
            if i % 50 == 0:
                gevent.sleep(0)   # let confirms and the test's own greenlet run

    b.start()
    pub = gevent.spawn(publisher)
    try:
        try:
            wait_until(lambda: len(rec.confirmed) >= 2000, what="publishing under way")
            private_rabbit.stop()
            wait_until(lambda: not b.connected, what="disconnected")
        finally:
            private_rabbit.start()
        wait_until(lambda: b.connected, timeout_s=60, what="reconnected")
        confirmed_at_reconnect = len(rec.confirmed)
        wait_until(lambda: len(rec.confirmed) >= confirmed_at_reconnect + 2000,
                   what="publishing resumed after reconnect")
    finally:
        running[0] = False
        pub.join(10)
    assert pub.dead and pub.exception is None
    wait_until(lambda: b.in_flight() == 0, what="all settled")

    reports = rec.reports()
    assert set(reports) == set(published), "reported tokens differ from published ones"
    duplicated = {t: r for t, r in reports.items() if len(r) != 1}
    assert duplicated == {}
    outcomes = {r[0] for r in reports.values()}
    assert outcomes <= {"confirmed", "connection_lost", "nack"}
    assert b.stats["published"] == len(published)
    assert alternates(rec.states, last=True) and False in rec.states
    purge(private_rabbit.port, "job.low")
