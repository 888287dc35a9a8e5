"""A/B: this checkout's node against another commit's, in one run.

Both nodes run at once (same broker, same machine); the load takes turns between
them, --rounds times, so drift in the machine hits both alike. --load paced (the
default): ~1,000 registrations/s over 10 connections, latency from the scheduled send
time. --load closed: wrk, --conns (50) connections, closed loop; req/s and the node's
CPU µs per request, the figure to compare for a change on the request path.

  python bench/paced_ab.py --other 58ffd69 --rounds 3 --publish true
  python bench/paced_ab.py --other 26c6ff0 --load closed --duration 8
  python bench/paced_ab.py --other HEAD --this-set http_server=httptools --load closed
"""
import argparse
import os
import subprocess
import sys
import tempfile

from gevent import monkey

monkey.patch_all()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CpuMeter, job_queues, machine_line, paced, replace_section,  # noqa: E402
                    run_wrk, start_node)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--other", required=True, help="commit to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--publish", choices=("true", "false"), default="true")
    p.add_argument("--load", choices=("paced", "closed"), default="paced")
    p.add_argument("--conns", type=int, default=50, help="--load closed: wrk connections")
    p.add_argument("--rabbitmq-port", type=int, default=5672)
    p.add_argument("--write", metavar="FILE", help="replace the bench:paced_ab section")
    p.add_argument("--this-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config key for this checkout's node only (e.g. "
                        "http_server=httptools against --other HEAD)")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="dq-ab-")
    other = os.path.join(tmp, "other")
    subprocess.run(["git", "worktree", "add", "--detach", other, a.other], cwd=ROOT,
                   check=True, capture_output=True)
    nodes = {}
    # Emptied before and after: a run left ~170,000 messages in job.medium, and the
    # next paced run's p99 was ten times its usual on both sides (RabbitMQ pages a
    # deep queue to disk).
    job_queues(a.rabbitmq_port, purge=True)
    try:
        kw = dict(publish_on_register=a.publish, rabbitmq_port=a.rabbitmq_port)
        this_kw = dict(kw, **dict(x.split("=", 1) for x in a.this_set))
        nodes["this"] = start_node(ROOT, tmp, "this", **this_kw)
        nodes[a.other] = start_node(other, tmp, "other", **kw)
        if a.load == "closed":
            for t in nodes.values():
                run_wrk(t.port, a.conns, 2, "warm")
        rows = []
        for r in range(a.rounds):
            for name, t in nodes.items():
                res = measure(a.load, t, a.duration, f"ab{r}{name}", a.conns)
                rows.append((r, name, res))
                print(f"round {r} {name:>8}: " + "  ".join(
                    f"{k} {v:,.2f}" for k, v in res.items()), flush=True)
    finally:        # also when wrk is missing (run_wrk exits): no node left running
        for t in nodes.values():
            t.stop()
        job_queues(a.rabbitmq_port, purge=True)
        subprocess.run(["git", "worktree", "remove", "--force", other], cwd=ROOT,
                       capture_output=True)
    text = (closed_report if a.load == "closed" else paced_report)(a, nodes, rows)
    print(text)
    if a.write:
        replace_section(a.write, "paced_ab" if a.load == "paced" else "closed_ab", text)


def measure(load, node, duration_s, prefix, conns) -> dict:
    if load == "paced":
        res = paced(node.port, 10, 0.01, duration_s, prefix)
        return {k: res[k] for k in ("p50_ms", "p99_ms", "max_ms", "non2xx")}
    meter = CpuMeter(node.proc.pid)
    w = run_wrk(node.port, conns, duration_s, prefix)
    return {"rps": w["rps"], "cpu_us": meter.stop(w["requests"])["cpu_us"],
            "non2xx": w["non2xx"] + w["errors"]}


def closed_report(a, nodes, rows) -> str:
    lines = ["### Closed-loop A/B: this node against another commit, taking turns", "",
             f"- {machine_line(ROOT)}",
             f"- command: `python bench/paced_ab.py --other {a.other} --load closed "
             f"--rounds {a.rounds} --duration {a.duration:g} --publish {a.publish} "
             f"--conns {a.conns}" + "".join(f" --this-set {x}" for x in a.this_set) + "`",
             f"- wrk, {a.conns} connections, registers", "",
             "| node | req/s per round | CPU µs a request per round | non-2xx |",
             "|---|---|---|--:|"]
    for name in nodes:
        mine = [res for _, n, res in rows if n == name]
        rps = ", ".join(format(x["rps"], ",.0f") for x in mine)
        cpu = ", ".join(format(x["cpu_us"], ".0f") for x in mine)
        lines.append(f"| {name} | {rps} | {cpu} | {sum(x['non2xx'] for x in mine)} |")
    return "\n".join(lines) + "\n"


def paced_report(a, nodes, rows) -> str:
    lines = ["### Paced A/B: this node against another commit, taking turns", "",
             f"- {machine_line(ROOT)}",
             f"- command: `python bench/paced_ab.py --other {a.other} --rounds {a.rounds} "
             f"--duration {a.duration:g} --publish {a.publish}"
             + "".join(f" --this-set {x}" for x in a.this_set) + " --write docs/BENCHMARKS.md`",
             "- 10 connections x 1 register / 10 ms (~1,000/s), "
             f"{a.duration:g} s a turn; latency from the scheduled send time", "",
             "| round | node | p50 ms | p99 ms | max ms | non-2xx |", "|--:|---|--:|--:|--:|--:|"]
    lines += [f"| {r} | {n} | {res['p50_ms']:.2f} | {res['p99_ms']:.2f} | "
              f"{res['max_ms']:.1f} | {res['non2xx']} |" for r, n, res in rows]
    lines.append("")
    for name in nodes:
        p99 = sorted(res["p99_ms"] for _, n, res in rows if n == name)
        lines.append(f"- {name}: median p99 {p99[len(p99) // 2]:.2f} ms")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
