"""Throughput and p99 against jobs held: one node, registers measured at 0 jobs held,
then again after each fill up to --levels (jobs added with POST /api/jobs/batch).

At each level: 50 keep-alive connections closed loop (wrk, --duration s: req/s, p99,
node CPU µs/request) and ~1,000 registrations/s paced (10 connections x 1 per 10 ms:
p99 from the scheduled send time). publish_on_register is false: this measures what
the jobs held cost the node, not RabbitMQ's queue growing by a million messages.
Draws the chart with matplotlib (pip install -e '.[bench]'); with --write, into
docs/throughput-vs-jobs.png and the bench:chart section of that file, else into the
temp dir.

  python bench/chart.py [--levels 100000,300000,1000000] [--duration 5] [--quick]
                        [--write docs/BENCHMARKS.md]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import datetime  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CpuMeter, machine_line, paced, replace_section, run_wrk,  # noqa: E402
                    start_node)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = os.path.join(ROOT, "docs", "throughput-vs-jobs.png")


def progress(msg):
    print(f"[chart] {msg}", file=sys.stderr, flush=True)


def fill(port, upto, start):
    """Batches of 1,000 on one connection until upto jobs are held."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    n = start
    pad = "x" * 50
    while n < upto:
        k = min(1000, upto - n)
        body = {"jobs": [{"id": f"fill-{n + i}", "type": "bench",
                          "payload": {"data": pad}} for i in range(k)]}
        conn.request("POST", "/api/jobs/batch", json.dumps(body))
        r = conn.getresponse()
        out = json.loads(r.read())
        if r.status != 202 or out["accepted"] != k:
            raise SystemExit(f"fill: {r.status} {str(out)[:200]}")
        n += k
        if n % 100_000 == 0:
            progress(f"filled to {n:,} jobs")
    conn.close()
    return n


def children(pid):
    """The node's child processes: a snapshot being written (raft/snapshots.py)."""
    kids = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.update(f.read().split())
        except OSError:               # the thread ended since listdir
            pass
    return kids


def wait_no_snapshot(pid, timeout_s=300):
    """A snapshot started by the fill would share the 2 cores with the next window
    (and its copy-on-write faults cost the node): let it finish first."""
    t0, said = time.monotonic(), False
    while children(pid) and time.monotonic() - t0 < timeout_s:
        if not said:
            progress("waiting for the snapshot child to finish")
            said = True
        time.sleep(0.2)


def measure(node, duration_s, tag):
    """One window; snap says whether a snapshot child ran during it (a snapshot starts
    every snapshot_entries entries, so some windows have one)."""
    wait_no_snapshot(node.proc.pid)
    seen = set()

    def watch():                  # wrk runs as a subprocess: gevent's, so this runs too
        while True:
            seen.update(children(node.proc.pid))
            gevent.sleep(0.1)

    watcher = gevent.spawn(watch)
    meter = CpuMeter(node.proc.pid)
    w = run_wrk(node.port, 50, duration_s, f"{tag}-w")
    cpu = meter.stop(w["requests"])
    p = paced(node.port, 10, 0.01, duration_s, f"{tag}-p")
    watcher.kill()
    return dict(rps=w["rps"], p99=w["p99_ms"], cpu_us=cpu["cpu_us"], paced_p99=p["p99_ms"],
                paced_p50=p["p50_ms"], bad=w["non2xx"] + w["errors"] + p["non2xx"] + p["errors"],
                added=w["requests"] + p["requests"], snap=bool(seen))


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = [r["held"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(xs, [r["rps"] for r in rows], "o-")
    a.set(xlabel="jobs held", ylabel="registers/s (50 connections)", ylim=(0, None),
          title="throughput")
    b.plot(xs, [r["p99"] for r in rows], "o-", label="50 connections, closed loop")
    b.plot(xs, [r["paced_p99"] for r in rows], "s-", label="~1,000/s paced")
    b.set(xlabel="jobs held", ylabel="p99 ms", ylim=(0, None), title="p99 latency")
    b.legend()
    for ax in (a, b):
        ax.set_xscale("symlog", linthresh=10_000)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", default="100000,300000,1000000")
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--quick", action="store_true", help="levels 20,000 and 50,000, 2 s each")
    p.add_argument("--rabbitmq-port", type=int, default=5672)
    p.add_argument("--write", metavar="FILE")
    a = p.parse_args()
    levels = [20_000, 50_000] if a.quick else [int(x) for x in a.levels.split(",")]
    duration = 2 if a.quick else a.duration
    node = start_node(ROOT, tempfile.mkdtemp(prefix="dq-chart-"), rabbitmq_port=a.rabbitmq_port,
                      publish_on_register="false", job_retention_max=3 * max(levels))
    rows, snapped, n = [], [], 0      # windows without a snapshot; those with one
    try:
        for level in [0] + levels:
            if level > n:
                n = fill(node.port, level, n)
            for attempt in range(3):  # a window with a snapshot is kept apart, and again
                r = measure(node, duration, f"h{level}-{attempt}")
                r["held"], r["level"] = n, level
                n += r.pop("added")
                progress(f"{r['held']:>9,} held: {r['rps']:,.0f} req/s, p99 {r['p99']:.1f} "
                         f"ms, paced p99 {r['paced_p99']:.2f} ms, {r['cpu_us']:.0f} µs/req"
                         + (", a snapshot ran" if r["snap"] else ""))
                if not r["snap"]:
                    rows.append(r)
                    break
                snapped.append(r)
            else:                     # a snapshot in every window: the last one stands in
                rows.append(snapped.pop())
    finally:
        node.stop()
    # Only --write replaces the committed chart (a --quick run would overwrite it).
    png = PNG if a.write else os.path.join(tempfile.gettempdir(), "throughput-vs-jobs.png")
    plot(rows, png)
    progress(f"chart: {png}")
    base = next(r for r in rows if r["level"] == 0)
    lines = ["### Throughput and p99 against jobs held", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- machine: {machine_line(ROOT)}",
             f"- command: `python bench/chart.py{' --quick' if a.quick else ''}"
             f"{' --write ' + a.write if a.write else ''}`",
             f"- one node, publish_on_register false; at each level wrk 50 connections "
             f"closed loop and ~1,000 registers/s paced, {duration:g} s each; filled with "
             f"batches of 1,000 between levels; each window starts after any snapshot "
             f"the fill started has finished; a window in which one ran anyway (one starts "
             f"every snapshot_entries, 100,000 entries, wherever the count falls) is listed "
             f"apart and measured again; the chart and the headline use the windows without",
             f"- **throughput at {rows[-1]['held']:,} jobs held: "
             f"{rows[-1]['rps'] / base['rps']:.2f}x of none held** (target >= 0.95x)"
             + (" (a snapshot ran in each of its windows)" if rows[-1]["snap"] else "")
             + "".join(f"; with a snapshot in the window: {r['rps'] / base['rps']:.2f}x"
                       for r in snapped if r["level"] == rows[-1]["level"]),
             "",
             "![throughput and p99 against jobs held](throughput-vs-jobs.png)", "",
             "| jobs held | req/s, 50 conns | vs none held | p99 ms | node CPU µs/req | "
             "paced p50 ms | paced p99 ms | errors | a snapshot ran |",
             "|--:|--:|--:|--:|--:|--:|--:|--:|--|"]
    for r in sorted(rows + snapped, key=lambda r: (r["held"], r["snap"])):
        lines.append(f"| {r['held']:,} | {r['rps']:,.0f} | {r['rps'] / base['rps']:.2f}x | "
                     f"{r['p99']:.1f} | {r['cpu_us']:.0f} | {r['paced_p50']:.2f} | "
                     f"{r['paced_p99']:.2f} | {r['bad']} | {'yes' if r['snap'] else 'no'} |")
    text = "\n".join(lines)
    print(text)
    if a.write:
        replace_section(a.write, "chart", text)
        progress(f"wrote {a.write} and {os.path.relpath(PNG, ROOT)}")


if __name__ == "__main__":
    main()
