"""Leader-only side effects, derived from the applied state (DESIGN §2): publish every
`pending` job and every outbox event to RabbitMQ, and turn the broker's confirms into
commands (`mark_queued`, `mark_published`). The only module that publishes.

At-least-once by design: after a crash or reconnect, whatever is still pending or
unpublished in the state is simply published again.

Rule 1: a confirmed job is published again only when the state says a newer attempt
needs it, never because its mark could not be written: a failed mark is retried (with
backoff), and nothing is published while the log cannot be written.
Rule 2: a mark this node cannot propose (not leader) is dropped; the next leader finds
the job still pending and publishes it again.
Rule 3: it runs only between start(term) and stop() (the node's became_leader and
stepped_down): start rebuilds everything from the applied state, stop forgets it all,
and every mark carries the term it was started in, so apply refuses a deposed
leader's late one.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import logging
import time

import gevent
import gevent.event

from . import amqp, jobs, metrics
from . import state as st_mod
from .broker import JOBS_EXCHANGE, STATUS_EXCHANGE
from .jobs import PENDING, RUNNING
from .raft.core import NotLeader

log = logging.getLogger(__name__)

RETRY_AFTER_REJECT_S = 1.0     # a nacked job is tried again after this
# A job queue that returns its jobs unroutable (deleted in RabbitMQ, or its binding):
# the topology is declared again and its jobs are published again after the first
# delay, doubling to the cap while the queue keeps returning them. Before: every
# second for ever, with a warning each time.
RETURNED_RETRY_S = (1.0, 30.0)
# Ids waiting to be published. While nothing can be published (RabbitMQ down, the
# log not writable) every register and retry added one, cancelled and evicted ones
# included: a fuzz run with the broker down grew it to 18,000 for 1,900 pending jobs.
# Past this it is dropped, and the pending jobs are read from the state again when
# publishing resumes (what start() does).
MAX_TODO = 100_000
TICK_S = 0.5                   # the loop runs at least this often
MARK_RETRY_S = (0.5, 10.0)     # a failed mark is retried after this, doubling to the cap
_dumps = jobs.dumps           # bytes; splices stored payloads
EVENT_PROPS = amqp.properties(content_type="application/json", delivery_mode=2)


class Dispatcher:
    def __init__(self, node, broker, *, now_ms) -> None:
        self.node = node
        self.broker = broker
        self.now_ms = now_ms
        self.term = 0
        self._loop = None
        self._tick = None
        self._reset()

    def _reset(self) -> None:
        self._wake = gevent.event.Event()
        self._todo: collections.deque = collections.deque()   # job ids to publish
        self._later: list = []            # heap of (due monotonic, n, id)
        self._n = itertools.count()
        self._inflight: set = set()       # ids published, not yet confirmed
        self._marking: set = set()        # ids confirmed, mark_queued not yet applied
        self._unmarked: list = []         # [id, attempt] confirmed, mark not yet proposed
        self._mark_after = 0.0            # monotonic: no mark proposed before it
        self._mark_failures = 0           # in a row
        self._confirmed: list = []        # tokens from the broker (hub callbacks)
        self._rejected: list = []
        self._ev_next = 1                 # next outbox seq to publish
        self._ev_acked = 0                # all events <= this are confirmed
        self._ev_confirmed: set = set()   # confirmed seqs above _ev_acked
        self._marking_events = False
        self._rescan = False              # _todo was dropped: read pending from the state
        self.unroutable: dict = {}        # job queue -> Unroutable, while it returns jobs
        self._returned_at: dict = {}      # job id -> at_ms its last return (those queues)
        self._events_dropped = 0          # st.events_dropped last seen

    # Wiring: these run in the hub or in the commit loop and must not block. #####

    def on_applied(self, cmd: dict, outcome: dict) -> None:
        if self._loop is None:
            return                     # Rule 3: not leading
        if outcome.get("publish"):
            self._schedule(cmd["id"])
        for id_ in outcome.get("publish_ids", ()):
            self._schedule(id_)
        if cmd["op"] not in ("register", "mark_queued", "mark_published", "noop"):
            self._wake.set()           # may have added outbox events

    def _schedule(self, id_: str) -> None:
        """Publish now, or once its retry backoff (not_before) has passed."""
        job = self.node.state.jobs.get(id_)
        wait_ms = (job.get("not_before") or 0) - self.now_ms() if job is not None else 0
        if wait_ms > 0:
            heapq.heappush(self._later, (time.monotonic() + wait_ms / 1000, next(self._n), id_))
        elif not self._rescan:
            if len(self._todo) >= MAX_TODO and not self._may_publish():
                self._todo.clear()
                self._rescan = True
            else:
                self._todo.append(id_)
        self._wake.set()

    def _schedule_pending(self) -> None:
        """_schedule for every pending job, oldest first, in one pass: _schedule for
        each of them held the hub 0.6 s at 250,000 pending jobs (a new leader's start,
        the API answering nothing meanwhile); this is a few tens of ms."""
        st = self.node.state
        now_ms, jobs_by_id, by_seq = self.now_ms(), st.jobs, st.by_seq
        due, later = [], []
        for seq in st.by_status[PENDING]:        # oldest first
            id_ = by_seq[seq]
            not_before = jobs_by_id[id_].get("not_before")
            if not_before is not None and not_before > now_ms:
                later.append(id_)
            else:
                due.append(id_)
        for id_ in later:                        # few: retries waiting out a backoff
            self._schedule(id_)
        if not self._rescan:
            room = MAX_TODO - len(self._todo)
            if len(due) > room and not self._may_publish():
                self._todo.clear()               # as _schedule: read again when it can
                self._rescan = True
            else:
                self._todo.extend(due)
        if due:
            self._wake.set()

    def on_confirmed(self, tokens: list) -> None:
        self._confirmed.extend(tokens)
        self._wake.set()

    def on_rejected(self, tokens: list, reason: str) -> None:
        self._rejected.append((tokens, reason))
        self._wake.set()

    def wake(self, *_args) -> None:
        self._wake.set()

    # Loop ##################################################################

    def start(self, term: int | None = None) -> None:
        self.stop()
        self._reset()
        self.term = self.node.term if term is None else term
        st = self.node.state
        self._schedule_pending()
        self._events_dropped = st.events_dropped
        self._ev_next = self._ev_acked = st.outbox_done
        self._ev_next += 1
        if self._todo or st.outbox:
            log.info("dispatch resumes pending_jobs=%d unpublished_events=%d",
                     len(self._todo), len(st.outbox))
        self._loop = gevent.spawn(self._run)
        # The loop's wake-up every TICK_S (backoffs, retries), one repeating hub timer:
        # a wait(timeout=) made and cancelled a Timeout per wake-up, ~6 µs each and
        # several wake-ups a job.
        self._tick = gevent.get_hub().loop.timer(TICK_S, TICK_S)
        self._tick.start(self._wake.set)

    def stop(self) -> None:
        if self._loop is not None:
            self._tick.stop()
            self._loop.kill()
            self._loop = None
        self.unroutable.clear()           # the next leader finds out for itself
        self._returned_at.clear()

    def backlog(self) -> dict:
        st = self.node.state
        return {"jobs_to_publish": len(self._todo), "jobs_waiting_backoff": len(self._later),
                "jobs_in_flight": len(self._inflight),
                "events_unpublished": st.outbox_next - 1 - st.outbox_done}

    def _run(self) -> None:
        while True:
            self._wake.wait()               # set by a callback, or by _tick
            self._wake.clear()
            try:
                self._handle_confirms()
                self._handle_rejects()
                if self._may_publish():
                    self._publish_events()
                    self._publish_jobs()
            except Exception:
                log.exception("dispatch step failed; retrying")
                gevent.sleep(0.5)

    def _handle_confirms(self) -> None:
        st = self.node.state
        if st.events_dropped != self._events_dropped:
            log.warning("status events dropped unpublished dropped=%d total=%d (more than "
                        "%d waited: RabbitMQ down too long)", st.events_dropped -
                        self._events_dropped, st.events_dropped, st_mod.OUTBOX_MAX)
            self._events_dropped = st.events_dropped
        done = st.outbox_done
        if self._ev_acked < done:
            # Marked published by an earlier leader's late mark, or by this one: those
            # are never published (or confirmed) again here.
            self._ev_acked = done
            self._ev_confirmed = {s for s in self._ev_confirmed if s > done}
            self._ev_next = max(self._ev_next, done + 1)
        confirmed, self._confirmed = self._confirmed, []
        now = time.monotonic()
        jobs_confirmed = 0
        if self.unroutable:
            self._routed_again(tok[1] for tok in confirmed if tok[0] == "j")
        for tok in confirmed:
            if tok[0] == "j":
                self._inflight.discard(tok[1])
                self._marking.add(tok[1])
                self._unmarked.append([tok[1], tok[2]])
                metrics.PUBLISH_CONFIRM_SECONDS.observe(now - tok[3])
                jobs_confirmed += 1
            else:
                self._ev_confirmed.add(tok[1])
        if jobs_confirmed:
            metrics.child(metrics.PUBLISHED, "job", "confirmed").inc(jobs_confirmed)
        n = 0
        while self._ev_acked + 1 in self._ev_confirmed:
            self._ev_acked += 1
            self._ev_confirmed.discard(self._ev_acked)
            n += 1
        if n:
            metrics.child(metrics.PUBLISHED, "event", "confirmed").inc(n)
        if now < self._mark_after:
            return                               # Rule 1: a failed mark waits its backoff
        if self._unmarked:
            items, self._unmarked = self._unmarked, []
            self._propose({"op": "mark_queued", "items": items}, items)
        # Checked on every pass, not only when confirms arrive: confirms that came
        # while the last mark_published was in flight are marked by the next one.
        if self._ev_acked > self.node.state.outbox_done and not self._marking_events:
            self._marking_events = True
            self._propose({"op": "mark_published", "upto": self._ev_acked}, None)

    def _propose(self, cmd: dict, items) -> None:
        cmd["term"] = self.term                  # Rule 3
        try:
            # lazy: a mark rides in the next client request's commit round (raft/
            # node.py Rule 4) instead of paying an fsync'd round of its own.
            result = self.node.propose_async(cmd, lazy=True)
        except NotLeader as e:                   # Rule 2
            log.info("dispatch dropped a mark op=%s reason=%s", cmd["op"], e)
            if items is None:
                self._marking_events = False
            else:
                self._marking.difference_update(id_ for id_, _ in items)
            return
        result.rawlink(lambda r: self._after_mark(items, r))

    def _after_mark(self, items, result) -> None:
        ok = result.successful()
        if items is None:
            self._marking_events = False
        elif not ok:
            self._unmarked.extend(items)         # Rule 1: retry the mark, not the publish
        self._mark_result(ok, result)
        self._wake.set()
        if items is None or not ok:
            return
        st = self.node.state
        for id_, _attempt in items:
            self._marking.discard(id_)
            job = st.jobs.get(id_)
            # Still pending: the mark was stale (a newer attempt came while this one
            # was in flight and was skipped then). Publish the new attempt.
            if job is not None and job["status"] == PENDING:
                self._todo.append(id_)

    def _mark_result(self, ok: bool, result) -> None:
        """Backoff for failed marks, and one log line per change of state."""
        if ok:
            if self._mark_failures:
                log.warning("marks written again failed_marks=%d", self._mark_failures)
            self._mark_failures, self._mark_after = 0, 0.0
            return
        self._mark_failures += 1
        first, cap = MARK_RETRY_S
        delay = min(cap, first * 2 ** (self._mark_failures - 1))
        self._mark_after = time.monotonic() + delay
        if self._mark_failures == 1:
            log.error("cannot mark confirms error=%s; retrying with backoff up to %gs",
                      result.exception, cap)

    def _handle_rejects(self) -> None:
        if self._rejected:
            rejected, self._rejected = self._rejected, []
            for tokens, reason in rejected:
                jobs_back = []
                for tok in tokens:
                    if tok[0] == "j":
                        self._inflight.discard(tok[1])
                        jobs_back.append(tok[1])
                    else:
                        self._ev_next = min(self._ev_next, tok[1])
                if not jobs_back:
                    continue
                metrics.child(metrics.PUBLISHED, "job", reason).inc(len(jobs_back))
                if reason == "connection_lost":
                    self._todo.extendleft(reversed(jobs_back))   # keep oldest first
                elif reason == "returned":
                    self._returned(jobs_back)
                else:
                    due = time.monotonic() + RETRY_AFTER_REJECT_S
                    for id_ in jobs_back:
                        heapq.heappush(self._later, (due, next(self._n), id_))
                    log.warning("broker refused jobs reason=%s count=%d; retry in %gs",
                                reason, len(jobs_back), RETRY_AFTER_REJECT_S)
        now = time.monotonic()
        while self._later and self._later[0][0] <= now:
            self._todo.append(heapq.heappop(self._later)[2])

    # Unroutable job queues ###################################################
    # An episode starts with the first job a queue returns (basic.return: no queue
    # bound to its routing key) and ends with the first of its jobs confirmed routed.
    # One WARNING when it starts, one INFO when it ends, none per message; health,
    # a gauge and each returned job's `why` say it meanwhile.

    def _returned(self, ids: list) -> None:
        st, at_ms, now = self.node.state, self.now_ms(), time.monotonic()
        by_queue: dict = {}
        for id_ in ids:
            job = st.jobs.get(id_)
            if job is not None:
                by_queue.setdefault(job["queue"], []).append(id_)
        for queue, queue_ids in by_queue.items():
            ep = self.unroutable.get(queue)
            if ep is None:
                ep = self.unroutable[queue] = Unroutable(at_ms)
                metrics.child(metrics.UNROUTABLE_EPISODES, queue).inc()
                log.warning("job queue unroutable queue=%s returned=%d: RabbitMQ has no "
                            "queue bound to its routing key (deleted?); declaring the "
                            "queues again, retrying its jobs with backoff up to %gs",
                            queue, len(queue_ids), RETURNED_RETRY_S[1])
            if now >= ep.retry_at:
                # A new round: the last one's republish came back too. Declare again
                # (someone may delete it again) and wait twice as long.
                ep.delay_s = min(RETURNED_RETRY_S[1], ep.delay_s * 2) if ep.rounds \
                    else RETURNED_RETRY_S[0]
                ep.retry_at = now + ep.delay_s
                ep.rounds += 1
                self.broker.redeclare()
            ep.returned += len(queue_ids)
            ep.last_at_ms = at_ms
            for id_ in queue_ids:
                self._returned_at[id_] = at_ms
                heapq.heappush(self._later, (ep.retry_at, next(self._n), id_))

    def _routed_again(self, ids) -> None:
        st = self.node.state
        for id_ in ids:
            job = st.jobs.get(id_)
            queue = job["queue"] if job is not None else None
            ep = self.unroutable.pop(queue, None)
            if ep is None:
                continue
            waiting = [i for i, _ in self._returned_at.items()
                       if (j := st.jobs.get(i)) is not None and j["queue"] == queue]
            for i in waiting:
                del self._returned_at[i]
            # Its jobs waiting out the backoff go now; their heap entries find them
            # published already and are skipped.
            self._todo.extend(waiting)
            log.info("job queue routable again queue=%s returned=%d rounds=%d "
                     "seconds=%d", queue, ep.returned, ep.rounds,
                     (self.now_ms() - ep.since_ms) // 1000)
            if not self.unroutable:
                self._returned_at.clear()
                return

    def why_returned(self, job) -> str | None:
        """The job's `why` while its queue returns jobs unroutable; None otherwise."""
        at_ms = self._returned_at.get(job["id"])
        if at_ms is None or job["status"] != PENDING or job["queue"] not in self.unroutable:
            return None
        return (f"pending: {job['queue']} returned it unroutable at {_clock(at_ms)}; "
                f"re-declaring the queues")

    def unroutable_status(self) -> dict:
        """{queue: {...}} for GET /api/health, while a queue returns jobs."""
        now = time.monotonic()
        return {q: {"since": ep.since_ms, "last_returned_at": ep.last_at_ms,
                    "returned": ep.returned, "rounds": ep.rounds,
                    "retry_delay_s": ep.delay_s,
                    "next_retry_s": round(max(0.0, ep.retry_at - now), 1)}
                for q, ep in self.unroutable.items()}

    def _may_publish(self) -> bool:
        """Rule 1: while the log cannot be written, a publish could not be marked."""
        node = self.node
        return node.role == "leader" and node.log_ok and node.term == self.term \
            and node.has_quorum_contact()

    def _publish_events(self) -> None:
        """Only when _may_publish(), as _publish_jobs."""
        st, broker = self.node.state, self.broker
        while self._ev_next < st.outbox_next and broker.free_slots() > 0:
            seq = self._ev_next
            if seq > st.outbox_done and seq not in self._ev_confirmed:
                body = _dumps(jobs.event_body(st.outbox[seq]))
                if not broker.publish(("e", seq), STATUS_EXCHANGE, "status.update", body,
                                      EVENT_PROPS, False):
                    return
            self._ev_next += 1

    def _publish_jobs(self) -> None:
        """Only when _may_publish() (Rule 1): the caller asks once for both."""
        st, broker = self.node.state, self.broker
        term = self.term
        if self._rescan:
            self._rescan = False
            log.info("dispatch reads the pending jobs again pending=%d (more than %d "
                     "publishes waited)", len(st.by_status[PENDING]), MAX_TODO)
            self._todo.clear()
            self._schedule_pending()
        while self._todo and broker.free_slots() > 0:
            id_ = self._todo.popleft()
            if id_ in self._inflight or id_ in self._marking:
                continue
            job = st.jobs.get(id_)
            if job is None or job.status != PENDING:
                continue                  # cancelled or already queued: withdrawn
            # An id longer than 255 bytes of UTF-8 cannot be an AMQP short string
            # (CONTRACT allows 256 characters): its message goes without message_id;
            # the body carries the id either way.
            message_id = id_ if len(id_.encode()) <= 255 else None
            props = amqp.job_properties(job.retry_count, term, jobs.QUEUES[job.queue],
                                        message_id, self.now_ms() // 1000)
            body = _dumps(jobs.message_body(job))
            token = ("j", id_, job.attempt, time.monotonic())
            if not broker.publish(token, JOBS_EXCHANGE, job["queue"], body, props, True,
                                  message_id):
                self._todo.appendleft(id_)
                return
            self._inflight.add(id_)


def _clock(at_ms: int) -> str:
    return jobs.iso_ms(at_ms)[11:19] + " UTC"


class Unroutable:
    """One episode of a job queue returning its jobs (see Dispatcher._returned)."""

    __slots__ = ("since_ms", "last_at_ms", "returned", "rounds", "delay_s", "retry_at")

    def __init__(self, at_ms: int) -> None:
        self.since_ms = self.last_at_ms = at_ms
        self.returned = 0       # jobs returned in this episode
        self.rounds = 0         # times the queues were declared again and jobs retried
        self.delay_s = 0.0      # this round's wait before its jobs are published again
        self.retry_at = 0.0     # monotonic: when this round's jobs go again


class Timers:
    """Leader-only clocks (DESIGN §2): execution timeouts, unresponsive workers and
    retention. Each check only proposes commands; apply re-checks against the state, so
    a late or repeated proposal changes nothing."""

    def __init__(self, node, workers, *, now_ms, retry_backoff_s: float,
                 retention_s: int, retention_max: int) -> None:
        self.node = node
        self.workers = workers
        self.now_ms = now_ms
        self.backoff_ms = int(retry_backoff_s * 1000)
        self.retention_ms = retention_s * 1000
        self.retention_max = retention_max
        self._proposed: set = set()       # keys of commands proposed, not yet applied
        # A new leader of a cluster has not yet heard every worker (followers pass
        # their heartbeats on): it expires no worker and times out no job until one
        # heartbeat timeout has passed since it became leader.
        self.grace = False
        self.lead_since_ms = 0

    def check(self) -> None:
        if self.node.role != "leader":
            return
        st, now = self.node.state, self.now_ms()
        if self.grace and now - self.lead_since_ms < self.workers.timeout_ms:
            return
        lost = self.workers.check()
        if lost:
            metrics.WORKERS_LOST.inc(len(lost))
        for w in list(st.running_on):
            if self.workers.is_unresponsive(w):
                self._propose(("expire", w), {"op": "expire_worker", "worker_id": w,
                                              "retry_backoff_ms": self.backoff_ms})
        for seq in st.by_status[RUNNING]:
            job = st.jobs[st.by_seq[seq]]
            if now - job["running_since"] > job["execution_timeout"] * 1000:
                self._propose(("timeout", job["id"], job["attempt"]), {
                    "op": "timeout", "id": job["id"], "attempt": job["attempt"],
                    "retry_backoff_ms": self.backoff_ms})
        ids = st_mod.eviction_candidates(st, now, self.retention_ms, self.retention_max)
        if ids:
            self._propose(("evict", ids[0]), {"op": "evict", "ids": ids})

    def _propose(self, key, cmd: dict) -> None:
        if key in self._proposed:
            return
        cmd["term"] = self.node.term
        try:
            result = self.node.propose_async(cmd)
        except Exception as e:
            log.warning("timer cannot propose op=%s error=%s", cmd["op"], e)
            return
        self._proposed.add(key)
        if cmd["op"] == "expire_worker":
            log.warning("worker jobs given up worker=%s running=%d", cmd["worker_id"],
                        len(self.node.state.running_on.get(cmd["worker_id"], ())))
        elif cmd["op"] == "timeout":
            log.info("job timed out id=%s attempt=%d", cmd["id"], cmd["attempt"])
        result.rawlink(lambda _r: self._proposed.discard(key))
