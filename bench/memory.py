"""Memory per job and GET /api/jobs latency with many jobs held (issue "Job lifecycle").

Builds a State in this process the way a node does (request bodies -> parse -> apply),
measures RSS per job and list+render times at 10k, 100k and --jobs, breaks a job's
memory down, then writes the state as a snapshot, goes on building with every command also written
to the log after it (--tail entries), starts a real node on them (start-up time, RSS)
and times GET /api/jobs over HTTP. Targets: <= 1 KiB per job, live and after a restart;
start-up <= 10 s; <= 5 ms per 100-job page.
Usage: python bench/memory.py [--jobs 1000000] [--tail 100000] [--write docs/BENCHMARKS.md]
"""
import argparse
import datetime
import gc
import http.client
import json
import linecache
import os
import random
import re
import shlex
import socket
import sys
import tempfile
import time
import tracemalloc
import uuid
from urllib.parse import parse_qsl

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]
from common import (CpuMeter, OtherCpu, Target, free_ports, machine_line,  # noqa: E402
                    peak_rss_bytes, percentile, replace_section, rss_bytes)
from dqorch import jobs, parse  # noqa: E402
from dqorch.jobs import Job  # noqa: E402
from dqorch import state as st_mod  # noqa: E402
from dqorch.raft.log import RaftLog, encode, write_atomic  # noqa: E402
from dqorch.fsm import SNAPSHOTS

TARGET_BYTES, TARGET_MS = 1024, 5.0
CHUNK = 10_000                      # jobs per lifecycle round (and per gc.freeze)
TYPES = ("bench", "email", "report", "resize")
PRIORITIES = (1, 5, 10)
WORKERS = [f"worker-{i:02d}" for i in range(20)]
# What becomes of job n, by n % 1000 (per mille): the rest completes.
FATES = ((20, "pending"), (60, "queued"), (61, "running"), (71, "failed"))
REGISTER_BODY = '{"id":"%s","type":"%s","priority":%d,"payload":{"data":"' + "x" * 50 + '"}}'
# The node's config default is 300 s; 3600 keeps the running share from timing out
# while the node under test is up (it changes no job's size).
EXEC_TIMEOUT = 3600


def progress(msg):
    print(f"[memory] {msg}", file=sys.stderr, flush=True)


def fate(n):
    k = n % 1000
    return next((f for lim, f in FATES if k < lim), "completed")


class Builder:
    """Feeds a State the commands a node would apply: registers from request bodies,
    then mark_queued in batches of 1,000, worker reports, mark_published per chunk."""

    def __init__(self):
        self.st, self.n, self.ops = st_mod.State(), 0, 0

    def apply(self, cmd):
        cmd["at_ms"] = time.time_ns() // 1_000_000        # the leader stamps each command
        self.ops += 1
        return st_mod.apply(self.st, cmd)

    def report(self, id_, status, worker, **extra):
        body = json.dumps(dict(jobId=id_, status=status, workerId=worker, **extra)).encode()
        self.apply(parse.report(parse.body_json(body), None, max_retries=3,
                                execution_timeout=EXEC_TIMEOUT))

    def chunk(self, count, times):
        """Register count jobs (each one timed into times), then move them on."""
        live = []
        for _ in range(count):
            n, self.n = self.n, self.n + 1
            body = (REGISTER_BODY % (uuid.uuid4(), TYPES[n % 4], PRIORITIES[n % 3])).encode()
            t0 = time.perf_counter()
            cmd = parse.register(parse.body_json(body), new_id=None, max_retries=3,
                                 execution_timeout=EXEC_TIMEOUT, max_job_bytes=60000,
                                 publish=True)
            self.apply(cmd)
            times.append(time.perf_counter() - t0)
            if fate(n) != "pending":
                live.append((cmd["id"], fate(n), WORKERS[n % len(WORKERS)]))
        while live:                       # failed jobs go round until retries run out
            for i in range(0, len(live), 1000):
                self.apply({"op": "mark_queued", "items": [
                    [id_, self.st.jobs[id_]["attempt"]] for id_, _, _ in live[i:i + 1000]]})
            live = [x for x in live if x[1] != "queued"]
            for id_, _, w in live:
                self.report(id_, "running", w)
            again = []
            for id_, f, w in live:
                if f == "completed":
                    self.report(id_, "completed", w, result={"ok": True})
                elif f == "failed":
                    self.report(id_, "failed", w, errorMessage="boom")
                    if self.st.jobs[id_]["status"] == "pending":
                        again.append((id_, f, w))
            live = again
        self.apply({"op": "mark_published", "upto": self.st.outbox_next - 1})
        gc.freeze()                       # the node freezes every 10,000 commands


def queries(st):
    """(label, query string) of the GET /api/jobs calls timed."""
    return [("no filter", "limit=100"),
            ("status=completed", "limit=100&status=completed"),
            ("status=pending (2% of jobs)", "limit=100&status=pending"),
            ("type=email", "limit=100&type=email"),
            ("deep page: cursor at the middle", f"limit=100&cursor={st.next_seq // 2}"),
            ("type=email&status=queued (2 filters)", "limit=100&type=email&status=queued")]


def render(st, qs):
    """What the GET /api/jobs handler does, minus HTTP (see api.list_jobs)."""
    q = parse.list_query(dict(parse_qsl(qs)))
    page, count, nxt = st_mod.list_jobs(st, q["filters"], q["limit"], q["cursor"])
    return jobs.dumps({"jobs": [jobs.api_json(j, full=q["full"]) for j in page],
                       "count": count, "returned": len(page),
                       "next": None if nxt is None else str(nxt)})


def stats(lat):
    lat = sorted(lat)
    return dict(p50=percentile(lat, 50) * 1e3, p99=percentile(lat, 99) * 1e3,
                max=lat[-1] * 1e3, mean=sum(lat) / len(lat) * 1e3)


def time_calls(fn, calls, warmup=10):
    """Wall-clock stats, plus the p99 of this thread's CPU time per call: unlike the
    wall clock, it does not grow when other programs take the CPU away."""
    lat, cpu = [], []
    for i in range(warmup + calls):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        if i >= warmup:
            lat.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    return dict(stats(lat), cpu_p99=percentile(sorted(cpu), 99) * 1e3)


def build(total, checkpoints, calls, base_rss):
    """Grow one State to total jobs; at each checkpoint record RSS per job, the timings
    of the registrations that reached it, and the list queries."""
    b, res, times = Builder(), {}, []
    t_start = time.monotonic()
    for cp in checkpoints:
        while b.n < cp:
            times = []
            b.chunk(min(CHUNK, cp - b.n), times)
            if b.n % 100_000 == 0 or b.n == cp:
                progress(f"{b.n:,} jobs, {b.ops:,} commands, {time.monotonic() - t_start:.0f} s, "
                         f"RSS {rss_bytes() / 2**20:,.0f} MiB")
        gc.collect()
        r = res[cp] = dict(rss_per_job=(rss_bytes() - base_rss) / cp,
                           register=stats(times), queries={})
        for label, qs in queries(b.st):
            r["queries"][label] = time_calls(lambda: render(b.st, qs), calls)
        progress(f"at {cp:,} jobs: {r['rss_per_job']:,.0f} B/job (RSS), register+apply p50 "
                 f"{r['register']['p50'] * 1e3:.0f} µs, lists p50 " + ", ".join(
                     f"{q['p50']:.2f}" for q in r["queries"].values()) + " ms")
    return b, res, time.monotonic() - t_start


def deep(obj, seen):
    """Bytes of obj and what it holds, skipping objects already seen (shared ones)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep(k, seen) + deep(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        size += sum(deep(x, seen) for x in obj)
    return size


PARTS = {"created_at": "timestamps (int objects)", "queued_at": "timestamps (int objects)",
         "started_at": "timestamps (int objects)", "completed_at": "timestamps (int objects)",
         "running_since": "timestamps (int objects)", "seq": "seq (int object)",
         "worker_id": "worker_id string", "id": "id string (uuid)", "type": "type string",
         "payload": "payload (compact JSON bytes; a 50-byte string)",
         "result": "result (compact JSON bytes)", "metadata": "metadata (shared b\"{}\")",
         "history": "history (compact JSON bytes of [at, status, by, reason] entries)"}


DICT = "job record (jobs.Job: slots, no dict)"


def job_parts(records):
    """Bytes per job by part; objects shared between jobs count once, so they vanish
    in the average."""
    seen, parts = set(), {DICT: 0}
    for job in records:
        parts[DICT] += sys.getsizeof(job)
        for k, v in job.to_dict().items():
            seen.add(id(k))
            name = PARTS.get(k, "other fields")
            parts[name] = parts.get(name, 0) + deep(v, seen)
    return {k: v / len(records) for k, v in parts.items()}


def breakdown(st, sample=2000):
    """{part: (B/job as built live, B/job after a snapshot reload)} from a sample of
    jobs, plus the State's index tables. A reload (json.loads + from_snapshot, what a
    restart does) gives every job its own copy of every string."""
    ids = random.Random(1).sample(list(st.jobs), min(sample, len(st.jobs)))
    picked = sorted((st.jobs[i] for i in ids), key=lambda j: j["seq"])
    snap = dict(st_mod.to_snapshot(st_mod.State()), jobs=picked, next_seq=st.next_seq)
    del snap["terminal_order"]          # a sample: the order is rebuilt from completed_at
    again = st_mod.from_snapshot(json.loads(json.dumps(snap, default=Job.to_record)))
    live, reloaded = job_parts(picked), job_parts(list(again.jobs.values()))
    seqs = [st.all, *st.by_status.values(), *st.by_queue.values(), *st.by_type.values(),
            *st.by_worker.values()]
    index = (sys.getsizeof(st.jobs) + sys.getsizeof(st.by_seq) + sys.getsizeof(st.outbox)
             + sys.getsizeof(st.terminal_fifo)
             + sum(sys.getsizeof(s._maxes) + sys.getsizeof(s._lists) for s in seqs)
             + sum(sys.getsizeof(lst) for s in seqs for lst in s._lists)) / len(st.jobs)
    out = {k: (live.get(k, 0), reloaded.get(k, 0)) for k in reloaded | live}
    out["indexes (jobs and by_seq dicts, SortedSeqs lists, fifo)"] = (index, index)
    return dict(sorted(out.items(), key=lambda kv: -kv[1][1]))


def traced(n):
    """tracemalloc over a separate build of n jobs: Python's own allocations per job
    (no allocator slack) and the source lines that made them."""
    tracemalloc.start()
    b = Builder()
    while b.n < n:
        b.chunk(min(CHUNK, n - b.n), [])
    gc.collect()
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    st_stats = snap.statistics("lineno")
    top = []
    for s in st_stats[:8]:
        fr = s.traceback[0]
        where = os.path.relpath(fr.filename, ROOT) if fr.filename.startswith(ROOT) \
            else "/".join(fr.filename.split("/")[-2:])
        code = linecache.getline(fr.filename, fr.lineno).strip()
        top.append((f"{where}:{fr.lineno}", code[:70], s.size / n))
    return dict(n=n, per_job=sum(s.size for s in st_stats) / n, top=top)


# --- the real node -----------------------------------------------------------------


def write_snapshot(st, index, data_dir):
    """The file raft/snapshots.Snapshots.now writes, so RaftNode.start loads it."""
    os.makedirs(data_dir)
    log = RaftLog(data_dir, SNAPSHOTS)
    log.write_snapshot(index, 1, st_mod.to_snapshot(st))
    write_atomic(os.path.join(data_dir, "hardstate.json"), b'{"term":1,"vote":null}')
    return os.path.getsize(log.snapshot_path(index))


def start_node(tmp, name, data_dir, jobs_held, timeout_s):
    """A node on data_dir, its broker port closed (nothing gets published)."""
    http_port, metrics_port, dead_port, raft_port = free_ports(3, 1)
    cfg = os.path.join(tmp, f"{name}.yaml")
    with open(cfg, "w") as f:
        f.write(f"node_name: bench@127.0.0.1\ndata_dir: {data_dir}\nhttp_port: {http_port}\n"
                f"metrics_port: {metrics_port}\nraft_port: {raft_port}\n"
                f"rabbitmq_port: {dead_port}\njob_retention_max: {max(1_000_000, 2 * jobs_held)}\n"
                f"log_level: info\n")
    argv = [sys.executable, "dqorch.py", "-c", cfg]
    progress(f"{name}: starting {shlex.join(argv)}")
    t0 = time.monotonic()
    t = Target(name, argv, http_port, os.path.join(tmp, f"{name}.log"), cwd=ROOT)
    if not t.wait_ready(timeout_s):
        tail = t.log_tail()
        t.stop()
        raise SystemExit(f"error: {name} not ready after {timeout_s:g} s; log tail:\n{tail}")
    return t, time.monotonic() - t0


def http_calls(t, qs, calls, warmup=10):
    conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat, meter = [], None
    for i in range(warmup + calls):
        if i == warmup:
            meter = CpuMeter(t.proc.pid)
        t0 = time.perf_counter()
        conn.request("GET", "/api/jobs?" + qs)
        r = conn.getresponse()
        body = r.read()
        if i >= warmup:
            lat.append(time.perf_counter() - t0)
        if r.status != 200:
            raise SystemExit(f"GET /api/jobs?{qs}: {r.status} {body[:200]!r}")
    conn.close()
    return dict(stats(lat), **meter.stop(calls), size=len(body))


def write_tail(b, entries, data_dir):
    """Go on building (the same mix of jobs), each command also written to the log
    after the snapshot as the commit loop writes it, until there are `entries`: the
    tail a restart replays after loading the snapshot."""
    log = RaftLog(data_dir, SNAPSHOTS)
    log.open()
    first = index = log.last_index
    apply, batch = b.apply, []

    def logged(cmd):
        nonlocal index
        out = apply(cmd)                      # stamps at_ms first, as the leader does
        index += 1
        batch.append(encode(index, 1, cmd))
        if len(batch) == 1000:
            log.append(b"".join(batch), index, 1)
            batch.clear()
        return out
    b.apply = logged
    while index - first < entries:
        b.chunk(min(CHUNK, 1000), [])
    if batch:
        log.append(b"".join(batch), index, 1)
    os.fsync(log.fileno())
    log.close()
    b.apply = apply
    return index - first


def prepare_node(b, tail, tmp):
    st, ops, out = b.st, b.ops, {}
    t, _ = start_node(tmp, "empty-node", os.path.join(tmp, "empty"), 0, 60)
    out["empty_rss"] = rss_bytes(t.proc.pid)
    t.stop()
    t0 = time.monotonic()
    out["snapshot_bytes"] = write_snapshot(st, ops, os.path.join(tmp, "data"))
    out["snapshot_write_s"] = time.monotonic() - t0
    qs = queries(st)
    n = len(st.jobs)
    progress(f"snapshot written: {out['snapshot_bytes'] / 2**20:,.0f} MiB in "
             f"{out['snapshot_write_s']:.1f} s")
    out["tail"] = write_tail(b, tail, os.path.join(tmp, "data")) if tail else 0
    n = len(st.jobs)
    progress(f"log tail written: {out['tail']:,} entries, {n:,} jobs in all; dropping the "
             f"in-process state")
    return out, qs, n


def run_node(out, qs, n, a, tmp):
    t, out["startup_s"] = start_node(tmp, "node", os.path.join(tmp, "data"), n, a.ready_timeout)
    try:
        m = re.search(r"replayed log entries=\d+ jobs=(\d+) applied=\d+ (?:unknown_commit=\d+ )?"
                      r"seconds=([\d.]+)",
                      t.log_tail(200))
        out["replay_s"] = float(m.group(2)) if m else float("nan")
        out["loaded_jobs"] = int(m.group(1)) if m else -1
        out["rss"], out["peak_rss"] = rss_bytes(t.proc.pid), peak_rss_bytes(t.proc.pid)
        progress(f"node ready in {out['startup_s']:.1f} s (load+replay {out['replay_s']:.1f} s), "
                 f"{out['loaded_jobs']:,} jobs, RSS {out['rss'] / 2**20:,.0f} MiB, "
                 f"peak {out['peak_rss'] / 2**20:,.0f} MiB")
        out["http"] = {}
        for label, q in qs:
            r = out["http"][label] = http_calls(t, q, a.calls)
            progress(f"HTTP {label:<38} p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
                     f"node CPU {r['cpu_us']:.0f} µs/req  other CPU {r['other_pct']:.0f}%")
    finally:
        t.stop()
    return out


# --- report ------------------------------------------------------------------------


def fmt_b(x):
    return f"{x:,.0f}"


def report(a, cps, res, parts, tr, node, noise, build_s):
    top = cps[-1]
    last = res[top]
    verdict = lambda ok: "met" if ok else "**missed**"
    lines = [f"### Memory and GET /api/jobs with {top:,} jobs held\n",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"- machine: {machine_line(ROOT)}",
             f"- command: `{shlex.join(['python'] + sys.argv)}`",
             f"- jobs as the API makes them: uuid ids, 4 types, priorities 1/5/10, a 50-byte "
             f"payload; each register body goes through parse.body_json + parse.register + "
             f"state.apply (leader-stamped at_ms), worker reports through parse.report. Of "
             f"every 1,000 jobs: 20 stay pending, 40 queued, 1 running, 10 fail after 3 retries "
             f"(13 history entries), 929 complete with result `{{\"ok\":true}}` (4 history "
             f"entries). mark_queued in batches of 1,000, events marked published and "
             f"gc.freeze() every {CHUNK:,} jobs, like the node. In-process build: "
             f"{build_s:.0f} s.",
             f"- noise: other programs used {noise:.0f}% of a core on average during the "
             f"in-process phase (other helpers run tests on this 2-core machine); the node's "
             f"rows show their own. Latencies are noisy; memory figures are not.\n",
             "| memory | " + " | ".join(f"{c:,} jobs" for c in cps) + " | target |",
             "|---|" + "--:|" * len(cps) + "---|",
             "| RSS growth per job, in-process (B) | " + " | ".join(
                 fmt_b(res[c]["rss_per_job"]) for c in cps) +
             f" | ≤ {TARGET_BYTES:,}: {verdict(last['rss_per_job'] <= TARGET_BYTES)} |"]
    rows, per = [], node and (node["rss"] - node["empty_rss"]) / max(1, node["loaded_jobs"])
    if tr:
        rows.append((f"tracemalloc per job (separate build of {tr['n']:,} jobs; Python "
                     f"allocations, no allocator slack)", f"{fmt_b(tr['per_job'])} B"))
    if node:
        rows += [("node RSS after loading the snapshot and replaying the log tail / empty node",
                  f"{node['rss'] / 2**20:,.0f} MiB / {node['empty_rss'] / 2**20:,.0f} MiB = "
                  f"{fmt_b(per)} B per job ({verdict(per <= TARGET_BYTES)})"),
                 ("node peak RSS during start-up (VmHWM)",
                  f"{node['peak_rss'] / 2**20:,.0f} MiB"),
                 (f"node start-up with {node['loaded_jobs']:,} jobs (a snapshot and a "
                  f"{node['tail']:,}-entry log tail): process start to health 200",
                  f"{node['startup_s']:.1f} s (snapshot load + replay: {node['replay_s']:.1f} s; "
                  f"target 10 s: {verdict(node['startup_s'] <= 10)})"),
                 ("snapshot file (written by this script)",
                  f"{node['snapshot_bytes'] / 2**20:,.0f} MiB, {node['snapshot_write_s']:.1f} s")]
    lines += ["", "| memory, other measures | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    live, reload = (sum(v[i] for v in parts.values()) for i in (0, 1))
    lines += ["", f"Where a job's bytes go at {top:,} jobs (deep size over a sample of 2,000 "
              "jobs; objects shared between jobs count once). *After a restart*: the same "
              "jobs through json.loads + state.from_snapshot, as a node loads them:", "",
              "| part | B/job, built live | B/job, after a restart |", "|---|--:|--:|"]
    lines += [f"| {k} | {fmt_b(v[0])} | {fmt_b(v[1])} |" for k, v in parts.items()]
    lines.append(f"| **total of the above** | **{fmt_b(live)}** | **{fmt_b(reload)}** |")
    lines.append(f"| allocator overhead and slack: RSS growth minus the total | "
                 f"{fmt_b(last['rss_per_job'] - live)} | "
                 + (f"{fmt_b(per - reload)} (node RSS) |" if node else "— |"))
    if tr:
        lines += ["", f"tracemalloc, top allocation sites still holding memory after a build "
                  f"of {tr['n']:,} jobs (B/job):", ""]
        lines += [f"- `{site}` `{code}`: {fmt_b(b)}" for site, code, b in tr["top"]]
    lines += ["", f"GET /api/jobs?limit=100 (ms; in-process = parse.list_query + "
              f"state.list_jobs + jobs.api_json + JSON encode, {a.calls} calls each after 10 "
              f"warm-up; HTTP = keep-alive http.client against the node holding "
              f"{top:,} jobs). *register* = body_json + parse.register + apply of one job, "
              f"over the {CHUNK:,} registrations that reached the checkpoint (µs, not ms). Where "
              f"the wall-clock p99 misses but the CPU-time p99 does not, the difference is "
              f"time spent waiting for a CPU that other programs held, not work.", "",
              "| query | " + " | ".join(f"p50 {c:,}" for c in cps)
              + f" | {top // cps[0]:,}× jobs: p50 ratio | p99 {top:,} | p99 CPU time {top:,} "
              f"| HTTP p50 | HTTP p99 | node CPU µs/req | other CPU % (HTTP) | target |",
              "|---|" + "--:|" * (len(cps) + 7) + "---|"]
    for label in last["queries"]:
        q = [res[c]["queries"][label] for c in cps]
        h = node["http"][label] if node else None
        worst = max(last["queries"][label]["p99"], h["p99"] if h else 0)
        lines.append(f"| {label} | " + " | ".join(f"{x['p50']:.2f}" for x in q) +
                     f" | {q[-1]['p50'] / q[0]['p50']:.2f}× | {q[-1]['p99']:.2f} "
                     f"| {q[-1]['cpu_p99']:.2f} | " +
                     (f"{h['p50']:.2f} | {h['p99']:.2f} | {h['cpu_us']:.0f} | "
                      f"{h['other_pct']:.0f} | " if h else "— | — | — | — | ")
                     + f"≤ {TARGET_MS:g} p99: {verdict(worst <= TARGET_MS)} |")
    reg = [res[c]["register"] for c in cps]
    lines.append("| *register + apply, µs* | "
                 + " | ".join(f"{r['p50'] * 1e3:.0f}" for r in reg)
                 + f" | {reg[-1]['p50'] / reg[0]['p50']:.2f}× | {reg[-1]['p99'] * 1e3:.0f} "
                 f"| — | — | — | — | — | flat |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1_000_000, help="jobs held at the end")
    p.add_argument("--calls", type=int, default=300, help="timed calls per query")
    p.add_argument("--trace-jobs", type=int, default=100_000,
                   help="jobs in the tracemalloc build (0 to skip)")
    p.add_argument("--no-node", action="store_true", help="skip the real node")
    p.add_argument("--tail", type=int, default=100_000,
                   help="log entries after the snapshot, replayed by the node at start-up")
    p.add_argument("--ready-timeout", type=float, default=900)
    p.add_argument("--write", metavar="FILE", help="replace the bench:memory section of FILE")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (snapshot, logs)")
    a = p.parse_args()
    cps = sorted({c for c in (10_000, 100_000, 1_000_000) if c < a.jobs} | {a.jobs})
    gc.collect()
    base = rss_bytes()
    noise = OtherCpu()
    b, res, build_s = build(a.jobs, cps, a.calls, base)
    parts = breakdown(b.st)
    progress("deep size per job (live, after reload): " + ", ".join(
        f"{k} {v[0]:,.0f}/{v[1]:,.0f}" for k, v in parts.items()))
    noise_pct = noise.pct()
    node, tmp = None, tempfile.mkdtemp(prefix="dqorch-memory-")
    try:
        if not a.no_node:
            node, qs, n = prepare_node(b, a.tail, tmp)
        b = None                                  # free the in-process state
        gc.collect()
        if node:
            run_node(node, qs, n, a, tmp)
    finally:
        if a.keep:
            progress(f"snapshot and logs kept in {tmp}")
        else:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    tr = None
    if a.trace_jobs:
        progress(f"tracemalloc build of {min(a.trace_jobs, a.jobs):,} jobs")
        tr = traced(min(a.trace_jobs, a.jobs))
        progress(f"tracemalloc: {tr['per_job']:,.0f} B/job")
    text = report(a, cps, res, parts, tr, node, noise_pct, build_s)
    print(text)
    if a.write:
        replace_section(a.write, "memory", text)
        progress(f"wrote {a.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
