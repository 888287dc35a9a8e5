"""JSON as the node writes and reads it: orjson, with the stdlib where orjson would be
wrong. orjson is ~5-10x the stdlib's speed (bench figures in the README) and splices
orjson.Fragment (stored payloads) without decoding them. Its one gap: integers beyond
64 bits, which JSON allows and a payload may hold. It refuses to write them, and reads
them as floats, silently: so a document with a run of 19 digits is read by the stdlib.
And it writes at most 254 levels of nesting while it reads 1,024, where the stdlib does
~990 both ways: a document with more than 254 brackets is read by the stdlib too, so
whatever is read can be written (the stdlib writes what orjson cannot).
Both paths refuse NaN and Infinity (JSON has neither) and numbers that overflow.
In raft/ because the log and the wire encode commands with it and raft/ imports
nothing of dqorch outside raft/; dqorch/codec.py names it for everyone else."""
from __future__ import annotations

import json
import math

import orjson

# 2**63 has 19 digits; a run of them in a string sends it to the stdlib too. Digits to
# "0", the rest to ".", then a substring test: 0.3 µs for a report body, a regex 1.1.
_DIGITS = bytes(48 if 48 <= b <= 57 else 46 for b in range(256))
_LONG_RUN = b"0" * 19
_ORJSON_DEPTH = 254                          # the nesting orjson.dumps can write


def _no_constant(name: str):
    # Python's json accepts NaN and Infinity; JSON does not, and neither would the
    # workers that get the job (or the clients that read it back).
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):          # 1e400 parses as inf: same problem as Infinity
        raise ValueError(f"number {text[:40]} is out of range")
    return v


def stdlib_loads(data):
    """The stdlib's reading, strict like orjson's; its errors say more (parse.py)."""
    return json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)


def loads(data: bytes):
    """One JSON document from UTF-8 bytes. Raises ValueError (or RecursionError)."""
    if data.count(b"[") + data.count(b"{") <= _ORJSON_DEPTH and \
            _LONG_RUN not in data.translate(_DIGITS):
        return orjson.loads(data)
    return stdlib_loads(data)


def _plain(obj):
    """Records that are not dicts (jobs.Job) serialise by to_record()."""
    to_record = getattr(obj, "to_record", None)
    if to_record is None:
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
    return to_record()


_json_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                               default=_plain).encode


def dumps(value) -> bytes:
    """Compact JSON as UTF-8 bytes. Integers beyond 64 bits and keys that are not
    strings go through the stdlib (never with a Fragment inside: user JSON in a record
    is already bytes there)."""
    try:
        return orjson.dumps(value, default=_plain)
    except TypeError:                 # orjson.JSONEncodeError
        return _json_dumps(value).encode()
