"""Real parts for integration tests: the shared RabbitMQ on loopback (started by
scripts/rabbitmq-local.sh when nothing listens), real dqorch.py processes, and an
HTTP client. Waiting is polling with a deadline."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys

import pika
import pytest

from .broker_fixtures import (  # noqa: F401  (fixtures re-exported to every module)
    REPO, SHARED_PORT, LocalRabbit, blocking_channel, make_broker, message_count,
    port_open, private_rabbit, purge, shared_rabbit, wait_until)

JOB_QUEUES = ("job.high", "job.medium", "job.low")


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _candidates():
    """Ports below the ephemeral range, from a start that differs per process (two
    test runs at once rarely walk the same ports), round and round."""
    hi = _ephemeral_low()
    lo = max(1024, hi - 12_000)
    if hi - lo < 1000:                    # no room below it: what the kernel hands out
        while True:
            yield 0
    start = lo + os.getpid() * 211 % (hi - lo)
    while True:
        yield from range(start, hi)
        yield from range(lo, start)


_PORTS = _candidates()


def free_port() -> int:
    """A port no socket holds, TCP or UDP, below the ephemeral range. Inside that
    range, a socket bound to port 0 (a client's, a UdpProxy's) could take it between
    this check and the node's bind: it happened to a raft_port in a fault campaign
    (n3 never started)."""
    for port in _PORTS:
        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]
        if _free(port):
            return port


class Client:
    """One keep-alive HTTP connection; call(method, path, body) -> (status, json).
    tls: an ssl.SSLContext for HTTPS."""

    def __init__(self, port: int, tls=None) -> None:
        self.port = port
        self.tls = tls
        self.conn = None

    def call(self, method: str, path: str, body=None, raw: bytes | None = None,
             headers: dict | None = None):
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30) \
                    if self.tls is None else http.client.HTTPSConnection(
                        "127.0.0.1", self.port, timeout=30, context=self.tls)
            try:
                self.conn.request(method, path, body=raw, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        self.last_headers = dict(resp.getheaders())
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        try:
            return resp.status, json.loads(data) if data else None
        except ValueError:
            return resp.status, data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _default_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class NodeProc:
    """A dqorch.py process with its own config, ports and data_dir."""

    def __init__(self, tmp_path, rabbit_port: int, **overrides) -> None:
        self.dir = tmp_path
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.cfg = dict(node_name="orchestrator@127.0.0.1", data_dir=str(tmp_path / "data"),
                        http_port=self.http_port, metrics_port=self.metrics_port,
                        raft_port=free_port(), rabbitmq_port=rabbit_port, log_level="info")
        self.cfg_path = tmp_path / "config.yaml"
        self.configure(**overrides)
        self.log_path = tmp_path / "node.log"
        self.proc = None
        self.args: list = []          # extra command-line arguments for the next start
        self.prefix: list = []        # a command to run it under (faketime, for a skewed clock)
        self.tls = None               # an ssl.SSLContext when the API speaks HTTPS

    def configure(self, **settings) -> None:
        """Change settings; the next start reads them."""
        self.cfg.update(settings)
        self.cfg_path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in self.cfg.items()))

    def start(self, wait: bool = True) -> "NodeProc":
        logf = open(self.log_path, "ab")
        # SIGHUP as a supervisor leaves it: a test run under nohup must not hand its
        # ignored SIGHUP on (the node keeps an inherited SIG_IGN, by design: cli.py).
        self.proc = subprocess.Popen([*self.prefix, sys.executable, os.path.join(REPO, "dqorch.py"),
                                      "-c", str(self.cfg_path), *self.args],
                                     stdout=logf, stderr=logf,
                                     preexec_fn=_default_sighup)
        if wait:
            wait_until(self.answers, 60, 0.05, "node answers /api/health\n" + self.log_tail())
        return self

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"node exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            status, _ = self.client().call("GET", "/api/health")
        except OSError:
            return False
        return status in (200, 503) and self.health()[0] == 200

    def health(self):
        return self.client().call("GET", "/api/health")

    def wait_healthy(self, timeout_s: float = 60) -> "NodeProc":
        wait_until(lambda: self.health()[1]["status"] == "healthy", timeout_s, 0.05,
                   "node healthy\n" + self.log_tail())
        return self

    def client(self) -> Client:
        return Client(self.http_port, self.tls)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode if self.proc else 0


def critical_lines(output: str) -> list:
    """The CRITICAL lines of a node's output: a refusal to start is one of them."""
    return [line for line in output.splitlines() if "CRITICAL" in line]


@pytest.fixture(scope="module", params=("pywsgi", "httptools"))
def http_server(request) -> str:
    """Each HTTP front end in turn (config http_server): the tests of a module that
    take this run on both, one after the other (the HTTP contract tests)."""
    return request.param


@pytest.fixture
def make_node(tmp_path_factory):
    made = []

    def make(rabbit_port: int = SHARED_PORT, start: bool = True, **overrides) -> NodeProc:
        node = NodeProc(tmp_path_factory.mktemp("node"), rabbit_port, **overrides)
        made.append(node)
        return node.start() if start else node

    yield make
    for node in made:
        node.stop()


def own_broker(port: int):
    """A module-scoped fixture: a broker of its own on `port`, which the tests may stop
    and start, locked against other test runs using the same port."""
    @pytest.fixture(scope="module")
    def fixture():
        rabbit = LocalRabbit(port)
        with rabbit.exclusive():
            rabbit.start()
            yield rabbit
            rabbit.stop()
    return fixture


@pytest.fixture
def clean_queues(shared_rabbit):
    purge(SHARED_PORT, *JOB_QUEUES)
    yield
    purge(SHARED_PORT, *JOB_QUEUES)


def drain(port: int, queue: str, vhost: str = "/") -> list:
    """Take every message from a queue: [(properties, body dict)]; [] when the queue
    does not exist (yet)."""
    conn, ch = blocking_channel(port, vhost)
    out = []
    try:
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((props, json.loads(body)))
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code != 404:
            raise
        return out
    finally:
        conn.close()


def all_jobs(client: Client, **filters) -> list:
    """Every job through GET /api/jobs pagination."""
    out, cursor = [], None
    while True:
        q = "&".join(f"{k}={v}" for k, v in dict(filters, limit=1000, **(
            {"cursor": cursor} if cursor else {})).items())
        status, body = client.call("GET", "/api/jobs?" + q)
        assert status == 200, body
        out.extend(body["jobs"])
        cursor = body["next"]
        if cursor is None:
            return out
