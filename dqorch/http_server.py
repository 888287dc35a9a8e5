"""The HTTP/1.1 server on gevent.pywsgi, tightened (config `http_server: pywsgi`; the
default is http_fast.py's, on httptools): what both promise the WSGI app behind them,
and what they answer without the app.

Contracts (http_fast.py keeps them too; Serving below is shared by both):
1. Framing. A body is framed by Content-Length or by chunked Transfer-Encoding, never
   both; any other Transfer-Encoding, two framings, or a malformed request line or
   header is answered 400 before the app sees it (headers.py parses the fields). The
   app reads a body only through read_body(): 411 when a route needs a body and none
   is framed (an HTTP/1.0 body sent until close cannot be told from none), 413 past
   the route's limit, 400 when it ends early or its chunks are bad.
2. Deadlines. A keep-alive connection waits idle_timeout_s for its next request and
   is then closed quietly; a request line and its headers arrive within
   request_timeout_s together (a client trickling a byte at a time gets 408); each
   read of the body within request_timeout_s too (read_body: 408). A TLS handshake
   within request_timeout_s, else the connection is closed (counted in tls_failures).
3. Answers without the app (400, 408, 414) have the JSON error shape of CONTRACT §2
   and `Connection: close`. So do answers after which the rest of a body may still
   be on the wire (CLOSE_AFTER: the app sets the header; api.JsonPlugin does).
4. The request target as the client sent it is environ["RAW_URI"] (PATH_INFO is
   decoded): what a follower forwards to its leader (forward.py).
5. Stopping: Server.stop() takes no new connection, closes the keep-alive ones that
   wait for a request, and lets the requests in flight finish, each answered with
   `Connection: close`.
6. Sending: TCP_NODELAY on every connection; a response's head and a body of up to
   JOIN_BODY_MAX bytes go out in one send; the Date header is made once a second;
   no access log (metrics count requests).
7. Out of file descriptors, accepting pauses and resumes by itself (one log line
   each way) while the open connections keep being served.
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import socket
import time

import gevent
import gevent.pool
from gevent import pywsgi

from . import headers
from .errors import ApiError

log = logging.getLogger(__name__)

def raw_error(status: str, message: str, error: str = "invalid_request") -> bytes:
    """A whole response with the JSON error shape and Connection: close (contract 3)."""
    body = json.dumps({"error": error, "message": message}).encode()
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json"
            f"\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


# pywsgi answers requests it cannot parse before the app sees them, with empty bodies:
# these instead, here and in http_fast.
PROTOCOL_ERRORS = {
    "400": raw_error("400 Bad Request", "malformed HTTP request (request line or "
                     "headers, e.g. a Content-Length that is not a number, or both "
                     "Transfer-Encoding and Content-Length)"),
    "408": raw_error("408 Request Timeout", "the request headers did not arrive "
                     "within http_request_timeout_s"),
    "414": raw_error("414 Request-URI Too Long", "request line too long"),
    # http_fast: the client closed its side inside a head whose request line came
    # (pywsgi took the head as ended there and answered it: 411 for a POST).
    "400 cut": raw_error("400 Bad Request", "the connection ended inside the request "
                         "headers"),
}


class _HeadersTimeout(ValueError):
    """The request's headers took longer than http_request_timeout_s."""


class _AcceptPaused(gevent.GreenletExit):
    """Raised out of Server.do_read when there is no fd to accept with: gevent's
    server then stops accepting for a moment (doubling to 1 s) and tries again, and the
    hub does not print a traceback for this class (it is GreenletExit's)."""


class Serving:
    """What every front end's server keeps, in front of a gevent StreamServer in the
    bases (pywsgi's WSGIServer here, http_fast's): it runs out of file descriptors
    gracefully (the connections it has keep being served, accepting pauses and
    resumes by itself, one log line when it starts and one when it ends: gevent
    printed a traceback per failed accept), bounds TLS handshakes, and drains on
    stop() (contracts 2, 5 and 7).

    A connection's greenlet puts itself in `idle` while it waits for its next request
    (stop() closes those) and reads `draining` before it answers (Connection: close)."""

    _fd_failures = 0
    handshake_timeout_s = 30.0
    tls_failures = 0          # handshakes that failed or timed out (a metric)
    draining = False          # stop() began: answer what is in flight, take no more

    def __init__(self, *args, **kwargs):
        # A pool, so that stop() can wait for the requests in flight: without one
        # gevent's stop() returned at once and the process exited under them (a
        # register half-received at SIGTERM got a reset, not its 202).
        kwargs.setdefault("spawn", gevent.pool.Pool())
        super().__init__(*args, **kwargs)
        self.idle: set = set()    # greenlets waiting for a connection's next request

    def stop(self, timeout=None):
        """Stop accepting, close the keep-alive connections that wait for a next
        request, and wait up to timeout for the requests in flight (each answered
        with Connection: close); then gevent kills what is left."""
        self.draining = True
        for g in list(self.idle):
            g.kill(block=False)       # GreenletExit: its connection is closed quietly
        super().stop(timeout)

    def wrap_socket_and_handle(self, client_socket, address):
        # gevent's own waits for the handshake with no time limit (a client that
        # connects and sends nothing holds a greenlet for ever) and prints a
        # traceback for each one that fails: a port scan filled the log.
        client_socket.settimeout(self.handshake_timeout_s)
        try:
            tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except OSError as e:           # ssl.SSLError, timeouts, resets
            self.tls_failures += 1
            log.debug("TLS handshake failed client=%s error=%s", address[0], e)
            client_socket.close()
            return
        try:
            return self.handle(tls_socket, address)
        finally:
            tls_socket.close()

    def do_read(self):
        try:
            got = super().do_read()
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            self._fd_failures += 1
            if self._fd_failures == 1:
                log.error("cannot accept connections port=%d error=%s; serving the open "
                          "ones and retrying", self.server_port, e.strerror)
            raise _AcceptPaused() from None
        if got and self._fd_failures:
            log.warning("accepting connections again port=%d failed_accepts=%d",
                        self.server_port, self._fd_failures)
            self._fd_failures = 0
        return got



class Server(Serving, pywsgi.WSGIServer):
    """gevent.pywsgi's server with Serving's rules (http_server.Handler per connection)."""


@functools.lru_cache(maxsize=2)
def http_date(second: int) -> bytes:
    return pywsgi.format_date_time(second)


class Handler(pywsgi.WSGIHandler):
    """TCP_NODELAY on every accepted socket: without it each keep-alive response waits
    ~40 ms for a delayed ACK (measured 23 -> 5,400 req/s on one connection). Requests
    pywsgi cannot parse get the JSON error shape too.

    Time limits (set per server, see listen()): a keep-alive connection waits at
    most idle_timeout_s for its next request; once a request line arrived, the headers
    must arrive within request_timeout_s, and each read of the body too (read_body)."""

    idle_timeout_s = 75.0
    request_timeout_s = 30.0
    _head_buffered = False    # read_requestline found the whole head in the buffer

    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().__init__(sock, address, server, rfile)

    def MessageClass(self, fp, *_args):
        return headers.read(fp)

    # The server has no access log (log=None), but pywsgi formats a line for it after
    # every response, and the Date header anew (gmtime and a %-format) though it
    # changes once a second: 2.5% of a register's samples (py-spy, 50 connections);
    # side by side, 283-302 against 302-317 µs of CPU a register.
    def log_request(self) -> None:
        pass

    def start_response(self, status, headers, exc_info=None):
        if self.server.draining:
            # Tell the client this connection ends with this answer.
            headers = [h for h in headers if h[0].lower() != "connection"]
            headers.append(("Connection", "close"))
            self.close_connection = True
        return super().start_response(status, headers, exc_info)

    def finalize_headers(self) -> None:
        if self.provided_date is None:
            self.response_headers.append((b"Date", http_date(int(time.time()))))
            self.provided_date = True
        super().finalize_headers()

    def get_environ(self):
        env = super().get_environ()
        env["RAW_URI"] = self.path                # contract 4: the target as sent
        return env

    def _headers(self):
        # pywsgi's own joins our fields into lines and splits them again; the same
        # rules (no name with "_", the two CGI names left out) on the fields.
        for name, value in self.headers.fields:
            if "_" not in name:
                key = name.replace("-", "_").upper()
                if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
                    yield "HTTP_" + key, value

    def read_requestline(self):
        server = self.server
        if server.draining:
            return None               # stopping: no next request on this connection
        self.socket.settimeout(self.idle_timeout_s)   # socket.timeout: closed quietly
        me = gevent.getcurrent()
        server.idle.add(me)           # Server.stop closes connections waiting here
        try:
            head = self.rfile.peek(1)                 # the next request has begun
        finally:
            server.idle.discard(me)
        # Its whole head is buffered too (nearly always): read_request needs no deadline.
        self._head_buffered = b"\n\r\n" in head or b"\n\n" in head
        if 10 in head:              # b"\n": the whole line is here (an int: headers.py)
            line = super().read_requestline()
        else:
            # One deadline for the whole line, as for the headers: a client sending a
            # byte a second kept a connection for as many seconds as its line is long.
            try:
                with gevent.Timeout(self.request_timeout_s, _HeadersTimeout):
                    line = super().read_requestline()
            except _HeadersTimeout:
                raise socket.timeout("request line too slow") from None
        self.socket.settimeout(self.request_timeout_s)
        return line

    def read_request(self, raw_requestline):
        # The whole of the headers, not each read: a client trickling a byte at a time
        # must not hold a connection for ever. When read_requestline saw them all in the
        # buffer no read can block, and no Timeout is made (~2.5 µs a request). Not a
        # peek here: on an empty buffer it would wait outside the deadline.
        if self._head_buffered:
            ok = super().read_request(raw_requestline)
        else:
            with gevent.Timeout(self.request_timeout_s, _HeadersTimeout):
                ok = super().read_request(raw_requestline)
        te = self.headers.get("transfer-encoding")
        if te is not None and te.lower() != "chunked":
            raise headers.Smuggling(f"Transfer-Encoding {te[:40]!r} (only chunked is accepted)")
        return ok

    # pywsgi sends a response's head and its body apart: with TCP_NODELAY, two sends
    # and two packets per response, and the client reads twice. Bodies up to this size
    # go out with their head in one send (pipeline at 200 jobs/s, A/B on one machine:
    # node CPU a job -3 to -7%; docs/BENCHMARKS-HISTORY.md, 2026-12-01 night).
    JOIN_BODY_MAX = 65536
    _head = None          # None: not joining; b"": the next send is the head; else it

    def _write_with_headers(self, data):
        if data and len(data) <= self.JOIN_BODY_MAX:
            self._head = b""
        try:
            super()._write_with_headers(data)
        except BaseException:
            self._head = None
            raise
        head, self._head = self._head, None
        if head:              # a pywsgi that sent no body after the head: the head alone
            super()._sendall(head)

    def _sendall(self, data):
        head = self._head
        if head is not None:
            if not head:
                self._head = bytes(data)          # the head: sent with the body
                return
            self._head = None
            data = head + data
        # gevent's sendall asks the kernel for SO_SNDBUF (a getsockopt) and reads the
        # clock on every call, to cut big sends into chunks: 3.5% of a register's
        # py-spy samples at 50 connections. One send() takes a response whole when the
        # socket buffer has room; sendall only for what is left. Error handling as
        # pywsgi's own _sendall.
        sock = self.socket
        try:
            sent = sock.send(data)
            if sent < len(data):
                sock.sendall(memoryview(data)[sent:])
        except socket.error as ex:
            self.status = "socket error: %s" % ex
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def _handle_client_error(self, ex):
        # A client's mistake, not ours: one debug line, and the JSON error shape.
        log.debug("refused a malformed request client=%s error=%s", self.client_address, ex)
        return ("408", PROTOCOL_ERRORS["408"]) if isinstance(ex, _HeadersTimeout) \
            else ("400", PROTOCOL_ERRORS["400"])

    def handle_one_request(self):
        result = super().handle_one_request()
        if isinstance(result, tuple) and result[0] in PROTOCOL_ERRORS:
            return result[0], PROTOCOL_ERRORS[result[0]]
        return result



def listen(host: str, port: int, app, *, idle_timeout_s: float, request_timeout_s: float,
           tls_context=None) -> Server:
    """A started Server for `app` on host:port with these deadlines (contract 2).
    OSError when the port cannot be listened on."""
    handler = type("Handler", (Handler,), {"idle_timeout_s": idle_timeout_s,
                                           "request_timeout_s": request_timeout_s})
    server = Server((host, port), app, handler_class=handler, log=None,
                    error_log=logging.getLogger("dqorch.http"),
                    **({"ssl_context": tls_context} if tls_context else {}))
    server.handshake_timeout_s = request_timeout_s
    server.start()
    return server


# Answers after which the rest of the request's body may still be on the wire: the
# connection cannot carry another request (contract 3).
CLOSE_AFTER = frozenset({400, 408, 411, 413})


def read_body(environ: dict, max_bytes: int, required: bool = True) -> bytes:
    """The raw body, at most max_bytes (413 beyond), whatever the Content-Type.

    A body is framed by Content-Length or chunked encoding. Without either (an HTTP/1.0
    client sending until close) it cannot be told from no body: 411 when the route
    needs one (`required`), never a silently empty body. A body that ends early, bad
    chunking, or a client too slow for the request deadline: 400 / 408."""
    length = environ.get("CONTENT_LENGTH") or ""
    chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
    stream = environ["wsgi.input"]
    if not length and not chunked:
        if required:
            raise ApiError(411, "invalid_request", "send the body with a Content-Length "
                           "(or chunked Transfer-Encoding)")
        return b""
    n = max_bytes + 1
    if length:
        try:
            n = int(length)
        except ValueError:
            raise ApiError(400, "invalid_request", "Content-Length is not a number")
        if n > max_bytes:
            raise ApiError(413, "payload_too_large",
                           f"body is {n} bytes; max_body_bytes is {max_bytes}")
        if n <= 0:
            return b""
    try:
        # Bounded by the socket timeout the handler sets (request_timeout_s per read),
        # which costs nothing per request; a timer here would.
        data = stream.read(n)
    except TimeoutError:
        raise ApiError(408, "invalid_request", "the request body did not arrive within "
                       "http_request_timeout_s")
    except (OSError, ValueError) as e:    # bad chunk sizes, the client went away mid-body
        raise ApiError(400, "invalid_request", f"request body cannot be read: {e}")
    if length and len(data) < n:
        raise ApiError(400, "invalid_request",
                       f"request body ended after {len(data)} of {n} bytes")
    if len(data) > max_bytes:
        raise ApiError(413, "payload_too_large", f"body exceeds max_body_bytes ({max_bytes})")
    return data
