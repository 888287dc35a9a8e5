"""The CPU of one commit round with one command in it: a single RaftNode on a real log
in a temp dir, registers proposed one at a time (what one client connection costs
the node in Raft and the state machine, without HTTP and without RabbitMQ).

Each round: take the proposal, encode it, append it, fsync (--fsync off: none),
apply it to the state, answer the proposer. Rounds of --fsync on and off take turns.
--profile: cProfile of one run of each (the figures are then the profiler's).

  python bench/round.py [--rounds 3] [--proposals 3000] [--profile]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dqorch import parse  # noqa: E402
from dqorch.fsm import SNAPSHOTS, JobFSM  # noqa: E402
from dqorch.raft.log import RaftLog  # noqa: E402
from dqorch.raft.node import RaftNode  # noqa: E402


def command(job_id: str) -> dict:
    return parse.register({"id": job_id, "type": "bench", "payload": {"data": "x" * 50}},
                          new_id=lambda: job_id, max_retries=3, execution_timeout=300,
                          max_job_bytes=65536, publish=True)


def cpu_s() -> tuple:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def run(fsync: bool, n: int, profile: bool) -> dict:
    d = tempfile.mkdtemp(prefix="dq-round-")
    node = RaftNode(RaftLog(d, SNAPSHOTS), "bench", fsm=JobFSM(), snapshot_entries=10**7,
                    now_ms=lambda: int(time.time() * 1000),
                    fsync=os.fsync if fsync else (lambda fd: None))
    node.start()
    try:
        for i in range(200):                      # warm up
            node.propose(command(f"w{i}"))
        cmds = [command(f"j{i}") for i in range(n)]
        prof = None
        if profile:
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
        (u0, s0), t0 = cpu_s(), time.monotonic()
        for cmd in cmds:
            node.propose(cmd)
        (u1, s1), t1 = cpu_s(), time.monotonic()
        if prof is not None:
            import pstats
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        return {"wall_us": (t1 - t0) / n * 1e6, "cpu_us": (u1 - u0 + s1 - s0) / n * 1e6,
                "user_us": (u1 - u0) / n * 1e6, "sys_us": (s1 - s0) / n * 1e6}
    finally:
        node.stop(timeout_s=1)
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--proposals", type=int, default=3000)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    res = {True: [], False: []}
    for r in range(1 if a.profile else a.rounds):
        for fsync in (False, True):
            x = run(fsync, a.proposals, a.profile)
            res[fsync].append(x)
            print(f"round {r} fsync {'on ' if fsync else 'off'}: " + ", ".join(
                f"{k} {v:,.0f}" for k, v in x.items()), flush=True)
    for fsync, xs in res.items():
        med = {k: statistics.median(x[k] for x in xs) for k in xs[0]}
        print(f"fsync {'on ' if fsync else 'off'}, median of {len(xs)}: a round of one "
              f"command {med['wall_us']:,.0f} µs wall, {med['cpu_us']:,.0f} µs CPU "
              f"({med['user_us']:,.0f} user, {med['sys_us']:,.0f} system)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
