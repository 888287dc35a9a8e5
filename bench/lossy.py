"""Large jobs through a follower on a lossy network (issue 28 §1): three real nodes
whose Raft datagrams all pass tests/integration/faults.py's UDP proxy, which drops each
with probability p. For each p: registers of 58 KB jobs sent one at a time to a
follower (each forwarded to the leader and replicated in ~50 datagrams a member), the
share answered 202 within the client's deadline, latency p50/p99 of those, elections
(term changes) and the fragments repaired (distriqueue_raft_fragments_total).

Loopback, default Raft timings (heartbeat 100 ms, election timeout 1,000-2,000 ms).
Needs RabbitMQ on 127.0.0.1:5672 (scripts/rabbitmq-local.sh start).

Usage: python bench/lossy.py [--jobs 60] [--loss 0,0.02,0.1,0.3] [--write docs/BENCHMARKS.md]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from tests.integration.faults import FaultCluster  # noqa: E402

JOB_BYTES = 58_000
DEADLINE_S = 10.0             # the client's: a register not answered 202 by then failed


class Dirs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name + "-", dir=self.root))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def fragments(node) -> dict:
    out: dict = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{node.cfg['metrics_port']}/metrics",
                                timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("distriqueue_raft_fragments_total{"):
                event = line.split('event="')[1].split('"')[0]
                out[event] = out.get(event, 0) + float(line.rsplit(" ", 1)[1])
    return out


def register(port: int, job: dict, timeout_s: float):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/jobs/register",
                                 data=json.dumps(job).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def one_round(root: Path, loss: float, jobs: int, seed: int) -> dict:
    c = FaultCluster(Dirs(root), 3, seed=seed, disk_mb=0)
    try:
        c.start()
        lead = c.wait_leader()
        follower = next(n for n in c.nodes.values() if n is not lead)
        term = {n: x.client().call("GET", "/api/raft/status")[1]["term"]
                for n, x in c.nodes.items()}
        c.udp.drop = loss
        rng = random.Random(seed)
        lat, ok = [], 0
        for i in range(jobs):
            blob = "%x" % rng.getrandbits(JOB_BYTES * 4)
            t0 = time.monotonic()
            deadline = t0 + DEADLINE_S
            code = None
            while time.monotonic() < deadline:     # a client resends after a 503
                code = register(follower.http_port, {"id": f"big-{i}", "payload": {"b": blob}},
                                max(0.1, deadline - time.monotonic()))
                if code == 202:
                    break
                time.sleep(0.05)
            if code == 202:
                ok += 1
                lat.append(time.monotonic() - t0)
        c.udp.drop = 0.0
        after = {n: x.client().call("GET", "/api/raft/status")[1]["term"]
                 for n, x in c.nodes.items()}
        frag: dict = {}
        for node in c.nodes.values():
            for k, v in fragments(node).items():
                frag[k] = frag.get(k, 0) + v
        return {"loss": loss, "jobs": jobs, "accepted": ok,
                "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                "elections": max(after[n] - term[n] for n in term),
                "dropped": c.udp.counts["dropped"], "forwarded": c.udp.counts["forwarded"],
                "nacks": int(frag.get("nacks_sent", 0)),
                "resent": int(frag.get("fragments_resent", 0))}
    finally:
        c.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--loss", default="0,0.02,0.1,0.3")
    ap.add_argument("--seed", type=int, default=28)
    ap.add_argument("--write", default=None)
    a = ap.parse_args()
    common.ensure_broker(5672, lambda m: print(f"[lossy] {m}", file=sys.stderr))
    root = Path(tempfile.mkdtemp(prefix="dq-bench-lossy-"))
    rows = []
    for loss in [float(x) for x in a.loss.split(",")]:
        print(f"[lossy] loss {loss:.0%}: {a.jobs} registers of {JOB_BYTES // 1000} KB",
              file=sys.stderr, flush=True)
        rows.append(one_round(root, loss, a.jobs, a.seed))
        print(f"[lossy] {rows[-1]}", file=sys.stderr, flush=True)
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    lines = [f"Measured {datetime.date.today()} at commit {rev}: `python bench/lossy.py "
             f"--jobs {a.jobs} --loss {a.loss}`. Registers of {JOB_BYTES // 1000} KB jobs "
             f"one at a time through a follower, each resent after a 503 until "
             f"{DEADLINE_S:.0f} s; every Raft datagram between members through a UDP proxy "
             f"that drops each with the given probability.", "",
             "| datagram loss | answered 202 in 10 s | p50 | p99 | elections | datagrams "
             "dropped / forwarded | NACKs sent | fragments resent |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['loss']:.0%} | {r['accepted']} of {r['jobs']} | "
                     f"{r['p50'] * 1000:.0f} ms | {r['p99'] * 1000:.0f} ms | {r['elections']} | "
                     f"{r['dropped']:,} / {r['forwarded']:,} | {r['nacks']:,} | "
                     f"{r['resent']:,} |")
    text = "\n".join(lines)
    print(text)
    if a.write:
        common.replace_section(a.write, "lossy", "## Large jobs on a lossy network\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
