"""The whole pipeline as a new user runs it: register, publish, work, report, ack.

One fresh node (publish_on_register true) and a private RabbitMQ (scripts/
rabbitmq-local.sh on --rabbitmq-port, started and stopped here unless it already runs).
--clients keep-alive connections register --jobs no-op jobs (POST /api/jobs/register,
or POST /api/jobs/batch of --batch) while --workers workers work like DistriQueue's
Python worker: each its own AMQP connection, prefetch 1, consuming job.high,
job.medium and job.low; per message POST /api/jobs/status running, then completed
with a result (keep-alive), then ack; a heartbeat every 10 s.

Then the floor, in the same run: the same workers consume --jobs messages of the same
shape and size published by a raw pika publisher (confirms on, window 1,000, like the
node) and only decode and ack them, no HTTP. The ratio node / floor is how much of the
broker-and-worker pipeline the orchestrator leaves.

--rate R offers the registrations at R jobs/s instead of as fast as the clients go, and
skips the floor (the figure of interest is then the node's CPU per completed job).

  python bench/pipeline.py [--jobs 10000] [--quick] [--batch K] [--rate R]
                           [--set KEY=VALUE] [--py-spy FILE] [--write docs/BENCHMARKS.md]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.queue  # noqa: E402
import pika  # noqa: E402
from pika.adapters.gevent_connection import GeventConnection, _GeventSelectorIOLoop  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import where  # noqa: E402
from common import percentile, start_node  # noqa: E402
from publish import (JOB_QUEUES, PAD, Cpu, Http, QueueWatch, RawPublisher,  # noqa: E402
                     declare_topology, ensure_broker, header_lines, job_message, rabbit_pid,
                     stop_broker)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT_S = 10


def progress(msg):
    print(f"[pipeline] {msg}", file=sys.stderr, flush=True)


class Phase:
    """One measured run: when each job was handed over (register answered, or message
    published) and when it was done (completed answered, or message acked)."""

    def __init__(self, name, n):
        self.name, self.n = name, n
        self.first = None                 # perf_counter of the first register or publish
        self.start_at, self.done_at = {}, {}
        self.all_done = gevent.event.Event()
        self.errors = collections.Counter()   # "<what> <status or error>" -> count
        self.body_bytes = None

    def done(self, job_id, size):
        if job_id not in self.done_at:
            self.done_at[job_id] = time.perf_counter()
            self.body_bytes = size
            if len(self.done_at) >= self.n:
                self.all_done.set()


class Worker:
    """A worker like DistriQueue's Python one. AMQP callbacks run in the gevent hub and
    only hand the message to this worker's greenlet, which does the HTTP and the ack.
    With report False (the floor) it decodes and acks, nothing else."""

    def __init__(self, n, http_port, rabbit_port, ioloop):
        self.id = f"bench-worker-{n}"
        self.http, self.beat_http = Http(http_port), Http(http_port)
        self.inbox = gevent.queue.Queue()
        self.ready = gevent.event.Event()
        self.phase, self.report, self.error, self.ch = None, True, None, None
        self.conn = GeventConnection(
            pika.ConnectionParameters("127.0.0.1", rabbit_port, heartbeat=30),
            on_open_callback=lambda c: c.channel(on_open_callback=self._channel),
            on_open_error_callback=self._failed, on_close_callback=self._failed,
            custom_ioloop=ioloop)

    def _failed(self, _conn, exc):
        self.error = exc
        self.ready.set()

    def _channel(self, ch):
        self.ch = ch

        def consume(_frame):
            for q in JOB_QUEUES:
                ch.basic_consume(q, self._on_message)
            self.ready.set()
        ch.basic_qos(prefetch_count=1, callback=consume)

    def _on_message(self, _ch, method, _props, body):
        self.inbox.put((method.delivery_tag, body))

    def post(self, http, path, body, ok):
        """Retry until the node answers one of ok (the Python worker's rule for success)."""
        while True:
            try:
                status, out = http.post(path, body)
            except OSError as e:
                self.phase.errors[f"{path} {type(e).__name__}"] += 1
            else:
                if status in ok:
                    return out
                self.phase.errors[f"{path} {status}"] += 1
            gevent.sleep(0.1)

    def work(self):
        while True:
            tag, body = self.inbox.get()
            job = json.loads(body)
            if self.report:
                self.post(self.http, "/api/jobs/status", {
                    "jobId": job["id"], "status": "running", "workerId": self.id}, (200, 202))
                self.post(self.http, "/api/jobs/status", {
                    "jobId": job["id"], "status": "completed", "workerId": self.id,
                    "result": {"ok": True, "worker": self.id}}, (200, 202))
            self.ch.basic_ack(tag)
            self.phase.done(job["id"], len(body))

    def beat(self):
        while True:
            self.post(self.beat_http, "/api/workers/heartbeat", {
                "workerId": self.id, "workerType": "python", "capacity": 1,
                "currentLoad": 0}, (200,))
            gevent.sleep(HEARTBEAT_S)

    def close(self):
        if not (self.conn.is_closing or self.conn.is_closed):
            self.conn.close()
        self.http.close()
        self.beat_http.close()


def register(a, port, phase, prefix):
    """--clients connections take the next request's jobs in turn; with --rate, request
    j is not sent before its scheduled time (open loop, catching up when late)."""
    k = a.batch or 1
    chunks = iter(range(0, a.jobs, k))    # shared by the clients
    t0 = time.perf_counter()

    def job(i):
        return {"id": f"{prefix}-{i}", "type": "bench", "payload": {"data": PAD}}

    def client():
        http = Http(port)
        for b in chunks:
            ids = range(b, min(a.jobs, b + k))
            if a.rate:
                delay = t0 + b / a.rate - time.perf_counter()
                if delay > 0:
                    gevent.sleep(delay)
            if a.batch:
                path, body = "/api/jobs/batch", {"jobs": [job(i) for i in ids]}
            else:
                path, body = "/api/jobs/register", job(b)
            if phase.first is None:
                phase.first = time.perf_counter()
            while True:
                try:
                    status, out = http.post(path, body)
                except OSError as e:
                    phase.errors[f"register {type(e).__name__}"] += 1
                else:
                    if status == 202:
                        break
                    phase.errors[f"register {status}"] += 1
                gevent.sleep(0.1)
            now = time.perf_counter()
            if a.batch:
                refused = len(ids) - json.loads(out)["accepted"]
                if refused:
                    phase.errors["register refused in a batch"] += refused
            for i in ids:
                phase.start_at[f"{prefix}-{i}"] = now
        http.close()

    return [gevent.spawn(client) for _ in range(a.clients)]


def measure(phase, cpu, stall_s, clients=(), diag=lambda: ""):
    """Wait for every job of the phase (and the clients: a completed answer can come
    before its register answer is read); the figures of the phase as a dict."""
    seen, since = 0, time.monotonic()
    while not phase.all_done.wait(1):
        if len(phase.done_at) != seen:
            seen, since = len(phase.done_at), time.monotonic()
        elif time.monotonic() - since > stall_s:
            sys.exit(f"{phase.name}: {seen:,} of {phase.n:,} jobs done, none for "
                     f"{stall_s:g} s; {diag()}")
    gevent.joinall(clients)
    c = cpu.stop()
    end = max(phase.done_at.values())
    lat = sorted(phase.done_at[j] - phase.start_at[j] for j in phase.done_at
                 if j in phase.start_at)
    n = phase.n
    r = dict(name=phase.name, jobs=n, elapsed=end - phase.first, rate=n / (end - phase.first),
             p50_ms=percentile(lat, 50) * 1e3, p99_ms=percentile(lat, 99) * 1e3,
             errors=dict(phase.errors), body_bytes=phase.body_bytes, cpu=c)
    r.update({f"{k}_us": c[k] / n * 1e6 for k in ("node", "rabbit", "harness")})
    r.update({f"{k}_pct": c[k] / c["wall"] * 100 for k in ("node", "rabbit", "harness",
                                                            "other")})
    progress(f"{phase.name:<6} {n:,} jobs in {r['elapsed']:.2f} s: {r['rate']:,.0f} jobs/s  "
             f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  CPU µs/job node "
             f"{r['node_us']:.0f} RabbitMQ {r['rabbit_us']:.0f} harness {r['harness_us']:.0f}  "
             f"% of a core: node {r['node_pct']:.0f} RabbitMQ {r['rabbit_pct']:.0f} harness "
             f"{r['harness_pct']:.0f} other {r['other_pct']:.0f}  errors {r['errors'] or 0}")
    return r


def node_counters(metrics_port):
    """What the node did, from its /metrics: commit rounds (one fsync each), log
    entries, HTTP requests answered, messages confirmed (jobs and status events)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as f:
        text = f.read().decode()
    out = collections.Counter()
    for line in text.splitlines():
        key, _, val = line.rpartition(" ")
        if key.startswith("distriqueue_raft_commit_batch_entries_count"):
            out["commit rounds"] += float(val)
        elif key.startswith("distriqueue_raft_commit_batch_entries_sum"):
            out["log entries"] += float(val)
        elif key.startswith("distriqueue_http_requests_total{"):
            out["HTTP requests"] += float(val)
        elif key.startswith("distriqueue_publish_total{") and 'outcome="confirmed"' in key:
            out["job messages" if 'kind="job"' in key else "status events"] += float(val)
    return out


def node_phase(a, node, workers, pids):
    phase = Phase("node", a.jobs)
    for w in workers:
        w.phase, w.report = phase, True
    before = node_counters(a.metrics_port)
    done_before = node.get_json("/api/metrics")["jobs"].get("completed", 0)   # earlier rounds
    cpu = Cpu(*pids)
    clients = register(a, node.port, phase, f"job-{uuid.uuid4().hex[:6]}")
    r = measure(phase, cpu, a.timeout, clients, lambda: "the node says "
                + json.dumps({k: v for k, v in node.get_json("/api/metrics").items()
                              if k in ("jobs", "broker", "dispatch")}))
    after = node_counters(a.metrics_port)
    r["per_job"] = {k: (after[k] - before[k]) / a.jobs for k in after}
    progress("node   per completed job: " + ", ".join(f"{v:.2f} {k}"
                                                       for k, v in r["per_job"].items()))
    m = node.get_json("/api/metrics")
    r["node_jobs"] = m["jobs"]
    if m["jobs"].get("completed", 0) - done_before < a.jobs:
        progress(f"the node counts {m['jobs']} (expected {a.jobs:,} more completed than "
                 f"the {done_before:,} before this round)")
    return r


def floor_phase(a, workers, pids):
    phase = Phase("floor", a.jobs)
    for w in workers:
        w.phase, w.report = phase, False
    pub = RawPublisher(a.rabbitmq_port, 1000)
    prefix = f"flr-{uuid.uuid4().hex[:6]}"    # as long as the node phase's ids

    def make(i):
        job_id = f"{prefix}-{i}"
        body, props = job_message(job_id, {"data": PAD})
        phase.start_at[job_id] = time.perf_counter()
        if phase.first is None:
            phase.first = phase.start_at[job_id]
        return "job.medium", body, props

    cpu = Cpu(*pids)
    try:
        pub.publish_all(a.jobs, make, a.timeout)
        return measure(phase, cpu, a.timeout)
    finally:
        pub.close()


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def table(rows):
    out = ["| run | jobs/s | p50 ms | p99 ms | node CPU µs/job | RabbitMQ CPU µs/job "
           "| harness CPU µs/job | % of a core: node / RabbitMQ / harness / other "
           "| vs floor |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for desc, r in rows:
        vs = f"{r['vs']:.2f}×" if "vs" in r else "—"
        node_us = r["node_us"] if r["name"] == "node" else None
        out.append(f"| {desc} | {r['rate']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                   f"{fmt(node_us, ',.0f')} | {r['rabbit_us']:,.0f} | {r['harness_us']:,.0f} | "
                   f"{r['node_pct']:.0f} / {r['rabbit_pct']:.0f} / {r['harness_pct']:.0f} / "
                   f"{r['other_pct']:.0f} | {vs if r['name'] == 'node' else '—'} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, help="jobs per phase (default 10,000; --quick 1,000)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--clients", type=int, default=4, help="register connections")
    p.add_argument("--batch", type=int, default=0,
                   help="register with POST /api/jobs/batch of this many jobs (0: singles)")
    p.add_argument("--rate", type=float, default=0,
                   help="offer this many jobs/s (0: as fast as the clients go); skips the floor")
    p.add_argument("--rabbitmq-port", type=int, default=5698,
                   help="private broker (scripts/rabbitmq-local.sh) on 127.0.0.1")
    p.add_argument("--timeout", type=float, default=60,
                   help="give up when no job is done for this many seconds")
    p.add_argument("--rounds", type=int, default=1,
                   help="node and floor phases this many times, taking turns")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config, log)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config key of the node (e.g. http_server=pywsgi)")
    p.add_argument("--py-spy", metavar="FILE",
                   help="record the node's first node phase with py-spy (bench/where.py)")
    p.add_argument("--write", metavar="FILE", help="replace the bench:pipeline section of FILE")
    p.add_argument("--section", default="pipeline",
                   help="section name for --write (e.g. pipeline-rate for a --rate run)")
    a = p.parse_args()
    if a.rounds < 1:
        p.error("--rounds: at least 1")
    a.jobs = a.jobs or (1000 if a.quick else 10000)
    for k in [k for k in os.environ if k.startswith("DQ_")]:
        del os.environ[k]               # no environment overrides of the node's config
    started = ensure_broker(a.rabbitmq_port, progress)
    tmp = tempfile.mkdtemp(prefix="dq-pipeline-")
    node = watch = None
    workers, greenlets, results = [], [], []
    finished = False
    try:
        declare_topology(a.rabbitmq_port)
        watch = QueueWatch(a.rabbitmq_port)
        watch.purge()
        node = start_node(ROOT, tmp, rabbitmq_port=a.rabbitmq_port, publish_on_register="true",
                          **dict(x.split("=", 1) for x in a.set))
        pids = (node.proc.pid, rabbit_pid(a.rabbitmq_port))
        with open(os.path.join(tmp, "node.yaml")) as f:     # start_node's config
            a.metrics_port = int(next(ln for ln in f if ln.startswith("metrics_port:"))
                                 .split(":")[1])
        progress(f"node on :{node.port} (pid {node.proc.pid}), RabbitMQ pid {pids[1]}, "
                 f"temp dir {tmp}")
        ioloop = _GeventSelectorIOLoop(gevent.get_hub())
        workers = [Worker(i, node.port, a.rabbitmq_port, ioloop) for i in range(a.workers)]
        for w in workers:
            if not w.ready.wait(30) or w.error:
                sys.exit(f"{w.id} could not consume: {w.error}")
            w.phase = Phase("setup", 0)
        greenlets = [gevent.spawn(w.work) for w in workers]
        greenlets += [gevent.spawn(w.beat) for w in workers]
        mode = (f"{'batches of %d' % a.batch if a.batch else 'single registers'}, "
                f"{a.clients} connections" + (f", {a.rate:g} jobs/s offered" if a.rate else ""))
        progress(f"node phase: {a.jobs:,} jobs, {mode}, {a.workers} workers")
        for rnd in range(a.rounds):   # node and floor take turns: drift hits both
            sfx = f", round {rnd + 1}" if a.rounds > 1 else ""
            spy = where.record(node.proc.pid, a.py_spy) if a.py_spy and rnd == 0 else None
            nr = node_phase(a, node, workers, pids)
            if spy is not None:
                spy.send_signal(signal.SIGINT)       # py-spy writes its file and exits
                spy.wait()
                progress(f"py-spy samples of the node phase in {a.py_spy} "
                         f"(python bench/where.py --raw {a.py_spy} --per-unit-us "
                         f"{nr['node_us']:.0f})")
            results.append((f"node: register → running → completed → ack ({mode}){sfx}", nr))
            if not a.rate:
                progress(f"floor phase: {a.jobs:,} messages from raw pika, {a.workers} "
                         f"workers, no HTTP")
                fr = floor_phase(a, workers, pids)
                nr["vs"] = nr["rate"] / fr["rate"]
                results.append((f"floor: raw pika publisher, workers decode and ack only{sfx}",
                                fr))
        finished = True
    finally:
        gevent.killall(greenlets)
        for w in workers:
            w.close()
        if watch is not None:
            watch.purge()
            watch.close()
        if node is not None:
            node.stop()
        if started:
            stop_broker(a.rabbitmq_port, progress)
        if a.keep or not finished:       # a failed run keeps the node's log
            progress(f"config and log kept in {tmp}")
        else:
            subprocess.run(["rm", "-rf", tmp])
    nodes = [r for _d, r in results if r["name"] == "node"]
    nr = nodes[-1]
    floor = next((r for _d, r in results if r["name"] == "floor"), None)
    errors = {k: v for _d, r in results for k, v in r["errors"].items()}
    lines = header_lines("Pipeline: register → RabbitMQ → worker reports, against the "
                         "broker alone") + [
        f"- {a.jobs:,} no-op jobs per phase (50-byte payload, job.medium), {a.workers} "
        f"workers (one AMQP connection each, prefetch 1, POST running then completed then "
        f"ack, heartbeat every {HEARTBEAT_S} s), node and RabbitMQ (private, "
        f"{a.rabbitmq_port}) and this harness unpinned on one machine; message body "
        f"{nr['body_bytes']} bytes (node)" + (f", {floor['body_bytes']} bytes (floor)"
                                              if floor else ""),
        "- jobs/s: first register (or publish) to the last completed answer (or ack); "
        "latency: register answer to completed answer (floor: publish to ack); CPU: "
        "each process's CPU time over the phase per job; other: busy CPU of none of them",
        f"- node's job counts at the end: {nr['node_jobs']}; errors and retried "
        f"requests: {errors or 'none'}",
        "- the node's work per completed job (its /metrics): " + ", ".join(
            f"{v:.2f} {k}" for k, v in nr["per_job"].items())]
    if floor:
        ratios = [r["vs"] for r in nodes]
        lines.append(f"- **node / floor: {statistics.median(ratios):.2f}×**" + (
            f" (median of {len(ratios)} rounds, {min(ratios):.2f}-{max(ratios):.2f}×)"
            if len(ratios) > 1 else ""))
    text = "\n".join(lines + ["", table(results)]) + "\n"
    print(text)
    if a.write:
        common.replace_section(a.write, a.section, text)
        progress(f"wrote {a.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
