"""Listing stall: how long a big GET /api/jobs?full=1 holds up other requests.

A node holds --jobs jobs with --payload-bytes payloads. A prober sends GET /api/health
back to back on one keep-alive connection for --duration seconds, once alone and once
while a lister walks every page of GET /api/jobs?limit=10000&full=1 in a loop. The
prober's latency (p50, p99, max) side by side in the same run says how long the hub
was blocked; the lister's pages say how big one answer gets (max_list_bytes).

  python bench/listing_stall.py --write docs/BENCHMARKS.md
"""
import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (machine_line, peak_rss_bytes, percentile, replace_section,  # noqa: E402
                    rss_bytes, start_node)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def probe(port, duration_s, stop=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat, end = [], time.monotonic() + duration_s
    while time.monotonic() < end and not (stop and stop.is_set()):
        t0 = time.perf_counter()
        conn.request("GET", "/api/health")
        conn.getresponse().read()
        lat.append(time.perf_counter() - t0)
    conn.close()
    lat.sort()
    return lat


def lister(port, stop, pages):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while not stop.is_set():
        cursor = None
        while not stop.is_set():
            q = "/api/jobs?limit=10000&full=1" + (f"&cursor={cursor}" if cursor else "")
            conn.request("GET", q)
            body = conn.getresponse().read()
            # Only the tail: a json.loads of 4 MiB would hold this process's GIL and
            # delay the prober thread, which would then be measured as the node's stall.
            tail = json.loads("{" + body[body.rindex(b'"count":'):].decode())
            pages.append((len(body), tail["returned"]))
            cursor = tail["next"]
            if cursor is None:
                break
    conn.close()


def measure(args, max_list_bytes):
    """(probe latencies alone, beside the lister, the lister's pages) on a fresh node."""
    # The node on CPU 0, prober and lister (this process) on CPU 1: what is measured
    # is the node's hub, not the two processes taking turns on one core.
    node = start_node(ROOT, tempfile.mkdtemp(prefix="dq-listing-"), cpus={0},
                      rabbitmq_port=args.rabbitmq_port, publish_on_register="false",
                      max_job_bytes=args.payload_bytes + 4096, max_list_bytes=max_list_bytes)
    os.sched_setaffinity(0, {1})
    http_port = node.port
    try:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        pad = "x" * args.payload_bytes
        for i in range(args.jobs):
            conn.request("POST", "/api/jobs/register",
                         json.dumps({"id": f"big-{i}", "payload": {"d": pad}}))
            r = conn.getresponse()
            r.read()
            assert r.status == 202, r.status
        conn.close()
        alone = probe(http_port, args.duration)
        rss_before = rss_bytes(node.proc.pid)
        stop, pages = threading.Event(), []
        t = threading.Thread(target=lister, args=(http_port, stop, pages))
        t.start()
        time.sleep(0.5)
        busy = probe(http_port, args.duration)
        stop.set()
        t.join()
        grew = peak_rss_bytes(node.proc.pid) - rss_before
    finally:
        node.stop()
    return alone, busy, pages, grew


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--payload-bytes", type=int, default=40000)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--rabbitmq-port", type=int, default=5672)
    p.add_argument("--write", metavar="FILE")
    args = p.parse_args()
    runs = {"max_list_bytes 4 MiB (default)": measure(args, 4194304),
            "max_list_bytes 1 GiB (no bound, as before)": measure(args, 1073741824)}

    def row(name, lat, base, grew=None):
        ms = [x * 1000 for x in lat]
        mib = "—" if grew is None else f"{max(0, grew) / 2**20:,.0f}"
        return (f"| {name} | {len(ms):,} | {percentile(ms, 50):.2f} | {percentile(ms, 99):.2f} "
                f"| {ms[-1]:.1f} | {lat[-1] / base[-1]:.1f}× | {mib} |")
    lines = [
        "### Listing stall: a big full=1 listing beside small requests", "",
        f"- {machine_line(ROOT)}",
        f"- command: `python bench/listing_stall.py --jobs {args.jobs} --payload-bytes "
        f"{args.payload_bytes} --duration {args.duration:g} --write docs/BENCHMARKS.md`",
        f"- {args.jobs:,} jobs of {args.payload_bytes:,}-byte payloads "
        f"({args.jobs * args.payload_bytes / 2**20:.0f} MiB); a prober sends GET "
        "/api/health back to back on one connection, alone, then beside a lister that "
        "walks every page of GET /api/jobs?limit=10000&full=1; both nodes in this run; "
        "node pinned to CPU 0, clients to CPU 1 (RabbitMQ unpinned)", "",
        "| node, prober | requests | p50 ms | p99 ms | max ms | max vs alone | node peak RSS growth MiB |",
        "|---|--:|--:|--:|--:|--:|--:|"]
    for name, (alone, busy, pages, grew) in runs.items():
        biggest = max(b for b, _ in pages)
        lines += [row(f"{name}, alone", alone, alone),
                  row(f"{name}, beside the lister (pages up to {biggest / 2**20:.1f} MiB)",
                      busy, alone, grew)]
    text = "\n".join(lines + [""])
    print(text)
    if args.write:
        replace_section(args.write, "listing", text)


if __name__ == "__main__":
    main()
