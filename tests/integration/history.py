"""A history of what clients saw of a dqorch cluster under faults, the clients that
make it, and a checker of that history.

Recorded (`History`):
- every HTTP request and its answer: t0/t1 (monotonic), node, method, path, body,
  status (None when no answer: refused, reset, timeout; `err` says which), answer body;
- every job message a worker took from job.high/job.medium/job.low: time, queue,
  message_id, headers x-dq-attempt and x-dq-term, the body's id/retry_count/max_retries;
- worker notes (a report given up on, the message then nacked back to its queue);
- the cluster's fault log (faults.FaultCluster.events), used to excuse requests to a
  node that was stopped or killed while they ran;
- the final state: every job as listed by every live node after heal and settle, and
  `why` of each non-terminal job from GET /api/jobs/{id}.

Clients: `Loader` registers unique ids through random nodes (a 503 or no answer is
retried with the same id on another node, as the gateway does), cancels a few of them
and reads them back (GET /api/jobs/{id} on random nodes, listings per node).
`Worker` is like DistriQueue's Python worker: takes messages highest queue first,
reports running, then completed (or failed, 10 %) through random nodes, retrying a
503/no answer for up to 30 s, acks after the report (nack + requeue when it gives up),
and heartbeats through random nodes every second.

Checks (`check`), each sound with what is observable; the first violation of each is
printed with the whole story of its job:
- no_5xx: no answer 5xx other than 503.
- hang: no request without an answer within the client timeout (20 s; a follower's
  forward to the leader times out after 15 s) unless its node was SIGSTOPped or killed
  while it ran.
- accepted_lost: every id that got a 202 on register is in the final listing of every
  live node.
- diverged: after settle, every live node lists every accepted job with the same
  status (all apply the same committed log).
- terminal_changed: a job seen terminal (a GET or listing showing completed/failed/
  cancelled, a cancel answered 200, a `completed` report answered "updated") is
  committed so; no later observation shows another terminal state and its final state
  is the same, unless a register of that id (which starts a new attempt of a terminal
  job) was answered after the observation, or got anything but 202 (a 503 or no
  answer may still be applied later, by a forward in flight). Also: a listing of one
  node showing a job terminal is never followed by a listing of that node, in the same
  process (no restart between), showing it non-terminal (a node applies in log order).
  Reads of other nodes may be stale (CONTRACT: listings are a heartbeat behind), so
  terminal -> non-terminal across nodes is not a violation.
- not_found: a cancel (a write: the leader answers it from a state that holds every
  committed entry) of a job whose register was answered 202 before the cancel was sent
  is never answered 404. (A GET answered 404 is only counted in the figures: a node
  without a leader, just restarted, reads its own possibly older state.)
- no_why: every accepted job not terminal at the end has a non-empty `why`.
- stuck: after heal, with workers running and the broker reachable, every accepted
  job reaches a terminal state within the settle time, or is `queued` with its message
  still in a job queue (drained at the end, once the workers have stopped: a backlog).
  A job queued at the end with no message left is a lost message; pending means never
  published; running means a report lost (the workers retry every report for 30 s
  and nack the message back when they give up).
- result_attempt: a completed job holds the result its completing attempt reported
  (the workers put their worker id and the message's x-dq-attempt in each result):
  never a late report of an earlier attempt, e.g. of a "slow" job whose timed-out
  attempt reports after the same worker took the retry. Only jobs whose messages were
  each delivered once, each attempt published once, and registered once: a delivery
  redelivered or published again that starts after the retry is made is a whole run of
  the job, and the node takes it for the retry's (jobs.py, "Attempts").
- early: a job registered with a delay (DELAY_P of single registers) is never in a
  message taken before its run_at (the node's `run_at`, the cluster's time), allowing
  EARLY_SLACK_MS for the clocks of a test process and the members' median.
- schedule: the campaign's schedule (every SCHEDULE_EVERY_MS, allow_all, a catch-up
  window longer than the run) fired one job per tick: its runs' ticks are aligned and
  contiguous from the first to the last, as many as it says it fired, none skipped;
  its runs are checked as accepted jobs are (lost, diverged, stuck).
- message: each job message has message_id == body id, x-dq-attempt == body
  retry_count <= max_retries; and for one job, a message of a later attempt never
  carries a lower x-dq-term than a message of an earlier attempt (a leader of term t
  has applied every entry committed before t, so it cannot publish an attempt older
  than one a leader of an earlier term published). Delivery order itself is not
  checked: requeues and republished copies legitimately arrive out of order.
"""
from __future__ import annotations

import http.client
import json
import random
import time

import gevent
import pika

JOB_QUEUES = ("job.high", "job.medium", "job.low")
TERMINAL = ("completed", "failed", "cancelled")
CLIENT_TIMEOUT_S = 20.0
# Jobs of type "slow" (SLOW_P of them) have an execution timeout of SLOW_TIMEOUT_S; a
# delivery of one runs past it half the time, in a greenlet of its own while the
# worker takes more messages, so the same worker may take the retry while the timed
# out attempt still runs, and report that attempt late (the `result_attempt` check).
# A worker sends the terminal reports of one job in the order it took the deliveries
# (a new one's `running` goes at once): the order the node's rules rely on.
SLOW_P = 0.05
SLOW_TIMEOUT_S = 1
# Registers (single ones) of a large job, ~40 datagrams between members: under the
# `drop` fault they are the appends that arrive only when repaired (transport.py Rule 3).
LARGE_P = 0.03
LARGE_BYTES = 50_000
# Jobs registered to run later (issue 29): a delay of DELAY_S seconds.
DELAY_P = 0.08
DELAY_S = (0.3, 3.0)
EARLY_SLACK_MS = 500
SCHEDULE_ID = "camp"
SCHEDULE_EVERY_MS = 2000


class History:
    def __init__(self) -> None:
        self.http: list = []
        self.msgs: list = []
        self.notes: list = []
        self.faults: list = []          # (t, kind, detail), from FaultCluster.events
        self.final: dict = {}           # node name -> {job id: job}
        self.why: dict = {}             # job id -> why (non-terminal at the end)
        self.restarts: dict = {}        # node name -> [t of each (re)start]
        self.leftover: dict = {}        # message_id -> [x-dq-term] left in the queues
        self.schedule: dict | None = None   # the campaign's schedule at the end (GET)
        self.schedule_runs: set = set()     # its runs' job ids, in the final listing

    def accepts(self):
        """(job id, record) of every job a 202 accepted: registers, and each item of
        a batch answered accepted."""
        for r in self.http:
            if r["status"] != 202:
                continue
            if r["op"] == "register":
                yield r["job"], r
            elif r["op"] == "batch" and isinstance(r["resp"], dict):
                for item in r["resp"].get("results", []):
                    if item.get("status") == "accepted":
                        yield item["job_id"], r

    def accepted(self) -> set:
        return {job for job, _r in self.accepts()}


class Http:
    """Keep-alive connections to every node; every call is recorded in the History."""

    def __init__(self, hist: History, ports: dict, who: str) -> None:
        self.hist, self.ports, self.who = hist, ports, who
        self.conns: dict = {}

    def call(self, node: str, method: str, path: str, body=None, op: str = "",
             job: str | None = None):
        rec = dict(t0=time.monotonic(), t1=None, node=node, method=method, path=path,
                   body=body, status=None, resp=None, err=None, op=op, job=job,
                   client=self.who)
        raw = json.dumps(body).encode() if body is not None else None
        conn = self.conns.get(node)
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.ports[node],
                                                  timeout=CLIENT_TIMEOUT_S)
                self.conns[node] = conn
            conn.request(method, path, body=raw, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            rec["status"] = resp.status
            try:
                rec["resp"] = json.loads(data) if data else None
            except ValueError:
                rec["resp"] = data[:500]
            if resp.getheader("Connection", "").lower() == "close":
                self._drop(node)
        except (OSError, http.client.HTTPException) as e:
            rec["err"] = f"{type(e).__name__}: {e}"
            self._drop(node)
        rec["t1"] = time.monotonic()
        self.hist.http.append(rec)
        return rec["status"], rec["resp"]

    def _drop(self, node: str) -> None:
        conn = self.conns.pop(node, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for node in list(self.conns):
            self._drop(node)


class Loader:
    """Registers `j-<who>-<i>` through random nodes, one at a time or (`batch_p`) in a
    batch of 2-8; cancels ~`cancel_p` of them; reads."""

    def __init__(self, hist: History, ports: dict, who: str, rng: random.Random,
                 cancel_p: float = 0.05, read_p: float = 0.3, pause_s: float = 0.25,
                 batch_p: float = 0.15) -> None:
        self.hist, self.who, self.rng = hist, who, rng
        self.http = Http(hist, ports, who)
        self.nodes = list(ports)
        self.cancel_p, self.read_p, self.pause_s = cancel_p, read_p, pause_s
        self.batch_p = batch_p
        self.done: list = []

    def _job(self, id_: str, alone: bool = False) -> dict:
        job = {"id": id_, "type": "fault", "priority": self.rng.choice((1, 5, 10)),
               "payload": {"n": id_}, "maxRetries": 2}
        if self.rng.random() < SLOW_P:            # its workers may outlive its timeout
            job.update(type="slow", timeout=SLOW_TIMEOUT_S, maxRetries=3)
        if alone and self.rng.random() < LARGE_P:
            job["payload"]["pad"] = "%x" % self.rng.getrandbits(LARGE_BYTES * 4)
        elif alone and self.rng.random() < DELAY_P:
            job["delay"] = round(self.rng.uniform(*DELAY_S), 3)
        return job

    def register(self, ids: list, deadline_s: float = 60) -> list:
        """The ids accepted: sent again (same ids) through another node after a 503 or
        no answer, as a client of a job server would."""
        deadline = time.monotonic() + deadline_s
        if len(ids) == 1:
            op, path, body = "register", "/api/jobs/register", self._job(ids[0], True)
        else:
            op, path, body = "batch", "/api/jobs/batch", {"jobs": [self._job(i) for i in ids]}
        while time.monotonic() < deadline:
            status, resp = self.http.call(self.rng.choice(self.nodes), "POST", path, body,
                                          op, ids[0] if op == "register" else None)
            if status == 202:
                if op == "register":
                    return ids
                return [x["job_id"] for x in resp["results"] if x.get("status") == "accepted"]
            if status not in (None, 503):
                return []
            gevent.sleep(0.05)
        return []

    def run(self, stop) -> None:
        i = 0
        try:
            while not stop():
                n = self.rng.randint(2, 8) if self.rng.random() < self.batch_p else 1
                ids = [f"j-{self.who}-{i + k}" for k in range(n)]
                i += n
                self.done.extend(self.register(ids))
                r = self.rng.random()
                if self.done and r < self.cancel_p:
                    victim = self.rng.choice(self.done)
                    self.http.call(self.rng.choice(self.nodes), "POST",
                                   f"/api/jobs/{victim}/cancel", None, "cancel", victim)
                elif self.done and r < self.cancel_p + self.read_p:
                    some = self.rng.choice(self.done[-50:])
                    self.http.call(self.rng.choice(self.nodes), "GET", f"/api/jobs/{some}",
                                   None, "get", some)
                elif r > 0.97:
                    self.http.call(self.rng.choice(self.nodes), "GET",
                                   "/api/jobs?limit=200&full=0", None, "list")
                gevent.sleep(self.rng.uniform(0.5, 1.5) * self.pause_s)
        finally:
            self.http.close()


class Worker:
    def __init__(self, hist: History, ports: dict, rabbit_port: int, who: str,
                 rng: random.Random, fail_p: float = 0.1, vhost: str = "/") -> None:
        self.vhost = vhost
        self.hist, self.ports, self.rabbit_port, self.who, self.rng = \
            hist, ports, rabbit_port, who, rng
        self.http = Http(hist, ports, who)
        self.beat_http = Http(hist, ports, who + "/hb")
        self.nodes = list(ports)
        self.fail_p = fail_p
        self.busy = False
        self.last_take = time.monotonic()

    def report(self, job_id: str, body: dict, deadline_s: float = 30, http=None):
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            status, resp = (http or self.http).call(self.rng.choice(self.nodes), "POST",
                                          "/api/jobs/status", body, "report", job_id)
            if status in (200, 202):
                return resp
            gevent.sleep(0.1)
        return None

    def beat(self, stop) -> None:
        while not stop():
            self.beat_http.call(self.rng.choice(self.nodes), "POST", "/api/workers/heartbeat",
                                {"workerId": self.who, "workerType": "python",
                                 "capacity": 1}, "heartbeat")
            gevent.sleep(1.0)
        self.beat_http.close()

    def run(self, stop) -> None:
        beater = gevent.spawn(self.beat, stop)
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.rabbit_port, virtual_host=self.vhost, heartbeat=30))
        ch = conn.channel()
        slow: list = []
        self.unreported: dict = {}        # job id -> the slow delivery not yet reported
        try:
            while not stop():
                try:
                    for q in JOB_QUEUES:
                        method, props, raw = ch.basic_get(q, auto_ack=False)
                        if method is not None:
                            break
                    else:
                        conn.sleep(0.02)
                        continue
                except pika.exceptions.ChannelClosedByBroker as e:
                    # 404 until the first leader has declared the queues on the vhost
                    if e.reply_code != 404:
                        raise
                    ch = conn.channel()
                    conn.sleep(0.1)
                    continue
                self.busy = True
                self.last_take = time.monotonic()
                try:
                    if b'"type":"slow"' in raw and self.rng.random() < 0.5:
                        ch.basic_ack(method.delivery_tag)      # (acked: a late attempt)
                        g = gevent.spawn(self.handle, None, q, method, props, raw,
                                         SLOW_TIMEOUT_S + 1.0)
                        jid = props.message_id
                        g.link(lambda g, jid=jid: self.unreported.get(jid) is g
                               and self.unreported.pop(jid))
                        self.unreported[jid] = g
                        slow.append(g)
                    else:
                        self.handle(ch, q, method, props, raw)
                finally:
                    self.busy = False
                    self.last_take = time.monotonic()
        finally:
            gevent.joinall(slow, timeout=60)
            beater.join(5)
            self.http.close()
            try:
                conn.close()
            except Exception:
                pass

    def handle(self, ch, q, method, props, raw, work_s: float | None = None) -> None:
        """One delivery: running, work, then completed or failed, acked after the
        report. ch None: a slow delivery, acked when taken, on an HTTP connection of
        its own (it runs beside the worker's loop)."""
        body = json.loads(raw)
        h = props.headers or {}
        self.hist.msgs.append(dict(t=time.monotonic(), wall_ms=time.time() * 1000,
                                   queue=q, message_id=props.message_id,
                                   attempt=h.get("x-dq-attempt"), term=h.get("x-dq-term"),
                                   body_id=body.get("id"), retry_count=body.get("retry_count"),
                                   max_retries=body.get("max_retries"), worker=self.who,
                                   redelivered=method.redelivered))
        jid = body.get("id") or props.message_id
        http = self.http if ch is not None else Http(self.hist, self.ports, self.who)
        try:
            self._deliver(ch, http, method, jid, h.get("x-dq-attempt"), work_s)
        finally:
            if ch is None:
                http.close()

    def _deliver(self, ch, http, method, jid, attempt, work_s) -> None:
        def settle(requeue: bool) -> None:
            if ch is None:
                return
            if requeue:
                ch.basic_nack(method.delivery_tag, requeue=True)
            else:
                ch.basic_ack(method.delivery_tag)
        resp = self.report(jid, {"jobId": jid, "status": "running", "workerId": self.who},
                           http=http)
        if resp is None:
            self.hist.notes.append((time.monotonic(), jid, f"{self.who} gave up on running"))
            settle(requeue=True)
            return
        if resp.get("status") == "ignored":
            settle(requeue=False)
            return
        earlier = self.unreported.get(jid)
        if earlier is not None and earlier is not gevent.getcurrent():
            earlier.join(60)                    # its terminal report goes first
        gevent.sleep(work_s if work_s is not None else self.rng.uniform(0, 0.05))
        outcome = "failed" if self.rng.random() < self.fail_p else "completed"
        resp = self.report(jid, {"jobId": jid, "status": outcome, "workerId": self.who,
                                 "result": {"by": self.who, "attempt": attempt},
                                 "errorMessage": "simulated" if outcome == "failed" else None},
                           http=http)
        if resp is None:
            self.hist.notes.append((time.monotonic(), jid, f"{self.who} gave up on {outcome}"))
            settle(requeue=True)
            return
        settle(requeue=False)


def drain(port: int, vhost: str, queue: str) -> list:
    """Take every message left in a queue: [(properties, body dict)]."""
    from .conftest import drain as drain_queue
    return drain_queue(port, queue, vhost)


# ---------------------------------------------------------------- the checker

def _observations(hist: History):
    """(t0, t1, node, status, kind) of every observation of a job's status, by job."""
    out: dict = {}
    for r in hist.http:
        if r["status"] is None:
            continue
        if r["op"] == "get" and r["status"] == 200 and isinstance(r["resp"], dict):
            out.setdefault(r["job"], []).append((r["t0"], r["t1"], r["node"],
                                                 r["resp"].get("status"), "get"))
        elif r["op"] == "list" and r["status"] == 200 and isinstance(r["resp"], dict):
            for j in r["resp"].get("jobs", []):
                out.setdefault(j["id"], []).append((r["t0"], r["t1"], r["node"],
                                                    j["status"], "list"))
        elif r["op"] == "cancel" and r["status"] == 200:
            out.setdefault(r["job"], []).append((r["t0"], r["t1"], r["node"], "cancelled",
                                                 "cancel"))
        elif (r["op"] == "report" and r["status"] == 200 and isinstance(r["resp"], dict)
              and r["resp"].get("status") == "updated"
              and (r["body"] or {}).get("status") == "completed"):
            out.setdefault(r["job"], []).append((r["t0"], r["t1"], r["node"], "completed",
                                                 "report"))
    return out


def _stopped_during(hist: History, node: str, t0: float, t1: float) -> bool:
    state = None                       # "stopped" / "down" / None, replayed in order
    for t, kind, detail in hist.faults:
        if detail != node:
            continue
        if t > t1:
            break
        if kind in ("sigstop", "kill9"):
            state = kind
            if t >= t0:
                return True
        elif kind in ("sigcont", "restart"):
            if state is not None and t >= t0:
                return True
            state = None
    return state is not None


def _batch_ids(r) -> list:
    return [item.get("id") for item in (r["body"] or {}).get("jobs", [])]


def story(hist: History, job: str) -> str:
    lines = [f"=== story of {job}"]
    rows = []
    for r in hist.http:
        mention = r["job"] == job or (r["op"] == "list" and isinstance(r["resp"], dict)
                                      and any(j["id"] == job for j in r["resp"].get("jobs", []))
                                      ) or (r["op"] == "batch" and job in _batch_ids(r))
        if not mention:
            continue
        shown = r["resp"]
        if r["op"] == "list":
            shown = [j["status"] for j in r["resp"]["jobs"] if j["id"] == job]
        rows.append((r["t0"], f"{r['t0']:.3f}-{r['t1']:.3f} {r['client']} -> {r['node']} "
                              f"{r['method']} {r['path']} {json.dumps(r['body'])[:160]} => "
                              f"{r['status']} {json.dumps(shown, default=str)[:300]}"
                              f"{' ' + r['err'] if r['err'] else ''}"))
    for m in hist.msgs:
        if job in (m["message_id"], m["body_id"]):
            rows.append((m["t"], f"{m['t']:.3f} message {m['queue']} id={m['message_id']} "
                                 f"attempt={m['attempt']} term={m['term']} body.retry="
                                 f"{m['retry_count']} to {m['worker']}"
                                 f"{' redelivered' if m['redelivered'] else ''}"))
    for t, j, what in hist.notes:
        if j == job:
            rows.append((t, f"{t:.3f} note: {what}"))
    rows.sort(key=lambda x: x[0])
    if rows:
        lo, hi = rows[0][0], rows[-1][0]
        for t, kind, detail in hist.faults:
            if lo - 5 <= t <= hi + 5:
                rows.append((t, f"{t:.3f} FAULT {kind} {detail}"))
        rows.sort(key=lambda x: x[0])
    lines += [r[1] for r in rows]
    for node, jobs in sorted(hist.final.items()):
        j = jobs.get(job)
        lines.append(f"final on {node}: " + (json.dumps({k: j.get(k) for k in (
            "status", "retry_count", "worker_id", "queue")}) if j else "ABSENT"))
    if job in hist.why:
        lines.append(f"why: {hist.why[job]}")
    return "\n".join(lines)


def _terminal_reports_resent_after_an_unknown_outcome(hist: History) -> set:
    """Jobs a worker sent a terminal report of again after an answer that left its
    outcome unknown (no answer, or a 503 saying so: it may have committed). When the
    first one committed and paid a debt, the resend is a repeat the node cannot tell
    from the report of the attempt the worker now runs: jobs.py, "Attempts", the last
    blind spot (seen on fault seed 1796550205, 2026-12-06)."""
    out = set()
    unknown: set = set()
    for r in hist.http:
        body = r["body"]
        if r["op"] != "report" or not isinstance(body, dict) \
                or body.get("status") not in ("completed", "failed"):
            continue
        key = (r["job"], json.dumps(body, sort_keys=True))
        if key in unknown:
            out.add(r["job"])
        msg = r["resp"].get("message", "") if isinstance(r["resp"], dict) else ""
        if r["status"] is None or (r["status"] == 503 and "unknown" in msg):
            unknown.add(key)
    return out


def _result_attempts(hist: History, accepted, live: dict, regs: dict) -> list:
    """result_attempt: a completed job holds the result of the attempt that completed
    it (its worker's report of that delivery), never a late report of an earlier one.
    Sound only where the node can know: a job whose every message was delivered once
    (no redelivery, no give-up nacked back), no attempt published twice (a broker cut
    or a fail-over: at least once), registered once, whose terminal reports were never
    resent after an unknown outcome."""
    v = []
    redelivered = {m["message_id"] for m in hist.msgs if m["redelivered"]}
    seen: set = set()
    for m in hist.msgs:
        key = (m["message_id"], m["attempt"])
        if key in seen:
            redelivered.add(m["message_id"])          # published twice: the same case
        seen.add(key)
    gave_up = {jid for _, jid, _ in hist.notes}
    resent = _terminal_reports_resent_after_an_unknown_outcome(hist)
    for job in sorted(accepted):
        final = next((jobs[job] for jobs in live.values() if job in jobs), None)
        if (final is None or final["status"] != "completed" or job in redelivered
                or job in gave_up or len(regs.get(job, ())) > 1 or job in resent):
            continue
        res = final.get("result")
        if not isinstance(res, dict) or "attempt" not in res:
            continue
        if (res["attempt"], res["by"]) != (final["retry_count"], final["worker_id"]):
            v.append(("result_attempt", job, f"completed by {final['worker_id']} at "
                                             f"retry_count {final['retry_count']} with the "
                                             f"result of {res['by']}'s attempt "
                                             f"{res['attempt']}"))
    return v


def _early(hist: History, live: dict) -> list:
    """No message of a delayed job before its run_at (the first node that lists it)."""
    run_at = {}
    for jobs in live.values():
        for i, j in jobs.items():
            if j.get("run_at") is not None:
                run_at.setdefault(i, j["run_at"])
    out = []
    for m in hist.msgs:
        at = run_at.get(m["message_id"])
        if at is not None and m.get("wall_ms", at) < at - EARLY_SLACK_MS:
            out.append(("early", m["message_id"], f"taken {at - m['wall_ms']:.0f} ms before "
                                                  f"its run_at {at}"))
    return out


def _schedule(hist: History) -> list:
    """One job per tick, none skipped (its catch-up window is longer than the run)."""
    s = hist.schedule
    if s is None:
        return []
    from datetime import datetime
    ticks = sorted(round(datetime.fromisoformat(i.split("@", 1)[1].replace(
        "Z", "+00:00")).timestamp() * 1000) for i in hist.schedule_runs)
    out = []
    if any(t % SCHEDULE_EVERY_MS for t in ticks):
        out.append(("schedule", None, f"a run not on a tick: {ticks}"))
    if ticks:
        want = list(range(ticks[0], ticks[-1] + 1, SCHEDULE_EVERY_MS))
        missing = sorted(set(want) - set(ticks))
        if missing:
            out.append(("schedule", None, f"{len(missing)} ticks without a run, first "
                                          f"{missing[:3]}; skipped_late "
                                          f"{s['skipped_late']}"))
    if s["fired"] != len(ticks) or s["skipped_late"] or s["skipped_overlap"]:
        out.append(("schedule", None, f"fired {s['fired']} for {len(ticks)} runs listed; "
                                      f"skipped late {s['skipped_late']}, overlapping "
                                      f"{s['skipped_overlap']}"))
    return out


def check(hist: History) -> list:
    """[(check name, job id or None, message)] for every violation found."""
    v: list = []
    accepted = hist.accepted() | hist.schedule_runs

    for r in hist.http:
        if r["status"] is not None and r["status"] >= 500 and r["status"] != 503:
            v.append(("no_5xx", r["job"], f"{r['method']} {r['path']} on {r['node']} -> "
                                          f"{r['status']} {r['resp']}"))
        if (r["status"] is None and r["t1"] - r["t0"] >= CLIENT_TIMEOUT_S - 0.5
                and not _stopped_during(hist, r["node"], r["t0"], r["t1"])):
            v.append(("hang", r["job"], f"{r['method']} {r['path']} on {r['node']}: no answer "
                                        f"in {r['t1'] - r['t0']:.1f} s ({r['err']})"))

    accepted_at = {}
    for job, r in hist.accepts():
        accepted_at[job] = min(accepted_at.get(job, r["t1"]), r["t1"])
    for r in hist.http:
        if (r["op"] in ("cancel", "get") and r["status"] == 404 and r["job"] in accepted_at
                and r["t0"] > accepted_at[r["job"]]):
            v.append(("not_found", r["job"], f"{r['op']} on {r['node']} answered 404 after "
                                             f"the job's 202: {r['resp']}"))

    live = {n: jobs for n, jobs in hist.final.items() if jobs is not None}
    for job in sorted(accepted):
        missing = [n for n, jobs in live.items() if job not in jobs]
        if missing:
            v.append(("accepted_lost", job, f"202 on register, absent at the end on {missing}"))
            continue
        states = {n: jobs[job]["status"] for n, jobs in live.items()}
        if len(set(states.values())) > 1:
            v.append(("diverged", job, f"final statuses differ: {states}"))
        final = next(iter(states.values()), None)
        if final is not None and final not in TERMINAL:
            if not hist.why.get(job):
                v.append(("no_why", job, f"{final} at the end without a why"))
            if not (final == "queued" and job in hist.leftover):     # a backlog, not lost
                v.append(("stuck", job, f"still {final} after the settle time, no message "
                                        f"left in the queues: {hist.why.get(job)}"))

    obs = _observations(hist)
    regs: dict = {}
    for r in hist.http:
        if r["op"] == "register":
            regs.setdefault(r["job"], []).append(r)
        elif r["op"] == "batch":
            for job in _batch_ids(r):
                regs.setdefault(job, []).append(r)
    for job, seen in obs.items():
        seen.sort(key=lambda o: o[0])
        finals = {n: jobs[job]["status"] for n, jobs in live.items() if job in jobs}
        for k, (t0, t1, node, st, kind) in enumerate(seen):
            if st not in TERMINAL:
                continue
            reset = [r for r in regs.get(job, []) if r["status"] != 202 or r["t1"] > t1]
            if reset:
                continue
            later = [o for o in seen[k + 1:] if o[0] > t1 and o[3] in TERMINAL and o[3] != st]
            if later:
                o = later[0]
                v.append(("terminal_changed", job, f"{st} ({kind} on {node} at {t1:.3f}), then "
                                                   f"{o[3]} ({o[4]} on {o[2]} at {o[0]:.3f})"))
                break
            bad = {n: s for n, s in finals.items() if s != st}
            if bad:
                v.append(("terminal_changed", job, f"{st} ({kind} on {node} at {t1:.3f}), "
                                                   f"final {bad}"))
                break
            if kind == "list":
                starts = hist.restarts.get(node, [])
                for o in seen[k + 1:]:
                    if (o[4] == "list" and o[2] == node and o[0] > t1 and o[3] not in TERMINAL
                            and not any(t1 < s < o[0] for s in starts)):
                        v.append(("terminal_changed", job,
                                  f"listing on {node} showed {st} at {t1:.3f}, then {o[3]} "
                                  f"at {o[0]:.3f} with no restart between"))
                        break

    v += _result_attempts(hist, accepted, live, regs)

    v += _early(hist, live)
    v += _schedule(hist)

    by_job: dict = {}
    for m in hist.msgs:
        by_job.setdefault(m["message_id"], []).append(m)
        if m["message_id"] != m["body_id"]:
            v.append(("message", m["message_id"], f"message_id {m['message_id']} != body id "
                                                  f"{m['body_id']}"))
        if m["attempt"] != m["retry_count"] or (
                m["max_retries"] is not None and m["attempt"] is not None
                and m["attempt"] > m["max_retries"]):
            v.append(("message", m["message_id"], f"x-dq-attempt {m['attempt']}, body "
                                                  f"retry_count {m['retry_count']}, max "
                                                  f"{m['max_retries']}"))
    for job, ms in by_job.items():
        for a in ms:
            for b in ms:
                if (a["attempt"] is not None and b["attempt"] is not None
                        and a["attempt"] < b["attempt"] and a["term"] is not None
                        and b["term"] is not None and b["term"] < a["term"]):
                    v.append(("message", job, f"attempt {a['attempt']} published in term "
                                              f"{a['term']}, later attempt {b['attempt']} in "
                                              f"older term {b['term']}"))
                    break
            else:
                continue
            break
    return v


def report(hist: History, violations: list, stories: int = 5) -> str:
    """The violations by check, and the whole story of the first job of each check."""
    if not violations:
        return "no violations"
    out = [f"{len(violations)} violations"]
    by: dict = {}
    for name, job, msg in violations:
        by.setdefault(name, []).append((job, msg))
    for name, items in by.items():
        out.append(f"--- {name}: {len(items)}; first: {items[0][0]}: {items[0][1]}")
        for job, msg in items[1:4]:
            out.append(f"    also {job}: {msg}")
    told = 0
    for name, items in by.items():
        job = items[0][0]
        if job is not None and told < stories:
            out.append(story(hist, job))
            told += 1
    return "\n".join(out)
