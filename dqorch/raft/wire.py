"""Raft messages (core.Message) as bytes: one JSON object per message, the defaults
left out. Pure; the transport authenticates the bytes before they come here.

Rule 1: decode() trusts nothing but the HMAC that let the bytes in: every field is
type-checked, and anything else raises ValueError (counted as "bad_message" and
dropped by the caller). The sender is the authenticated name, never a field.

Payloads that are not Raft messages start with another byte than b"{": b"C"/b"A"
snapshot chunks and acks (snapshot_transfer.py), b"W" worker ages (cluster.py), b"R"
"your messages are refused, I list other members" (node.py).
"""
from __future__ import annotations

import json

import orjson

from . import codec
from . import core as C

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_TYPES = frozenset({C.PRE_VOTE, C.PRE_VOTE_RESP, C.VOTE, C.VOTE_RESP, C.APPEND,
                    C.APPEND_RESP, C.TIMEOUT_NOW})   # SNAPSHOT travels as chunks
_INTS = ("term", "index", "log_term", "commit", "hint")
_STRS = ("context", "api", "sid", "digest")
MAX_INT = 1 << 62


def encode(m: C.Message, sid: str = "", digest: str = "") -> bytes:
    """sid: the sender's member id, stamped on every message; digest: the members it
    lists while its configuration is the base (gate.py)."""
    out = {"t": m.type, "to": m.to}
    for k in _INTS:
        v = getattr(m, k)
        if v:
            out[k] = v
    for k in _STRS:
        v = getattr(m, k)
        if v:
            out[k] = v
    if sid:
        out["sid"] = sid
    if digest:
        out["digest"] = digest
    if m.reject:
        out["reject"] = True
    if m.entries:
        # An applied entry's data is its command's JSON (node.py _compact): spliced.
        out["e"] = [[e.index, e.term, orjson.Fragment(e.data) if type(e.data) is bytes
                     else e.data] for e in m.entries]
    try:
        return orjson.dumps(out)
    except TypeError:               # an integer beyond 64 bits: the stdlib, no Fragment
        if m.entries:
            out["e"] = [[e.index, e.term, codec.loads(e.data) if type(e.data) is bytes
                         else e.data] for e in m.entries]
        return _dumps(out).encode("utf-8")


def decode(sender: str, me: str, payload: bytes) -> C.Message:
    """The message `sender` sent to `me`. ValueError: not a well-formed message."""
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not JSON: {e}")
    if type(d) is not dict:
        raise ValueError("not an object")
    t = d.get("t")
    if t not in _TYPES:
        raise ValueError(f"unknown type {t!r}")
    if d.get("to") != me:
        raise ValueError(f"addressed to {d.get('to')!r}")
    fields = {}
    for k in _INTS:
        v = d.get(k, 0)
        if type(v) is not int or not 0 <= v < MAX_INT:
            raise ValueError(f"{k} is not a non-negative integer")
        fields[k] = v
    for k in _STRS:
        v = d.get(k, "")
        if type(v) is not str or len(v) > 300:
            raise ValueError(f"{k} is not a short string")
        fields[k] = v
    reject = d.get("reject", False)
    if type(reject) is not bool:
        raise ValueError("reject is not a boolean")
    entries = d.get("e", [])
    if type(entries) is not list or (entries and t != C.APPEND):
        raise ValueError("entries is not a list (or not on an append)")
    out = []
    want = fields["index"] + 1
    for e in entries:
        if type(e) is not list or len(e) != 3 or type(e[0]) is not int \
                or type(e[1]) is not int or e[0] != want or not 0 < e[1] < MAX_INT \
                or not (e[2] is None or type(e[2]) is dict):
            raise ValueError("an entry is not [index, term, command] in sequence")
        out.append(C.Entry(e[0], e[1], e[2]))
        want += 1
    return C.Message(t, frm=sender, to=me, reject=reject, entries=tuple(out), **fields)
