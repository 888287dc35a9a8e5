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


# dqctl against a real node #####################################################
# As an operator runs it: a subprocess, its stdout, stderr and exit code. The node
# publishes into a vhost of its own (other test runs consume the job queues of "/").

DQCTL = [sys.executable, "-m", "dqorch.ctl"]


@pytest.fixture(scope="module")
def ctl_node(tmp_path_factory, shared_rabbit):
    from .conftest import NodeProc
    from .faults import drop_vhost, private_vhost
    vhost = private_vhost()
    node = NodeProc(tmp_path_factory.mktemp("dqctl"), SHARED_PORT, rabbitmq_vhost=vhost,
                    worker_heartbeat_timeout_s=600)
    try:
        yield node.start().wait_healthy()
    finally:
        node.stop()
        drop_vhost(vhost)


def dqctl(node, *args, env=None, url=True):
    """Run dqctl against `node` (DQ_URL) from the checkout; (exit code, stdout, stderr)."""
    full = {k: v for k, v in os.environ.items() if k not in ("DQ_URL", "DQ_TOKEN")}
    if url:
        full["DQ_URL"] = f"http://127.0.0.1:{node.http_port}"
    full.update(env or {})
    out = subprocess.run(DQCTL + list(args), capture_output=True, text=True, timeout=60,
                         env=full, cwd=REPO)
    return out.returncode, out.stdout, out.stderr


def api(node):
    from dqorch.client import Client
    return Client(f"http://127.0.0.1:{node.http_port}")


def test_dqctl_status_of_a_healthy_node(ctl_node):
    code, out, err = dqctl(ctl_node, "status")
    assert code == 0, err
    rows = dict(line.split(None, 1) for line in out.splitlines())
    assert rows["status"] == "healthy" and rows["node"] == ctl_node.cfg["node_name"]
    assert rows["raft"].startswith("leader term ") and rows["checks"] == "all ok"
    code, out, _ = dqctl(ctl_node, "--json", "status")
    shown = json.loads(out)
    assert code == 0 and shown["health"]["status"] == "healthy"
    assert shown["raft"]["role"] == "leader" and "jobs" in shown["metrics"]


def test_dqctl_lists_jobs_with_the_apis_filters_and_pages(ctl_node):
    with api(ctl_node) as c:
        for i in range(3):
            c.register({"id": f"ls-{i}", "type": "ctl-list", "priority": "HIGH"})
        c.register({"id": "ls-other", "type": "ctl-other"})
    code, out, err = dqctl(ctl_node, "--json", "jobs", "list", "--type", "ctl-list")
    assert code == 0, err
    page = json.loads(out)
    assert [j["id"] for j in page["jobs"]] == ["ls-2", "ls-1", "ls-0"] and page["count"] == 3
    code, out, _ = dqctl(ctl_node, "jobs", "list", "--type", "ctl-list", "--queue",
                         "job.high", "--limit", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["ID", "TYPE", "STATUS"]
    assert [line.split()[0] for line in lines[1:3]] == ["ls-2", "ls-1"]
    assert lines[3].startswith("2 of 3; next page: --cursor ")
    cursor = lines[3].split("--cursor ")[1]
    code, out, _ = dqctl(ctl_node, "jobs", "list", "--type", "ctl-list", "--limit", "2",
                         "--cursor", cursor)
    assert code == 0 and out.splitlines()[1].split()[0] == "ls-0"
    code, out, _ = dqctl(ctl_node, "--json", "jobs", "list", "--type", "ctl-list",
                         "--limit", "1", "--all")
    assert code == 0 and [j["id"] for j in json.loads(out)["jobs"]] == ["ls-2", "ls-1", "ls-0"]
    code, out, err = dqctl(ctl_node, "jobs", "list", "--limit", "0")
    assert code == 1 and "limit" in err and out == ""


def test_dqctl_get_cancel_and_retry_a_job(ctl_node):
    with api(ctl_node) as c:
        c.register({"id": "gcr-1", "type": "ctl-gcr", "payload": {"to": "a@b"}})
    code, out, err = dqctl(ctl_node, "jobs", "get", "gcr-1")
    assert code == 0, err
    assert '{"to":"a@b"}' in out and "registered" in out
    code, out, err = dqctl(ctl_node, "jobs", "cancel", "gcr-1")
    assert (code, out.strip()) == (0, "gcr-1: cancelled"), err
    code, out, err = dqctl(ctl_node, "jobs", "cancel", "gcr-1")
    assert code == 9 and err.strip() == "dqctl: 409 conflict: job is already cancelled"
    code, out, _ = dqctl(ctl_node, "jobs", "retry", "gcr-1")
    assert (code, out.strip()) == (0, "gcr-1: accepted")
    assert json.loads(dqctl(ctl_node, "--json", "jobs", "get", "gcr-1")[1])["status"] in (
        "pending", "queued")
    code, _, err = dqctl(ctl_node, "jobs", "retry", "gcr-1")       # not finished now
    assert code == 9 and "conflict" in err
    code, out, err = dqctl(ctl_node, "jobs", "get", "no-such-job")
    assert code == 3 and out == "" and err.strip() == "dqctl: 404 not_found: no job 'no-such-job'"
    code, out, _ = dqctl(ctl_node, "--json", "jobs", "cancel", "no-such-job")
    assert code == 3 and json.loads(out)["error"] == "not_found"


def test_dqctl_retries_the_finished_jobs_a_filter_matches(ctl_node):
    with api(ctl_node) as c:
        for i in range(3):
            c.register({"id": f"rm-{i}", "type": "ctl-rm"})
            c.cancel(f"rm-{i}")
    # Without a status only failed jobs are retried (issue 31): cancelled ones were
    # cancelled on purpose.
    code, out, err = dqctl(ctl_node, "jobs", "retry", "--matching", "--type", "ctl-rm")
    assert (code, out.strip()) == (0, "retried 0"), err
    code, out, err = dqctl(ctl_node, "jobs", "retry", "--matching", "--type", "ctl-rm",
                           "--status", "cancelled", "--limit", "2")
    assert (code, out.strip()) == (0, "retried 2"), err
    with api(ctl_node) as c:
        statuses = sorted(j["status"] for j in c.iter_jobs(type="ctl-rm"))
    assert statuses.count("cancelled") == 1


def test_dqctl_lists_workers(ctl_node):
    with api(ctl_node) as c:
        c.call("POST", "/api/workers/heartbeat", {"workerId": "ctl-w1", "workerType": "py",
                                                  "capacity": 4, "currentLoad": 1})
    code, out, err = dqctl(ctl_node, "workers", "list")
    assert code == 0, err
    row = next(line.split() for line in out.splitlines() if line.startswith("ctl-w1 "))
    assert row[:4] == ["ctl-w1", "py", "active", "1/4"]


def test_dqctl_lists_the_members(ctl_node):
    code, out, err = dqctl(ctl_node, "members", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].startswith(ctl_node.cfg["node_name"] + " *") and "leader" in lines[1]


@pytest.mark.parametrize("args,route", [
    (("jobs", "discard", "no-such-job"), "DELETE /api/jobs/{id}"),
    (("workers", "forget", "no-such-worker"), "DELETE /api/workers/{id}"),
    (("queues", "list"), "GET /api/queues"),
    (("queues", "pause", "job.low"), "POST /api/queues/{queue}/pause"),
    (("queues", "resume", "job.low"), "POST /api/queues/{queue}/resume"),
])
def test_dqctl_names_a_route_the_node_does_not_have(ctl_node, args, route):
    """These routes are being added (issue 31); until a node has them, one line names
    the route, exit 6. A node that has them answers (0, or 3 for the unknown ids)."""
    code, out, err = dqctl(ctl_node, *args)
    if code == 6:
        assert err.splitlines() == [f"dqctl: this node has no route {route} (404 not_found);"
                                    f" it needs a newer dqorch"] or \
            err.splitlines() == [f"dqctl: this node has no route {route} (405 "
                                 f"method_not_allowed); it needs a newer dqorch"], err
        assert out == ""
    else:
        assert code in (0, 3), (code, out, err)


def test_dqctl_manages_schedules(ctl_node):
    c = ctl_node.client()
    assert c.call("PUT", "/api/schedules/nightly", {"cron": "30 2 * * *",
                                                     "job": {"type": "cli"}})[0] == 201
    code, out, err = dqctl(ctl_node, "schedules", "list")
    assert code == 0, err
    assert out.splitlines()[1].split()[:2] == ["nightly", "30"]
    code, out, err = dqctl(ctl_node, "schedules", "trigger", "nightly")
    assert code == 0 and out.strip().startswith("nightly@"), (out, err)
    code, out, err = dqctl(ctl_node, "schedules", "pause", "nightly")
    assert code == 0 and out.strip() == "nightly: paused"
    code, out, err = dqctl(ctl_node, "--json", "schedules", "get", "nightly")
    assert code == 0 and json.loads(out)["paused"] is True
    assert dqctl(ctl_node, "schedules", "delete", "nightly")[0] == 0
    code, out, err = dqctl(ctl_node, "schedules", "get", "nightly")
    assert code == 3 and "no schedule 'nightly'" in err


def test_dqctl_without_a_node_exits_4(ctl_node):
    from .conftest import free_port
    port = free_port()
    code, out, err = dqctl(ctl_node, "--url", f"http://127.0.0.1:{port}", "status")
    assert code == 4 and out == ""
    assert err.strip() == f"dqctl: cannot reach http://127.0.0.1:{port}: connection refused"


def test_dqctl_finds_the_node_from_its_config_and_probes_it(ctl_node):
    code, out, err = dqctl(ctl_node, "-c", str(ctl_node.cfg_path), "status", url=False)
    assert code == 0 and "healthy" in out, err
    # the config's address before $DQ_URL's (an operator's shell may export another)
    code, out, err = dqctl(ctl_node, "-c", str(ctl_node.cfg_path), "status", url=False,
                           env={"DQ_URL": "http://127.0.0.1:1"})
    assert code == 0 and "healthy" in out, err
    code, out, err = dqctl(ctl_node, "-c", str(ctl_node.cfg_path), "probe", url=False)
    assert (code, out.strip()) == (0, "OK"), err


def test_dqctl_sends_the_token_and_names_a_refusal(make_node):
    write, read = "w" * 24, "r" * 24
    node = make_node(api_tokens=[write], api_read_tokens=[read], start=False)
    node.start(wait=False)     # the fixture's wait asks without a token

    def up():
        return dqctl(node, "status", env={"DQ_TOKEN": write})[0] == 0 if \
            node.proc.poll() is None else pytest.fail(node.log_tail())
    wait_until(up, 60, 0.2, "node healthy\n" + node.log_tail())
    code, _, err = dqctl(node, "jobs", "list")
    assert code == 5 and "401 unauthorized" in err
    assert dqctl(node, "jobs", "list", env={"DQ_TOKEN": read})[0] == 0
    code, _, err = dqctl(node, "--token", read, "jobs", "cancel", "x")
    assert code == 5 and "403 forbidden" in err
    assert dqctl(node, "--token", write, "jobs", "cancel", "x")[0] == 3
