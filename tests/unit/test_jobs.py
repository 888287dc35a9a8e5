"""Unit tests for dqorch.jobs: statuses, priority -> queue routing, the job record and
the shapes it takes on the wire (API JSON §2.5, job message and status event §3)."""
import json
import sys

import pytest

from dqorch import jobs

FIELDS = {"max_retries": 3, "execution_timeout": 300}


def job(**fields) -> dict:
    return jobs.new_job("j1", 1, 1_700_000_000_123, dict(FIELDS, **fields))


# Statuses and moves ########################################################

def test_terminal_statuses_are_completed_failed_cancelled():
    assert jobs.TERMINAL == {"completed", "failed", "cancelled"}
    assert set(jobs.STATUSES) == {"waiting", "scheduled", "pending", "queued",
                                  "running"} | jobs.TERMINAL


def test_terminal_statuses_only_restart_and_every_other_can_be_cancelled():
    assert set(jobs.TRANSITIONS) == set(jobs.STATUSES)
    for status, allowed in jobs.TRANSITIONS.items():
        assert allowed <= set(jobs.STATUSES)
        if status in jobs.TERMINAL:
            assert allowed == {"pending", "scheduled", "waiting"}   # only a new register
        else:
            assert {"cancelled", "completed", "failed"} <= allowed


# Routing ###################################################################

@pytest.mark.parametrize("priority, queue", [
    (15, "job.high"), (10, "job.high"), (1000, "job.high"),
    (9, "job.medium"), (5, "job.medium"),
    (4, "job.low"), (1, "job.low"), (0, "job.low"), (-5, "job.low"),
])
def test_queue_for_routes_by_priority_thresholds(priority, queue):
    assert jobs.queue_for(priority) == queue


def test_queue_amqp_priorities_match_the_contract():
    assert jobs.QUEUES == {"job.high": 10, "job.medium": 5, "job.low": 1}
    assert jobs.PRIORITY_NAMES == {"low": 1, "medium": 5, "high": 10, "critical": 15}


# The record ################################################################

def test_new_job_defaults():
    j = job()
    assert (j["id"], j["seq"], j["status"]) == ("j1", 1, "pending")
    assert (j["type"], j["priority"], j["queue"]) == ("default", 5, "job.medium")
    assert (j["payload"], j["metadata"], jobs.history_of(j)) == (b"{}", b"{}", [])   # raw JSON
    assert (j["retry_count"], j["max_retries"], j["execution_timeout"]) == (0, 3, 300)
    assert j["created_at"] == 1_700_000_000_123
    for k in ("worker_id", "result", "queued_at", "started_at", "completed_at"):
        assert j[k] is None, k
    for k in ("error_message", "progress", "from_report", "client_created_at"):
        assert k not in j, k                 # absent until set: the dict stays small
    assert not hasattr(j, "__dict__") and sys.getsizeof(j) <= 256   # slots, no dict


def test_new_job_takes_the_fields_and_routes_by_priority():
    j = job(type="resize", priority=12, payload={"a": 1}, metadata={"m": "x"},
            client_created_at="yesterday")
    assert (j["type"], j["priority"], j["queue"]) == ("resize", 12, "job.high")
    assert (j["payload"], j["metadata"]) == (b'{"a":1}', b'{"m":"x"}')
    assert j["client_created_at"] == "yesterday"


def test_raw_fields_are_immutable_bytes_and_spliced_as_they_are():
    a = job(payload={"x": [1, 2], "big": 123456789012345678901234567890})
    assert isinstance(a["payload"], bytes)          # nothing to share by mistake
    text = jobs.dumps(jobs.api_json(a))             # orjson refuses >64-bit ints...
    assert json.loads(text)["payload"] == {"x": [1, 2], "big": 123456789012345678901234567890}
    assert b"123456789012345678901234567890" in jobs.dumps(jobs.message_body(a))


def test_fill_fields_sets_only_given_fields_and_reroutes():
    j = job()
    j.update(status="running", retry_count=2, worker_id="w")
    jobs.fill_fields(j, {"priority": 1, "type": "t", "max_retries": 9,
                         "execution_timeout": 60})
    assert (j["priority"], j["queue"], j["type"]) == (1, "job.low", "t")
    assert (j["max_retries"], j["execution_timeout"]) == (9, 60)
    assert (j["status"], j["retry_count"], j["worker_id"]) == ("running", 2, "w")
    assert (j["payload"], j["metadata"]) == (b"{}", b"{}")


# API JSON ##################################################################

def test_api_json_has_the_contract_fields_in_order_and_null_for_unset():
    out = jobs.api_json(job())
    assert list(out) == list(jobs.API_FIELDS)
    assert list(jobs.API_FIELDS) == [
        "id", "type", "priority", "queue", "status", "worker_id", "payload", "result",
        "error_message", "retry_count", "max_retries", "execution_timeout", "metadata",
        "created_at", "queued_at", "started_at", "completed_at"]
    text = jobs.dumps(out).decode()
    assert "undefined" not in text
    assert out["worker_id"] is None and out["completed_at"] is None
    assert "seq" not in out and "registered" not in out and "history" not in out


def test_api_json_list_form_omits_payload_and_result():
    out = jobs.api_json(job(payload={"big": "x"}), full=False)
    assert "payload" not in out and "result" not in out
    assert out["id"] == "j1"


def test_api_json_adds_history_progress_and_client_created_at_when_present():
    j = job(client_created_at=5)
    j["progress"] = 40
    j["history"] = jobs.raw([[1, "pending", "api", "r"]])
    out = jobs.api_json(j, history=True)
    assert out["progress"] == 40 and out["client_created_at"] == 5
    assert out["history"] == [{"at": 1, "status": "pending", "by": "api", "reason": "r"}]
    assert "progress" not in jobs.api_json(job())


# Job message ###############################################################

def test_message_body_has_the_15_contract_keys_and_status_pending():
    j = job(type="t", priority=10, payload={"a": 1}, metadata={"k": "v"})
    j.update(status="running", retry_count=2, worker_id="w1")
    body = jobs.message_body(j)
    assert set(body) == {"id", "type", "priority", "status", "worker_id", "payload",
                         "result", "error_message", "retry_count", "max_retries",
                         "execution_timeout", "created_at", "started_at",
                         "completed_at", "metadata"}
    assert body["status"] == "pending"
    assert (body["id"], body["type"], body["priority"], body["retry_count"]) == \
        ("j1", "t", 10, 2)
    sent = json.loads(jobs.dumps(body))
    assert sent["payload"] == {"a": 1} and sent["metadata"] == {"k": "v"}
    assert isinstance(body["created_at"], int)


# Status events #############################################################

@pytest.mark.parametrize("at_ms, want", [
    (0, "1970-01-01T00:00:00.000Z"),
    (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
    (1_700_000_000_007, "2023-11-14T22:13:20.007Z"),
    (1_700_000_000_999, "2023-11-14T22:13:20.999Z"),
])
def test_iso_ms_is_utc_with_milliseconds(at_ms, want):
    assert jobs.iso_ms(at_ms) == want


def test_event_body_minimal():
    ev = {"job": "j1", "status": "CANCELLED", "worker": None, "at_ms": 1000}
    assert jobs.event_body(ev) == {"jobId": "j1", "jobStatus": "CANCELLED",
                                   "workerId": "unknown",
                                   "timestamp": "1970-01-01T00:00:01.000Z"}


def test_event_body_worker_is_never_blank():
    for worker in (None, ""):
        ev = {"job": "j", "status": "RUNNING", "worker": worker, "at_ms": 0}
        assert jobs.event_body(ev)["workerId"] == "unknown"
    ev = {"job": "j", "status": "RUNNING", "worker": "w7", "at_ms": 0}
    assert jobs.event_body(ev)["workerId"] == "w7"


@pytest.mark.parametrize("result, want", [
    ({"a": 1}, {"a": 1}), ([1, 2], {"value": [1, 2]}), ("ok", {"value": "ok"}),
    (0, {"value": 0}), (False, {"value": False}),
])
def test_event_body_wraps_a_non_object_result(result, want):
    ev = {"job": "j", "status": "COMPLETED", "worker": "w", "at_ms": 0, "result": result}
    assert jobs.event_body(ev)["result"] == want


def test_event_body_carries_error_and_progress_only_when_set():
    ev = {"job": "j", "status": "FAILED", "worker": "w", "at_ms": 0, "error": "boom",
          "progress": 30}
    body = jobs.event_body(ev)
    assert (body["errorMessage"], body["progress"]) == ("boom", 30)
    ev = {"job": "j", "status": "RUNNING", "worker": "w", "at_ms": 0, "error": None,
          "progress": None}
    body = jobs.event_body(ev)
    assert "errorMessage" not in body and "progress" not in body and "result" not in body


# The stored history ########################################################

ENTRIES = [(1_700_000_000_123, "pending", "api", "registered"),
           (1_700_000_000_180, "queued", "broker", "confirmed in job.high"),
           (1_700_000_000_150, "running", "w-1", None),           # a clock that went back
           (1_700_000_090_000, "failed", "w-1", "boom; retry 1 of 3"),
           (1_700_000_090_000, "pending", "api", "registered")]


def test_a_packed_history_reads_back_as_it_was_written():
    data = jobs.pack_history(ENTRIES)
    assert jobs.history_of(jobs.Job({"history": data})) == ENTRIES
    assert b"registered" not in data and b"boom; retry 1 of 3" in data
    assert len(data) < len(json.dumps(ENTRIES)) * 0.7


def test_with_entry_keeps_the_newest_and_their_times():
    data = jobs.pack_history(ENTRIES[:1])
    for e in ENTRIES[1:]:
        data = jobs.with_entry(data, e, keep=3)
    assert jobs.history_of(jobs.Job({"history": data})) == ENTRIES[-3:]


def test_a_record_from_before_packed_histories_is_packed_on_load():
    old = json.dumps([list(e) for e in ENTRIES])          # at_ms and reasons spelt out
    j = jobs.Job.from_record({"id": "j1", "history": old}, packed_history=False)
    assert jobs.history_of(j) == ENTRIES
    again = jobs.Job.from_record(j.to_record())           # packed: kept as it is
    assert again["history"] == j["history"]


def test_iso_ms_agrees_with_datetime_across_seconds_and_days():
    """The second's text is cached: many times, in and out of order, must each still
    give their own second."""
    import datetime
    import random
    rnd = random.Random(7)
    base = 1_764_547_199_000                      # a second before a day ends
    for at in [base + rnd.randrange(0, 5_000) for _ in range(500)] + \
            [rnd.randrange(0, 4_000_000_000_000) for _ in range(500)]:
        t = datetime.datetime.fromtimestamp(at / 1000, tz=datetime.timezone.utc)
        assert jobs.iso_ms(at) == t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (at % 1000)


def test_a_stale_worker_from_before_past_loads_as_a_paid_earlier_attempt():
    """Snapshots before jobs.Job.past kept the abandoned attempt's worker as
    stale_worker: as a record (formats 1-3) and in a row's dict (format 4)."""
    job = jobs.new_job("j", 1, 5, {"max_retries": 3, "execution_timeout": 30})
    job.attempt = 2
    rec = dict(job.to_record(), stale_worker="ghost")
    loaded = jobs.Job.from_record(rec)
    assert loaded["past"] == [["ghost", 1, 0, None]] and "stale_worker" not in loaded
    row = job.to_row()
    row[-1] = {"stale_worker": "ghost"}
    loaded, = jobs.from_rows([json.loads(json.dumps(row))], {}, {})
    assert loaded["past"] == [["ghost", 1, 0, None]]
