"""Publishing at the broker's speed: the node's dispatcher against a raw pika publisher.

One fresh node (publish_on_register true, publish_window --window) and a private
RabbitMQ (scripts/rabbitmq-local.sh on --rabbitmq-port, started and stopped here unless
it already runs). Three phases on the same broker, the queues purged before each:

1. raw: a stock pika GeventConnection driven the way dqorch/broker.py drives it
   (callbacks in the hub, publishes from a greenlet, confirms on, at most --window
   unconfirmed), --jobs messages shaped like the node's job messages (same body keys
   and size, same properties and headers, mandatory, jobs.exchange -> job.medium);
   msgs/s from the first publish to the last confirm.
2. node: --jobs jobs registered through POST /api/jobs/batch, 1,000 a request on one
   keep-alive connection; msgs/s from the first batch answer until the broker holds
   all of them (passive queue_declare polled every 10 ms), and over the tail after
   the last batch answer (publishing with no HTTP load left).
3. raw again, to see drift; the ratio is node / mean of the two raw runs.

  python bench/publish.py [--jobs 50000] [--quick] [--write docs/BENCHMARKS.md]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import pika  # noqa: E402
from pika.adapters.gevent_connection import GeventConnection, _GeventSelectorIOLoop  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import cpu_seconds, ensure_broker, start_node, stop_broker  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dqorch.broker import release_ioloop  # noqa: E402
from dqorch.jobs import QUEUES as JOB_QUEUES  # noqa: E402

JOBS_EXCHANGE = "jobs.exchange"
PAD = "x" * 50
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # as dispatch.py


def progress(msg):
    print(f"[publish] {msg}", file=sys.stderr, flush=True)


def rabbit_pid(port):
    """The beam.smp pid of the private broker (rabbitmq-local.sh's pid file), or None."""
    d = os.environ.get("RABBIT_DIR") or os.path.join(os.environ.get("TMPDIR") or "/tmp",
                                                     f"dqorch-rabbit-{port}")
    try:
        pid = int(open(os.path.join(d, "rabbit.pid")).read().strip())
        cpu_seconds(pid)
        return pid
    except (OSError, ValueError):
        return None


def declare_topology(port):
    """The job queues and exchange exactly as the node declares them (CONTRACT §3)."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.exchange_declare(JOBS_EXCHANGE, exchange_type="direct", durable=True)
    for q, prio in JOB_QUEUES.items():
        ch.queue_declare(q, durable=True, arguments={"x-max-priority": prio})
        ch.queue_bind(q, JOBS_EXCHANGE, routing_key=q)
    conn.close()


class QueueWatch:
    """Queue depths read with passive queue_declare on one blocking connection."""

    def __init__(self, port):
        self.conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        self.ch = self.conn.channel()

    def depth(self):
        return sum(self.ch.queue_declare(q, passive=True).method.message_count
                   for q in JOB_QUEUES)

    def purge(self):
        for q in JOB_QUEUES:
            self.ch.queue_purge(q)

    def peek_body(self):
        """Size of one message's body in the job queues (left there), or None."""
        for q in JOB_QUEUES:
            method, _props, body = self.ch.basic_get(q, auto_ack=False)
            if method is not None:
                self.ch.basic_nack(method.delivery_tag, requeue=True)
                return len(body)
        return None

    def close(self):
        self.conn.close()


# --- a raw publisher ---------------------------------------------------------------


def job_message(job_id, payload, term=1):
    """Body and properties of a job message as dispatch.py builds them for a fresh job
    of priority 5 (the 15 keys of jobs.message_body, compact JSON)."""
    now = time.time()
    body = {"id": job_id, "type": "bench", "priority": 5, "status": "pending",
            "worker_id": None, "payload": payload, "result": None, "error_message": None,
            "retry_count": 0, "max_retries": 3, "execution_timeout": 300,
            "created_at": int(now * 1000), "started_at": None, "completed_at": None,
            "metadata": {}}
    props = pika.BasicProperties(delivery_mode=2, priority=5,
                                 content_type="application/json", message_id=job_id,
                                 timestamp=int(now), app_id="dqorch",
                                 headers={"x-dq-attempt": 0, "x-dq-term": term})
    return _dumps(body).encode(), props


class RawPublisher:
    """Stock pika GeventConnection with publisher confirms, used like dqorch/broker.py
    uses it: callbacks run in the hub and only count, publishes come from a greenlet
    that fills the window of unconfirmed messages and then waits for confirms."""

    def __init__(self, port, window):
        self.window = window
        self.ioloop = _GeventSelectorIOLoop(gevent.get_hub())
        self.ready, self.slot, self.closed = (gevent.event.Event() for _ in range(3))
        self.out, self.done = collections.deque(), set()    # unsettled tags, in order
        self.tag = self.confirmed = self.nacked = self.returned = 0
        self.last_confirm_at = None
        self.error = None
        self.ch = None
        self.conn = GeventConnection(
            pika.ConnectionParameters("127.0.0.1", port, heartbeat=30),
            on_open_callback=lambda c: c.channel(on_open_callback=self._channel),
            on_open_error_callback=self._failed, on_close_callback=self._closed,
            custom_ioloop=self.ioloop)
        if not self.ready.wait(30) or self.error:
            raise RuntimeError(f"raw publisher could not connect: {self.error}")

    def _channel(self, ch):
        self.ch = ch
        ch.add_on_return_callback(self._on_return)
        ch.confirm_delivery(self._on_confirm, callback=lambda _f: self.ready.set())

    def _failed(self, _conn, exc):
        self.error = exc
        self.ready.set()
        self.closed.set()

    def _closed(self, _conn, exc):
        self.error = self.error or exc
        self.slot.set()
        self.closed.set()

    def _on_return(self, _ch, _method, _props, _body):
        self.returned += 1

    def _on_confirm(self, frame):
        m, n = frame.method, 0
        if m.multiple:
            while self.out and self.out[0] <= m.delivery_tag:
                t = self.out.popleft()
                if t in self.done:
                    self.done.discard(t)
                else:
                    n += 1
        elif m.delivery_tag not in self.done:
            self.done.add(m.delivery_tag)
            n = 1
            while self.out and self.out[0] in self.done:
                self.done.discard(self.out.popleft())
        if not isinstance(m, pika.spec.Basic.Ack):
            self.nacked += n
        self.confirmed += n
        self.last_confirm_at = time.perf_counter()
        self.slot.set()

    def in_flight(self):
        return len(self.out) - len(self.done)

    def publish_all(self, n, make, timeout_s=600):
        """Publish make(i) -> (routing_key, body, props) for i < n, at most window
        unconfirmed; returns (first publish, last confirm) perf_counter times."""
        goal = self.confirmed + n
        t0 = time.perf_counter()
        for i in range(n):
            while self.in_flight() >= self.window:
                self.slot.clear()         # no switch between the check and the wait
                if not self.slot.wait(timeout_s) or self.error:
                    raise RuntimeError(f"raw publisher: no confirm ({self.error})")
            rk, body, props = make(i)
            self.ch.basic_publish(JOBS_EXCHANGE, rk, body, props, mandatory=True)
            self.tag += 1
            self.out.append(self.tag)
        while self.confirmed < goal:
            self.slot.clear()
            if not self.slot.wait(timeout_s) or self.error:
                raise RuntimeError(f"raw publisher: confirms missing ({self.error})")
        return t0, self.last_confirm_at

    def close(self):
        if not (self.conn.is_closing or self.conn.is_closed):
            self.conn.close()
        self.closed.wait(10)
        release_ioloop(self.ioloop)      # the pipe and watcher pika's ioloop made


# --- CPU and HTTP helpers shared with pipeline.py ----------------------------------


def harness_seconds():
    """CPU seconds of this process (the harness: clients, workers, raw publisher)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Cpu:
    """CPU seconds over one phase: the node's, RabbitMQ's, this harness's, and the rest
    of the machine's busy time (other programs, kernel work not charged to a process)."""

    def __init__(self, node_pid, rabbit):
        self.pids = dict(node=node_pid, rabbit=rabbit)
        self.t0 = self._now()

    def _now(self):
        d = {k: cpu_seconds(p) if p else 0.0 for k, p in self.pids.items()}
        d.update(wall=time.monotonic(), busy=common._busy_seconds(), harness=harness_seconds())
        return d

    def stop(self):
        t1 = self._now()
        d = {k: t1[k] - self.t0[k] for k in t1}
        d["other"] = max(0.0, d["busy"] - d["node"] - d["rabbit"] - d["harness"])
        return d


class Http:
    """One keep-alive HTTP/1.1 connection on a gevent socket with TCP_NODELAY: a client
    far cheaper than http.client, so the harness costs little next to the node."""

    def __init__(self, port):
        self.port, self.sock, self.buf = port, None, b""

    def post(self, path, obj):
        """(status, body bytes); raises OSError (and drops the connection) on failure."""
        body = _dumps(obj).encode()
        req = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body))) + body
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        try:
            self.sock.sendall(req)
            return self._response()
        except OSError:
            self.close()
            raise

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the node")
        return chunk

    def _response(self):
        buf = self.buf
        while b"\r\n\r\n" not in buf:
            buf += self._recv()
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status, length = int(lines[0].split()[1]), 0
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        return status, rest[:length]

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""


def header_lines(title):
    """The date / machine / command lines every bench section starts with."""
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "dqorch", "dqorch.py"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return [f"### {title}", "",
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
            f"- machine: {common.machine_line(ROOT)}"
            + (" (plus uncommitted changes to dqorch/)" if dirty else ""),
            f"- command: `{shlex.join(['python'] + sys.argv)}`"]


# --- the phases --------------------------------------------------------------------


def raw_phase(a, watch, cpu_pids, label):
    watch.purge()
    pub = RawPublisher(a.rabbitmq_port, a.window)
    prefix = f"raw-{uuid.uuid4().hex[:6]}"   # as long as the node phase's ids

    def make(i):
        body, props = job_message(f"{prefix}-{i}", {"data": PAD})
        return "job.medium", body, props

    try:
        cpu = Cpu(*cpu_pids)
        t0, t1 = pub.publish_all(a.jobs, make)
        c = cpu.stop()
        depth, size = watch.depth(), watch.peek_body()
    finally:
        pub.close()
    r = dict(name=label, msgs=a.jobs, elapsed=t1 - t0, rate=a.jobs / (t1 - t0), cpu=c,
             depth=depth, body_bytes=size, pub_cpu_us=c["harness"] / a.jobs * 1e6,
             nacked=pub.nacked, returned=pub.returned)
    progress(f"{label:<12} {a.jobs:,} msgs in {r['elapsed']:.2f} s: {r['rate']:,.0f} msgs/s  "
             f"publisher CPU {r['pub_cpu_us']:.0f} µs/msg  RabbitMQ CPU "
             f"{c['rabbit'] / a.jobs * 1e6:.0f} µs/msg  nacked {pub.nacked}  returned "
             f"{pub.returned}  queue depth {depth:,}")
    return r


def node_phase(a, node, watch, cpu_pids):
    watch.purge()
    http = Http(node.port)
    prefix = f"node{uuid.uuid4().hex[:6]}"
    marks = {}                            # what the poller saw: times and depths
    done = gevent.event.Event()

    def poll():
        while True:
            d = watch.depth()
            now = time.perf_counter()
            if "reg_end" in marks and "depth_at_reg_end" not in marks:
                marks["depth_at_reg_end"] = d
            if d >= a.jobs:
                marks["full"] = now
                done.set()
                return
            gevent.sleep(0.01)

    cpu = Cpu(*cpu_pids)
    poller = None
    accepted = 0
    for b in range(0, a.jobs, a.batch):
        jobs = [{"id": f"{prefix}-{i}", "type": "bench", "payload": {"data": PAD}}
                for i in range(b, min(a.jobs, b + a.batch))]
        status, body = http.post("/api/jobs/batch", {"jobs": jobs})
        if status != 202:
            raise RuntimeError(f"POST /api/jobs/batch -> {status} {body[:200]!r}")
        accepted += json.loads(body)["accepted"]
        if poller is None:
            marks["first"] = time.perf_counter()
            poller = gevent.spawn(poll)
    marks["reg_end"] = time.perf_counter()
    http.close()
    if accepted != a.jobs:
        raise RuntimeError(f"the node accepted {accepted:,} of {a.jobs:,} jobs")
    if not done.wait(a.timeout):
        poller.kill()
        m = node.get_json("/api/metrics")
        raise RuntimeError(f"the broker holds {watch.depth():,} of {a.jobs:,} messages "
                           f"after {a.timeout:g} s; the node says jobs {m['jobs']}, "
                           f"broker {m['broker']}, dispatch {m['dispatch']}")
    c = cpu.stop()
    t0, t1, tr = marks["first"], marks["full"], marks["reg_end"]
    tail_msgs = a.jobs - marks.get("depth_at_reg_end", a.jobs)
    r = dict(name="node", msgs=a.jobs, elapsed=t1 - t0, rate=a.jobs / (t1 - t0), cpu=c,
             reg_s=tr - t0, tail_s=t1 - tr, tail_msgs=tail_msgs,
             tail_rate=tail_msgs / (t1 - tr) if t1 - tr >= 0.2 else None,
             body_bytes=watch.peek_body(), node_cpu_us=c["node"] / a.jobs * 1e6)
    m = node.get_json("/api/metrics")
    r["broker_stats"] = m.get("broker", {}).get("stats", {})
    progress(f"node         {a.jobs:,} msgs in {r['elapsed']:.2f} s: {r['rate']:,.0f} msgs/s  "
             f"(last batch answered after {r['reg_s']:.2f} s; {tail_msgs:,} msgs in the "
             f"{r['tail_s']:.2f} s after it)  node CPU {r['node_cpu_us']:.0f} µs/job  "
             f"RabbitMQ CPU {c['rabbit'] / a.jobs * 1e6:.0f} µs/msg  broker stats "
             f"{r['broker_stats']}")
    return r


def table(a, raws, n):
    base = sum(r["rate"] for r in raws) / len(raws)
    rows = ["| publisher | msgs/s | time s | publisher CPU µs/msg | RabbitMQ CPU µs/msg "
            "| other CPU % | vs raw |", "|---|--:|--:|--:|--:|--:|--:|"]

    def row(desc, rate, elapsed, pub_us, c, msgs):
        other = c["other"] / c["wall"] * 100
        rows.append(f"| {desc} | {rate:,.0f} | {elapsed:.2f} | {pub_us:,.0f} | "
                    f"{c['rabbit'] / msgs * 1e6:.0f} | {other:.0f} | {rate / base:.2f}× |")

    row("raw pika, before", raws[0]["rate"], raws[0]["elapsed"], raws[0]["pub_cpu_us"],
        raws[0]["cpu"], a.jobs)
    row(f"node: first batch answer → broker holds all (last batch answered at "
        f"{n['reg_s']:.2f} s)", n["rate"], n["elapsed"], n["node_cpu_us"], n["cpu"], a.jobs)
    if n["tail_rate"] is not None:
        rows.append(f"| node: after the last batch answer, no HTTP load "
                    f"({n['tail_msgs']:,} msgs) | {n['tail_rate']:,.0f} | {n['tail_s']:.2f} "
                    f"| | | | {n['tail_rate'] / base:.2f}× |")
    row("raw pika, after", raws[1]["rate"], raws[1]["elapsed"], raws[1]["pub_cpu_us"],
        raws[1]["cpu"], a.jobs)
    return "\n".join(rows), n["rate"] / base


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, help="messages per phase (default 50,000; --quick 5,000)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--window", type=int, default=1000,
                   help="unconfirmed messages in flight: the node's publish_window and the "
                   "raw publisher's")
    p.add_argument("--batch", type=int, default=1000, help="jobs per POST /api/jobs/batch")
    p.add_argument("--rabbitmq-port", type=int, default=5698,
                   help="private broker (scripts/rabbitmq-local.sh) on 127.0.0.1")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for a phase")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config, log)")
    p.add_argument("--write", metavar="FILE", help="replace the bench:publish section of FILE")
    a = p.parse_args()
    a.jobs = a.jobs or (5000 if a.quick else 50000)
    for k in [k for k in os.environ if k.startswith("DQ_")]:
        del os.environ[k]               # no environment overrides of the node's config
    started = ensure_broker(a.rabbitmq_port, progress)
    tmp = tempfile.mkdtemp(prefix="dq-publish-")
    node = watch = None
    finished = False
    try:
        declare_topology(a.rabbitmq_port)
        node = start_node(ROOT, tmp, rabbitmq_port=a.rabbitmq_port, publish_on_register="true",
                          publish_window=a.window, snapshot_entries=max(100000, 4 * a.jobs))
        progress(f"node on :{node.port} (pid {node.proc.pid}), temp dir {tmp}")
        watch = QueueWatch(a.rabbitmq_port)
        pids = (node.proc.pid, rabbit_pid(a.rabbitmq_port))
        if pids[1] is None:
            progress("RabbitMQ's pid not found: its CPU shows as 0")
        raws = [raw_phase(a, watch, pids, "raw before")]
        n = node_phase(a, node, watch, pids)
        raws.append(raw_phase(a, watch, pids, "raw after"))
        watch.purge()
        finished = True
    finally:
        if watch is not None:
            watch.close()
        if node is not None:
            node.stop()
        if started:
            stop_broker(a.rabbitmq_port, progress)
        if a.keep or not finished:       # a failed run keeps the node's log
            progress(f"config and log kept in {tmp}")
        else:
            subprocess.run(["rm", "-rf", tmp])
    tbl, ratio = table(a, raws, n)
    lines = header_lines("Publishing: the node's dispatcher against raw pika") + [
        f"- {a.jobs:,} messages per phase to job.medium on a private RabbitMQ "
        f"(persistent, mandatory, confirms on), window {a.window:,} unconfirmed; message "
        f"body {n['body_bytes']} bytes (node), {raws[0]['body_bytes']} bytes (raw); the node "
        f"registers them with POST /api/jobs/batch of {a.batch:,} on one connection; queues "
        f"purged between phases",
        "- publisher CPU: the node's process for the node (registering included), this "
        "harness for raw pika; other CPU %: busy CPU of neither the publisher nor "
        "RabbitMQ, in % of one core",
        f"- **node / raw: {ratio:.2f}×** (raw = mean of the runs before and after; target "
        f"≥ 0.9×)", "", tbl]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        common.replace_section(a.write, "publish", text)
        progress(f"wrote {a.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
