"""Forwarder against real loopback sockets: a leader that misbehaves at the TCP level
(accepts then closes, answers garbage) gets a bounded 503, never a hot loop."""
import gevent
import pytest
from gevent.server import StreamServer

from dqorch.errors import ApiError
from dqorch.forward import Forwarder


class FakeNode:
    role = "follower"
    leader = "n2@127.0.0.1"
    applied_index = 0

    def __init__(self, api: str) -> None:
        self.leader_api = api


@pytest.fixture
def closing_leader():
    """A 'leader' that accepts every connection and closes it at once; counts them."""
    accepted = []

    def handle(sock, _addr):
        accepted.append(1)
        sock.close()
    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    yield f"127.0.0.1:{server.server_port}", accepted
    server.stop()


@pytest.mark.parametrize("method,idempotent", [("POST", True), ("GET", False)])
def test_a_leader_that_closes_every_connection_gets_a_bounded_number_of_tries(
        closing_leader, method, idempotent):
    addr, accepted = closing_leader
    f = Forwarder(FakeNode(addr), "n1@127.0.0.1", wait_leader_s=0.5, timeout_s=2)
    with pytest.raises(ApiError) as e:
        f.forward(method, "/api/jobs/register", {}, b"{}", idempotent=idempotent)
    assert e.value.status == 503
    # 0.5 s of retries with a 50 ms pause: about 10 (a hot loop made thousands).
    assert 1 < len(accepted) <= 40, len(accepted)


def test_a_write_that_may_have_arrived_is_not_sent_twice(closing_leader):
    addr, accepted = closing_leader
    f = Forwarder(FakeNode(addr), "n1@127.0.0.1", wait_leader_s=0.5, timeout_s=2)
    with pytest.raises(ApiError) as e:
        f.forward("POST", "/api/jobs/status", {}, b"{}", idempotent=False)
    assert e.value.status == 503 and "outcome is unknown" in e.value.message
    assert len(accepted) == 1


def test_garbage_from_the_leader_is_a_503_not_a_crash():
    def handle(sock, _addr):
        sock.recv(65536)
        sock.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
        gevent.sleep(0.1)
        sock.close()
    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        f = Forwarder(FakeNode(f"127.0.0.1:{server.server_port}"), "n1@127.0.0.1",
                      wait_leader_s=0.3, timeout_s=2)
        with pytest.raises(ApiError) as e:
            f.forward("POST", "/api/jobs/1/cancel", {}, b"", idempotent=False)
        assert e.value.status == 503
    finally:
        server.stop()
