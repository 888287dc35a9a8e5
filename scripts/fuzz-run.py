#!/usr/bin/env python3
"""Long fuzz run against one real dqorch.py process: schemathesis cases (positive and
negative data, every operation of the OpenAPI document the node serves, round robin)
and raw hostile bytes on the API port (garbage, truncated and oversized requests,
broken chunking), until --requests have been sent. The node's RSS is sampled as it
goes; held jobs are bounded by job_retention_max, so memory must stay flat.

    .venv/bin/python scripts/fuzz-run.py --requests 100000 [--seed N] [--keep DIR]

Exit 0 when no answer was a 5xx, every schemathesis check passed, the node never
stopped answering and its RSS over the second half of the run grew less than
--max-growth (default 10 %) over its RSS at the end of the first fifth; 1 otherwise.
Live jobs are never evicted (only finished ones, past job_retention_max), so every
5,000 requests the run cancels what the fuzzer left live; and the node keeps the
commands since its last snapshot in memory (docs/CLUSTER.md, Limits), so it snapshots
every 1,000 entries: what it holds stays bounded and any growth left is a leak.
Needs RabbitMQ on 127.0.0.1:5672 (scripts/rabbitmq-local.sh start): the node
publishes into a vhost of its own (dropped at the end), so that its status events
drain as in production; with no broker they wait, up to state.OUTBOX_MAX, by design.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import quote  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hypothesis import HealthCheck, Phase, Verbosity, given, seed as hseed, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.integration.conftest import SHARED_PORT, NodeProc  # noqa: E402
from tests.integration.faults import NoPrivateVhost, drop_vhost, private_vhost  # noqa: E402
from tests.integration.flood import rss_kib  # noqa: E402
from tests.integration.openapi_checks import CHECKS, load_schema  # noqa: E402


def hostile(rng: random.Random) -> bytes:
    """One raw request of a random hostile kind."""
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 4096))
    if kind == 1:                       # cut off inside the headers
        return b"POST /api/jobs/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"
    if kind == 2:                       # a body shorter than it says
        return (b"POST /api/jobs/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n"
                b"\r\n{\"id\":")
    if kind == 3:                       # one huge header
        return b"GET /api/jobs HTTP/1.1\r\nX-A: " + b"a" * rng.randint(9000, 200000) + b"\r\n\r\n"
    if kind == 4:                       # broken chunking
        return (b"POST /api/jobs/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"\r\nzz\r\n" + rng.randbytes(50))
    if kind == 5:                       # smuggling: both framings
        return (b"POST /api/jobs/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    path = "/" + "".join(rng.choice("abc/%.?&=\x7f") for _ in range(rng.randint(1, 300)))
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("latin-1")


def send_raw(port: int, data: bytes) -> int | None:
    """The status code of the answer, or None when the node closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            head = s.recv(64)
        except OSError:
            return None
    try:
        return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None
    except (IndexError, ValueError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--raw-share", type=float, default=0.1,
                    help="share of raw hostile requests among all")
    ap.add_argument("--max-growth", type=float, default=0.10)
    ap.add_argument("--keep", default=None, help="folder for the node's data and log")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    root = Path(args.keep or tempfile.mkdtemp(prefix="dq-fuzz-run-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        vhost = private_vhost()
    except NoPrivateVhost as e:
        print(f"fuzz-run: {e}", file=sys.stderr)
        return 2
    node = NodeProc(root, SHARED_PORT, rabbitmq_vhost=vhost, publish_on_register=False,
                    job_max_retries=1, job_retry_backoff_s=0, job_retention_max=2000,
                    snapshot_entries=1000).start()
    pid = node.proc.pid
    schema = load_schema(node.http_port)
    ops = [r.ok() for r in schema.get_all_operations()
           if r.ok().path != "/api/openapi.json"]
    counts = {"schemathesis": 0, "raw": 0, "5xx": 0, "check_failures": 0,
              "raw_closed_without_answer": 0, "cancels": 0}
    by_status: dict = {}
    failures: list = []
    rss: list = []                   # (requests so far, KiB)
    t0 = time.monotonic()

    def total() -> int:
        return counts["schemathesis"] + counts["raw"]

    def cancel_live() -> None:
        c = node.client()
        for status in ("pending", "queued", "running"):
            while True:
                code, page = c.call("GET", f"/api/jobs?status={status}&limit=1000")
                if code != 200 or not page["jobs"]:
                    break
                for j in page["jobs"]:
                    c.call("POST", f"/api/jobs/{quote(j['id'], safe='')}/cancel")
                    counts["cancels"] += 1

    def note(status) -> None:
        by_status[status] = by_status.get(status, 0) + 1
        if isinstance(status, int) and status >= 500:
            counts["5xx"] += 1
        n = total()
        if n % 5000 == 0:
            cancel_live()
        if n % 2000 == 0:
            rss.append((n, rss_kib(pid)))
            if n % 10000 == 0:
                print(f"{n} requests in {time.monotonic() - t0:.0f} s, rss {rss[-1][1]} KiB, "
                      f"5xx {counts['5xx']}, check failures {counts['check_failures']}",
                      flush=True)

    def raw_now() -> None:
        status = send_raw(node.http_port, hostile(rng))
        counts["raw"] += 1
        if status is None:
            counts["raw_closed_without_answer"] += 1
        note(status if status is not None else "closed")

    def drive(op, mode) -> None:
        @hseed(rng.getrandbits(64))          # the whole run follows from --seed
        @settings(max_examples=200, deadline=None, database=None, verbosity=Verbosity.quiet,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @given(op.as_strategy(generation_mode=mode))
        def run(case):
            if total() >= args.requests:
                return
            while rng.random() < args.raw_share:
                raw_now()
            resp = case.call()
            counts["schemathesis"] += 1
            note(resp.status_code)
            try:
                case.validate_response(resp, checks=CHECKS)
            except Exception as e:       # a failed check: recorded, the run goes on
                counts["check_failures"] += 1
                if len(failures) < 20:
                    failures.append(f"{op.method.upper()} {op.path}: {str(e)[:300]}")
        run()

    pairs = [(op, mode) for op in ops
             for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    try:
        while total() < args.requests and pairs:
            for pair in list(pairs):
                if total() >= args.requests:
                    break
                try:
                    drive(*pair)
                except Unsatisfiable:      # no negative data for an operation without input
                    pairs.remove(pair)
            if node.proc.poll() is not None:
                failures.append(f"the node exited with {node.proc.returncode}")
                break
        alive = node.proc.poll() is None and node.client().call("GET", "/api/health")[0] in (200, 503)
    finally:
        node.stop()
        drop_vhost(vhost)
    took = time.monotonic() - t0
    fifth = next((kib for n, kib in rss if n >= args.requests // 5), rss[0][1] if rss else 0)
    late = max((kib for n, kib in rss if n >= args.requests // 2), default=0)
    growth = (late - fifth) / fifth if fifth else 0.0
    print("\n==== summary")
    print(f"seed {seed}; {total()} requests in {took:.0f} s ({total() / took:.0f}/s): "
          f"{counts['schemathesis']} schemathesis, {counts['raw']} raw hostile "
          f"(and {counts['cancels']} cancels of what they left live)")
    print(f"answers {dict(sorted(by_status.items(), key=str))}")
    print(f"5xx {counts['5xx']}; schemathesis check failures {counts['check_failures']}")
    print(f"rss KiB: at start {rss[0][1] if rss else 0}, at 1/5 {fifth}, most in the second "
          f"half {late} ({growth:+.1%}); node still answering at the end: {alive}")
    for f in failures:
        print("  " + f)
    print(f"node log {node.log_path}")
    ok = (counts["5xx"] == 0 and counts["check_failures"] == 0 and alive
          and growth < args.max_growth and not any("exited" in f for f in failures))
    print("clean" if ok else "NOT CLEAN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
