"""A request's header fields, read for pywsgi (its MessageClass).

pywsgi reads headers with http.client.parse_headers, which goes through the email
package: 10-12% of the node's CPU in the pipeline bench (py-spy), 20.8 µs for seven
fields against 4.9 µs for this reader (bench/headers.py). It also refuses what RFC 9112
says a server must refuse, where the email parser repaired or ignored it:

- a field line without a colon, a name that is not a token, or whitespace before the
  colon (§5.1), and obsolete line folding (§5.2): 400;
- a second Content-Length or Transfer-Encoding, a Content-Length that is not digits
  (int() reads "+5" and "1_0"), a bare CR or a NUL in a value (framing a proxy may
  read otherwise: a bare CR ends a line for some);
- more than MAX_FIELDS fields or a line longer than MAX_LINE (http.client's limits).

A refusal sets `status`; pywsgi then answers 400 and closes the connection.
"""
from __future__ import annotations

import re

MAX_FIELDS = 100
MAX_LINE = 65536
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SINGLE = ("content-length", "transfer-encoding")   # framing: one of each at most
_END = (b"\r\n", b"\n", b"")                        # b"": the client closed


class Smuggling(ValueError):
    """Framing a proxy and this server could read differently (RFC 9112 §6.1)."""


class Headers:
    """The fields in arrival order, and the first value of each name by its lower-case
    name. The methods are the ones pywsgi uses (get, getheader, typeheader, headers,
    del)."""

    __slots__ = ("status", "fields", "_first")

    def __init__(self) -> None:
        self.status = ""          # why the fields were refused; "" when they were not
        self.fields: list[tuple[str, str]] = []
        self._first: dict[str, str] = {}

    def get(self, name: str, default=None):
        return self._first.get(name.lower(), default)

    getheader = get

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._first

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        # pywsgi drops Content-Length when Transfer-Encoding is chunked; RFC 9112 says
        # a server must refuse such a request: behind a proxy it is request smuggling.
        if key == "content-length" and key in self._first:
            raise Smuggling("both Transfer-Encoding and Content-Length")
        self._first.pop(key, None)
        self.fields = [f for f in self.fields if f[0].lower() != key]

    @property
    def typeheader(self):
        return self._first.get("content-type")

    @property
    def headers(self):
        for name, value in self.fields:
            yield f"{name}: {value}\r\n"


def read(fp) -> Headers:
    """The fields from fp (a binary file positioned after the request line), up to and
    including the empty line that ends them."""
    h = Headers()
    first = h._first
    for _ in range(MAX_FIELDS + 1):
        line = fp.readline(MAX_LINE + 1)
        if line in _END:
            return h
        if len(line) > MAX_LINE:
            h.status = "Line too long"
            return h
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            h.status = "Invalid header line"
            return h
        value = value.strip(b" \t\r\n")
        # A bare CR ends a line for others. The bytes as ints: `b"\r" in value` first
        # tries b"\r" as an int and formats a TypeError it then drops (0.46 against
        # 0.04 µs; 11 such exceptions a register before: callgrind).
        if 13 in value or 0 in value:
            h.status = "Invalid header value"
            return h
        key = name.decode("latin-1")
        low = key.lower()
        if low == "content-length" and not value.isdigit():   # int() takes "+5", "1_0"
            h.status = "Invalid Content-Length"
            return h
        text = value.decode("latin-1")
        if low in first:
            if low in _SINGLE:
                h.status = f"Duplicate {key}"
                return h
        else:
            first[low] = text
        h.fields.append((key, text))
    h.status = f"More than {MAX_FIELDS} header fields"
    return h
