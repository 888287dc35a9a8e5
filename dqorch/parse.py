"""Requests -> commands. All shape validation of client input lives here (CONTRACT
§2.1-2.4); state.py re-checks only rules that depend on state.

Pure: the caller passes the time and any new id. Raises errors.ApiError (400/413).
"""
from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import re
import sys

from . import codec, jobs
from .errors import ApiError, bad

MAX_ID_CHARS = 256
MAX_TYPE_CHARS = 128
# The one character rule for names a client gives (job id and type, worker id and
# type): they reach log lines, listings, RabbitMQ headers and the console. No C0 or
# C1 control characters (a newline forges a log line, ESC drives a terminal, NUL
# cuts C strings), no bidirectional overrides or isolates (text that reads other
# than it is), no lone surrogates (cannot be written as UTF-8).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# A name made only of these shows as nothing, or as another name's blank.
_INVISIBLE = re.compile("[\\s\u00ad\u200b-\u200d\u2060\ufeff]+")


def body_json(raw: bytes, allow_empty: bool = True) -> dict:
    """Decode a request body into a JSON object, whatever the Content-Type said."""
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "request body is empty; expected a JSON object")
    try:
        value = codec.loads(raw)
    except (ValueError, RecursionError):
        value = _read_slowly(raw)
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request",
                       f"request body must be a JSON object, got {_kind(value)}")
    if raw.find(b"\\u") >= 0:       # not `in`: see headers.py
        # A \ud800 escape is valid JSON but a lone surrogate cannot be written as
        # UTF-8 (to the log, to RabbitMQ). Only escapes can produce one.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "invalid_json",
                           "request body holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
    return value


def _read_slowly(raw: bytes):
    """The stdlib's reading of what orjson refused: the error says what is wrong (and a
    lone surrogate, which orjson refuses, is named by body_json)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_json", f"request body is not valid UTF-8 (byte {e.start})")
    try:
        return codec.stdlib_loads(text)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {e}")


def _kind(v) -> str:
    if v is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string",
            list: "array", dict: "object"}.get(type(v), type(v).__name__)


def _first(body: dict, names: tuple):
    """(name, value) of the first spelling present and not null, else (names[0], None).
    Null counts as absent: the gateway sends every field, unset ones as null."""
    for n in names:
        if body.get(n) is not None:
            return n, body[n]
    return names[0], None


def client_name(value, field: str, max_chars: int = MAX_ID_CHARS) -> str:
    """A client's name for something (job id, job type, worker id, worker type): a
    string of 1-max_chars characters under the one character rule above, with at
    least one visible character. 400 naming `field` otherwise."""
    if not isinstance(value, str):
        raise bad(field, f"must be a string, got {_kind(value)}")
    if not value or len(value) > max_chars:
        raise bad(field, f"must be 1-{max_chars} characters, got {len(value)}")
    found = _FORBIDDEN.search(value)      # a regex: 0.2 µs for a uuid, a loop over ord() 2.2
    if found:
        c = ord(found.group())
        what = ("bidirectional-override" if 0x202a <= c <= 0x2069 else
                "surrogate" if 0xd800 <= c <= 0xdfff else "control")
        raise bad(field, f"must not contain {what} characters (found U+{c:04X})")
    if _INVISIBLE.fullmatch(value):
        raise bad(field, "must contain a visible character (not only spaces or "
                  "zero-width characters)")
    return value


def job_id(value, field: str = "id") -> str:
    """client_name(), a number taken as its decimal string, and what a path must be able to
    name: no "/", not "." or ".."."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    value = client_name(value, field)
    if "/" in value:
        # The job's own routes (/api/jobs/{id}, .../cancel, .../retry) could never
        # name it: a WSGI path arrives with %2F already decoded.
        raise bad(field, "must not contain '/'")
    if value == "." or value == "..":
        # Clients remove dot segments from a path (RFC 3986 §5.2.4): /api/jobs/../cancel
        # never reaches that job.
        raise bad(field, f"must not be {value!r} (a path cannot name it)")
    return value


def worker_id(value, field: str = "workerId") -> str:
    """client_name(); "/" allowed (a worker has no route of its own)."""
    return client_name(value, field)


def _int(field: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad(field, f"must be an integer {lo}-{hi}, got {_kind(v)}")
    if not lo <= v <= hi:
        raise bad(field, f"must be an integer {lo}-{hi}, got {v}")
    return v


def priority(v, field: str = "priority") -> int:
    if isinstance(v, bool):
        raise bad(field, "must be an integer or LOW, MEDIUM, HIGH, CRITICAL; got boolean")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise bad(field, "must be a finite number")
        v = math.floor(v)
    elif isinstance(v, str):
        s = v.strip()
        if s.lower() in jobs.PRIORITY_NAMES:
            return jobs.PRIORITY_NAMES[s.lower()]
        try:
            v = int(s)
        except ValueError:
            try:
                v = float(s)          # a numeric string may be a float: floored below
            except ValueError:
                raise bad(field, f"must be an integer or LOW, MEDIUM, HIGH, CRITICAL; got {v[:40]!r}")
            return priority(v, field)
    if not isinstance(v, int):
        raise bad(field, f"must be an integer or LOW, MEDIUM, HIGH, CRITICAL; got {_kind(v)}")
    if not -1_000_000 <= v <= 1_000_000:
        raise bad(field, f"must be between -1000000 and 1000000, got {v}")
    return v


def register(body: dict, *, new_id, max_retries: int, execution_timeout: int,
             max_job_bytes: int, publish: bool) -> dict:
    """CONTRACT §2.1. Returns the command {"op":"register","id","job","publish"}.
    new_id() is called only when the body names no id."""
    f: dict = {}
    name, v = _first(body, ("id", "jobId", "job_id"))
    id_ = new_id() if v is None else job_id(v, name)
    name, v = _first(body, ("type",))
    if v is not None:
        f["type"] = sys.intern(client_name(v, "type", MAX_TYPE_CHARS))   # one copy per type
    if body.get("priority") is not None:
        f["priority"] = priority(body["priority"])
    if "payload" in body:
        v = body["payload"]
        if v is not None and not isinstance(v, dict):
            raise bad("payload", f"must be a JSON object or null, got {_kind(v)}")
        f["payload"] = v or {}
    name, v = _first(body, ("max_retries", "maxRetries"))
    f["max_retries"] = max_retries if v is None else _int(name, v, 0, 100)
    name, v = _first(body, ("execution_timeout", "executionTimeout", "timeout"))
    f["execution_timeout"] = execution_timeout if v is None else _int(name, v, 1, 604800)
    if body.get("metadata") is not None:
        v = body["metadata"]
        if not isinstance(v, dict):
            raise bad("metadata", f"must be a JSON object, got {_kind(v)}")
        for k, mv in v.items():
            if mv is not None and not isinstance(mv, (str, int, float, bool)):
                raise bad("metadata", f"value of {k[:40]!r} must be a string, number, boolean or null")
        f["metadata"] = v
    name, v = _first(body, ("created_at", "createdAt"))
    if v is not None:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise bad(name, f"must be a string or a number, got {_kind(v)}")
        if isinstance(v, int) and not -2**63 <= v < 2**63:   # a time; snapshots use orjson
            raise bad(name, "must be a number within 64 bits (a time), or a string")
        f["client_created_at"] = v
    size = len(codec.dumps(f)) + len(id_.encode())
    if size > max_job_bytes:
        raise ApiError(413, "payload_too_large",
                       f"job is {size} bytes; max_job_bytes is {max_job_bytes}")
    cmd = {"op": "register", "id": id_, "job": f, "publish": publish}
    parents = depends_on(body, id_)
    if parents:
        if not publish:
            raise bad("depends_on", "a job that waits for others needs "
                                    "publish_on_register: true")
        cmd["depends_on"] = parents
        policy = body.get("on_parent_failure")
        if policy is not None:
            if policy not in ("cancel", "run"):
                raise bad("on_parent_failure", "must be cancel or run")
            cmd["on_parent_failure"] = policy
    later = run_later(body)
    if later is not None:
        if not publish:
            raise bad(later[0], "a job that runs later needs publish_on_register: true "
                                "(with it off the gateway publishes jobs itself, at once)")
        cmd[later[1]] = later[2]
    return cmd


MAX_PARENTS = 100


def depends_on(body: dict, id_: str) -> list:
    """The ids a register waits for: 1-MAX_PARENTS distinct job ids, not its own."""
    name, v = _first(body, ("depends_on", "dependsOn"))
    if v is None:
        return []
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_PARENTS:
        raise bad(name, f"must be a list of 1-{MAX_PARENTS} job ids")
    out = [job_id(p, name) for p in v]
    if len(set(out)) != len(out):
        raise bad(name, "lists a job twice")
    if id_ in out:
        raise bad(name, "lists the job itself")
    return out


MIN_RUN_AT_MS = 10 ** 11           # 1973 in ms; a smaller run_at is seconds, not ms
MAX_RUN_AT_MS = 253402300799999    # 9999-12-31T23:59:59.999Z
MAX_DELAY_S = 10 * 366 * 86400     # ten years


def run_later(body: dict) -> tuple | None:
    """A register's time to run: (field, "run_at", ms since the epoch) or (field,
    "delay_ms", ms after the leader's stamp), or None (run now). run_at is integer ms
    or an ISO-8601 string with a zone; delay is seconds."""
    name, at = _first(body, ("run_at", "runAt"))
    dname, delay = _first(body, ("delay",))
    if at is not None and delay is not None:
        raise bad(dname, f"give {name} or {dname}, not both")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) \
                or not 0 <= delay <= MAX_DELAY_S:
            raise bad(dname, f"must be a number of seconds from 0 to {MAX_DELAY_S}, "
                             f"got {delay!r:.40}")
        return dname, "delay_ms", round(delay * 1000)
    if at is None:
        return None
    ms = time_ms(at, name)
    return name, "run_at", ms


def time_ms(at, name: str) -> int:
    """A time a client gives: integer ms since the epoch (seconds are refused) or an
    ISO-8601 string with a zone; ms since the epoch, 1973-9999."""
    if isinstance(at, str):
        try:
            t = datetime.datetime.fromisoformat(at)
        except ValueError:
            raise bad(name, f"must be ms since the epoch or an ISO-8601 time with a zone "
                            f"(2026-12-07T10:42:01Z), got {at[:40]!r}")
        if t.tzinfo is None:
            raise bad(name, f"{at[:40]!r} has no zone: add Z, +01:00 or the like")
        ms = round(t.timestamp() * 1000)
    elif isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise bad(name, f"must be ms since the epoch or an ISO-8601 string, got {_kind(at)}")
    else:
        ms = round(at)
        if ms < MIN_RUN_AT_MS:
            raise bad(name, f"{ms} is before 1973 in ms: send milliseconds since the "
                            f"epoch, not seconds")
    if not MIN_RUN_AT_MS <= ms <= MAX_RUN_AT_MS:
        raise bad(name, "must be a time between 1973 and 9999")
    return ms


class Repeat:
    """A batch item whose id an earlier item of the same batch already has: it is not
    proposed again, and its outcome is the earlier one's (`first`: that item's index)."""
    __slots__ = ("job_id", "first")

    def __init__(self, job_id: str, first: int) -> None:
        self.job_id, self.first = job_id, first


def batch(body: dict, *, max_batch_jobs: int, **register_kw) -> list:
    """POST /api/jobs/batch: {"jobs": [<register body>, ...]} -> one item per job, in
    order: its register command, the ApiError that refused it (a bad item does not
    refuse the others), or a Repeat of an earlier valid item with the same id. The
    batch as a whole must be a non-empty list of at most max_batch_jobs (413 beyond)."""
    v = body.get("jobs")
    if not isinstance(v, list):
        raise bad("jobs", f"must be a list of register bodies, got {_kind(v)}")
    if not v:
        raise bad("jobs", "must hold at least one job")
    if len(v) > max_batch_jobs:
        raise ApiError(413, "payload_too_large",
                       f"batch of {len(v)} jobs; max_batch_jobs is {max_batch_jobs}", "jobs")
    out: list = []
    first: dict[str, int] = {}        # id -> index of the first valid item with it
    for n, item in enumerate(v):
        if not isinstance(item, dict):
            out.append(bad("jobs", f"each job must be a JSON object, got {_kind(item)}"))
            continue
        try:
            cmd = register(item, **register_kw)
        except ApiError as e:
            out.append(e)
            continue
        at = first.setdefault(cmd["id"], n)
        out.append(cmd if at == n else Repeat(cmd["id"], at))
    return out


def report(body: dict, path_id: str | None, *, max_retries: int,
           execution_timeout: int, retry_backoff_ms: int = 0,
           max_job_bytes: int | None = None) -> dict:
    """CONTRACT §2.2. Returns {"op":"report","id","status","worker_id",...}. With a
    result, max_job_bytes rides along: apply cuts a result that would make the job
    larger (jobs.report_result), since only the state knows the job's size."""
    if path_id is not None:
        id_ = job_id(path_id, "id")
    else:
        name, v = _first(body, ("jobId", "job_id", "id"))
        if v is None:
            raise bad("jobId", "is required")
        id_ = job_id(v, name)
    v = body.get("status")
    if not isinstance(v, str):
        raise bad("status", "is required: running, completed, failed or cancelled")
    status = jobs.REPORT_ALIASES.get(v.strip().lower())
    if status is None:
        raise bad("status", f"unknown status {v[:40]!r}; allowed: running, completed, "
                  "failed, cancelled (and their aliases)")
    cmd = {"op": "report", "id": id_, "status": status, "worker_id": None,
           "max_retries": max_retries, "execution_timeout": execution_timeout}
    if status == jobs.FAILED and retry_backoff_ms:
        cmd["retry_backoff_ms"] = retry_backoff_ms
    name, v = _first(body, ("workerId", "worker_id"))
    if v is not None:
        cmd["worker_id"] = sys.intern(worker_id(v, name))
    if body.get("result") is not None:
        cmd["result"] = body["result"]
        if max_job_bytes is not None:
            cmd["max_job_bytes"] = max_job_bytes
    name, v = _first(body, ("errorMessage", "error_message"))
    if v is not None:
        if not isinstance(v, str):
            raise bad(name, f"must be a string, got {_kind(v)}")
        cmd["error_message"] = v[:4096]
    if body.get("progress") is not None:
        cmd["progress"] = _int("progress", body["progress"], 0, 100)
    return cmd


def cancel(path_id: str) -> dict:
    return {"op": "cancel", "id": job_id(path_id, "id")}


def heartbeat(body: dict) -> dict:
    """CONTRACT §2.4 -> a worker record for workers.WorkerTable (soft state, not logged)."""
    name, v = _first(body, ("workerId", "worker_id"))
    if v is None:
        raise bad("workerId", "is required")
    w = {"worker_id": worker_id(v, name), "worker_type": "unknown", "capacity": 10, "current_load": 0}
    name, v = _first(body, ("worker_type", "workerType"))
    if v is not None and v != "":        # "": as if absent, as before
        w["worker_type"] = client_name(v, name, MAX_TYPE_CHARS)
    if body.get("capacity") is not None:
        w["capacity"] = _int("capacity", body["capacity"], 0, 1_000_000)
    name, v = _first(body, ("current_load", "currentLoad"))
    if v is not None:
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(name, f"must be an integer, got {_kind(v)}")
        w["current_load"] = max(0, v)
    skip = {"workerId", "worker_id", "worker_type", "workerType", "capacity",
            "current_load", "currentLoad"}
    stats = {k: v for k, v in body.items() if k not in skip}
    if len(json.dumps(stats)) > 8192:
        raise bad("stats", "the other heartbeat fields must fit in 8192 bytes")
    w["stats"] = stats
    return w


def retry_query(body: dict) -> dict:
    """POST /api/jobs/retry -> bulk_query(body, terminal statuses, default failed: the
    dead set; cancelled jobs were stopped on purpose and are retried only when asked)."""
    return bulk_query(body, jobs.TERMINAL, [jobs.FAILED])


BULK_IDS_MAX = 10000
_BULK_KEYS = ("status", "type", "queue", "worker_id", "limit", "id_prefix", "error",
              "created_since", "created_before", "finished_since", "finished_before",
              "retry_count_min", "retry_count_max")


def bulk_query(body: dict, allowed: frozenset, default: list) -> dict:
    """The body of a bulk action (POST /api/jobs/retry, /discard, /cancel) ->
    {"ids", "filters", "where", "statuses", "limit"}.

    Either `ids` (a list of job ids, at most BULK_IDS_MAX: the jobs a person selected),
    or the listing's filters (GET /api/jobs's names) with `status` one of `allowed`
    (default: `default`) and `limit` (1-10000, default 100), or `"all": true` for
    every matching job (limit None)."""
    if not isinstance(body, dict):
        raise bad("body", "must be a JSON object")
    ids = body.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or not 1 <= len(ids) <= BULK_IDS_MAX:
            raise bad("ids", f"must be a list of 1-{BULK_IDS_MAX} job ids")
        return {"ids": list(dict.fromkeys(job_id(i, "ids") for i in ids)), "filters": {},
                "where": {}, "statuses": sorted(allowed), "limit": len(ids)}
    given = {k: v for k, v in body.items() if k in _BULK_KEYS and v is not None}
    for k, v in given.items():
        if k == "limit" or k.endswith(("_since", "_before", "_min", "_max")):
            if not isinstance(v, int) or isinstance(v, bool):
                raise bad(k, "must be an integer")
        elif not isinstance(v, str):
            raise bad(k, "must be a string")
    every = body.get("all", False)
    if not isinstance(every, bool):
        raise bad("all", "must be true or false")
    q = list_query({k: str(v) for k, v in given.items()})
    status = q["filters"].pop("status", None)
    if status is not None and status not in allowed:
        raise bad("status", f"must be one of {', '.join(sorted(allowed))}")
    return {"ids": None, "filters": q["filters"], "where": q["where"],
            "limit": None if every else q["limit"],
            "statuses": [status] if status else list(default)}


def query_limit(v: str | None, default: int, most: int = 10000) -> int:
    """A listing's `limit` query parameter: an integer 1-most, default when absent."""
    if v in (None, ""):
        return default
    try:
        limit = int(v)
    except ValueError:
        raise bad("limit", f"must be an integer 1-{most}")
    if not 1 <= limit <= most:
        raise bad("limit", f"must be an integer 1-{most}, got {limit}")
    return limit


def _query_int(query: dict, key: str, lo: int, hi: int) -> int | None:
    v = query.get(key)
    if v in (None, ""):
        return None
    try:
        n = int(v)
    except ValueError:
        raise bad(key, f"must be an integer {lo}-{hi}")
    if not lo <= n <= hi:
        raise bad(key, f"must be an integer {lo}-{hi}, got {n}")
    return n


MAX_MS = 2 ** 53           # a time in ms past this is no time (JSON's exact integers)
MAX_OFFSET = 10_000_000


def list_where(query: dict) -> dict:
    """The filters of GET /api/jobs that no index answers (state.where_match): id
    prefix, created/finished time ranges [since, before) in ms, error text (any case),
    retry_count range [min, max]. Only the ones given."""
    where: dict = {}
    prefix = query.get("id_prefix")
    if prefix not in (None, ""):
        where["id_prefix"] = client_name(prefix, "id_prefix")
    error = query.get("error")
    if error not in (None, ""):
        if len(error) > 200:
            raise bad("error", "must be at most 200 characters")
        where["error"] = error.lower()
    for key in ("created_since", "created_before", "finished_since", "finished_before"):
        n = _query_int(query, key, 0, MAX_MS)
        if n is not None:
            where[key] = n
    for key in ("retry_count_min", "retry_count_max"):
        n = _query_int(query, key, 0, 1000)
        if n is not None:
            where[key] = n
    return where


def list_query(query: dict) -> dict:
    """GET /api/jobs query -> {"filters", "where", "limit", "cursor", "offset", "full"}."""
    filters = {}
    for key in ("status", "type", "worker_id", "queue"):
        v = query.get(key)
        if v is not None and v != "":
            if key == "status" and v not in jobs.STATUSES:
                raise bad("status", f"unknown status {v[:40]!r}; allowed: {', '.join(jobs.STATUSES)}")
            if key == "queue" and v not in jobs.QUEUES:
                raise bad("queue", f"unknown queue {v[:40]!r}; allowed: {', '.join(jobs.QUEUES)}")
            filters[key] = v
    limit = query_limit(query.get("limit"), 100)
    cursor = None
    if query.get("cursor") not in (None, ""):
        try:
            cursor = int(query["cursor"])
        except ValueError:
            raise bad("cursor", "is not a cursor this server returned")
    full = query.get("full", "") in ("1", "true", "yes")
    offset = _query_int(query, "offset", 0, MAX_OFFSET) or 0
    return {"filters": filters, "where": list_where(query), "limit": limit,
            "cursor": cursor, "offset": offset, "full": full}


MAX_WORKERS_PAGE = 10000      # workers.MAX_WORKERS: the default page holds them all


def worker_cursor(worker_id: str) -> str:
    """The `next` of a GET /api/workers page: the last id returned, base64url (an id
    may hold &, #, + or spaces, which a client would have to escape in a query)."""
    return base64.urlsafe_b64encode(worker_id.encode()).decode().rstrip("=")


def workers_query(query: dict) -> dict:
    """GET /api/workers query -> {"limit", "after"}. limit 1-10000, default 10000 (every
    worker: the table holds at most that many, and clients from before paging read
    one page); cursor: a `next` this server returned."""
    limit = query_limit(query.get("limit"), MAX_WORKERS_PAGE)
    after = None
    cursor = query.get("cursor")
    if cursor not in (None, ""):
        try:
            after = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_",
                                     validate=True).decode()
        except (binascii.Error, ValueError):
            raise bad("cursor", "is not a cursor this server returned")
    return {"limit": limit, "after": after}
