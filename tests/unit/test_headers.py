"""dqorch.headers.read: the fields pywsgi sees, and what it refuses (RFC 9112)."""
import io

import pytest

from dqorch import headers


def read(raw: bytes) -> headers.Headers:
    return headers.read(io.BytesIO(raw))


def test_fields_in_order_first_value_by_any_case():
    h = read(b"Host: a\r\nX-Two: 1\r\nx-two: 2\r\nContent-Type:  application/json \r\n\r\nBODY")
    assert h.status == ""
    assert h.fields == [("Host", "a"), ("X-Two", "1"), ("x-two", "2"),
                        ("Content-Type", "application/json")]
    assert h.get("HOST") == "a" and h.getheader("x-TWO") == "1"
    assert h.typeheader == "application/json"
    assert h.get("missing", "d") == "d" and "missing" not in h and "host" in h
    assert list(h.headers)[0] == "Host: a\r\n"


def test_reading_stops_at_the_empty_line():
    fp = io.BytesIO(b"A: 1\n\nB: 2\r\n\r\n")
    assert read(fp.getvalue()).fields == [("A", "1")]
    headers.read(fp)
    assert fp.read() == b"B: 2\r\n\r\n"


@pytest.mark.parametrize("raw,why", [
    (b"Host: a\r\n folded\r\n\r\n", "Invalid"),             # obsolete line folding
    (b"Host a\r\n\r\n", "Invalid"),                         # no colon
    (b"Host : a\r\n\r\n", "Invalid"),                       # whitespace before the colon
    (b"Ho(st: a\r\n\r\n", "Invalid"),                       # not a token
    (b"Content-Length: 1\r\ncontent-length: 1\r\n\r\n", "Duplicate"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "Duplicate"),
    (b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", "More than 100"),
    (b"X: " + b"a" * 65536 + b"\r\n\r\n", "Line too long"),
    (b"X-A: b\rContent-Length: 5\r\n\r\n", "Invalid header value"),   # a bare CR
    (b"X-A: b\0c\r\n\r\n", "Invalid header value"),
    (b"Content-Length: 1_0\r\n\r\n", "Invalid Content-Length"),
    (b"Content-Length: +5\r\n\r\n", "Invalid Content-Length"),
    (b"Content-Length: 5\x0b\r\n\r\n", "Invalid Content-Length"),
])
def test_what_a_server_must_refuse_sets_status(raw, why):
    assert read(raw).status.startswith(why)


def test_a_hundred_fields_are_fine():
    assert read(b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n").status == ""


def test_deleting_content_length_beside_chunked_is_smuggling():
    h = read(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n")
    with pytest.raises(headers.Smuggling):
        del h["content-length"]
    h = read(b"Connection: close\r\nX: 1\r\n\r\n")
    del h["connection"]
    assert h.fields == [("X", "1")] and "connection" not in h
