"""dqorch.raft.transport: the codec (HMAC, replay window, fragments) as pure code, and
two real UDP sockets on loopback. Every hostile datagram is dropped and counted by
reason, and nothing of it is delivered."""
import random
import socket

import gevent
import pytest

from dqorch.raft.transport import MAC_BYTES, Codec, UdpTransport

PEERS = ("a", "b", "c")


def pair(max_bytes=1200, cookie="s3cret"):
    a = Codec("a", cookie, PEERS, epoch=1000, max_datagram_bytes=max_bytes)
    b = Codec("b", cookie, PEERS, epoch=2000, max_datagram_bytes=max_bytes)
    return a, b


def test_a_small_message_is_one_datagram():
    a, b = pair()
    (d,) = a.seal(b'{"type":"append"}')
    assert b.open(d) == ("a", b'{"type":"append"}')


@pytest.mark.parametrize("size", [1200, 5000, 60_000, 300_000])
def test_a_big_message_is_split_below_the_bound_and_put_back_in_any_order(size):
    a, b = pair()
    payload = bytes(random.Random(size).getrandbits(8) for _ in range(size))
    parts = a.seal(payload)
    assert len(parts) > 1 and all(len(p) <= 1200 for p in parts)
    random.Random(1).shuffle(parts)
    dups = parts[:3]
    got = [b.open(p) for p in parts + dups]            # duplicates too
    assert [g for g in got if g is not None] == [("a", payload)]
    assert b.dropped["replayed"] == len(dups)


def test_forged_corrupt_truncated_and_oversized_datagrams_are_dropped():
    a, b = pair()
    (good,) = a.seal(b"x" * 100)
    forger = Codec("a", "not the cookie", PEERS, epoch=1000)
    (forged,) = forger.seal(b"x" * 100)
    flipped = bytearray(good)
    flipped[30] ^= 1
    cases = {"mac": [forged, bytes(flipped), good[:-1], good[:40] + good[-MAC_BYTES:]],
             "short": [good[:10], b""], "magic": [b"XX" + good[2:]],
             "oversized": [good + b"\0" * 1200]}
    for reason, datagrams in cases.items():
        for d in datagrams:
            assert b.open(d) is None, reason
        assert b.dropped[reason] == len(datagrams), (reason, b.dropped)
    assert b.open(good) == ("a", b"x" * 100)           # the real one still gets in


def test_a_member_not_among_the_peers_is_dropped():
    _, b = pair()
    stranger = Codec("zed", "s3cret", PEERS + ("zed",), epoch=5)
    (d,) = stranger.seal(b"hello")
    assert b.open(d) is None and b.dropped["unknown_sender"] == 1


def test_replays_are_dropped_inside_and_behind_the_window():
    a, b = pair()
    first = a.seal(b"m0")[0]
    later = [a.seal(b"m%d" % i)[0] for i in range(1, 1100)]
    assert b.open(first) is not None
    assert b.open(first) is None                       # the same datagram again
    for d in later[500:]:
        assert b.open(d) is not None
    assert b.open(later[600]) is None                  # seen: inside the window
    assert b.open(later[300]) is not None              # late but unseen: accepted
    assert b.open(later[300]) is None
    assert b.open(later[10]) is None                   # too far behind the window
    assert b.dropped["replayed"] == 4


def test_a_restarted_peer_starts_a_new_epoch_and_the_old_one_is_refused():
    a, b = pair()
    old = [a.seal(b"before %d" % i)[0] for i in range(3)]
    assert b.open(old[0]) is not None
    restarted = Codec("a", "s3cret", PEERS, epoch=1001)
    assert b.open(restarted.seal(b"after")[0]) == ("a", b"after")
    assert b.open(old[1]) is None and b.dropped["stale_epoch"] == 1


def test_two_transports_on_real_udp_sockets():
    got = []
    a = UdpTransport(Codec("a", "s3cret", PEERS, epoch=1), ("127.0.0.1", 0), {},
                     lambda s, p: got.append(("a<-", s, p)))
    b = UdpTransport(Codec("b", "s3cret", PEERS, epoch=2), ("127.0.0.1", 0), {},
                     lambda s, p: got.append(("b<-", s, p)))
    a.peers["b"], b.peers["a"] = b.address, a.address
    a.start()
    b.start()
    try:
        a.send("b", b"ping")
        big = b"e" * 70_000                           # one 60 KB job in an entry
        b.send("a", big)
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.sendto(b"DQ\x01" + b"\0" * 60, b.address)  # forged
        raw.sendto(b"\xff" * 3000, b.address)          # oversized garbage
        raw.sendto(Codec("a", "s3cret", PEERS, epoch=1).seal(b"ping")[0], b.address)  # replay
        for _ in range(200):
            if len(got) >= 2 and sum(b.codec.dropped.values()) >= 3:
                break
            gevent.sleep(0.01)
        assert ("b<-", "a", b"ping") in got and ("a<-", "b", big) in got
        assert len(got) == 2
        assert b.codec.dropped["mac"] == 1 and b.codec.dropped["oversized"] == 1
        assert b.codec.dropped["replayed"] == 1
    finally:
        a.close()
        b.close()
