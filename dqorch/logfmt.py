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


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the message's arguments escaped as for text (JSON
    would keep a newline inside the string, and a reader printing "msg" prints it)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record), "level": record.levelname.lower(),
               "logger": record.name, "msg": message(record)}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)
