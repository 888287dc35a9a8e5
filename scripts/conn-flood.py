#!/usr/bin/env python3
"""Connection flood against one real node (tests/integration/test_conn_flood.py's
flood, bigger): --idle silent connections and --slow one-byte-a-second clients while a
good client registers and reads; first the same probes with no flood, for comparison.

    .venv/bin/python scripts/conn-flood.py --idle 5000 --slow 2000 --hold 60

Needs RabbitMQ on 127.0.0.1:5672 (scripts/rabbitmq-local.sh start); publishes nothing.
The node runs with the default timeouts unless --timeout sets both
http_idle_timeout_s and http_request_timeout_s. Exit 0 when no probe failed, the node
closed every flooding connection and still serves.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.integration.conftest import SHARED_PORT, NodeProc  # noqa: E402
from tests.integration.flood import flood  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--slow", type=int, default=2000)
    ap.add_argument("--hold", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=None)
    args = ap.parse_args()
    need = args.idle + args.slow + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))  # the node inherits it
    extra = {} if args.timeout is None else dict(http_idle_timeout_s=args.timeout,
                                                 http_request_timeout_s=args.timeout)
    node = NodeProc(Path(tempfile.mkdtemp(prefix="dq-flood-")), SHARED_PORT,
                    publish_on_register=False, **extra).start()
    try:
        base = flood(node, 0, 0, min(args.hold, 20))
        f = flood(node, args.idle, args.slow, args.hold)
    finally:
        node.stop()
    print("\n==== summary")
    print(f"no flood: probes {base['probes']}, p50 {base['probe_ms_p50']} ms, p99 "
          f"{base['probe_ms_p99']} ms, max {base['probe_ms_max']} ms, rss {base['rss_before']} KiB")
    print(f"flood of {f['opened']} ({args.idle} idle, {args.slow} slow): probes {f['probes']} "
          f"failed {f['probes_failed']}, p50 {f['probe_ms_p50']} ms, p99 {f['probe_ms_p99']} ms, "
          f"max {f['probe_ms_max']} ms")
    print(f"rss KiB before {f['rss_before']}, peak {f['rss_peak']} "
          f"(+{(f['rss_peak'] - f['rss_before']) / max(1, f['opened']):.1f} KiB per connection), "
          f"after {f['rss_after']}")
    print(f"closed by the node {f['closed_by_node']} of {f['opened']}, the last after "
          f"{f['all_closed_after_s']} s; answered {f['answered']}; still serving "
          f"{f['still_serving']}; connect errors {len(f.get('connect_errors', []))}")
    ok = (f["probes_failed"] == 0 and f["closed_by_node"] == f["opened"]
          and f["still_serving"])
    print("clean" if ok else "NOT CLEAN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
