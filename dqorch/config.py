"""Settings: a YAML file plus DQ_* environment variables -> one frozen, valid Config.

Every rule about what a setting may be lives here; no other module re-checks settings.
`parse(raw, env)` is pure (it reads no file and not os.environ); `load(path)` reads the
file and the environment, then calls it. A ConfigError is one line that names the key
and never contains the value of a secret (cookie, rabbitmq_password).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

import yaml

ENV_PREFIX = "DQ_"
# DQ_* variables that are not settings, which a node inherits from the shell that starts
# it: DQ_URL and DQ_TOKEN are dqctl's (an operator exports them), DQ_CONFIG and DQ_VENV
# build-orchestrator.sh's, DQ_SIM_SEEDS and DQ_TEST_* the test tooling's.
NOT_SETTINGS = frozenset({"DQ_SIM_SEEDS", "DQ_URL", "DQ_TOKEN", "DQ_CONFIG", "DQ_VENV",
                          "DQ_TEST_RABBIT_PORT", "DQ_TEST_PRIVATE_RABBIT_PORT"})
SECRETS = frozenset({"cookie", "rabbitmq_password", "api_tokens", "api_read_tokens"})
MASK = "***"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
HTTP_SERVERS = ("pywsgi", "httptools")  # http_server.py, http_fast.py


class ConfigError(ValueError):
    """A setting is unknown, has the wrong type or an impossible value, or the file is unusable.

    `key` names what is at fault: a setting, an unknown key of the file, or the file's path.
    (`DQ_*` variables that are not settings are no error: see `unknown_env`.)
    `str(err)` is the single line `config: <key>: <problem>`; start-up prints it and exits 2.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = _one_line(str(key))
        self.problem = _one_line(problem)
        super().__init__(f"config: {self.key}: {self.problem}")


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. Build it with `parse` or `load`, which check it.

    Secrets are left out of `repr()`; use `masked()` to show or log a Config.
    """

    node_name: str = "orchestrator@127.0.0.1"  # name@host; host is where peers reach us
    cookie: str = field(default="change-me", repr=False)  # secret: HMAC key for raft datagrams
    data_dir: str = "./var/dqorch"
    http_host: str = "127.0.0.1"
    http_port: int = 8081
    metrics_port: int = 9101
    raft_port: int = 9105  # UDP
    raft_peers: tuple[str, ...] = ()  # "name@host" or "name@host:port"; never this node
    rabbitmq_host: str = "127.0.0.1"
    rabbitmq_port: int = 5672
    rabbitmq_username: str = "guest"
    rabbitmq_password: str = field(default="guest", repr=False)  # secret
    rabbitmq_vhost: str = "/"
    publish_on_register: bool = True
    job_max_retries: int = 3
    job_execution_timeout_s: int = 300
    worker_heartbeat_timeout_s: float = 30.0
    job_retry_backoff_s: float = 0.0  # delay before retry n is this * 2**(n-1); 0: at once
    job_retention_s: int = 86400  # terminal jobs older than this are evicted
    job_retention_max: int = 1000000  # most jobs held; oldest terminal ones go first
    max_body_bytes: int = 1048576
    max_job_bytes: int = 60000  # <= max_body_bytes
    log_level: str = "info"  # lowercase, one of LOG_LEVELS
    log_format: str = "text"  # one of LOG_FORMATS
    publish_window: int = 1000  # most unconfirmed messages in flight to RabbitMQ
    snapshot_entries: int = 100000  # log entries between snapshots
    allowed_origins: tuple[str, ...] = ()  # browser origins allowed to write, besides our own
    allowed_hosts: tuple[str, ...] = ()  # Host names the API answers to, besides its own; "*": any
    http_request_timeout_s: float = 30.0  # headers: in all; body: longest pause
    http_idle_timeout_s: float = 75.0  # a keep-alive connection idle longer is closed
    http_server: str = "httptools"  # the HTTP front end of every port: one of HTTP_SERVERS
    max_list_bytes: int = 4194304  # a GET /api/jobs page ends early past this many bytes
    # AMQP heartbeat: pika drops a connection that received nothing for a whole check
    # interval of this + 5 s, so a silent broker is noticed within 2 x (this + 5) s.
    api_tokens: tuple[str, ...] = field(default=(), repr=False)  # secret: bearer tokens, all routes
    api_read_tokens: tuple[str, ...] = field(default=(), repr=False)  # secret: GETs and /metrics only
    allow_from: tuple[str, ...] = ()  # CIDRs that may connect to the API and metrics ports
    max_batch_jobs: int = 1000  # most jobs in one POST /api/jobs/batch
    max_batch_body_bytes: int = 16777216  # body limit of POST /api/jobs/batch
    max_pending_proposals: int = 5000  # client writes waiting for the log; beyond: 503
    rabbitmq_heartbeat_s: int = 10
    raft_heartbeat_ms: int = 100  # leader heartbeat, and the tick of every Raft timer
    raft_election_timeout_ms: int = 1000  # silence before an election: random in [this, 2x)
    witness: bool = False  # Raft only: votes and stores the log, never a lasting leader
    leader_broker_handover_s: float = 10.0  # a leader without RabbitMQ this long hands over; 0: never
    max_clock_skew_s: float = 5.0  # a wall clock further off the cluster's: degraded; a leader hands over
    metrics_job_types: int = 20  # job types with metrics of their own; the rest are "other"
    api_advertise: str = ""  # host:port peers forward writes to; "": http_host (or node_name's host):http_port
    tls_cert_file: str = ""  # PEM certificate (chain) of the API; with tls_key_file: HTTPS
    tls_key_file: str = ""  # PEM private key of tls_cert_file
    tls_ca_file: str = ""  # PEM CAs that sign the peers' API certificates; "": the system's
    rabbitmq_tls: bool = False  # AMQP over TLS (RabbitMQ's TLS port is usually 5671)
    rabbitmq_tls_ca_file: str = ""  # PEM CAs that sign the broker's certificate; "": the system's
    rabbitmq_tls_server_name: str = ""  # name checked in the broker's certificate; "": rabbitmq_host

    @property
    def node_id(self) -> str:
        """The name part of `node_name` (before the "@"). The cluster identity is `node_name`."""
        return self.node_name.split("@", 1)[0]

    @property
    def node_host(self) -> str:
        """The host part of `node_name` (after the "@"): where peers reach this node."""
        return self.node_name.split("@", 1)[1]

    @property
    def peer_endpoints(self) -> tuple[tuple[str, str, int], ...]:
        """(node_name, host, udp_port) of each peer; a peer without a port uses our raft_port."""
        out = []
        for peer in self.raft_peers:
            name, host, port = split_peer(peer)
            out.append((f"{name}@{host}", host, self.raft_port if port is None else port))
        return tuple(out)

    def masked(self) -> dict[str, Any]:
        """Every field as a JSON-safe value (tuples become lists), secrets replaced by "***"."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRETS:
                value = MASK
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


# Value checks ###############################################################

class _Invalid(Exception):
    """Raised by a converter; `parse` turns it into a ConfigError naming the key.

    With `show_value` the message is followed by ", got <value>" (never for a secret).
    """

    def __init__(self, message: str, show_value: bool = True, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.show_value = show_value
        self.hint = hint


# A converter takes the raw value and whether it came from the environment (then it is a
# str) rather than from YAML (then it is whatever YAML made of it), and returns the value.
Converter = Callable[[Any, bool], Any]

_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_NAME = r"[A-Za-z0-9_.-]+"
_NODE_RE = re.compile(rf"({_NAME})@({_NAME})")
_PEER_RE = re.compile(rf"({_NAME})@({_NAME})(?::([0-9]+))?")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _quoted_number_hint(v: Any, from_env: bool) -> str:
    if not from_env and isinstance(v, str) and _FLOAT_RE.fullmatch(v.strip()):
        return " (a quoted string in YAML: remove the quotes)"
    return ""


def _integer(lo: int, hi: int) -> Converter:
    expected = f"must be an integer {lo}-{hi}"

    def convert(v: Any, from_env: bool) -> int:
        if from_env:
            if len(v) > 40 or not _INT_RE.fullmatch(v.strip()):  # int() refuses >4300 digits
                raise _Invalid(expected)
            n = int(v)
        elif _is_int(v):
            n = v
        else:  # a YAML float, bool or string is a mistake, not something to round
            raise _Invalid(expected, hint=_quoted_number_hint(v, from_env))
        if not lo <= n <= hi:
            raise _Invalid(expected)
        return n

    return convert


def _seconds(hi: float, zero_ok: bool = False) -> Converter:
    expected = f"must be a number of seconds {'>=' if zero_ok else '>'} 0 and <= {hi:g}"

    def convert(v: Any, from_env: bool) -> float:
        if from_env:
            if len(v) > 40 or not _FLOAT_RE.fullmatch(v.strip()):
                raise _Invalid(expected)
            x = float(v)
        elif _is_int(v) or isinstance(v, float):
            x = float(v)
        else:
            raise _Invalid(expected, hint=_quoted_number_hint(v, from_env))
        if not (math.isfinite(x) and (0 < x or (zero_ok and x == 0)) and x <= hi):
            raise _Invalid(expected)
        return x

    return convert


def _boolean(v: Any, from_env: bool) -> bool:
    expected = "must be true or false"
    if from_env:
        word = v.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _Invalid(expected + " (or yes/no, on/off, 1/0)")
    if isinstance(v, bool):
        return v
    raise _Invalid(expected)


def _text(v: Any, from_env: bool, expected: str) -> str:
    """A YAML number is taken as its decimal text (passwords like 1234); `load` goes further
    and keeps any plain scalar exactly as written, so 0123 stays "0123"."""
    if from_env or isinstance(v, str):
        s = v
    elif _is_int(v) or isinstance(v, float):
        s = str(v)
    else:
        raise _Invalid(expected)
    if not s:
        raise _Invalid(expected)
    return s


def _string(expected: str = "must be a non-empty string",
            pattern: re.Pattern[str] | None = None) -> Converter:
    def convert(v: Any, from_env: bool) -> str:
        s = _text(v, from_env, expected)
        if pattern is not None and not pattern.fullmatch(s):
            raise _Invalid(expected)
        return s

    return convert


def _choice(options: tuple[str, ...]) -> Converter:
    expected = "must be one of " + ", ".join(options)

    def convert(v: Any, from_env: bool) -> str:
        s = _text(v, from_env, expected).strip().lower()
        if s not in options:
            raise _Invalid(expected)
        return s

    return convert


def split_peer(peer: str) -> tuple[str, str, int | None]:
    """Split "name@host[:port]" into (name, host, port or None). Raises ValueError."""
    m = _PEER_RE.fullmatch(peer)
    if m is None:
        raise ValueError(f"not name@host[:port]: {peer!r}")
    port = None if m.group(3) is None else int(m.group(3))
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port out of range: {peer!r}")
    return m.group(1), m.group(2), port


def _peers(v: Any, from_env: bool) -> tuple[str, ...]:
    expected = "must be a list of name@host or name@host:port (port 1-65535)"
    if isinstance(v, str):  # "a@h1,b@h2"; blank items (a trailing comma, "") are ignored
        items = [item.strip() for item in v.split(",") if item.strip()]
    elif isinstance(v, list):
        items = []
        for item in v:
            if not isinstance(item, str) or not item.strip():
                raise _Invalid(f"{expected}, got an entry {_describe(item, False)}", False)
            items.append(item.strip())
    else:
        raise _Invalid(expected)
    seen: set[str] = set()
    for item in items:
        try:
            name, host, _ = split_peer(item)
        except ValueError:
            raise _Invalid(f"{expected}, got an entry {_describe(item, False)}", False) from None
        node = f"{name}@{host}"
        if node in seen:
            raise _Invalid(f"lists node {node} twice", False)
        seen.add(node)
    return tuple(items)


_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9_.\-\[\]:]+")


def _origins(v: Any, from_env: bool) -> tuple[str, ...]:
    """Origins as a browser sends them (scheme://host[:port], no path): a list, or one
    comma-separated string."""
    expected = "must be a list of origins like https://console.example:8443 (no path)"
    if isinstance(v, str):
        items = [item.strip() for item in v.split(",") if item.strip()]
    elif isinstance(v, list):
        items = v
    else:
        raise _Invalid(expected)
    for item in items:
        if not isinstance(item, str) or not _ORIGIN_RE.fullmatch(item):
            raise _Invalid(f"{expected}, got an entry {_describe(item, False)}", False)
    return tuple(item.lower() for item in items)


_HOSTNAME_RE = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,252})")


def _hosts(v: Any, from_env: bool) -> tuple[str, ...]:
    """Names or addresses as a Host header carries them, without a port (any port
    matches): a list, or one comma-separated string; "*" alone turns the check off."""
    import ipaddress
    expected = ("must be a list of host names or addresses without a port, like "
                "orch.example or 10.0.0.5 (or \"*\" for any)")
    out = []
    for item in _items(v, expected):
        name = item.strip().lower() if isinstance(item, str) else None
        if name and name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        if name and name != "*" and not _HOSTNAME_RE.fullmatch(name.rstrip(".")):
            try:
                name = str(ipaddress.ip_address(name))
            except ValueError:
                name = None
        if not name:
            raise _Invalid(f"{expected}, got an entry {_describe(item, False)}", False)
        out.append(name.rstrip(".") if name != "*" else name)
    if "*" in out and len(out) > 1:
        raise _Invalid("\"*\" (any host) must be the only entry", False)
    return tuple(out)


def _items(v: Any, expected: str) -> list:
    """A YAML list, or one comma-separated string (the environment's form)."""
    if isinstance(v, str):
        return [item.strip() for item in v.split(",") if item.strip()]
    if isinstance(v, list):
        return v
    raise _Invalid(expected)


_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")


def _tokens(v: Any, from_env: bool) -> tuple[str, ...]:
    expected = ("must be a list of tokens of 16-256 characters (letters, digits, "
                "._~+/=-)")
    if not from_env and not isinstance(v, list):      # YAML: a list, nothing else
        raise _Invalid(expected)
    items = _items(v, expected)
    for item in items:
        if not isinstance(item, str) or not _TOKEN_RE.fullmatch(item):
            raise _Invalid(expected, show_value=False)     # never echo a token
    return tuple(items)


def _cidrs(v: Any, from_env: bool) -> tuple[str, ...]:
    import ipaddress
    expected = "must be a list of addresses or networks like 10.0.0.0/8 or ::1"
    out = []
    for item in _items(v, expected):
        try:
            out.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            raise _Invalid(f"{expected}, got an entry {_describe(item, False)}", False)
    return tuple(out)


_HOST = "must be a host name or address (non-empty, no spaces)"
_path = _string("must be a path", re.compile(r"[^\x00]+"))
_HOST_PORT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def _host_port(v: Any, from_env: bool) -> str:
    expected = "must be host:port (port 1-65535), e.g. 10.0.0.5:8081"
    s = _text(v, from_env, expected).strip()
    m = _HOST_PORT_RE.fullmatch(s)
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise _Invalid(expected)
    return s


def _optional(convert: Converter) -> Converter:
    """"" (or only spaces) means not set; anything else must pass `convert`."""
    def optional(v: Any, from_env: bool) -> Any:
        if (from_env or isinstance(v, str)) and not v.strip():
            return ""
        return convert(v, from_env)

    return optional


MAX_CLUSTER_BODY_BYTES = 16 << 20
_SPECS: dict[str, Converter] = {
    "node_name": _string("must be name@host (name and host made of letters, digits, '_', '.', '-')",
                         _NODE_RE),
    "cookie": _string(),
    "data_dir": _string("must be a non-empty path", re.compile(r"[^\x00]+")),
    "http_host": _string(_HOST, re.compile(r"\S+")),
    "http_port": _integer(1, 65535),
    "metrics_port": _integer(1, 65535),
    "raft_port": _integer(1, 65535),
    "raft_peers": _peers,
    "rabbitmq_host": _string(_HOST, re.compile(r"\S+")),
    "rabbitmq_port": _integer(1, 65535),
    "rabbitmq_username": _string(),
    "rabbitmq_password": _string(),
    "rabbitmq_vhost": _string(),
    "publish_on_register": _boolean,
    "job_max_retries": _integer(0, 100),
    "job_execution_timeout_s": _integer(1, 604800),
    "worker_heartbeat_timeout_s": _seconds(86400),
    "job_retry_backoff_s": _seconds(86400, zero_ok=True),
    "job_retention_s": _integer(1, 315360000),
    "job_retention_max": _integer(1, 1000000000),
    "max_body_bytes": _integer(1024, 67108864),
    "max_job_bytes": _integer(1024, 67108864),  # and <= max_body_bytes, checked below
    "log_level": _choice(LOG_LEVELS),
    "log_format": _choice(LOG_FORMATS),
    "publish_window": _integer(1, 100000),
    "snapshot_entries": _integer(1000, 100000000),
    "allowed_origins": _origins,
    "allowed_hosts": _hosts,
    "http_request_timeout_s": _seconds(3600),
    "http_idle_timeout_s": _seconds(86400),
    "http_server": _choice(HTTP_SERVERS),
    "max_list_bytes": _integer(65536, 1073741824),
    "api_tokens": _tokens,
    "api_read_tokens": _tokens,
    "allow_from": _cidrs,
    "max_batch_jobs": _integer(1, 100000),
    "max_batch_body_bytes": _integer(1024, 1073741824),
    "max_pending_proposals": _integer(10, 1000000),
    "rabbitmq_heartbeat_s": _integer(1, 600),
    "raft_heartbeat_ms": _integer(10, 10000),
    "raft_election_timeout_ms": _integer(100, 60000),  # and >= 3 x raft_heartbeat_ms
    "witness": _boolean,
    "leader_broker_handover_s": _seconds(3600, zero_ok=True),
    "max_clock_skew_s": _seconds(86400),
    "metrics_job_types": _integer(0, 1000),
    "api_advertise": _optional(_host_port),
    "tls_cert_file": _optional(_path),
    "tls_key_file": _optional(_path),
    "tls_ca_file": _optional(_path),
    "rabbitmq_tls": _boolean,
    "rabbitmq_tls_ca_file": _optional(_path),
    "rabbitmq_tls_server_name": _optional(_string(_HOST, re.compile(r"\S+"))),
}
if list(_SPECS) != [f.name for f in fields(Config)]:
    raise RuntimeError("config: every Config field needs exactly one entry in _SPECS, in order")
KEYS = tuple(_SPECS)
# Settings whose value is text: `load` keeps a plain YAML scalar here exactly as written.
_TEXT_KEYS = frozenset(f.name for f in fields(Config) if f.type == "str")


def _one_line(s: str) -> str:
    lines = s.splitlines()  # also \v, \f, \x1c-\x1e, \x85, \u2028, \u2029
    return " ".join(" ".join(lines).split()) if len(lines) > 1 or s.endswith("\n") else s


def _describe(v: Any, secret: bool) -> str:
    """What a bad value looks like in a message: short, one line, never a secret's value."""
    if isinstance(v, bool):
        return "a boolean" if secret else ("true" if v else "false")
    if v is None:
        return "null"
    if isinstance(v, str):
        if secret:
            return "an empty string" if not v else "a string"
        return repr(v) if len(v) <= 60 else repr(v[:57]) + "..."
    if _is_int(v) or isinstance(v, float):
        if secret:
            return "a number"
        return repr(v) if not _is_int(v) or abs(v) < 10**30 else "a very large integer"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return f"a value of type {type(v).__name__}"


def _unknown(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return "unknown key" + (f"; did you mean {close[0]}?" if close else "")


# Kubernetes service links #####################################################

# For every Service in its namespace Kubernetes puts <SVC>_SERVICE_HOST,
# <SVC>_SERVICE_PORT[_<port name>], <SVC>_PORT=tcp://ip:port and
# <SVC>_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR] into each pod's environment (unless the pod
# says enableServiceLinks: false). A Service named dq or dq-<anything> makes them DQ_*.
_LINK_NAME_RE = re.compile(r"[A-Z0-9_]+?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?"
                           r"|PORT_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)")
_LINK_VALUE_RE = re.compile(r"(tcp|udp|sctp)://[^\s/]+:[0-9]+")
SERVICE_LINK_FIX = "set enableServiceLinks: false on the pod"
_MAX_NAMES_SHOWN = 20


def _is_service_link(name: str, value: str) -> bool:
    """Whether NAME=value looks like a Kubernetes service link. A bare <SVC>_PORT counts
    only with a tcp://host:port value: DQ_METRIC_PORT=9101 is a misspelt setting."""
    return bool(_LINK_NAME_RE.fullmatch(name) or (
        name.endswith("_PORT") and _LINK_VALUE_RE.fullmatch(value.strip())))


def _service_link_hint(var: str, value: str) -> str:
    """For a setting's bad value from the environment: a hint when it is a service link
    (DQ_RABBITMQ_PORT=tcp://10.0.0.7:5672 comes from a Service named dq-rabbitmq)."""
    if not _LINK_VALUE_RE.fullmatch(value.strip()):
        return ""
    service = ""
    if var.upper().endswith("_PORT"):
        service = f" (for a Service named {var[:-len('_PORT')].lower().replace('_', '-')})"
    return f"; this looks like a Kubernetes service link{service}: {SERVICE_LINK_FIX}"


def _not_settings(env: Mapping[str, str]) -> list[tuple[str, bool]]:
    """(entry, is a service link) for each DQ_* variable of env that is not a setting."""
    out = []
    candidates = [ENV_PREFIX + k.upper() for k in KEYS]
    for name in sorted(env):
        if (not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS
                or name[len(ENV_PREFIX):].lower() in _SPECS):
            continue
        entry, link = _one_line(name), _is_service_link(name, env[name])
        if not link:
            close = difflib.get_close_matches(name.upper(), candidates, n=1, cutoff=0.6)
            if close:
                entry += f" (did you mean {close[0]}?)"
        out.append((entry, link))
    return out


def unknown_env(env: Mapping[str, str]) -> list[str]:
    """The `DQ_*` variables in `env` that are not settings (NOT_SETTINGS aside), sorted.

    Pure. Each entry is the variable's name, followed by " (did you mean DQ_X?)" when it
    is close to a setting's and does not look like a Kubernetes service link. Values are
    never included (a misspelt DQ_RABBITMQ_PASWORD holds a password).
    """
    return [entry for entry, _ in _not_settings(env)]


def unknown_env_warning(env: Mapping[str, str]) -> str | None:
    """The one line start-up logs about `unknown_env(env)`; None when there is nothing.

    Pure. Service links are listed apart, with the fix. At most 20 names of each kind
    are shown, then "and N more".
    """
    found = _not_settings(env)
    if not found:
        return None
    links = [entry for entry, link in found if link]
    others = [entry for entry, link in found if not link]

    def names(entries: list[str]) -> str:
        more = len(entries) - _MAX_NAMES_SHOWN
        return ", ".join(entries[:_MAX_NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")

    parts = [names(others)] if others else []
    if links:
        parts.append(f"Kubernetes service links {names(links)} ({SERVICE_LINK_FIX} "
                     f"to stop them)")
    what = ("1 DQ_* environment variable that is not a setting" if len(found) == 1
            else f"{len(found)} DQ_* environment variables that are not settings")
    return f"ignoring {what}: " + "; ".join(parts)


# Parsing ####################################################################

def parse(raw: Mapping[str, Any] | None, env: Mapping[str, str], *,
          source: str = "<file>") -> Config:
    """Validate the YAML mapping `raw` (None = empty) with `DQ_<KEY>` overrides from `env`.

    Pure: reads nothing else. Every key is optional. Checks, in this order: the top level
    is a mapping (else the ConfigError's key is `source`), no unknown key in `raw`, then
    each key in field order (the environment's value wins over the file's and only the
    winner is checked), then the rules between keys. The first problem found raises
    ConfigError. `DQ_*` variables that are not settings are ignored here (Kubernetes
    puts its service links into every pod, and a Service named dq-... makes them DQ_*);
    `unknown_env` lists them for a warning.

    Types: from YAML an integer key needs an int (not a bool, not a float, not a quoted
    number), worker_heartbeat_timeout_s an int or float, a bool key a bool, a text key a
    string or a number (taken as its text), raft_peers a list of strings or one
    comma-separated string. From the environment every value is text: integers, numbers,
    true/false/yes/no/on/off/1/0 (any case), and raft_peers as "a@h1,b@h2:9106" ("" = none).
    An entry of raft_peers that names this node (same name@host, no port or our raft_port)
    is dropped, so every node of a cluster can be given the same list.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(source, f"must be a mapping of settings (key: value), "
                                  f"got {_describe(raw, False)}")
    for key in raw:
        if key not in _SPECS:
            raise ConfigError(str(key), _unknown(str(key).lower(), list(KEYS)))
    overrides: dict[str, tuple[str, str]] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key in _SPECS:
            overrides[key] = (env[name], name)

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}  # key -> " (from DQ_X)" when the environment set it
    for key, convert in _SPECS.items():
        if key in overrides:
            value, var = overrides[key]
            from_env, origin[key] = True, f" (from {var})"
        elif key in raw:
            value, from_env = raw[key], False
        else:
            continue
        try:
            values[key] = convert(value, from_env)
        except _Invalid as bad:
            problem = bad.message
            if bad.show_value:
                problem += f", got {_describe(value, key in SECRETS)}{bad.hint}"
            problem += origin.get(key, "")
            if from_env and key not in SECRETS:
                problem += _service_link_hint(overrides[key][1], value)
            raise ConfigError(key, problem) from None

    cfg = Config(**values)
    _check_across(cfg, origin)
    peers = _without_self(cfg, origin)
    if peers != cfg.raft_peers:
        cfg = Config(**{**values, "raft_peers": peers})
    return cfg


def _check_across(cfg: Config, origin: Mapping[str, str]) -> None:
    if cfg.max_job_bytes > cfg.max_body_bytes:
        raise ConfigError("max_job_bytes", f"must be an integer 1024-{cfg.max_body_bytes} "
                          f"(at most max_body_bytes), got {cfg.max_job_bytes}"
                          + origin.get("max_job_bytes", ""))
    if cfg.raft_peers and cfg.max_body_bytes > MAX_CLUSTER_BODY_BYTES:
        # One command travels as one message between members (raft/node.py).
        raise ConfigError("max_body_bytes", f"must be at most {MAX_CLUSTER_BODY_BYTES} in "
                          f"a cluster (raft_peers set), got {cfg.max_body_bytes}"
                          + origin.get("max_body_bytes", ""))
    if cfg.raft_election_timeout_ms < 3 * cfg.raft_heartbeat_ms:
        raise ConfigError("raft_election_timeout_ms", f"must be at least 3 x "
                          f"raft_heartbeat_ms ({3 * cfg.raft_heartbeat_ms}), got "
                          f"{cfg.raft_election_timeout_ms}"
                          + origin.get("raft_election_timeout_ms", ""))
    if bool(cfg.tls_cert_file) != bool(cfg.tls_key_file):
        key = "tls_key_file" if cfg.tls_cert_file else "tls_cert_file"
        raise ConfigError(key, "must be set together with "
                          + ("tls_cert_file" if key == "tls_key_file" else "tls_key_file")
                          + origin.get(key, ""))
    if cfg.metrics_port == cfg.http_port:
        raise ConfigError("metrics_port", f"must differ from http_port, both are "
                          f"{cfg.http_port}" + origin.get("metrics_port", ""))


def _without_self(cfg: Config, origin: Mapping[str, str]) -> tuple[str, ...]:
    kept = []
    for peer in cfg.raft_peers:
        name, host, port = split_peer(peer)
        if f"{name}@{host}" != cfg.node_name:
            kept.append(peer)
        elif port is not None and port != cfg.raft_port:
            raise ConfigError("raft_peers", f"names this node ({cfg.node_name}) with port "
                              f"{port}, but raft_port is {cfg.raft_port}"
                              + origin.get("raft_peers", ""))
    return tuple(kept)


# Reading the file ###########################################################

_SCALAR_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                          "tag:yaml.org,2002:bool"})


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file at `path` and `parse` it with `env` (default: os.environ).

    A missing or unreadable file, a YAML error, or a key written twice raises ConfigError
    (key: the path, or the key written twice), as one line that quotes nothing of the file.
    """
    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(where, f"cannot read the file: {e.strerror or e}") from None
    raw = _read_yaml(data, where)
    return parse(raw, os.environ if env is None else env, source=where)


def _read_yaml(data: bytes, where: str) -> Any:
    loader = None
    try:
        loader = yaml.SafeLoader(data)  # already decodes the start of the file
        node = loader.get_single_node()
        if node is None:  # empty file, or only comments
            return None
        pairs = node.value if isinstance(node, yaml.MappingNode) else []
        _check_duplicates(pairs, where)
        raw = loader.construct_document(node)
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as e:
        # Not str(e): it quotes the offending line, which may hold a secret.
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(where, f"invalid YAML{at}: {e.problem or e.context}") from None
    except (yaml.YAMLError, ValueError, TypeError) as e:  # bad encoding, bad !!int, ...
        raise ConfigError(where, f"invalid YAML: {e}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if isinstance(raw, dict):
        # YAML 1.1 turns plain 0123 into 83, 1_000 into 1000 and yes into true. For a text
        # setting (a password, say) keep what was written, not what YAML made of it.
        for key_node, value_node in pairs:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if (key in _TEXT_KEYS and key in raw and isinstance(value_node, yaml.ScalarNode)
                    and value_node.style is None and value_node.tag in _SCALAR_TAGS):
                raw[key] = value_node.value
    return raw


def _check_duplicates(pairs: list[tuple[yaml.Node, yaml.Node]], where: str) -> None:
    seen: dict[str, int] = {}
    for key_node, _ in pairs:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        line = key_node.start_mark.line + 1
        if key_node.value in seen:
            raise ConfigError(key_node.value, f"is set twice in {where} "
                              f"(lines {seen[key_node.value]} and {line})")
        seen[key_node.value] = line
