"""The OpenAPI 3.1 document of the HTTP API (CONTRACT §2, docs/API.md), served at
GET /api/openapi.json. A plain dict: no I/O, built once at import.

Requests are described as loosely as the server accepts them (every spelling of a
field, null wherever null means "absent", unknown fields allowed); responses as
precisely as the server promises them. tests/unit/test_openapi_doc.py keeps the
document in step with the routes, and tests/integration/test_openapi.py checks a
running node against it with schemathesis.
"""
from __future__ import annotations

from . import __version__
from .jobs import PRIORITY_NAMES, QUEUES, REPORT_ALIASES, STATUSES

ERROR_CODES = ("invalid_json", "invalid_request", "not_found", "conflict",
               "payload_too_large", "method_not_allowed", "unauthorized", "forbidden",
               "unavailable", "internal")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _rref(name: str) -> dict:
    return {"$ref": f"#/components/responses/{name}"}


def _nullable(schema: dict) -> dict:
    """schema, or JSON null (null means "absent" for every optional request field)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _any_case(words) -> str:
    """A regex matching any of `words` in any letter case, surrounded by optional
    whitespace (the server strips and lower-cases before comparing)."""
    alts = ["".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in w)
            for w in sorted(words, key=lambda w: (-len(w), w))]
    return "^\\s*(" + "|".join(alts) + ")\\s*$"


MILLIS = {"type": "integer", "description": "milliseconds since the Unix epoch"}
MILLIS_OR_NULL = {"type": ["integer", "null"],
                  "description": "milliseconds since the Unix epoch, or null when unset"}
COUNT = {"type": "integer", "minimum": 0}

_ID_STRING = {"type": "string", "minLength": 1, "maxLength": 256,
              "pattern": "^[^\\u0000-\\u001f\\u007f]*$",
              "description": "1-256 characters, no control characters"}

# Request field schemas ######################################################

_REQ = {
    "JobIdIn": {
        "description": "A job id: a string of 1-256 characters without control "
                       "characters, or an integer (turned into its decimal string). "
                       "null counts as absent.",
        "anyOf": [_ID_STRING, {"type": "integer"}, {"type": "null"}],
    },
    "DependsOnIn": {
        "description": "Job ids this job waits for (1-100, distinct, not its own): it is "
                       "`waiting` until every one has completed. Each must exist, or be "
                       "registered in the same batch (400 otherwise); a cycle in a batch "
                       "is refused (400). Needs publish_on_register. null counts as absent.",
        "anyOf": [{"type": "array", "minItems": 1, "maxItems": 100,
                   "items": {"anyOf": [_ID_STRING, {"type": "integer"}]}},
                  {"type": "null"}],
    },
    "RunAtIn": {
        "description": "When the job runs: ms since the epoch (at least 10^11: seconds "
                       "are refused), or an ISO-8601 time with a zone "
                       "(2026-12-07T10:42:01Z). Until then the job is `scheduled`; a "
                       "time past runs it now. Not with delay; needs "
                       "publish_on_register. null counts as absent.",
        "anyOf": [{"type": "number", "minimum": 100_000_000_000,
                   "maximum": 253402300799999},
                  {"type": "string", "format": "date-time"}, {"type": "null"}],
    },
    "ScheduleRequest": {
        "type": "object",
        "description": "A periodic schedule: every or cron (one of them). Each tick "
                       "registers one job, id `{schedule id}@{tick, ISO-8601 UTC}`.",
        "properties": {
            "every": {"type": ["string", "number"],
                      "description": "\"30s\", \"5m\", \"1h\", \"1d\", \"500ms\" or "
                                     "seconds; 1 s to 366 days; ticks aligned to the epoch"},
            "cron": {"type": "string", "description": "five fields: minute hour "
                                                      "day-of-month month day-of-week"},
            "timezone": {"type": "string", "default": "UTC",
                         "description": "an IANA zone for cron (DST as Debian cron)"},
            "job": {"type": "object", "description": "a register body without id, "
                                                     "run_at or delay"},
            "overlap": {"enum": ["skip", "buffer_one", "allow_all"], "default": "skip"},
            "catchup_window": {"type": "number", "minimum": 0, "maximum": 31622400,
                               "default": 60,
                               "description": "seconds: ticks missed (no leader) within "
                                              "it run; older ones are skipped, counted"},
            "paused": {"type": "boolean", "default": False},
        },
    },
    "LimitRequest": {
        "type": "object",
        "description": "At least one of them; null: no limit of that kind.",
        "properties": {
            "concurrency": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000000,
                            "description": "most jobs of the type queued or running "
                                           "at once"},
            "rate": {"type": ["number", "null"], "exclusiveMinimum": 0,
                     "maximum": 1000000, "description": "most published a second"},
        },
    },
    "BackfillRequest": {
        "type": "object", "required": ["from", "to"],
        "properties": {"from": _ref("RunAtIn"), "to": _ref("RunAtIn")},
        "description": "A run for every tick in [from, to), at most 1000; jobs that "
                       "exist are not run again.",
    },
    "PriorityIn": {
        "description": "An integer; a number (floored); a numeric string; or a name in "
                       "any case: LOW=1, MEDIUM=5, HIGH=10, CRITICAL=15. The result must "
                       "lie in -1000000..1000000. >= 10 goes to job.high, >= 5 to "
                       "job.medium, else job.low. null counts as absent (5).",
        "anyOf": [
            {"type": "number", "minimum": -1_000_000, "exclusiveMaximum": 1_000_001},
            {"type": "string", "pattern": _any_case(PRIORITY_NAMES)},
            {"type": "string",
             "pattern": "^\\s*[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?\\s*$"},
            {"type": "null"},
        ],
    },
    "ReportStatusIn": {
        "type": "string", "pattern": _any_case(REPORT_ALIASES),
        "description": "Compared case-insensitively, surrounding whitespace ignored. "
                       "running (started, in_progress, in-progress, processing); completed "
                       "(complete, success, succeeded, done); failed (failure, error); "
                       "cancelled (canceled).",
    },
    "WorkerIdIn": _nullable({"type": "string", "minLength": 1, "maxLength": 256}),
    "MaxRetriesIn": _nullable({"type": "integer", "minimum": 0, "maximum": 100}),
    "ExecutionTimeoutIn": _nullable({"type": "integer", "minimum": 1, "maximum": 604800,
                                     "description": "seconds"}),
    "RegisterRequest": {
        "type": "object",
        "description": "Every field is optional; where several spellings are listed the "
                       "first one present and not null wins. Unknown fields are ignored. "
                       "The stored job must fit in max_job_bytes (413 otherwise).",
        "properties": {
            "id": _ref("JobIdIn"), "jobId": _ref("JobIdIn"), "job_id": _ref("JobIdIn"),
            "type": _nullable({"type": "string", "minLength": 1, "maxLength": 128}),
            "priority": _ref("PriorityIn"),
            "payload": {"type": ["object", "null"],
                        "description": "any JSON object; null is stored as {}"},
            "max_retries": _ref("MaxRetriesIn"), "maxRetries": _ref("MaxRetriesIn"),
            "execution_timeout": _ref("ExecutionTimeoutIn"),
            "executionTimeout": _ref("ExecutionTimeoutIn"),
            "timeout": _ref("ExecutionTimeoutIn"),
            "metadata": {"type": ["object", "null"],
                         "additionalProperties": {"type": ["string", "number", "boolean",
                                                           "null"]}},
            "created_at": {"type": ["string", "number", "null"],
                           "description": "kept as client_created_at"},
            "createdAt": {"type": ["string", "number", "null"],
                          "description": "kept as client_created_at"},
            "run_at": _ref("RunAtIn"), "runAt": _ref("RunAtIn"),
            "depends_on": _ref("DependsOnIn"), "dependsOn": _ref("DependsOnIn"),
            "on_parent_failure": {"enum": ["cancel", "run", None], "default": "cancel",
                                  "description": "a parent failed or cancelled: cancel "
                                                 "this job, or run it anyway"},
            "delay": {"type": ["number", "null"], "minimum": 0, "maximum": 316224000,
                      "description": "seconds after the leader accepts it: the job is "
                                     "`scheduled` until then (not with run_at; needs "
                                     "publish_on_register)"},
        },
    },
    "ReportRequest": {
        "type": "object",
        "description": "A worker's status report. The job id comes from the path. "
                       "Unknown fields are ignored.",
        "required": ["status"],
        "properties": {
            "status": _ref("ReportStatusIn"),
            "workerId": _ref("WorkerIdIn"), "worker_id": _ref("WorkerIdIn"),
            "result": {"description": "any JSON value; stored as given"},
            "errorMessage": {"type": ["string", "null"]},
            "error_message": {"type": ["string", "null"]},
            "progress": _nullable({"type": "integer", "minimum": 0, "maximum": 100}),
        },
    },
    "ReportWithIdRequest": {
        "description": "A status report naming its job: jobId, then job_id, then id "
                       "(the first present and not null).",
        "allOf": [
            _ref("ReportRequest"),
            {"properties": {"jobId": _ref("JobIdIn"), "job_id": _ref("JobIdIn"),
                            "id": _ref("JobIdIn")},
             "anyOf": [{"required": [k], "properties": {k: {"not": {"type": "null"}}}}
                       for k in ("jobId", "job_id", "id")]},
        ],
    },
    "HeartbeatRequest": {
        "type": "object",
        "description": "workerId or worker_id is required. Every other field (counters, "
                       "cpuUsage, memoryUsage, timestamp, ...) is kept as the worker's "
                       "stats, at most 8192 bytes of JSON.",
        "properties": {
            "workerId": _ref("WorkerIdIn"), "worker_id": _ref("WorkerIdIn"),
            "worker_type": _nullable({"type": "string", "maxLength": 128}),
            "workerType": _nullable({"type": "string", "maxLength": 128}),
            "capacity": _nullable({"type": "integer", "minimum": 0, "maximum": 1_000_000}),
            "current_load": _nullable({"type": "integer",
                                       "description": "a negative value counts as 0"}),
            "currentLoad": _nullable({"type": "integer",
                                      "description": "a negative value counts as 0"}),
        },
        "anyOf": [{"required": [k], "properties": {k: {"not": {"type": "null"}}}}
                  for k in ("workerId", "worker_id")],
    },
}

# Response schemas ###########################################################

_JOB_PROPS = {
    "id": {"type": "string"},
    "type": {"type": "string"},
    "priority": {"type": "integer"},
    "queue": {"type": "string", "enum": list(QUEUES)},
    "status": {"type": "string", "enum": list(STATUSES)},
    "worker_id": {"type": ["string", "null"]},
    "payload": {"type": "object", "description": "only with ?full=1 in a listing"},
    "result": {"description": "any JSON value, as the worker reported it; only with "
                              "?full=1 in a listing"},
    "error_message": {"type": ["string", "null"]},
    "retry_count": COUNT,
    "max_retries": COUNT,
    "execution_timeout": {"type": "integer", "minimum": 1, "description": "seconds"},
    "metadata": {"type": "object",
                 "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
    "created_at": MILLIS,
    "queued_at": MILLIS_OR_NULL,
    "started_at": MILLIS_OR_NULL,
    "completed_at": MILLIS_OR_NULL,
    "progress": {"type": "integer", "minimum": 0, "maximum": 100,
                 "description": "present once a worker reported progress"},
    "client_created_at": {"type": ["string", "number"],
                          "description": "created_at/createdAt as the client sent it"},
    "depends_on": {"type": "array", "items": {"type": "string"},
                   "description": "the jobs it waited for; only jobs registered with them"},
    "on_parent_failure": {"enum": ["cancel", "run"]},
    "run_at": {"type": "integer", "description": "ms since the epoch: when the job was "
                                                 "registered to run (run_at or delay); "
                                                 "only jobs registered with one have it"},
}
JOB_REQUIRED = ["id", "type", "priority", "queue", "status", "worker_id", "error_message",
                "retry_count", "max_retries", "execution_timeout", "metadata",
                "created_at", "queued_at", "started_at", "completed_at"]

_RAFT_STATUS = {
    "type": "object",
    "required": ["role", "term", "leader", "commit_index", "applied_index",
                 "last_log_index"],
    "properties": {
        "role": {"type": "string", "enum": ["leader", "follower", "candidate"]},
        "term": COUNT,
        "leader": {"type": ["string", "null"]},
        "commit_index": COUNT, "applied_index": COUNT, "last_log_index": COUNT,
    },
}

_CHECK = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}

_RESP = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "enum": list(ERROR_CODES)},
            "message": {"type": "string", "description": "what is wrong, for a person"},
            "field": {"type": "string", "description": "the request field at fault"},
        },
    },
    "Accepted": {
        "type": "object", "required": ["status", "job_id"],
        "properties": {"status": {"const": "accepted"}, "job_id": {"type": "string"},
                       "run_at": {"type": "integer",
                                  "description": "ms since the epoch: present when the "
                                                 "job is scheduled to run then"}},
    },
    "BatchRequest": {
        "type": "object", "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "minItems": 1,
                                "items": _ref("RegisterRequest")}},
    },
    "BatchResult": {
        "type": "object", "required": ["results", "accepted", "duplicates", "rejected"],
        "properties": {
            "accepted": COUNT, "rejected": COUNT,
            "duplicates": dict(COUNT, description="items whose id an earlier item of the "
                               "batch has"),
            "results": {"type": "array", "items": {"oneOf": [
                _ref("Accepted"),
                {"type": "object", "required": ["job_id", "status", "index", "duplicate_of"],
                 "description": "the id of an earlier item of this batch (index "
                                "duplicate_of): not registered again; its outcome is that "
                                "item's",
                 "properties": {"job_id": {"type": "string"},
                                "status": {"const": "duplicate"}, "index": COUNT,
                                "duplicate_of": COUNT}},
                {"type": "object", "required": ["index", "error", "message"],
                 "properties": {"index": COUNT, "error": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": "string"}}},
            ]}},
        },
    },
    "ReportOutcome": {
        "oneOf": [
            {"type": "object", "required": ["status"],
             "properties": {"status": {"const": "updated"}}},
            {"type": "object", "required": ["status", "reason"],
             "description": "the report changed nothing: the job is terminal, or the "
                            "report came from an attempt that was given up",
             "properties": {"status": {"const": "ignored"},
                            "reason": {"type": "string",
                                       "enum": ["terminal", "stale_attempt"]}}},
        ],
    },
    "RetryRequest": {
        "type": "object",
        "properties": {"status": {"enum": ["completed", "failed", "cancelled"]},
                       "type": {"type": "string"}, "queue": {"type": "string"},
                       "worker_id": {"type": "string"},
                       "limit": {"type": "integer", "minimum": 1, "maximum": 10000}},
    },
    "Schedule": {
        "type": "object",
        "required": ["id", "timezone", "overlap", "catchup_window", "paused", "job",
                     "created_at", "updated_at", "next_runs", "last_runs", "buffered",
                     "fired", "skipped_late", "skipped_overlap"],
        "properties": {
            "id": {"type": "string"}, "every": {"type": "string"},
            "cron": {"type": "string"}, "timezone": {"type": "string"},
            "overlap": {"enum": ["skip", "buffer_one", "allow_all"]},
            "catchup_window": {"type": "number"}, "paused": {"type": "boolean"},
            "job": {"type": "object"}, "created_at": MILLIS, "updated_at": MILLIS,
            "next_runs": {"type": "array", "items": {"type": "string"},
                          "description": "the next ticks, ISO-8601 UTC (none while "
                                         "paused)"},
            "last_runs": {"type": "array", "items": {
                "type": "object", "required": ["job_id", "scheduled_for", "status"],
                "properties": {"job_id": {"type": "string"},
                               "scheduled_for": {"type": "string"},
                               "status": {"type": ["string", "null"],
                                          "description": "null: the job is gone "
                                                         "(retention)"}}}},
            "buffered": {"type": ["string", "null"],
                         "description": "a tick waiting for the running one "
                                        "(buffer_one)"},
            "fired": COUNT, "skipped_late": COUNT, "skipped_overlap": COUNT,
        },
    },
    "Queue": {
        "type": "object", "required": ["queue", "paused", "paused_at", "jobs", "rabbitmq"],
        "properties": {
            "queue": {"type": "string", "enum": list(QUEUES)},
            "paused": {"type": "boolean"}, "paused_at": MILLIS_OR_NULL,
            "jobs": {"type": "object", "description": "our jobs in it, by status",
                     "additionalProperties": COUNT},
            "rabbitmq": {"type": ["object", "null"],
                         "description": "RabbitMQ's own counts (a passive declare, at "
                                        "most 2 s old): messages_ready and consumers, or "
                                        "error; null in a pause or resume answer",
                         "properties": {"messages_ready": COUNT, "consumers": COUNT,
                                        "error": {"type": "string"}}},
        },
    },
    "Limit": {
        "type": "object",
        "required": ["type", "concurrency", "rate", "updated_at", "active", "pending"],
        "properties": {
            "type": {"type": "string"},
            "concurrency": {"type": ["integer", "null"], "minimum": 1},
            "rate": {"type": ["number", "null"], "description": "jobs a second"},
            "updated_at": MILLIS,
            "active": dict(COUNT, description="its jobs queued or running now"),
            "pending": dict(COUNT, description="its jobs pending (some held by the limit)"),
        },
    },
    "QueueList": {
        "type": "object", "required": ["queues", "timestamp"],
        "properties": {"queues": {"type": "array", "items": _ref("Queue")},
                       "timestamp": MILLIS},
    },
    "ScheduleList": {
        "type": "object", "required": ["schedules", "count"],
        "properties": {"schedules": {"type": "array", "items": _ref("Schedule")},
                       "count": COUNT},
    },
    "Fired": {
        "type": "object", "required": ["status", "job_ids"],
        "properties": {"status": {"const": "accepted"},
                       "job_ids": {"type": "array", "items": {"type": "string"},
                                   "description": "the jobs registered"},
                       "existing": dict(COUNT, description="ticks whose job exists "
                                                           "(backfill)")},
    },
    "Retried": {
        "type": "object", "required": ["retried"],
        "properties": {"retried": {"type": "integer", "minimum": 0}},
    },
    "Rates": {
        "type": "object", "required": ["interval_s", "window_s", "now", "series"],
        "properties": {
            "interval_s": {"type": "integer"}, "window_s": {"type": "integer"},
            "now": {"type": "integer"},
            "series": {"type": "object",
                       "required": ["registered", "completed", "failed"],
                       "additionalProperties": {"type": "array",
                                                "items": {"type": "integer"}}}},
    },
    "Cancelled": {
        "type": "object", "required": ["status", "job_id"],
        "properties": {"status": {"const": "cancelled"}, "job_id": {"type": "string"}},
    },
    "Acknowledged": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"const": "acknowledged"}},
    },
    "HistoryItem": {
        "type": "object", "required": ["at", "status", "by", "reason"],
        "properties": {
            "at": MILLIS,
            "status": {"type": "string", "enum": list(STATUSES)},
            "by": {"type": "string",
                   "description": "a worker id, or api, broker, worker, timer, ..."},
            "reason": {"type": ["string", "null"]},
            "result": {"description": "an earlier attempt's result, reported late "
                                      "(jobs.py, \"Attempts\"); cut to a marker past "
                                      "4096 bytes"},
        },
    },
    "Job": {
        "type": "object",
        "description": "A job as listed by GET /api/jobs (payload and result only with "
                       "?full=1). Unset values are null.",
        "required": JOB_REQUIRED,
        "properties": _JOB_PROPS,
    },
    "JobDetail": {
        "description": "A job as GET /api/jobs/{job_id} shows it: every field, the last "
                       "32 transitions, and one line saying why it is where it is.",
        "allOf": [
            _ref("Job"),
            {"type": "object", "required": ["payload", "result", "history", "why"],
             "properties": {
                 "history": {"type": "array", "maxItems": 32,
                             "items": _ref("HistoryItem")},
                 "why": {"type": "string", "minLength": 1},
             }},
        ],
    },
    "JobList": {
        "type": "object", "required": ["jobs", "count", "returned", "next"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("Job"), "maxItems": 10000},
            "count": {"type": "integer", "minimum": 0,
                      "description": "jobs matching the filters"},
            "returned": {"type": "integer", "minimum": 0, "maximum": 10000},
            "next": {"type": ["string", "null"], "pattern": "^-?[0-9]+$",
                     "description": "cursor of the next page, null on the last"},
        },
    },
    "Worker": {
        "type": "object",
        "required": ["worker_id", "worker_type", "status", "capacity", "current_load",
                     "running_jobs", "last_heartbeat", "first_seen", "heartbeats", "stats"],
        "properties": {
            "worker_id": {"type": "string", "minLength": 1},
            "worker_type": {"type": "string"},
            "status": {"type": "string", "enum": ["active", "unresponsive", "stopped"],
                       "description": "stopped: silent after a last heartbeat with load "
                                      "0, and no job running there"},
            "capacity": COUNT, "current_load": COUNT, "running_jobs": COUNT,
            "last_heartbeat": MILLIS, "first_seen": MILLIS,
            "heartbeats": {"type": "integer", "minimum": 1},
            "stats": {"type": "object",
                      "description": "the heartbeat's other fields, as sent"},
        },
    },
    "WorkerList": {
        "type": "object", "required": ["workers", "count", "returned", "next"],
        "properties": {"workers": {"type": "array", "items": _ref("Worker"),
                                   "maxItems": 10000},
                       "count": dict(COUNT, description="every worker this node knows"),
                       "returned": {"type": "integer", "minimum": 0, "maximum": 10000},
                       "next": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_-]*$",
                                "description": "cursor of the next page, null on the "
                                               "last"}},
    },
    "BrokerStatus": {
        "type": "object",
        "required": ["connected", "down_since", "error", "in_flight", "stats"],
        "properties": {
            "connected": {"type": "boolean"},
            "down_since": MILLIS_OR_NULL,
            "error": {"type": ["string", "null"]},
            "in_flight": COUNT,
            "oldest_unconfirmed_s": {"type": "number", "minimum": 0},
            "stats": {"type": "object"},
        },
    },
    "Health": {
        "type": "object", "required": ["status", "node", "timestamp", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["healthy", "degraded", "unavailable"]},
            "node": {"type": "string"},
            "timestamp": MILLIS,
            "message": {"type": "string", "description": "while starting only: "
                        "\"starting: \" and what start-up is doing"},
            "checks": {
                "type": "object", "required": ["role", "log", "broker"],
                "properties": {
                    "role": {"allOf": [_CHECK, {"properties": {
                        "role": {"type": "string"},
                        "leader": {"type": ["string", "null"]}}}]},
                    "log": {"allOf": [_CHECK, {"properties": {
                        "error": {"type": ["string", "null"]},
                        "commit_index": COUNT}}]},
                    "snapshot": {"allOf": [_CHECK, {"properties": {
                        "error": {"type": ["string", "null"]},
                        "index": COUNT}}]},
                    "broker": {"allOf": [_CHECK, _ref("BrokerStatus"), {"properties": {
                        "note": {"type": "string"},
                        "leader": {"type": "object", "description": "a follower: what "
                                   "the leader says of its own connection (ok null: no "
                                   "word yet)", "properties": {
                                       "node": {"type": ["string", "null"]},
                                       "ok": {"type": ["boolean", "null"]},
                                       "for_s": {"type": "number"},
                                       "error": {"type": "string"}}}}}]},
                    "clock": {"allOf": [_CHECK, {
                        "description": "not ok while this member's wall clock is more than "
                                       "max_clock_skew_s off the cluster's time",
                        "properties": {
                            "skew_s": {"type": "number"},
                            "members_heard": COUNT,
                            "error": {"type": "string"}}}]},
                    "queues": {"allOf": [_CHECK, {
                        "description": "not ok while a job queue returns its jobs "
                                       "unroutable (deleted in RabbitMQ, or its binding)",
                        "properties": {
                            "error": {"type": ["string", "null"]},
                            "unroutable": {"type": "object", "additionalProperties": {
                                "type": "object", "properties": {
                                    "since": MILLIS, "last_returned_at": MILLIS,
                                    "returned": COUNT, "rounds": COUNT,
                                    "retry_delay_s": {"type": "number"},
                                    "next_retry_s": {"type": "number"}}}}}}]},
                },
            },
        },
    },
    "RaftStatus": _RAFT_STATUS,
    "ClusterStatus": {
        "type": "object", "required": ["node", "leader", "term", "members", "timestamp"],
        "properties": {
            "node": {"type": "string"},
            "leader": {"type": ["string", "null"]},
            "term": COUNT,
            "members": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["node", "role", "api", "last_contact_ms", "match_index"],
                "properties": {
                    "node": {"type": "string"}, "role": {"type": "string"},
                    "api": {"type": "string", "description": "host:port of its HTTP API"},
                    "last_contact_ms": COUNT, "match_index": COUNT,
                    "member": {"enum": ["voter", "learner", "witness", "none"],
                               "description": "its place in the configuration"},
                    "id": {"type": ["string", "null"], "description": "its member id, "
                           "made with its data_dir (null: not heard from yet)"},
                    "caught_up": {"type": ["boolean", "null"],
                                  "description": "within 1,000 entries of the leader's "
                                                 "last (the leader knows; null elsewhere)"}}}},
            "config_index": {"type": "integer", "description": "the log entry of the "
                             "configuration in force; 0: raft_peers (none in the log yet)"},
            "timestamp": MILLIS,
        },
    },
    "MemberRequest": {
        "type": "object", "required": ["node"],
        "properties": {
            "node": {"type": "string", "description": "name@host[:port]: its node_name, "
                     "and its raft_port when not ours"},
            "api": {"type": "string", "description": "host:port of its HTTP API"},
            "role": {"enum": ["learner", "voter", "witness"], "default": "learner"}},
    },
    "Members": {
        "type": "object", "required": ["status", "config_index", "members"],
        "properties": {
            "status": {"enum": ["added", "promoted", "removed"]},
            "config_index": COUNT,
            "members": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "role": {"enum": ["voter", "learner", "witness"]},
                "raft": {"type": "string"}, "api": {"type": "string"},
                "id": {"type": "string"}}}}},
    },
    "Metrics": {
        "type": "object",
        "required": ["jobs", "queues", "workers", "raft", "timestamp"],
        "properties": {
            "jobs": {"type": "object", "description": "jobs held, by status",
                     "propertyNames": {"enum": list(STATUSES)},
                     "additionalProperties": COUNT},
            "queues": {"type": "object", "description": "jobs held, by queue and status",
                       "propertyNames": {"enum": list(QUEUES)},
                       "additionalProperties": {
                           "type": "object", "propertyNames": {"enum": list(STATUSES)},
                           "additionalProperties": COUNT}},
            "workers": {"type": "object", "required": ["total", "active", "unresponsive"],
                        "properties": {"total": COUNT, "active": COUNT,
                                       "unresponsive": COUNT, "stopped": COUNT}},
            "raft": _ref("RaftStatus"),
            "broker": _ref("BrokerStatus"),
            "dispatch": {"type": "object", "additionalProperties": COUNT,
                         "description": "the publisher's backlog"},
            "timestamp": MILLIS,
        },
    },
    "OpenApiDocument": {
        "type": "object", "required": ["openapi", "info", "paths"],
        "properties": {"openapi": {"type": "string", "pattern": "^3\\."}},
    },
}


# Responses ##################################################################

def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _error(description: str, *codes: str) -> dict:
    return {"description": description, "content": _json({"allOf": [
        _ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]})}


RESPONSES = {
    "BadRequest": _error("The body is not JSON (invalid_json), or a field is missing, of "
                         "the wrong type or out of range (invalid_request; `field` names "
                         "it).", "invalid_json", "invalid_request"),
    "NotFound": _error("Unknown path, job id or member.", "not_found"),
    "MethodNotAllowed": {
        "description": "The path (with this job id in it) names another operation that "
                       "does not take this method; the Allow header lists the ones it "
                       "takes.",
        "headers": {"Allow": {"required": True, "schema": {"type": "string"}}},
        "content": _error("", "method_not_allowed")["content"],
    },
    "Conflict": _error("The job is already completed, failed or cancelled; or the "
                       "cluster's configuration cannot take this membership change (the "
                       "message says why: already a member, the last voter, a learner "
                       "still behind, the default cookie).", "conflict"),
    "PayloadTooLarge": _error("The body is over max_body_bytes, or the stored job would "
                              "be over max_job_bytes.", "payload_too_large"),
    "Unavailable": _error("This node cannot commit now (starting, stopping, no leader, "
                          "log write failed), or the commit timed out and its outcome is "
                          "unknown (retrying a register is safe).", "unavailable"),
    "Internal": _error("A bug; the traceback is in the node's log.", "internal"),
    "Misdirected": _error("The Host header names none of this node's names (http_host, "
                          "node_name's host, api_advertise's host, localhost, 127.0.0.1, "
                          "::1, allowed_hosts): a DNS-rebound browser page, or a name to "
                          "add to allowed_hosts.", "invalid_request"),
    "Forbidden": _error("A cross-site browser write (Sec-Fetch-Site is cross-site, or "
                        "Origin is neither this node's own nor in allowed_origins), a "
                        "client address outside allow_from, or a read-only token on a "
                        "write.", "forbidden"),
    "Unauthorized": {
        "description": "api_tokens or api_read_tokens are set and the request has no "
                       "valid `Authorization: Bearer <token>`.",
        "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
        "content": _error("", "unauthorized")["content"],
    },
    "RequestTimeout": _error("The body did not arrive within http_request_timeout_s; "
                             "the connection is closed.", "invalid_request"),
    "LengthRequired": _error("A body without Content-Length or chunked encoding "
                             "(e.g. HTTP/1.0 until close) cannot be framed.",
                             "invalid_request"),
}


def _responses(ok_code: str, ok_desc: str, ok_schema: dict, *errors: str) -> dict:
    out = {ok_code: {"description": ok_desc, "content": _json(ok_schema)}}
    codes = {"400": "BadRequest", "404": "NotFound", "405": "MethodNotAllowed",
             "409": "Conflict", "413": "PayloadTooLarge", "503": "Unavailable",
             "500": "Internal", "403": "Forbidden", "408": "RequestTimeout",
             "411": "LengthRequired", "401": "Unauthorized", "421": "Misdirected"}
    errors += ("401", "403", "421")   # tokens, allow_from, Host apply to every route
    if "413" in errors:            # every route that reads a body is a write
        errors += ("408", "411")
    for code in sorted(set(errors) | {"500"}):
        out[code] = _rref(codes[code])
    return out


def _body(schema_name: str, required: bool = True) -> dict:
    return {"required": required, "content": _json(_ref(schema_name)),
            "description": "JSON, whatever the Content-Type header says; at most "
                           "max_body_bytes (default 1 MiB)."}


JOB_ID_PARAM = {"name": "job_id", "in": "path", "required": True,
                "schema": {"type": "string", "minLength": 1}}

_report_path = {
    "summary": "A worker reports on a job (id from the path)",
    "parameters": [JOB_ID_PARAM],
    "requestBody": _body("ReportRequest"),
    "responses": _responses("200", "Recorded, or ignored (terminal job, abandoned "
                            "attempt). An unknown id creates the job (type unknown).",
                            _ref("ReportOutcome"), "400", "404", "405", "413", "503"),
}

_q = {"in": "query", "required": False}
SCHEDULE_ID_PARAM = {"name": "schedule_id", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1}}
JOB_TYPE_PARAM = dict(SCHEDULE_ID_PARAM, name="job_type")


def _deleted_responses(key: str) -> dict:
    """A DELETE answered {"status": "deleted", key: the id}."""
    return _responses("200", "Deleted", {
        "type": "object", "required": ["status", key],
        "properties": {"status": {"const": "deleted"}, key: {"type": "string"}}},
        "400", "404", "405", "413", "503")


def _put_responses(schema: str) -> dict:
    """A PUT that creates (201) or replaces (200) the resource it answers with."""
    return dict(_responses("200", "Replaced", _ref(schema), "400", "404", "405", "413",
                           "503"),
                **{"201": {"description": "Created", "content": _json(_ref(schema))}})

PATHS = {
    "/api/health": {"get": {
        "operationId": "health", "tags": ["node"],
        "summary": "Can this node accept writes?",
        "responses": {
            "200": {"description": "healthy, or degraded (log or broker trouble)",
                    "content": _json({"allOf": [_ref("Health"), {"properties": {
                        "status": {"enum": ["healthy", "degraded"]}}}]})},
            "503": {"description": "this node cannot accept writes: not started, "
                                   "stopping, or no leader",
                    "content": _json({"allOf": [_ref("Health"), {"properties": {
                        "status": {"const": "unavailable"}}}]})},
            "500": _rref("Internal"),
        },
    }},
    "/api/raft/status": {"get": {
        "operationId": "raftStatus", "tags": ["node"], "summary": "This node's log",
        "responses": _responses("200", "role, term, leader and log indexes",
                                _ref("RaftStatus")),
    }},
    "/api/cluster/status": {"get": {
        "operationId": "clusterStatus", "tags": ["node"],
        "summary": "The cluster as this node sees it",
        "responses": _responses("200", "members and leader", _ref("ClusterStatus")),
    }},
    "/api/cluster/members": {"post": {
        "operationId": "addMember", "tags": ["node"], "summary": "Add a member",
        "description": "On the leader (a follower forwards it), once committed. A new "
                       "member is a learner by default: it is sent the log and counts "
                       "for nothing until promoted. One change at a time (503 while one "
                       "is under way). docs/CLUSTER.md.",
        "requestBody": _body("MemberRequest"),
        "responses": _responses("200", "committed: the configuration now in force",
                                _ref("Members"), "400", "409", "413", "503"),
    }},
    "/api/cluster/members/{name}/promote": {"post": {
        "operationId": "promoteMember", "tags": ["node"],
        "summary": "Make a caught-up learner a voter (or a witness)",
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "requestBody": {"required": False, "content": _json({"type": "object", "properties": {
            "role": {"enum": ["voter", "witness"], "default": "voter"}}})},
        "responses": _responses("200", "committed", _ref("Members"),
                                "400", "404", "405", "409", "413", "503"),
    }},
    "/api/cluster/members/{name}": {"delete": {
        "operationId": "removeMember", "tags": ["node"], "summary": "Remove a member",
        "description": "The leader may remove itself: it hands leadership over first.",
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": _responses("200", "committed", _ref("Members"),
                                "400", "404", "405", "409", "413", "503"),
    }},
    "/api/cluster/leader": {"post": {
        "operationId": "transferLeader", "tags": ["node"],
        "summary": "Hand leadership to a voting member",
        "requestBody": {"required": True, "content": _json({
            "type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}})},
        "responses": _responses("200", "the new leader leads", {
            "type": "object", "properties": {"status": {"const": "transferred"},
                                             "leader": {"type": "string"}}},
            "400", "413", "503"),
    }},
    "/api/jobs/register": {"post": {
        "operationId": "registerJob", "tags": ["jobs"], "summary": "Register a job",
        "description": "Idempotent per id while the job is not terminal; registering a "
                       "terminal job's id starts a new attempt of it.",
        "requestBody": _body("RegisterRequest"),
        "responses": _responses("202", "Durably recorded; it is published to RabbitMQ "
                                "and becomes queued once the broker confirms it.",
                                _ref("Accepted"), "400", "413", "503"),
    }},
    "/api/jobs/batch": {"post": {
        "operationId": "registerBatch", "tags": ["jobs"],
        "summary": "Register many jobs in one request and one commit",
        "description": "Each item is validated like a register body; the valid ones are "
                       "committed together. One result per item, in order: accepted "
                       "with its job_id, or its error with its index. Same idempotency "
                       "as register, per item. At most max_batch_jobs items (413), a "
                       "body of at most max_batch_body_bytes.",
        "requestBody": {"required": True, "content": _json(_ref("BatchRequest")),
                        "description": "JSON, whatever the Content-Type header says; "
                                       "at most max_batch_body_bytes (default 16 MiB)."},
        "responses": _responses("202", "Every item answered; the accepted ones are on "
                                "disk.", _ref("BatchResult"), "400", "413", "503"),
    }},
    "/api/jobs": {"get": {
        "operationId": "listJobs", "tags": ["jobs"], "summary": "List jobs, newest first",
        "parameters": [
            dict(_q, name="status", schema={"type": "string", "enum": list(STATUSES)}),
            dict(_q, name="type", schema={"type": "string"}),
            dict(_q, name="worker_id", schema={"type": "string"}),
            dict(_q, name="queue", schema={"type": "string", "enum": list(QUEUES)}),
            dict(_q, name="limit", schema={"type": "integer", "minimum": 1,
                                           "maximum": 10000, "default": 100}),
            dict(_q, name="cursor", description="the `next` of the previous page",
                 schema={"type": "string", "pattern": "^-?[0-9]+$"}),
            dict(_q, name="full", description="1, true or yes: include payload and result",
                 schema={"type": "string"}),
        ],
        "responses": _responses("200", "One page", _ref("JobList"), "400"),
    }},
    "/api/jobs/{job_id}": {"get": {
        "operationId": "getJob", "tags": ["jobs"], "summary": "One job, with its history",
        "parameters": [JOB_ID_PARAM],
        "responses": _responses("200", "The job", _ref("JobDetail"), "404", "405", "503"),
    }},
    "/api/jobs/status": {"post": {
        "operationId": "reportStatus", "tags": ["jobs"],
        "summary": "A worker reports on a job (id in the body)",
        "requestBody": _body("ReportWithIdRequest"),
        "responses": _responses("200", "Recorded, or ignored (terminal job, abandoned "
                                "attempt). An unknown id creates the job (type unknown).",
                                _ref("ReportOutcome"), "400", "413", "503"),
    }},
    "/api/jobs/{job_id}/status": {
        "put": dict(_report_path, operationId="putJobStatus", tags=["jobs"]),
        "post": dict(_report_path, operationId="postJobStatus", tags=["jobs"]),
    },
    "/api/jobs/{job_id}/cancel": {"post": {
        "operationId": "cancelJob", "tags": ["jobs"], "summary": "Cancel a job",
        "description": "Any non-terminal job. The body is ignored (the gateway sends an "
                       "empty one).",
        "parameters": [JOB_ID_PARAM],
        "requestBody": {"required": False, "description": "ignored",
                        "content": _json({})},
        "responses": _responses("200", "Cancelled", _ref("Cancelled"),
                                "400", "404", "405", "409", "413", "503"),
    }},
    "/api/jobs/{job_id}/retry": {"post": {
        "operationId": "retryJob", "tags": ["jobs"], "summary": "Run a finished job again",
        "description": "A new attempt of a completed, failed or cancelled job, with the "
                       "fields it has (retry_count back to 0), published again. The body "
                       "is ignored.",
        "parameters": [JOB_ID_PARAM],
        "requestBody": {"required": False, "description": "ignored",
                        "content": _json({})},
        "responses": _responses("202", "A new attempt is recorded", _ref("Accepted"),
                                "400", "404", "405", "409", "413", "503"),
    }},
    "/api/jobs/retry": {"post": {
        "operationId": "retryJobs", "tags": ["jobs"],
        "summary": "Run finished jobs matching a filter again",
        "description": "The listing's filters; `status` a terminal one (default: failed "
                       "and cancelled); at most `limit` (default 100) jobs, newest first.",
        "requestBody": _body("RetryRequest"),
        "responses": _responses("202", "How many got a new attempt", _ref("Retried"),
                                "400", "413", "503"),
    }},
    "/api/queues": {"get": {
        "operationId": "listQueues", "tags": ["queues"],
        "summary": "Each job queue: paused or not, our jobs in it, RabbitMQ's counts",
        "responses": _responses("200", "job.high, job.medium, job.low", _ref("QueueList"),
                                "503"),
    }},
    **{f"/api/queues/{{queue}}/{verb}": {"post": {
        "operationId": f"{verb}Queue", "tags": ["queues"], "summary": summary,
        "parameters": [{"name": "queue", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "requestBody": {"required": False, "description": "ignored",
                        "content": _json({})},
        "responses": _responses("200", "Committed", _ref("Queue"),
                                "400", "404", "405", "413", "503"),
    }} for verb, summary in (
        ("pause", "Publish nothing more to this queue (what RabbitMQ holds stays)"),
        ("resume", "Publish to this queue again: its pending jobs go out"))},
    "/api/limits": {"get": {
        "operationId": "listLimits", "tags": ["queues"], "summary": "Limits per job type",
        "responses": _responses("200", "By type", {
            "type": "object", "required": ["limits"],
            "properties": {"limits": {"type": "array", "items": _ref("Limit")}}}),
    }},
    "/api/limits/{job_type}": {
        "put": {"operationId": "putLimit", "tags": ["queues"],
                "summary": "Limit a job type's concurrency and publish rate",
                "description": "Applied by the leader where it publishes; at-least-once "
                               "(a job a dead worker held counts until its timeout).",
                "parameters": [JOB_TYPE_PARAM],
                "requestBody": _body("LimitRequest"),
                "responses": _put_responses("Limit")},
        "delete": {"operationId": "deleteLimit", "tags": ["queues"],
                   "summary": "Remove a job type's limits",
                   "parameters": [JOB_TYPE_PARAM],
                   "responses": _deleted_responses("type")},
    },
    "/api/schedules": {"get": {
        "operationId": "listSchedules", "tags": ["schedules"], "summary": "Every schedule",
        "responses": _responses("200", "By id", _ref("ScheduleList")),
    }},
    "/api/schedules/{schedule_id}": {
        "get": {"operationId": "getSchedule", "tags": ["schedules"],
                "summary": "A schedule, its next runs and its last runs",
                "parameters": [SCHEDULE_ID_PARAM],
                "responses": _responses("200", "The schedule", _ref("Schedule"),
                                        "404", "405")},
        "put": {"operationId": "putSchedule", "tags": ["schedules"],
                "summary": "Create or replace a schedule",
                "description": "Its counters and last runs stay when it is replaced; its "
                               "next tick is computed afresh from now.",
                "parameters": [SCHEDULE_ID_PARAM],
                "requestBody": _body("ScheduleRequest"),
                "responses": _put_responses("Schedule")},
        "delete": {"operationId": "deleteSchedule", "tags": ["schedules"],
                   "summary": "Delete a schedule (its jobs stay)",
                   "parameters": [SCHEDULE_ID_PARAM],
                   "responses": _deleted_responses("id")},
    },
    **{f"/api/schedules/{{schedule_id}}/{verb}": {"post": {
        "operationId": f"{verb}Schedule", "tags": ["schedules"], "summary": summary,
        "parameters": [SCHEDULE_ID_PARAM],
        "requestBody": {"required": False, "description": "ignored",
                        "content": _json({})},
        "responses": _responses(code, "Done", _ref(schema),
                                "400", "404", "405", "409", "413", "503"),
    }} for verb, summary, code, schema in (
        ("pause", "Stop firing until resumed", "200", "Schedule"),
        ("resume", "Fire again from the next tick (what fell due meanwhile is not "
                   "caught up)", "200", "Schedule"),
        ("trigger", "One run now, whatever the overlap policy", "202", "Fired"))},
    "/api/schedules/{schedule_id}/backfill": {"post": {
        "operationId": "backfillSchedule", "tags": ["schedules"],
        "summary": "A run for every tick in a past range",
        "parameters": [SCHEDULE_ID_PARAM],
        "requestBody": _body("BackfillRequest"),
        "responses": _responses("202", "Done", _ref("Fired"),
                                "400", "404", "405", "409", "413", "503"),
    }},
    "/api/rates": {"get": {
        "operationId": "rates", "tags": ["node"],
        "summary": "Jobs registered, completed, failed per second, last 10 minutes",
        "responses": _responses("200", "Counts per second, oldest first (the console's "
                                "graph)", _ref("Rates")),
    }},
    "/api/workers/heartbeat": {"post": {
        "operationId": "heartbeat", "tags": ["workers"], "summary": "A worker is alive",
        "requestBody": _body("HeartbeatRequest"),
        "responses": _responses("200", "Recorded (exactly 200: workers treat anything "
                                "else as a failure)", _ref("Acknowledged"),
                                "400", "413", "503"),
    }},
    "/api/workers": {"get": {
        "operationId": "listWorkers", "tags": ["workers"],
        "summary": "Workers seen by their heartbeats, by id",
        "parameters": [
            dict(_q, name="limit", description="default: every worker (at most 10000)",
                 schema={"type": "integer", "minimum": 1, "maximum": 10000,
                         "default": 10000}),
            dict(_q, name="cursor", description="the `next` of the previous page",
                 schema={"type": "string", "pattern": "^[A-Za-z0-9_-]*$"}),
        ],
        "responses": _responses("200", "One page of the workers this node has heard "
                                "from", _ref("WorkerList"), "400"),
    }},
    "/api/metrics": {"get": {
        "operationId": "metrics", "tags": ["node"], "summary": "Counts, as JSON",
        "responses": _responses("200", "jobs by status and queue, workers, log, broker",
                                _ref("Metrics")),
    }},
    "/api/openapi.json": {"get": {
        "operationId": "openapi", "tags": ["node"], "summary": "This document",
        "responses": _responses("200", "OpenAPI 3.1", _ref("OpenApiDocument")),
    }},
}

# The console's routes and filters (docs/API.md) ##############################
# Kept together here, added to the tables above, so that the routes' own entries
# stay as they were.

_WHERE_PARAMS = [
    dict(_q, name="id_prefix", description="ids that begin with this (a walk of the "
         "index the other filters choose)", schema={"type": "string", "minLength": 1,
                                                    "maxLength": 256}),
    *(dict(_q, name=name, description=desc, schema={"type": "integer", "minimum": 0,
                                                    "maximum": 2 ** 53})
      for name, desc in (("created_since", "created_at >= this (ms)"),
                         ("created_before", "created_at < this (ms)"),
                         ("finished_since", "completed_at >= this (ms); finished jobs only"),
                         ("finished_before", "completed_at < this (ms); finished jobs only"))),
    dict(_q, name="error", description="text within error_message, any case",
         schema={"type": "string", "maxLength": 200}),
    dict(_q, name="retry_count_min", schema={"type": "integer", "minimum": 0,
                                             "maximum": 1000}),
    dict(_q, name="retry_count_max", schema={"type": "integer", "minimum": 0,
                                             "maximum": 1000}),
    dict(_q, name="offset", description="skip this many matching jobs (after `cursor`); "
         "the last page begins at count - count % limit",
         schema={"type": "integer", "minimum": 0, "maximum": 10_000_000}),
]
PATHS["/api/jobs"]["get"]["parameters"] += _WHERE_PARAMS


def _bulk_request(statuses, default: str) -> dict:
    props = {p["name"]: p["schema"] for p in _WHERE_PARAMS if p["name"] != "offset"}
    return {
        "type": "object",
        "description": "`ids` (the jobs a person selected), or the listing's filters "
                       f"with `status` ({default} when absent) and `limit` (default "
                       "100), or `all: true` for every matching job.",
        "properties": {"ids": {"type": "array", "minItems": 1, "maxItems": 10000,
                               "items": _ID_STRING},
                       "status": {"enum": sorted(statuses)},
                       "type": {"type": "string"}, "queue": {"type": "string"},
                       "worker_id": {"type": "string"},
                       "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
                       "all": {"type": "boolean"}, **props},
    }


_LIVE = sorted(set(STATUSES) - {"completed", "failed", "cancelled"})
_REQ["RetryRequest"] = _bulk_request(["completed", "failed", "cancelled"], "failed")
_REQ["DiscardRequest"] = _bulk_request(["completed", "failed", "cancelled"], "failed")
_REQ["CancelManyRequest"] = _bulk_request(_LIVE, "every unfinished status")
_RESP.update({
    "Discarded": {"type": "object", "required": ["status", "job_id"],
                  "properties": {"status": {"const": "discarded"},
                                 "job_id": {"type": "string"}}},
    "DiscardedMany": {"type": "object", "required": ["discarded"],
                      "properties": {"discarded": COUNT}},
    "CancelledMany": {"type": "object", "required": ["cancelled"],
                      "properties": {"cancelled": COUNT}},
    "WorkerDetail": {"allOf": [_ref("Worker"), {
        "type": "object", "required": ["load_history"],
        "properties": {"load_history": {
            "type": "array", "maxItems": 60,
            "description": "[at_ms, current_load] of its last heartbeats, oldest first",
            "items": {"type": "array", "prefixItems": [MILLIS, COUNT],
                      "minItems": 2, "maxItems": 2}}}}]},
    "Forgotten": {"type": "object", "required": ["status", "worker_id"],
                  "properties": {"status": {"const": "forgotten"},
                                 "worker_id": {"type": "string"}}},
})
PATHS["/api/jobs/retry"]["post"]["description"] = (
    "`ids`, or the listing's filters with `status` a terminal one (default: failed, "
    "the dead set; cancelled jobs only when asked), at most `limit` (default 100) "
    "newest first, or `all: true` for every match.")
PATHS["/api/jobs/{job_id}"]["delete"] = {
    "operationId": "discardJob", "tags": ["jobs"], "summary": "Forget a finished job",
    "description": "A completed, failed or cancelled job leaves the registry (as "
                   "retention removes it). The body is ignored.",
    "parameters": [JOB_ID_PARAM],
    "responses": _responses("200", "Discarded", _ref("Discarded"),
                            "400", "404", "405", "409", "413", "503"),
}


def _bulk_path(op_id: str, summary: str, request: str, answer: str, answer_desc: str) -> dict:
    return {"post": {"operationId": op_id, "tags": ["jobs"], "summary": summary,
                     "requestBody": _body(request),
                     "responses": _responses("200", answer_desc, _ref(answer),
                                             "400", "413", "503")}}


PATHS["/api/jobs/discard"] = _bulk_path(
    "discardJobs", "Forget finished jobs: a selection, or those matching a filter",
    "DiscardRequest", "DiscardedMany", "How many were discarded")
PATHS["/api/jobs/cancel"] = _bulk_path(
    "cancelJobs", "Cancel unfinished jobs: a selection, or those matching a filter",
    "CancelManyRequest", "CancelledMany", "How many were cancelled")
_WORKER_ID_PARAM = {"name": "worker_id", "in": "path", "required": True,
                    "schema": {"type": "string", "minLength": 1}}
PATHS["/api/workers/{worker_id}"] = {
    "get": {"operationId": "getWorker", "tags": ["workers"],
            "summary": "One worker, with the load of its last heartbeats",
            "parameters": [_WORKER_ID_PARAM],
            "responses": _responses("200", "The worker", _ref("WorkerDetail"),
                                    "400", "404", "405")},
    "delete": {"operationId": "forgetWorker", "tags": ["workers"],
               "summary": "Forget a worker (its next heartbeat brings it back)",
               "description": "409 while the node records jobs running on it: those are "
                              "retried once it is unresponsive. The body is ignored.",
               "parameters": [_WORKER_ID_PARAM],
               "responses": _responses("200", "Forgotten", _ref("Forgotten"),
                                       "400", "404", "405", "409", "413", "503")},
}

SPEC = {
    "openapi": "3.1.0",
    "info": {
        "title": "dqorch HTTP API",
        "version": __version__,
        "description": (
            "The DistriQueue orchestrator's HTTP API (docs/API.md). Request bodies are "
            "JSON whatever their Content-Type says, at most max_body_bytes (413 beyond). "
            "Timestamps are integer milliseconds since the Unix epoch; unset values are "
            "null. Every error is {\"error\", \"message\", \"field\"?}. An unknown path "
            "answers 404 not_found; a known path with another method answers 405 "
            "method_not_allowed with an Allow header."),
    },
    "tags": [{"name": "jobs"}, {"name": "schedules"}, {"name": "queues"}, {"name": "workers"},
             {"name": "node"}],
    "paths": PATHS,
    "components": {"schemas": {**_REQ, **_RESP}, "responses": RESPONSES},
}
