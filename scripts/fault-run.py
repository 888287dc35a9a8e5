#!/usr/bin/env python3
"""Long fault runs against a 3-node dqorch cluster (tests/integration/test_faults.py's
campaign, for minutes instead of seconds), then the history checker and a summary.

    .venv/bin/python scripts/fault-run.py --minutes 10 [--seed N] [--keep DIR]

Needs RabbitMQ on 127.0.0.1:5672 (scripts/rabbitmq-local.sh start); the run uses a
vhost of its own. Exit 0 when the checker finds nothing, 1 otherwise; the node logs
and the full report stay in the run's directory (printed at the end).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.integration import history as H  # noqa: E402
from tests.integration.faults import NoPrivateVhost  # noqa: E402
from tests.integration.campaign import campaign  # noqa: E402


class Dirs:
    """tmp_path_factory's mktemp, under one folder kept after the run."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        p = Path(tempfile.mkdtemp(prefix=name + "-", dir=self.root))
        return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--settle", type=float, default=120, help="seconds to settle after heal")
    ap.add_argument("--keep", default=None, help="folder for logs (default: a new temp dir)")
    ap.add_argument("--loaders", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--overlap", type=int, default=1,
                    help="faults running at once (2: e.g. a kill during a partition)")
    ap.add_argument("--heartbeat-timeout", type=int, default=None,
                    help="the nodes' worker_heartbeat_timeout_s (default: dqorch's)")
    ap.add_argument("--disk-mb", type=int, default=256,
                    help="each node's data_dir a tmpfs this big, for disk_full (root only)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    root = Path(args.keep or tempfile.mkdtemp(prefix="dq-fault-run-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        hist, violations, _c, figures = campaign(
            Dirs(root), args.minutes * 60, seed, settle_s=args.settle, loaders=args.loaders,
            workers=args.workers, overlap=args.overlap, disk_mb=args.disk_mb,
            log=lambda s: print(s, flush=True),
            **({"worker_heartbeat_timeout_s": args.heartbeat_timeout}
               if args.heartbeat_timeout else {}))
    except NoPrivateVhost as e:
        print(f"fault-run: {e}", file=sys.stderr)
        return 2
    text = H.report(hist, violations, stories=20)
    (root / "report.txt").write_text(text + "\n\n" + json.dumps(figures, indent=1, default=str))
    with open(root / "history.jsonl", "w") as f:       # every request and message, raw
        for r in hist.http:
            f.write(json.dumps(dict(r, kind="http"), default=str) + "\n")
        for m in hist.msgs:
            f.write(json.dumps(dict(m, kind="msg"), default=str) + "\n")
        for t, kind, detail in hist.faults:
            f.write(json.dumps(dict(kind="fault", t=t, fault=kind, detail=detail)) + "\n")
    print("\n==== summary")
    print(f"seed {seed}, {args.minutes} min of faults, {time.monotonic() - t0:.0f} s in all")
    print(f"jobs accepted {figures['jobs_accepted']}, final {figures['final_statuses']}")
    print(f"faults {figures['faults']}")
    print(f"requests {figures['requests']}, answers {figures['answers']}")
    print(f"job messages taken {figures['messages']} (distinct jobs "
          f"{figures['distinct_jobs_in_messages']}), left in queues {figures['left_in_queues']}")
    print(f"udp proxy {figures['udp']}, rabbit proxy {figures['rabbit_proxy']}")
    cuts = figures["leader_broker_cuts"]
    print(f"leader-only broker cuts (leadership must move when nothing else goes on) "
          f"{len(cuts)}, leadership moved {sum(h['moved'] for h in cuts)}")
    print(f"api proxies {figures['api_proxies']}; disk_full {figures['disk_full']}; "
          f"clock_skew {figures['clock_skew']}; slow_disk {figures['slow_disk']} "
          f"(fsyncs moved to a thread {figures['fsyncs_to_thread']} times)")
    print(f"log cuts (a follower's log cut below its recorded commit: each start must "
          f"be refused) {figures['log_cuts'] or 'none'}")
    print(f"members replaced (emptied, removed, added back, promoted; each must end "
          f"a voter) {figures['replaced'] or 'none'}")
    print(f"schedule (every 2 s, each tick one run, none skipped) {figures['schedule']}; "
          f"jobs registered with a delay {figures['delayed_jobs']}")
    print(f"tracebacks in the node logs {figures['tracebacks']}")
    print(f"worker give-ups {figures['worker_give_ups']}, client crashes "
          f"{figures['client_crashes']}")
    print(f"404 answers (first 10) {figures['not_found']}")
    print(f"slowest requests (s) {figures['slowest_requests_s']}")
    lost = figures["violations_by_check"].get("accepted_lost", 0)
    stuck = figures["violations_by_check"].get("stuck", 0)
    print(f"lost (accepted, absent at the end) {lost}; stuck (never terminal, no message) {stuck}")
    print(f"violations {figures['violations_by_check'] or 'none'}")
    print(f"logs and report in {root}")
    if violations:
        print(text[:20000])
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
