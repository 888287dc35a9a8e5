"""CPU and wall time of one write + fsync of a log-sized record, inline and through
gevent's threadpool (what raft/node.py Rule 5 chooses between), in --dir.

  python bench/fsync.py [--dir data] [--n 3000]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402


def measure(fd, sync, n):
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        os.write(fd, b"x" * 300)
        sync(fd)
    return (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default=".")
    p.add_argument("--n", type=int, default=3000)
    a = p.parse_args()
    pool = gevent.get_hub().threadpool
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        fd = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_CREAT)
        for name, sync in (("inline", os.fsync),
                           ("threadpool", lambda fd: pool.apply(os.fsync, (fd,)))):
            wall, cpu = measure(fd, sync, a.n)
            print(f"{name:>10}: {wall:6.0f} µs wall, {cpu:5.0f} µs CPU per write + fsync")
        os.close(fd)


if __name__ == "__main__":
    main()
