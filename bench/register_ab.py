"""Register CPU A/B: this checkout's node against another commit's, in one run.

Both nodes run at once (same broker), each with publish_on_register true; wrk (50
connections, closed loop) takes turns between them, --rounds times, so drift in the
machine hits both alike. Reports req/s and the node's CPU µs per request per round.

  python bench/register_ab.py --other 17efc66~3 [--rounds 3] [--duration 8]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CpuMeter, run_wrk, start_node  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--other", required=True, help="commit to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8)
    p.add_argument("--rabbitmq-port", type=int, default=5672)
    a = p.parse_args()
    other = tempfile.mkdtemp(prefix="dq-regab-other-")
    subprocess.run(["git", "worktree", "add", "--detach", other, a.other], cwd=ROOT,
                   check=True, capture_output=True)
    trees = [("this tree", ROOT), (a.other, other)]
    nodes = []
    try:
        nodes = [start_node(path, tempfile.mkdtemp(prefix="dq-regab-"), name=f"n{i}",
                            rabbitmq_port=a.rabbitmq_port)
                 for i, (_, path) in enumerate(trees)]
        for node in nodes:
            run_wrk(node.port, 50, 2, "warm")
        rows = {name: [] for name, _ in trees}
        for r in range(a.rounds):
            for (name, _), node in zip(trees, nodes):
                meter = CpuMeter(node.proc.pid)
                w = run_wrk(node.port, 50, a.duration, f"r{r}")
                rows[name].append((w["rps"], meter.stop(w["requests"])["cpu_us"]))
    finally:
        for node in nodes:
            node.stop()
        subprocess.run(["git", "worktree", "remove", "--force", other], cwd=ROOT,
                       capture_output=True)
    print(f"register, 50 connections, publishing; `python bench/register_ab.py "
          f"{' '.join(sys.argv[1:])}`\n\n| tree | req/s per round | CPU µs a request |\n"
          "|---|---|---|")
    for name, vals in rows.items():
        print(f"| {name} | {', '.join(f'{v[0]:,.0f}' for v in vals)} | "
              f"{', '.join(f'{v[1]:.0f}' for v in vals)} |")


if __name__ == "__main__":
    main()
