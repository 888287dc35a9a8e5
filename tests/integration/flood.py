"""Connection floods as a harness: `flood` (tests/integration/test_conn_flood.py, the
long mode in scripts/conn-flood.py, bench/conn_flood.py's figures) and `rss_kib`."""
from __future__ import annotations

import os
import socket
import time

import gevent


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def flood(node, idle: int, slow: int, hold_s: float, log=print) -> dict:
    """Open `idle` silent and `slow` one-byte-a-second connections to node's API, probe
    it with a good client for hold_s, then wait until the node closed every flooding
    connection. Figures: probes answered/failed, probe latency (ms), RSS (KiB) before,
    at the peak and after, connections the node closed and how long that took."""
    pid = node.proc.pid
    figures: dict = {"idle": idle, "slow": slow, "rss_before": rss_kib(pid)}
    socks: list = []
    closed: list = []
    answered: list = []

    def watch(s) -> None:
        """Wait for the node to close s (recv returns b"" or an error); note any answer."""
        try:
            s.settimeout(600)
            while True:
                data = s.recv(4096)
                if not data:
                    break
                answered.append(data[:12])
        except OSError:
            pass
        closed.append(time.monotonic())

    def trickle(s) -> None:
        for ch in b"POST /api/jobs/register HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}":
            try:
                s.send(bytes([ch]))
            except OSError:
                return
            gevent.sleep(1.0)

    t_open = time.monotonic()
    for k in range(idle + slow):
        try:
            s = socket.create_connection(("127.0.0.1", node.http_port), timeout=30)
        except OSError as e:
            figures.setdefault("connect_errors", []).append(repr(e))
            continue
        socks.append(s)
        gevent.spawn(watch, s)
        if k >= idle:
            gevent.spawn(trickle, s)
    figures["opened"] = len(socks)
    log(f"opened {len(socks)} connections in {time.monotonic() - t_open:.1f} s")
    good = node.client()
    lat: list = []
    failed = 0
    peak = 0
    end = time.monotonic() + hold_s
    i = 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            code, _ = (good.call("POST", "/api/jobs/register", {"id": f"flood-{os.getpid()}-{i}"})
                       if i % 2 == 0 else good.call("GET", "/api/jobs?limit=10"))
            ok = code in (200, 202)
        except OSError:
            ok = False
        lat.append((time.monotonic() - t0) * 1000)
        failed += not ok
        i += 1
        peak = max(peak, rss_kib(pid))
        gevent.sleep(0.02)
    lat.sort()
    figures.update(probes=len(lat), probes_failed=failed,
                   probe_ms_p50=round(lat[len(lat) // 2], 1),
                   probe_ms_p99=round(lat[int(len(lat) * 0.99)], 1),
                   probe_ms_max=round(lat[-1], 1), rss_peak=peak)
    deadline = time.monotonic() + 300
    while len(closed) < len(socks) and time.monotonic() < deadline:
        gevent.sleep(0.2)
    figures["closed_by_node"] = len(closed)
    figures["answered"] = len(answered)
    figures["all_closed_after_s"] = round(max(closed) - t_open, 1) if closed else None
    for s in socks:
        s.close()
    gevent.sleep(1)
    figures["rss_after"] = rss_kib(pid)
    figures["still_serving"] = good.call("GET", "/api/health")[0] == 200
    return figures
