"""Who may talk to a node (issue: reliability and security, item 3): bearer tokens
(full and read-only) and allow_from, on the API and the metrics port, through real
sockets to a real node. Without those settings nothing changes for the unmodified
clients (every other test file runs that way)."""
from __future__ import annotations

import os
import stat
import urllib.error
import urllib.request

import pytest

from .conftest import SHARED_PORT, NodeProc

FULL = "full-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"


@pytest.fixture(scope="module")
def node(tmp_path_factory, shared_rabbit):
    n = NodeProc(tmp_path_factory.mktemp("access"), SHARED_PORT, api_tokens=[FULL],
                 api_read_tokens=[READ]).start(wait=False)
    yield n
    n.stop()


def call(node, method, path, token=None, body=None, port=None):
    c = node.client() if port is None else type(node.client())(port)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, out = c.call(method, path, body, headers=headers)
    return status, out, c.last_headers


def started(node):
    from .conftest import wait_until

    def up():
        try:
            return call(node, "GET", "/api/health", READ)[0] == 200
        except OSError:
            return False
    wait_until(up, 60, 0.1, "node up\n" + node.log_tail())


@pytest.mark.parametrize("method,path,body,token,want", [
    ("GET", "/api/jobs", None, None, 401),
    ("GET", "/api/jobs", None, "wrong-token-0123456789abc", 401),
    ("GET", "/api/jobs", None, READ, 200),
    ("GET", "/api/jobs", None, FULL, 200),
    ("POST", "/api/jobs/register", {"id": "acc-1"}, None, 401),
    ("POST", "/api/jobs/register", {"id": "acc-2"}, READ, 403),
    ("POST", "/api/jobs/register", {"id": "acc-3"}, FULL, 202),
    ("POST", "/api/workers/heartbeat", {"workerId": "w"}, READ, 403),
    # The console's files hold no data: served without a token (the page asks for one
    # when the API answers 401); the API behind them still wants it.
    ("GET", "/ui/", None, None, 200),
    ("GET", "/ui/app.js", None, None, 200),
    ("GET", "/api/rates", None, None, 401),
    ("POST", "/api/jobs/retry", {"status": "failed"}, READ, 403),
])
def test_tokens_on_the_api(node, method, path, body, token, want):
    started(node)
    status, out, headers = call(node, method, path, token, body)
    assert status == want, out
    if want == 401:
        assert out["error"] == "unauthorized" and headers.get("WWW-Authenticate") == "Bearer"
    if want == 403:
        assert out["error"] == "forbidden"
    if method == "POST" and path.endswith("register"):
        exists = call(node, "GET", f"/api/jobs/{body['id']}", FULL)[0] == 200
        assert exists == (want == 202)


def metrics(node, path, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{node.metrics_port}{path}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_tokens_on_the_metrics_port_but_not_its_health(node):
    started(node)
    assert metrics(node, "/metrics")[0] == 401
    status, text = metrics(node, "/metrics", READ)
    assert status == 200 and b"distriqueue_jobs" in text
    assert metrics(node, "/health") == (200, b"OK\n")     # container probes need no token


def test_tokens_never_reach_the_log_or_check_config(node):
    started(node)
    assert FULL not in node.log_tail(500) and READ not in node.log_tail(500)
    import json
    import subprocess
    import sys
    from .conftest import REPO
    out = subprocess.run([sys.executable, os.path.join(REPO, "dqorch.py"), "-c",
                          str(node.cfg_path), "--check-config"], capture_output=True,
                         text=True, timeout=60)
    shown = json.loads(out.stdout)
    assert shown["api_tokens"] == shown["api_read_tokens"] == "***"
    assert FULL not in out.stdout + out.stderr


def test_data_dir_is_created_for_the_node_alone(node):
    started(node)
    assert stat.S_IMODE(os.stat(node.cfg["data_dir"]).st_mode) == 0o700


@pytest.mark.parametrize("networks,want", [(["10.0.0.0/8"], 403), (["127.0.0.0/8"], 200),
                                           (["10.1.2.3", "127.0.0.1"], 200)])
def test_allow_from(make_node, networks, want):
    n = make_node(rabbit_port=SHARED_PORT, start=False, allow_from=networks)
    n.start(wait=False)
    from .conftest import wait_until

    def answered():
        try:
            return n.client().call("GET", "/api/jobs")[0] in (200, 403)
        except OSError:
            return False
    wait_until(answered, 60, 0.1, "node up\n" + n.log_tail())
    status, out = n.client().call("GET", "/api/jobs")
    assert status == want, out
    assert metrics(n, "/metrics")[0] == want


def _ipv6_loopback() -> bool:
    import socket
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::ffff:127.0.0.1", 0))
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def raw_get(host: str, port: int, family) -> int:
    import socket
    with socket.socket(family) as s:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(b"GET /api/jobs?limit=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 on loopback here (in-process "
                    "cases: tests/unit/test_hosts.py)")
@pytest.mark.parametrize("http_host,connect,networks,want", [
    # An IPv6 listener that takes IPv4 clients (as `::` does) sees ::ffff:127.0.0.1;
    # bound to that one address here, so nothing listens beyond loopback.
    ("::ffff:127.0.0.1", "127.0.0.1", ["127.0.0.0/8"], 200),
    ("::ffff:127.0.0.1", "127.0.0.1", ["10.0.0.0/8"], 403),
    ("::1", "::1", ["::1"], 200),
    ("::1", "::1", ["127.0.0.0/8"], 403),
])
def test_allow_from_on_an_ipv6_listener(make_node, http_host, connect, networks, want):
    import socket
    from .conftest import wait_until
    n = make_node(rabbit_port=SHARED_PORT, start=False, http_host=http_host,
                  allow_from=networks)
    n.start(wait=False)
    family = socket.AF_INET6 if ":" in connect else socket.AF_INET

    def answered():
        if n.proc.poll() is not None:
            pytest.fail(n.log_tail())
        try:
            return raw_get(connect, n.http_port, family) in (200, 403)
        except OSError:
            return False
    wait_until(answered, 60, 0.1, "node up\n" + n.log_tail())
    assert raw_get(connect, n.http_port, family) == want
