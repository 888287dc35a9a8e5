"""What a job is and how it may move: statuses, aliases, priority -> queue, and the
shapes a job takes on the wire (API JSON, job message, status event).

Pure: no clock, no randomness, no I/O. state.py applies these rules; api.py and
dispatch.py only render with them.
"""
from __future__ import annotations

import datetime
import functools

import orjson

from .codec import dumps  # noqa: F401 (jobs.dumps: what callers use)

PENDING, QUEUED, RUNNING = "pending", "queued", "running"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
SCHEDULED = "scheduled"     # registered with run_at or delay: released when due
WAITING = "waiting"         # registered with depends_on: waits for its parents
STATUSES = (WAITING, SCHEDULED, PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset((COMPLETED, FAILED, CANCELLED))

# Every move state.py may make. Back to pending: a retry (from queued or running) or a
# new register of a finished job (from a terminal state). Reports never move a terminal
# job; state.py checks that before it moves anything.
# Waiting: registered with depends_on; when every parent has completed it moves on
# (to pending, or scheduled when it has a time still ahead); a parent that fails or is
# cancelled cancels it, unless on_parent_failure is "run" (state._parents_ended).
# Scheduled: registered (or registered again) with a time to run at; the leader
# releases it to pending when the time comes (a `release` command), a cancel ends it,
# and a worker's report on it (someone ran it early: the gateway publishes jobs
# itself) moves it as it would a pending job: the report is what happened.
#
# Attempts. Each return to pending begins a new attempt (`attempt` + 1: a retry after a
# failed report, a timeout or a dead worker, a manual retry, a register of a finished
# job). The workers send no attempt number, so a report is matched to an attempt by
# what it does carry (state._earlier_attempt applies these rules; `past` holds, per
# earlier attempt, its worker, whether that worker still owes its terminal report, and
# how it ended it):
#   A. An attempt is bound to the worker whose `running` (or terminal) report it got
#      first; `worker_id` names it. A `running` from another worker while it runs moves
#      it there (RabbitMQ redelivered the message, or it was published twice); the
#      worker it leaves owes its report, which still counts while the attempt runs.
#   B. An attempt that ends without its worker's terminal report (timeout, cancel, the
#      worker expired) leaves that worker owing one. A worker's terminal reports of a
#      job pay its runs in the order it began them: what it owes first, oldest first:
#      "attempt 1 completed late on w1", the result kept in the history, never over
#      the current attempt. One exception: a worker that stopped heartbeating (expired)
#      may have died with that run and come back under the same id; a report it sends
#      while it runs the current attempt, paying such a debt, may have been the current
#      attempt's, so that attempt does not owe again when it ends without a report.
#   C. A worker that ran an earlier attempt and does not run the current one: a
#      terminal report the same as the one it ended its attempt with is a repeat (the
#      Java worker retries its posts) and changes nothing; another is the current
#      attempt's (its `completed` overtook its `running`). Its `running` while the
#      current attempt waits for a worker is it taking that attempt, except during a
#      retry's backoff (not yet published: nobody holds it); while another worker runs
#      the current attempt, it is a late one.
#   D. Reports without a workerId, and from workers not in `past`, go to the current
#      attempt, as the contract always had them. `past` keeps the last PAST_MAX
#      attempts' workers, those that owe nothing forgotten first.
# What these rules cannot tell apart, and what then happens:
#   - a worker that owes a report and never sends it. Expired first (it crashed and came
#     back with the same id): its next terminal report of this job pays the debt; the
#     current attempt runs into its execution timeout and is retried once (rule B keeps
#     it from owing again): late, not wrong. Alive all along (a run hung on a worker
#     with several slots): each later report of this job from it pays the run before
#     it; while it alone takes the job's retries each attempt runs into its timeout and
#     the job can end failed, every completed run's result in its history. Reading
#     reports in order is what makes the common case right: a slow job that times out
#     again on the same worker (CI, fault seed 1796550205).
#   - runs on one worker that end in the other order than they began (a worker with
#     several slots, a run slower than the next): the job keeps the other run's result;
#     both are whole runs of the job, and the other result is in the history.
#   - a late `running` of an earlier attempt that arrives while the current one, already
#     published, waits for a worker binds it to that worker; the worker that really takes
#     it rebinds it with its own `running` (rule A).
#   - a worker that held the message of an attempt cancelled before its `running`
#     arrived (prefetched): after a retry its reports go to the new attempt; a message
#     of an earlier attempt redelivered or published again looks like the current one
#     (a cluster's new leader holds its first publishes for an election timeout, so
#     that the last leader's deliveries report `running` first: dispatch.py Rule 5).
#     Decided, not a wrong answer: such a delivery whose `running` comes after the retry
#     was made is a whole run of the same job begun after it, so it is the retry's run,
#     and the retry, no longer pending, is not published again (DESIGN-NOTES,
#     Publishing).
#   - the Java worker's `completed` overtaking its `running` on a new attempt, when it
#     ended the earlier attempt the same way: taken for a repeat; its `running` then
#     binds the attempt, which runs into its execution timeout and is retried.
#   - a worker bound to the current attempt that repeats an earlier attempt's terminal
#     report after a new `running`: taken as the current attempt's. This includes a
#     report resent because its answer was lost or was a 503 "outcome unknown" (a
#     leader change) when the first one did commit: the job completes with that
#     earlier run's result (fault seed 1796550205). Telling them apart needs a report
#     id, which the unmodified workers do not send.
TRANSITIONS = {
    WAITING: {WAITING, SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CANCELLED},
    SCHEDULED: {SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CANCELLED},
    PENDING: {PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED},
    QUEUED: {RUNNING, COMPLETED, FAILED, CANCELLED, PENDING},
    RUNNING: {RUNNING, COMPLETED, FAILED, CANCELLED, PENDING},
    COMPLETED: {PENDING, SCHEDULED, WAITING},
    FAILED: {PENDING, SCHEDULED, WAITING},
    CANCELLED: {PENDING, SCHEDULED, WAITING},
}

# Status words workers send (compared lower-cased), CONTRACT §2.2.
REPORT_ALIASES = {
    "running": RUNNING, "started": RUNNING, "in_progress": RUNNING,
    "in-progress": RUNNING, "processing": RUNNING,
    "completed": COMPLETED, "complete": COMPLETED, "success": COMPLETED,
    "succeeded": COMPLETED, "done": COMPLETED,
    "failed": FAILED, "failure": FAILED, "error": FAILED,
    "cancelled": CANCELLED, "canceled": CANCELLED,
}

PRIORITY_NAMES = {"low": 1, "medium": 5, "high": 10, "critical": 15}

# CONTRACT §3, the one table of job queues: queue -> its x-max-priority, the AMQP
# priority of its messages, and (job.high, job.medium) the lowest priority routed there.
QUEUES = {"job.high": 10, "job.medium": 5, "job.low": 1}


def queue_for(priority: int) -> str:
    """CONTRACT §3: >= 10 -> job.high, >= 5 -> job.medium, else job.low."""
    if priority >= 10:
        return "job.high"
    if priority >= 5:
        return "job.medium"
    return "job.low"


# Fields of the API's job JSON, in CONTRACT §2.5 order.
API_FIELDS = ("id", "type", "priority", "queue", "status", "worker_id", "payload",
              "result", "error_message", "retry_count", "max_retries",
              "execution_timeout", "metadata", "created_at", "queued_at",
              "started_at", "completed_at")
LIST_OMITS = ("payload", "result")
_LISTED = tuple(k for k in API_FIELDS if k not in LIST_OMITS)
# A history entry is stored as [at_ms, status, by, reason] (a dict per entry would
# cost ~100 bytes more on every job held) and shown as an object with these keys; an
# earlier attempt's late result rides as a fifth element, shown as "result".
HISTORY_KEYS = ("at", "status", "by", "reason", "result")
# Most bytes of a late result kept in a history entry; past it, a marker (capped()).
HISTORY_RESULT_BYTES = 4096


# The JSON documents of a job the orchestrator never looks inside: kept as the
# compact bytes they are written as (checked once, by parse.py), spliced into answers
# and messages as they are. A dict of a 50-byte payload took 336 bytes, its bytes 83.
RAW_FIELDS = ("payload", "result", "metadata")
_EMPTY = b"{}"
# The history too is compact JSON, packed: [[dt, status, by, reason], ...] where dt
# is the first entry's at_ms, then each entry's ms after the one before, and a reason
# in REASONS is stored as its index there. A completed job's four entries took 224
# bytes with at_ms and reasons spelt out, 108 packed (bench/memory.py: -120 B a job).
STORED_JSON = RAW_FIELDS + ("history",)
_NO_HISTORY = b"[]"


def raw(value) -> bytes | None:
    """The stored form of a payload, result or metadata; one shared b"{}"."""
    if value is None:
        return None
    data = dumps(value)
    if data == _EMPTY:
        return _EMPTY
    # A copy of exactly its size: orjson's bytes keep the 4 KiB buffer they were
    # written in (tracemalloc: 7,888 bytes a job held for two small fields).
    return memoryview(data).tobytes()


# Append only: stored histories refer to these by index.
REASONS = ("registered", "worker started it", "worker completed it",
           "confirmed in job.high", "confirmed in job.medium", "confirmed in job.low",
           "cancelled by request", "worker cancelled it", "first seen in a worker report",
           "publish_on_register is off")
_REASON_CODES = {r: i for i, r in enumerate(REASONS)}


def pack_history(entries) -> bytes:
    """(at_ms, status, by, reason[, result]) entries, oldest first, as stored."""
    out, prev, codes = [], 0, _REASON_CODES
    for e in entries:           # by index: `*result` made a list per entry, every write
        at, status, by, reason = e[:4]
        item = [at - prev, status, by, codes.get(reason, reason)]
        if len(e) > 4:          # an earlier attempt's late result
            item.append(e[4])
        out.append(item)
        prev = at
    return raw(out) if out else _NO_HISTORY


def _unpack_history(data: bytes) -> list[tuple]:
    out, at = [], 0
    for e in orjson.loads(data):
        at += e[0]
        reason = e[3]
        if type(reason) is int:
            reason = REASONS[reason]
        out.append((at, e[1], e[2], reason) if len(e) == 4
                   else (at, e[1], e[2], reason, e[4]))     # with a late result
    return out


def history_of(job: "Job") -> list[tuple]:
    """The job's history as (at_ms, status, by, reason) tuples, oldest first."""
    return _unpack_history(job["history"])


def with_entry(data: bytes, entry: tuple, keep: int) -> bytes:
    """A stored history with entry appended, at most `keep` entries (the newest)."""
    hist = _unpack_history(data)
    hist.append(entry)
    return pack_history(hist[-keep:])


def capped(data: bytes, limit: int) -> bytes:
    """A stored result of at most `limit` bytes: itself, or a marker that says it was
    cut, with its size and its first bytes as text (JSON cut short is not JSON)."""
    if len(data) <= limit:
        return data
    head = data[:min(1024, limit // 2)].decode("utf-8", "ignore")
    return raw({"truncated": True, "bytes": len(data), "head": head})


def report_result(job: "Job", value, max_job_bytes: int | None):
    """A reported result as stored (bytes, or None) and as its status event carries it:
    cut to a marker (capped) when it would make the job larger than max_job_bytes,
    the limit a register is held to (CONTRACT §2.1). None: no limit (log entries from
    before the limit applied to reports)."""
    if value is None:
        return None, None
    data = raw(value)
    if max_job_bytes is None:
        return data, value
    room = max_job_bytes - (len(job.id) + len(job.type) + len(job.payload)
                            + len(job.metadata) + len(job.history))
    cut = capped(data, max(256, room))
    return (data, value) if cut is data else (cut, orjson.loads(cut))


def spliced(data: bytes | None):
    """A stored raw field as a value orjson writes as it is (None stays None)."""
    return None if data is None else orjson.Fragment(data)


class Job:
    """A job record. Read and written like the dict it used to be (job["status"],
    job.get("progress"), "not_before" in job, job.pop(...)), but its fields are slots:
    200 bytes a job instead of a dict's 464 (832 past 21 keys), ~260 MB less at a
    million jobs. A field that is not set is not there: job[k] raises KeyError,
    k in job is False (usually unset: running_since and the RARE ones)."""

    __slots__ = ("id", "seq", "type", "priority", "queue", "status", "worker_id",
                 "payload", "result", "retry_count", "max_retries", "attempt",
                 "execution_timeout", "metadata", "created_at", "queued_at", "started_at",
                 "completed_at", "history", "running_since", "_extra")
    # Fields few jobs have live in one dict, `_extra` (most jobs share _NO_EXTRA): a slot each
    # cost 8 bytes on every job (200 bytes a record with 21 slots, 240 with 26).
    # past: [[worker, attempt, owes, ended_by], ...], the workers of earlier attempts,
    # oldest first (see "Attempts" above TRANSITIONS); owes is non-zero while that worker
    # owes the attempt's terminal report (state.OWED, or state.OWED_IF_ALIVE once it
    # stopped heartbeating); ended_by the status it reported it with (or None).
    RARE = ("client_created_at", "error_message", "progress", "past",
            "not_before", "from_report", "run_at", "depends_on", "on_parent_failure")
    FIELDS = __slots__[:-1] + RARE
    _RARE = frozenset(RARE)

    def __init__(self, fields: dict) -> None:
        self._extra = _NO_EXTRA
        for k, v in fields.items():
            setattr(self, k, v)

    # Before `past`, a job kept only the worker of its last abandoned attempt, whose
    # reports were ignored but for a `running` while the job waited: that is rule C.
    @staticmethod
    def _migrate(rest: dict, attempt: int) -> None:
        w = rest.pop("stale_worker", None)
        if w is not None:
            rest["past"] = [[w, max(0, attempt - 1), 0, None]]

    def __getitem__(self, key: str):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __setitem__(self, key: str, value) -> None:
        setattr(self, key, value)

    def __delitem__(self, key: str) -> None:
        try:
            delattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    # get and `in` look rare fields up in _extra: through their properties an absent
    # one costs an exception (3 µs; a listing asks each job for several).
    def __contains__(self, key: str) -> bool:
        return key in self._extra if key in self._RARE else hasattr(self, key)

    def get(self, key: str, default=None):
        return self._extra.get(key, default) if key in self._RARE \
            else getattr(self, key, default)

    def pop(self, key: str, *default):
        if key in self:
            value = self[key]
            delattr(self, key)
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def update(self, **fields) -> None:
        for k, v in fields.items():
            setattr(self, k, v)

    def keys(self):
        return list(self.to_dict())

    def to_dict(self) -> dict:
        """The fields that are set, in FIELDS order (raw fields as their bytes)."""
        out = {k: getattr(self, k) for k in self.__slots__[:-1] if hasattr(self, k)}
        extra = self._extra
        if extra:
            out.update((k, extra[k]) for k in self.RARE if k in extra)
        return out

    def to_record(self) -> dict:
        """JSON-safe, for a snapshot: raw fields as JSON text in a string, so that
        loading never decodes them (orjson would turn a 30-digit integer into a float)."""
        out = self.to_dict()
        for k in STORED_JSON:
            if out.get(k) is not None:
                out[k] = out[k].decode()
        return out

    def to_row(self):
        """The job's snapshot row; its record (to_record) if it lacks a ROW field."""
        try:
            row = [getattr(self, k) for k in ROW]
            for i in _ROW_BYTES:
                row[i] = row[i].decode()
        except AttributeError:          # a field unset, or None where from_rows needs
            return self.to_record()      # bytes (jobs from older snapshots)
        if row[_ROW_RESULT] is not None:
            row[_ROW_RESULT] = row[_ROW_RESULT].decode()
        rest = dict(self._extra)
        if hasattr(self, "running_since"):
            rest["running_since"] = self.running_since
        row.append(rest or 0)
        return row

    @classmethod
    def from_record(cls, rec: dict, packed_history: bool = True) -> "Job":
        """to_record's inverse; also takes snapshots from before raw fields (dicts and
        lists) and from before packed histories (packed_history False)."""
        cls._migrate(rec, rec.get("attempt", 0))
        for k in RAW_FIELDS:
            v = rec.get(k)
            if isinstance(v, str):
                rec[k] = _EMPTY if v == "{}" else v.encode()
            elif v is not None:
                rec[k] = raw(v) if v else _EMPTY
        v = rec.get("history")
        if isinstance(v, str):
            rec["history"] = _NO_HISTORY if v == "[]" else v.encode() if packed_history \
                else pack_history(orjson.loads(v))
        elif v is not None:
            rec["history"] = pack_history(v)
        return cls(rec)

    def __eq__(self, other) -> bool:
        if isinstance(other, Job):
            other = other.to_dict()
        return self.to_dict() == other if isinstance(other, dict) else NotImplemented

    __hash__ = None       # mutable, like the dict it stands for

    def __repr__(self) -> str:
        return f"Job({self.to_dict()!r})"



_NO_EXTRA: dict = {}          # the _extra of every job without rare fields: never written


def _rare(name: str) -> property:
    """A Job field kept in its _extra dict: absent (AttributeError) until set."""
    def get(job):
        try:
            return job._extra[name]
        except KeyError:
            raise AttributeError(name) from None

    def set_(job, value):
        if job._extra is _NO_EXTRA:
            job._extra = {}
        job._extra[name] = value

    def delete(job):
        get(job)
        del job._extra[name]
        if not job._extra:
            job._extra = _NO_EXTRA
    return property(get, set_, delete)


for _name in Job.RARE:
    setattr(Job, _name, _rare(_name))


# Snapshot rows ##############################################################
# A snapshot (format 4) holds a job as a row: the values of ROW in that order, its
# stored JSON as strings, then a dict of its other fields (running_since and the
# RARE ones) or 0. No key names, no per-field lookups: reading a job this way took
# 1.75 µs against 5.7 as a record (968,000 jobs, in-process).
ROW = Job.__slots__[:19]                 # every job has these (new_job sets them)
assert ROW[-1] == "history" and "running_since" not in ROW
_ROW_RESULT = ROW.index("result")            # bytes or None; the other stored JSON
_ROW_BYTES = tuple(ROW.index(k) for k in STORED_JSON if k != "result")   # is bytes


def from_rows(rows, shared: dict, ints: dict) -> list[Job]:
    """to_row's inverse for a block of rows. shared holds one copy of each short
    string and ints of each execution_timeout: decoding makes one per job (58 bytes a
    job at 1,000,000 jobs)."""
    out, new, share, share_int = [], Job.__new__, shared.setdefault, ints.setdefault
    for (id_, seq, type_, priority, queue, status, worker_id, payload, result, retries,
         max_retries, attempt, timeout, metadata, created, queued, started, completed,
         history, rest) in rows:
        job = new(Job)
        job.id, job.seq, job.priority = id_, seq, priority
        job.type, job.queue, job.status = share(type_, type_), share(queue, queue), \
            share(status, status)
        job.worker_id = None if worker_id is None else share(worker_id, worker_id)
        job.payload = _EMPTY if payload == "{}" else payload.encode()
        job.result = None if result is None else result.encode()
        job.metadata = _EMPTY if metadata == "{}" else metadata.encode()
        job.history = _NO_HISTORY if history == "[]" else history.encode()
        job.retry_count, job.max_retries, job.attempt = retries, max_retries, attempt
        job.execution_timeout = share_int(timeout, timeout)
        job.created_at, job.queued_at, job.started_at, job.completed_at = \
            created, queued, started, completed
        if rest:
            since = rest.pop("running_since", None)
            if since is not None:
                job.running_since = started if since == started else since
            if "stale_worker" in rest:
                Job._migrate(rest, attempt)
        job._extra = rest or _NO_EXTRA
        out.append(job)
    return out

def new_job(id_: str, seq: int, at_ms: int, fields: dict) -> Job:
    """A fresh job record. `fields` holds the parsed register fields (see parse.py)."""
    priority = fields.get("priority", 5)
    job = Job({
        "id": id_, "seq": seq,
        "type": fields.get("type", "default"),
        "priority": priority, "queue": queue_for(priority),
        "status": PENDING, "worker_id": None,
        "payload": raw(fields.get("payload") or {}), "result": None,
        "retry_count": 0, "max_retries": fields["max_retries"],
        "attempt": 0,       # +1 on every return to pending; never reset (matches confirms)
        "execution_timeout": fields["execution_timeout"],
        "metadata": raw(fields.get("metadata") or {}),
        "created_at": at_ms, "queued_at": None, "started_at": None,
        "completed_at": None, "history": _NO_HISTORY,
    })
    if "client_created_at" in fields:
        job["client_created_at"] = fields["client_created_at"]
    return job


def fill_fields(job: dict, fields: dict) -> None:
    """Set the register fields on an existing record (status and counters untouched)."""
    for key in ("type", "max_retries", "execution_timeout", "client_created_at"):
        if key in fields:
            job[key] = fields[key]
    for key in ("payload", "metadata"):
        if key in fields:
            job[key] = raw(fields[key] or {})
    if "priority" in fields:
        job["priority"] = fields["priority"]
        job["queue"] = queue_for(fields["priority"])


def api_json(job: Job, full: bool = True, history: bool = False) -> dict:
    """The API's view of a job, for dumps() (its raw fields are Fragments)."""
    extra, rare = job._extra, Job._RARE       # job.get() per field: +25% a listing
    out = {k: extra.get(k) if k in rare else getattr(job, k, None)
           for k in (API_FIELDS if full else _LISTED)}
    for k in RAW_FIELDS:
        if k in out:
            out[k] = spliced(out[k])
    if extra:
        if extra.get("progress") is not None:
            out["progress"] = extra["progress"]
        if "client_created_at" in extra:
            out["client_created_at"] = extra["client_created_at"]
        if "run_at" in extra:       # only jobs registered with a time carry it
            out["run_at"] = extra["run_at"]
        if "depends_on" in extra:   # and with parents
            out["depends_on"] = extra["depends_on"]
            out["on_parent_failure"] = extra.get("on_parent_failure", "cancel")
    if history:
        out["history"] = [dict(zip(HISTORY_KEYS, h)) for h in history_of(job)]
    return out


def message_body(job: "Job") -> dict:
    """The job message body: CONTRACT §3's 15 keys, status always "pending".
    Read as attributes, not job[...]: 13 calls fewer a message (each ~1 µs at one
    connection, where the publish path's calls are most of its cost)."""
    return {
        "id": job.id, "type": job.type, "priority": job.priority,
        "status": PENDING, "worker_id": job.worker_id, "payload": spliced(job.payload),
        "result": spliced(job.result), "error_message": job._extra.get("error_message"),
        "retry_count": job.retry_count, "max_retries": job.max_retries,
        "execution_timeout": job.execution_timeout, "created_at": job.created_at,
        "started_at": job.started_at, "completed_at": job.completed_at,
        "metadata": spliced(job.metadata),
    }


def run_id(schedule_id: str, tick_ms: int) -> str:
    """The id of a schedule's run at a tick: `nightly@2026-12-07T02:30:00Z` (ms shown
    only when the tick has them). One tick, one id: a run fired twice is one job."""
    iso = iso_ms(tick_ms)
    return schedule_id + "@" + (iso[:19] + "Z" if tick_ms % 1000 == 0 else iso)


def iso_ms(at_ms: int) -> str:
    """Integer ms -> ISO-8601 UTC with milliseconds, e.g. 2026-11-27T11:07:08.123Z."""
    return _iso_second(at_ms // 1000) + ".%03dZ" % (at_ms % 1000)


# Every status event formats its time; most fall in a second formatted just before
# (strftime was 1.4% of the node's samples in bench/pipeline.py): 2.6 -> 0.4 µs.
@functools.lru_cache(maxsize=64)
def _iso_second(second: int) -> str:
    t = datetime.datetime.fromtimestamp(second, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def event_body(ev: dict) -> dict:
    """Status event body (CONTRACT §3) from an outbox entry (see state._event)."""
    body = {"jobId": ev["job"], "jobStatus": ev["status"],
            "workerId": ev.get("worker") or "unknown"}
    if "result" in ev:
        res = ev["result"]
        body["result"] = res if isinstance(res, dict) else {"value": res}
    if ev.get("error") is not None:
        body["errorMessage"] = ev["error"]
    if ev.get("progress") is not None:
        body["progress"] = ev["progress"]
    body["timestamp"] = iso_ms(ev["at_ms"])
    return body


def _clock(at_ms: int) -> str:
    return iso_ms(at_ms)[11:19] + " UTC"


def _when(at_ms: int, now_ms: int) -> str:
    """A time, with its date when it is not today's (UTC)."""
    iso = iso_ms(at_ms)
    return (iso[11:19] if iso[:10] == iso_ms(now_ms)[:10]
            else iso[:10] + " " + iso[11:19]) + " UTC"


def _duration(ms: int) -> str:
    s = max(0, ms) // 1000
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _why_attempt(job, status: str = PENDING) -> str:
    """' (attempt 2: <why it began>)' for a job past its first attempt, else ''."""
    if not job["attempt"]:
        return ""
    began = None
    for h in reversed(history_of(job)):   # the move itself, not a late report noted after it
        if h[1] == PENDING:
            began = h[3]
        elif h[1] != status or began is not None:
            break
    return f" (attempt {job['attempt'] + 1}: {began})" if began else \
        f" (attempt {job['attempt'] + 1})"


def why(job: dict, now_ms: int, broker_down_since_ms: int | None, workers_active: int,
        paused_since_ms: int | None = None, parent_status=None,
        limit_note: str | None = None) -> str:
    """One line that explains the job's state in words a person can act on.
    paused_since_ms: its queue is paused (POST /api/queues/{queue}/pause) since then.
    parent_status(id): a parent's status or None (a waiting job's parents).
    limit_note: its type's limit holds it (state.limit_note)."""
    status = job["status"]
    if status == WAITING:
        parents = job.get("depends_on") or ()
        left = [p for p in parents
                if (parent_status(p) if parent_status else None) != COMPLETED]
        return (f"waiting for {len(left)} of {len(parents)} jobs to complete: "
                + ", ".join(left[:5]) + (", ..." if len(left) > 5 else ""))
    if status == SCHEDULED:
        at = job["run_at"]
        if at > now_ms:
            return f"scheduled for {_when(at, now_ms)}, in {_duration(at - now_ms + 999)}"
        return (f"scheduled for {_when(at, now_ms)}, due {_duration(now_ms - at)} ago: "
                "the leader releases it to pending")
    if status == PENDING:
        not_before = job.get("not_before")
        if not_before is not None and not_before > now_ms:
            return (f"pending: retry {job['retry_count']} of {job['max_retries']} waits "
                    f"until {_clock(not_before)} (backoff)")
        why_new = _why_attempt(job)
        if limit_note is not None:
            return f"pending{why_new}: {limit_note}"
        if paused_since_ms is not None:
            return (f"pending{why_new}: {job['queue']} is paused since "
                    f"{_when(paused_since_ms, now_ms)} (POST /api/queues/{job['queue']}/resume)")
        if broker_down_since_ms is not None:
            return f"pending{why_new}: RabbitMQ unreachable since {_clock(broker_down_since_ms)}"
        return (f"pending{why_new}: published to {job['queue']}, waiting for RabbitMQ to "
                "confirm it")
    if status == QUEUED:
        since = job["queued_at"] or job["created_at"]
        return (f"queued in {job['queue']} for {_duration(now_ms - since)}"
                f"{_why_attempt(job, QUEUED)}; "
                f"{workers_active} responsive worker{'s' if workers_active != 1 else ''}")
    worker = job["worker_id"] or "an unknown worker"
    if status == RUNNING:
        since = job.get("running_since") or job["started_at"] or now_ms
        return (f"running on {worker} for {_duration(now_ms - since)} of "
                f"{job['execution_timeout']} s")
    if status == COMPLETED:
        since = job.get("running_since")
        took = f" in {_duration(job['completed_at'] - since)}" if since else ""
        return f"completed by {worker}{took}"
    if status == FAILED:
        attempts = job["retry_count"] + 1
        return (f"failed after {attempts} attempt{'s' if attempts != 1 else ''}: "
                f"{job.get('error_message') or 'no error message'}")
    by = "request"
    for h in reversed(history_of(job)):       # the move itself, not a late report noted after it
        if h[1] != CANCELLED:
            break
        by = h[2]
    return f"cancelled by {by} at {_clock(job['completed_at'])}"
