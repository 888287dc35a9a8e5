"""dqorch.raft.transport: the codec (HMAC, replay window, fragments) as pure code, and
two real UDP sockets on loopback. Every hostile datagram is dropped and counted by
reason, and nothing of it is delivered."""
import random
import socket
import struct

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


def _carry(src, dst, datagrams, now, lose=lambda d: False):
    """Deliver datagrams to dst, minus the lost; returns whole messages."""
    return [g for d in datagrams if not lose(d) for g in [dst.open(d, now)] if g]


def test_missing_fragments_are_asked_for_and_sent_again_not_the_whole_message():
    """Rule 3: 58 KB (one large job) loses 1 fragment in 4 on the way; the receiver
    names the missing ones in NACKs, the sender seals just those again, and the whole
    message arrives, over as many rounds as the loss takes, NACKs lost too."""
    a, b = pair()
    payload = random.Random(5).randbytes(58_000)
    rng = random.Random(9)
    lose = lambda d: rng.random() < 0.25                  # noqa: E731
    parts = a.seal(payload, "b")
    got = _carry(a, b, parts, 0.0, lose)
    assert got == [] and b.last_part_from == "a"
    now, rounds = 0.0, 0
    while not got:
        rounds += 1
        assert rounds < 20, "never repaired"
        now += 1.0 if rounds == 1 else 0.0
        due = b.repair(now)
        assert due is not None
        nacks, b.outbox = b.outbox, []
        for _peer, nack in nacks:
            if not lose(nack):
                assert a.open(nack, now) is None
        resent, a.outbox = a.outbox, []
        assert all(peer == "b" for peer, _ in resent)
        got = _carry(a, b, [d for _, d in resent], now, lose)
        now = due
    assert got == [("a", payload)]
    assert a.stats["fragments_resent"] < len(parts)         # never the whole again
    assert b.repair(now + 1) is None                        # nothing partial left


def test_a_nack_is_answered_only_for_its_peer_and_a_kept_message():
    a, b = pair()
    c = Codec("c", "s3cret", PEERS, epoch=3000)
    parts = a.seal(b"x" * 5000, "b")
    b.open(parts[0], 0.0)
    b.repair(1.0)
    [(peer, nack)] = b.outbox
    assert peer == "a"
    # The same NACK's content from c (the wrong peer) and for a message a forgot.
    forged = c._datagram(2, b"", struct.pack("<QQH", 1000, 1, 1))
    a.open(forged, 1.0)
    assert a.outbox == [] and a.stats["nacks_unanswerable"] == 1
    a._sent.clear()
    a.open(nack, 1.0)
    assert a.outbox == [] and a.stats["nacks_unanswerable"] == 2


def test_a_partial_message_is_given_up_after_its_nacks_or_its_age():
    a, b = pair()
    parts = a.seal(b"y" * 10_000)                           # kept by nobody
    b.open(parts[0], 0.0)
    now, nacks = 0.0, 0
    while True:
        due = b.repair(now)
        nacks, b.outbox = nacks + len(b.outbox), []
        if due is None:
            break
        now = due
    assert nacks == 6 and b.stats["partials_expired"] == 1 and now < 3.0
    b.open(parts[1], 10.0)
    assert b.repair(10.0 + 3.1) is None and b.stats["partials_expired"] == 2
