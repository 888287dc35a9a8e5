"""The HTTP API (CONTRACT §2) as a bottle app. Each handler parses (parse.py),
proposes (the node) or queries (state.py), and answers; no business rules here.

One plugin renders every outcome: a returned dict as JSON, ApiError as the error
shape, anything unexpected as a logged 500 {"error":"internal"}. Bottle's own errors
(404, 405 with its Allow header) come out in the same shape.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import bottle
import gevent

from . import http_server, jobs, metrics, openapi, parse, queue_api, schedule_api
from . import state as st_mod
from .config import Config, split_peer
from .errors import ApiError, LogFailed, Overloaded, ProposeTimeout, bad
from .forward import COMMIT, FORWARDED, ID_SEED, BecameLeader, seeded_ids
from .raft import membership as M
from .raft.core import NotLeader
from .raft.node import ChangePending

log = logging.getLogger(__name__)

_dumps = jobs.dumps           # bytes; splices stored payloads
# Every JSON answer: never stored by a cache (jobs change, and a shared cache would
# hand one client's jobs to the next) and never sniffed as something else by a
# browser (a payload holding HTML must stay JSON).
JSON_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"))
# The same in bottle's own form (response._headers: name -> values), put in with one
# dict update: 1.2 µs against 3.4 µs for `response.content_type = ...` alone (bottle
# 0.13.4). Tuples, shared by every request: nothing may add_header these names.
_JSON_HEADER_VALUES = {name: (value,) for name, value in JSON_HEADERS}
_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
          413: "payload_too_large", 500: "internal", 503: "unavailable"}


class JsonBottle(bottle.Bottle):
    def default_error_handler(self, res: bottle.HTTPError) -> bytes:
        bottle.response._headers.update(_JSON_HEADER_VALUES)
        code = _CODES.get(res.status_code, "internal")
        message = {404: "no such path", 405: "method not allowed; see the Allow header",
                   }.get(res.status_code, str(res.body) if res.body else code)
        if res.status_code == 500 and res.exception is not None:
            log.error("unhandled error: %r", res.exception)
            message = "internal error"
        return _dumps({"error": code, "message": message})


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


# Read straight from the WSGI environ: bottle's get_header builds a header view and
# maps the name on every call (two a register: 1% of its samples at 50 connections).
_FORWARDED_KEY, _ID_SEED_KEY = _environ_key(FORWARDED), _environ_key(ID_SEED)


class JsonPlugin:
    """Wraps every route: metrics, JSON rendering, the one error shape."""
    name, api = "dqorch_json", 2

    def apply(self, callback, route):
        label = route.rule
        requests = {}                  # code -> labelled counter child (cache)
        seconds = metrics.HTTP_SECONDS.labels(label)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                out = callback(*args, **kwargs)
                status = 200
                if isinstance(out, tuple):
                    status, out = out
            except ApiError as e:
                status, out = e.status, e.body()
            except (NotLeader, LogFailed) as e:
                status, out = 503, {"error": "unavailable", "message": str(e)}
            except Overloaded as e:
                status, out = 503, {"error": "unavailable", "message": str(e)}
                bottle.response.set_header("Retry-After", "1")
            except M.ChangeRefused as e:
                status, out = 409, {"error": "conflict", "message": str(e)}
            except ChangePending as e:
                status, out = 503, {"error": "unavailable", "message": str(e)}
                bottle.response.set_header("Retry-After", "1")
            except ProposeTimeout as e:
                status, out = 503, {"error": "unavailable", "message": str(e) +
                                    "; retrying is safe"}
            except bottle.HTTPResponse:
                raise
            except Exception:
                log.exception("unhandled error route=%s", label)
                status, out = 500, {"error": "internal", "message": "internal error"}
            resp = bottle.response
            resp.status = status
            resp._headers.update(_JSON_HEADER_VALUES)
            if isinstance(out, Relayed):
                status = resp.status = out.status
                for k, v in out.headers:
                    resp.set_header(k, v)
                body = out.body
            elif isinstance(out, Chunks):
                resp.set_header("Content-Length", str(sum(map(len, out))))
                body = out.stream()
            else:
                body = _dumps(out)
            if status in http_server.CLOSE_AFTER:    # the rest of the body may still be on the wire
                resp.set_header("Connection", "close")
            counter = requests.get(status)
            if counter is None:
                counter = requests[status] = metrics.HTTP_REQUESTS.labels(label, str(status))
            counter.inc()
            seconds.observe(time.perf_counter() - t0)
            return body
        return wrapper


# The routes the gateway and the workers call for every job: answered by hot_routes
# without bottle's per-request work. Static paths only (a dict lookup).
HOT_ROUTES = (("POST", "/api/jobs/register"), ("POST", "/api/jobs/batch"),
              ("POST", "/api/jobs/status"), ("POST", "/api/workers/heartbeat"))


def hot_routes(app: bottle.Bottle):
    """WSGI: HOT_ROUTES called straight, everything else through `app`.

    Bottle matches a route against its regex router, runs its hooks, builds the
    response object and casts the result on every request: ~10 µs a request
    (docs/BENCHMARKS.md, "hot routes"). Here a hot route's callback (the one bottle would call: JsonPlugin's wrapper, so
    the same metrics, JSON and error shape) runs with bottle.request and
    bottle.response bound as bottle binds them, and the answer is the same one:
    tests/unit/test_api_inprocess.py compares both ways for every outcome. Bottle has
    no hooks installed here (make_app installs none); a route that raises a bottle
    HTTPResponse (none of these do) is answered as bottle would."""
    calls = {}
    for route in app.routes:
        if (route.method, route.rule) in HOT_ROUTES:
            calls[route.method, route.rule] = route
    request, response = bottle.request, bottle.response

    def wsgi(environ, start_response):
        route = calls.get((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        if route is None:
            return app(environ, start_response)
        environ["bottle.app"] = app
        environ["route.handle"] = environ["bottle.route"] = route
        environ["route.url_args"] = {}
        request.bind(environ)
        response.bind()
        try:
            body = route.call()
        except bottle.HTTPResponse as e:
            e.apply(response)
            body = e.body
        if not isinstance(body, bytes):
            body = body.encode() if isinstance(body, str) else b""
        out = response
        if "Content-Length" not in out:
            out["Content-Length"] = str(len(body))
        start_response(out._wsgi_status_line(), out.headerlist)
        return [body]
    return wsgi


YIELD_EVERY_BYTES = 256 * 1024   # encoded (or sent) between two turns of the hub
# Ids per command of a bulk action: 500 ids of up to 256 characters stay well below
# what one log entry should carry, and "all failed" becomes a few commands, not one.
BULK_CHUNK = 500


def _yield_to_io() -> None:
    # A 1 ms timer, not sleep(0): sleep(0) resumes this greenlet before the loop polls
    # sockets again, so other clients waited for the whole page anyway (measured:
    # health p50 16 ms beside a 4 MiB listing with sleep(0), 0.26 ms with this).
    gevent.sleep(0.001)


class Relayed:
    """The leader's answer to a forwarded write, passed on as it came (forward.py)."""
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class Chunks(list):
    """A body sent as its parts, never joined: joining 4 MiB costs ~6 ms of the hub
    (measured), and the parts already exist. Sent with its Content-Length."""

    def stream(self):
        since = 0
        for part in self:
            yield part
            since += len(part)
            if since >= YIELD_EVERY_BYTES:
                since = 0
                _yield_to_io()
_READ_BODY = "dqorch.body"      # environ key: a body read already (forward.BecameLeader)


def read_body(max_bytes: int, required: bool = True) -> bytes:
    """This request's body (http_server.read_body), or the one read already when a
    forward found this node leader after all."""
    env = bottle.request.environ
    if _READ_BODY in env:
        return env[_READ_BODY]
    return http_server.read_body(env, max_bytes, required)


# Request gate ###############################################################

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refuse(start_response, status: str, code: str, message: str, headers=()) -> list:
    """A request answered before it reaches a route, in the one error shape."""
    body = _dumps({"error": code, "message": message})
    start_response(status, [*JSON_HEADERS, ("Content-Length", str(len(body))),
                            ("Connection", "close"), *headers])
    metrics.HTTP_REQUESTS.labels("<refused>", status[:3]).inc()
    return [body]


class Access:
    """Who may talk to a port: `allow_from` networks, and bearer tokens when any are
    set (`api_tokens` for everything, `api_read_tokens` for GET and HEAD only).
    Tokens are compared in constant time, each one, so the time of a refusal says
    nothing about how close a guess was."""

    def __init__(self, tokens=(), read_tokens=(), allow_from=(), exempt=()) -> None:
        import ipaddress
        self.tokens = [t.encode() for t in tokens]
        self.read_tokens = [t.encode() for t in read_tokens]
        self.networks = [ipaddress.ip_network(n) for n in allow_from]
        self.exempt = frozenset(exempt)
        self._ip = ipaddress.ip_address

    def refusal(self, environ):
        """None, or (status, code, message, headers) to answer instead."""
        if self.networks:
            try:
                addr = self._ip(environ.get("REMOTE_ADDR", ""))
            except ValueError:
                addr = None
            # On a dual-stack listener (http_host ::) an IPv4 client arrives as
            # ::ffff:a.b.c.d, which no IPv4 network contains: match it as a.b.c.d too.
            mapped = getattr(addr, "ipv4_mapped", None)
            if addr is None or not any(addr in n or (mapped is not None and mapped in n)
                                       for n in self.networks):
                return ("403 Forbidden", "forbidden", "this address is not in allow_from", ())
        if not (self.tokens or self.read_tokens) or environ.get("PATH_INFO") in self.exempt:
            return None
        header = environ.get("HTTP_AUTHORIZATION", "")
        given = header[7:].strip().encode() if header[:7].lower() == "bearer " else b""
        full = any([hmac.compare_digest(given, t) for t in self.tokens])
        read = any([hmac.compare_digest(given, t) for t in self.read_tokens])
        if not (full or read):
            return ("401 Unauthorized", "unauthorized", "send Authorization: Bearer <token> "
                    "(api_tokens or api_read_tokens)", (("WWW-Authenticate", "Bearer"),))
        if not full and environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return ("403 Forbidden", "forbidden", "a read-only token cannot write", ())
        return None


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(value: str) -> str:
    """The name in a Host header: lower-case, without its port, its IPv6 brackets or
    a final dot ("LocalHost.:8081" -> "localhost", "[::1]:8081" -> "::1"). A value that
    is not host[:port] comes back as it is, and matches no name."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        rest = v[end + 1:]
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return v
        return v[1:end]
    name, colon, port = v.rpartition(":")
    if colon and ":" not in name and (port == "" or port.isdigit()):
        v = name
    return v[:-1] if v.endswith(".") else v


class HostCheck:
    """DNS rebinding: a page on evil.example whose name the attacker re-points to this
    node's address is, for the browser, same-origin with it: its requests carry
    `Host: evil.example` and a matching Origin. Only the Host tells them apart, so the
    API answers only to its own names (docs/SECURITY.md, "DNS rebinding").

    `names`: the names and addresses this node is reached by (for_config). `strict`:
    every request is checked; otherwise (a wildcard http_host with no allowed_hosts)
    only a browser's (Origin or Sec-Fetch-* present), since the gateway and workers
    reach such a node under names it cannot know. On a wildcard http_host any IP
    literal is also its own: rebinding needs a name. A request without Host (HTTP/1.0)
    passes: browsers always send one."""

    MAX_SEEN = 256

    def __init__(self, names=(), wildcard: bool = False, strict: bool = True,
                 any_host: bool = False) -> None:
        self.names = frozenset(host_name(n) for n in names)
        self.wildcard, self.strict, self.any_host = wildcard, strict, any_host
        self._seen: dict[str, bool] = {}      # Host value -> allowed (bounded cache)

    @classmethod
    def for_config(cls, cfg) -> "HostCheck":
        wildcard = cfg.http_host in WILDCARD_HOSTS
        names = set(LOOPBACK_NAMES) | {cfg.node_host} | set(cfg.allowed_hosts)
        if not wildcard:
            names.add(cfg.http_host)
        if cfg.api_advertise:
            names.add(cfg.api_advertise.rpartition(":")[0])
        return cls(names, wildcard, strict=not wildcard or bool(cfg.allowed_hosts),
                   any_host="*" in cfg.allowed_hosts)

    def allowed(self, host: str) -> bool:
        ok = self._seen.get(host)
        if ok is None:
            name = host_name(host)
            ok = self.any_host or name in self.names
            if not ok and self.wildcard:
                try:
                    ipaddress.ip_address(name)
                    ok = True
                except ValueError:
                    pass
            if len(self._seen) < self.MAX_SEEN:
                self._seen[host] = ok
        return ok

    def refusal(self, environ):
        """None, or (status, code, message, headers) to answer instead."""
        host = environ.get("HTTP_HOST")
        if host is None or self.allowed(host):
            return None
        if not self.strict and not ("HTTP_ORIGIN" in environ or "HTTP_SEC_FETCH_SITE" in environ
                                    or "HTTP_SEC_FETCH_MODE" in environ):
            return None
        log.info("refused a request for another host host=%s path=%s", host[:100],
                 environ.get("PATH_INFO", "")[:100])
        return ("421 Misdirected Request", "invalid_request",
                f"Host {host[:100]!r} is not a name of this node; if clients reach it "
                "under that name, add it to allowed_hosts", ())


def guard(app, allowed_origins=(), access: Access | None = None,
          hosts: HostCheck | None = None):
    """WSGI wrapper in front of bottle for what must be refused before routing:
    - a path that is not UTF-8 (bottle would drop the bad bytes and route to another
      job: /api/jobs/jx%FF/cancel cancelled jx): 400;
    - a cross-site browser write: `Sec-Fetch-Site: cross-site`, or an `Origin` that is
      neither this node's own (the Host the request came to) nor in allowed_origins:
      403. Bodies are JSON whatever the Content-Type (CONTRACT §2), so without this
      any web page could register and cancel jobs. Clients that send neither header
      (curl, the gateway, the workers) are not affected;
    - `access` (Access): allow_from and bearer tokens, checked first;
    - `hosts` (HostCheck): a Host that is not one of this node's names: 421."""
    allowed = frozenset(o.lower() for o in allowed_origins)
    access = access or Access()

    def gated(environ, start_response):
        refused = access.refusal(environ)
        if refused is None and hosts is not None:
            refused = hosts.refusal(environ)
        if refused is not None:
            return refuse(start_response, *refused)
        try:
            environ["PATH_INFO"].encode("latin1").decode("utf-8")
        except UnicodeError:
            return refuse(start_response, "400 Bad Request", "invalid_request",
                           "the path is not valid UTF-8 (after %-decoding)")
        if environ.get("REQUEST_METHOD") in WRITE_METHODS:
            origin = environ.get("HTTP_ORIGIN")
            host = environ.get("HTTP_HOST", "").lower()
            if environ.get("HTTP_SEC_FETCH_SITE", "").lower() == "cross-site" or (
                    origin is not None and origin.lower() not in allowed
                    and origin.lower() not in (f"http://{host}", f"https://{host}")):
                log.info("refused a cross-site write origin=%s path=%s",
                         (origin or "-")[:100], environ["PATH_INFO"][:100])
                return refuse(start_response, "403 Forbidden", "forbidden",
                               "cross-origin writes are refused; add the origin to "
                               "allowed_origins to allow it")
        return app(environ, start_response)
    return gated


@dataclass(frozen=True)
class Services:
    """What the API may use of the node, and nothing else (app.Node builds it;
    tests/unit/test_api_inprocess.py a fake). `raft` is the Raft node's client face:
    propose(cmd), propose_many(cmds), role, leader, applied_index, status(),
    has_quorum_contact(lease); `state()` the applied job registry, read only."""
    cfg: Any
    raft: Any
    state: Callable[[], Any]
    workers: Any                       # workers.WorkerTable
    forwarder: Any                     # forward.Forwarder, None on a single node
    rates: Any                         # rates.Rates
    health: Callable[[], tuple]        # (code, body) of GET /api/health
    cluster_status: Callable[[], dict]
    broker_status: Callable[[], dict]
    broker_down_since: Callable[[], Any]         # ms, None while connected
    why_returned: Callable[[Any], Any]           # dispatch: a job's unroutable story
    dispatch_backlog: Callable[[], dict]
    new_id: Callable[[], str]
    now_ms: Callable[[], int]
    # RabbitMQ's counts per job queue (depths.QueueDepths.get), or None
    queue_depths: Callable[[], Any] = lambda: None


MEMBER_BODY_BYTES = 4096
_HOST_PORT = re.compile(r"[A-Za-z0-9_.\-]+:\d{1,5}")


def parse_member(body: dict) -> M.Member:
    """{"node": "name@host[:port]", "api": "host:port", "role"} of POST
    /api/cluster/members. ApiError 400 naming the field."""
    node = body.get("node")
    try:
        name, host, port = split_peer(node if isinstance(node, str) else "")
    except ValueError as e:
        raise bad("node", f"must be name@host[:port] ({e})")
    api = body.get("api", "")
    if not isinstance(api, str) or (api and not _HOST_PORT.fullmatch(api)):
        raise bad("api", "must be host:port")
    role = body.get("role", M.LEARNER)
    if role not in M.ROLES:
        raise bad("role", f"must be one of {', '.join(M.ROLES)}")
    return M.Member(f"{name}@{host}", role, f"{host}:{port}" if port else "", api)


def unknown_parents(cmd: dict, held, batch_ids) -> ApiError | None:
    """A register's depends_on names a job that is neither held nor in its batch."""
    for p in cmd["depends_on"]:
        if p not in held and p not in batch_ids:
            return bad("depends_on", f"no job {p!r}: a parent must exist, or be registered "
                                     f"in the same batch")
    return None


def refuse_bad_parents(items: list, held) -> None:
    """In place: a batch item whose parent is unknown, or that is on a cycle of
    depends_on within the batch, becomes its 400 (an ApiError). A batch without
    depends_on (nearly every one) costs one pass."""
    if not any(isinstance(i, dict) and i.get("depends_on") for i in items):
        return
    ids = {i["id"] for i in items if isinstance(i, dict)}
    kids = {i["id"]: [p for p in i.get("depends_on", ()) if p in ids and p not in held]
            for i in items if isinstance(i, dict)}
    on_cycle, state = set(), {}          # state: 1 on the path, 2 done

    def visit(start):
        stack = [(start, iter(kids.get(start, ())))]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                path = [n for n, _ in stack]
                on_cycle.update(path[path.index(nxt):])
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(kids.get(nxt, ()))))
    for id_ in kids:
        if id_ not in state:
            visit(id_)
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("depends_on"):
            continue
        if item["id"] in on_cycle:
            items[n] = bad("depends_on", "these jobs wait for each other (a cycle)")
        else:
            items[n] = unknown_parents(item, held, ids) or item


def make_app(svc: Services) -> bottle.Bottle:
    app = JsonBottle()
    app.uninstall(True)            # bottle's JSON and template plugins: JsonPlugin does it
    app.install(JsonPlugin())
    cfg = svc.cfg

    def body() -> dict:
        return parse.body_json(read_body(cfg.max_body_bytes), allow_empty=False)

    def relay(data: bytes, idempotent: bool = False) -> Relayed:
        """This request, as it came, answered by the leader (forward.py)."""
        req = bottle.request
        status, headers, back = svc.forwarder.forward(
            req.method, req.environ.get("RAW_URI") or req.fullpath, req.headers, data,
            idempotent)
        return Relayed(status, headers, back)

    def writes(max_bytes: int, required: bool = True, idempotent: bool = False):
        """A route that proposes: on a follower it is forwarded to the leader
        (forward.py); on the leader, a forwarded one is answered with its commit."""
        def wrap(fn):
            def route(*args, **kwargs):
                fwd = svc.forwarder
                if fwd is not None and svc.raft.role != "leader":
                    data = read_body(max_bytes, required)
                    try:
                        return relay(data, idempotent)
                    except BecameLeader:
                        bottle.request.environ[_READ_BODY] = data   # the handler reads it
                out = fn(*args, **kwargs)
                if bottle.request.environ.get(_FORWARDED_KEY):
                    bottle.response.set_header(COMMIT, str(svc.raft.applied_index))
                return out
            return route
        return wrap

    def leader_view(fn):
        """A read that must show the leader's view (worker liveness, the broker in a
        job's `why`): a follower asks the leader, and answers from its own state only
        when no leader answers."""
        def route(*args, **kwargs):
            fwd, node = svc.forwarder, svc.raft
            if fwd is not None and node.role != "leader" and node.leader \
                    and not bottle.request.environ.get(_FORWARDED_KEY):
                try:
                    return relay(b"")
                except (ApiError, BecameLeader):
                    pass
            # Answering from its own state: current only on a leader that a majority
            # still hears. Otherwise (cut off, or no leader answered) what it lacks
            # may exist: get_job says 503, not 404 (a fault run saw a 404 for a job
            # accepted during a partition, read from the isolated old leader).
            bottle.request.environ["dq.current"] = fwd is None or (
                node.role == "leader" and node.has_quorum_contact(lease=True))
            return fn(*args, **kwargs)
        return route

    def new_id():
        """Ids for jobs registered without one: derived from a forwarding follower's
        seed, so its retries register the same job."""
        return seeded_ids(bottle.request.environ.get(_ID_SEED_KEY), svc.new_id)

    @app.get("/api/health")
    def health():
        return svc.health()

    @app.get("/api/raft/status")
    def raft_status():
        return svc.raft.status()

    @app.get("/api/cluster/status")
    def cluster_status():
        return svc.cluster_status()

    # Members (docs/CLUSTER.md): one change at a time, each answered once committed.

    def member_view(config: M.Config) -> dict:
        return {"config_index": config.index,
                "members": [m.to_dict() for m in config.members]}

    def known(name: str) -> None:
        if svc.raft.config.get(name) is None:
            raise ApiError(404, "not_found", f"no member {name!r}")

    @app.post("/api/cluster/members")
    @writes(MEMBER_BODY_BYTES)
    def add_member():
        member = parse_member(body())
        if cfg.cookie == Config.cookie:
            raise ApiError(409, "conflict", "cookie is still the default: give every member "
                           "the same secret of your own first (docs/CLUSTER.md)", "cookie")
        config = svc.raft.change_members(lambda c: c.add(member))
        log.info("member added node=%s role=%s config_index=%d", member.name, member.role,
                 config.index)
        return {"status": "added", **member_view(config)}

    @app.post("/api/cluster/members/<name>/promote")
    @writes(MEMBER_BODY_BYTES, required=False)
    def promote_member(name):
        data = read_body(MEMBER_BODY_BYTES, required=False)
        known(name)
        role = parse.body_json(data).get("role", M.VOTER) if data.strip() else M.VOTER
        prog = svc.raft.progress().get(name)
        last = svc.raft.status()["last_log_index"]
        if prog is not None and not M.caught_up(prog["match"], last):
            raise ApiError(409, "conflict", f"{name} is behind: it holds {prog['match']} of "
                           f"{last} entries; promote it once it has caught up (GET "
                           f"/api/cluster/status shows caught_up)")
        config = svc.raft.change_members(lambda c: c.promote(name, role))
        log.info("member promoted node=%s role=%s config_index=%d", name, role, config.index)
        return {"status": "promoted", **member_view(config)}

    @app.delete("/api/cluster/members/<name>")
    @writes(MEMBER_BODY_BYTES, required=False)
    def remove_member(name):
        known(name)
        if name == svc.raft.node_name and svc.raft.config.get(name) is not None \
                and len(svc.raft.config.voters) > 1:
            # The leader removes itself: it hands over first, and the new leader
            # removes it (a leader that applied its own removal would just stop).
            if not svc.raft.transfer_leadership(cfg.raft_election_timeout_ms / 1000):
                raise ApiError(503, "unavailable", "this leader could not hand over "
                               "within an election timeout; retry shortly")
            return relay(b"")
        config = svc.raft.change_members(lambda c: c.remove(name))
        log.info("member removed node=%s config_index=%d", name, config.index)
        return {"status": "removed", **member_view(config)}

    @app.post("/api/cluster/leader")
    @writes(MEMBER_BODY_BYTES)
    def transfer_leader():
        to = body().get("to")
        if not isinstance(to, str) or to not in svc.raft.config.voters:
            raise bad("to", "must name a voting member")
        if to != svc.raft.node_name and not svc.raft.transfer_leadership(
                cfg.raft_election_timeout_ms / 1000, to=to):
            raise ApiError(503, "unavailable", f"{to} did not take over within an election "
                           f"timeout; retry shortly")
        return {"status": "transferred", "leader": to}

    @app.post("/api/jobs/register")
    @writes(cfg.max_body_bytes, idempotent=True)
    def register():
        cmd = parse.register(body(), new_id=new_id(), max_retries=cfg.job_max_retries,
                             execution_timeout=cfg.job_execution_timeout_s,
                             max_job_bytes=cfg.max_job_bytes,
                             publish=cfg.publish_on_register)
        if cmd.get("depends_on"):
            missing = unknown_parents(cmd, svc.state().jobs, ())
            if missing:
                raise missing
        out = svc.raft.propose(cmd)
        if "scheduled" in out:          # only a job registered to run later
            return 202, {"status": "accepted", "job_id": cmd["id"], "run_at": out["scheduled"]}
        return 202, {"status": "accepted", "job_id": cmd["id"]}

    @app.post("/api/jobs/batch")
    @writes(cfg.max_batch_body_bytes, idempotent=True)
    def register_batch():
        items = parse.batch(
            parse.body_json(read_body(cfg.max_batch_body_bytes), allow_empty=False),
            max_batch_jobs=cfg.max_batch_jobs, new_id=new_id(),
            max_retries=cfg.job_max_retries, execution_timeout=cfg.job_execution_timeout_s,
            max_job_bytes=cfg.max_job_bytes, publish=cfg.publish_on_register)
        refuse_bad_parents(items, svc.state().jobs)
        outs = iter(svc.raft.propose_many([i for i in items if isinstance(i, dict)]))
        results = []
        accepted = repeats = 0
        for n, item in enumerate(items):
            if isinstance(item, ApiError):
                results.append(dict(item.body(), index=n))
                continue
            if isinstance(item, parse.Repeat):
                repeats += 1
                results.append({"job_id": item.job_id, "status": "duplicate", "index": n,
                                "duplicate_of": item.first})
                continue
            out = next(outs)
            if isinstance(out, Exception):        # this one did not commit (or unknown)
                results.append({"index": n, "error": "unavailable", "message": str(out)})
            else:
                accepted += 1
                results.append({"job_id": item["id"], "status": "accepted"}
                               if "scheduled" not in out else
                               {"job_id": item["id"], "status": "accepted",
                                "run_at": out["scheduled"]})
        return 202, {"results": results, "accepted": accepted, "duplicates": repeats,
                     "rejected": len(results) - accepted - repeats}

    def report(job_id=None):
        cmd = parse.report(body(), job_id, max_retries=cfg.job_max_retries,
                           execution_timeout=cfg.job_execution_timeout_s,
                           retry_backoff_ms=int(cfg.job_retry_backoff_s * 1000),
                           max_job_bytes=cfg.max_job_bytes)
        out = svc.raft.propose(cmd)
        if out["outcome"] == "ignored":
            return {"status": "ignored", "reason": out["reason"]}
        return {"status": "updated"}

    report = writes(cfg.max_body_bytes)(report)
    app.route("/api/jobs/status", "POST", report)
    app.route("/api/jobs/<job_id>/status", ["PUT", "POST"], report)

    @app.post("/api/jobs/<job_id>/cancel")
    @writes(cfg.max_body_bytes, required=False)
    def cancel(job_id):
        read_body(cfg.max_body_bytes, required=False)   # the gateway sends none; ignore any
        out = svc.raft.propose(parse.cancel(job_id))
        if out["outcome"] == "not_found":
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        if out["outcome"] == "conflict":
            raise ApiError(409, "conflict", f"job is already {out['status']}")
        return {"status": "cancelled", "job_id": job_id}

    @app.post("/api/jobs/<job_id>/retry")
    @writes(cfg.max_body_bytes, required=False)
    def retry(job_id):
        read_body(cfg.max_body_bytes, required=False)   # none needed; ignore any
        id_ = parse.job_id(job_id, "id")
        out = svc.raft.propose({"op": "retry", "ids": [id_]})
        result = out["results"][id_]
        if result == "not_found":
            raise ApiError(404, "not_found", f"no job {id_!r}")
        if result != "retried":
            raise ApiError(409, "conflict", f"job is {result}; only a completed, failed "
                           f"or cancelled job is retried")
        return 202, {"status": "accepted", "job_id": id_}

    @app.post("/api/jobs/retry")
    @writes(cfg.max_body_bytes)
    def retry_matching():
        results = propose_ids("retry", bulk_ids(parse.retry_query(body())))
        return 202, {"retried": sum(1 for r in results.values() if r == "retried")}

    @app.get("/api/rates")
    def rates():
        return svc.rates.snapshot()

    def query() -> dict:
        try:
            return dict(bottle.request.query.decode())
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_request", "query string is not valid UTF-8")

    @app.get("/api/jobs")
    def list_jobs():
        q = parse.list_query(query())
        page, count, nxt = st_mod.list_jobs(svc.state(), q["filters"], q["limit"], q["cursor"],
                                            q["where"], q["offset"])
        parts, size, since_yield = [b'{"jobs":['], 0, 0
        for n, job in enumerate(page):
            part = (b"," if n else b"") + _dumps(jobs.api_json(job, full=q["full"]))
            if n and size + len(part) > cfg.max_list_bytes:
                nxt = page[n - 1]["seq"]          # the page ends early; go on below it
                break
            parts.append(part)
            size += len(part)
            since_yield += len(part)
            if since_yield >= YIELD_EVERY_BYTES:
                since_yield = 0
                _yield_to_io()
        tail = _dumps({"count": count, "returned": len(parts) - 1,
                       "next": None if nxt is None else str(nxt)})
        parts.append(b"]," + tail[1:])
        return Chunks(parts)

    @app.get("/api/jobs/<job_id>")
    @leader_view
    def get_job(job_id):
        job = st_mod.get_job(svc.state(), job_id)
        if job is None:
            if not bottle.request.environ.get("dq.current", True):
                raise ApiError(503, "unavailable", f"no job {job_id!r} on this node, which "
                               "cannot reach the leader to be sure; retry shortly")
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        out = jobs.api_json(job, full=True, history=True)
        st = svc.state()
        out["why"] = svc.why_returned(job) or jobs.why(
            job, svc.now_ms(), svc.broker_down_since(), svc.workers.counts()["active"],
            st.paused_queues.get(job.queue), parent_status=lambda p: (
                st.jobs[p].status if p in st.jobs else None),
            limit_note=st_mod.limit_note(st, job))
        return out

    @app.post("/api/workers/heartbeat")
    def heartbeat():
        svc.workers.heartbeat(parse.heartbeat(body()))
        metrics.HEARTBEATS.inc()
        return {"status": "acknowledged"}

    @app.get("/api/workers")
    @leader_view
    def workers():
        q = parse.workers_query(query())
        page, count, last = svc.workers.page(st_mod.running_counts(svc.state()),
                                             q["limit"], q["after"])
        return {"workers": page, "count": count, "returned": len(page),
                "next": None if last is None else parse.worker_cursor(last)}

    def register_defaults() -> dict:
        return dict(max_retries=cfg.job_max_retries,
                    execution_timeout=cfg.job_execution_timeout_s,
                    max_job_bytes=cfg.max_job_bytes, publish=True)

    queue_api.add_routes(app, svc, writes=writes, body=body, leader_view=leader_view,
                         drain=lambda: read_body(cfg.max_body_bytes, required=False),
                         max_body_bytes=cfg.max_body_bytes)
    schedule_api.add_routes(app, svc, writes=writes, body=body,
                            drain=lambda: read_body(cfg.max_body_bytes, required=False),
                            register_kw=register_defaults, max_body_bytes=cfg.max_body_bytes)

    @app.get("/api/openapi.json")
    def openapi_doc():
        return openapi.SPEC

    @app.get("/api/metrics")
    def metrics_json():
        st = svc.state()
        return {"jobs": st_mod.counts_by_status(st), "queues": st_mod.counts_by_queue(st),
                "workers": svc.workers.counts(st_mod.running_counts(st)),
                "raft": svc.raft.status(),
                "broker": svc.broker_status(), "dispatch": svc.dispatch_backlog(),
                "timestamp": svc.now_ms()}


    # Bulk actions and the dead set (docs/API.md): a selection of ids, or every job
    # matching the listing's filters, proposed in commands of BULK_CHUNK ids.

    def bulk_ids(q: dict) -> list:
        if q["ids"] is not None:
            return q["ids"]
        return st_mod.terminal_ids(svc.state(), q["filters"], q["statuses"], q["limit"],
                                   q["where"])

    def propose_ids(op: str, ids: list) -> dict:
        """{id: result} of `op` over these ids, BULK_CHUNK ids a command."""
        results: dict = {}
        for i in range(0, len(ids), BULK_CHUNK):
            results.update(svc.raft.propose({"op": op, "ids": ids[i:i + BULK_CHUNK]})["results"])
        return results

    @app.delete("/api/jobs/<job_id>")
    @writes(cfg.max_body_bytes, required=False)
    def discard(job_id):
        read_body(cfg.max_body_bytes, required=False)   # none needed; ignore any
        id_ = parse.job_id(job_id, "id")
        result = svc.raft.propose({"op": "discard", "ids": [id_]})["results"][id_]
        if result == "not_found":
            raise ApiError(404, "not_found", f"no job {id_!r}")
        if result != "discarded":
            raise ApiError(409, "conflict", f"job is {result}; only a completed, failed or "
                           f"cancelled job is discarded (cancel it first)")
        return {"status": "discarded", "job_id": id_}

    @app.post("/api/jobs/discard")
    @writes(cfg.max_body_bytes)
    def discard_matching():
        q = parse.bulk_query(body(), jobs.TERMINAL, [jobs.FAILED])
        results = propose_ids("discard", bulk_ids(q))
        return {"discarded": sum(1 for r in results.values() if r == "discarded")}

    @app.post("/api/jobs/cancel")
    @writes(cfg.max_body_bytes)
    def cancel_matching():
        live = frozenset(jobs.STATUSES) - jobs.TERMINAL
        ids = bulk_ids(parse.bulk_query(body(), live, sorted(live)))
        done = 0
        for i in range(0, len(ids), BULK_CHUNK):
            outs = svc.raft.propose_many([parse.cancel(x) for x in ids[i:i + BULK_CHUNK]])
            done += sum(1 for o in outs if isinstance(o, dict) and o["outcome"] == "cancelled")
        return {"cancelled": done}

    def worker_route(worker_id: str) -> str:
        # "heartbeat" is the heartbeat's own path: DELETE/GET there stay a 405 (a
        # worker of that name is forgotten by the hour, workers.FORGET_AFTER_S).
        if worker_id == "heartbeat":
            raise bottle.HTTPError(405, "method not allowed", Allow="POST")
        return parse.worker_id(worker_id, "worker_id")

    @app.get("/api/workers/<worker_id:path>")
    @leader_view
    def worker(worker_id):
        wid = worker_route(worker_id)
        out = svc.workers.detail(wid, st_mod.running_counts(svc.state()).get(wid, 0))
        if out is None:
            raise ApiError(404, "not_found", f"no worker {wid!r}")
        return out

    @app.delete("/api/workers/<worker_id:path>")
    @writes(cfg.max_body_bytes, required=False)
    def forget_worker(worker_id):
        read_body(cfg.max_body_bytes, required=False)
        wid = worker_route(worker_id)
        running = st_mod.running_counts(svc.state()).get(wid, 0)
        if running:
            raise ApiError(409, "conflict", f"worker {wid} has {running} running jobs; they "
                           "are retried once it is unresponsive, then it can be forgotten")
        if not svc.workers.forget(wid):
            raise ApiError(404, "not_found", f"no worker {wid!r}")
        return {"status": "forgotten", "worker_id": wid}

    return app
