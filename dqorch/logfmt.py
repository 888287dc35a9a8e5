"""Log lines that a client cannot forge: every %-argument of every log call is
escaped when the line is formatted (ours, and pika's), so a value a client chose (a
worker type, an Origin or Host header, a job id) cannot start a new line, drive the
operator's terminal or hide text behind bidirectional overrides.

Rule 1: the message template is ours and is not touched; only its arguments are.
Rule 2: numbers pass as they are (%d, %.1f keep working); anything else is formatted
by its own str or repr, then escaped: a backslash doubled, and each character below
as \\xNN or \\uNNNN, so the line reads back unambiguously.
"""
from __future__ import annotations

import datetime
import json
import logging
import re

# C0 and C1 controls (newlines, ESC, NUL, NEL), U+2028/2029 (line breaks for
# str.splitlines and some viewers), bidirectional overrides and isolates, zero-width
# characters, lone surrogates (cannot be written as UTF-8), and the backslash that
# starts an escape.
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069"
                     "\ufeff\ud800-\udfff]")


def _one(m: re.Match) -> str:
    c = m.group()
    if c == "\\":
        return "\\\\"
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def escape(text: str) -> str:
    """text with every unsafe character spelled as an escape; unchanged (the same
    object) when there is none, which is nearly always."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_one, text)


class _Escaped:
    """An argument formatted by %s or %r, then escaped."""
    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape(str(self.value))

    def __repr__(self) -> str:
        return escape(repr(self.value))


def _wrap(v):
    return v if isinstance(v, (int, float)) else _Escaped(v)


def escaped_args(args):
    """A record's args with each non-number wrapped (a mapping: each value)."""
    if isinstance(args, dict):
        return {k: _wrap(v) for k, v in args.items()}
    if isinstance(args, tuple):
        return tuple(_wrap(v) for v in args)
    return args


def message(record: logging.LogRecord) -> str:
    """record.getMessage() with its arguments escaped."""
    if not record.args:
        return str(record.msg)
    return str(record.msg) % escaped_args(record.args)


class TextFormatter(logging.Formatter):
    """logging.Formatter whose message has its arguments escaped."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        record.args = escaped_args(args)
        try:
            return super().format(record)
        finally:
            record.args = args


# A %-placeholder of a template, and the `key=` right before it.
_PLACEHOLDER = re.compile(r"(?:(\w+)=)?%(?:\(\w+\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[sdrifgxXeEc%]")
_RESERVED = frozenset(("ts", "level", "logger", "msg", "exc"))


def fields(record: logging.LogRecord) -> dict:
    """The `key=%s` pairs of our templates as {key: argument}: numbers as numbers,
    anything else as its text (JSON writes it safely; no escaping needed)."""
    args = record.args
    if not isinstance(args, tuple) or not args or not isinstance(record.msg, str):
        return {}
    out, i = {}, 0
    for m in _PLACEHOLDER.finditer(record.msg):
        if m.group(0).endswith("%%"):
            continue
        if i >= len(args):
            break
        key, v = m.group(1), args[i]
        i += 1
        if key and key not in _RESERVED:
            out[key] = v if isinstance(v, (int, float)) and not isinstance(v, bool) \
                else v if v is None or isinstance(v, bool) else str(v)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts` (ISO-8601 UTC, ms), `level`, `logger`, `msg`
    (its arguments escaped as for text: a reader printing "msg" prints it), and each
    `key=%s` of the template as a field of its own (`fields`)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        out = {"ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "level": record.levelname.lower(), "logger": record.name,
               "msg": message(record)}
        out.update(fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)
