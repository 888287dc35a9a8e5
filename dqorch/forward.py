"""Writes that reach a follower are carried out by the leader (CONTRACT §1: never a
redirect). The follower sends the leader the original body over a keep-alive HTTP
connection and answers with the leader's status and body, byte for byte.

Rule 1: a forwarded request carries FORWARDED and is never forwarded again: a node
that gets one and is not the leader answers 503 (no loops while an election runs).
Rule 2: a request is sent again only when it cannot have reached the leader (the
connection could not be made or written to), or when sending it twice is harmless (a
register: its ids come from the seed). Otherwise a lost answer is `503 unavailable`
with "outcome unknown": a cancel or a report sent twice answers differently the second
time. Kept-alive connections idle for IDLE_S are not reused: the leader may be closing
them (http_idle_timeout_s), and a request on one of those is lost on the way.
Rule 3: the follower answers only once it has applied the leader's commit index
(COMMIT in the answer), so a register then a GET on the same follower finds the job;
that wait is bounded, and the answer does not wait longer than it.
"""
from __future__ import annotations

import hashlib
import logging
import re
import socket
import time
import uuid

import gevent

from .errors import ApiError

log = logging.getLogger(__name__)

FORWARDED = "X-DQ-Forwarded"      # the name of the node that forwarded the request
ID_SEED = "X-DQ-Id-Seed"          # ids of jobs registered without one derive from it
COMMIT = "X-DQ-Commit"            # the leader's applied index after the write
_SEED_RE = re.compile(r"[0-9a-f]{32}")
_PASS_HEADERS = ("Content-Type", "Authorization")
_BACK_HEADERS = ("content-type", "retry-after")
APPLY_WAIT_S = 2.0
IDLE_S = 20.0


def seeded_ids(seed: str | None, fallback):
    """new_id for one request: ids derived from the forwarding node's seed (the same
    for every attempt it makes), else `fallback`."""
    if seed is None or not _SEED_RE.fullmatch(seed):
        return fallback
    n = iter(range(1 << 30))
    return lambda: str(uuid.UUID(bytes=hashlib.sha256(
        f"{seed}:{next(n)}".encode()).digest()[:16], version=4))


class _Broken(Exception):
    """The leader's answer cannot be read (closed, timed out, not HTTP we speak)."""


class _Link:
    """One kept-alive HTTP/1.1 connection to the leader's API. Written for the one
    server it talks to (dqorch's pywsgi: answers with Content-Length); about a third
    of http.client's cost per request, which parses headers with the email package."""

    def __init__(self, addr: str, timeout_s: float, tls=None) -> None:
        host, _, port = addr.rpartition(":")
        self.host = host
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:      # the leader's certificate must name the host it advertises
                sock = tls.wrap_socket(sock, server_hostname=host.strip("[]"))
            except OSError:
                sock.close()
                raise
        self.sock = sock
        self.buf = b""

    def send(self, method: str, path: str, headers: dict, body: bytes) -> None:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}\r\n"
                          .encode("latin-1") + body)

    def receive(self):
        """(status, [(name, value)], body, will_close)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise _Broken(f"not an HTTP status line: {lines[0][:80]!r}")
        headers = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:] if ":" in ln]
        fields = {k.lower(): v for k, v in headers}
        if "content-length" not in fields:
            raise _Broken("an answer without Content-Length")
        n = int(fields["content-length"])
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body, fields.get("connection", "").lower() == "close"

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise _Broken("the leader closed the connection")
        self.buf += data

    def close(self) -> None:
        self.sock.close()


class BecameLeader(Exception):
    """This node won an election while it waited to forward: it serves the request."""


class Forwarder:
    """Carries writes from this follower to the leader. `node` is the RaftNode
    (leader, leader_api, applied_index, role)."""

    def __init__(self, node, name: str, *, wait_leader_s: float, timeout_s: float = 15.0,
                 tls=None):
        """tls: an ssl.SSLContext for HTTPS to the leader (tls.peer_context), or None."""
        self.node = node
        self.tls = tls
        self.name = name
        self.wait_leader_s = wait_leader_s
        self.timeout_s = timeout_s
        self._idle: dict[str, list] = {}      # leader API address -> idle connections
        self.stats = {"forwarded": 0, "no_leader": 0, "failed": 0, "refused_loop": 0}

    def forward(self, method: str, path: str, headers, body: bytes,
                idempotent: bool = False):
        """(status, [(header, value)], body) of the leader's answer. ApiError 503
        when no leader answers within wait_leader_s, or a lost answer (Rule 2)."""
        if headers.get(FORWARDED):
            self.stats["refused_loop"] += 1
            raise ApiError(503, "unavailable", "this node is not the leader and the "
                           "request was already forwarded once (an election is under "
                           "way); retry shortly")
        send = {k: headers[k] for k in _PASS_HEADERS if headers.get(k)}
        send[FORWARDED] = self.name
        send[ID_SEED] = uuid.uuid4().hex
        send["Content-Length"] = str(len(body))
        deadline = time.monotonic() + self.wait_leader_s
        while True:
            addr = self._leader_address(deadline)
            link, reused = None, False
            try:
                link, reused = self._connection(addr)
                link.send(method, path, send, body)
            except OSError:
                if link is not None:
                    link.close()
                if time.monotonic() < deadline:     # Rule 2: it never left this node
                    gevent.sleep(0 if reused else 0.05)
                    continue
                self.stats["failed"] += 1
                raise ApiError(503, "unavailable", f"the leader at {addr} cannot be "
                               f"reached; retry shortly")
            try:
                status, headers, data, will_close = link.receive()
            except (OSError, ValueError, _Broken) as e:
                link.close()
                if (idempotent or method == "GET") and time.monotonic() < deadline:
                    # Harmless twice (Rule 2). Pause unless a stale kept-alive link
                    # failed: a leader (or a proxy) that accepts and closes at once
                    # had this loop open ~10,000 connections a second.
                    gevent.sleep(0 if reused else 0.05)
                    continue
                self.stats["failed"] += 1
                raise ApiError(503, "unavailable", f"the leader at {addr} did not answer "
                               f"({e}); the outcome is unknown, retrying a register is "
                               f"safe")
            if will_close:
                link.close()
            else:
                self._idle.setdefault(addr, []).append((link, time.monotonic()))
            self.stats["forwarded"] += 1
            self._wait_applied(next((v for k, v in headers if k.lower() == "x-dq-commit"),
                                    None))
            back = [(k, v) for k, v in headers if k.lower() in _BACK_HEADERS]
            return status, back, data

    def _leader_address(self, deadline: float) -> str:
        while True:
            node = self.node
            if node.role == "leader":
                raise BecameLeader()
            if node.leader and node.leader_api:
                return node.leader_api
            if time.monotonic() >= deadline:
                self.stats["no_leader"] += 1
                raise ApiError(503, "unavailable", "no leader (an election is under way "
                               "or a majority of the cluster is down); retry shortly")
            gevent.sleep(0.02)

    def _connection(self, addr: str):
        idle = self._idle.get(addr)
        while idle:
            conn, since = idle.pop()
            if time.monotonic() - since < IDLE_S:
                return conn, True
            conn.close()
        return _Link(addr, self.timeout_s, self.tls), False

    def _wait_applied(self, commit) -> None:
        try:
            want = int(commit)
        except (TypeError, ValueError):
            return
        deadline = time.monotonic() + APPLY_WAIT_S
        while self.node.applied_index < want and time.monotonic() < deadline:
            gevent.sleep(0.002)
