"""The HTTP/1.1 front end on httptools (llhttp, in C) for the same WSGI app as
http_server.py: config `http_server: httptools` (issue 30). Measured before it was
written: bottle on gevent.pywsgi 115-130 µs CPU a request, the same app called from a
gevent StreamServer parsing with httptools 38-44 µs (NOTES-machine.md).

It keeps contracts 1-7 of http_server.py's docstring: the server-level rules (draining,
TLS handshakes, out of file descriptors) are http_server.Serving's, the same class as
the pywsgi path's; the answers without the app are http_server.PROTOCOL_ERRORS; the
app reads bodies through http_server.read_body as before. What differs is below.

One greenlet a connection: it reads, feeds the parser, and answers the requests the
parser completed in the order they came (pipelining), each by calling the app. The
parser runs ahead of the app only by what one recv brought (RECV_BYTES); the body of
the request being answered is read from the socket when the app reads wsgi.input.

Framing and refusals (contract 1). llhttp refuses what headers.py refuses (checked by
tests/unit/test_http_fast.py): obs-fold, a field name that is not a token or with
whitespace before its colon, a bare CR, a NUL, two Content-Lengths or one that is not
digits, Transfer-Encoding with Content-Length. On top of it, as the pywsgi path:
any Transfer-Encoding but `chunked` (llhttp takes "gzip, chunked"), a second
Transfer-Encoding, more than headers.MAX_FIELDS fields or a field of more than
headers.MAX_LINE bytes, a version other than HTTP/1.x, HEAD with a body: 400;
a request line of MAX_REQUEST_LINE bytes or more: 414. A field line may end in LF
alone (headers.py reads those too); the request line may not (llhttp has no leniency
for it: 400 where pywsgi reads it), nor may the method be one llhttp does not know
(400 where pywsgi hands it to the app, which answers 405). A client that closes its
side inside a head whose request line came gets a 400 saying so (pywsgi took the head
as ended there and called the app). A bad chunk of the body being answered reaches the
app as a ValueError from wsgi.input (read_body: 400), and the connection then closes.

Deadlines (contract 2): idle_timeout_s for the first byte of a next request (then
closed quietly); request_timeout_s for the rest of its head, one timer from the first
byte: 408 when the request line was through, closed quietly when it was not (the
pywsgi path's two cases); request_timeout_s for each read of the body (the socket
timeout: read_body's 408). Body bytes the app did not read are skipped to keep the
connection up to DISCARD_MAX bytes; beyond, it is closed.
"""
from __future__ import annotations

import collections
import logging
import socket
import sys
import time
from urllib.parse import unquote

import gevent
import httptools
from gevent.pywsgi import LoggingLogAdapter
from gevent.server import StreamServer

from . import headers
from .http_server import PROTOCOL_ERRORS, Handler, Serving, http_date, raw_error

log = logging.getLogger(__name__)

RECV_BYTES = 65536
MAX_REQUEST_LINE = 8192       # pywsgi's: a request line this long or longer is a 414
# The most a head may take before it is parsed (llhttp keeps a field until its line
# ends): the pywsgi path's bounds, a request line and MAX_FIELDS lines of MAX_LINE.
MAX_HEAD_BYTES = MAX_REQUEST_LINE + (headers.MAX_FIELDS + 1) * headers.MAX_LINE
DISCARD_MAX = 65536           # unread body bytes skipped to keep a connection
JOIN_BODY_MAX = Handler.JOIN_BODY_MAX     # contract 6: head and body in one send
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_INTERNAL = raw_error("500 Internal Server Error", "internal error", "internal")
_NO_BODY = frozenset({204, 304})

# A field name as it arrived -> its environ key (pywsgi's rules: a name with "_" never
# reaches the app, Content-Type and Content-Length have their CGI names); bounded.
_ENV_KEYS: dict = {}
_SINGLE = frozenset({"CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"})   # framing: one each


def _env_key(name: bytes):
    key = _ENV_KEYS.get(name)
    if key is None:
        text = name.decode("latin-1")
        key = "" if "_" in text else "HTTP_" + text.replace("-", "_").upper()
        if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            key = key[5:]
        if len(_ENV_KEYS) < 512:
            _ENV_KEYS[name] = key
    return key


class _Refused(Exception):
    """Raised in a parser callback: answer this PROTOCOL_ERRORS code, then close."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _HeadTimeout(Exception):
    """The rest of a request's head did not arrive within request_timeout_s."""


class _Request:
    """One request as the parser gave it: its head, and its body as far as it came."""

    __slots__ = ("url", "env", "nfields", "method", "version", "keep", "chunked",
                 "body", "head_done", "done", "error", "line_done")

    def __init__(self) -> None:
        self.url = b""
        self.env: dict = {}           # the HTTP_ fields, CONTENT_TYPE, CONTENT_LENGTH
        self.nfields = 0
        self.body = bytearray()       # received and not yet read by the app
        self.head_done = self.done = self.line_done = False
        self.error = None             # why the body cannot be read (bad chunking)


class Input:
    """wsgi.input of one request: what the parser has of its body, and more read from
    the socket when the app wants it (each read bounded by the socket timeout)."""

    __slots__ = ("_conn", "_req", "_continue")

    def __init__(self, conn: "_Conn", req: _Request) -> None:
        self._conn, self._req = conn, req
        # pywsgi's rule: "100 Continue" before the first wait for the body.
        self._continue = req.env.get("HTTP_EXPECT") == "100-continue"

    def _more(self) -> bool:
        """Wait for more of the body; False when the client closed."""
        req = self._req
        if req.error is not None:
            raise ValueError(f"bad chunked body: {req.error}")
        if self._continue:
            self._continue = False
            self._conn.send(_CONTINUE)
        if self._conn.pull():
            return True
        if req.chunked:
            raise OSError("the client closed the connection inside a chunked body")
        return False

    def read(self, size=-1) -> bytes:
        req = self._req
        buf = req.body
        if size is None or size < 0:
            size = sys.maxsize
        while len(buf) < size and not req.done:
            if not self._more():
                break
        if size >= len(buf):
            out = bytes(buf)
            buf.clear()
        else:
            out = bytes(buf[:size])
            del buf[:size]
        return out

    def readline(self, size=-1) -> bytes:
        req = self._req
        while req.body.find(b"\n") < 0 and not req.done:
            if not self._more():
                break
        end = req.body.find(b"\n") + 1 or len(req.body)
        return self.read(end if size is None or size < 0 else min(size, end))

    def readlines(self, hint=-1) -> list:
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")


class _Conn:
    """One connection: the parser (whose callbacks are the on_* methods), the requests
    it completed and that wait for their answer, and the answering of them."""

    __slots__ = ("server", "sock", "app", "parser", "ready", "cur", "broken", "ended",
                 "head_bytes", "remote", "idle_timeout_s", "request_timeout_s",
                 # the request being answered, and its response
                 "req", "status", "headers", "sent", "chunked", "close")

    def __init__(self, server: "Server", sock, address) -> None:
        self.server, self.sock, self.app = server, sock, server.application
        self.idle_timeout_s = server.idle_timeout_s
        self.request_timeout_s = server.request_timeout_s
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.ready: collections.deque = collections.deque()  # _Request, or a refusal code
        self.cur = None            # the request being parsed
        self.broken = False        # nothing after what is in `ready` can be read
        self.ended = False         # a request ended in the data being fed
        self.head_bytes = 0
        self.remote = (str(address[0]), str(address[1])) if isinstance(address, tuple) \
            else ("", "")

    # Parser callbacks ####################################################

    def on_message_begin(self) -> None:
        self.cur = _Request()
        self.head_bytes = 0            # read_head counts from here

    def on_url(self, url: bytes) -> None:
        cur = self.cur
        cur.url += url
        # pywsgi measures the line without its CRLF: method, target, " HTTP/1.1".
        if len(cur.url) + len(self.parser.get_method()) + 10 >= MAX_REQUEST_LINE:
            raise _Refused("414")

    def on_header(self, name: bytes, value: bytes) -> None:
        cur = self.cur
        if cur.head_done:
            return                     # a chunked body's trailer: not for the app
        cur.nfields += 1
        if cur.nfields > headers.MAX_FIELDS or len(name) + len(value) > headers.MAX_LINE:
            raise _Refused("400")
        key = _env_key(name)
        if not key:
            return
        env = cur.env
        text = value.decode("latin-1")
        old = env.get(key)
        if old is None:
            env[key] = text
        elif key in _SINGLE:
            raise _Refused("400")
        elif key != "CONTENT_TYPE":
            env[key] = old + ("; " if key == "HTTP_COOKIE" else ",") + text

    def on_headers_complete(self) -> None:
        cur, parser = self.cur, self.parser
        cur.version = parser.get_http_version()
        cur.method = parser.get_method().decode("latin-1")
        cur.keep = parser.should_keep_alive()
        te = cur.env.get("HTTP_TRANSFER_ENCODING")
        cur.chunked = te is not None
        if (not cur.version.startswith("1.") or (cur.chunked and te.lower() != "chunked")
                or (cur.method == "HEAD" and cur.env.get("CONTENT_LENGTH", "0") != "0")):
            raise _Refused("400")
        cur.head_done = cur.line_done = True
        self.ready.append(cur)

    def on_body(self, body: bytes) -> None:
        self.cur.body += body

    def on_message_complete(self) -> None:
        self.cur.done = True
        self.cur = None
        self.ended = True

    def feed(self, data: bytes) -> None:
        self.ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.broken = True         # what follows is another protocol: not ours
        except httptools.HttpParserError as e:
            self.broken = True
            cur = self.cur
            if cur is not None and cur.head_done:
                cur.error = str(e)     # the app reads it as a ValueError: 400
            else:
                why = e.__context__
                self.ready.append(why.code if isinstance(why, _Refused) else "400")
            return
        cur = self.cur
        if cur is not None and not cur.line_done:
            # Whether a head that times out gets a 408 or is closed quietly. A line
            # end in data where another request ended may be that one's: an answer
            # then, where the pywsgi path would close quietly.
            cur.line_done = cur.nfields > 0 or (not self.ended and 10 in data)

    # Reading ##############################################################

    def pull(self) -> bool:
        """More of the request being answered (socket timeout: request_timeout_s).
        False when the client closed. Any failure leaves the connection unusable."""
        try:
            data = self.sock.recv(RECV_BYTES)
        except BaseException:
            self.broken = True
            raise
        if not data:
            self.broken = True
            return False
        self.feed(data)
        return True

    def wait_request(self) -> bool:
        """Wait up to idle_timeout_s for the first bytes of a next request, as an idle
        connection stop() may close. False: the connection is done."""
        server, sock = self.server, self.sock
        sock.settimeout(self.idle_timeout_s)
        me = gevent.getcurrent()
        server.idle.add(me)
        try:
            data = sock.recv(RECV_BYTES)
        except OSError:                 # the idle timeout, a reset
            return False
        finally:
            server.idle.discard(me)
        if not data:
            return False
        sock.settimeout(self.request_timeout_s)
        self.feed(data)
        return True

    def read_head(self) -> bool:
        """The rest of a head begun, within request_timeout_s of now (one timer for it
        all). False: the connection is done (a 408 sent when its line had come)."""
        try:
            with gevent.Timeout(self.request_timeout_s, _HeadTimeout):
                while not self.ready and not self.broken:
                    data = self.sock.recv(RECV_BYTES)
                    if not data:
                        cur = self.cur
                        if cur is not None and cur.line_done:
                            self.send(PROTOCOL_ERRORS["400 cut"])
                        return False
                    self.head_bytes += len(data)
                    if self.head_bytes > MAX_HEAD_BYTES:
                        self.broken = True
                        self.ready.append("400")
                        break
                    self.feed(data)
        except (_HeadTimeout, socket.timeout):
            cur = self.cur
            if cur is not None and cur.line_done:
                self.send(PROTOCOL_ERRORS["408"])
            return False
        return True

    def run(self) -> None:
        ready = self.ready
        while True:
            if not ready:
                if self.broken:
                    return
                if self.cur is None:
                    if self.server.draining or not self.wait_request():
                        return
                if not ready and self.cur is not None and not self.read_head():
                    return
                continue
            req = ready.popleft()
            if req.__class__ is str:
                self.send(PROTOCOL_ERRORS[req])
                return
            if not self.answer(req) or not self.skip_body(req):
                return

    def skip_body(self, req: _Request) -> bool:
        """Read past what the app left of req's body; False: close instead."""
        skipped = 0
        while not req.done:
            skipped += len(req.body)
            req.body.clear()
            if self.broken or skipped > DISCARD_MAX or not self.pull():
                return False
        return not self.broken

    # Answering ############################################################

    def environ(self, req: _Request) -> dict:
        env = self.server.base_env.copy()
        env.update(req.env)
        raw = req.url.decode("latin-1")
        path, _, query = raw.partition("?")
        env["REQUEST_METHOD"] = req.method
        env["PATH_INFO"] = unquote(path, encoding="latin-1") if "%" in path else path
        env["QUERY_STRING"] = query
        env["RAW_URI"] = raw                      # contract 4
        env["SERVER_PROTOCOL"] = "HTTP/" + req.version
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = self.remote
        env["wsgi.input"] = Input(self, req)
        return env

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.sent:                  # the head went out: too late to change it
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        self.status, self.headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        """WSGI's write() (bottle does not use it), and each part of an iterable body:
        the head goes out with the first part, chunked when no length was given."""
        if not self.sent:
            head = self.head(None)
            if not data or len(data) > JOIN_BODY_MAX:
                self.send(head)
            else:
                data = head + (b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
                self.send(data)
                return
        if data:
            self.send(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)

    def head(self, length) -> bytes:
        """The response head for self.status and self.headers (length: the body's when
        known); sets sent, chunked and close."""
        req = self.req
        if self.status is None:
            raise RuntimeError("the application did not call start_response()")
        code = int(self.status[:3])
        draining = self.server.draining
        close = not req.keep or self.broken or draining
        parts = ["HTTP/1.1 ", self.status, "\r\n"]
        lines = 2                      # the status line and the empty one
        date = has_length = False
        given_close = None
        for name, value in self.headers:
            low = name.lower()
            if low == "content-length":
                has_length = True
            elif low == "date":
                date = True
            elif low == "connection":
                if draining:
                    continue
                given_close = value.lower() == "close"
                close = close or given_close
            parts += (name, ": ", value, "\r\n")
            lines += 1
        chunked = False
        if not has_length and code not in _NO_BODY:
            lines += 1
            if length is not None:
                parts += ("Content-Length: ", str(length), "\r\n")
            elif req.version == "1.1":
                chunked = True
                parts.append("Transfer-Encoding: chunked\r\n")
            else:
                close = True
                lines -= 1
        if not date:
            parts += ("Date: ", http_date(int(time.time())).decode(), "\r\n")
            lines += 1
        if (given_close is None and (close or req.version == "1.0")) or (
                close and not given_close):
            parts.append("Connection: close\r\n" if close else "Connection: keep-alive\r\n")
            lines += 1
        parts.append("\r\n")
        text = "".join(parts)
        # No CR or LF inside a status, name or value (response splitting): a CR and an
        # LF for each line made here, no more.
        if text.count("\n") != lines or text.count("\r") != lines:
            raise ValueError("carriage return or newline in the response status or headers")
        self.sent, self.chunked, self.close = True, chunked, close
        return text.encode("latin-1")

    def answer(self, req: _Request) -> bool:
        """Call the app for req and send its answer; False: close the connection."""
        self.req = req
        self.status = None
        self.sent = self.chunked = False
        self.close = True
        result = None
        try:
            result = self.app(self.environ(req), self.start_response)
            if type(result) is list and not self.sent:
                body = result[0] if len(result) == 1 else b"".join(result)
                head = self.head(len(body))
                if len(body) <= JOIN_BODY_MAX:
                    self.send(head + body)
                else:
                    self.send(head)
                    self.send(body)
            else:
                for part in result:
                    if part:
                        self.write(part)
                if not self.sent:
                    self.send(self.head(None))
                if self.chunked:
                    self.send(b"0\r\n\r\n")
        except OSError as e:             # the client went away; a failed read of its body
            log.debug("connection ended client=%s error=%s", self.remote[0], e)
            return False
        except Exception:
            log.exception("unhandled error in the WSGI app path=%s", req.url[:100])
            if not self.sent:
                try:
                    self.send(_INTERNAL)
                except OSError:
                    pass
            return False
        finally:
            close_result = getattr(result, "close", None)
            if close_result is not None:
                close_result()
        return not self.close

    def send(self, data: bytes) -> None:
        # One send() takes a response whole when the socket buffer has room; sendall
        # (which asks the kernel for SO_SNDBUF and reads the clock) only for the rest.
        sock = self.sock
        sent = sock.send(data)
        if sent < len(data):
            sock.sendall(memoryview(data)[sent:])


class Server(Serving, StreamServer):
    """A StreamServer answering HTTP/1.1 with the WSGI `application`; Serving's rules."""

    def __init__(self, listener, application, *, idle_timeout_s: float = 75.0,
                 request_timeout_s: float = 30.0, **kwargs) -> None:
        super().__init__(listener, **kwargs)
        self.application = application
        self.idle_timeout_s = idle_timeout_s
        self.request_timeout_s = request_timeout_s
        self.base_env: dict = {}

    def start(self) -> None:
        super().start()               # bound: the port is known (0 picks one)
        host, port = self.address[:2] if isinstance(self.address, tuple) else ("", "")
        self.base_env = {
            "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "dqorch",
            "SERVER_NAME": str(host), "SERVER_PORT": str(port), "SCRIPT_NAME": "",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "https" if self.ssl_enabled else "http",
            "wsgi.errors": LoggingLogAdapter(logging.getLogger("dqorch.http")),
            "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True}

    def handle(self, sock, address) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            _Conn(self, sock, address).run()
        except OSError as e:             # resets, a send to a client gone
            log.debug("connection ended client=%s error=%s", address[0], e)
        finally:
            sock.close()


def listen(host: str, port: int, app, *, idle_timeout_s: float, request_timeout_s: float,
           tls_context=None) -> Server:
    """A started Server for `app` on host:port with these deadlines (contract 2):
    http_server.listen's twin. OSError when the port cannot be listened on."""
    server = Server((host, port), app, idle_timeout_s=idle_timeout_s,
                    request_timeout_s=request_timeout_s,
                    **({"ssl_context": tls_context} if tls_context else {}))
    server.handshake_timeout_s = request_timeout_s
    server.start()
    return server
