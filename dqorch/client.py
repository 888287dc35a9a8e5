"""A client of dqorch's JSON API (docs/API.md) for Python programs and `dqctl`.

Only the stdlib (http.client, ssl, json): it needs neither gevent nor the rest of
dqorch, and works from any Python 3.11 with dqorch installed.

    from dqorch.client import Client, NotFound
    c = Client("http://127.0.0.1:8081", token=None)      # or Client.from_env()
    c.register({"id": "job-1", "type": "email", "payload": {"to": "a@b"}})
    for job in c.iter_jobs(status="failed"):
        c.retry(job["id"])

One keep-alive connection per Client; not thread-safe (one Client per thread or
greenlet). Every failure is a ClientError: Unreachable when no answer came, an
ApiError (or one of its subclasses) when the node answered an error. Each ApiError
carries the answer's `status`, `code`, `message` and `field` (CONTRACT.md's error
shape). MissingRoute means the node does not have that route (a node older than this
client): the routes `discard`, `forget_worker`, `queues`, `pause_queue`,
`resume_queue` and `schedules` use are documented but not served by every node yet.
"""
from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.parse
from typing import Any, Iterator

DEFAULT_URL = "http://127.0.0.1:8081"
DEFAULT_TIMEOUT_S = 30.0
# api.py answers a path it has no route for with this message (a 404 with the job's
# id in it means the route exists and the job does not).
UNKNOWN_PATH_MESSAGE = "no such path"


# Errors ######################################################################

class ClientError(Exception):
    """Anything that went wrong talking to a node."""


class Unreachable(ClientError):
    """No answer: the connection was refused, timed out or broke, or TLS failed."""


class ApiError(ClientError):
    """The node answered with an error status (CONTRACT.md's error shape)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 route: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.route = route              # "DELETE /api/jobs/{id}": what was asked

    def __str__(self) -> str:
        field = f" (field {self.field})" if self.field else ""
        return f"{self.status} {self.code}: {self.message}{field}"


class NotFound(ApiError):
    """404: no such job, worker, queue or member."""


class Conflict(ApiError):
    """409: the thing is not in a state that allows it (cancel a finished job)."""


class Unauthorized(ApiError):
    """401 (no valid token) or 403 (a read-only token on a write, an address outside
    allow_from, a cross-site write)."""


class Unavailable(ApiError):
    """503: starting, stopping, no leader, or overloaded; retrying later is safe."""


class InvalidAnswer(ApiError):
    """A 2xx whose body is not JSON: not a dqorch node (a proxy's page?)."""


class MissingRoute(ApiError):
    """404 or 405 for the route itself: this node does not serve it (yet)."""

    def __str__(self) -> str:
        return (f"this node has no route {self.route} ({self.status} {self.code}); "
                f"it needs a newer dqorch")


_BY_STATUS = {401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict,
              503: Unavailable}


def error_for(status: int, body: Any, route: str) -> ApiError:
    """The ApiError for an error answer: `body` is the decoded JSON (or the raw bytes
    when it was not JSON), `route` names what was asked ("GET /api/jobs/{id}").

    Pure. A 405, a 404 whose message is api.py's for an unknown path, and a 404 that
    is not in the error shape (a proxy's page) are MissingRoute."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code, message = body["error"], str(body.get("message", ""))
        field = body.get("field") if isinstance(body.get("field"), str) else None
    else:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        code, message, field = "http_%d" % status, " ".join(text.split())[:200], None
        if status == 404:
            return MissingRoute(status, code, message, None, route)
    if status == 405 or (status == 404 and message == UNKNOWN_PATH_MESSAGE):
        return MissingRoute(status, code, message, field, route)
    return _BY_STATUS.get(status, ApiError)(status, code, message, field, route)


# Addresses ###################################################################

def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, base path) of a node's URL; a bare `host:port` is http.
    ValueError naming what is wrong. Pure."""
    if "://" not in url:
        url = "http://" + url
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the scheme must be http or https")
    if not u.hostname:
        raise ValueError(f"{url!r}: no host")
    if u.query or u.fragment or u.username:
        raise ValueError(f"{url!r}: give only scheme://host:port[/path]")
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number 1-65535") from None
    return u.scheme, u.hostname, port, u.path.rstrip("/")


def url_host(host: str) -> str:
    """`host` as it goes in a URL: an IPv6 address in brackets. Pure."""
    return f"[{host}]" if ":" in host else host


def local_host(http_host: str) -> str:
    """Where a process on the same machine reaches a node listening on `http_host`:
    the wildcard addresses by loopback of the same family, any other host as it is
    (a node on 127.0.3.1 is not on 127.0.0.1). Pure."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(http_host, http_host)


def local_urls(cfg) -> dict:
    """The URLs of the node a config (dqorch.config.Config) describes, from its own
    machine: `api` (https when it has tls_cert_file) and `health` (the metrics port's
    /health, always plain http). Pure."""
    host = url_host(local_host(cfg.http_host))
    scheme = "https" if cfg.tls_cert_file else "http"
    return {"api": f"{scheme}://{host}:{cfg.http_port}",
            "health": f"http://{host}:{cfg.metrics_port}/health"}


# The client ##################################################################

def _q(part: str) -> str:
    return urllib.parse.quote(str(part), safe="")


def _query(params: dict) -> str:
    kept = {k: v for k, v in params.items() if v is not None and v is not False}
    return "?" + urllib.parse.urlencode({k: ("1" if v is True else v) for k, v in kept.items()}) \
        if kept else ""


class Client:
    """The API of one node. `url`: `http(s)://host:port[/prefix]`; `token`: sent as
    `Authorization: Bearer` (api_tokens); `cafile`: CAs for an https node whose
    certificate the system does not trust; `verify=False` skips checking it (for a
    node on this machine only). `transport(method, path, body bytes or None, headers)
    -> (status, body bytes)` replaces the network (tests)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, cafile: str | None = None,
                 verify: bool = True, transport=None) -> None:
        self.scheme, self.host, self.port, self.base = split_url(url)
        self.url = f"{self.scheme}://{url_host(self.host)}:{self.port}{self.base}"
        self.token = token or None
        self.timeout_s = timeout_s
        self._tls = None
        if self.scheme == "https":
            self._tls = ssl.create_default_context(cafile=cafile) if verify \
                else ssl._create_unverified_context()
        self._conn: http.client.HTTPConnection | None = None
        self._transport = transport or self._send

    @classmethod
    def from_env(cls, env=None, **kw) -> "Client":
        """A Client for $DQ_URL (default http://127.0.0.1:8081) with $DQ_TOKEN."""
        env = os.environ if env is None else env
        return cls(env.get("DQ_URL") or DEFAULT_URL, token=env.get("DQ_TOKEN"), **kw)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # One request ---------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, route: str = "",
             ok: tuple = ()) -> tuple[int, Any]:
        """Send one request; (status, decoded JSON) for a 2xx or a status in `ok`,
        else raise ApiError. `path` starts with /api and is already quoted; `route`
        names it in errors (default: method and path)."""
        route = route or f"{method} {path.split('?')[0]}"
        raw = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if raw is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        status, data = self._transport(method, self.base + path, raw, headers)
        try:
            decoded = json.loads(data) if data else None
        except ValueError:
            decoded = data
        if 200 <= status < 300 or status in ok:
            if data and decoded is data:
                raise InvalidAnswer(status, "invalid_answer", f"the answer is not JSON: "
                                    f"{data[:100]!r}", None, route)
            return status, decoded
        raise error_for(status, decoded, route)

    def _send(self, method: str, path: str, raw: bytes | None, headers: dict):
        for attempt in (1, 2):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout_s, context=self._tls) \
                    if self._tls else http.client.HTTPConnection(
                        self.host, self.port, timeout=self.timeout_s)
            try:
                self._conn.request(method, path, body=raw, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                # A keep-alive connection the node closed while idle: the request
                # never reached it. Only a read is sent again.
                if attempt == 1 and reused and method == "GET" and isinstance(
                        e, (ConnectionError, http.client.RemoteDisconnected)):
                    continue
                raise Unreachable(self._why(e)) from None
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, data

    def _why(self, e: Exception) -> str:
        what = {ConnectionRefusedError: "connection refused", TimeoutError:
                f"no answer within {self.timeout_s:g} s"}.get(type(e))
        if what is None:
            what = e.strerror if isinstance(e, OSError) and e.strerror else \
                (str(e) or type(e).__name__)
        return f"cannot reach {self.url}: {what}"

    def _get(self, path: str, route: str = "") -> Any:
        return self.call("GET", path, route=route)[1]

    # The node --------------------------------------------------------------------

    def health(self) -> dict:
        """GET /api/health: `status` is healthy, degraded or unavailable (a 503 is
        an answer here, not an error)."""
        return self.call("GET", "/api/health", ok=(503,))[1]

    def raft_status(self) -> dict:
        return self._get("/api/raft/status")

    def metrics(self) -> dict:
        """GET /api/metrics: jobs by status and queue, workers, raft, broker."""
        return self._get("/api/metrics")

    def cluster_status(self) -> dict:
        return self._get("/api/cluster/status")

    # Jobs ------------------------------------------------------------------------

    def register(self, job: dict) -> str:
        """POST /api/jobs/register; the job's id (a new one when `job` has none)."""
        return self.call("POST", "/api/jobs/register", job)[1]["job_id"]

    def jobs(self, status: str | None = None, type: str | None = None,
             worker_id: str | None = None, queue: str | None = None,
             limit: int | None = None, cursor: str | None = None,
             full: bool = False) -> dict:
        """One page of GET /api/jobs (newest first): {"jobs","count","returned","next"}."""
        return self._get("/api/jobs" + _query(dict(
            status=status, type=type, worker_id=worker_id, queue=queue, limit=limit,
            cursor=cursor, full=full)), "GET /api/jobs")

    def iter_jobs(self, **filters) -> Iterator[dict]:
        """Every job matching the filters of `jobs()`, following `next`."""
        return self._pages(self.jobs, "jobs", filters)

    def job(self, job_id: str) -> dict:
        """GET /api/jobs/{id}: the job with its history and `why`; NotFound."""
        return self._get(f"/api/jobs/{_q(job_id)}", "GET /api/jobs/{id}")

    def cancel(self, job_id: str) -> dict:
        """POST /api/jobs/{id}/cancel; NotFound, Conflict when already finished."""
        return self.call("POST", f"/api/jobs/{_q(job_id)}/cancel",
                         route="POST /api/jobs/{id}/cancel")[1]

    def retry(self, job_id: str) -> dict:
        """POST /api/jobs/{id}/retry: a new attempt of a finished job; NotFound,
        Conflict when it is not finished."""
        return self.call("POST", f"/api/jobs/{_q(job_id)}/retry",
                         route="POST /api/jobs/{id}/retry")[1]

    def retry_matching(self, status: str | None = None, type: str | None = None,
                       worker_id: str | None = None, queue: str | None = None,
                       limit: int | None = None) -> int:
        """POST /api/jobs/retry: a new attempt of each finished job matching (failed
        and cancelled ones without `status`), at most `limit`; how many."""
        body = {k: v for k, v in dict(status=status, type=type, worker_id=worker_id,
                                      queue=queue, limit=limit).items() if v is not None}
        return self.call("POST", "/api/jobs/retry", body)[1]["retried"]

    def discard(self, job_id: str) -> dict:
        """DELETE /api/jobs/{id}: forget a job (MissingRoute on nodes without it)."""
        return self.call("DELETE", f"/api/jobs/{_q(job_id)}",
                         route="DELETE /api/jobs/{id}")[1]

    # Workers ---------------------------------------------------------------------

    def workers(self, limit: int | None = None, cursor: str | None = None) -> dict:
        """One page of GET /api/workers: {"workers","count","returned","next"}."""
        return self._get("/api/workers" + _query(dict(limit=limit, cursor=cursor)),
                         "GET /api/workers")

    def iter_workers(self, **kw) -> Iterator[dict]:
        return self._pages(self.workers, "workers", kw)

    def forget_worker(self, worker_id: str) -> dict:
        """DELETE /api/workers/{id} (MissingRoute on nodes without it)."""
        return self.call("DELETE", f"/api/workers/{_q(worker_id)}",
                         route="DELETE /api/workers/{id}")[1]

    # Queues and schedules ----------------------------------------------------------

    def queues(self) -> dict:
        """GET /api/queues: the job queues with their RabbitMQ depths."""
        return self._get("/api/queues")

    def pause_queue(self, queue: str) -> dict:
        return self.call("POST", f"/api/queues/{_q(queue)}/pause",
                         route="POST /api/queues/{queue}/pause")[1]

    def resume_queue(self, queue: str) -> dict:
        return self.call("POST", f"/api/queues/{_q(queue)}/resume",
                         route="POST /api/queues/{queue}/resume")[1]

    def schedules(self) -> dict:
        """GET /api/schedules."""
        return self._get("/api/schedules")

    def schedule(self, schedule_id: str) -> dict:
        """GET /api/schedules/{id}: the schedule, its next and last runs."""
        return self._get(f"/api/schedules/{_q(schedule_id)}", "GET /api/schedules/{id}")

    def put_schedule(self, schedule_id: str, spec: dict) -> dict:
        """PUT /api/schedules/{id}: create or replace (docs/API.md, Schedules)."""
        return self.call("PUT", f"/api/schedules/{_q(schedule_id)}", spec,
                         route="PUT /api/schedules/{id}")[1]

    def delete_schedule(self, schedule_id: str) -> dict:
        return self.call("DELETE", f"/api/schedules/{_q(schedule_id)}",
                         route="DELETE /api/schedules/{id}")[1]

    def schedule_action(self, schedule_id: str, verb: str, body: dict | None = None) -> dict:
        """POST /api/schedules/{id}/{pause|resume|trigger|backfill}."""
        return self.call("POST", f"/api/schedules/{_q(schedule_id)}/{verb}", body,
                         route=f"POST /api/schedules/{{id}}/{verb}")[1]

    # Members (docs/CLUSTER.md) -------------------------------------------------------

    def add_member(self, node: str, api: str | None = None, role: str | None = None) -> dict:
        body = {k: v for k, v in dict(node=node, api=api, role=role).items() if v}
        return self.call("POST", "/api/cluster/members", body)[1]

    def promote_member(self, node: str, role: str | None = None) -> dict:
        return self.call("POST", f"/api/cluster/members/{_q(node)}/promote",
                         {"role": role} if role else None,
                         route="POST /api/cluster/members/{node}/promote")[1]

    def remove_member(self, node: str) -> dict:
        return self.call("DELETE", f"/api/cluster/members/{_q(node)}",
                         route="DELETE /api/cluster/members/{node}")[1]

    def transfer_leader(self, to: str) -> dict:
        return self.call("POST", "/api/cluster/leader", {"to": to})[1]

    # ---------------------------------------------------------------------------------

    @staticmethod
    def _pages(page_fn, key: str, kw: dict) -> Iterator[dict]:
        kw = dict(kw)
        while True:
            page = page_fn(**kw)
            yield from page[key]
            if not page.get("next"):
                return
            kw["cursor"] = page["next"]
