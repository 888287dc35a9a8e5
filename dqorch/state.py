"""The job registry (plain dicts and small indexes) and apply(command), the only code
that changes it.

Rule 1: apply is pure and deterministic: no clock, no randomness, no I/O, no set
iteration. The time comes in the command (`at_ms`), stamped by the leader. Every
replica and every replay that applies the same log ends with the same state.
Rule 2: a rejection that depends on state is an outcome dict, never an exception; an
unknown op or a broken invariant raises, and the node stops rather than diverges.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter, defaultdict

from . import jobs
from .jobs import (CANCELLED, COMPLETED, FAILED, PENDING, QUEUED, RUNNING, SCHEDULED,
                   TERMINAL, WAITING)

HISTORY_MAX = 32
PAST_MAX = 16         # earlier attempts' workers a job remembers (jobs.Job.past)
# Status events kept unpublished. With RabbitMQ down for long the outbox grew by every
# move of every job; past this the oldest is dropped and counted (events_dropped, a
# metric; the dispatcher logs it). A constant, not a setting: every replica must drop
# the same ones.
OUTBOX_MAX = 100_000
# One string per queue, shared by every job's history (not a new one per job).
_CONFIRMED_IN = {q: "confirmed in " + q for q in jobs.QUEUES}


class SortedSeqs:
    """A sorted list of distinct ints split in blocks, so that insert and remove cost
    O(log n + block) and a page walk costs O(page). Appending the largest is O(1)."""

    BLOCK = 1024

    __slots__ = ("_lists", "_maxes", "_len")

    def __init__(self) -> None:
        self._lists: list[list[int]] = []
        self._maxes: list[int] = []
        self._len = 0

    @classmethod
    def of_sorted(cls, seqs: list) -> "SortedSeqs":
        """From distinct ints in ascending order."""
        s = cls()
        s._lists = [seqs[i:i + cls.BLOCK] for i in range(0, len(seqs), cls.BLOCK)]
        s._maxes = [lst[-1] for lst in s._lists]
        s._len = len(seqs)
        return s

    def __len__(self) -> int:
        return self._len

    def add(self, x: int) -> None:
        self._len += 1
        maxes = self._maxes
        if not maxes:
            self._lists.append([x])
            maxes.append(x)
            return
        if x > maxes[-1]:                 # the usual case: a new job, a load in order
            i = len(maxes) - 1
            self._lists[i].append(x)
            maxes[i] = x
        else:
            i = bisect_left(maxes, x)
            insort(self._lists[i], x)
        lst = self._lists[i]
        if len(lst) > 2 * self.BLOCK:
            half = lst[self.BLOCK:]
            del lst[self.BLOCK:]
            self._lists.insert(i + 1, half)
            self._maxes.insert(i, lst[-1])

    def remove(self, x: int) -> None:
        i = bisect_left(self._maxes, x)
        if i == len(self._maxes):     # above the largest (or empty): not an IndexError
            raise KeyError(x)
        lst = self._lists[i]
        j = bisect_left(lst, x)
        if lst[j] != x:
            raise KeyError(x)
        del lst[j]
        self._len -= 1
        if not lst:
            del self._lists[i]
            del self._maxes[i]
        else:
            self._maxes[i] = lst[-1]

    def _position(self, bound: int | None) -> tuple:
        """(block, index) just past the values < bound (the end when None)."""
        if bound is None:
            i = len(self._lists) - 1
            return i, len(self._lists[i])
        i = bisect_left(self._maxes, bound)
        if i == len(self._maxes):
            i -= 1
            return i, len(self._lists[i])
        return i, bisect_left(self._lists[i], bound)

    def below(self, bound: int | None = None):
        """Yield values < bound (all when None), largest first."""
        if not self._lists:
            return
        i, j = self._position(bound)
        while i >= 0:
            lst = self._lists[i]
            for k in range(j - 1, -1, -1):
                yield lst[k]
            i -= 1
            if i >= 0:
                j = len(self._lists[i])

    def nth_below(self, bound: int | None, k: int) -> int | None:
        """The k-th (0-based) value below(bound) yields, or None when it yields fewer:
        O(blocks), for a listing's offset."""
        if not self._lists:
            return None
        i, j = self._position(bound)
        while i >= 0:
            if k < j:
                return self._lists[i][j - 1 - k]
            k -= j
            i -= 1
            if i >= 0:
                j = len(self._lists[i])
        return None

    def __iter__(self):
        """Smallest first."""
        for lst in self._lists:
            yield from lst


class State:
    """Registry dicts. Read them through the query functions below; change them only
    through apply()."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.by_seq: dict[int, str] = {}          # creation order -> id
        self.next_seq = 1
        self.all = SortedSeqs()
        self.by_status = {s: SortedSeqs() for s in jobs.STATUSES}
        self.by_queue = {q: SortedSeqs() for q in jobs.QUEUES}
        self.by_type: dict[str, SortedSeqs] = {}
        self.by_worker: dict[str, SortedSeqs] = {}
        self.running_on: dict[str, dict[int, None]] = {}   # worker -> seqs running there
        # seqs of the terminal jobs in the order they finished (a dict: ordered, and a
        # job run again or evicted leaves it in O(1)); see eviction_candidates
        self.terminal_fifo: dict[int, None] = {}
        # The scheduled jobs in the order they are due: due_key(run_at, seq) each.
        self.due = SortedSeqs()
        self.evicted = 0                          # jobs forgotten by retention
        self.queue_counts = {q: {s: 0 for s in jobs.STATUSES} for q in jobs.QUEUES}
        # (field, value) -> {status: n} for type and worker_id, so that a listing
        # filtered by status and one of those knows its count without a walk.
        self.pair_counts: dict[tuple, dict[str, int]] = {}
        self.outbox: dict[int, dict] = {}         # status events not yet published
        self.outbox_next = 1                      # seq of the next event
        self.outbox_done = 0                      # events <= this are published
        self.events_dropped = 0                   # events dropped unpublished (OUTBOX_MAX)
        self.term = 0                             # newest leader term a command carried
        self.schedules: dict[str, dict] = {}      # id -> schedule (schedules.py)
        self.paused_queues: dict[str, int] = {}   # job queue -> at_ms it was paused
        self.limits: dict[str, dict] = {}         # job type -> {"concurrency", "rate"}
        # parent id -> ids of the waiting jobs that depend on it (jobs.WAITING)
        self.waiters: dict[str, list] = {}
        # children to look at once the command is applied (_settle_children): always
        # empty between commands
        self.woken: list = []


# Indexes ###################################################################

SEQ_BITS = 40       # due_key: a seq below 2**40 (a trillion jobs registered)


def due_key(run_at: int, seq: int) -> int:
    """One int that sorts the scheduled jobs by due time, then by registration."""
    return run_at << SEQ_BITS | seq


def _waiting(st: State, job: jobs.Job, add: bool) -> None:
    """Keep waiters (parent -> its waiting children) in step with a job entering or
    leaving WAITING."""
    for p in job.depends_on:
        if add:
            st.waiters.setdefault(p, []).append(job.id)
        else:
            kids = st.waiters[p]
            kids.remove(job.id)
            if not kids:
                del st.waiters[p]


def _due(st: State, job: jobs.Job, add: bool) -> None:
    key = due_key(job.run_at, job.seq)
    if add:
        st.due.add(key)
    else:
        st.due.remove(key)


def _index(st: State, job: jobs.Job, add: bool) -> None:
    """Add or remove a job in every index but by_status (see _move)."""
    seq = job.seq
    keyed = [(st.by_type, job.type)]
    if job.worker_id is not None:
        keyed.append((st.by_worker, job.worker_id))
    st.queue_counts[job.queue][job.status] += 1 if add else -1
    for field, key in (("type", job.type), ("worker_id", job.worker_id)):
        if key is not None:
            _pair_count(st, field, key, job.status, 1 if add else -1)
    if add:
        st.by_queue[job.queue].add(seq)
        for idx, key in keyed:
            seqs = idx.get(key)
            if seqs is None:
                seqs = idx[key] = SortedSeqs()
            seqs.add(seq)
    else:
        st.by_queue[job.queue].remove(seq)
        for idx, key in keyed:
            s = idx[key]
            s.remove(seq)
            if not s:
                del idx[key]


def _pair_count(st: State, field: str, key: str, status: str, delta: int) -> None:
    counts = st.pair_counts.get((field, key))
    if counts is None:
        counts = st.pair_counts[(field, key)] = {}
    n = counts.get(status, 0) + delta
    if n:
        counts[status] = n
    else:
        del counts[status]
        if not counts:
            del st.pair_counts[(field, key)]


def _set_worker(st: State, job: jobs.Job, worker_id: str | None) -> None:
    if worker_id == job.worker_id:
        return
    running = job.status == RUNNING
    if running:
        _running(st, job, add=False)
    _index(st, job, add=False)
    job.worker_id = worker_id
    _index(st, job, add=True)
    if running:
        _running(st, job, add=True)


def _running(st: State, job: jobs.Job, add: bool) -> None:
    """Keep running_on[worker] (the seqs of the jobs running there) in step."""
    w = job.worker_id
    if w is None:
        return
    if add:
        st.running_on.setdefault(w, {})[job.seq] = None
    else:
        seqs = st.running_on[w]
        del seqs[job.seq]
        if not seqs:
            del st.running_on[w]


def _insert(st: State, job: jobs.Job) -> None:
    st.jobs[job.id] = job
    st.by_seq[job.seq] = job.id
    st.all.add(job.seq)
    st.by_status[job.status].add(job.seq)
    if job.status == RUNNING:
        _running(st, job, add=True)
    elif job.status == SCHEDULED:
        _due(st, job, add=True)
    elif job.status == WAITING:
        _waiting(st, job, add=True)
    _index(st, job, add=True)


def _remove(st: State, job: jobs.Job) -> None:
    st.terminal_fifo.pop(job.seq, None)
    _index(st, job, add=False)
    if job.status == RUNNING:
        _running(st, job, add=False)
    elif job.status == SCHEDULED:
        _due(st, job, add=False)
    elif job.status == WAITING:
        _waiting(st, job, add=False)
    st.by_status[job.status].remove(job.seq)
    st.all.remove(job.seq)
    del st.by_seq[job.seq]
    del st.jobs[job.id]


def _note(job: jobs.Job, at_ms: int, status: str, by: str, reason: str | None,
          *result) -> None:
    job.history = jobs.with_entry(job.history, (at_ms, status, by, reason, *result),
                                     HISTORY_MAX)


def _move(st: State, job: jobs.Job, to: str, at_ms: int, by: str, reason: str | None) -> tuple:
    frm = job.status
    if to not in jobs.TRANSITIONS[frm]:
        raise AssertionError(f"job {job.id}: {frm} -> {to} is not a legal move")
    if to != frm:
        st.by_status[frm].remove(job.seq)
        st.by_status[to].add(job.seq)
        counts = st.queue_counts[job.queue]
        counts[frm] -= 1
        counts[to] += 1
        for field, value in (("type", job.type), ("worker_id", job.worker_id)):
            if value is not None:
                _pair_count(st, field, value, frm, -1)
                _pair_count(st, field, value, to, +1)
        if frm == RUNNING:
            _running(st, job, add=False)
        elif frm == SCHEDULED:
            _due(st, job, add=False)
        elif frm == WAITING:
            _waiting(st, job, add=False)
        job.status = to
        if to == RUNNING:
            _running(st, job, add=True)
        elif to == SCHEDULED:
            _due(st, job, add=True)
        elif to == WAITING:
            _waiting(st, job, add=True)
        if to in TERMINAL and job.id in st.waiters:
            st.woken.extend(st.waiters[job.id])       # _settle_children
        if to in TERMINAL:
            st.terminal_fifo[job.seq] = None
        elif frm in TERMINAL:
            # Registered again: it re-enters the order when it ends again.
            del st.terminal_fifo[job.seq]
    if to == RUNNING:
        job["running_since"] = at_ms
    elif to == PENDING:
        job.pop("running_since", None)      # a new attempt is not timed from the last
    _note(job, at_ms, to, by, reason)
    return (frm, to)


def _event(st: State, job: jobs.Job, status: str, at_ms: int, **extra) -> None:
    ev = {"job": job.id, "status": status, "worker": job.worker_id, "at_ms": at_ms}
    ev.update(extra)
    st.outbox[st.outbox_next] = ev
    st.outbox_next += 1
    if len(st.outbox) > OUTBOX_MAX:
        st.outbox_done += 1                   # the oldest, as if published
        del st.outbox[st.outbox_done]
        st.events_dropped += 1


# What a worker owes for an attempt that ended without its terminal report (the third
# element of a `past` entry; 0: nothing). jobs.py, "Attempts", rule B.
OWED = 1            # it was alive (a timeout, a cancel, a redelivery): its run goes on
OWED_IF_ALIVE = 2   # it stopped heartbeating: it may have died with the run


def _remember(job: jobs.Job, worker: str, attempt: int, owes: int,
              ended_by: str | None = None) -> None:
    """Set (worker, attempt)'s entry in job.past. Past PAST_MAX, a paid entry is
    forgotten first: an owed one still keeps its late report off the current attempt."""
    past = [e for e in job.get("past", ()) if e[0] != worker or e[1] != attempt]
    past.append([worker, attempt, owes, ended_by])
    if len(past) > PAST_MAX:
        paid = [i for i, e in enumerate(past) if not e[2]]
        del past[paid[0] if paid else 0]
    job["past"] = past


def _ended(job: jobs.Job, owes: int, ended_by: str | None = None) -> None:
    """The current attempt ended: remember its worker for the reports still to come
    (jobs.py, "Attempts", rule B when it owes its terminal report, else rule C). An
    entry it has for this attempt already stands (rule B: a report it sent while it
    ran this attempt paid an earlier one; or it left it, rule A)."""
    w = job.worker_id
    if w is None or any(e[0] == w and e[1] == job.attempt for e in job.get("past", ())):
        return
    _remember(job, w, job.attempt, owes, ended_by)


def _next_attempt(st: State, job: jobs.Job) -> None:
    """What a new attempt starts without: the fields shown describe the current attempt.
    error_message stays while it waits (it says why it runs again; the job message
    carries it) and goes when a worker starts it."""
    _set_worker(st, job, None)
    job.attempt += 1
    job.result = job.queued_at = job.started_at = job.completed_at = None
    job.pop("progress", None)


def _end_attempt(st: State, job: dict, at: int, by: str, error: str | None, reason: str,
                 backoff_ms: int, owes: int, timed_out: bool = False) -> dict:
    """The running attempt failed (a report, a timeout, a dead worker): retry while
    retries are left, else the job fails for good. A worker that did not report the
    end (a timeout, a dead worker) owes its terminal report (see _earlier_attempt)."""
    job["error_message"] = error
    _ended(job, owes=owes, ended_by=None if owes else FAILED)
    if not job.get("from_report") and job["retry_count"] < job["max_retries"]:
        job["retry_count"] += 1
        _event(st, job, "RETRYING", at, error=error)
        _next_attempt(st, job)
        if backoff_ms:
            job["not_before"] = at + backoff_ms * 2 ** (job["retry_count"] - 1)
        moved = _move(st, job, PENDING, at, by, "%s; retry %d of %d" % (
            reason, job["retry_count"], job["max_retries"]))
        return {"outcome": "retrying", "publish": True, "moved": moved}
    job["completed_at"] = at
    moved = _move(st, job, FAILED, at, by, reason)
    _event(st, job, "TIMEOUT" if timed_out else "FAILED", at, error=error)
    return {"outcome": "failed", "moved": moved}


# Commands ##################################################################

def _run_at(cmd: dict) -> int | None:
    """When a register asks its job to run: run_at, or delay_ms after the leader's
    stamp; None: now. (parse.register allows one of them.)"""
    if "run_at" in cmd:
        return cmd["run_at"]
    if "delay_ms" in cmd:
        return cmd["at_ms"] + cmd["delay_ms"]
    return None


def _apply_register(st: State, cmd: dict) -> dict:
    at, fields, publish = cmd["at_ms"], cmd["job"], cmd["publish"]
    run_at = _run_at(cmd)
    later = run_at is not None and run_at > at
    parents = cmd.get("depends_on")
    job = st.jobs.get(cmd["id"])
    if job is None:
        job = jobs.new_job(cmd["id"], st.next_seq, at, fields)
        st.next_seq += 1
        if parents:
            _set_parents(job, cmd, run_at if later else None)
            job.status = WAITING
            _insert(st, job)
            moved = _move(st, job, WAITING, at, "api", _waits_for(parents))
            st.woken.append(job.id)       # its parents may be done already
            return {"outcome": "created", "moved": moved}
        if later:
            job.status, job.run_at = SCHEDULED, run_at
            _insert(st, job)
            moved = _move(st, job, SCHEDULED, at, "api", _scheduled_for(run_at))
            return {"outcome": "created", "moved": moved, "scheduled": run_at}
        _insert(st, job)
        moved = _move(st, job, PENDING, at, "api", "registered")
        if not publish:
            moved = _queue_unpublished(st, job, at)
        return {"outcome": "created", "publish": publish, "moved": moved}
    if job.get("from_report"):
        # A worker reported on it first (the gateway publishes jobs itself): take the
        # fields, keep the reported status, publish nothing.
        _index(st, job, add=False)
        jobs.fill_fields(job, dict({"type": "default"}, **fields))
        _index(st, job, add=True)
        del job["from_report"]
        return {"outcome": "filled"}
    if job["status"] in TERMINAL:
        # The gateway's "retry" re-registers a finished job: a new attempt.
        _index(st, job, add=False)
        jobs.fill_fields(job, fields)
        _index(st, job, add=True)
        if parents:
            moved = _new_attempt(st, job, at, "registered again; " + _waits_for(parents),
                                 run_at if later else None, cmd)
            st.woken.append(job.id)
            return {"outcome": "restarted", "moved": moved}
        if later:
            moved = _new_attempt(st, job, at, _scheduled_for(run_at, again=True), run_at)
            return {"outcome": "restarted", "moved": moved, "scheduled": run_at}
        moved = _new_attempt(st, job, at, "registered again")
        if not publish:
            moved = _queue_unpublished(st, job, at)
        return {"outcome": "restarted", "publish": publish, "moved": moved}
    return {"outcome": "exists"}


def _set_parents(job: jobs.Job, cmd: dict, run_at: int | None) -> None:
    job.depends_on = cmd["depends_on"]
    if "on_parent_failure" in cmd:
        job.on_parent_failure = cmd["on_parent_failure"]
    if run_at is not None:
        job.run_at = run_at              # once its parents are done, it waits for that


def _waits_for(parents: list) -> str:
    return f"waits for {len(parents)} job{'s' if len(parents) != 1 else ''}"


def _scheduled_for(run_at: int, again: bool = False) -> str:
    """One shared string (the time is the job's run_at): a million jobs scheduled
    would hold a million copies of the reason (~90 bytes each, bench/scheduled.py)."""
    return _AGAIN_LATER if again else _LATER


_LATER, _AGAIN_LATER = "registered to run later", "registered again to run later"


def _new_attempt(st: State, job: dict, at: int, reason: str,
                 run_at: int | None = None, parents_cmd: dict | None = None) -> tuple:
    """A terminal job runs again from the start: retry_count 0, the next attempt,
    now (pending), at run_at (scheduled), or once its parents are done (waiting). Its
    last worker either reported the end (it is in `past` already when it did not)."""
    _ended(job, owes=0, ended_by=job.status)
    _next_attempt(st, job)
    job.retry_count = 0
    for key in ("error_message", "not_before", "run_at", "depends_on", "on_parent_failure"):
        job.pop(key, None)
    if parents_cmd is not None:
        _set_parents(job, parents_cmd, run_at)
        return _move(st, job, WAITING, at, "api", reason)
    if run_at is not None:
        job.run_at = run_at
        return _move(st, job, SCHEDULED, at, "api", reason)
    return _move(st, job, PENDING, at, "api", reason)


def _each_finished(st: State, ids: list, done: str, act) -> dict:
    """act(job) on each of these jobs in a final status, in the order given. Returns
    {id: done, "not_found", or the status of a job left as it is}."""
    results = {}
    for id_ in ids:
        job = st.jobs.get(id_)
        if job is None:
            results[id_] = "not_found"
        elif job["status"] not in TERMINAL:
            results[id_] = job["status"]
        else:
            act(job)
            results[id_] = done
    return results


def _apply_retry(st: State, cmd: dict) -> dict:
    """POST /api/jobs/{id}/retry and /api/jobs/retry: a new attempt of each terminal
    job, with the fields it has; always published (a retry is not a register)."""
    moves: list = []
    results = _each_finished(st, cmd["ids"], "retried", lambda job: moves.append(
        (job.id,) + _new_attempt(st, job, cmd["at_ms"], "retried by request")))
    return {"outcome": "retried", "results": results, "moves": moves,
            "publish_ids": [m[0] for m in moves]}


def _queue_unpublished(st: State, job: dict, at: int) -> tuple:
    job["queued_at"] = at
    return _move(st, job, QUEUED, at, "api", "publish_on_register is off")


def _apply_report(st: State, cmd: dict) -> dict:
    at, to, worker = cmd["at_ms"], cmd["status"], cmd["worker_id"]
    by = worker or "worker"
    job = st.jobs.get(cmd["id"])
    created = job is None
    if created:
        # Reported before registered (the gateway publishes jobs itself). We hold no
        # payload to run it again, so a failure here is final.
        job = jobs.new_job(cmd["id"], st.next_seq, at, {
            "type": "unknown", "max_retries": cmd["max_retries"],
            "execution_timeout": cmd["execution_timeout"]})
        job["from_report"] = True
        st.next_seq += 1
        _insert(st, job)
        _note(job, at, PENDING, by, "first seen in a worker report")
    frm, prev_worker = job["status"], job["worker_id"]
    if worker is not None and "past" in job:
        out = _earlier_attempt(job, frm, to, worker, at, cmd)
        if out is not None:
            return out
    if frm in TERMINAL:            # a repeat (the Java worker retries), or a late one
        return {"outcome": "ignored", "reason": "terminal"}
    if "progress" in cmd:
        job["progress"] = cmd["progress"]
    if to == RUNNING and frm == RUNNING and worker in (None, prev_worker):
        return {"outcome": "updated"}              # a repeat, or a progress update
    if worker is not None:
        if frm == RUNNING and prev_worker not in (None, worker):
            # Rule A: the worker it leaves may still run it, and owes its report.
            _remember(job, prev_worker, job.attempt, owes=OWED)
        _set_worker(st, job, worker)
    outcome = "created" if created else "updated"
    if to == RUNNING:
        job.pop("not_before", None)
        if job["started_at"] is None:           # this attempt's first start
            job["started_at"] = at
            job.pop("error_message", None)       # the last attempt's; now in the history
        moved = _move(st, job, RUNNING, at, by, "worker started it")
        _event(st, job, "RUNNING", at, progress=job.get("progress"))
    elif to == COMPLETED:
        job["result"], shown = jobs.report_result(job, cmd.get("result"),
                                                  cmd.get("max_job_bytes"))
        job["completed_at"] = at
        job.pop("error_message", None)           # an earlier attempt's (a report skipped running)
        moved = _move(st, job, COMPLETED, at, by, "worker completed it")
        extra = {} if shown is None else {"result": shown}
        _event(st, job, "COMPLETED", at, progress=job.get("progress"), **extra)
    elif to == FAILED:
        error = cmd.get("error_message")
        out = _end_attempt(st, job, at, by, error, "failed: %s" % (error or "no error message"),
                           cmd.get("retry_backoff_ms", 0), owes=0)
        if out["outcome"] == "retrying":
            return out
        moved = out["moved"]
    else:
        job["completed_at"] = at
        moved = _move(st, job, CANCELLED, at, by, "worker cancelled it")
        _event(st, job, "CANCELLED", at)
    return {"outcome": outcome, "moved": moved}


def _earlier_attempt(job: jobs.Job, frm: str, to: str, worker: str, at: int,
                     cmd: dict) -> dict | None:
    """A report from a worker in job.past: the outcome when it belongs to an earlier
    attempt (noted in the history, nothing else changes), None when it is about the
    current one. The rules and their blind spots: jobs.py, "Attempts"."""
    past = job.past
    mine = [e for e in past if e[0] == worker]
    if not mine:
        return None
    bound = frm == RUNNING and job.worker_id == worker    # it runs the current attempt
    owed = next((e for e in mine if e[2]), None)
    reason = "terminal" if frm in TERMINAL else "stale_attempt"
    if to != RUNNING and owed is not None:                 # rule B
        _remember(job, worker, owed[1], owes=0, ended_by=to)
        if owed[1] == job.attempt and frm not in TERMINAL:
            return None                # it left this attempt (rule A): its end counts
        if bound and owed[2] == OWED_IF_ALIVE:
            # That run may have died with its worker: this may be the current run's
            # report, so the current attempt does not owe again when it ends unreported.
            _remember(job, worker, job.attempt, owes=0, ended_by=to)
        what = f"attempt {owed[1] + 1} {to} late on {worker}"
        if to == FAILED and cmd.get("error_message"):
            what += ": " + cmd["error_message"][:200]
        if cmd.get("result") is None:
            _note(job, at, frm, worker, what)
        else:
            kept = jobs.capped(jobs.raw(cmd["result"]), jobs.HISTORY_RESULT_BYTES)
            _note(job, at, frm, worker, what + ", result kept in history",
                  jobs.spliced(kept))
        return {"outcome": "ignored", "reason": reason}
    if bound:
        return None
    if to == RUNNING and frm in (PENDING, QUEUED):
        not_before = job.get("not_before")
        if not_before is None or not_before <= at:
            return None                # it takes the attempt that waits (rule C)
        why = "its retry is not published before its backoff ends"
    elif to != RUNNING and frm not in TERMINAL:
        ended_by = next((e[3] for e in reversed(mine) if len(e) > 3 and e[3]), None)
        if ended_by != to:
            return None                # not how it ended its earlier attempt (rule C)
        why = "a repeat"
    else:
        why = "another worker runs the current one" if frm == RUNNING else "a repeat"
    _note(job, at, frm, worker, f"ignored late {to} report from {worker} "
                                f"(attempt {mine[-1][1] + 1}): {why}")      # rule C
    return {"outcome": "ignored", "reason": reason}


def _apply_cancel(st: State, cmd: dict) -> dict:
    job = st.jobs.get(cmd["id"])
    if job is None:
        return {"outcome": "not_found"}
    if job["status"] in TERMINAL:
        return {"outcome": "conflict", "status": job["status"]}
    if job.status == RUNNING:
        _ended(job, owes=OWED)          # its worker runs on: a message cannot be taken back
    job["completed_at"] = cmd["at_ms"]
    moved = _move(st, job, CANCELLED, cmd["at_ms"], "api", "cancelled by request")
    _event(st, job, "CANCELLED", cmd["at_ms"])
    return {"outcome": "cancelled", "moved": moved}


def _apply_timeout(st: State, cmd: dict) -> dict:
    """The leader saw attempt `attempt` of a job run longer than its
    execution_timeout. Stale (the job moved on) changes nothing."""
    job = st.jobs.get(cmd["id"])
    if job is None or job["status"] != RUNNING or job["attempt"] != cmd["attempt"]:
        return {"outcome": "stale"}
    error = "timed out after %d s on %s" % (job["execution_timeout"],
                                            job["worker_id"] or "an unknown worker")
    return _end_attempt(st, job, cmd["at_ms"], "timer", error, error,
                        cmd.get("retry_backoff_ms", 0), owes=OWED, timed_out=True)


def _apply_expire_worker(st: State, cmd: dict) -> dict:
    """A worker stopped sending heartbeats: every job it was running is retried or
    failed, oldest first."""
    w = cmd["worker_id"]
    moves = []
    for seq in sorted(st.running_on.get(w, ())):   # seq order: from_snapshot loses start order
        job = st.jobs[st.by_seq[seq]]
        error = f"worker {w} stopped sending heartbeats"
        out = _end_attempt(st, job, cmd["at_ms"], "timer", error, error,
                           cmd.get("retry_backoff_ms", 0), owes=OWED_IF_ALIVE)
        moves.append((job["id"],) + out["moved"])
    return {"outcome": "expired", "moves": moves,
            "publish_ids": [m[0] for m in moves if m[2] == PENDING]}


def _apply_evict(st: State, cmd: dict) -> dict:
    """Forget these jobs if they are (still) terminal. The leader picks them with
    eviction_candidates()."""
    n = 0
    for id_ in cmd["ids"]:
        job = st.jobs.get(id_)
        if job is not None and job["status"] in TERMINAL:
            _remove(st, job)
            n += 1
    st.evicted += n
    return {"outcome": "evicted", "evicted": n}


def _apply_discard(st: State, cmd: dict) -> dict:
    """DELETE /api/jobs/{id} and POST /api/jobs/discard: forget each of these jobs that
    is in a final status (completed, failed, cancelled), the way retention does
    (_apply_evict); any other is left as it is. results: {id: "discarded", "not_found"
    or its status}. Not counted in `evicted`: an operator's choice, not retention's."""
    return {"outcome": "discarded",
            "results": _each_finished(st, cmd["ids"], "discarded", lambda job: _remove(st, job))}


def _apply_mark_queued(st: State, cmd: dict) -> dict:
    """Broker confirmed these publishes: [[id, attempt], ...]. Stale ones (the job
    moved on, or a newer attempt exists) change nothing."""
    n = 0
    for id_, attempt in cmd["items"]:
        job = st.jobs.get(id_)
        if job is not None and job.status == PENDING and job.attempt == attempt:
            job.queued_at = cmd["at_ms"]
            job.pop("not_before", None)
            _move(st, job, QUEUED, cmd["at_ms"], "broker", _CONFIRMED_IN[job.queue])
            n += 1
    return {"outcome": "queued", "queued": n}


def _apply_release(st: State, cmd: dict) -> dict:
    """The leader saw these scheduled jobs due (due_ids): each still scheduled and due
    at this command's stamp becomes pending, to be published."""
    at, moves = cmd["at_ms"], []
    for id_ in cmd["ids"]:
        job = st.jobs.get(id_)
        if job is not None and job.status == SCHEDULED and job.run_at <= at:
            moves.append((id_,) + _move(st, job, PENDING, at, "timer", "due"))
    return {"outcome": "released", "moves": moves, "publish_ids": [m[0] for m in moves]}


# Schedules (schedules.py says what a tick is; the leader computes them: its Rule 1)

LAST_RUNS = 10                 # runs a schedule remembers (job ids; GET shows them)


def _apply_schedule_put(st: State, cmd: dict) -> dict:
    at, old = cmd["at_ms"], st.schedules.get(cmd["id"])
    sched = {"id": cmd["id"], "spec": cmd["spec"], "rev": 1, "next_at": cmd["next_at"],
             "buffered": None, "last_runs": [], "fired": 0, "skipped_late": 0,
             "skipped_overlap": 0, "created_at": at, "updated_at": at}
    if old is not None:       # its counters and runs stay; a new spec starts afresh
        sched.update({k: old[k] for k in ("last_runs", "fired", "skipped_late",
                                            "skipped_overlap", "created_at")},
                     rev=old["rev"] + 1)
    st.schedules[cmd["id"]] = sched
    return {"outcome": "updated" if old else "created", "schedule": sched}


def _apply_schedule_delete(st: State, cmd: dict) -> dict:
    return {"outcome": "deleted" if st.schedules.pop(cmd["id"], None) else "not_found"}


def _apply_schedule_pause(st: State, cmd: dict) -> dict:
    """Pause, or resume from next_at (the leader's next tick after now: what fell due
    while it was paused is not caught up)."""
    sched = st.schedules.get(cmd["id"])
    if sched is None:
        return {"outcome": "not_found"}
    sched["spec"] = dict(sched["spec"], paused=cmd["paused"])
    if not cmd["paused"]:
        sched["next_at"] = cmd["next_at"]
        sched["buffered"] = None
    sched["rev"] += 1
    sched["updated_at"] = cmd["at_ms"]
    return {"outcome": "paused" if cmd["paused"] else "resumed", "schedule": sched}


def _apply_fire(st: State, cmd: dict) -> dict:
    """The leader's runs of a schedule (schedules.plan, trigger, backfill): each run a
    job named by its tick, registered unless it exists (schedules.py Rule 2)."""
    sched = st.schedules.get(cmd["id"])
    if sched is None or sched["rev"] != cmd["rev"]:
        return {"outcome": "stale"}
    at, created, moves = cmd["at_ms"], [], []
    for tick in cmd["runs"]:
        id_ = jobs.run_id(sched["id"], tick)
        if id_ not in st.jobs:
            out = _apply_register(st, {"id": id_, "job": sched["spec"]["job"],
                                       "publish": True, "at_ms": at})
            created.append(id_)
            moves.append((id_,) + out["moved"])
        sched["last_runs"] = (sched["last_runs"] + [[tick, id_]])[-LAST_RUNS:]
    sched["next_at"] = cmd["next_at"]
    sched["buffered"] = cmd["buffered"]
    sched["fired"] += len(created)
    sched["skipped_late"] += cmd["skipped_late"]
    sched["skipped_overlap"] += cmd["skipped_overlap"]
    sched["rev"] += 1
    return {"outcome": "fired", "created": created, "moves": moves,
            "publish_ids": created}


def _apply_queue_pause(st: State, cmd: dict) -> dict:
    """Pause or resume publishing to a job queue (dispatch.py Rule 6). Idempotent."""
    queue, was = cmd["queue"], cmd["queue"] in st.paused_queues
    if cmd["paused"]:
        st.paused_queues.setdefault(queue, cmd["at_ms"])
    else:
        st.paused_queues.pop(queue, None)
    return {"outcome": ("paused" if cmd["paused"] else "resumed")
            if was != cmd["paused"] else "unchanged"}


def _apply_limit_put(st: State, cmd: dict) -> dict:
    """A job type's limits (limits.py applies them where jobs are published)."""
    old = st.limits.get(cmd["type"])
    st.limits[cmd["type"]] = {"concurrency": cmd["concurrency"], "rate": cmd["rate"],
                              "updated_at": cmd["at_ms"]}
    return {"outcome": "updated" if old else "created", "limit": st.limits[cmd["type"]]}


def _apply_limit_delete(st: State, cmd: dict) -> dict:
    return {"outcome": "deleted" if st.limits.pop(cmd["type"], None) else "not_found"}


def _apply_mark_published(st: State, cmd: dict) -> dict:
    upto = min(cmd["upto"], st.outbox_next - 1)
    for seq in range(st.outbox_done + 1, upto + 1):
        st.outbox.pop(seq, None)
    st.outbox_done = max(st.outbox_done, upto)
    return {"outcome": "published"}


def _apply_noop(st: State, cmd: dict) -> dict:
    return {"outcome": "noop"}


APPLY = {
    "register": _apply_register,
    "report": _apply_report,
    "cancel": _apply_cancel,
    "retry": _apply_retry,
    "timeout": _apply_timeout,
    "expire_worker": _apply_expire_worker,
    "evict": _apply_evict,
    "discard": _apply_discard,
    "mark_queued": _apply_mark_queued,
    "release": _apply_release,
    "schedule_put": _apply_schedule_put,
    "schedule_delete": _apply_schedule_delete,
    "schedule_pause": _apply_schedule_pause,
    "fire": _apply_fire,
    "queue_pause": _apply_queue_pause,
    "limit_put": _apply_limit_put,
    "limit_delete": _apply_limit_delete,
    "mark_published": _apply_mark_published,
    "noop": _apply_noop,
}


def apply(st: State, cmd: dict) -> dict:
    """Commands from a leader's side effects (marks, timers) and its no-op carry its
    term. One older than a term already seen is a deposed leader's: refused, the same
    way on every replica (the term is in the entry)."""
    term = cmd.get("term")
    if term is not None:
        if term < st.term:
            return {"outcome": "stale_term"}
        st.term = term
    out = APPLY[cmd["op"]](st, cmd)     # an unknown op raises: stop, never guess
    if st.woken:
        _settle_children(st, cmd["at_ms"], out)
    return out


def _settle_children(st: State, at: int, out: dict) -> None:
    """Waiting jobs whose parents ended in this command (or that were registered in
    it) move on: every parent completed (or, with on_parent_failure "run", ended) ->
    scheduled or pending; a parent failed or cancelled -> cancelled. A cancel ends its
    own children in turn: a worklist, not recursion (a chain of 10,000). Children of
    one parent in registration order, so every replica moves them alike."""
    moves, publish = out.setdefault("moves", []), out.setdefault("publish_ids", [])
    while st.woken:
        batch, st.woken = st.woken, []
        for id_ in sorted(set(batch), key=lambda i: st.jobs[i].seq):
            job = st.jobs.get(id_)
            if job is None or job.status != WAITING:
                continue
            run_anyway = job.get("on_parent_failure") == "run"
            ended = {p: st.jobs[p].status if p in st.jobs else None
                     for p in job.depends_on}
            failed = [p for p, s in ended.items() if s in (FAILED, CANCELLED)]
            if failed and not run_anyway:
                job.completed_at = at
                moves.append((id_,) + _move(st, job, CANCELLED, at, "parent",
                                            f"parent {failed[0]} {ended[failed[0]]}"))
                _event(st, job, "CANCELLED", at)
            elif all(s == COMPLETED or (run_anyway and s in TERMINAL)
                     for s in ended.values()):
                run_at = job.get("run_at")
                if run_at is not None and run_at > at:
                    moves.append((id_,) + _move(st, job, SCHEDULED, at, "parent",
                                                "its parents are done; runs at " +
                                                jobs.iso_ms(run_at)))
                    out["scheduled"] = run_at       # the release loop looks again
                else:
                    moves.append((id_,) + _move(st, job, PENDING, at, "parent",
                                                "its parents are done"))
                    publish.append(id_)


# Queries ###################################################################

def get_job(st: State, id_: str) -> dict | None:
    return st.jobs.get(id_)


_FILTER_INDEX = {
    "status": lambda st, v: st.by_status.get(v),
    "queue": lambda st, v: st.by_queue.get(v),
    "type": lambda st, v: st.by_type.get(v),
    "worker_id": lambda st, v: st.by_worker.get(v),
}


SCAN_MAX = 50_000   # most index entries one listing request walks


def terminal_ids(st: State, filters: dict, statuses: list, limit: int | None,
                 where: dict | None = None) -> list:
    """Ids of up to `limit` (every one when None) jobs in these statuses that match the
    filters (and `where`, see where_match), newest first, through the listing's paged
    walks (never the whole registry at once). The bulk actions use it for any status."""
    out: list = []
    most = len(st.jobs) if limit is None else limit
    for status in statuses:
        cursor = None
        while len(out) < most:
            page, cursor, _ = _walk(st, dict(filters, status=status), where,
                                    min(1000, most - len(out)), cursor, 0)
            out.extend(j["id"] for j in page)
            if cursor is None:
                break
    return out[:most]


def where_match(where: dict):
    """A predicate for the listing's filters that no index answers (parse.list_where):
    id_prefix; created_since <= created_at < created_before; finished_since <=
    completed_at < finished_before (only finished jobs have one); error: text within
    error_message, any case (`where` holds it lower-cased); retry_count_min <=
    retry_count <= retry_count_max."""
    prefix, error = where.get("id_prefix"), where.get("error")
    ranges = [(field, where.get(lo), where.get(hi)) for field, lo, hi in (
        ("created_at", "created_since", "created_before"),
        ("completed_at", "finished_since", "finished_before"))]
    ranges = [r for r in ranges if r[1] is not None or r[2] is not None]
    rmin, rmax = where.get("retry_count_min"), where.get("retry_count_max")

    def match(job) -> bool:
        if prefix is not None and not job["id"].startswith(prefix):
            return False
        for field, lo, hi in ranges:
            at = job[field]
            if at is None or (lo is not None and at < lo) or (hi is not None and at >= hi):
                return False
        if rmin is not None and job["retry_count"] < rmin:
            return False
        if rmax is not None and job["retry_count"] > rmax:
            return False
        if error is not None and error not in (job.get("error_message") or "").lower():
            return False
        return True
    return match


def _walk(st: State, filters: dict, where: dict | None, limit: int, cursor: int | None,
          offset: int):
    """One page of list_jobs: (jobs, next_cursor, counter), counter() counting every
    match. Jobs are created in seq order with leader-stamped, never decreasing times,
    so a walk newest first stops at the first job created before created_since."""
    if not filters:
        base = st.all
    else:
        indexes = [_FILTER_INDEX[k](st, v) for k, v in filters.items()]
        if any(ix is None for ix in indexes):
            return [], None, lambda: 0
        base = min(indexes, key=len)
    extra = where_match(where) if where else None
    since = (where or {}).get("created_since")

    def match(job):
        return all(job[k] == v for k, v in filters.items()) and (extra is None or extra(job))

    def counter() -> int:
        if extra is None:
            return _count(st, filters, base, match)
        n = 0
        for seq in base.below(None):
            job = st.jobs[st.by_seq[seq]]
            if since is not None and job["created_at"] < since:
                break
            n += match(job)
        return n

    if len(filters) <= 1 and extra is None and offset:
        cursor = base.nth_below(cursor, offset - 1)     # every entry matches: O(blocks)
        if cursor is None:
            return [], None, counter
        offset = 0
    page, next_cursor, scanned = [], None, 0
    for seq in base.below(cursor):
        job = st.jobs[st.by_seq[seq]]
        if since is not None and job["created_at"] < since:
            break
        if offset == 0:
            scanned += 1
            if scanned > SCAN_MAX:
                next_cursor = seq + 1      # resume with this entry
                break
        if match(job):
            if offset:
                offset -= 1
                continue
            if len(page) == limit:
                next_cursor = page[-1]["seq"]
                break
            page.append(job)
    return page, next_cursor, counter


def list_jobs(st: State, filters: dict, limit: int, cursor: int | None,
              where: dict | None = None, offset: int = 0):
    """Newest first. Returns (jobs, count, next_cursor).

    The page walks the smallest index that matches one of the filters, checking the
    others, so with one filter (or status plus another) a page costs O(page). A walk
    that finds few matches stops after SCAN_MAX entries and returns a shorter page with
    a `next` cursor to continue from. The count is kept for one filter and for status
    plus type, queue or worker_id; other combinations, and any `where` (where_match),
    count by a walk of that index. `offset` skips that many matches (below `cursor`):
    O(blocks) with at most one filter and no `where`, else a walk of the skipped ones."""
    page, next_cursor, counter = _walk(st, filters, where, limit, cursor, offset)
    return page, counter(), next_cursor


def _count(st: State, filters: dict, base, match) -> int:
    if len(filters) <= 1:
        return len(base)
    if len(filters) == 2 and "status" in filters:
        (field, value), = [(k, v) for k, v in filters.items() if k != "status"]
        if field == "queue":
            return st.queue_counts[value][filters["status"]]
        return st.pair_counts.get((field, value), {}).get(filters["status"], 0)
    return sum(1 for s in base if match(st.jobs[st.by_seq[s]]))


_SEQ_MASK = (1 << SEQ_BITS) - 1


def due_ids(st: State, now_ms: int, limit: int) -> list:
    """The ids of up to `limit` scheduled jobs due at now_ms, the earliest first."""
    out, bound, by_seq = [], (now_ms + 1) << SEQ_BITS, st.by_seq
    for key in st.due:
        if key >= bound or len(out) >= limit:
            break
        out.append(by_seq[key & _SEQ_MASK])
    return out


def next_due(st: State) -> int | None:
    """When the earliest scheduled job is due (ms), or None."""
    key = next(iter(st.due), None)
    return None if key is None else key >> SEQ_BITS


def limit_note(st: State, job) -> str | None:
    """Why a pending job of a limited type may wait, from the state alone (the
    leader's in-flight publishes count too: limits.py Rule 1)."""
    limit = st.limits.get(job.type)
    if limit is None or job.status != PENDING:
        return None
    c, rate = limit["concurrency"], limit["rate"]
    counts = st.pair_counts.get(("type", job.type), {})
    active = counts.get(QUEUED, 0) + counts.get(RUNNING, 0)
    if c is not None and active >= c:
        return (f"type {job.type} is at its concurrency limit ({active} of {c} queued or "
                f"running); it goes when one of them ends")
    if rate is not None:
        return f"type {job.type} is limited to {rate:g} published a second"
    return None


def schedule_counts(st: State) -> dict:
    """{("active",): n, ("paused",): m}, as the gauge reads it."""
    paused = sum(1 for s in st.schedules.values() if s["spec"]["paused"])
    return {("active",): len(st.schedules) - paused, ("paused",): paused}


def running_counts(st: State) -> dict:
    """{worker: jobs running there}."""
    return {w: len(seqs) for w, seqs in st.running_on.items()}


def eviction_candidates(st: State, now_ms: int, retention_ms: int, max_jobs: int,
                        limit: int = 5000) -> list:
    """Ids of terminal jobs to evict, oldest first: those finished more than
    retention_ms ago, and as many more as it takes to hold at most max_jobs. Looks at
    no more than limit + 1 entries, so a call stays cheap however many jobs are held."""
    excess = len(st.jobs) - max_jobs
    cutoff = now_ms - retention_ms
    out = []
    for seq in st.terminal_fifo:        # only terminal jobs, in the order they ended
        job = st.jobs[st.by_seq[seq]]
        if len(out) >= limit or (job["completed_at"] > cutoff and len(out) >= excess):
            break                       # finished in order: the rest are younger still
        out.append(job["id"])
    return out


def oldest_created_at(st: State, status: str) -> dict:
    """{queue: created_at of the oldest job in `status` there} for queues that have one.
    Walks the status index oldest first until every queue is found, at most 10,000
    jobs: a queue not seen by then is left out (its oldest job is younger anyway)."""
    out: dict = {}
    for n, seq in enumerate(st.by_status[status]):
        if n >= 10_000:
            break
        job = st.jobs[st.by_seq[seq]]
        out.setdefault(job["queue"], job["created_at"])
        if len(out) == len(jobs.QUEUES):
            break
    return out


def counts_by_status(st: State) -> dict:
    return {s: len(ix) for s, ix in st.by_status.items()}


def counts_by_queue(st: State) -> dict:
    """{queue: {status: n}}."""
    return {q: dict(c) for q, c in st.queue_counts.items()}


# Snapshots #################################################################

def to_snapshot(st: State) -> dict:
    """A JSON-safe view of everything apply() and the queries read. Indexes are rebuilt
    on load; the order terminal jobs ended in is kept (eviction follows it).
    Not a copy: it shares the job records with `st` (jobs.Job: serialise each with
    to_record()), so serialise it (as the snapshot child does) before the next apply, and
    never hand it to from_snapshot unserialised while `st` lives on."""
    out = {
        "jobs": [st.jobs[st.by_seq[seq]] for seq in st.all],
        "next_seq": st.next_seq,
        "outbox": [[seq, ev] for seq, ev in st.outbox.items()],
        "outbox_next": st.outbox_next,
        "outbox_done": st.outbox_done,
        "evicted": st.evicted,
        "events_dropped": st.events_dropped,
        "terminal_order": list(st.terminal_fifo),
        "term": st.term,
        "history_format": 2,            # packed (jobs.pack_history); before it, absent
    }
    if st.schedules:                    # absent: the bytes of a snapshot without any
        out["schedules"] = list(st.schedules.values())    # stay those of before
    if st.paused_queues:
        out["paused_queues"] = dict(st.paused_queues)
    if st.limits:
        out["limits"] = dict(st.limits)
    return out


_SHARED_FIELDS = ("type", "queue", "status", "worker_id")


# One copy of each short repeated string (statuses, names): JSON decoding makes a new
# one per occurrence, ~700 bytes a job at 1M jobs. Filled by from_snapshot.
_SHARED: dict = {}


def _index_all(st: State, loaded: list) -> None:
    """What _insert does for each job, for all of them at once: a million _inserts
    were a third of a restart (4 µs a job). A snapshot lists jobs by seq; others are
    sorted first."""
    if any(a.seq >= b.seq for a, b in zip(loaded, loaded[1:])):
        loaded.sort(key=lambda j: j.seq)
    st.jobs = {j.id: j for j in loaded}
    st.by_seq = {j.seq: j.id for j in loaded}
    if len(st.jobs) != len(loaded) or len(st.by_seq) != len(loaded):
        raise ValueError("a job id or seq appears twice")
    by_status, by_queue, by_type, by_worker = (defaultdict(list) for _ in range(4))
    for j in loaded:
        seq = j.seq
        by_status[j.status].append(seq)
        by_queue[j.queue].append(seq)
        by_type[j.type].append(seq)
        if j.worker_id is not None:
            by_worker[j.worker_id].append(seq)
            if j.status == RUNNING:
                _running(st, j, add=True)
    st.all = SortedSeqs.of_sorted([j.seq for j in loaded])
    st.due = SortedSeqs.of_sorted(sorted(due_key(j.run_at, j.seq) for j in loaded
                                         if j.status == SCHEDULED))
    for j in loaded:
        if j.status == WAITING:
            _waiting(st, j, add=True)
    for idx, groups in ((st.by_status, by_status), (st.by_queue, by_queue),
                        (st.by_type, by_type), (st.by_worker, by_worker)):
        for key, seqs in groups.items():
            idx[key] = SortedSeqs.of_sorted(seqs)
    for (queue, status), n in Counter((j.queue, j.status) for j in loaded).items():
        st.queue_counts[queue][status] += n
    for (field, key, status), n in Counter(
            p for j in loaded for p in (("type", j.type, j.status),
                                        ("worker_id", j.worker_id, j.status))).items():
        if key is not None:
            st.pair_counts.setdefault((field, key), {})[status] = n


def _from_record(rec: dict, packed: bool, ints: dict) -> jobs.Job:
    """A job of a format 1-3 snapshot (one record per job)."""
    for key in _SHARED_FIELDS:
        v = rec.get(key)
        if v is not None and len(v) <= 64:
            rec[key] = _SHARED.setdefault(v, v)
    # Numbers past 256 are an object each after decoding, where a live job shares
    # them (execution_timeout with every job; running_since is its started_at):
    # 58 bytes a job after a restart (bench/memory.py).
    if "execution_timeout" in rec:
        rec["execution_timeout"] = ints.setdefault(rec["execution_timeout"],
                                                   rec["execution_timeout"])
    since = rec.get("running_since")
    if since is not None and since == rec.get("started_at"):
        rec["running_since"] = rec["started_at"]
    return jobs.Job.from_record(rec, packed)


def from_snapshot(data: dict) -> State:
    """The state to_snapshot(st) describes, after a trip through JSON: data["jobs"]
    the job records, or data["job_blocks"] lists of job rows or records (the log
    streams them from disk), walked once."""
    st = State()
    order = data.get("terminal_order")
    packed = data.get("history_format", 1) >= 2
    ints: dict = {}
    loaded = []
    for block in data.get("job_blocks") or (data["jobs"],):
        if dict not in map(type, block):
            loaded += jobs.from_rows(block, _SHARED, ints)
        else:                       # records, or rows among records
            loaded += (_from_record(j, packed, ints) if type(j) is dict
                       else jobs.from_rows((j,), _SHARED, ints)[0] for j in block)
    _index_all(st, loaded)
    terminal = sum(len(st.by_status.get(s, ())) for s in TERMINAL)
    st.next_seq = data["next_seq"]
    st.outbox = {seq: ev for seq, ev in data["outbox"]}
    st.outbox_next = data["outbox_next"]
    st.outbox_done = data["outbox_done"]
    st.evicted = data.get("evicted", 0)
    st.events_dropped = data.get("events_dropped", 0)
    st.term = data.get("term", 0)
    st.schedules = {s["id"]: s for s in data.get("schedules", ())}
    st.paused_queues = dict(data.get("paused_queues", {}))
    st.limits = dict(data.get("limits", {}))
    if order is None:               # snapshots before terminal_order: by completed_at
        order = [j.seq for j in sorted((j for j in loaded if j.status in TERMINAL),
                                       key=lambda j: (j.completed_at or 0, j.seq))]
    elif len(order) != terminal:
        raise ValueError("terminal_order does not match the terminal jobs")
    fifo = st.terminal_fifo
    for seq in order:
        job = st.jobs[st.by_seq[seq]]
        if job.status not in TERMINAL:
            raise ValueError("terminal_order does not match the terminal jobs")
        fifo[job.seq] = None      # the job's own int: the order's copies are freed (28 B)
    return st
