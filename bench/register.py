"""Register throughput and latency of a dqorch node, side by side with the floors.

The floor (bench/floor.py) is a bare gevent.pywsgi + bottle handler: the ceiling for any
handler on the stack the node had until issue 30, kept as the reference it was; the
new floor the same handler on the node's own front end (floor.py --server httptools,
the ceiling now); the durable floor the new floor plus a write and an fsync a request,
the ceiling for any handler that makes a job durable before it answers. Each run
starts the floors and one fresh node per variant (new data_dir and config, free
ports), so every ratio compares numbers from the same run.
Usage: python bench/register.py [--duration 10] [--preload 100000] [--write docs/BENCHMARKS.md]
"""
import argparse
import datetime
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CpuMeter, Target, free_ports, paced, run_wrk  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONNS = (1, 10, 50)
TESTS = [f"c{c}" for c in CONNS] + ["rate"]       # wrk with N connections; paced


def progress(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    p.add_argument("--preload", type=int, default=100000, help="jobs registered before the "
                   "second 50-connection run (node only; 0 to skip)")
    p.add_argument("--variants", choices=("both", "true", "false"), default="both",
                   help="publish_on_register values to run")
    p.add_argument("--node-cmd", default="{python} dqorch.py -c {config}",
                   help="node command, run from the repo root; placeholders {python} "
                   "{config} {http_port} {data_dir}")
    p.add_argument("--rabbitmq-host", default="127.0.0.1")
    p.add_argument("--rabbitmq-port", type=int, default=5672)
    p.add_argument("--log-level", default="info", help="node log_level")
    p.add_argument("--ready-timeout", type=float, default=60)
    p.add_argument("--warmup", type=float, default=1, help="seconds of unreported load first")
    p.add_argument("--rate-conns", type=int, default=10, help="paced client connections")
    p.add_argument("--rate-interval-ms", type=float, default=10,
                   help="paced client: one request per connection every N ms")
    p.add_argument("--pin", choices=("split", "none"), default="split",
                   help="split: load generators on the last CPU, servers on the others")
    p.add_argument("--drain-timeout", type=float, default=60,
                   help="seconds to wait for the node's publish backlog after the load")
    p.add_argument("--purge", action="store_true",
                   help="purge job.high/medium/low on the broker before and after the run")
    p.add_argument("--tests", default=",".join(TESTS),
                   help="comma list of c1, c10, c50 (wrk, N connections) and rate (paced), "
                   "in order; --tests rate measures the paced load on fresh servers and a "
                   "broker that holds nothing from earlier phases")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the tests this many times, taking turns; the table shows "
                   "the median and (min-max)")
    p.add_argument("--section", default="register", help="the bench:<section> to replace")
    p.add_argument("--write", metavar="FILE", help="replace the bench:<section> section of FILE")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args()
    if a.rounds < 1:
        p.error("--rounds: at least 1")
    a.tests = a.tests.split(",")
    bad = [t for t in a.tests if t not in TESTS]
    if bad:
        p.error(f"--tests: unknown {','.join(bad)}")
    return a


def node_config(path, a, ports, data_dir, publish):
    http_port, metrics_port, raft_port = ports
    with open(path, "w") as f:
        f.write(f"node_name: bench@127.0.0.1\n"
                f"data_dir: {data_dir}\n"
                f"http_port: {http_port}\n"
                f"metrics_port: {metrics_port}\n"
                f"raft_port: {raft_port}\n"
                f"rabbitmq_host: {a.rabbitmq_host}\n"
                f"rabbitmq_port: {a.rabbitmq_port}\n"
                f"publish_on_register: {'true' if publish else 'false'}\n"
                f"log_level: {a.log_level}\n")


def one(t, test, a, run_id, client_cpus):
    """One measurement of one target; test is c<N> (wrk, N connections) or rate (paced)."""
    meter = CpuMeter(t.proc.pid)
    if test == "rate":
        r = paced(t.port, a.rate_conns, a.rate_interval_ms / 1e3, a.duration, f"r{run_id}")
        r["rps"] = r["rate"]
    else:
        conns = int(test[1:].split("_")[0])
        r = run_wrk(t.port, conns, a.duration, f"{test}{run_id}", cpus=client_cpus)
    r.update(meter.stop(r["requests"]))
    progress(f"{t.name:<22} {test:<10} {r['rps']:8,.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
             f"p99 {r['p99_ms']:7.2f} ms  max {r['max_ms']:7.1f} ms  non-2xx {r['non2xx']}  "
             f"errors {r['errors']}  other CPU {r['other_pct']:.0f}%")
    return r


def measure_all(targets, a, run_id, client_cpus):
    """Every test runs on every target in turn (floor, then nodes), so that the ratios
    compare measurements taken seconds apart. Nodes drain their publish backlog first."""
    res = {t.name: {} for t in targets}
    nodes = [t for t in targets if t.name.startswith("node")]

    def settle():
        for n in nodes:
            drain(n, a.drain_timeout, quiet=True)

    for t in targets:
        if a.warmup:
            run_wrk(t.port, 10, a.warmup, f"w{run_id}", cpus=client_cpus)
    for rnd in range(a.rounds):       # rounds take turns too: drift hits every target
        for test in a.tests:
            for t in targets:
                settle()
                res[t.name].setdefault(test, []).append(
                    one(t, test, a, f"{run_id}r{rnd}", client_cpus))
    if a.preload and "c50" in a.tests:      # its second 50-connection run compares with the first
        for t in nodes:
            settle()
            r = run_wrk(t.port, 50, 0, f"p{run_id}", limit=a.preload, cpus=client_cpus)
            res[t.name]["preload"] = r
            progress(f"{t.name:<22} preload    {r['requests']:,} jobs in {r['elapsed_s']:.1f} s "
                     f"({r['requests'] / r['elapsed_s']:,.0f} req/s)  non-2xx {r['non2xx']}")
        for t in targets:      # the floor again, as the reference measured at the same time
            settle()
            res[t.name]["c50_after"] = [one(t, "c50_after", a, run_id, client_cpus)]
            if t in nodes:
                res[t.name]["backlog"] = drain(t, a.drain_timeout)
    return res


def drain(t, timeout_s, quiet=False):
    """Jobs still pending (registered, not yet confirmed by RabbitMQ) when the load
    stops, and how long the node takes to publish them with no HTTP load."""
    start = time.monotonic()
    try:
        pending0 = pending = t.get_json("/api/metrics")["jobs"].get("pending", 0)
    except (OSError, ValueError, KeyError) as e:
        if not quiet:
            progress(f"{t.name:<22} backlog    unknown: GET /api/metrics failed: {e}")
        return None
    while pending and time.monotonic() - start < timeout_s:
        time.sleep(0.2)
        pending = t.get_json("/api/metrics")["jobs"].get("pending", 0)
    r = dict(pending=pending0, left=pending, elapsed_s=time.monotonic() - start)
    if not quiet or pending0:
        progress(f"{t.name:<22} backlog    {pending0:,} pending at end of load, "
             f"{pending:,} left after {r['elapsed_s']:.1f} s")
    return r


def broker_queues(a):
    """Messages in the job queues after the run (bench jobs left behind); purge with --purge."""
    try:
        depth = common.job_queues(a.rabbitmq_port, a.purge, a.rabbitmq_host)
        progress(f"broker queues after the run: {depth}" + (" (purged)" if a.purge else
                 "; bench jobs stay there (use --purge or a private broker)"))
    except Exception as e:  # informative only
        progress(f"could not read the broker's queues: {e!r}")


def fmt_ratio(x):
    return f"{x:.2f}×" if x == x else "—"


def spread(vals, fmt, unit=""):
    """One value, or the median and (min-max) of the rounds."""
    if len(vals) == 1:
        return fmt(vals[0]) + unit
    return f"{fmt(statistics.median(vals))}{unit} ({fmt(min(vals))}-{fmt(max(vals))})"


def ratios(vals):
    return spread(vals, lambda v: f"{v:.2f}", "×")


def table(results, preload, rate_desc):
    """Markdown table; ratios are against the floor measured in the same round (a
    node's also against the new floor and the durable floor)."""
    rows = ["| test | target | req/s | p50 ms | p99 ms | max ms | non-2xx / errors "
            "| target CPU µs/req | other CPU % | vs floor |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    tests = [(f"c{c}", f"{c} conn{'s' if c > 1 else ''}, closed loop") for c in CONNS]
    tests += [("rate", rate_desc), ("preload", f"preload {preload:,} jobs, 50 conns"),
              ("c50_after", "50 conns, after the preload (floor measured again)"),
              ("backlog", "publish backlog drain, no HTTP load")]
    num, ms = (lambda v: f"{v:,.0f}"), (lambda v: f"{v:.2f}")
    for test, desc in tests:
        for name, res in results.items():
            rs = res.get(test)
            if rs is None:
                continue
            if test == "backlog":
                r = rs
                # below ~1 s the 0.2 s polling makes a rate meaningless
                rate = (f"{(r['pending'] - r['left']) / r['elapsed_s']:,.0f}"
                        if r["elapsed_s"] >= 1 else "—")
                rows.append(f"| {desc} | {name} | {rate} | | | | | "
                            f"| | {r['pending']:,} pending at end of load; "
                            + (f"published in {r['elapsed_s']:.1f} s |" if not r["left"] else
                               f"{r['left']:,} still pending after {r['elapsed_s']:.0f} s |"))
                continue
            if test == "preload":
                r = rs
                rows.append(f"| {desc} | {name} | {r['requests'] / r['elapsed_s']:,.0f} | | | | "
                            f"{r['non2xx']} / – | | | took {r['elapsed_s']:.1f} s |")
                continue
            def col(k):
                return [r[k] for r in rs]

            def per_round(k, ref="floor"):     # each round against ref's same round
                return [r[k] / f[k] for r, f in zip(rs, results[ref][test])]

            if name == "floor":
                vs = "—"
            elif test == "rate":
                vs = (f"p50 {ratios(per_round('p50_ms'))}, "
                      f"p99 {ratios(per_round('p99_ms'))}")
                if name.startswith("node") and "durable floor" in results:
                    vs += f"; the durable floor's p99 {ratios(per_round('p99_ms', 'durable floor'))}"
            elif test == "c50_after":
                own = statistics.median(r["rps"] for r in res["c50"])
                vs = (f"{ratios(per_round('rps'))} req/s "
                      f"({fmt_ratio(rs[0]['rps'] / own)} of its own 50 conns before)")
            else:
                vs = (f"{ratios(per_round('rps'))} req/s, "
                      f"{ratios(per_round('cpu_us'))} CPU/req")
                for ref in ("new floor", "durable floor"):
                    if name.startswith("node") and ref in results:
                        vs += f"; {ref} {ratios(per_round('rps', ref))} req/s"
            rows.append(f"| {desc} | {name} | {spread(col('rps'), num)} | "
                        f"{spread(col('p50_ms'), ms)} | {spread(col('p99_ms'), ms)} | "
                        f"{max(col('max_ms')):.1f} | {sum(col('non2xx'))} / "
                        f"{sum(col('errors'))} | {spread(col('cpu_us'), num)} | "
                        f"{statistics.median(col('other_pct')):.0f} | {vs} |")
    return "\n".join(rows)


def busy_note(results):
    """Warn when something else used the CPU during the floor's runs (no broker there)."""
    worst = max(r["other_pct"] for rs in results["floor"].values() for r in rs)
    if worst < 30:
        return ""
    msg = (f"**Warning: the machine was busy: up to {worst:.0f}% of a core used by other "
           f"programs during the floor's runs. req/s and latencies are disturbed (CPU µs/req "
           f"much less); rerun on a quiet machine before quoting numbers.**\n\n")
    progress(msg.strip("*\n"))
    return msg


def main():
    a = parse_args()
    ncpu = os.cpu_count()
    client_cpus = server_cpus = None
    if a.pin == "split" and ncpu >= 2:
        client_cpus, server_cpus = {ncpu - 1}, set(range(ncpu - 1))
        os.sched_setaffinity(0, client_cpus)          # the paced client runs in this process
    tmp = tempfile.mkdtemp(prefix="dqorch-bench-")
    run_id = uuid.uuid4().hex[:6]
    variants = {"both": (True, False), "true": (True,), "false": (False,)}[a.variants]
    rate_desc = (f"{a.rate_conns} conns × 1 req / {a.rate_interval_ms:g} ms "
                 f"(~{a.rate_conns * 1000 / a.rate_interval_ms:,.0f} req/s offered)")
    results, running = {}, []
    if a.purge and True in variants:     # a deep queue slows RabbitMQ down (paced_ab.py)
        common.job_queues(a.rabbitmq_port, True, a.rabbitmq_host)
    try:
        (floor_port,) = free_ports(1)
        floor = Target("floor", [sys.executable, os.path.join(ROOT, "bench", "floor.py"),
                                 "--port", str(floor_port)], floor_port,
                       os.path.join(tmp, "floor.log"), cpus=server_cpus)
        running.append(floor)
        # The durable floor: the floor plus a write and an fsync a request (floor.py
        # --fsync), what no handler that makes each job durable before answering beats.
        (dur_port,) = free_ports(1)
        running.append(Target("durable floor", [
            sys.executable, os.path.join(ROOT, "bench", "floor.py"), "--port", str(dur_port),
            "--server", "httptools", "--fsync", os.path.join(tmp, "durable.bin")], dur_port,
            os.path.join(tmp, "durable.log"), cpus=server_cpus))
        # The new floor: the same handler on the node's front end (issue 30).
        (new_port,) = free_ports(1)
        running.append(Target("new floor", [
            sys.executable, os.path.join(ROOT, "bench", "floor.py"), "--port", str(new_port),
            "--server", "httptools"], new_port, os.path.join(tmp, "new.log"),
            cpus=server_cpus))
        targets = [floor]
        for publish in variants:
            ports = free_ports(2, 1)
            name = f"node publish={'true' if publish else 'false'}"
            d = os.path.join(tmp, f"node-{publish}")
            os.makedirs(os.path.join(d, "data"))
            cfg = os.path.join(d, "config.yaml")
            node_config(cfg, a, ports, os.path.join(d, "data"), publish)
            argv = shlex.split(a.node_cmd.format(python=sys.executable, config=cfg,
                                                 http_port=ports[0], data_dir=os.path.join(d, "data")))
            targets.append((name, argv, ports[0], os.path.join(d, "node.log")))
        for spec in targets[1:]:
            running.append(Target(*spec, cwd=ROOT, cpus=server_cpus))
        targets = running
        for t in targets:
            progress(f"{t.name:<22} starting: {shlex.join(t.argv)}")
        for t in targets:
            if not t.wait_ready(a.ready_timeout):
                state = (f"exited with code {t.proc.returncode}" if t.proc.poll() is not None
                         else f"not ready after {a.ready_timeout:g} s")
                print(f"error: {t.name} {state} (GET /api/health never answered 200); "
                      f"last lines of {t.log_path}:\n{t.log_tail()}", file=sys.stderr)
                a.keep = True
                return 1
        results = measure_all(targets, a, run_id, client_cpus)
    finally:
        for t in running:
            t.stop()
        if True in variants and results:
            broker_queues(a)
        if a.keep:
            progress(f"configs and logs kept in {tmp}")
        else:
            subprocess.run(["rm", "-rf", tmp])

    only = "" if a.tests == TESTS else f" ({', '.join(a.tests)})"
    text = (f"### Register: node vs floor{only}\n\n"
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
            f"- machine: {common.machine_line(ROOT)}\n"
            f"- command: `{shlex.join(['python'] + sys.argv)}`\n"
            f"- {a.duration:g} s per measurement, {a.rounds} round{'s' if a.rounds > 1 else ''}"
            f"{' (median and min-max)' if a.rounds > 1 else ''}; wrk 1 thread, keep-alive; pinning: {a.pin}; "
            f"latency of the paced row counts from the scheduled send time\n"
            f"- target CPU µs/req: the server process's CPU time per response. other CPU %: "
            f"busy CPU used by neither the server nor the load generator (RabbitMQ, kernel, "
            f"anything else running), in % of one core; when it is high for the floor, "
            f"the machine was not quiet\n\n"
            + busy_note(results) + table(results, a.preload, rate_desc))
    print(text)
    if a.write:
        common.replace_section(a.write, a.section, text)
        progress(f"wrote {a.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
