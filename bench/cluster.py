"""Raft cluster: fail-over time, leader stability under load, 3 nodes against 1.

Everything on loopback with the default Raft timings (raft_heartbeat_ms 100,
raft_election_timeout_ms 1000), free ports, fresh temp data_dirs and a private RabbitMQ
(started with scripts/rabbitmq-local.sh when not running; stopped at the end only then).
Talks to the nodes over HTTP only, like a client.

1. failover: a 3-node cluster under a light register load (round-robin over the live
   nodes, a 503 or a connection error retried at once on the next node); kill -9 of the
   leader; time from the kill to the first 202 of a request sent after it. The killed
   node is restarted (same data_dir) and the cluster caught up between trials. Every
   acknowledged job is then looked up on the new leader (a 404 is a lost job).
2. leaders: --load-seconds of full register load (one wrk per node) with no fault;
   leader changes and elections from each node's /metrics, and terms, before and after.
3. throughput: closed-loop wrk, 50 connections, against a single node, the leader of a
   3-node cluster and one of its followers (forwarding), taking turns --rounds times.

Usage: python bench/cluster.py [--trials 10] [--load-seconds 60] [--duration 20]
       [--rounds 2] [--parts failover,leaders,throughput] [--write docs/BENCHMARKS.md]
"""
import argparse
import atexit
import datetime
import http.client
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Target, cpu_seconds, free_ports, percentile, run_wrk  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("failover", "leaders", "throughput")
LEADER_CHANGES = 'distriqueue_raft_events_total{event="leader_changes"}'
ELECTIONS = 'distriqueue_raft_events_total{event="elections"}'


def progress(msg):
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A measurement could not be made (or dqorch misbehaved): the temp dir is kept."""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of "
                   + ", ".join(PARTS))
    p.add_argument("--trials", type=int, default=10, help="fail-over trials")
    p.add_argument("--light-conns", type=int, default=4,
                   help="fail-over load: client threads, each one register per interval")
    p.add_argument("--light-interval-ms", type=float, default=50)
    p.add_argument("--warm", type=float, default=2, help="seconds of light load before a kill")
    p.add_argument("--after", type=float, default=1,
                   help="seconds of light load after the first 202 following a kill")
    p.add_argument("--failover-timeout", type=float, default=30)
    p.add_argument("--load-seconds", type=float, default=60,
                   help="leader-stability load window")
    p.add_argument("--load-conns", type=int, default=50,
                   help="leader-stability load: wrk connections in all, split over the nodes")
    p.add_argument("--duration", type=float, default=20, help="seconds per throughput run")
    p.add_argument("--rounds", type=int, default=2, help="throughput rounds")
    p.add_argument("--conns", type=int, default=50, help="throughput wrk connections")
    p.add_argument("--rabbitmq-port", type=int, default=5699,
                   help="private broker (scripts/rabbitmq-local.sh) on 127.0.0.1")
    p.add_argument("--log-level", default="info", help="node log_level")
    p.add_argument("--ready-timeout", type=float, default=60)
    p.add_argument("--drain-timeout", type=float, default=60,
                   help="seconds to wait for the publish backlog between throughput runs")
    p.add_argument("--pin", choices=("split", "none"), default="split",
                   help="split: wrk and this harness on the last CPU, the nodes on the others")
    p.add_argument("--write", metavar="FILE", help="replace the bench:cluster section of FILE")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args()
    a.parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    bad = set(a.parts) - set(PARTS)
    if bad:
        p.error(f"unknown parts: {', '.join(sorted(bad))}")
    return a


# --- HTTP helpers ------------------------------------------------------------------


def http_get(port, path, timeout=2.0):
    """(status, parsed JSON or text) or (None, error) when the node does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    except OSError as e:
        return None, e
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode(errors="replace")


def metrics(port):
    """Prometheus text from /metrics as {'name{labels}': value}; {} when it fails."""
    status, text = http_get(port, "/metrics")
    out = {}
    if status != 200 or not isinstance(text, str):
        return out
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, val = line.rpartition(" ")
            try:
                out[key] = float(val)
            except ValueError:
                pass
    return out


# --- nodes and clusters ------------------------------------------------------------


class Node:
    """One dqorch.py with its own config, ports and data_dir; restartable (each run
    logs to a new node-<n>.log in its dir)."""

    def __init__(self, tmp, name, ports, peers, a, cookie, cpus):
        self.name, self.short = name, name.split("@")[0]
        self.http_port, self.metrics_port, self.raft_port = ports
        self.dir = tempfile.mkdtemp(prefix=f"{self.short}-", dir=tmp)
        self.cpus, self.runs, self.target, self.killed = cpus, 0, None, False
        cfg = dict(node_name=name, cookie=cookie, data_dir=os.path.join(self.dir, "data"),
                   http_host="127.0.0.1", http_port=self.http_port,
                   metrics_port=self.metrics_port, raft_port=self.raft_port,
                   raft_peers=peers, rabbitmq_host="127.0.0.1",
                   rabbitmq_port=a.rabbitmq_port, log_level=a.log_level)
        self.cfg_path = os.path.join(self.dir, "config.yaml")
        with open(self.cfg_path, "w") as f:
            f.write("".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()))

    def start(self):
        log = os.path.join(self.dir, f"node-{self.runs}.log")
        self.runs += 1
        self.killed = False
        self.target = Target(self.short, [sys.executable, os.path.join(ROOT, "dqorch.py"),
                                          "-c", self.cfg_path],
                             self.http_port, log, cwd=ROOT, cpus=self.cpus)

    @property
    def pid(self):
        return self.target.proc.pid

    def alive(self):
        return self.target is not None and self.target.proc.poll() is None

    def kill9(self):
        self.killed = True
        os.kill(self.pid, signal.SIGKILL)

    def reap(self):
        self.target.proc.wait(30)
        self.target.stop()              # closes the log

    def stop(self):
        if self.target is not None:
            self.target.stop()

    def status(self):
        code, body = http_get(self.http_port, "/api/cluster/status")
        return body if code == 200 and isinstance(body, dict) else None

    def metrics(self):
        return metrics(self.metrics_port)

    def log_tail(self, n=30):
        return self.target.log_tail(n) if self.target else ""


class Cluster:
    def __init__(self, tmp, label, n, a, cookie, cpus):
        self.label = label
        ports = free_ports(2 * n, n)
        names = [f"{label}n{i}@127.0.0.1" for i in range(1, n + 1)]
        raft = ports[2 * n:]
        self.nodes = []
        for i, name in enumerate(names):
            peers = [f"{p}:{raft[j]}" for j, p in enumerate(names) if j != i]
            self.nodes.append(Node(tmp, name, (ports[2 * i], ports[2 * i + 1], raft[i]),
                                   peers, a, cookie, cpus))
        self.by_name = {n.name: n for n in self.nodes}

    def start(self, timeout):
        for n in self.nodes:
            n.start()
        progress(f"{self.label}: started {len(self.nodes)} node(s): "
                 + ", ".join(f"{n.short} http {n.http_port} pid {n.pid}" for n in self.nodes))
        self.wait_healthy(timeout)
        return self

    def stop(self):
        for n in self.nodes:
            n.stop()

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def check_crashes(self):
        """A node that exited without being killed by us is a dqorch bug."""
        for n in self.nodes:
            if n.target is not None and not n.killed and not n.alive():
                raise BenchError(f"{n.name} exited with code {n.target.proc.returncode}; "
                                 f"{n.target.log_path}:\n{n.log_tail()}")

    def agreed(self, among=None):
        """(leader Node, term) when every node asked names the same live leader."""
        seen = set()
        for n in among or self.live():
            st = n.status()
            if st is None or st.get("leader") is None:
                return None, None
            seen.add((st["leader"], st["term"]))
        if len(seen) != 1:
            return None, None
        name, term = seen.pop()
        lead = self.by_name.get(name)
        return (lead, term) if lead is not None and lead.alive() else (None, None)

    def leader(self):
        return self.agreed()[0]

    def caught_up(self):
        """Every node up, answering /api/health 200 and naming one leader; the leader
        sees every member with its own log's last index and every node has applied
        the leader's commit index."""
        if len(self.live()) != len(self.nodes):
            return False
        for n in self.nodes:
            if http_get(n.http_port, "/api/health")[0] != 200:
                return False
        lead, _ = self.agreed()
        if lead is None:
            return False
        if len(self.nodes) == 1:
            return True
        st = lead.status()
        if st is None or len(st["members"]) != len(self.nodes):
            return False
        last = st["members"][0]["match_index"]
        if any(m["match_index"] != last for m in st["members"]):
            return False
        commit = lead.metrics().get("distriqueue_raft_commit_index")
        return commit is not None and all(
            n.metrics().get("distriqueue_raft_applied_index", -1) >= commit for n in self.nodes)

    def wait_healthy(self, timeout):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            self.check_crashes()
            if self.caught_up():
                return time.monotonic() - t0
            time.sleep(0.1)
        raise BenchError(f"{self.label}: not healthy and caught up after {timeout:g} s\n"
                         + self.logs())

    def logs(self, n=15):
        return "\n".join(f"--- {x.name} ({x.target.log_path if x.target else '-'})\n"
                         f"{x.log_tail(n)}" for x in self.nodes)


# --- the fail-over client ------------------------------------------------------------


class RoundRobinLoad:
    """Light load: `conns` threads, each sending one register every interval_s to the
    next live node in turn over keep-alive connections; a 503, another non-2xx or a
    connection error is retried at once (same job id) on the next live node.
    Records every attempt as (start, end, port, outcome)."""

    def __init__(self, nodes, conns, interval_s, prefix):
        self.ports = [n.http_port for n in nodes]
        self.dead = set()
        self.conns, self.interval_s, self.prefix = conns, interval_s, prefix
        self.lock, self.rr = threading.Lock(), 0
        self.attempts = []          # (t_start, t_end, port, status or exception name)
        self.acked = []             # job ids answered 202
        self.failures = []          # (t_start, t_end, port, outcome, body) of the others
        self.stopping = threading.Event()
        self.threads = []

    def next_port(self):
        with self.lock:
            for _ in range(len(self.ports)):
                port = self.ports[self.rr % len(self.ports)]
                self.rr += 1
                if port not in self.dead:
                    return port
        raise RuntimeError("no live node")

    def start(self):
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                        for c in range(self.conns)]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def _run(self, c):
        conns, i = {}, 0
        next_t = time.perf_counter() + c * self.interval_s / self.conns
        pad = "x" * 50
        while not self.stopping.is_set():
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_t = max(next_t + self.interval_s, time.perf_counter())
            job_id = f"{self.prefix}-{c}-{i}"
            i += 1
            body = json.dumps({"id": job_id, "type": "bench", "priority": 5,
                               "payload": {"data": pad}}).encode()
            while not self.stopping.is_set():
                port = self.next_port()
                t0 = time.perf_counter()
                conn = conns.get(port)
                try:
                    if conn is None:
                        conn = conns[port] = http.client.HTTPConnection("127.0.0.1", port,
                                                                        timeout=30)
                    conn.request("POST", "/api/jobs/register", body,
                                 {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                    outcome = resp.status
                    if resp.will_close:
                        conns.pop(port).close()
                except (OSError, http.client.HTTPException) as e:
                    outcome, data = type(e).__name__, b""
                    if conn is not None:
                        conn.close()
                    conns.pop(port, None)
                with self.lock:
                    self.attempts.append((t0, time.perf_counter(), port, outcome))
                    if outcome == 202:
                        self.acked.append(job_id)
                    else:
                        self.failures.append((t0, time.perf_counter(), port, outcome,
                                              data[:300].decode(errors="replace")))
                if outcome == 202:
                    break
                time.sleep(0.002)   # no hot loop while every node refuses
        for conn in conns.values():
            conn.close()

    def first_202_after(self, t):
        with self.lock:
            ok = [(end, port) for start, end, port, out in self.attempts
                  if start >= t and out == 202]
        return min(ok) if ok else None


def lookup_missing(port, ids):
    """Ids that GET /api/jobs/<id> on port does not find (404); raises on other errors."""
    missing = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for job_id in ids:
            conn.request("GET", f"/api/jobs/{job_id}")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 404:
                missing.append(job_id)
            elif resp.status != 200:
                raise BenchError(f"GET /api/jobs/{job_id} on port {port}: {resp.status}")
    finally:
        conn.close()
    return missing


def failover(a, tmp, cookie, cpus, run_id):
    cl = Cluster(tmp, "f", 3, a, cookie, cpus)
    trials, anomalies = [], []
    try:
        cl.start(a.ready_timeout)
        for k in range(a.trials):
            victim, term0 = cl.agreed()
            if victim is None:
                raise BenchError("no agreed leader before a trial\n" + cl.logs())
            survivors = [n for n in cl.nodes if n is not victim]
            load = RoundRobinLoad(cl.nodes, a.light_conns, a.light_interval_ms / 1e3,
                                  f"f{run_id}t{k}")
            load.start()
            try:
                time.sleep(a.warm)
                t_kill = time.perf_counter()
                victim.kill9()
                load.dead.add(victim.http_port)
                t_leader = new_leader = None
                first = None
                deadline = t_kill + a.failover_timeout
                while time.perf_counter() < deadline:
                    if t_leader is None:
                        lead, term = cl.agreed(survivors)
                        if lead is not None and lead is not victim:
                            t_leader, new_leader, new_term = time.perf_counter(), lead, term
                    first = first or load.first_202_after(t_kill)
                    if first and t_leader:
                        break
                    time.sleep(0.01)
                if first:
                    time.sleep(a.after)
            finally:
                load.stop()
            victim.reap()
            cl.check_crashes()
            if first is None or t_leader is None:
                raise BenchError(f"trial {k + 1}: no new leader / no 202 within "
                                 f"{a.failover_timeout:g} s of killing {victim.name}\n"
                                 + cl.logs(30))
            after = [x for x in load.attempts if x[0] >= t_kill]
            fails = [x for x in after if x[3] != 202]
            n503 = sum(1 for x in fails if x[3] == 503)
            other = sorted({str(x[3]) for x in fails if x[3] != 503})
            names = {n.http_port: n.short for n in cl.nodes}
            for t0, t1, port, out, body in load.failures:
                if t0 >= t_kill:
                    progress(f"  {out} from {names[port]} sent +{(t0 - t_kill) * 1e3:.0f} ms, "
                             f"answered +{(t1 - t_kill) * 1e3:.0f} ms: {body}")
            missing = lookup_missing(new_leader.http_port, list(load.acked))
            if missing:
                anomalies.append(f"trial {k + 1}: {len(missing)} of {len(load.acked)} "
                                 f"acknowledged jobs not found on the new leader "
                                 f"{new_leader.name}, e.g. {missing[:5]}")
            via = cl.nodes[[n.http_port for n in cl.nodes].index(first[1])]
            t = dict(victim=victim.short, term0=term0, leader=new_leader.short, term=new_term,
                     leader_ms=(t_leader - t_kill) * 1e3, first_ms=(first[0] - t_kill) * 1e3,
                     via=via.short + (" (leader)" if via is new_leader else " (follower)"),
                     n503=n503, other=other, other_n=len(fails) - n503,
                     acked=len(load.acked), lost=len(missing))
            victim.start()
            t["catchup_s"] = cl.wait_healthy(a.ready_timeout)
            trials.append(t)
            progress(f"trial {k + 1}/{a.trials}: killed {t['victim']} (term {term0}); "
                     f"{t['leader']} leads term {t['term']} after {t['leader_ms']:.0f} ms; "
                     f"first 202 after {t['first_ms']:.0f} ms via {t['via']}; "
                     f"{n503} x 503, {t['other_n']} other failures {other}; "
                     f"{t['acked']} acked, {t['lost']} lost; caught up {t['catchup_s']:.1f} s")
    finally:
        cl.stop()
    return trials, anomalies


def leaders(a, tmp, cookie, cpus, run_id, client_cpus):
    cl = Cluster(tmp, "l", 3, a, cookie, cpus)
    anomalies = []
    try:
        cl.start(a.ready_timeout)
        time.sleep(1)
        before = {n.short: n.metrics() for n in cl.nodes}
        lead0, term0 = cl.agreed()
        seen, stop = [], threading.Event()

        def watch():          # who each node names as leader, every 0.5 s
            last = {}
            while not stop.wait(0.5):
                for n in cl.nodes:
                    st = n.status()
                    cur = (st["leader"], st["term"]) if st else ("no answer", None)
                    if last.get(n.short) != cur:
                        if n.short in last:
                            seen.append((time.monotonic() - t0, n.short, cur))
                        last[n.short] = cur

        per = [a.load_conns // 3 + (1 if i < a.load_conns % 3 else 0) for i in range(3)]
        results = {}

        def one(n, conns):
            results[n.short] = run_wrk(n.http_port, conns, a.load_seconds,
                                       f"l{run_id}{n.short}", cpus=client_cpus)
        t0 = time.monotonic()
        threads = [threading.Thread(target=watch, daemon=True)]
        threads += [threading.Thread(target=one, args=(n, c)) for n, c in zip(cl.nodes, per)]
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join()
        stop.set()
        threads[0].join()
        cl.check_crashes()
        after = {n.short: n.metrics() for n in cl.nodes}
        lead1, term1 = cl.agreed()
        rows = []
        for n, c in zip(cl.nodes, per):
            b, f, r = before[n.short], after[n.short], results.get(n.short)
            if r is None:
                raise BenchError(f"wrk against {n.short} failed")
            rows.append(dict(node=n.short, conns=c,
                             lc0=b.get(LEADER_CHANGES), lc1=f.get(LEADER_CHANGES),
                             el=f.get(ELECTIONS, 0) - b.get(ELECTIONS, 0),
                             t0=b.get("distriqueue_raft_term"),
                             t1=f.get("distriqueue_raft_term"), wrk=r))
            progress(f"{n.short}: leader changes {rows[-1]['lc0']:.0f} -> "
                     f"{rows[-1]['lc1']:.0f}, term {rows[-1]['t0']:.0f} -> "
                     f"{rows[-1]['t1']:.0f}; wrk {c} conns {r['rps']:,.0f} req/s "
                     f"p99 {r['p99_ms']:.1f} ms non-2xx {r['non2xx']} errors {r['errors']}")
        changes = sum(r["lc1"] - r["lc0"] for r in rows)
        if changes or term1 != term0:
            anomalies.append(f"leader stability: {changes:.0f} leader changes seen by the "
                             f"nodes, term {term0} -> {term1}; seen: {seen}")
        return dict(rows=rows, leader0=lead0.short if lead0 else None, term0=term0,
                    leader1=lead1.short if lead1 else None, term1=term1, seen=seen), anomalies
    finally:
        cl.stop()


def wait_backlog(nodes, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(n.metrics().get("distriqueue_publish_backlog", 0) == 0 for n in nodes):
            return
        time.sleep(0.2)
    progress(f"publish backlog not drained after {timeout:g} s")


def throughput(a, tmp, cookie, cpus, run_id, client_cpus):
    single = Cluster(tmp, "s", 1, a, cookie, cpus)
    cl = Cluster(tmp, "t", 3, a, cookie, cpus)
    runs, anomalies = [], []
    try:
        single.start(a.ready_timeout)
        cl.start(a.ready_timeout)
        for name, port in (("single", single.nodes[0].http_port),
                           ("cluster", cl.leader().http_port)):
            run_wrk(port, 10, 1, f"w{run_id}{name}", cpus=client_cpus)     # warm-up
        for rnd in range(a.rounds):
            for kind in ("single", "leader", "follower"):
                group = single if kind == "single" else cl
                wait_backlog(single.nodes + cl.nodes, a.drain_timeout)
                lead, term0 = group.agreed()
                if lead is None:
                    raise BenchError(f"{group.label}: no agreed leader\n" + group.logs())
                target = lead if kind != "follower" else \
                    next(n for n in cl.nodes if n is not lead)
                cpu0 = sum(cpu_seconds(n.pid) for n in group.nodes)
                r = run_wrk(target.http_port, a.conns, a.duration,
                            f"t{run_id}r{rnd}{kind}", cpus=client_cpus)
                cpu = sum(cpu_seconds(n.pid) for n in group.nodes) - cpu0
                group.check_crashes()
                lead1, term1 = group.agreed()
                r.update(round=rnd + 1, kind=kind, node=target.short,
                         cpu_us=cpu / max(r["requests"], 1) * 1e6)
                if lead1 is not lead or term1 != term0:
                    anomalies.append(f"throughput round {rnd + 1} {kind}: leader "
                                     f"{lead.short} term {term0} -> "
                                     f"{lead1.short if lead1 else None} term {term1}")
                runs.append(r)
                progress(f"round {rnd + 1} {kind:<8} ({target.short}) {r['rps']:8,.0f} req/s "
                         f"p50 {r['p50_ms']:6.2f} p99 {r['p99_ms']:7.2f} max {r['max_ms']:7.1f} ms "
                         f"non-2xx {r['non2xx']} errors {r['errors']} "
                         f"nodes' CPU {r['cpu_us']:.0f} µs/req")
    finally:
        single.stop()
        cl.stop()
    return runs, anomalies


# --- report ------------------------------------------------------------------------


def ms(x):
    return f"{x:,.0f}"


def report_failover(a, trials):
    first = sorted(t["first_ms"] for t in trials)
    lead = sorted(t["leader_ms"] for t in trials)
    catch = sorted(t["catchup_s"] for t in trials)
    lines = [f"#### Fail-over: kill -9 of the leader ({len(trials)} trials)", "",
             f"Light load: {a.light_conns} client threads, each 1 register every "
             f"{a.light_interval_ms:g} ms (~{a.light_conns * 1000 / a.light_interval_ms:,.0f} "
             f"req/s), round-robin over the live nodes, a 503 or connection error retried at "
             f"once (same id) on the next one. *kill → first 202*: from the `kill -9` to the "
             f"first 202 of an attempt started after it. *kill → new leader*: until both "
             f"survivors name the same new leader (polled every 10 ms). After each trial the "
             f"killed node restarts on its data_dir and the harness waits for all 3 members "
             f"caught up; every acknowledged job is looked up on the new leader "
             f"(lost = 404). p99 of {len(trials)} trials is the max.", "",
             "| | p50 | p99 | max |", "|---|--:|--:|--:|",
             f"| kill → first 202 (ms) | {ms(percentile(first, 50))} | "
             f"{ms(percentile(first, 99))} | {ms(first[-1])} |",
             f"| kill → new leader agreed (ms) | {ms(percentile(lead, 50))} | "
             f"{ms(percentile(lead, 99))} | {ms(lead[-1])} |",
             f"| restart → caught up (s) | {percentile(catch, 50):.1f} | "
             f"{percentile(catch, 99):.1f} | {catch[-1]:.1f} |", "",
             "| trial | killed (term) | new leader (term) | kill → leader ms | "
             "kill → first 202 ms | first 202 via | 503s after kill | other failures | "
             "acked | lost |", "|--:|---|---|--:|--:|---|--:|---|--:|--:|"]
    for i, t in enumerate(trials, 1):
        lines.append(f"| {i} | {t['victim']} ({t['term0']}) | {t['leader']} ({t['term']}) | "
                     f"{ms(t['leader_ms'])} | {ms(t['first_ms'])} | {t['via']} | {t['n503']} | "
                     f"{t['other_n']} {' '.join(t['other'])} | {t['acked']} | {t['lost']} |")
    return "\n".join(lines)


def report_leaders(a, res):
    lines = [f"#### Leader changes under {a.load_seconds:g} s of full register load, no fault",
             "", f"One wrk per node (1 thread, {a.load_conns} connections in all), started "
             f"together. Counters from each node's `/metrics` "
             f"(`distriqueue_raft_events_total`) just before and after the load window. "
             f"Leader {res['leader0']} (term {res['term0']}) before, {res['leader1']} "
             f"(term {res['term1']}) after.", "",
             "| node | conns | leader changes before → after (Δ) | elections Δ | term before → after "
             "| req/s | p99 ms | non-2xx / errors |", "|---|--:|---|--:|---|--:|--:|--:|"]
    total = 0
    for r in res["rows"]:
        w = r["wrk"]
        d = r["lc1"] - r["lc0"]
        total += w["rps"]
        lines.append(f"| {r['node']} | {r['conns']} | {r['lc0']:.0f} → {r['lc1']:.0f} ({d:+.0f}) "
                     f"| {r['el']:+.0f} | {r['t0']:.0f} → {r['t1']:.0f} | {w['rps']:,.0f} | "
                     f"{w['p99_ms']:.1f} | {w['non2xx']} / {w['errors']} |")
    lines.append(f"| all | {a.load_conns} | | | | {total:,.0f} | | |")
    if res["seen"]:
        lines += ["", "Leader/term changes seen by polling `/api/cluster/status` "
                  "(s into the load, node, (leader, term)): "
                  + "; ".join(f"{t:.1f} {n} {c}" for t, n, c in res["seen"])]
    return "\n".join(lines)


def report_throughput(a, runs):
    lines = [f"#### Register throughput: 3 nodes against 1 ({a.rounds} rounds)", "",
             f"Closed loop, wrk 1 thread, {a.conns} keep-alive connections, {a.duration:g} s "
             f"per run, fresh job ids each run; turns: single node (no raft_peers), leader of "
             f"a 3-node cluster, a follower of it (forwards to the leader). Ratios against "
             f"the single node of the same round. *nodes' CPU*: CPU time of all the nodes "
             f"of the target (1 or 3) per response.", "",
             "| round | target | req/s | p50 ms | p99 ms | max ms | non-2xx / errors | "
             "nodes' CPU µs/req | req/s vs single | p99 vs single |",
             "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    ratios = {"leader": ([], []), "follower": ([], [])}
    base = None
    for r in runs:
        if r["kind"] == "single":
            base, vs = r, ("—", "—")
        else:
            rr, rp = r["rps"] / base["rps"], r["p99_ms"] / base["p99_ms"]
            ratios[r["kind"]][0].append(rr)
            ratios[r["kind"]][1].append(rp)
            vs = (f"{rr:.2f}×", f"{rp:.2f}×")
        lines.append(f"| {r['round']} | {r['kind']} ({r['node']}) | {r['rps']:,.0f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | "
                     f"{r['non2xx']} / {r['errors']} | {r['cpu_us']:.0f} | {vs[0]} | {vs[1]} |")
    lines += ["", "| target | median req/s | median p99 ms | req/s vs single (median of rounds) "
              "| p99 vs single (median of rounds) |", "|---|--:|--:|--:|--:|"]
    for kind in ("single", "leader", "follower"):
        rs = [r for r in runs if r["kind"] == kind]
        if not rs:
            continue
        vs = ("1.00×", "1.00×") if kind == "single" else tuple(
            f"{statistics.median(x):.2f}×" for x in ratios[kind])
        lines.append(f"| {kind} | {statistics.median(r['rps'] for r in rs):,.0f} | "
                     f"{statistics.median(r['p99_ms'] for r in rs):.2f} | {vs[0]} | {vs[1]} |")
    return "\n".join(lines)


# --- broker, clean-up, main ----------------------------------------------------------


def purge_queues(port):
    """Empty the job queues of the private broker (the bench jobs published there)."""
    try:
        import pika
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = conn.channel()
        for q in common.JOB_QUEUES:
            try:
                ch.queue_purge(q)
            except Exception:
                ch = conn.channel()
        conn.close()
    except Exception as e:   # informative only
        progress(f"could not purge the private broker's queues: {e!r}")


def main():
    a = parse_args()
    for k in [k for k in os.environ if k.startswith("DQ_")]:
        del os.environ[k]               # no environment overrides of the nodes' configs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started_broker = common.ensure_broker(a.rabbitmq_port, progress)
    if started_broker:
        atexit.register(common.stop_broker, a.rabbitmq_port, progress)
    ncpu = os.cpu_count()
    client_cpus = server_cpus = None
    if a.pin == "split" and ncpu >= 2:
        client_cpus, server_cpus = {ncpu - 1}, set(range(ncpu - 1))
        os.sched_setaffinity(0, client_cpus)
    tmp = tempfile.mkdtemp(prefix="dq-cluster-")
    run_id, cookie = uuid.uuid4().hex[:6], "bench-cluster-" + uuid.uuid4().hex
    progress(f"temp dir {tmp}")
    anomalies, sections, failed = [], [], None
    try:
        if "failover" in a.parts:
            trials, an = failover(a, tmp, cookie, server_cpus, run_id)
            anomalies += an
            sections.append(report_failover(a, trials))
        if "leaders" in a.parts:
            res, an = leaders(a, tmp, cookie, server_cpus, run_id, client_cpus)
            anomalies += an
            sections.append(report_leaders(a, res))
        if "throughput" in a.parts:
            runs, an = throughput(a, tmp, cookie, server_cpus, run_id, client_cpus)
            anomalies += an
            sections.append(report_throughput(a, runs))
    except BenchError as e:
        failed = str(e)
    finally:
        purge_queues(a.rabbitmq_port)
        if a.keep or anomalies or failed:
            progress(f"configs and node logs kept in {tmp}")
        else:
            subprocess.run(["rm", "-rf", tmp])
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    text = (f"### Raft cluster: fail-over, leader stability, 3 nodes against 1\n\n"
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
            f"- machine: {common.machine_line(ROOT)}\n"
            f"- command: `{shlex.join(['python'] + sys.argv)}`\n"
            f"- every node on 127.0.0.1 (own HTTP, metrics and UDP raft ports, fresh "
            f"data_dir), default timings (raft_heartbeat_ms 100, raft_election_timeout_ms "
            f"1000), publish_on_register true to a private RabbitMQ on {a.rabbitmq_port}; "
            f"pinning: {a.pin}" + (" (nodes on CPUs "
                                   f"{','.join(map(str, sorted(server_cpus)))}, wrk and the "
                                   f"harness on {','.join(map(str, sorted(client_cpus)))})"
                                   if server_cpus else "") + "\n"
            + ("- **anomalies**: " + "; ".join(anomalies) + "\n" if anomalies else "")
            + "\n" + "\n\n".join(sections))
    print(text)
    if a.write:
        common.replace_section(a.write, "cluster", text)
        progress(f"wrote {a.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
