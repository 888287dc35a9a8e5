"""Leader-only side effects, derived from the applied state (DESIGN §2): publish every
`pending` job and every outbox event to RabbitMQ, and turn the broker's confirms into
commands (`mark_queued`, `mark_published`). The only module that publishes.

At-least-once by design: after a crash or reconnect, whatever is still pending or
unpublished in the state is simply published again.

Two pipelines, one loop: JobPublisher (pending jobs -> job.* queues -> mark_queued)
and EventPublisher (the outbox -> status.exchange -> mark_published). They share
only Marks (the term, the propose function and one backoff: a log that cannot write
one mark cannot write the other); Dispatcher runs both in one greenlet and routes the
broker's tokens (JobToken, EventToken) to the pipeline that published them. What
each reads of the node is a View (the applied state and two questions), so the
pipelines run in a unit test against a fake broker and a fake propose.

Rule 1: a confirmed job is published again only when the state says a newer attempt
needs it, never because its mark could not be written: a failed mark is retried (with
backoff), and nothing is published while the log cannot be written.
Rule 2: a mark this node cannot propose (NotLeader) is kept and proposed again after
the marks' backoff: the node may lead on (a leadership transfer that did not happen
refuses proposals meanwhile; dropping the mark then left the job pending for good,
found by hypothesis). Leadership really lost, stop() forgets it, and the next leader
finds the job still pending and publishes it again.
Rule 3: it runs only between start(term) and stop() (the node's became_leader and
stepped_down): start rebuilds everything from the applied state, stop forgets it all,
and every mark carries the term it was started in, so apply refuses a deposed
leader's late one.
Rule 4: a job is never published before its `not_before` (a retry's backoff):
JobPublisher.publish checks it for every id it takes, whichever path queued it.
Rule 7: a job type's limits (limits.py) are applied where jobs are published: a job
over its type's concurrency waits there for a slot, one over its rate for a token.
Rule 6: nothing is published to a paused job queue (state.paused_queues): publish
leaves its jobs pending; resuming it queues every pending job again (what RabbitMQ
already held when it was paused is not ours to take back).
Rule 5: a leader that takes over from another (start(term, hold_s)) publishes nothing
for hold_s: the jobs it finds pending may have been published by the last leader a
moment ago, their `running` on the way. Publishing them again at once put a second
delivery of an attempt in the queue while its first ran; when the first ended in a
retry, the second's reports were read as the retry's (jobs.py, Attempts, a blind
spot; the 10-minute fault run saw it 6 times). Held, the first's `running` arrives
and the job is no longer pending.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import logging
import time
from typing import Callable, NamedTuple

import gevent
import gevent.event

from . import amqp, jobs, metrics, schedules
from .limits import Limits
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


# What the dispatcher reads and hands out ###################################

class View(NamedTuple):
    """What the leader-only side effects read of the node (node_view binds a RaftNode;
    a test binds a plain State). Each is called when needed, never cached: a snapshot
    install replaces the state object, and leadership moves under the loop."""
    state: Callable[[], st_mod.State]    # the applied state now
    leads: Callable[[int], bool]         # the leader of this term
    may_publish: Callable[[int], bool]   # Rule 1: leads(term), log writable, quorum heard


def node_view(node) -> View:
    """The View of a raft.node.RaftNode: the one place that reads its fields here."""
    def leads(term: int) -> bool:
        return node.role == "leader" and node.term == term

    def may_publish(term: int) -> bool:
        return node.role == "leader" and node.log_ok and node.term == term \
            and node.has_quorum_contact()
    return View(lambda: node.state, leads, may_publish)


class JobToken(NamedTuple):
    """A job message handed to Broker.publish; the broker hands it back exactly once."""
    job_id: str
    attempt: int       # the attempt published: mark_queued names it
    sent_at: float     # clock() at publish: the confirm latency metric


class EventToken(NamedTuple):
    """A status event handed to Broker.publish; handed back exactly once."""
    seq: int           # its outbox seq


# Marks: what both pipelines share ###########################################

class Marks:
    """Proposes the pipelines' marks with the term the dispatcher was started in
    (Rule 3), and holds one backoff for both after a failed mark (Rule 1).

    propose(cmd, lazy=True) -> a result with rawlink(fn), successful(), exception,
    or raises NotLeader (Rule 2). Lazy: a mark rides in the next client request's
    commit round (raft/node.py Rule 4) instead of paying an fsync'd round of its own.
    """

    def __init__(self, propose, clock, wake) -> None:
        self._propose = propose
        self._clock = clock
        self._wake = wake
        self.term = 0
        self.after = 0.0           # clock(): no mark proposed before it
        self.failures = 0          # failed marks in a row
        self._started = 0          # start() calls: an answer to an earlier one is dropped

    def start(self, term: int) -> None:
        """Rule 3: forget the last term's backoff; its marks' answers are dropped."""
        self.term, self.after, self.failures = term, 0.0, 0
        self._started += 1

    def ready(self, now: float) -> bool:
        return now >= self.after   # Rule 1: a failed mark waits its backoff

    def propose(self, cmd: dict, answered: Callable[[bool], None]) -> bool:
        """False when not leader (the caller keeps the mark, Rule 2; the backoff
        holds the next try); else answered(ok) is called once the mark is applied or
        has failed."""
        cmd["term"] = self.term                  # Rule 3
        try:
            result = self._propose(cmd, lazy=True)
        except NotLeader as e:                   # Rule 2
            self._backoff(False, e)
            return False
        started = self._started
        result.rawlink(lambda r: self._answered(r, answered, started))
        return True

    def _answered(self, result, answered, started: int) -> None:
        if started != self._started:
            return                   # proposed before the last start(): forgotten
        ok = result.successful()
        answered(ok)
        self._backoff(ok, result.exception)
        self._wake()

    def _backoff(self, ok: bool, error) -> None:
        """Backoff for failed marks, and one log line per change of state."""
        if ok:
            if self.failures:
                log.warning("marks written again failed_marks=%d", self.failures)
            self.failures, self.after = 0, 0.0
            return
        self.failures += 1
        first, cap = MARK_RETRY_S
        delay = min(cap, first * 2 ** (self.failures - 1))
        self.after = self._clock() + delay
        if self.failures == 1:
            # Leadership lost (a stop, a transfer, a partition) is how a leader's last
            # marks end, not a fault of this node: the next leader publishes them again.
            level = logging.WARNING if isinstance(error, NotLeader) else logging.ERROR
            log.log(level, "cannot mark confirms error=%s; retrying with backoff up to "
                    "%gs", error, cap)

    def check(self) -> None:
        """M1: no backoff without a failure: failures == 0 <=> after == 0."""
        assert (self.failures == 0) == (self.after == 0.0), (self.failures, self.after)


# Jobs ######################################################################

class JobPublisher:
    """Publishes pending jobs and marks the confirmed ones `queued`.

    Where an id is (every id at most once in inflight, marking; anywhere in todo/later):

        todo, later --publish--> inflight --confirm--> marking (unmarked, then a
        proposed mark) --mark applied--> gone (or queued again if still pending)
        inflight --reject--> todo (connection lost), later (nack, returned)

    Invariants (check() asserts them; J3 needs the broker's outstanding tokens):
    J1. inflight and marking are disjoint: a job is published again only after its
        last publish was confirmed and marked, or rejected (Rule 1).
    J2. marking is exactly the ids of unmarked and of each proposed mark, each once.
    J3. inflight is exactly the ids of the job tokens out: at the broker, or handed
        back and not yet taken (confirmed, rejected).
    J4. later is a heap of (due clock(), n, id) with n distinct.
    J5. rescan => todo is empty (the pending jobs are read from the state instead).
    J6. returned_at is empty unless unroutable is not; each Unroutable is
        well-formed (U1-U3).
    """

    def __init__(self, view: View, broker, marks: Marks, *, now_ms, clock, wake) -> None:
        self._view = view
        self._broker = broker
        self._marks = marks
        self._now_ms = now_ms
        self._clock = clock
        self._wake = wake
        self.unroutable: dict = {}        # job queue -> Unroutable, while it returns jobs
        self._returned_at: dict = {}      # job id -> at_ms its last return (those queues)
        self.limits = Limits(clock, lambda: view.state().limits,
                             lambda t: view.state().pair_counts.get(("type", t), {}))
        self.reset()

    def reset(self) -> None:
        self._todo: collections.deque = collections.deque()   # job ids to publish
        self._later: list = []            # heap of (due clock(), n, id)
        self._n = itertools.count()
        self._inflight: set = set()       # ids published, not yet confirmed
        self._marking: set = set()        # ids confirmed, mark_queued not yet applied
        self._unmarked: list = []         # [id, attempt] confirmed, mark not yet proposed
        self._proposed: list = []         # items of each mark_queued proposed, unanswered
        self.confirms: list = []          # JobTokens confirmed (Dispatcher.on_confirmed)
        self.rejects: list = []           # ([JobToken], reason) (Dispatcher.on_rejected)
        self._rescan = False              # _todo was dropped: read pending from the state
        self.hold_until = 0.0             # clock(): nothing published before it (Rule 5)
        self.limits.reset()

    def forget_unroutable(self) -> None:
        self.unroutable.clear()           # the next leader finds out for itself
        self._returned_at.clear()

    # Queueing: every path that queues an id for publish comes here ##########

    def schedule(self, id_: str) -> None:
        """Publish now, or once its retry backoff (not_before) has passed."""
        job = self._view.state().jobs.get(id_)
        wait_ms = (job.get("not_before") or 0) - self._now_ms() if job is not None else 0
        if wait_ms > 0:
            self._wait(id_, wait_ms)
        else:
            self._queue((id_,))

    def schedule_pending(self) -> None:
        """schedule() for every pending job, oldest first, in one pass: schedule for
        each of them held the hub 0.6 s at 250,000 pending jobs (a new leader's start,
        the API answering nothing meanwhile); this is a few tens of ms."""
        st = self._view.state()
        now_ms, jobs_by_id, by_seq = self._now_ms(), st.jobs, st.by_seq
        due, later = [], []
        for seq in st.by_status[PENDING]:        # oldest first
            id_ = by_seq[seq]
            not_before = jobs_by_id[id_].get("not_before")
            if not_before is not None and not_before > now_ms:
                later.append(id_)
            else:
                due.append(id_)
        for id_ in later:                        # few: retries waiting out a backoff
            self.schedule(id_)
        if due:
            self._queue(due)

    def _queue(self, ids, front: bool = False) -> None:
        """ids to publish (front: before the others, in their order). Past MAX_TODO,
        while nothing can be published, the queue is dropped and the pending jobs are
        read from the state again when publishing resumes (J5)."""
        if self._rescan:
            self._wake()
            return                               # the rescan finds them pending
        if len(self._todo) + len(ids) > MAX_TODO and not self._may_publish():
            self._todo.clear()
            self._rescan = True
        elif front:
            self._todo.extendleft(reversed(ids))
        else:
            self._todo.extend(ids)
        self._wake()

    def _wait(self, id_: str, wait_ms: int) -> None:
        heapq.heappush(self._later, (self._clock() + wait_ms / 1000, next(self._n), id_))
        self._wake()

    def _may_publish(self) -> bool:
        return self._view.may_publish(self._marks.term)

    # Confirms and marks #####################################################

    def take_confirms(self, now: float) -> None:
        confirmed, self.confirms = self.confirms, []
        if not confirmed:
            return
        if self.unroutable:
            self._routed_again(tok.job_id for tok in confirmed)
        for tok in confirmed:
            self._inflight.discard(tok.job_id)
            self._marking.add(tok.job_id)
            self._unmarked.append([tok.job_id, tok.attempt])
            metrics.PUBLISH_CONFIRM_SECONDS.observe(now - tok.sent_at)
        metrics.child(metrics.PUBLISHED, "job", "confirmed").inc(len(confirmed))

    def mark(self) -> None:
        """Propose mark_queued for what is confirmed and unmarked (Marks.ready)."""
        if not self._unmarked:
            return
        items, self._unmarked = self._unmarked, []
        if self._marks.propose({"op": "mark_queued", "items": items},
                               lambda ok: self._marked(items, ok)):
            self._proposed.append(items)
        else:
            self._unmarked.extend(items)         # Rule 2: proposed again

    def _marked(self, items: list, ok: bool) -> None:
        self._proposed.remove(items)             # answers of an earlier start are dropped
        if not ok:
            self._unmarked.extend(items)         # Rule 1: retry the mark, not the publish
            return
        jobs_by_id = self._view.state().jobs
        stale = []
        for id_, _attempt in items:
            self._marking.discard(id_)
            self.limits.settled(id_)
            job = jobs_by_id.get(id_)
            # Still pending: the mark was stale (a newer attempt came while this one
            # was in flight and was skipped then). Publish the new attempt.
            if job is not None and job["status"] == PENDING:
                stale.append(id_)
        if stale:
            self._queue(stale)

    # Rejects ###############################################################

    def take_rejects(self, now: float) -> None:
        rejected, self.rejects = self.rejects, []
        for tokens, reason in rejected:
            ids = [tok.job_id for tok in tokens]
            self._inflight.difference_update(ids)
            for id_ in ids:
                self.limits.settled(id_)
            metrics.child(metrics.PUBLISHED, "job", reason).inc(len(ids))
            if reason == "connection_lost":
                self._queue(ids, front=True)     # keep oldest first
            elif reason == "returned":
                self._returned(ids)
            else:
                due = now + RETRY_AFTER_REJECT_S
                for id_ in ids:
                    heapq.heappush(self._later, (due, next(self._n), id_))
                log.warning("broker refused jobs reason=%s count=%d; retry in %gs",
                            reason, len(ids), RETRY_AFTER_REJECT_S)
        due = []
        while self._later and self._later[0][0] <= now:
            due.append(heapq.heappop(self._later)[2])
        if due:
            self._queue(due)

    # Unroutable job queues ###################################################
    # An episode starts with the first job a queue returns (basic.return: no queue
    # bound to its routing key) and ends with the first of its jobs confirmed routed.
    # One WARNING when it starts, one INFO when it ends, none per message; health,
    # a gauge and each returned job's `why` say it meanwhile.

    def _returned(self, ids: list) -> None:
        st, at_ms, now = self._view.state(), self._now_ms(), self._clock()
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
                self._broker.redeclare()
            ep.returned += len(queue_ids)
            ep.last_at_ms = at_ms
            for id_ in queue_ids:
                self._returned_at[id_] = at_ms
                heapq.heappush(self._later, (ep.retry_at, next(self._n), id_))

    def _routed_again(self, ids) -> None:
        st = self._view.state()
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
            if waiting:
                self._queue(waiting)
            log.info("job queue routable again queue=%s returned=%d rounds=%d "
                     "seconds=%d", queue, ep.returned, ep.rounds,
                     (self._now_ms() - ep.since_ms) // 1000)
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
        now = self._clock()
        return {q: {"since": ep.since_ms, "last_returned_at": ep.last_at_ms,
                    "returned": ep.returned, "rounds": ep.rounds,
                    "retry_delay_s": ep.delay_s,
                    "next_retry_s": round(max(0.0, ep.retry_at - now), 1)}
                for q, ep in self.unroutable.items()}

    # Publishing ############################################################

    def publish(self) -> None:
        """Only when may_publish (Rule 1): the caller asks once for both pipelines.
        The one place a job is published; Rule 4 is checked here."""
        st, broker = self._view.state(), self._broker
        if self._rescan:
            self._rescan = False
            log.info("dispatch reads the pending jobs again pending=%d (more than %d "
                     "publishes waited)", len(st.by_status[PENDING]), MAX_TODO)
            self._todo.clear()
            self.schedule_pending()
        if self._clock() < self.hold_until:
            return                        # Rule 5; the tick wakes the loop after it
        term, now_ms, todo = self._marks.term, self._now_ms(), self._todo
        while todo and broker.free_slots() > 0:
            id_ = todo.popleft()
            if id_ in self._inflight or id_ in self._marking:
                continue
            job = st.jobs.get(id_)
            if job is None or job.status != PENDING:
                continue                  # cancelled or already queued: withdrawn
            if job.queue in st.paused_queues:
                continue                  # Rule 6: resume schedules it again
            if st.limits and job.type in st.limits:
                wait_s = self.limits.admit(id_, job.type)      # Rule 7
                if wait_s is not None:
                    if wait_s > 0:
                        self._wait(id_, wait_s * 1000)
                    continue
            not_before = job.get("not_before")
            if not_before is not None and not_before > now_ms:
                self._wait(id_, not_before - now_ms)     # Rule 4
                continue
            # An id longer than 255 bytes of UTF-8 cannot be an AMQP short string
            # (CONTRACT allows 256 characters): its message goes without message_id;
            # the body carries the id either way.
            message_id = id_ if len(id_.encode()) <= 255 else None
            props = amqp.job_properties(job.retry_count, term, jobs.QUEUES[job.queue],
                                        message_id, now_ms // 1000)
            body = _dumps(jobs.message_body(job))
            token = JobToken(id_, job.attempt, self._clock())
            if not broker.publish(token, JOBS_EXCHANGE, job["queue"], body, props, True,
                                  message_id):
                todo.appendleft(id_)
                return
            self._inflight.add(id_)
            if st.limits:
                self.limits.published(id_, job.type)

    def freed(self, ids) -> None:
        """These jobs may have left queued or running (Rule 7): their types' waiting
        jobs go back to be published, as many as now fit."""
        st = self._view.state()
        types = {st.jobs[i].type for i in ids if i in st.jobs}
        out = [id_ for t in sorted(types) for id_ in self.limits.freed(t)]
        if out:
            self._queue(out, front=True)

    def limits_changed(self) -> None:
        out = self.limits.all_freed()
        if out:
            self._queue(out, front=True)

    def backlog(self) -> dict:
        return {"jobs_to_publish": len(self._todo), "jobs_waiting_backoff": len(self._later),
                "jobs_in_flight": len(self._inflight),
                "jobs_held_by_limits": self.limits.holding()}

    # Invariants ############################################################

    def check(self, outstanding=None) -> None:
        """Assert J1-J6. outstanding: the job tokens the broker has not handed back
        (a test's fake broker knows them); J3 is checked only when given."""
        assert not self._inflight & self._marking, "J1"
        self.limits.check()
        assert set(self.limits._held_type) <= self._inflight | self._marking, "L2"
        marked = [id_ for id_, _ in self._unmarked] + \
            [id_ for items in self._proposed for id_, _ in items]
        assert len(marked) == len(set(marked)) and set(marked) == self._marking, "J2"
        if outstanding is not None:
            out = [tok.job_id for tok in outstanding] + \
                [tok.job_id for tok in self.confirms] + \
                [tok.job_id for toks, _ in self.rejects for tok in toks]
            assert len(out) == len(set(out)) and set(out) == self._inflight, "J3"
        later = self._later
        assert all(later[(i - 1) // 2] <= later[i] for i in range(1, len(later))), "J4"
        assert len({n for _, n, _ in later}) == len(later), "J4"
        assert not (self._rescan and self._todo), "J5"
        assert self.unroutable or not self._returned_at, "J6"
        for ep in self.unroutable.values():
            ep.check()


def _clock(at_ms: int) -> str:
    return jobs.iso_ms(at_ms)[11:19] + " UTC"


class Unroutable:
    """One episode of a job queue returning its jobs (see JobPublisher._returned)."""

    __slots__ = ("since_ms", "last_at_ms", "returned", "rounds", "delay_s", "retry_at")

    def __init__(self, at_ms: int) -> None:
        self.since_ms = self.last_at_ms = at_ms
        self.returned = 0       # jobs returned in this episode
        self.rounds = 0         # times the queues were declared again and jobs retried
        self.delay_s = 0.0      # this round's wait before its jobs are published again
        self.retry_at = 0.0     # clock(): when this round's jobs go again

    def check(self) -> None:
        """U1: since_ms <= last_at_ms. U2: at least one round, and one job returned
        per round at least. U3: the delay within RETURNED_RETRY_S."""
        assert self.since_ms <= self.last_at_ms, "U1"
        assert 1 <= self.rounds <= self.returned, "U2"
        assert RETURNED_RETRY_S[0] <= self.delay_s <= RETURNED_RETRY_S[1], "U3"


# Events ####################################################################

class EventPublisher:
    """Publishes the outbox's events in seq order and marks the confirmed prefix
    published (mark_published upto).

    Seqs: (outbox_done .. acked] confirmed, waiting for their mark; (acked .. next)
    published or confirmed out of order (confirmed); [next .. outbox_next) not yet.

    Invariants (check() asserts them):
    E1. acked < next.
    E2. every seq in confirmed is > acked + 1 (the confirmed prefix is folded into
        acked at once).
    E3. a mark_published in flight covers no more than is acked: marking is None or
        marking <= acked.
    E4. a seq is in flight at most once: after a rejection rewinds next, the seqs
        still in flight are skipped, not published a second time (hypothesis found a
        second copy's late confirm left below acked, against E2).
    """

    def __init__(self, view: View, broker, marks: Marks) -> None:
        self._view = view
        self._broker = broker
        self._marks = marks
        self.reset()

    def reset(self) -> None:
        st = self._view.state()
        self._acked = st.outbox_done      # all events <= this are confirmed
        self._next = self._acked + 1      # next outbox seq to publish
        self._confirmed: set = set()      # confirmed seqs above _acked
        self._inflight: set = set()       # seqs handed to the broker, not yet back (E4)
        self._marking: int | None = None  # upto of the mark_published in flight
        self._events_dropped = st.events_dropped   # st.events_dropped last seen
        self.confirms: list = []          # EventTokens confirmed (Dispatcher.on_confirmed)
        self.rejects: list = []           # EventTokens rejected (Dispatcher.on_rejected)

    def take_confirms(self) -> None:
        st = self._view.state()
        if st.events_dropped != self._events_dropped:
            log.warning("status events dropped unpublished dropped=%d total=%d (more than "
                        "%d waited: RabbitMQ down too long)", st.events_dropped -
                        self._events_dropped, st.events_dropped, st_mod.OUTBOX_MAX)
            self._events_dropped = st.events_dropped
        done = st.outbox_done
        if self._acked < done:
            # Marked published by an earlier leader's late mark, or by this one: those
            # are never published (or confirmed) again here.
            self._acked = done
            self._confirmed = {s for s in self._confirmed if s > done}
            self._next = max(self._next, done + 1)
        confirms, self.confirms = self.confirms, []
        for tok in confirms:
            self._inflight.discard(tok.seq)
            if tok.seq > self._acked:            # one marked published meanwhile: done
                self._confirmed.add(tok.seq)
        n = 0
        while self._acked + 1 in self._confirmed:
            self._acked += 1
            self._confirmed.discard(self._acked)
            n += 1
        self._next = max(self._next, self._acked + 1)   # E1: a rewind behind the fold
        if n:
            metrics.child(metrics.PUBLISHED, "event", "confirmed").inc(n)

    def mark(self) -> None:
        # Checked on every pass, not only when confirms arrive: confirms that came
        # while the last mark_published was in flight are marked by the next one.
        if self._acked > self._view.state().outbox_done and self._marking is None:
            upto = self._marking = self._acked
            if not self._marks.propose({"op": "mark_published", "upto": upto},
                                       self._marked):
                self._marking = None             # Rule 2

    def _marked(self, ok: bool) -> None:
        self._marking = None                     # a failed one is proposed again

    def take_rejects(self) -> None:
        rejected, self.rejects = self.rejects, []
        for tok in rejected:
            self._inflight.discard(tok.seq)
            # Not below acked: a seq marked published meanwhile (a late mark) is done.
            self._next = min(self._next, max(tok.seq, self._acked + 1))

    def publish(self) -> None:
        """Only when may_publish, as JobPublisher.publish."""
        st, broker = self._view.state(), self._broker
        while self._next < st.outbox_next and broker.free_slots() > 0:
            seq = self._next
            if seq > self._acked and seq not in self._confirmed \
                    and seq not in self._inflight:
                body = _dumps(jobs.event_body(st.outbox[seq]))
                if not broker.publish(EventToken(seq), STATUS_EXCHANGE, "status.update",
                                      body, EVENT_PROPS, False):
                    return
                self._inflight.add(seq)
            self._next += 1

    def unpublished(self) -> int:
        st = self._view.state()
        return st.outbox_next - 1 - st.outbox_done

    def check(self) -> None:
        """Assert E1-E4."""
        assert self._acked < self._next, "E1"
        assert all(s > self._acked + 1 for s in self._confirmed), "E2"
        assert self._marking is None or self._marking <= self._acked, "E3"
        assert not self._inflight & self._confirmed, "E4"


# The loop ##################################################################

class Dispatcher:
    """Runs both pipelines in one greenlet between start(term) and stop() (Rule 3).

    view: what it reads of the node (View); propose(cmd, lazy=) -> a result (see
    Marks); broker: dqorch.broker.Broker or a fake with free_slots, publish and
    redeclare; now_ms: wall clock in ms (not_before, timestamps); clock: monotonic
    seconds (backoffs, confirm latency).

    on_applied, on_confirmed, on_rejected and wake run in the hub or the commit loop
    and must not block. step() is one pass of the loop; a test calls it directly.
    """

    def __init__(self, view: View, propose, broker, *, now_ms,
                 clock=time.monotonic) -> None:
        self._view = view
        self.broker = broker
        self._clock = clock
        self._wake = gevent.event.Event()
        self._marks = Marks(propose, clock, self._wake.set)
        self.jobs = JobPublisher(view, broker, self._marks, now_ms=now_ms, clock=clock,
                                 wake=self._wake.set)
        self.events = EventPublisher(view, broker, self._marks)
        self._loop = None
        self._tick = None

    @property
    def term(self) -> int:
        return self._marks.term

    @property
    def unroutable(self) -> dict:
        return self.jobs.unroutable

    # Wiring: these run in the hub or in the commit loop and must not block. #####

    def on_applied(self, cmd: dict, outcome: dict) -> None:
        if self._loop is None:
            return                     # Rule 3: not leading
        if outcome.get("publish"):
            self.jobs.schedule(cmd["id"])
        for id_ in outcome.get("publish_ids", ()):
            self.jobs.schedule(id_)
        if cmd["op"] == "queue_pause" and outcome["outcome"] == "resumed":
            self.jobs.schedule_pending()       # Rule 6
        if self.jobs.limits.waiting:           # Rule 7
            if cmd["op"] in ("limit_put", "limit_delete"):
                self.jobs.limits_changed()
            else:
                moved = outcome.get("moved")
                ids = [m[0] for m in outcome.get("moves", ()) if m[1] in ("queued", "running")]
                if moved is not None and moved[0] in ("queued", "running") and "id" in cmd:
                    ids.append(cmd["id"])
                if ids:
                    self.jobs.freed(ids)
        if cmd["op"] not in ("register", "mark_queued", "mark_published", "noop"):
            self._wake.set()           # may have added outbox events

    def on_confirmed(self, tokens: list) -> None:
        for tok in tokens:
            if type(tok) is JobToken:
                self.jobs.confirms.append(tok)
            else:
                self.events.confirms.append(tok)
        self._wake.set()

    def on_rejected(self, tokens: list, reason: str) -> None:
        job_tokens = [tok for tok in tokens if type(tok) is JobToken]
        if job_tokens:
            self.jobs.rejects.append((job_tokens, reason))
        if len(job_tokens) < len(tokens):
            self.events.rejects.extend(tok for tok in tokens if type(tok) is EventToken)
        self._wake.set()

    def wake(self, *_args) -> None:
        self._wake.set()

    # Start, stop, one pass #################################################

    def start(self, term: int, hold_s: float = 0.0) -> None:
        """hold_s: Rule 5 (a cluster's new leader; a node alone has no other leader
        whose deliveries could still be starting)."""
        self.stop()
        self._marks.start(term)
        self.jobs.reset()
        self.jobs.hold_until = self._clock() + hold_s
        self.events.reset()
        self.jobs.schedule_pending()
        st = self._view.state()
        if self.jobs._todo or st.outbox:
            log.info("dispatch resumes pending_jobs=%d unpublished_events=%d",
                     len(self.jobs._todo), len(st.outbox))
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
        self.jobs.forget_unroutable()

    def _run(self) -> None:
        while True:
            self._wake.wait()               # set by a callback, or by _tick
            self._wake.clear()
            try:
                self.step()
            except Exception:
                log.exception("dispatch step failed; retrying")
                gevent.sleep(0.5)

    def step(self) -> None:
        """One pass: take the broker's confirms, propose marks (unless a failed mark's
        backoff holds them, Rule 1), take its rejects and the retries now due, and
        publish events, then jobs, while the node may (Rule 1)."""
        now = self._clock()
        self.events.take_confirms()
        self.jobs.take_confirms(now)
        if self._marks.ready(now):
            self.jobs.mark()
            self.events.mark()
        self.jobs.take_rejects(self._clock())
        self.events.take_rejects()
        if self._view.may_publish(self._marks.term):
            self.events.publish()
            self.jobs.publish()

    def backlog(self) -> dict:
        return dict(self.jobs.backlog(), events_unpublished=self.events.unpublished())

    def why_returned(self, job) -> str | None:
        return self.jobs.why_returned(job)

    def unroutable_status(self) -> dict:
        return self.jobs.unroutable_status()

    def check(self, outstanding=None) -> None:
        """Assert every pipeline's invariants (JobPublisher, EventPublisher, Marks).
        outstanding: the tokens the broker has not handed back, when known."""
        self._marks.check()
        self.jobs.check(None if outstanding is None else
                        [t for t in outstanding if type(t) is JobToken])
        self.events.check()


# Timers ####################################################################

# Most scheduled jobs one release command moves: a million due at once (a leader back
# after a week) go in rounds, not in one entry of 30 MB.
RELEASE_MAX = 5000


class Timers:
    """Leader-only clocks (DESIGN §2): execution timeouts, unresponsive workers,
    retention and scheduled jobs coming due. Each check only proposes commands; apply
    re-checks against the state, so a late or repeated proposal changes nothing.
    check() and release() do nothing outside start(term) .. stop(), as Dispatcher."""

    def __init__(self, view: View, propose, workers, *, now_ms, retry_backoff_s: float,
                 retention_s: int, retention_max: int) -> None:
        self._view = view
        self._propose_fn = propose
        self.workers = workers
        self.now_ms = now_ms
        self.backoff_ms = int(retry_backoff_s * 1000)
        self.retention_ms = retention_s * 1000
        self.retention_max = retention_max
        self._proposed: set = set()       # keys of commands proposed, not yet applied
        self.term: int | None = None      # None: stopped
        # A new leader of a cluster has not yet heard every worker (followers pass
        # their heartbeats on): it expires no worker and times out no job until one
        # heartbeat timeout has passed since it became leader.
        self.grace = False
        self.lead_since_ms = 0

    def start(self, term: int, *, grace: bool) -> None:
        """The node became leader of term. grace: hold expiries and timeouts for one
        heartbeat timeout (a cluster's new leader)."""
        self.term, self.grace, self.lead_since_ms = term, grace, self.now_ms()

    def stop(self) -> None:
        self.term = None

    def check(self) -> None:
        if self.term is None or not self._view.leads(self.term):
            return
        st, now = self._view.state(), self.now_ms()
        if self.grace and now - self.lead_since_ms < self.workers.timeout_ms:
            return
        lost = self.workers.check()
        if lost:
            metrics.WORKERS_LOST.inc(len(lost))
        for w in list(st.running_on):
            if self.workers.is_unresponsive(w):
                self.workers.lost_with_jobs(w)        # unresponsive, never "stopped"
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

    def release(self) -> float | None:
        """Propose the release of the scheduled jobs due now (the earliest
        RELEASE_MAX); seconds until the next one is due, or None (none scheduled, or
        not leading). No grace here: a scheduled job waits for no worker."""
        if self.term is None or not self._view.leads(self.term):
            return None
        st, now = self._view.state(), self.now_ms()
        ids = st_mod.due_ids(st, now, RELEASE_MAX)
        if ids:
            self._propose(("release", ids[0]), {"op": "release", "ids": ids})
        due = st_mod.next_due(st)
        if st.schedules:
            due = self._fire(st, now, due)
        return None if due is None else max(0, due - now) / 1000

    def _fire(self, st, now: int, due: int | None) -> int | None:
        """Propose what each schedule has due (schedules.plan); the earliest next tick
        of those not paused, or due if earlier."""
        def status_of(id_):
            job = st.jobs.get(id_)
            return None if job is None else job.status
        for sched in list(st.schedules.values()):
            cmd = schedules.plan(sched, now, status_of)
            if cmd is not None:
                self._propose(("fire", sched["id"], sched["rev"]), cmd)
            if not sched["spec"]["paused"]:
                due = sched["next_at"] if due is None else min(due, sched["next_at"])
        return due

    def _propose(self, key, cmd: dict) -> None:
        if key in self._proposed:
            return
        cmd["term"] = self.term
        try:
            result = self._propose_fn(cmd)
        except Exception as e:
            log.warning("timer cannot propose op=%s error=%s", cmd["op"], e)
            return
        self._proposed.add(key)
        if cmd["op"] == "expire_worker":
            log.warning("worker jobs given up worker=%s running=%d", cmd["worker_id"],
                        len(self._view.state().running_on.get(cmd["worker_id"], ())))
        elif cmd["op"] == "timeout":
            log.info("job timed out id=%s attempt=%d", cmd["id"], cmd["attempt"])
        elif cmd["op"] == "fire" and (cmd["skipped_late"] or cmd["skipped_overlap"]):
            log.log(logging.WARNING if cmd["skipped_late"] else logging.INFO,
                    "schedule runs skipped schedule=%s late=%d overlapping=%d "
                    "(catchup_window, overlap)", cmd["id"], cmd["skipped_late"],
                    cmd["skipped_overlap"])
        result.rawlink(lambda _r: self._proposed.discard(key))
