"""dqorch.client and dqctl without a node: answers mapped to errors and exit codes,
URLs, requests as sent (through a transport function), and the tables. The CLI
against a real node: tests/integration/test_cli.py."""
import io
import json

import pytest

from dqorch import client as C
from dqorch import ctl
from dqorch.config import Config

NOW = 1_800_000_000_000


# Answers -> errors -> exit codes ##########################################################

@pytest.mark.parametrize("status,body,cls,code", [
    (404, {"error": "not_found", "message": "no job 'x'"}, C.NotFound, ctl.EXIT_NOT_FOUND),
    (404, {"error": "not_found", "message": "no such path"}, C.MissingRoute,
     ctl.EXIT_NO_ROUTE),
    (405, {"error": "method_not_allowed", "message": "method not allowed"}, C.MissingRoute,
     ctl.EXIT_NO_ROUTE),
    (404, b"<html>Not Found</html>", C.MissingRoute, ctl.EXIT_NO_ROUTE),   # a proxy's page
    (409, {"error": "conflict", "message": "job is already completed"}, C.Conflict,
     ctl.EXIT_CONFLICT),
    (401, {"error": "unauthorized", "message": "a token"}, C.Unauthorized, ctl.EXIT_AUTH),
    (403, {"error": "forbidden", "message": "read-only"}, C.Unauthorized, ctl.EXIT_AUTH),
    (503, {"error": "unavailable", "message": "starting"}, C.Unavailable,
     ctl.EXIT_UNAVAILABLE),
    (400, {"error": "invalid_request", "message": "limit: bad", "field": "limit"},
     C.ApiError, ctl.EXIT_ERROR),
    (500, {"error": "internal"}, C.ApiError, ctl.EXIT_ERROR),
    (502, b"Bad Gateway", C.ApiError, ctl.EXIT_ERROR),
])
def test_an_error_answer_is_a_named_error_with_its_exit_code(status, body, cls, code):
    e = C.error_for(status, body, "GET /api/jobs/{id}")
    assert type(e) is cls and e.status == status and e.route == "GET /api/jobs/{id}"
    assert ctl.exit_code(e) == code


def test_an_error_keeps_the_answers_code_message_and_field():
    e = C.error_for(400, {"error": "invalid_request", "message": "limit: must be 1-10000",
                          "field": "limit"}, "GET /api/jobs")
    assert (e.code, e.message, e.field) == ("invalid_request", "limit: must be 1-10000",
                                            "limit")
    assert str(e) == "400 invalid_request: limit: must be 1-10000 (field limit)"
    text = C.error_for(502, b"  Bad\n  Gateway ", "GET /api/jobs")
    assert (text.code, text.message) == ("http_502", "Bad Gateway")


def test_a_missing_route_names_the_route():
    e = C.error_for(405, {"error": "method_not_allowed", "message": "x"},
                    "DELETE /api/jobs/{id}")
    assert "DELETE /api/jobs/{id}" in str(e) and "newer dqorch" in str(e)


def test_no_answer_is_exit_4_and_anything_else_exit_1():
    assert ctl.exit_code(C.Unreachable("cannot reach")) == ctl.EXIT_UNREACHABLE
    assert ctl.exit_code(C.ClientError("x")) == ctl.EXIT_ERROR


def test_the_exit_codes_are_distinct_and_documented():
    codes = [v for k, v in vars(ctl).items() if k.startswith("EXIT_")]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert f"{code} " in ctl.EPILOG


# Addresses ###################################################################################

@pytest.mark.parametrize("url,parts", [
    ("http://127.0.0.1:8081", ("http", "127.0.0.1", 8081, "")),
    ("127.0.3.1:9000", ("http", "127.0.3.1", 9000, "")),
    ("https://dq.example/", ("https", "dq.example", 443, "")),
    ("https://dq.example:8443/dq/", ("https", "dq.example", 8443, "/dq")),
    ("http://[::1]:8081", ("http", "::1", 8081, "")),
])
def test_urls(url, parts):
    assert C.split_url(url) == parts


@pytest.mark.parametrize("url", ["ftp://h:1", "http://:8081", "http://h:99999",
                                 "http://h:1/?x=1", "http://u:p@h:1"])
def test_bad_urls_are_refused(url):
    with pytest.raises(ValueError):
        C.split_url(url)


@pytest.mark.parametrize("http_host,api,health", [
    ("127.0.0.1", "http://127.0.0.1:8081", "http://127.0.0.1:9101/health"),
    ("127.0.3.1", "http://127.0.3.1:8081", "http://127.0.3.1:9101/health"),
    ("0.0.0.0", "http://127.0.0.1:8081", "http://127.0.0.1:9101/health"),
    ("::", "http://[::1]:8081", "http://[::1]:9101/health"),
    ("::1", "http://[::1]:8081", "http://[::1]:9101/health"),
    ("10.0.0.5", "http://10.0.0.5:8081", "http://10.0.0.5:9101/health"),
])
def test_a_node_is_reached_where_it_listens(http_host, api, health):
    assert C.local_urls(Config(http_host=http_host)) == {"api": api, "health": health}


def test_a_node_with_tls_is_reached_over_https_and_probed_over_http():
    urls = C.local_urls(Config(tls_cert_file="c.pem", tls_key_file="k.pem", http_port=8443))
    assert urls == {"api": "https://127.0.0.1:8443", "health": "http://127.0.0.1:9101/health"}


# Requests as sent ##########################################################################

class Transport:
    """Answers in order, and what was asked."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    def __call__(self, method, path, raw, headers):
        self.sent.append((method, path, None if raw is None else json.loads(raw), headers))
        status, body = self.answers.pop(0)
        return status, body if isinstance(body, bytes) else json.dumps(body).encode()


def test_ids_are_quoted_into_paths_and_the_token_is_sent():
    t = Transport((200, {"status": "cancelled"}))
    c = C.Client("http://h:1/base", token="s" * 20, transport=t)
    c.cancel("a b?#%")
    method, path, body, headers = t.sent[0]
    assert (method, path, body) == ("POST", "/base/api/jobs/a%20b%3F%23%25/cancel", None)
    assert headers["Authorization"] == "Bearer " + "s" * 20


def test_no_token_no_authorization_header():
    t = Transport((200, {"workers": [], "count": 0, "returned": 0, "next": None}))
    C.Client("http://h:1", transport=t).workers()
    assert "Authorization" not in t.sent[0][3]


def test_listing_filters_become_the_query_and_pages_are_followed():
    t = Transport((200, {"jobs": [{"id": "a"}, {"id": "b"}], "count": 3, "returned": 2,
                         "next": "17"}),
                  (200, {"jobs": [{"id": "c"}], "count": 3, "returned": 1, "next": None}))
    c = C.Client("http://h:1", transport=t)
    assert [j["id"] for j in c.iter_jobs(status="failed", worker_id="w 1", limit=2,
                                         full=True)] == ["a", "b", "c"]
    assert [s[1] for s in t.sent] == [
        "/api/jobs?status=failed&worker_id=w+1&limit=2&full=1",
        "/api/jobs?status=failed&worker_id=w+1&limit=2&cursor=17&full=1"]


def test_retry_matching_sends_only_the_filters_given():
    t = Transport((202, {"retried": 4}))
    assert C.Client("http://h:1", transport=t).retry_matching(type="email", limit=10) == 4
    assert t.sent[0][:3] == ("POST", "/api/jobs/retry", {"type": "email", "limit": 10})


def test_health_answers_503_as_a_state_not_an_error():
    t = Transport((503, {"status": "unavailable", "message": "starting: ..."}))
    assert C.Client("http://h:1", transport=t).health()["status"] == "unavailable"
    t = Transport((503, {"error": "unavailable", "message": "no leader"}))
    with pytest.raises(C.Unavailable):
        C.Client("http://h:1", transport=t).job("x")


def test_the_routes_not_every_node_has_are_named_when_missing():
    calls = [("discard", ("j",), "DELETE /api/jobs/{id}"),
             ("forget_worker", ("w",), "DELETE /api/workers/{id}"),
             ("queues", (), "GET /api/queues"),
             ("pause_queue", ("job.low",), "POST /api/queues/{queue}/pause"),
             ("resume_queue", ("job.low",), "POST /api/queues/{queue}/resume"),
             ("schedules", (), "GET /api/schedules")]
    for name, args, route in calls:
        t = Transport((404, {"error": "not_found", "message": "no such path"}))
        with pytest.raises(C.MissingRoute) as e:
            getattr(C.Client("http://h:1", transport=t), name)(*args)
        assert e.value.route == route
        method, path = route.split(" ")
        assert t.sent[0][0] == method and t.sent[0][1].startswith(path.split("{")[0])


def test_a_2xx_that_is_not_json_is_an_error():
    t = Transport((200, b"<html>hi</html>"))
    with pytest.raises(C.InvalidAnswer, match="not JSON"):
        C.Client("http://h:1", transport=t).metrics()


def test_from_env():
    c = C.Client.from_env({"DQ_URL": "http://10.1.1.1:9000", "DQ_TOKEN": "x" * 16})
    assert (c.url, c.token) == ("http://10.1.1.1:9000", "x" * 16)
    assert C.Client.from_env({}).url == C.DEFAULT_URL


# Tables ######################################################################################

def test_cells():
    assert ctl.cell(None) == "-" and ctl.cell(5) == "5" and ctl.cell(True) == "true"
    assert ctl.cell({"a": [1, 2]}) == '{"a":[1,2]}'
    assert ctl.cell("ok  text") == "ok  text"


def test_cells_escape_what_a_terminal_would_act_on():
    assert ctl.cell("a\x1b[31mred\n") == "a\\x1b[31mred\\x0a"
    assert ctl.cell("x\u202egnp.exe") == "x\\u202egnp.exe"
    assert ctl.cell("é ü 日本") == "é ü 日本"


def test_table_aligns_columns_without_trailing_spaces():
    text = ctl.table(["id", "status"], [["a-long-id", "queued"], ["b", None]])
    assert text.splitlines() == ["ID         STATUS", "a-long-id  queued", "b          -"]
    assert ctl.table(None, [["k", "v"], ["key", ""]]).splitlines() == ["k    v", "key"]
    assert ctl.table(["a", "b"], []) == "A  B"


@pytest.mark.parametrize("ago_ms,text", [(0, "0s ago"), (59_999, "59s ago"),
                                         (60_000, "1m ago"), (3_600_000, "1h ago"),
                                         (2 * 86_400_000 + 5, "2d ago"), (-5000, "0s ago")])
def test_age(ago_ms, text):
    assert ctl.age(NOW - ago_ms, NOW) == text


def test_age_and_utc_of_nothing():
    assert ctl.age(None, NOW) == ctl.utc(None) == ctl.age(True, NOW) == "-"
    assert ctl.utc(0) == "1970-01-01 00:00:00 UTC"


def test_jobs_table():
    lines = ctl.jobs_table([{"id": "j1", "type": "email", "status": "failed",
                             "queue": "job.high", "priority": 10, "worker_id": "w1",
                             "retry_count": 3, "max_retries": 3,
                             "created_at": NOW - 120_000}], NOW).splitlines()
    assert lines[0].split() == ["ID", "TYPE", "STATUS", "QUEUE", "PRIO", "WORKER", "TRIES",
                                "CREATED"]
    assert lines[1].split() == ["j1", "email", "failed", "job.high", "10", "w1", "3/3",
                                "2m", "ago"]


def test_job_text_has_its_fields_payload_and_history():
    text = ctl.job_text({"id": "j1", "status": "completed", "why": "completed",
                         "payload": {"to": "a@b"}, "result": None, "created_at": NOW,
                         "completed_at": None,
                         "history": [{"at": 0, "status": "pending", "by": "api",
                                      "reason": "registered"}]}, NOW)
    fields = dict(line.split(None, 1) for line in text.split("\n\n")[0].splitlines())
    assert fields["id"] == "j1" and fields["payload"] == '{"to":"a@b"}'
    assert "result" not in fields                    # nothing to show
    assert fields["completed_at"] == "-"
    assert fields["created_at"] == ctl.utc(NOW) + " (0s ago)"
    assert "1970-01-01 00:00:00 UTC  pending  api  registered" in text


def test_workers_table():
    lines = ctl.workers_table([{"worker_id": "w1", "worker_type": "python",
                                "status": "active", "capacity": 4, "current_load": 1,
                                "running_jobs": 2, "last_heartbeat": NOW - 3000}],
                              NOW).splitlines()
    assert lines[1].split() == ["w1", "python", "active", "1/4", "2", "3s", "ago"]


def test_members_table_marks_the_leader():
    text = ctl.members_table({"leader": "b@h2", "members": [
        {"node": "a@h1", "role": "follower", "member": "voter", "api": None,
         "last_contact_ms": 40, "match_index": 7, "caught_up": True},
        {"node": "b@h2", "role": "leader", "member": "voter", "api": "h2:8081",
         "last_contact_ms": None, "match_index": None, "caught_up": True}]})
    rows = [line.split() for line in text.splitlines()[1:]]
    assert rows[0] == ["a@h1", "follower", "voter", "-", "40", "ms", "7", "true"]
    assert rows[1][:3] == ["b@h2", "*", "leader"]


@pytest.mark.parametrize("answer", [
    {"queues": [{"name": "job.high", "messages": 3, "consumers": 1, "paused": False}]},
    {"queues": {"job.high": {"messages": 3, "consumers": 1, "paused": False}}},
    [{"consumers": 1, "name": "job.high", "messages": 3, "paused": False}],
])
def test_queues_in_any_reasonable_shape_make_one_table(answer):
    lines = ctl.generic_table(ctl.listed(answer, "queues"),
                              ("name", "paused", "messages", "consumers")).splitlines()
    assert lines[0].split() == ["NAME", "PAUSED", "MESSAGES", "CONSUMERS"]
    assert lines[1].split() == ["job.high", "false", "3", "1"]


def test_status_text_says_what_is_wrong():
    text = ctl.status_text(
        {"node": "n@h", "status": "degraded", "checks": {
            "role": {"ok": True}, "broker": {"ok": False, "connected": False,
                                             "error": "connection refused"}}},
        {"role": "leader", "term": 3, "leader": "n@h", "commit_index": 9,
         "applied_index": 9},
        {"jobs": {"queued": 2, "failed": 1}, "workers": {"active": 1, "unresponsive": 0}})
    lines = dict(line.split(None, 1) for line in text.splitlines())
    assert lines["status"] == "degraded"
    assert lines["raft"] == "leader term 3, leader n@h, commit 9, applied 9"
    assert lines["broker"] == "disconnected, connection refused"
    assert lines["jobs"] == "failed 1, queued 2"
    assert lines["checks"] == "broker: connection refused"


# The command line without a node #############################################################

def run(argv, env=None):
    out, err = io.StringIO(), io.StringIO()
    try:
        code = ctl.run(argv, env=env or {}, out=out, err=err)
    except SystemExit as e:
        code = e.code
    return code, out.getvalue(), err.getvalue()


def test_retry_needs_an_id_or_matching_not_both(capsys):
    assert run(["jobs", "retry"])[0] == ctl.EXIT_USAGE
    assert run(["jobs", "retry", "j1", "--matching"])[0] == ctl.EXIT_USAGE
    assert "--matching" in capsys.readouterr().err


def test_probe_needs_a_config(capsys):
    assert run(["probe"])[0] == ctl.EXIT_USAGE
    assert "--config" in capsys.readouterr().err


def test_a_bad_url_or_config_is_a_usage_error(tmp_path, capsys):
    assert run(["--url", "ftp://x:1", "status"])[0] == ctl.EXIT_USAGE
    assert "--url" in capsys.readouterr().err
    bad = tmp_path / "c.yaml"
    bad.write_text("http_port: 70000\n")
    assert run(["-c", str(bad), "status"])[0] == ctl.EXIT_USAGE
    assert "http_port" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    assert run(["frobnicate"])[0] == ctl.EXIT_USAGE
