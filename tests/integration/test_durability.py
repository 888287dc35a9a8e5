"""Nothing a client got a 202 for is lost: kill -9 during a register load, restart,
and every acknowledged job is there once and reaches RabbitMQ."""
from __future__ import annotations

from pathlib import Path

import gevent
import gevent.pool

from dqorch.raft.log import records_end

from .conftest import SHARED_PORT, JOB_QUEUES, all_jobs, drain, wait_until

TOTAL = 2000
CLIENTS = 20


def load(node, ids, acked: set, kill_after: int | None = None) -> None:
    """Register ids from CLIENTS keep-alive connections; record each 202."""
    def client(chunk):
        c = node.client()
        try:
            for id_ in chunk:
                try:
                    status, _ = c.call("POST", "/api/jobs/register",
                                       {"id": id_, "type": "durable", "payload": {"n": id_}})
                except OSError:
                    return                       # the node died: stop this client
                if status == 202:
                    acked.add(id_)
        finally:
            c.close()
    chunks = [ids[i::CLIENTS] for i in range(CLIENTS)]
    greenlets = [gevent.spawn(client, ch) for ch in chunks]
    if kill_after is not None:
        wait_until(lambda: len(acked) >= kill_after, 60, 0.001, f"{kill_after} acks")
        node.kill9()
    gevent.joinall(greenlets, timeout=120)


def test_kill9_under_load_loses_no_acknowledged_job(make_node, clean_queues):
    node = make_node().wait_healthy()
    ids = [f"dur-{i:05d}" for i in range(TOTAL)]
    acked: set = set()
    load(node, ids, acked, kill_after=TOTAL // 3)
    assert TOTAL // 3 <= len(acked) < TOTAL       # the kill really hit the load
    # The killed node's open segment still holds its fill (raft/log.py Rule 3): the
    # restart must read the records past it.
    newest = max(Path(node.cfg["data_dir"]).glob("log-*.seg"))
    data = newest.read_bytes()
    assert records_end(data) < len(data) and not data[records_end(data):].strip(b"\xff")
    node.start()
    c = node.client()
    # Finish the load on the restarted node, as a retrying gateway would.
    load(node, [i for i in ids if i not in acked], acked)
    assert len(acked) == TOTAL

    def none_pending():
        return c.call("GET", "/api/jobs?status=pending&limit=1")[1]["count"] == 0
    wait_until(none_pending, 120, 0.1, "no pending jobs")
    jobs = all_jobs(c, type="durable")
    got = [j["id"] for j in jobs]
    assert len(got) == len(set(got)) == TOTAL     # each present, none twice
    assert set(got) == acked
    assert {j["status"] for j in jobs} == {"queued"}
    in_broker = {}
    for q in JOB_QUEUES:
        for props, body in drain(SHARED_PORT, q):
            in_broker[props.message_id] = in_broker.get(props.message_id, 0) + 1
            assert body["payload"] == {"n": props.message_id}
    missing = acked - set(in_broker)
    assert not missing, f"{len(missing)} acknowledged jobs never reached RabbitMQ"


def test_restart_replays_the_log_to_the_same_state(make_node, clean_queues):
    node = make_node(snapshot_entries=1000).wait_healthy()
    c = node.client()
    for i in range(1500):                          # crosses a snapshot
        c.call("POST", "/api/jobs/register", {"id": f"rp-{i}", "type": "replay"})
    c.call("POST", "/api/jobs/rp-7/status", {"status": "running", "workerId": "w"})
    c.call("POST", "/api/jobs/rp-8/cancel")
    wait_until(lambda: c.call("GET", "/api/jobs?status=pending&limit=1")[1]["count"] == 0,
               60, 0.05, "all queued")
    before = all_jobs(c, type="replay")
    c.close()
    assert node.stop() == 0
    node.start()
    c = node.client()
    after = all_jobs(c, type="replay")
    assert after == before
    _, raft = c.call("GET", "/api/raft/status")
    assert raft["term"] == 2


def test_kill9_after_a_snapshot_restarts_with_every_job(make_node, clean_queues):
    """A snapshot, then more commits, then kill -9: the restart reads the snapshot,
    the older segment cut back to its records and the open one past its fill."""
    node = make_node(snapshot_entries=1000).wait_healthy()
    c = node.client()
    data_dir = Path(node.cfg["data_dir"])
    for i in range(1200):
        assert c.call("POST", "/api/jobs/register", {"id": f"ks-{i}", "type": "ks"})[0] == 202
    wait_until(lambda: list(data_dir.glob("snapshot-*.json")), 60, 0.05, "a snapshot")
    for i in range(1200, 1300):                    # after it, in the open segment
        assert c.call("POST", "/api/jobs/register", {"id": f"ks-{i}", "type": "ks"})[0] == 202
    c.call("POST", "/api/jobs/ks-3/cancel")
    before = {j["id"]: j["status"] for j in all_jobs(c, type="ks")}
    c.close()
    node.kill9()
    newest = max(data_dir.glob("log-*.seg"))
    assert newest.read_bytes().endswith(b"\xff" * 4096), "the open segment has its fill"
    node.start()
    c = node.client()
    after = {j["id"]: j["status"] for j in all_jobs(c, type="ks")}
    assert set(after) == set(before) == {f"ks-{i}" for i in range(1300)}
    assert after["ks-3"] == "cancelled"
    started = Path(node.log_path).read_text()
    assert "loaded snapshot" in started, node.log_tail()
    # Nothing was in flight at the kill: the fill is read past, never cut as a tail.
    assert "cutting a torn log tail" not in started, node.log_tail()
