"""The command line as an operator uses it: --version, --check-config, config errors
(exit 2, one line naming the key), JSON logs, and a clean stop on SIGTERM/SIGINT."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from dqorch import __version__

from .conftest import REPO, SHARED_PORT, wait_until

DQORCH = [sys.executable, os.path.join(REPO, "dqorch.py")]


def run(args, env=None, **kw):
    return subprocess.run(DQORCH + args, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})), **kw)


def test_version():
    out = run(["--version"])
    assert out.returncode == 0 and out.stdout.strip() == f"dqorch {__version__}"


def test_check_config_prints_effective_config_with_secrets_masked(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cookie: top-secret-cookie\nrabbitmq_password: hunter2\nhttp_port: 9000\n")
    out = run(["-c", str(cfg), "--check-config"], env={"DQ_RABBITMQ_HOST": "10.1.2.3"})
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["http_port"] == 9000 and shown["rabbitmq_host"] == "10.1.2.3"
    assert shown["cookie"] == shown["rabbitmq_password"] == "***"
    assert "top-secret-cookie" not in out.stdout + out.stderr
    assert "hunter2" not in out.stdout + out.stderr


@pytest.mark.parametrize("text,env,key", [
    ("http_port: 70000\n", {}, "http_port"),
    ("no_such_key: 1\n", {}, "no_such_key"),
    ("", {"DQ_JOB_MAX_RETRIES": "many"}, "job_max_retries"),
    ("rabbitmq_password: [1, 2]\n", {}, "rabbitmq_password"),
])
def test_config_errors_stop_with_one_line_naming_the_key(tmp_path, text, env, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    out = run(["-c", str(cfg)], env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], out.stderr


def test_missing_config_file_is_one_line(tmp_path):
    out = run(["-c", str(tmp_path / "nope.yaml")])
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_stops_cleanly_and_keeps_the_jobs(make_node, sig):
    node = make_node(rabbit_port=SHARED_PORT, log_format="json").wait_healthy()
    c = node.client()
    for i in range(20):
        assert c.call("POST", "/api/jobs/register", {"id": f"sig-{i}", "type": "sig"})[0] == 202
    c.close()
    node.proc.send_signal(sig)
    assert node.proc.wait(30) == 0
    lines = node.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]          # every line is JSON
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    msgs = [r["msg"] for r in records]
    assert any(m.startswith("log closed") for m in msgs)
    assert any(m.startswith("stopping node=") for m in msgs)
    assert f"stop asked by signal={signal.Signals(sig).name}" in msgs
    node.start()
    c = node.client()
    assert c.call("GET", "/api/jobs?type=sig&limit=1")[1]["count"] == 20


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_request_in_flight_at_a_stop_signal_is_answered_and_kept(make_node, sig):
    # Before: SIGHUP killed the process at once (exit -1, no line), and the register
    # half-sent below got a reset instead of its answer.
    node = make_node(rabbit_port=SHARED_PORT).wait_healthy()
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=30) as s:
        f = s.makefile("rb")
        # One whole request first: the node has accepted this connection.
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert f.readline().startswith(b"HTTP/1.1 200")
        _skip_response(f)
        body = json.dumps({"id": "in-flight", "type": "sig"}).encode()
        s.sendall(b"POST /api/jobs/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
        node.proc.send_signal(sig)
        wait_until(lambda: "stopping node=" in node.log_tail(), 30, 0.05,
                   "the node stopping\n" + node.log_tail())
        s.sendall(body[5:])
        status = f.readline()
        assert status.startswith(b"HTTP/1.1 202"), (status, node.log_tail())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += f.readline()
        assert b"\r\nConnection: close\r\n" in b"\r\n" + head, head   # the last one
    assert node.proc.wait(30) == 0, node.log_tail()
    assert f"stop asked by signal={signal.Signals(sig).name}" in node.log_tail()
    assert "stopped node=" in node.log_tail()
    node.start()
    status, job = node.client().call("GET", "/api/jobs/in-flight")
    assert status == 200 and job["type"] == "sig"


def test_sighup_ignored_by_the_parent_stays_ignored(make_node):
    """Started under nohup (SIGHUP ignored), a hang-up of the terminal must not stop
    the node, as it would not have before SIGHUP became a stop."""
    node = make_node(rabbit_port=SHARED_PORT, start=False)
    with open(node.log_path, "ab") as logf:
        node.proc = subprocess.Popen(
            DQORCH + ["-c", str(node.cfg_path)], stdout=logf, stderr=logf,
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    wait_until(node.answers, 60, 0.05, "node answers\n" + node.log_tail())
    with open(f"/proc/{node.proc.pid}/status") as f:
        ignored = int(next(x for x in f if x.startswith("SigIgn:")).split()[1], 16)
    assert ignored & 1 << (signal.SIGHUP - 1), "SIGHUP is not ignored"
    node.proc.send_signal(signal.SIGHUP)      # an ignored signal is dropped when sent
    assert node.health()[0] == 200 and node.proc.poll() is None
    assert "stop asked" not in node.log_tail()


def _skip_response(f) -> None:
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    f.read(length)


def test_second_process_on_the_same_data_dir_is_refused(make_node):
    node = make_node(rabbit_port=SHARED_PORT)
    out = run(["-c", str(node.cfg_path)])
    assert out.returncode != 0 and "in use by another dqorch process" in out.stderr


def test_busy_port_is_named(make_node, tmp_path):
    node = make_node(rabbit_port=SHARED_PORT)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'd'}\nhttp_port: {node.http_port}\n"
                   f"metrics_port: {node.metrics_port + 1 if node.metrics_port < 65535 else 1025}\n")
    out = run(["-c", str(cfg)])
    assert out.returncode != 0 and "http_port" in out.stderr


def test_restore_from_a_backup_starts_a_new_member_with_every_job(make_node, tmp_path):
    """--restore-from copies a backup into an empty data_dir and starts it as a new
    cluster of one with a new member id: never the member it was (docs/CLUSTER.md).
    A data_dir that is not empty, or a directory that is no backup: exit 2, one line."""
    import shutil
    node = make_node(rabbit_port=SHARED_PORT)
    c = node.client()
    for i in range(20):
        assert c.call("POST", "/api/jobs/register", {"id": f"bk-{i}"})[0] == 202
    old_id = c.call("GET", "/api/cluster/status")[1]["members"][0]["id"]
    assert node.stop() == 0
    backup = tmp_path / "backup"
    shutil.copytree(node.cfg["data_dir"], backup)
    out = run(["-c", str(node.cfg_path), "--restore-from", str(backup)])
    assert out.returncode == 2 and "is not empty" in out.stderr, out.stderr[-500:]
    out = run(["-c", str(node.cfg_path), "--restore-from", str(tmp_path)])
    assert out.returncode == 2 and "not a data_dir backup" in out.stderr, out.stderr[-500:]
    shutil.rmtree(node.cfg["data_dir"])
    node.args = ["--restore-from", str(backup)]
    node.start()
    st = node.client().call("GET", "/api/cluster/status")[1]
    assert st["members"][0]["id"] != old_id
    jobs = {j["id"] for j in node.client().call("GET", "/api/jobs?limit=100")[1]["jobs"]}
    assert {f"bk-{i}" for i in range(20)} <= jobs
    assert "restored from a backup" in node.log_path.read_text()
