"""Connection flood: the node's memory per idle or slow connection, and how a good
client fares beside them.

One fresh node (publish_on_register false, http_idle_timeout_s and
http_request_timeout_s both --timeout). First a prober sends GET /api/health back to
back for --hold seconds alone; then --idle connections that say nothing and --slow
ones that send a request one byte a second are opened, and the prober runs again for
--hold seconds beside them. Reports the node's RSS growth (at the peak, per
connection), the prober's p50/p99/max alone and under the flood, and when the node had
closed every flooding connection by itself. tests/integration/test_conn_flood.py
checks the behaviour (nobody starved, every connection closed, nothing answered to a
slowloris); the figures are here.

    python bench/conn_flood.py --write docs/BENCHMARKS.md
    python bench/conn_flood.py --idle 100 --slow 50 --hold 3      # check the harness
"""
import argparse
import os
import resource
import selectors
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_line, percentile, replace_section, rss_bytes, start_node  # noqa: E402
from listing_stall import probe  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOW_REQUEST = b"POST /api/jobs/register HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


def flood(node, idle, slow, hold_s):
    """Open the flood, probe beside it for hold_s, then wait (300 s at most) for the
    node to close every flooding connection. Figures as a dict."""
    pid, port = node.proc.pid, node.port
    rss0 = rss_bytes(pid)
    sel, socks, t_open = selectors.DefaultSelector(), [], time.monotonic()
    for k in range(idle + slow):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, k >= idle)
        socks.append(s)
    lat = []
    prober = threading.Thread(target=lambda: lat.extend(probe(port, hold_s)))
    prober.start()
    peak, answered, closed_at, sent = rss0, 0, [], 0
    next_byte = time.monotonic()
    deadline = time.monotonic() + hold_s + 300
    while sel.get_map() and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_byte and sent < len(SLOW_REQUEST):
            for key in list(sel.get_map().values()):
                if key.data:                                  # a slow one: its next byte
                    try:
                        key.fileobj.send(SLOW_REQUEST[sent:sent + 1])
                    except OSError:
                        pass
            sent, next_byte = sent + 1, now + 1.0
        for key, _ in sel.select(timeout=0.2):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if data:
                answered += 1
                continue
            sel.unregister(key.fileobj)
            closed_at.append(time.monotonic() - t_open)
        peak = max(peak, rss_bytes(pid))
    prober.join()
    for s in socks:
        s.close()
    return dict(opened=len(socks), closed=len(closed_at), answered=answered, rss0=rss0,
                peak=peak, all_closed_s=max(closed_at) if len(closed_at) == len(socks) else None,
                lat=sorted(lat))


def lat_cells(lat):
    return " | ".join(f"{percentile(lat, q) * 1e3:.1f}" for q in (50, 99)) + \
        f" | {lat[-1] * 1e3:.1f}" if lat else "- | - | -"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--slow", type=int, default=500)
    ap.add_argument("--hold", type=float, default=10, help="seconds of probing, each phase")
    ap.add_argument("--timeout", type=float, default=5,
                    help="http_idle_timeout_s and http_request_timeout_s of the node")
    ap.add_argument("--rabbitmq-port", type=int, default=5672)
    ap.add_argument("--write", help="replace the bench:conn_flood section of this file")
    args = ap.parse_args()
    need = args.idle + args.slow + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))  # the node inherits it
    tmp = tempfile.mkdtemp(prefix="dq-bench-flood-")
    node = start_node(ROOT, tmp, publish_on_register="false", rabbitmq_port=args.rabbitmq_port,
                      http_idle_timeout_s=args.timeout, http_request_timeout_s=args.timeout)
    try:
        print("probing alone", file=sys.stderr)
        alone = probe(node.port, args.hold)
        print(f"flood: {args.idle} idle, {args.slow} slow", file=sys.stderr)
        f = flood(node, args.idle, args.slow, args.hold)
        still = node.wait_ready(10)
    finally:
        node.stop()
    grow = f["peak"] - f["rss0"]
    text = "\n".join([
        f"### Connection flood: {args.idle} idle and {args.slow} slowloris connections",
        "",
        f"`python bench/conn_flood.py --idle {args.idle} --slow {args.slow} --hold {args.hold:g}"
        f" --timeout {args.timeout:g}`; {machine_line(ROOT)}",
        "",
        "| node RSS before | peak growth | per connection | closed by the node | "
        "the last after | answered to the flood | still serving |",
        "|---|---|---|---|---|---|---|",
        f"| {f['rss0'] / 2**20:.1f} MiB | {grow / 2**20:.1f} MiB | "
        f"{grow / 1024 / max(1, f['opened']):.1f} KiB | {f['closed']} of {f['opened']} | "
        f"{'-' if f['all_closed_s'] is None else '%.1f s' % f['all_closed_s']} | "
        f"{f['answered']} | {'yes' if still else 'NO'} |",
        "",
        "| GET /api/health back to back | requests | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        f"| alone | {len(alone)} | {lat_cells(alone)} |",
        f"| beside the flood | {len(f['lat'])} | {lat_cells(f['lat'])} |",
    ])
    print(text)
    if args.write:
        replace_section(args.write, "conn_flood", text)
    return 0 if still and f["closed"] == f["opened"] else 1


if __name__ == "__main__":
    sys.exit(main())
