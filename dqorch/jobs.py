"""What a job is and how it may move: statuses, aliases, priority -> queue, and the
shapes a job takes on the wire (API JSON, job message, status event).

Pure: no clock, no randomness, no I/O. state.py applies these rules; api.py and
dispatch.py only render with them.
"""
from __future__ import annotations

import datetime

PENDING, QUEUED, RUNNING = "pending", "queued", "running"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
STATUSES = (PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset((COMPLETED, FAILED, CANCELLED))

# Every move state.py may make. Back to pending: a retry (from queued or running) or a
# new register of a finished job (from a terminal state). Reports never move a terminal
# job; state.py checks that before it moves anything.
TRANSITIONS = {
    PENDING: {PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED},
    QUEUED: {RUNNING, COMPLETED, FAILED, CANCELLED, PENDING},
    RUNNING: {RUNNING, COMPLETED, FAILED, CANCELLED, PENDING},
    COMPLETED: {PENDING},
    FAILED: {PENDING},
    CANCELLED: {PENDING},
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

# queue -> (lowest priority routed there, AMQP priority of its messages)
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
# A history entry is stored as [at_ms, status, by, reason] (a dict per entry would
# cost ~100 bytes more on every job held) and shown as an object with these keys.
HISTORY_KEYS = ("at", "status", "by", "reason")


def new_job(id_: str, seq: int, at_ms: int, fields: dict) -> dict:
    """A fresh job record. `fields` holds the parsed register fields (see parse.py).

    Keys that are usually unset are left out until set: error_message, progress,
    running_since, client_created_at, stale_worker, not_before, from_report (True on
    a job first seen in a worker report). A dict of up to 21 keys takes 464 bytes,
    from 22 on 832: at a million jobs that is 350 MB."""
    priority = fields.get("priority", 5)
    job = {
        "id": id_, "seq": seq,
        "type": fields.get("type", "default"),
        "priority": priority, "queue": queue_for(priority),
        "status": PENDING, "worker_id": None,
        "payload": fields.get("payload", {}), "result": None,
        "retry_count": 0, "max_retries": fields["max_retries"],
        "attempt": 0,       # +1 on every return to pending; never reset (matches confirms)
        "execution_timeout": fields["execution_timeout"],
        "metadata": fields.get("metadata", {}),
        "created_at": at_ms, "queued_at": None, "started_at": None,
        "completed_at": None, "history": [],
    }
    if "client_created_at" in fields:
        job["client_created_at"] = fields["client_created_at"]
    return job


def fill_fields(job: dict, fields: dict) -> None:
    """Set the register fields on an existing record (status and counters untouched)."""
    for key in ("type", "payload", "metadata", "max_retries", "execution_timeout",
                "client_created_at"):
        if key in fields:
            job[key] = fields[key]
    if "priority" in fields:
        job["priority"] = fields["priority"]
        job["queue"] = queue_for(fields["priority"])


def api_json(job: dict, full: bool = True, history: bool = False) -> dict:
    out = {k: job.get(k) for k in API_FIELDS if full or k not in LIST_OMITS}
    if job.get("progress") is not None:
        out["progress"] = job["progress"]
    if "client_created_at" in job:
        out["client_created_at"] = job["client_created_at"]
    if history:
        out["history"] = [dict(zip(HISTORY_KEYS, h)) for h in job["history"]]
    return out


def message_body(job: dict) -> dict:
    """The job message body: CONTRACT §3's 15 keys, status always "pending"."""
    return {
        "id": job["id"], "type": job["type"], "priority": job["priority"],
        "status": PENDING, "worker_id": job["worker_id"], "payload": job["payload"],
        "result": job["result"], "error_message": job.get("error_message"),
        "retry_count": job["retry_count"], "max_retries": job["max_retries"],
        "execution_timeout": job["execution_timeout"], "created_at": job["created_at"],
        "started_at": job["started_at"], "completed_at": job["completed_at"],
        "metadata": job["metadata"],
    }


def iso_ms(at_ms: int) -> str:
    """Integer ms -> ISO-8601 UTC with milliseconds, e.g. 2026-11-27T11:07:08.123Z."""
    t = datetime.datetime.fromtimestamp(at_ms // 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (at_ms % 1000)


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


def _duration(ms: int) -> str:
    s = max(0, ms) // 1000
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def why(job: dict, now_ms: int, broker_down_since_ms: int | None, workers_active: int) -> str:
    """One line that explains the job's state in words a person can act on."""
    status = job["status"]
    if status == PENDING:
        not_before = job.get("not_before")
        if not_before is not None and not_before > now_ms:
            return (f"pending: retry {job['retry_count']} of {job['max_retries']} waits "
                    f"until {_clock(not_before)} (backoff)")
        if broker_down_since_ms is not None:
            return f"pending: RabbitMQ unreachable since {_clock(broker_down_since_ms)}"
        return f"pending: published to {job['queue']}, waiting for RabbitMQ to confirm it"
    if status == QUEUED:
        since = job["queued_at"] or job["created_at"]
        return (f"queued in {job['queue']} for {_duration(now_ms - since)}; "
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
    for h in reversed(job["history"]):     # the move itself, not a late report noted after it
        if h[1] != CANCELLED:
            break
        by = h[2]
    return f"cancelled by {by} at {_clock(job['completed_at'])}"
