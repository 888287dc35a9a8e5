"""Log lines a client cannot forge (dqorch/logfmt.py): every %-argument escaped, the
template and numbers untouched, in both formats."""
from __future__ import annotations

import json
import logging

import pytest

from dqorch import logfmt


def record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("dqorch.workers", logging.INFO, __file__, 1, msg, args, None)


def text(msg: str, *args) -> str:
    return logfmt.TextFormatter("%(levelname)s %(message)s").format(record(msg, *args))


@pytest.mark.parametrize("value,shown", [
    ("py\n2026-12-06 INFO dqorch.api forged", "py\\x0a2026-12-06 INFO dqorch.api forged"),
    ("a\r\x1b[2Kb", "a\\x0d\\x1b[2Kb"),
    ("nel\x85ls\u2028ps\u2029", "nel\\x85ls\\u2028ps\\u2029"),
    ("evil\u202etxt.exe\u2066", "evil\\u202etxt.exe\\u2066"),
    ("nul\x00zw\u200b\ufeff", "nul\\x00zw\\u200b\\ufeff"),
    ("back\\x0a", "back\\\\x0a"),          # a literal backslash cannot fake an escape
    ("ジョブ é", "ジョブ é"),
])
def test_arguments_are_escaped_in_one_line(value, shown):
    line = text("worker joined worker=%s type=%s", "w1", value)
    assert line == f"INFO worker joined worker=w1 type={shown}"
    assert len(line.splitlines()) == 1


def test_numbers_repr_and_mappings_keep_working():
    assert text("n=%d x=%.1f ok=%s", 3, 2.25, True) == "INFO n=3 x=2.2 ok=True"
    assert text("e=%r", ValueError("a\nb")) == "INFO e=ValueError('a\\\\nb')"
    assert text("e=%s", ValueError("a\nb")) == "INFO e=a\\x0ab"
    assert text("%(who)s", {"who": "x\ny"}) == "INFO x\\x0ay"
    assert text("no args\n kept") == "INFO no args\n kept"     # the template is ours


def test_the_record_is_left_as_it_came_for_other_handlers():
    r = record("type=%s", "a\nb")
    logfmt.TextFormatter().format(r)
    assert r.args == ("a\nb",) and r.getMessage() == "type=a\nb"


def test_json_lines_carry_the_escaped_message():
    out = json.loads(logfmt.JsonFormatter().format(record("type=%s", "a\n\x1bb")))
    assert out["msg"] == "type=a\\x0a\\x1bb" and out["logger"] == "dqorch.workers"


def test_escape_returns_safe_text_itself():
    s = "a-plain-uuid-0123"
    assert logfmt.escape(s) is s


def test_json_lines_put_each_key_as_a_field_with_an_iso_utc_time():
    r = record("job failed id=%s type=%s attempt=%d error=%s took=%.1f%% x", "j\n1",
               "etl", 2, None, 12.5)
    import datetime
    r.created = datetime.datetime(2026, 11, 18, 11, 6, 40, 123000,
                                  tzinfo=datetime.timezone.utc).timestamp()
    out = json.loads(logfmt.JsonFormatter().format(r))
    assert out["ts"] == "2026-11-18T11:06:40.123Z"
    assert (out["id"], out["type"], out["attempt"], out["error"]) == ("j\n1", "etl", 2, None)
    assert out["msg"] == "job failed id=j\\x0a1 type=etl attempt=2 error=None took=12.5% x"
    assert out["took"] == 12.5          # "%%" is no placeholder
