"""Paced A/B: this checkout's node against another commit's, in one run.

Both nodes run at once (same broker, same machine); the paced client (~1,000
registrations/s over 10 connections, latency from the scheduled send time) takes
turns between them, --rounds times, so drift in the machine hits both alike.

  python bench/paced_ab.py --other 58ffd69 --rounds 3 --publish true
"""
import argparse
import os
import subprocess
import sys
import tempfile

from gevent import monkey

monkey.patch_all()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_line, paced, replace_section, start_node  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--other", required=True, help="commit to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--publish", choices=("true", "false"), default="true")
    p.add_argument("--rabbitmq-port", type=int, default=5672)
    p.add_argument("--write", metavar="FILE", help="replace the bench:paced_ab section")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="dq-ab-")
    other = os.path.join(tmp, "other")
    subprocess.run(["git", "worktree", "add", "--detach", other, a.other], cwd=ROOT,
                   check=True, capture_output=True)
    try:
        kw = dict(publish_on_register=a.publish, rabbitmq_port=a.rabbitmq_port)
        nodes = {"this": start_node(ROOT, tmp, "this", **kw),
                 a.other: start_node(other, tmp, "other", **kw)}
        rows = []
        for r in range(a.rounds):
            for name, t in nodes.items():
                res = paced(t.port, 10, 0.01, a.duration, f"ab{r}{name}")
                rows.append((r, name, res))
                print(f"round {r} {name:>8}: p50 {res['p50_ms']:.2f} ms  p99 "
                      f"{res['p99_ms']:.2f} ms  max {res['max_ms']:.1f} ms  "
                      f"non-2xx {res['non2xx']}", flush=True)
        for t in nodes.values():
            t.stop()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", other], cwd=ROOT,
                       capture_output=True)
    lines = ["### Paced A/B: this node against another commit, taking turns", "",
             f"- {machine_line(ROOT)}",
             f"- command: `python bench/paced_ab.py --other {a.other} --rounds {a.rounds} "
             f"--publish {a.publish} --write docs/BENCHMARKS.md`",
             "- 10 connections x 1 register / 10 ms (~1,000/s), "
             f"{a.duration:g} s a turn; latency from the scheduled send time", "",
             "| round | node | p50 ms | p99 ms | max ms | non-2xx |", "|--:|---|--:|--:|--:|--:|"]
    lines += [f"| {r} | {n} | {res['p50_ms']:.2f} | {res['p99_ms']:.2f} | "
              f"{res['max_ms']:.1f} | {res['non2xx']} |" for r, n, res in rows]
    lines.append("")
    for name in nodes:
        p99 = sorted(res["p99_ms"] for _, n, res in rows if n == name)
        lines.append(f"- {name}: median p99 {p99[len(p99) // 2]:.2f} ms")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        replace_section(a.write, "paced_ab", text)

if __name__ == "__main__":
    main()
