"""CPU and wall time of one write + fsync of a log-sized record, in --dir: inline,
into a file that grows and into blocks the file already has (raft/log.py Rule 3's
fill); into fill through gevent's threadpool and through raft/pool.py's Lane (what
raft/node.py Rule 5 uses on a slow disk). Then raft/node.py Rule 6: one record of
the commit in hard state (write_atomic through the threadpool, as the node does it),
and the fill case again with one such record every --record-every rounds. Two rounds, each case in turn.

  python bench/fsync.py [--dir data] [--n 3000]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dqorch.raft.pool import Lane  # noqa: E402

RECORD = b"x" * 300


def record(directory):
    """One commit record, as raft/node.py Rule 6 makes it."""
    from dqorch.raft.log import write_atomic
    pool = gevent.get_hub().threadpool
    pool.apply(write_atomic, (os.path.join(directory, "hardstate.json"),
                              b'{"term": 12, "vote": "orchestrator@127.0.0.1", '
                              b'"commit": 183592}'))


def measure_records(directory, n):
    """µs wall, µs CPU of one commit record, p99 µs."""
    lat = []
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        record(directory)
        lat.append(time.perf_counter() - t)
    wall, cpu = (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6
    lat.sort()
    return wall, cpu, lat[int(n * 0.99)] * 1e6


def measure(path, sync, n, fill, record_every=0):
    """µs wall, µs CPU a round, p99 µs of the fsync alone. record_every: a commit
    record (Rule 6) after every so many rounds, counted in the round's time."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    if fill:
        os.write(fd, b"\xff" * (n * len(RECORD) + (1 << 20)))
        os.fsync(fd)
    lat, pos = [], 0
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        os.pwrite(fd, RECORD, pos)
        pos += len(RECORD)
        t = time.perf_counter()
        sync(fd)
        lat.append(time.perf_counter() - t)
        if record_every and len(lat) % record_every == 0:
            record(os.path.dirname(path))
    wall, cpu = (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6
    os.close(fd)
    os.unlink(path)
    lat.sort()
    return wall, cpu, lat[int(n * 0.99)] * 1e6


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default=".")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--record-every", type=int, default=300)
    a = p.parse_args()
    pool = gevent.get_hub().threadpool
    lane = Lane()
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        path = os.path.join(d, "log")
        for _ in range(2):
            for name, sync, fill in (
                    ("inline, growing", os.fsync, False),
                    ("inline, into fill", os.fsync, True),
                    ("threadpool, into fill", lambda fd: pool.apply(os.fsync, (fd,)), True),
                    ("lane, into fill", lambda fd: lane.call(os.fsync, fd), True)):
                wall, cpu, p99 = measure(path, sync, a.n, fill)
                print(f"{name:>20}: {wall:6.0f} µs wall, {cpu:5.0f} µs CPU per write + "
                      f"fsync; fsync p99 {p99:5.0f} µs")
            wall, cpu, p99 = measure(path, os.fsync, a.n, True, a.record_every)
            print(f"{'into fill, records':>20}: {wall:6.0f} µs wall, {cpu:5.0f} µs CPU per "
                  f"write + fsync, a commit record every {a.record_every}; fsync p99 "
                  f"{p99:5.0f} µs")
            wall, cpu, p99 = measure_records(d, max(1, a.n // 10))
            print(f"{'commit record':>20}: {wall:6.0f} µs wall, {cpu:5.0f} µs CPU each "
                  f"(hard state, write_atomic in the threadpool); p99 {p99:5.0f} µs")


if __name__ == "__main__":
    main()
