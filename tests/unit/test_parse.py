"""Unit tests for dqorch.parse: requests -> commands (CONTRACT §2.1-2.4). Every field
spelling, the "first listed wins" rule, each default, and the exact error code, status
and field of each rejection. Pure: the new id and the config values are passed in."""

import json

import pytest

from dqorch import jobs, parse
from dqorch.errors import ApiError

NEW_ID = "0b7e6f0a-3f1c-4c55-9a55-2f6a1c1d2e3f"


def err(fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as ei:
        fn(*args, **kwargs)
    return ei.value


def reg(body: dict, **kw) -> dict:
    opts = dict(new_id=lambda: NEW_ID, max_retries=3, execution_timeout=300,
                max_job_bytes=60000, publish=True)
    opts.update(kw)
    return parse.register(body, **opts)


def reg_err(body: dict, **kw) -> ApiError:
    return err(reg, body, **kw)


def rep(body: dict, path_id=None) -> dict:
    return parse.report(body, path_id, max_retries=3, execution_timeout=300)


def rep_err(body: dict, path_id=None) -> ApiError:
    return err(rep, body, path_id)


def assert_bad(e: ApiError, field: str) -> None:
    assert (e.status, e.code, e.field) == (400, "invalid_request", field), e.body()
    assert e.body() == {"error": "invalid_request", "message": e.message, "field": field}
    assert e.message.startswith(field + ": ")


# body_json #################################################################

def test_body_json_returns_the_object():
    assert parse.body_json(b'{"a": [1, 2], "b": null}') == {"a": [1, 2], "b": None}


@pytest.mark.parametrize("raw", [b"", b"  \r\n\t"])
def test_empty_body_is_an_empty_object_when_allowed(raw):
    assert parse.body_json(raw) == {}


def test_empty_body_is_invalid_json_when_not_allowed():
    e = err(parse.body_json, b" ", allow_empty=False)
    assert (e.status, e.code, e.field) == (400, "invalid_json", None)


@pytest.mark.parametrize("raw", [b'{"a": "\xff"}', b"\xfe\xff{}", b'{"a": "\xc3"}'])
def test_invalid_utf8_is_invalid_json(raw):
    e = err(parse.body_json, raw)
    assert (e.status, e.code) == (400, "invalid_json")
    assert "UTF-8" in e.message


@pytest.mark.parametrize("raw", [b"{", b"{'a': 1}", b'{"a": 1,}', b"{} {}", b"nope",
                                 b'{"a": tru}'])
def test_malformed_json_is_invalid_json(raw):
    e = err(parse.body_json, raw)
    assert (e.status, e.code) == (400, "invalid_json")
    assert e.body()["error"] == "invalid_json"


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
                                 b'{"a": {"b": [1e400]}}', b'{"priority": -1e999}'])
def test_non_finite_numbers_are_invalid_json(raw):
    # Python's json would accept these; the workers that receive the job would not.
    e = err(parse.body_json, raw)
    assert (e.status, e.code) == (400, "invalid_json")


def test_finite_floats_are_kept():
    assert parse.body_json(b'{"a": 1.5e300, "b": -0.25}') == {"a": 1.5e300, "b": -0.25}


def test_deeply_nested_json_is_invalid_json_not_a_crash():
    e = err(parse.body_json, b"[" * 100_000)
    assert (e.status, e.code) == (400, "invalid_json")


def test_a_payload_nested_about_as_deep_as_python_can_go_is_read_or_refused():
    """Near the recursion limit: whatever codec.loads reads, the size check can write
    (a RecursionError there would be a 500)."""
    outcomes = set()
    for depth in range(850, 1000, 2):
        raw = b'{"payload":{"a":' + b"[" * depth + b"]" * depth + b"}}"
        try:
            parse.register(parse.body_json(raw), new_id=lambda: "x", max_retries=3,
                           execution_timeout=60, max_job_bytes=1 << 20, publish=True)
            outcomes.add("accepted")
        except ApiError as e:
            assert (e.status, e.code) == (400, "invalid_json")
            outcomes.add("refused")
    assert outcomes == {"accepted", "refused"}


@pytest.mark.parametrize("raw, kind", [(b"[1, 2]", "array"), (b'"job"', "string"),
                                       (b"42", "number"), (b"4.5", "number"),
                                       (b"null", "null"), (b"true", "boolean")])
def test_non_object_json_is_invalid_request_naming_the_kind(raw, kind):
    e = err(parse.body_json, raw)
    assert (e.status, e.code) == (400, "invalid_request")
    assert e.message.endswith("got " + kind)


# register: ids ############################################################

def test_register_without_fields_uses_every_default():
    cmd = reg({})
    assert cmd == {"op": "register", "id": NEW_ID, "publish": True,
                   "job": {"max_retries": 3, "execution_timeout": 300}}
    job = jobs.new_job(cmd["id"], 1, 1000, cmd["job"])
    assert (job["type"], job["priority"], job["queue"]) == ("default", 5, "job.medium")
    assert (job["payload"], job["metadata"], job["status"]) == (b"{}", b"{}", "pending")
    assert "client_created_at" not in job


def test_register_defaults_come_from_the_caller():
    cmd = reg({}, max_retries=0, execution_timeout=7, publish=False, new_id=lambda: "n")
    assert cmd["job"] == {"max_retries": 0, "execution_timeout": 7}
    assert (cmd["id"], cmd["publish"]) == ("n", False)


@pytest.mark.parametrize("name", ["id", "jobId", "job_id"])
def test_register_accepts_each_id_spelling(name):
    assert reg({name: "job-1"})["id"] == "job-1"


@pytest.mark.parametrize("body, want", [
    ({"id": "a", "jobId": "b", "job_id": "c"}, "a"),
    ({"job_id": "c", "jobId": "b", "id": "a"}, "a"),       # order of the body is irrelevant
    ({"jobId": "b", "job_id": "c"}, "b"),
    ({"id": None, "jobId": "b", "job_id": "c"}, "b"),      # null counts as absent
    ({"id": None, "jobId": None, "job_id": "c"}, "c"),
])
def test_register_first_listed_id_spelling_wins(body, want):
    assert reg(body)["id"] == want


def test_register_with_null_id_gets_the_new_id():
    assert reg({"id": None, "jobId": None})["id"] == NEW_ID


def test_register_draws_a_new_id_only_when_the_body_names_none():
    calls = []

    def new_id():
        calls.append(1)
        return "fresh-%d" % len(calls)
    assert reg({"jobId": "mine"}, new_id=new_id)["id"] == "mine"
    assert calls == []
    assert reg({}, new_id=new_id)["id"] == "fresh-1"
    assert reg({"id": None}, new_id=new_id)["id"] == "fresh-2"


@pytest.mark.parametrize("value, want", [(42, "42"), (0, "0"), (-7, "-7"),
                                         (12345678901234567890, "12345678901234567890")])
def test_register_numeric_id_becomes_its_decimal_string(value, want):
    assert reg({"id": value})["id"] == want


@pytest.mark.parametrize("value", [True, False, 1.5, [], {}, ["a"]])
def test_register_id_of_other_type_is_rejected_naming_the_field(value):
    assert_bad(reg_err({"jobId": value}), "jobId")


def test_register_id_of_10000_chars_is_rejected_naming_the_field():
    e = reg_err({"job_id": "x" * 10_000})
    assert_bad(e, "job_id")
    assert "10000" in e.message


def test_register_id_length_bounds():
    assert reg({"id": "x" * 256})["id"] == "x" * 256
    assert_bad(reg_err({"id": "x" * 257}), "id")
    assert_bad(reg_err({"id": ""}), "id")


@pytest.mark.parametrize("value", ["a\nb", "a\x00", "\tjob", "job\r", "a\x1fb", "a\x7fb"])
def test_register_id_with_control_characters_is_rejected(value):
    e = reg_err({"id": value})
    assert_bad(e, "id")
    assert "control" in e.message


@pytest.mark.parametrize("value", ["ジョブ-1", "job with spaces", "a?b#c%2F", "é" * 256])
def test_register_id_may_hold_any_printable_text(value):
    assert reg({"id": value})["id"] == value


# register: other fields ###################################################

def test_register_type_is_kept_and_checked():
    assert reg({"type": "resize"})["job"]["type"] == "resize"
    assert reg({"type": "t" * 128})["job"]["type"] == "t" * 128
    assert "type" not in reg({"type": None})["job"]
    for bad_value in ("", "t" * 129, 5, ["a"], True):
        assert_bad(reg_err({"type": bad_value}), "type")


@pytest.mark.parametrize("value, want", [
    (7, 7), (0, 0), (-3, -3), (15, 15), (100, 100),
    ("7", 7), (" 12 ", 12), ("-2", -2), ("7.9", 7),
    ("low", 1), ("LOW", 1), ("Medium", 5), ("MEDIUM", 5), ("high", 10), ("HiGh", 10),
    ("CRITICAL", 15), ("critical", 15), (" high ", 10),
    (7.9, 7), (10.0, 10), (9.999, 9), (-0.5, -1), (0.1, 0),
])
def test_register_priority_forms(value, want):
    got = reg({"priority": value})["job"]["priority"]
    assert got == want and type(got) is int


@pytest.mark.parametrize("value", [True, False, "urgent", "", "1O", "nan", "inf", [5],
                                   {"p": 5}, 10_000_000, "10000000", float("inf"),
                                   float("nan")])
def test_register_priority_of_other_forms_is_rejected_naming_the_field(value):
    assert_bad(reg_err({"priority": value}), "priority")


def test_register_null_priority_is_the_default():
    cmd = reg({"priority": None})
    assert "priority" not in cmd["job"]
    assert jobs.new_job("a", 1, 0, cmd["job"])["priority"] == 5


def test_register_payload_object_is_kept():
    payload = {"image": "s3://x", "sizes": [1, 2], "nested": {"a": None}}
    assert reg({"payload": payload})["job"]["payload"] == payload


def test_register_null_payload_is_stored_as_empty_object():
    assert reg({"payload": None})["job"]["payload"] == {}


@pytest.mark.parametrize("value", [[1, 2], "text", 5, 1.5, True, False, []])
def test_register_non_object_payload_is_rejected(value):
    assert_bad(reg_err({"payload": value}), "payload")


@pytest.mark.parametrize("name", ["max_retries", "maxRetries"])
def test_register_max_retries_spellings(name):
    assert reg({name: 7})["job"]["max_retries"] == 7


@pytest.mark.parametrize("body, want", [
    ({"max_retries": 1, "maxRetries": 2}, 1),
    ({"maxRetries": 2, "max_retries": 1}, 1),
    ({"max_retries": None, "maxRetries": 2}, 2),
    ({"max_retries": None, "maxRetries": None}, 3),
])
def test_register_max_retries_first_listed_wins(body, want):
    assert reg(body)["job"]["max_retries"] == want


def test_register_max_retries_bounds_name_the_spelling_used():
    assert reg({"maxRetries": 0})["job"]["max_retries"] == 0
    assert reg({"maxRetries": 100})["job"]["max_retries"] == 100
    for v in (-1, 101, "3", 2.0, True):
        assert_bad(reg_err({"maxRetries": v}), "maxRetries")
    assert_bad(reg_err({"max_retries": 101, "maxRetries": 1}), "max_retries")


@pytest.mark.parametrize("name", ["execution_timeout", "executionTimeout", "timeout"])
def test_register_execution_timeout_spellings(name):
    assert reg({name: 60})["job"]["execution_timeout"] == 60


@pytest.mark.parametrize("body, want", [
    ({"execution_timeout": 1, "executionTimeout": 2, "timeout": 3}, 1),
    ({"timeout": 3, "executionTimeout": 2}, 2),
    ({"executionTimeout": None, "timeout": 3}, 3),
    ({"execution_timeout": None, "executionTimeout": None, "timeout": None}, 300),
])
def test_register_execution_timeout_first_listed_wins(body, want):
    assert reg(body)["job"]["execution_timeout"] == want


def test_register_execution_timeout_bounds():
    assert reg({"timeout": 1})["job"]["execution_timeout"] == 1
    assert reg({"timeout": 604800})["job"]["execution_timeout"] == 604800
    for v in (0, -5, 604801, "60", 1.5, False):
        assert_bad(reg_err({"timeout": v}), "timeout")


def test_register_metadata_values_may_be_scalars_or_null():
    md = {"s": "x", "i": 1, "f": 1.5, "t": True, "f0": False, "n": None, "": ""}
    assert reg({"metadata": md})["job"]["metadata"] == md


@pytest.mark.parametrize("md", [{"a": [1]}, {"a": {"b": 1}}, {"ok": 1, "bad": []}])
def test_register_metadata_with_nested_values_is_rejected(md):
    assert_bad(reg_err({"metadata": md}), "metadata")


@pytest.mark.parametrize("md", [[], "x", 1, True])
def test_register_metadata_that_is_not_an_object_is_rejected(md):
    assert_bad(reg_err({"metadata": md}), "metadata")


def test_register_null_metadata_is_the_default():
    assert "metadata" not in reg({"metadata": None})["job"]


@pytest.mark.parametrize("name", ["created_at", "createdAt"])
@pytest.mark.parametrize("value", ["2024-01-02T03:04:05Z", 1700000000000, 1.7e12, "", "x"])
def test_register_created_at_is_kept_as_client_created_at(name, value):
    job = reg({name: value})["job"]
    assert job["client_created_at"] == value
    assert "created_at" not in job


def test_register_created_at_first_listed_wins():
    assert reg({"createdAt": 2, "created_at": 1})["job"]["client_created_at"] == 1
    assert reg({"created_at": None, "createdAt": 2})["job"]["client_created_at"] == 2


@pytest.mark.parametrize("value", [True, [1], {"t": 1}])
def test_register_created_at_of_other_type_is_rejected_naming_the_spelling(value):
    assert_bad(reg_err({"createdAt": value}), "createdAt")


def test_register_ignores_unknown_fields():
    base = reg({"id": "a", "type": "t"})
    assert reg({"id": "a", "type": "t", "status": "RUNNING", "workerId": "w",
                "whatever": [1, {"x": 2}]}) == base


def test_register_gateway_body_with_nulls_present():
    body = {"id": "g-1", "type": "email", "priority": "HIGH", "payload": None,
            "status": "PENDING", "workerId": None, "result": None, "errorMessage": None,
            "retryCount": 0, "maxRetries": 5, "executionTimeout": None,
            "createdAt": "2024-05-01T10:00:00", "startedAt": None, "completedAt": None,
            "metadata": None}
    assert reg(body) == {"op": "register", "id": "g-1", "publish": True, "job": {
        "type": "email", "priority": 10, "payload": {}, "max_retries": 5,
        "execution_timeout": 300, "client_created_at": "2024-05-01T10:00:00"}}


def test_register_job_larger_than_max_job_bytes_is_413():
    body = {"id": "big", "payload": {"blob": "x" * 2000}}
    e = reg_err(body, max_job_bytes=1000)
    assert (e.status, e.code, e.field) == (413, "payload_too_large", None)
    assert "1000" in e.message
    assert reg(body, max_job_bytes=3000)["id"] == "big"


def test_register_max_job_bytes_boundary_counts_the_stored_fields_and_id():
    body = {"id": "j", "payload": {"blob": "x" * 500}}
    f = reg(body)["job"]
    size = len(json.dumps(f, separators=(",", ":"))) + len("j")
    assert reg(body, max_job_bytes=size)["id"] == "j"
    assert reg_err(body, max_job_bytes=size - 1).status == 413


# report ###################################################################

def test_report_command_shape():
    assert rep({"jobId": "j", "status": "running", "workerId": "w1"}) == {
        "op": "report", "id": "j", "status": "running", "worker_id": "w1",
        "max_retries": 3, "execution_timeout": 300}


@pytest.mark.parametrize("body, path, want", [
    ({"jobId": "b", "job_id": "c", "id": "d"}, "a", "a"),
    ({"jobId": "b", "job_id": "c", "id": "d"}, None, "b"),
    ({"job_id": "c", "id": "d"}, None, "c"),
    ({"id": "d"}, None, "d"),
    ({"jobId": None, "job_id": None, "id": "d"}, None, "d"),
    ({"jobId": 17}, None, "17"),
])
def test_report_id_precedence_is_path_then_jobid_job_id_id(body, path, want):
    assert rep(dict(body, status="running"), path)["id"] == want


def test_report_without_id_is_rejected_naming_jobid():
    assert_bad(rep_err({"status": "running"}), "jobId")


def test_report_bad_ids_are_rejected_naming_the_field():
    assert_bad(rep_err({"status": "running"}, path_id="a\x00"), "id")
    assert_bad(rep_err({"status": "running", "job_id": "x" * 10_000}), "job_id")
    assert_bad(rep_err({"status": "running", "jobId": True}), "jobId")


@pytest.mark.parametrize("body, want", [
    ({"workerId": "a", "worker_id": "b"}, "a"),
    ({"worker_id": "b", "workerId": "a"}, "a"),
    ({"worker_id": "b"}, "b"),
    ({"workerId": None, "worker_id": "b"}, "b"),
    ({}, None),
])
def test_report_worker_precedence(body, want):
    assert rep(dict(body, jobId="j", status="done"))["worker_id"] == want


@pytest.mark.parametrize("value", ["", 5, ["w"], "w" * 257])
def test_report_bad_worker_is_rejected_naming_the_spelling(value):
    assert_bad(rep_err({"jobId": "j", "status": "done", "worker_id": value}), "worker_id")


ALIASES = {
    "running": ["running", "started", "in_progress", "in-progress", "processing"],
    "completed": ["completed", "complete", "success", "succeeded", "done"],
    "failed": ["failed", "failure", "error"],
    "cancelled": ["cancelled", "canceled"],
}
ALIAS_CASES = [(word, want) for want, words in ALIASES.items() for word in words]


@pytest.mark.parametrize("word, want", ALIAS_CASES)
def test_report_status_aliases_are_case_insensitive(word, want):
    for form in (word, word.upper(), word.capitalize(), " %s " % word):
        assert rep({"jobId": "j", "status": form})["status"] == want


def test_report_aliases_are_exactly_the_contract_list():
    assert jobs.REPORT_ALIASES == {w: s for s, words in ALIASES.items() for w in words}


@pytest.mark.parametrize("status", ["queued", "pending", "RETRYING", "timeout", "runn",
                                    "", "ok"])
def test_report_unknown_status_names_the_allowed_values(status):
    e = rep_err({"jobId": "j", "status": status})
    assert_bad(e, "status")
    for word in ("running", "completed", "failed", "cancelled"):
        assert word in e.message


@pytest.mark.parametrize("body", [{}, {"status": None}, {"status": 1}, {"status": ["done"]}])
def test_report_missing_or_non_string_status_is_rejected(body):
    assert_bad(rep_err(dict(body, jobId="j")), "status")


@pytest.mark.parametrize("value", [0, 1, 50, 100])
def test_report_progress_in_range_is_kept(value):
    assert rep({"jobId": "j", "status": "running", "progress": value})["progress"] == value


@pytest.mark.parametrize("value", [-1, 101, "50", 50.5, True, [50]])
def test_report_progress_out_of_range_or_type_is_rejected(value):
    assert_bad(rep_err({"jobId": "j", "status": "running", "progress": value}), "progress")


def test_report_without_progress_has_no_progress():
    assert "progress" not in rep({"jobId": "j", "status": "running", "progress": None})


@pytest.mark.parametrize("result", [{"a": 1}, [1, 2], "text", 0, 2.5, False])
def test_report_result_is_stored_as_given(result):
    assert rep({"jobId": "j", "status": "done", "result": result})["result"] == result


def test_report_null_result_is_absent():
    assert "result" not in rep({"jobId": "j", "status": "done", "result": None})


def test_report_error_message_spellings_and_precedence():
    def em(body):
        return rep(dict(body, jobId="j", status="failed")).get("error_message")
    assert em({"errorMessage": "a"}) == "a"
    assert em({"error_message": "b"}) == "b"
    assert em({"error_message": "b", "errorMessage": "a"}) == "a"
    assert em({"errorMessage": None, "error_message": "b"}) == "b"
    assert em({}) is None
    assert len(em({"errorMessage": "e" * 10_000})) == 4096
    assert_bad(rep_err({"jobId": "j", "status": "failed", "error_message": 5}),
               "error_message")


# cancel ###################################################################

def test_cancel_command_and_bad_id():
    assert parse.cancel("job-1") == {"op": "cancel", "id": "job-1"}
    assert_bad(err(parse.cancel, "a\nb"), "id")
    assert_bad(err(parse.cancel, "x" * 300), "id")


# heartbeat ################################################################

def test_heartbeat_requires_worker_id():
    assert_bad(err(parse.heartbeat, {}), "workerId")
    assert_bad(err(parse.heartbeat, {"workerId": None, "worker_id": None}), "workerId")


def test_heartbeat_defaults():
    assert parse.heartbeat({"workerId": "w1"}) == {
        "worker_id": "w1", "worker_type": "unknown", "capacity": 10, "current_load": 0,
        "stats": {}}


def test_heartbeat_worker_id_precedence():
    assert parse.heartbeat({"worker_id": "b", "workerId": "a"})["worker_id"] == "a"
    assert parse.heartbeat({"worker_id": "b"})["worker_id"] == "b"
    assert parse.heartbeat({"workerId": None, "worker_id": "b"})["worker_id"] == "b"


@pytest.mark.parametrize("value", ["", 7, "w" * 257])
def test_heartbeat_bad_worker_id_is_rejected_naming_the_spelling(value):
    assert_bad(err(parse.heartbeat, {"worker_id": value}), "worker_id")


def test_heartbeat_fields_and_spellings():
    w = parse.heartbeat({"workerId": "w", "workerType": "python", "capacity": 4,
                         "currentLoad": 2})
    assert (w["worker_type"], w["capacity"], w["current_load"]) == ("python", 4, 2)
    w = parse.heartbeat({"workerId": "w", "worker_type": "rust", "workerType": "java",
                         "current_load": 1, "currentLoad": 9})
    assert (w["worker_type"], w["current_load"]) == ("rust", 1)


@pytest.mark.parametrize("value", [-1, -1000])
def test_heartbeat_negative_load_counts_as_zero(value):
    assert parse.heartbeat({"workerId": "w", "currentLoad": value})["current_load"] == 0


def test_heartbeat_bad_numbers_are_rejected():
    assert_bad(err(parse.heartbeat, {"workerId": "w", "capacity": -1}), "capacity")
    assert_bad(err(parse.heartbeat, {"workerId": "w", "capacity": True}), "capacity")
    assert_bad(err(parse.heartbeat, {"workerId": "w", "currentLoad": "3"}), "currentLoad")
    assert_bad(err(parse.heartbeat, {"workerId": "w", "workerType": 3}), "workerType")


def test_heartbeat_keeps_other_fields_as_stats():
    body = {"workerId": "w", "workerType": "python", "capacity": 4, "currentLoad": 1,
            "cpuUsage": 12.5, "memoryUsage": 0.4, "timestamp": "2024-01-01T00:00:00Z",
            "jobsProcessed": 10, "jobsFailed": 1}
    assert parse.heartbeat(body)["stats"] == {
        "cpuUsage": 12.5, "memoryUsage": 0.4, "timestamp": "2024-01-01T00:00:00Z",
        "jobsProcessed": 10, "jobsFailed": 1}


def test_heartbeat_stats_are_bounded():
    assert_bad(err(parse.heartbeat, {"workerId": "w", "junk": "x" * 9000}), "stats")


# list_query ###############################################################

def test_list_query_defaults():
    assert parse.list_query({}) == {"filters": {}, "limit": 100, "cursor": None,
                                    "full": False, "where": {}, "offset": 0}


def test_list_query_limit_bounds():
    assert parse.list_query({"limit": "1"})["limit"] == 1
    assert parse.list_query({"limit": "10000"})["limit"] == 10000
    assert parse.list_query({"limit": ""})["limit"] == 100
    for v in ("0", "10001", "-1", "abc", "1.5"):
        assert_bad(err(parse.list_query, {"limit": v}), "limit")


def test_list_query_cursor():
    assert parse.list_query({"cursor": "123"})["cursor"] == 123
    assert parse.list_query({"cursor": ""})["cursor"] is None
    for v in ("abc", "12x", "1.0"):
        assert_bad(err(parse.list_query, {"cursor": v}), "cursor")


def test_list_query_filters():
    q = parse.list_query({"status": "running", "queue": "job.high", "type": "t",
                          "worker_id": "w", "other": "ignored"})
    assert q["filters"] == {"status": "running", "queue": "job.high", "type": "t",
                            "worker_id": "w"}
    assert parse.list_query({"status": "", "type": ""})["filters"] == {}


def test_list_query_unknown_status_or_queue_names_the_allowed_values():
    e = err(parse.list_query, {"status": "bogus"})
    assert_bad(e, "status")
    assert all(s in e.message for s in jobs.STATUSES)
    e = err(parse.list_query, {"queue": "job.urgent"})
    assert_bad(e, "queue")
    assert all(q in e.message for q in jobs.QUEUES)


@pytest.mark.parametrize("value, want", [("1", True), ("true", True), ("yes", True),
                                         ("0", False), ("", False), ("no", False)])
def test_list_query_full(value, want):
    assert parse.list_query({"full": value})["full"] is want


def test_a_job_id_with_a_slash_is_refused_a_worker_id_with_one_is_not():
    """/api/jobs/a%2Fb arrives as /api/jobs/a/b: such a job could never be read,
    cancelled or retried by id."""
    with pytest.raises(ApiError) as e:
        parse.job_id("a/b")
    assert e.value.field == "id" and "'/'" in e.value.message
    assert parse.worker_id("pool/w1") == "pool/w1"


def test_created_at_beyond_64_bits_is_refused():
    with pytest.raises(ApiError) as e:
        parse.register({"createdAt": 2**64}, new_id=lambda: "x", max_retries=3,
                       execution_timeout=300, max_job_bytes=60000, publish=True)
    assert e.value.status == 400 and e.value.field == "createdAt"


# One character rule for every client name ###################################

NAMED = [   # (parse a body with value v, the field a refusal names)
    (lambda v: reg({"id": v}), "id"),
    (lambda v: reg({"type": v}), "type"),
    (lambda v: parse.heartbeat({"workerId": v}), "workerId"),
    (lambda v: parse.heartbeat({"workerId": "w", "workerType": v}), "workerType"),
    (lambda v: rep({"jobId": "j", "status": "running", "workerId": v}), "workerId"),
]
REFUSED_NAMES = [
    "a\x00b", "w\nINFO forged log line", "t\r", "\x1b[31mred", "a\x7f",
    "c1\x85next", "c1\x9b31m",                                    # C1: NEL, CSI
    "evil\u202etxt.exe", "x\u202ay", "x\u2066y", "x\u2069",        # bidi overrides, isolates
    "\u200b", "\u200b\u200c\u200d", "\ufeff", " ", "\u00ad\u2060",  # nothing visible
]


@pytest.mark.parametrize("value", REFUSED_NAMES)
@pytest.mark.parametrize("parse_one,field", NAMED)
def test_every_client_name_follows_one_character_rule(parse_one, field, value):
    with pytest.raises(ApiError) as e:
        parse_one(value)
    assert_bad(e.value, field)


@pytest.mark.parametrize("value", ["ジョブ-1", "a b", "zw\u200bj", "é", "a.b", "..."])
@pytest.mark.parametrize("parse_one,field", NAMED)
def test_visible_text_with_a_zero_width_char_inside_is_a_name(parse_one, field, value):
    parse_one(value)


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_and_dot_dot_are_no_job_ids(value):
    e = reg_err({"id": value})
    assert_bad(e, "id")
    assert "path" in e.message
    with pytest.raises(ApiError):
        parse.cancel(value)


def test_the_refusal_names_the_character_found():
    e = reg_err({"type": "a\u202eb"})
    assert "U+202E" in e.message and "bidirectional" in e.message
    assert "U+0000" in reg_err({"type": "\x00"}).message


def test_a_batch_marks_a_repeated_id_with_the_first_item_s_index():
    items = parse.batch({"jobs": [{"id": "a"}, {"id": 7}, {"id": "a", "priority": "x"},
                                  {"jobId": "a"}, {"id": "7"}, {}]},
                        max_batch_jobs=10, new_id=iter(["n1"]).__next__, max_retries=3,
                        execution_timeout=300, max_job_bytes=60000, publish=True)
    assert [i["id"] for i in (items[0], items[1], items[5])] == ["a", "7", "n1"]
    assert isinstance(items[2], ApiError)          # refused: neither first nor repeat
    assert (items[3].job_id, items[3].first) == ("a", 0)
    assert (items[4].job_id, items[4].first) == ("7", 1)   # 7 and "7" are one id
