"""Where a node's CPU goes, by part: py-spy samples (--gil: only what holds the GIL)
of one node under a load, each sample given to the part of the first frame, from the
innermost out, that belongs to one. The parts are what a request or a job is made of
(HTTP front end, bottle and the API's wrappers, the handlers, the commit loop's
encoding, writing and applying, publishing, metrics, gevent's sockets and hub), so the
shares say what is left to cut and what a target would need cut.

  python bench/where.py --register [--conns 50] [--duration 10]   # starts a node, wrk
  python bench/where.py --raw FILE [FILE ...]                       # py-spy raw files

`bench/pipeline.py --py-spy FILE` records the node phase of the whole pipeline into
FILE for --raw. Needs py-spy (`pip install py-spy`; bench-only, not a dependency) and,
for --register, wrk and RabbitMQ on 5672 as bench/register.py.
"""
import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (part, file fragments), tried from the innermost frame out; the first frame whose file
# holds one of a part's fragments gives the sample to that part. Frames of no part
# (the stdlib, gevent's greenlet plumbing) are skipped; a sample with none is "hub".
PARTS = (
    ("metrics (prometheus_client, metrics.py)", ("prometheus_client/", "dqorch/metrics.py",
                                                 "dqorch/rates.py")),
    ("fsync hand-off (threads)", ("gevent/threadpool.py", "gevent/_threading.py",
                                  "dqorch/raft/pool.py")),
    ("publishing (dispatch, broker, pika)", ("pika/", "dqorch/dispatch.py",
                                             "dqorch/broker.py", "dqorch/amqp.py",
                                             "dqorch/limits.py")),
    ("apply (state, jobs, fsm)", ("dqorch/state.py", "dqorch/jobs.py", "dqorch/fsm.py",
                                  "dqorch/workers.py")),
    ("log encode and write (raft/log, codec)", ("dqorch/raft/log.py",
                                                "dqorch/raft/codec.py")),
    ("commit loop (raft/node, core)", ("dqorch/raft/",)),
    ("handlers and parsing (api, parse)", ("dqorch/parse.py", "dqorch/api.py",
                                           "dqorch/forward.py")),
    ("bottle and WSGI wrappers", ("bottle.py", "dqorch/console.py", "dqorch/app.py",
                                  "dqorch/headers.py")),
    ("HTTP front end (http_fast, httptools)", ("dqorch/http_fast.py", "httptools/",
                                               "dqorch/http_server.py")),
    ("sockets (gevent)", ("gevent/_socketcommon.py", "gevent/_socket3.py")),
)


RATE = 500                     # py-spy samples a second


def part_of(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        file = frame.rpartition("(")[2]
        for part, fragments in PARTS:
            if any(f in file for f in fragments):
                return part
    return "hub and greenlet switches (gevent)"


def shares(paths) -> tuple:
    counts, total = collections.Counter(), 0
    for path in paths:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip("\n").rpartition(" ")
                if not stack or not n.isdigit():
                    continue
                counts[part_of(stack)] += int(n)
                total += int(n)
    return counts, total


def report(counts, total, per_unit_us=None, unit="request") -> str:
    head = f"| part | share of samples |{f' µs a {unit} |' if per_unit_us else ''}"
    out = [head, "|---|--:|" + ("--:|" if per_unit_us else "")]
    for part, n in counts.most_common():
        row = f"| {part} | {100 * n / total:.1f}% |"
        if per_unit_us:
            row += f" {per_unit_us * n / total:.0f} |"
        out.append(row)
    return "\n".join(out)


def record(pid: int, out: str, seconds: float | None = None) -> subprocess.Popen:
    """py-spy recording pid into out (raw) for seconds, or until sent SIGINT."""
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        sys.exit("where: py-spy not found (pip install py-spy); it is bench-only")
    timed = ["-d", str(int(seconds))] if seconds else []
    return subprocess.Popen([spy, "record", "--gil", "-r", str(RATE), *timed, "-f", "raw",
                             "-o", out, "--nonblocking", "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def register_load(a) -> None:
    from gevent import monkey
    monkey.patch_all()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import run_wrk, start_node, user_system
    tmp = tempfile.mkdtemp(prefix="dq-where-")
    raw = os.path.join(tmp, "register.raw")
    node = start_node(ROOT, tmp, "where", publish_on_register="true")
    try:
        run_wrk(node.port, a.conns, 2, "warm")
        spy = record(node.proc.pid, raw, a.duration)
        time.sleep(0.5)
        t0, (u0, s0) = time.monotonic(), user_system(node.proc.pid)
        w = run_wrk(node.port, a.conns, a.duration - 1, "where")
        u1, s1 = user_system(node.proc.pid)
        wall = time.monotonic() - t0
        n = max(1, w["requests"])
        us, user_us, sys_us = (u1 - u0 + s1 - s0) / n * 1e6, (u1 - u0) / n * 1e6, \
            (s1 - s0) / n * 1e6
        spy.wait()
    finally:
        node.stop()
    counts, total = shares([raw])
    print(f"register, {a.conns} connections, publishing: {w['rps']:,.0f} req/s, "
          f"{us:.0f} µs of node CPU a request ({user_us:.0f} user, {sys_us:.0f} "
          f"system); {total:,} samples ({raw}), the GIL held "
          f"{100 * total / RATE / a.duration:.0f}% "
          f"of the time against {100 * (u1 - u0 + s1 - s0) / wall:.0f}% of a core used")
    print(report(counts, total, us))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--register", action="store_true")
    g.add_argument("--raw", nargs="+", metavar="FILE")
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--per-unit-us", type=float, help="--raw: CPU µs a unit, to split it")
    p.add_argument("--unit", default="completed job")
    a = p.parse_args()
    if a.register:
        register_load(a)
        return 0
    counts, total = shares(a.raw)
    print(f"{total:,} samples")
    print(report(counts, total, a.per_unit_us, a.unit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
