"""Requests while a snapshot is written: paced p99 with ~1,000,000 jobs held, in
windows with and without a snapshot child running or finishing.

One node (snapshot_entries 100,000, publish_on_register false) is filled with
POST /api/jobs/batch to 2,000 jobs short of --jobs, so that the next snapshot starts
in the first window. Then --windows windows of 4 s, ~1,000 registrations/s paced (10
connections x 1 per 10 ms; latency from the scheduled send time). A window "has a
snapshot" when the node logged `snapshot started` or `snapshot written` in it, or a
child ran through it. With --other COMMIT, that commit's node is measured the same
way right after, in the same run (a git worktree).

  python bench/snapshot_stall.py [--jobs 1000000] [--other ab4e5a6~1] [--quick]
                                 [--write docs/BENCHMARKS.md]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_line, paced, replace_section, start_node  # noqa: E402
from chart import fill  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW_S = 4.0


def progress(msg):
    print(f"[snapshot_stall] {msg}", file=sys.stderr, flush=True)


def snapshot_spans(log_path):
    """[(started, written)] as epoch seconds, from the node's log lines."""
    spans, start = [], None
    for line in open(log_path):
        m = re.match(r"(\S+ \S+),(\d+) .*snapshot (started|written)", line)
        if not m:
            continue
        t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
        if m.group(3) == "started":
            start = t
        elif start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, float("inf")))
    return spans


def measure(checkout, jobs, windows, tag):
    tmp = tempfile.mkdtemp(prefix="dq-snapstall-")
    node = start_node(checkout, tmp, log_level="info", publish_on_register="false",
                      snapshot_entries=100_000, job_retention_max=2 * jobs)
    try:
        progress(f"{tag}: filling to {jobs - 2000:,} jobs")
        fill(node.port, jobs - 2000, 0)
        rows = []
        for w in range(windows):
            t0 = time.time()
            p = paced(node.port, 10, 0.01, WINDOW_S, f"{tag}{w}")
            rows.append(dict(t0=t0, t1=time.time(), p99=p["p99_ms"], max=p["max_ms"],
                             bad=p["non2xx"] + p["errors"]))
        spans = snapshot_spans(os.path.join(tmp, "node.log"))
    finally:
        node.stop()
    for r in rows:
        r["snap"] = any(s < r["t1"] and e > r["t0"] for s, e in spans)
        progress(f"{tag}: p99 {r['p99']:.1f} ms max {r['max']:.1f} ms"
                 f"{' (snapshot)' if r['snap'] else ''}")
    return rows


def summary(rows):
    snap = [r["p99"] for r in rows if r["snap"]]
    quiet = [r["p99"] for r in rows if not r["snap"]]
    return (max(snap) if snap else float("nan"), max(quiet) if quiet else float("nan"),
            max(r["max"] for r in rows), sum(r["bad"] for r in rows))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--other", help="a commit to measure the same way, after this tree")
    p.add_argument("--quick", action="store_true", help="200,000 jobs, 3 windows")
    p.add_argument("--write", metavar="FILE")
    a = p.parse_args()
    if a.quick:
        a.jobs, a.windows = 200_000, 3
    trees = [("this tree", ROOT)]
    other = None
    if a.other:
        other = tempfile.mkdtemp(prefix="dq-snapstall-other-")
        subprocess.run(["git", "worktree", "add", "--detach", other, a.other], cwd=ROOT,
                       check=True, capture_output=True)
        trees.append((a.other, other))
    try:
        results = [(name, summary(measure(path, a.jobs, a.windows, f"t{i}")))
                   for i, (name, path) in enumerate(trees)]
    finally:
        if other:
            subprocess.run(["git", "worktree", "remove", "--force", other], cwd=ROOT,
                           capture_output=True)
    cmd = "python bench/snapshot_stall.py " + " ".join(sys.argv[1:])
    lines = [f"### Requests while a snapshot is written ({a.jobs:,} jobs held)", "",
             f"- command: `{cmd}`",
             f"- {datetime.date.today()}, {machine_line(ROOT)}",
             f"- ~1,000 registrations/s paced, {a.windows} windows of {WINDOW_S:g} s each; "
             "p99 from the scheduled send time", "",
             "| tree | worst p99, windows with a snapshot | worst p99, windows without "
             "| ratio | max | errors |", "|---|--:|--:|--:|--:|--:|"]
    for name, (snap, quiet, mx, bad) in results:
        lines.append(f"| {name} | {snap:.1f} ms | {quiet:.1f} ms | {snap / quiet:.1f}x "
                     f"| {mx:.1f} ms | {bad} |")
    text = "\n".join(lines)
    print(text)
    if a.write:
        replace_section(a.write, "snapshot_stall", text)


if __name__ == "__main__":
    main()
