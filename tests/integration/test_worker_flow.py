"""A client that behaves like the Python worker of CONTRACT §1 (workersim) drives jobs
through a real node and broker: consume job.high -> job.medium -> job.low, post
`running` then `completed`, heartbeat."""
from __future__ import annotations

import collections
import json

import gevent

from . import workersim
from .conftest import SHARED_PORT, blocking_channel, wait_until


def test_python_worker_drives_200_jobs_to_completed(make_node, clean_queues):
    node = make_node().wait_healthy()
    conn, ch = blocking_channel(SHARED_PORT)
    events_q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
    ch.queue_bind(events_q, "status.exchange", "#")
    c = node.client()
    ids = [f"flow-{i:03d}" for i in range(200)]
    for i, id_ in enumerate(ids):
        assert c.call("POST", "/api/jobs/register", {
            "id": id_, "type": "flow", "priority": (1, 5, 10)[i % 3]})[0] == 202

    handled: list = []
    done = [False]
    workers = [gevent.spawn(workersim.run, node.http_port, SHARED_PORT, f"py-{n}",
                            stop=lambda: done[0], handled=handled) for n in range(2)]

    def all_completed():
        _, body = c.call("GET", "/api/jobs?type=flow&status=completed&limit=1")
        return body["count"] == 200
    try:
        wait_until(all_completed, 120, 0.1, "200 jobs completed")
    finally:
        done[0] = True
        gevent.joinall(workers, timeout=10)
    for g in workers:
        assert g.successful(), g.exception

    events = collections.defaultdict(list)

    def got_all_events():
        while True:
            method, _, body = ch.basic_get(events_q, auto_ack=True)
            if method is None:
                break
            ev = json.loads(body)
            events[ev["jobId"]].append(ev["jobStatus"])
        return sum(len(v) for v in events.values()) >= 400
    wait_until(got_all_events, 60, 0.05, "400 status events")
    conn.close()
    assert sorted(id_ for id_, _ in handled) == ids
    assert {id_: events[id_] for id_ in ids} == {id_: ["RUNNING", "COMPLETED"] for id_ in ids}
    _, body = c.call("GET", "/api/jobs/flow-000")
    assert body["result"] == {"n": "flow-000"} and body["worker_id"].startswith("py-")
    _, ws = c.call("GET", "/api/workers")
    assert {w["worker_id"] for w in ws["workers"]} >= {"py-0", "py-1"}
