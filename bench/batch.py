"""Batch submit against single registers, on one node in one run.

One keep-alive connection sends, for --duration seconds each: single registers back to
back, then batches of --batch jobs (POST /api/jobs/batch), then singles again (to see
drift). Reports accepted jobs/s and the node's CPU µs per job for each.

  python bench/batch.py --write docs/BENCHMARKS.md
"""
import argparse
import http.client
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_seconds, machine_line, replace_section, start_node  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(port, pid, duration_s, batch, prefix):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    pad = "x" * 50
    jobs, n, cpu0, t0 = 0, 0, cpu_seconds(pid), time.monotonic()
    while time.monotonic() - t0 < duration_s:
        if batch:
            body = {"jobs": [{"id": f"{prefix}-{n}-{k}", "type": "bench",
                              "payload": {"data": pad}} for k in range(batch)]}
            conn.request("POST", "/api/jobs/batch", json.dumps(body))
            out = json.loads(conn.getresponse().read())
            jobs += out["accepted"]
        else:
            conn.request("POST", "/api/jobs/register", json.dumps(
                {"id": f"{prefix}-{n}", "type": "bench", "payload": {"data": pad}}))
            r = conn.getresponse()
            r.read()
            jobs += r.status == 202
        n += 1
    elapsed, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    conn.close()
    return jobs / elapsed, cpu / max(1, jobs) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--publish", choices=("true", "false"), default="true")
    p.add_argument("--rabbitmq-port", type=int, default=5672)
    p.add_argument("--write", metavar="FILE")
    a = p.parse_args()
    node = start_node(ROOT, tempfile.mkdtemp(prefix="dq-batch-"),
                      rabbitmq_port=a.rabbitmq_port, publish_on_register=a.publish,
                      snapshot_entries=1000000)
    http_port = node.port
    try:
        rows = [("single registers", run(http_port, node.proc.pid, a.duration, 0, "s1")),
                (f"batches of {a.batch}", run(http_port, node.proc.pid, a.duration,
                                              a.batch, "b")),
                ("single registers again", run(http_port, node.proc.pid, a.duration, 0,
                                               "s2"))]
    finally:
        node.stop()
    base = (rows[0][1][0] + rows[2][1][0]) / 2
    lines = ["### Batch submit against single registers (one connection)", "",
             f"- {machine_line(ROOT)}",
             f"- command: `python bench/batch.py --duration {a.duration:g} --batch {a.batch} "
             f"--publish {a.publish} --write docs/BENCHMARKS.md`", "",
             "| requests | jobs/s | node CPU µs/job | vs singles |", "|---|--:|--:|--:|"]
    lines += [f"| {name} | {rate:,.0f} | {cpu:,.0f} | {rate / base:.1f}× |"
              for name, (rate, cpu) in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        replace_section(a.write, "batch", text)


if __name__ == "__main__":
    main()
