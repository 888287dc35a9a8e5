"""The OpenAPI document (dqorch/openapi.py) is valid OpenAPI 3.1, names exactly the
routes make_app registers, and agrees with the code that parses requests (parse.py)
and renders responses (jobs.api_json, jobs.why, the error shape)."""
from __future__ import annotations

import ast
import io
import json
import re
import types
from pathlib import Path

import jsonschema
import pytest

from dqorch import api, jobs, openapi, parse
from dqorch import state as S
from dqorch.openapi import SPEC

PKG = Path(__file__).resolve().parents[2] / "dqorch"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
CONTRACT_CODES = {"invalid_json", "invalid_request", "not_found", "conflict",
                  "payload_too_large", "method_not_allowed", "unauthorized", "forbidden",
                  "unavailable", "internal"}


def operations():
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def validator(component: str) -> jsonschema.Draft202012Validator:
    """A JSON Schema 2020-12 validator for one component schema, its $refs resolved
    within the document."""
    root = {"$ref": f"#/components/schemas/{component}", "components": SPEC["components"]}
    jsonschema.Draft202012Validator.check_schema(root)
    return jsonschema.Draft202012Validator(root)


def valid(component: str, value) -> bool:
    return validator(component).is_valid(value)


# The document itself ########################################################

def test_document_is_json_and_openapi_3_1():
    assert json.loads(json.dumps(SPEC, allow_nan=False)) == SPEC
    assert SPEC["openapi"].startswith("3.1.")
    import schemathesis                      # a test dependency (setup.py extra "test")
    schemathesis.openapi.from_dict(SPEC).validate()   # against the OpenAPI 3.1 meta-schema


def test_document_passes_openapi_spec_validator():
    osv = pytest.importorskip("openapi_spec_validator")
    osv.validate(SPEC)


def test_every_ref_resolves_and_every_component_is_used():
    text = json.dumps(SPEC)
    refs = set(re.findall(r'"\$ref": "([^"]+)"', text))
    assert refs, "the document uses no $ref at all?"
    for ref in refs:
        assert ref.startswith("#/"), ref
        node = SPEC
        for part in ref[2:].split("/"):
            assert part in node, f"{ref}: no {part!r}"
            node = node[part]
    for kind in ("schemas", "responses"):
        for name in SPEC["components"][kind]:
            assert f"#/components/{kind}/{name}" in refs, f"unused component {kind}/{name}"


def test_every_operation_is_complete():
    ids = []
    for path, method, op in operations():
        ids.append(op["operationId"])
        codes = set(op["responses"])
        assert any(c.startswith("2") for c in codes), (method, path)
        assert "default" not in codes, "default would make any status conform"
        assert "500" in codes, (method, path)
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), (method, path)
        if "{" in path:                      # an id may make the path another route's
            assert {"404", "405"} <= codes, (method, path)
        if "requestBody" in op:              # read_body: 400 bad length, 413 too long
            assert {"400", "413"} <= codes, (method, path)
        for code, resp in op["responses"].items():
            resp = _deref(resp)
            assert list(resp["content"]) == ["application/json"], (method, path, code)
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def _deref(node):
    while "$ref" in node:
        ref = node["$ref"]
        node = SPEC
        for part in ref[2:].split("/"):
            node = node[part]
    return node


# Routes: the document and make_app name the same operations #################

def app_routes() -> set:
    svc = types.SimpleNamespace(cfg=types.SimpleNamespace(max_body_bytes=1 << 20,
                                                          max_batch_body_bytes=1 << 24))
    app = api.make_app(svc)
    out = set()
    for route in app.routes:
        path = re.sub(r"<(\w+)(?::[^>]*)?>", r"{\1}", route.rule)
        out.add((route.method.lower(), path))
    return out


def test_every_route_is_documented_and_every_documented_operation_is_a_route():
    routes = app_routes()
    documented = {(method, path) for path, method, _ in operations()}
    assert len(routes) >= 13
    assert routes - documented == set(), "routes missing from dqorch/openapi.py"
    assert documented - routes == set(), "documented operations that make_app lacks"


def test_the_route_serves_the_document():
    svc = types.SimpleNamespace(cfg=types.SimpleNamespace(max_body_bytes=1 << 20,
                                                          max_batch_body_bytes=1 << 24))
    app = api.make_app(svc)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/openapi.json",
               "SERVER_NAME": "t", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(b""), "QUERY_STRING": ""}
    body = b"".join(app(environ, start_response))
    assert seen["status"].startswith("200")
    assert seen["headers"]["Content-Type"].startswith("application/json")
    assert json.loads(body) == SPEC


# Errors #####################################################################

def test_error_codes_are_the_contracts():
    assert set(openapi.ERROR_CODES) == CONTRACT_CODES
    assert set(SPEC["components"]["schemas"]["Error"]["properties"]["error"]["enum"]) \
        == CONTRACT_CODES


def raised_errors() -> set:
    """(status, code) of every error the source can answer: ApiError(...) calls,
    bad() (400 invalid_request), api.py's `status, out = 503, {"error": ...}`, and
    the codes bottle's own errors are mapped to."""
    out = {(400, "invalid_request")}
    for f in PKG.rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ApiError" \
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                out.add((node.args[0].value, node.args[1].value))
            if isinstance(node, ast.Tuple) and len(node.elts) == 2 \
                    and isinstance(node.elts[0], ast.Constant) \
                    and isinstance(node.elts[0].value, int) \
                    and isinstance(node.elts[1], ast.Dict):
                d = node.elts[1]
                for k, v in zip(d.keys, d.values):
                    if isinstance(k, ast.Constant) and k.value == "error":
                        out.add((node.elts[0].value, v.value))
    out |= set(api._CODES.items())
    return out


def test_every_error_the_code_raises_is_documented_with_its_status():
    errors = raised_errors()
    assert {(400, "invalid_json"), (404, "not_found"), (409, "conflict"),
            (413, "payload_too_large"), (503, "unavailable"),
            (500, "internal")} <= errors, errors
    by_status = {"400": "BadRequest", "404": "NotFound", "405": "MethodNotAllowed",
                 "409": "Conflict", "413": "PayloadTooLarge", "503": "Unavailable",
                 "500": "Internal", "403": "Forbidden", "408": "RequestTimeout",
                 "411": "LengthRequired"}
    for status, code in errors:
        name = by_status.get(str(status))
        assert name, f"no documented response for status {status} ({code})"
        schema = SPEC["components"]["responses"][name]["content"]["application/json"]["schema"]
        root = dict(schema, components=SPEC["components"])
        assert jsonschema.Draft202012Validator(root).is_valid(
            {"error": code, "message": "m"}), (status, code)
        assert not jsonschema.Draft202012Validator(root).is_valid({"error": code}), \
            "message is required"


def test_the_error_body_with_a_field_matches():
    from dqorch.errors import bad
    body = bad("priority", "x").body()
    assert body["field"] == "priority" and valid("Error", body)
    assert not valid("Error", dict(body, error="oops"))


# Requests: the schemas agree with parse.py ##################################

def fields_read(func) -> set:
    """Every body/query key a parse function reads: _first(body, (...)) spellings,
    body.get("k"), body["k"], "k" in body, and `for key in (...)` over query keys;
    and those of the parse functions it hands the body to (f(body))."""
    src = ast.parse(Path(parse.__file__).read_text())
    funcs = {n.name: n for n in src.body if isinstance(n, ast.FunctionDef)}
    out = set()
    for node in ast.walk(funcs[func]):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in funcs \
                and node.args and getattr(node.args[0], "id", None) == "body" \
                and node.func.id not in ("_first", func):
            out |= fields_read(node.func.id)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_first":
            out |= {e.value for e in node.args[1].elts}
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_query_int" \
                and isinstance(node.args[1], ast.Constant):
            out.add(node.args[1].value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "get" and getattr(node.func.value, "id", None) in (
                    "body", "query") and isinstance(node.args[0], ast.Constant):
            out.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", None) in (
                "body", "query") and isinstance(node.slice, ast.Constant):
            out.add(node.slice.value)
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) \
                and isinstance(node.ops[0], ast.In) \
                and getattr(node.comparators[0], "id", None) == "body":
            out.add(node.left.value)
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
            out |= {e.value for e in node.iter.elts if isinstance(e, ast.Constant)}
    return out


def schema_properties(name: str) -> set:
    s = SPEC["components"]["schemas"][name]
    props = set(s.get("properties", {}))
    for part in s.get("allOf", []):
        if "$ref" in part:
            props |= schema_properties(part["$ref"].rsplit("/", 1)[1])
        props |= set(part.get("properties", {}))
    return props


@pytest.mark.parametrize("func, schema", [("register", "RegisterRequest"),
                                          ("report", "ReportWithIdRequest"),
                                          ("heartbeat", "HeartbeatRequest")])
def test_request_schemas_name_every_spelling_parse_reads(func, schema):
    read = fields_read(func)
    assert len(read) >= 5, read
    assert read == schema_properties(schema)


def test_list_query_parameters_are_the_ones_parse_reads():
    params = {p["name"] for p in SPEC["paths"]["/api/jobs"]["get"]["parameters"]}
    assert fields_read("list_query") | fields_read("list_where") == params


def _parse(func, body):
    try:
        if func == "register":
            parse.register(body, new_id=lambda: "new", max_retries=3,
                           execution_timeout=300, max_job_bytes=60000, publish=True)
        elif func == "report":
            parse.report(body, None, max_retries=3, execution_timeout=300)
        else:
            parse.heartbeat(body)
        return True
    except parse.ApiError:
        return False


CASES = [
    ("register", {}),
    ("register", {"jobId": "a", "type": "t", "priority": "HIGH", "payload": None,
                  "maxRetries": 5, "executionTimeout": 60, "metadata": {"a": 1, "b": None},
                  "createdAt": 1700000000000}),
    ("register", {"id": None, "jobId": None, "job_id": 17, "type": None, "priority": None,
                  "payload": {"x": [1]}, "max_retries": None, "timeout": 1}),
    ("register", {"priority": 7}), ("register", {"priority": 7.9}),
    ("register", {"priority": " 12 "}), ("register", {"priority": "2.5"}),
    ("register", {"priority": "cRiTiCaL"}), ("register", {"priority": -1000000}),
    ("register", {"priority": "urgent"}), ("register", {"priority": True}),
    ("register", {"priority": [5]}), ("register", {"priority": 1000001}),
    ("register", {"payload": [1]}), ("register", {"payload": "x"}),
    ("register", {"id": ""}), ("register", {"id": "a\nb"}), ("register", {"id": "x" * 257}),
    ("register", {"id": 1.5}), ("register", {"id": True}),
    ("register", {"type": ""}), ("register", {"type": 5}),
    ("register", {"maxRetries": 101}), ("register", {"max_retries": -1}),
    ("register", {"maxRetries": "3"}), ("register", {"executionTimeout": 0}),
    ("register", {"timeout": 604801}), ("register", {"metadata": {"a": {"b": 1}}}),
    ("register", {"metadata": [1]}), ("register", {"createdAt": {"a": 1}}),
    ("register", {"created_at": True}), ("register", {"unknown": {"anything": 1}}),
    ("report", {"jobId": "j", "status": "running"}),
    ("report", {"job_id": "j", "status": " In-Progress ", "workerId": "w", "progress": 0}),
    ("report", {"id": 5, "status": "DONE", "result": [1, None], "error_message": "e"}),
    ("report", {"jobId": None, "id": "j", "status": "error", "errorMessage": None}),
    ("report", {"status": "running"}), ("report", {"jobId": None, "status": "running"}),
    ("report", {"jobId": "j"}), ("report", {"jobId": "j", "status": "paused"}),
    ("report", {"jobId": "j", "status": 1}), ("report", {"jobId": "j", "status": "done",
                                                         "progress": 101}),
    ("report", {"jobId": "j", "status": "done", "workerId": ""}),
    ("report", {"jobId": "j", "status": "done", "errorMessage": 5}),
    ("heartbeat", {"workerId": "w"}),
    ("heartbeat", {"worker_id": "w", "workerType": "py", "capacity": 0, "currentLoad": -3,
                   "cpuUsage": 0.5, "timestamp": "now"}),
    ("heartbeat", {}), ("heartbeat", {"workerId": None}), ("heartbeat", {"workerId": ""}),
    ("heartbeat", {"workerId": "w", "capacity": -1}),
    ("heartbeat", {"workerId": "w", "current_load": 1.5}),
    ("heartbeat", {"workerId": "w", "worker_type": "x" * 129}),
]


@pytest.mark.parametrize("func, body", CASES)
def test_request_schema_accepts_exactly_what_parse_accepts(func, body):
    schema = {"register": "RegisterRequest", "report": "ReportWithIdRequest",
              "heartbeat": "HeartbeatRequest"}[func]
    assert valid(schema, body) == _parse(func, body), (func, body)


def test_cases_cover_both_outcomes():
    outcomes = {(f, _parse(f, b)) for f, b in CASES}
    assert outcomes == {(f, ok) for f in ("register", "report", "heartbeat")
                        for ok in (True, False)}


def test_report_status_pattern_is_every_alias_in_any_case():
    v = validator("ReportStatusIn")
    for alias in jobs.REPORT_ALIASES:
        for s in (alias, alias.upper(), f"  {alias.title()} "):
            assert v.is_valid(s), s
    for s in ("", "paused", "runningx", "xdone", "RUNNING\x00"):
        assert not v.is_valid(s), s


# Responses: the schemas agree with what the code renders ####################

T0 = 1_700_000_000_000


def _state_with_every_status():
    st = S.State()

    def run(cmd, at):
        cmd["at_ms"] = at
        return S.apply(st, cmd)

    def reg(id_, **body):
        run(parse.register(dict(body, id=id_), new_id=None, max_retries=3,
                           execution_timeout=300, max_job_bytes=60000, publish=True), T0)

    def rep(id_, status, at, **body):
        run(parse.report(dict(body, jobId=id_, status=status, workerId="w1"), None,
                         max_retries=3, execution_timeout=300), at)

    for id_ in ("pending", "queued", "running", "completed", "failed", "cancelled",
                "retrying"):
        reg(id_, priority="HIGH", payload={"n": 1}, metadata={"m": None},
            createdAt="2026-01-01", maxRetries=0 if id_ == "failed" else 3)
    run({"op": "mark_queued", "items": [["queued", 0]]}, T0 + 1)
    rep("running", "running", T0 + 2, progress=30)
    rep("completed", "running", T0 + 2)
    rep("completed", "completed", T0 + 3, result=[1, "x"])
    rep("failed", "running", T0 + 2)
    rep("failed", "failed", T0 + 3, errorMessage="boom")
    rep("retrying", "running", T0 + 2)
    rep("retrying", "failed", T0 + 3)
    run(parse.cancel("cancelled"), T0 + 4)
    rep("reported-first", "done", T0 + 5, result=None)
    reg("scheduled", delay=60)
    reg("waiting", depends_on=["pending"], on_parent_failure="run")
    return st


def wire(value):
    """What the API sends: the raw fields spliced in, read back as JSON."""
    return json.loads(jobs.dumps(value))


def test_job_json_of_every_status_matches_the_document():
    st = _state_with_every_status()
    seen = set()
    for job in st.jobs.values():
        seen.add(job["status"])
        detail = wire(jobs.api_json(job, full=True, history=True))
        detail["why"] = jobs.why(job, T0 + 10_000, None, 1)
        errors = [e.message for e in validator("JobDetail").iter_errors(detail)]
        assert not errors, (job["id"], errors)
        listed = wire(jobs.api_json(job, full=False))
        assert valid("Job", listed) and not valid("JobDetail", listed)
        assert valid("Job", wire(jobs.api_json(job, full=True)))
    assert seen == set(jobs.STATUSES)
    page, count, nxt = S.list_jobs(st, {}, 3, None)
    body = {"jobs": [wire(jobs.api_json(j)) for j in page], "count": count, "returned": len(page),
            "next": None if nxt is None else str(nxt)}
    assert valid("JobList", body) and body["next"] is not None


def test_job_schema_lists_exactly_the_fields_api_json_may_render():
    props = set(SPEC["components"]["schemas"]["Job"]["properties"])
    assert props == set(jobs.API_FIELDS) | {"progress", "client_created_at", "run_at",
                                            "depends_on", "on_parent_failure"}
    assert set(openapi.JOB_REQUIRED) == set(jobs.API_FIELDS) - set(jobs.LIST_OMITS)
    assert SPEC["components"]["schemas"]["HistoryItem"]["required"] == list(jobs.HISTORY_KEYS[:4])
    assert list(SPEC["components"]["schemas"]["HistoryItem"]["properties"]) == \
        list(jobs.HISTORY_KEYS)


def test_job_schema_rejects_what_the_contract_forbids():
    st = _state_with_every_status()
    good = wire(jobs.api_json(st.jobs["running"], full=True, history=True))
    good["why"] = "w"
    assert valid("JobDetail", good)
    for key, bad_value in (("status", "undefined"), ("worker_id", 5),
                           ("created_at", "2026-01-01"), ("queue", "job.urgent"),
                           ("retry_count", -1), ("history", [{"at": 1}])):
        assert not valid("JobDetail", dict(good, **{key: bad_value})), key
    for key in ("why", "history", "payload", "started_at"):
        assert not valid("JobDetail", {k: v for k, v in good.items() if k != key}), key


def test_worker_listing_matches_the_document():
    from dqorch.workers import WorkerTable
    now = [T0]
    table = WorkerTable(30, lambda: now[0])
    table.heartbeat(parse.heartbeat({"workerId": "w1", "currentLoad": -2, "cpu": 0.1}))
    table.heartbeat(parse.heartbeat({"worker_id": "w2", "workerType": "java"}))
    now[0] += 60_000
    table.heartbeat(parse.heartbeat({"workerId": "w2"}))
    listing = table.listing({"w1": 2})
    assert {w["status"] for w in listing} == {"active", "unresponsive"}
    assert valid("WorkerList", {"workers": listing, "count": len(listing),
                                "returned": len(listing), "next": None})
    page, count, last = table.page({}, 1)
    assert valid("WorkerList", {"workers": page, "count": count, "returned": len(page),
                                "next": parse.worker_cursor(last)})
    assert not valid("WorkerList", {"workers": listing, "count": len(listing)})
    counts = table.counts()
    assert valid("Metrics", {"jobs": {}, "queues": {}, "workers": counts, "timestamp": T0,
                             "raft": {"role": "leader", "term": 1, "leader": "n",
                                      "commit_index": 0, "applied_index": 0,
                                      "last_log_index": 0}})
