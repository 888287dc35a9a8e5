"""A real dqorch.py starting on a data_dir that takes a while to replay: it answers
from its first accepted connection, 503 "starting" on the API (health included) and
on the metrics port's /health, and a stop signal in the middle of the replay ends it
cleanly. Before: the ports accepted connections and answered nothing until the replay
was over (250,000 jobs: 3-4 s of client timeouts), then GET /api/jobs answered from
whatever had been loaded.

The data_dir is made once per module, through the batch API of a node whose broker is
not there (nothing is published), with no snapshot, so that every job is a log entry
to replay. No timing is asserted: "during the replay" is shown by the answers' own
words and by the log, which has no "node ready" line yet when they arrive.
"""
from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket

import pytest

from .conftest import free_port, wait_until

JOBS = 80_000
PER_BATCH = 5_000
# The answer names what start-up is doing (raft/node.py start_phase).
REPLAY_PHASES = ("starting: reading the log", "starting: loading the snapshot",
                 "starting: replaying the log")


@pytest.fixture(scope="module")
def replay_data(tmp_path_factory):
    """A data_dir holding JOBS registered jobs, all of them in the log tail."""
    from .conftest import NodeProc
    node = NodeProc(tmp_path_factory.mktemp("fill"), free_port(),
                    max_batch_jobs=PER_BATCH, snapshot_entries=100_000_000)
    node.start()
    try:
        c = node.client()
        for first in range(0, JOBS, PER_BATCH):
            batch = [{"id": f"rp-{i}", "type": "replay", "payload": {"i": i}}
                     for i in range(first, first + PER_BATCH)]
            status, out = c.call("POST", "/api/jobs/batch", {"jobs": batch})
            assert status == 202 and out["accepted"] == PER_BATCH, (status, out)
        c.close()
    finally:
        assert node.stop() == 0, node.log_tail()
    return node.cfg["data_dir"]


def starting_node(make_node, replay_data, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(replay_data, data_dir)
    return make_node(start=False, rabbit_port=free_port(), data_dir=str(data_dir))


def first_connection(port: int, proc) -> socket.socket:
    """Connect as soon as the port accepts (polling: refused until it listens)."""
    def connect():
        if proc.poll() is not None:
            pytest.fail(f"node exited with {proc.returncode}")
        try:
            connect.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            return True
        except ConnectionRefusedError:
            return False
    wait_until(connect, 60, 0.005, f"port {port} accepting")
    return connect.sock


def ask(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())


def answer(sock: socket.socket):
    """(status, body bytes) of one response; the socket's 30 s timeout bounds the wait
    (old code answered only after the replay, or never within a client's patience)."""
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, resp.read()


def test_requests_during_replay_are_answered_503_starting(make_node, replay_data, tmp_path):
    node = starting_node(make_node, replay_data, tmp_path)
    node.start(wait=False)
    # The metrics port listens first, then the API: both accept once the API does.
    api = first_connection(node.http_port, node.proc)
    health = socket.create_connection(("127.0.0.1", node.http_port), timeout=30)
    probe = socket.create_connection(("127.0.0.1", node.metrics_port), timeout=30)
    ask(api, "/api/jobs?limit=1")
    ask(health, "/api/health")
    ask(probe, "/health")
    jobs_status, jobs_body = answer(api)
    health_status, health_body = answer(health)
    probe_status, probe_body = answer(probe)
    log_then = node.log_path.read_text()
    for s in (api, health, probe):
        s.close()
    assert "node ready" not in log_then, "answered only once the replay was over"
    assert jobs_status == 503, (jobs_status, jobs_body[:300])
    out = json.loads(jobs_body)
    assert out["error"] == "unavailable" and out["message"].startswith(REPLAY_PHASES), out
    assert health_status == 503, (health_status, health_body[:300])
    out = json.loads(health_body)
    assert out["status"] == "unavailable" and out["checks"]["role"]["role"] == "starting"
    assert out["message"].startswith("starting: "), out
    assert (probe_status, probe_body) == (503, b"UNAVAILABLE\n")
    # And then it serves every job, which a 503 never hid for good.
    wait_until(lambda: node.health()[0] == 200, 120, 0.1, "node ready\n" + node.log_tail())
    status, out = node.client().call("GET", "/api/jobs?type=replay&limit=1")
    assert status == 200 and out["count"] == JOBS, out
    assert "replayed log entries=" in node.log_path.read_text()


def test_a_stop_signal_during_the_replay_stops_it_cleanly(make_node, replay_data, tmp_path):
    node = starting_node(make_node, replay_data, tmp_path)
    node.start(wait=False)
    api = first_connection(node.http_port, node.proc)
    ask(api, "/api/jobs?limit=1")
    status, body = answer(api)              # start-up is under way (or the test says so)
    api.close()
    assert status == 503 and json.loads(body)["message"].startswith(REPLAY_PHASES), body
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(60) == 0, node.log_tail()
    text = node.log_path.read_text()
    assert "start-up cut short by a stop signal" in text, node.log_tail()
    assert "stopped node=" in text and "node ready" not in text, node.log_tail()
    assert "Traceback" not in text, node.log_tail()
    node.start()                            # the data_dir is whole: every job is there
    status, out = node.client().call("GET", "/api/jobs?type=replay&limit=1")
    assert status == 200 and out["count"] == JOBS, out
