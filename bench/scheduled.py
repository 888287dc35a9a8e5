"""Jobs that run later and schedules (issue 29), on one real node and RabbitMQ:

1. memory: RSS per job of --jobs jobs held `scheduled` (a delay of a week) against the
   same number held `queued` (publish_on_register off: nothing published), on two
   nodes side by side; and each node's start-up (a restart replaying them);
2. lateness with them held: --late jobs registered with a delay of 3 s; per job, its
   time to its release to pending (history) and to its confirm in a queue (queued_at);
3. schedules: --schedules schedules every 5 s (allow_all) for --seconds; per run, its
   tick to its register (created_at), and the node's CPU meanwhile.

Needs RabbitMQ on 127.0.0.1:5672 and rabbitmqctl (a vhost of its own).
Usage: python bench/scheduled.py [--jobs 1000000] [--late 1000] [--schedules 1000]
                                 [--seconds 30] [--write docs/BENCHMARKS.md]
"""
import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from tests.integration.faults import drop_vhost, private_vhost  # noqa: E402

WEEK_S = 7 * 86400
BATCH = 1000


def call(node, method, path, body=None, timeout=120):
    req = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def fill(node, n, prefix, **extra):
    for start in range(0, n, BATCH):
        out = call(node, "POST", "/api/jobs/batch", {"jobs": [
            dict(id=f"{prefix}-{i}", type="held", priority=1, payload={"n": i}, **extra)
            for i in range(start, min(n, start + BATCH))]})
        assert out["accepted"] == min(BATCH, n - start), out
        if start and start % 200_000 == 0:
            print(f"  {prefix}: {start:,} registered", file=sys.stderr)


def restart_s(node):
    """Stop the node and time its start (to GET /api/health answering 200). A start
    refused at once (a port still held a moment by the stopped one's last snapshot
    child) is tried again, its time not counted."""
    node.proc.terminate()
    node.proc.wait(60)
    for _ in range(10):
        node.__init__(node.name, node.argv, node.port, node.log_path)
        t0 = time.monotonic()
        if node.wait_ready(600):
            return time.monotonic() - t0
        time.sleep(2)
    sys.exit(f"{node.name} did not start again:\n" + node.log_tail())


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def tick_of(job_id):
    iso = job_id.split("@", 1)[1].replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(iso).timestamp() * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--late", type=int, default=1000)
    ap.add_argument("--schedules", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--write", help="replace the bench:scheduled section of this file")
    a = ap.parse_args()
    vhost = private_vhost()
    tmp = tempfile.mkdtemp(prefix="dq-bench-scheduled-")
    nodes = []
    try:
        later = common.start_node(ROOT, tmp, "later", rabbitmq_vhost=vhost)
        held = common.start_node(ROOT, tmp, "held", rabbitmq_vhost=vhost,
                                 publish_on_register="false")
        nodes += [later, held]
        empty = {n.name: common.rss_bytes(n.proc.pid) for n in nodes}
        t0 = time.monotonic()
        fill(later, a.jobs, "w", delay=WEEK_S)
        fill_s = time.monotonic() - t0
        fill(held, a.jobs, "q")
        per_job = {n.name: (common.rss_bytes(n.proc.pid) - empty[n.name]) / a.jobs
                   for n in nodes}
        starts = {n.name: restart_s(n) for n in nodes}
        print(f"memory {per_job}, start-up {starts}", file=sys.stderr)

        # 2. lateness, a million held
        call(later, "POST", "/api/jobs/batch", {"jobs": [
            {"id": f"soon-{i}", "type": "soon", "delay": 3} for i in range(a.late)]})
        time.sleep(6)
        released, confirmed = [], []
        for i in range(a.late):
            job = call(later, "GET", f"/api/jobs/soon-{i}")
            due = [h["at"] for h in job["history"] if h["status"] == "pending"]
            released.append(due[0] - job["run_at"])
            if job["queued_at"]:
                confirmed.append(job["queued_at"] - job["run_at"])

        # 3. schedules
        for k in range(a.schedules):
            call(later, "PUT", f"/api/schedules/s{k}", {
                "every": "5s", "overlap": "allow_all", "job": {"type": "tick"}})
        cpu = common.CpuMeter(later.proc.pid)
        time.sleep(a.seconds)
        cpu_pct = cpu.stop(1)["cpu_us"] / 1e6 / a.seconds * 100
        for k in range(a.schedules):
            call(later, "POST", f"/api/schedules/s{k}/pause")
        lateness, fired = [], 0
        cursor = None
        while True:
            page = call(later, "GET", "/api/jobs?type=tick&limit=10000" +
                        (f"&cursor={cursor}" if cursor else ""))
            for j in page["jobs"]:
                lateness.append(j["created_at"] - tick_of(j["id"]))
            fired += page["returned"]
            cursor = page["next"]
            if not cursor:
                break
        sched_rss = common.rss_bytes(later.proc.pid)
    finally:
        for n in nodes:
            n.stop()
        drop_vhost(vhost)
    rows = [
        ("jobs held scheduled (a week ahead)", f"{a.jobs:,}",
         f"{per_job['later']:,.0f} B a job RSS, against {per_job['held']:,.0f} queued "
         f"(ratio {per_job['later'] / per_job['held']:.2f}); registered in {fill_s:.0f} s"),
        ("start-up with them", f"{starts['later']:.1f} s",
         f"against {starts['held']:.1f} s with as many queued (ratio "
         f"{starts['later'] / starts['held']:.2f})"),
        (f"{a.late:,} jobs due at once, 3 s ahead, with them held: to pending",
         f"p50 {pct(released, .5):.0f} ms", f"p99 {pct(released, .99):.0f} ms, max "
         f"{max(released):.0f} ms"),
        ("... to confirmed in a queue", f"p50 {pct(confirmed, .5):.0f} ms",
         f"p99 {pct(confirmed, .99):.0f} ms, max {max(confirmed, default=0):.0f} ms "
         f"({len(confirmed)} of {a.late})"),
        (f"{a.schedules:,} schedules every 5 s, {a.seconds} s: tick to register",
         f"p50 {pct(lateness, .5):.0f} ms",
         f"p99 {pct(lateness, .99):.0f} ms, max {max(lateness, default=0):.0f} ms; "
         f"{fired:,} runs; node CPU {cpu_pct:.0f}% of a core; RSS "
         f"{sched_rss / 2**20:,.0f} MiB"),
    ]
    text = ("## Jobs that run later and schedules\n\n"
            "Issue 29. One node, RabbitMQ on loopback (a vhost of its own). A scheduled "
            "job's run_at sits in the job's dict of rare fields and a due-index int: "
            "what it costs over a queued one.\n\n"
            "| what | figure | detail |\n|---|--:|---|\n" +
            "\n".join(f"| {a_} | {b} | {c} |" for a_, b, c in rows) +
            f"\n\n{common.machine_line(ROOT)}; `python bench/scheduled.py --jobs {a.jobs} "
            f"--late {a.late} --schedules {a.schedules} --seconds {a.seconds}`")
    print(text)
    if a.write:
        common.replace_section(a.write, "scheduled", text)


if __name__ == "__main__":
    main()
