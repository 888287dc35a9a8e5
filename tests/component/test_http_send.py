"""http_server.Handler answers a small response in one send (head and body together), a
big one as pywsgi does: a real server on loopback, its sends counted as they happen."""
import socket

import gevent
import pytest

from dqorch.http_server import Handler, Server


class Spy:
    """The accepted socket, its send and sendall calls recorded (what each took)."""

    def __init__(self, sock):
        self._sock = sock

    def send(self, data):
        sent = self._sock.send(data)
        Counting.sends.append(bytes(data[:sent]))
        return sent

    def sendall(self, data):
        Counting.sends.append(bytes(data))
        return self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class Counting(Handler):
    sends: list = []

    def __init__(self, sock, address, server, rfile=None):
        super().__init__(Spy(sock), address, server, rfile)


def app(environ, start_response):
    size = int(environ["PATH_INFO"].strip("/") or 0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"x" * size] if size else []


@pytest.fixture
def server():
    s = Server(("127.0.0.1", 0), app, handler_class=Counting, log=None)
    s.start()
    yield s
    s.stop()


def get(server, path):
    Counting.sends.clear()
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as c:
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        out = b""
        while not _complete(out):
            out += c.recv(1 << 20)
    gevent.sleep(0)
    return out


def _complete(out: bytes) -> bool:
    head, sep, body = out.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
              if line.lower().startswith(b"content-length:")]
    return len(body) >= length[0]


@pytest.mark.parametrize("size,sends", [(300, 1), (65536, 1), (65537, 2), (0, 1)])
def test_head_and_body_go_together_when_small(server, size, sends):
    out = get(server, f"/{size}")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"x" * size
    assert len(Counting.sends) == sends
    assert b"".join(Counting.sends) == out


def test_a_body_bigger_than_the_socket_buffer_arrives_whole(server):
    """One send() takes what the socket buffer holds; the rest must follow (sendall)."""
    size = 32 << 20
    out = get(server, f"/{size}")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == size and not body.strip(b"x")
    assert len(Counting.sends) >= 3            # the head, a partial send, the rest
    assert b"".join(Counting.sends) == out


def test_every_response_has_the_date_of_its_second_and_one_date_header(server):
    """The Date header is formatted once a second, not per response: it must still be
    the current one (RFC 9110 §6.6.1), and only one."""
    import email.utils
    import time
    for _ in range(2):
        before = int(time.time())
        head = get(server, "/3").partition(b"\r\n\r\n")[0].decode()
        after = int(time.time())
        dates = [line.split(":", 1)[1].strip() for line in head.split("\r\n")
                 if line.lower().startswith("date:")]
        assert len(dates) == 1, head
        assert before <= email.utils.parsedate_to_datetime(dates[0]).timestamp() <= after
        time.sleep(1.1)
