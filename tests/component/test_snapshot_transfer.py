"""Snapshot transfer (dqorch/raft/snapshot_transfer.py): real files in tmp_path, a
network that is a list of in-flight payloads, drop/duplicate/reorder from a seeded
random.Random, time as ticks."""
import os
import random
import zlib

import pytest

from dqorch.raft import snapshot_transfer as st
from dqorch.raft.snapshot_transfer import (CHUNK_BYTES, Incoming, Outgoing, decode,
                                           encode_ack, encode_chunk)

INDEX, TERM = 42, 3


def write_file(path, nbytes, seed=1):
    data = random.Random(seed).randbytes(nbytes)
    path.write_bytes(data)
    return data


class Net:
    """Two directions of in-flight payloads. Each tick, every payload sent is dropped,
    duplicated or kept; what is in flight is shuffled and a random part delivered."""

    def __init__(self, rng, drop=0.0, dup=0.0, reorder=False):
        self.rng, self.drop, self.dup, self.reorder = rng, drop, dup, reorder
        self.to_rx, self.to_tx = [], []

    def send(self, queue, payload):
        if self.rng.random() < self.drop:
            return
        queue.append(payload)
        if self.rng.random() < self.dup:
            queue.append(payload)

    def take(self, queue):
        if not self.reorder:
            out, queue[:] = list(queue), []
            return out
        self.rng.shuffle(queue)
        k = self.rng.randint(0, len(queue))
        out, queue[:] = queue[:k], queue[k:]
        return out


def run(out, get_incoming, net, max_ticks=5000, corrupt=None, acks=None):
    """Drive out and the receiver until out.done; returns the tick it took.
    get_incoming(chunk) returns the receiver for a chunk; corrupt(payload) may alter
    a chunk in transit; acks collects the decoded acks the sender receives."""
    for now in range(max_ticks):
        for p in out.due(now):
            net.send(net.to_rx, corrupt(p) if corrupt else p)
        for p in net.take(net.to_rx):
            chunk = decode(p)
            net.send(net.to_tx, get_incoming(chunk).accept(chunk))
        for p in net.take(net.to_tx):
            ack = decode(p)
            if acks is not None:
                acks.append(ack)
            out.on_ack(ack)
        if out.done:
            return now
    raise AssertionError(f"not done after {max_ticks} ticks, offset={out.offset}")


def pair(tmp_path, data_path, **kw):
    out = Outgoing("n2", INDEX, TERM, str(data_path), **kw)
    rx_dir = tmp_path / "rx"
    rx_dir.mkdir(exist_ok=True)
    inc = Incoming(str(rx_dir), INDEX, TERM, out.size, out.crc32)
    return out, inc


# Whole transfers ###########################################################

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_transfer_over_lossy_network_is_byte_identical(tmp_path, seed):
    data = write_file(tmp_path / "snap.json", 1 << 20, seed)
    out, inc = pair(tmp_path, tmp_path / "snap.json")
    assert (out.size, out.crc32) == (len(data), zlib.crc32(data))
    net = Net(random.Random(seed), drop=0.2, dup=0.1, reorder=True)
    run(out, lambda c: inc, net)
    assert inc.complete and inc.failures == 0
    with open(inc.done_path, "rb") as f:
        assert f.read() == data
    assert not os.path.exists(inc.path) and not os.path.exists(inc.meta_path)
    assert os.stat(inc.done_path).st_mode & 0o777 == 0o600
    assert out.due(10 ** 6) == [] and not out.expired(10 ** 6)
    out.close()
    inc.close()


def test_empty_file_transfers(tmp_path):
    (tmp_path / "snap.json").write_bytes(b"")
    out, inc = pair(tmp_path, tmp_path / "snap.json")
    run(out, lambda c: inc, Net(random.Random(0)))
    assert inc.complete
    assert open(inc.done_path, "rb").read() == b""


def test_corrupt_chunk_fails_the_crc_and_restarts_from_zero(tmp_path):
    data = write_file(tmp_path / "snap.json", 300_000)
    out, inc = pair(tmp_path, tmp_path / "snap.json")
    sent = [0]

    def corrupt(p):                 # flip one data byte of the third chunk sent, once
        sent[0] += 1
        if sent[0] != 3:
            return p
        b = bytearray(p)
        b[-1] ^= 0xFF
        return bytes(b)

    acks = []
    run(out, lambda c: inc, Net(random.Random(5)), corrupt=corrupt, acks=acks)
    assert inc.failures == 1 and inc.complete
    offsets = [a["offset"] for a in acks]
    back = offsets.index(0, 1)      # an ack for offset 0 after progress: the restart
    assert max(offsets[:back]) > 0
    assert open(inc.done_path, "rb").read() == data


# Resume ####################################################################

def half_transfer(tmp_path, data_path):
    out, inc = pair(tmp_path, data_path, chunk_bytes=4096)
    net = Net(random.Random(7))
    now = 0
    while inc.offset < out.size // 2:
        for p in out.due(now):
            c = decode(p)
            out.on_ack(decode(inc.accept(c)))
        now += 1
    held = inc.offset
    out.close()
    inc.close()
    return held, net


def test_resume_asks_for_the_offset_already_held(tmp_path):
    data = write_file(tmp_path / "snap.json", 200_000)
    held, net = half_transfer(tmp_path, tmp_path / "snap.json")
    assert 0 < held < len(data)
    out, inc = pair(tmp_path, tmp_path / "snap.json")   # new sender, default chunks
    assert inc.offset == held
    first = out.due(0)[0]
    ack = decode(inc.accept(decode(first)))
    assert ack["offset"] == held and not ack["complete"]
    out.on_ack(ack)
    assert out.offset == held
    run(out, lambda c: inc, net)
    assert inc.complete and inc.failures == 0
    assert open(inc.done_path, "rb").read() == data


@pytest.mark.parametrize("change", ["crc32", "term", "size"])
def test_partial_file_of_another_transfer_starts_over(tmp_path, change):
    write_file(tmp_path / "snap.json", 200_000, seed=1)
    held, net = half_transfer(tmp_path, tmp_path / "snap.json")
    assert held > 0
    other = write_file(tmp_path / "other.json",
                       300_000 if change == "size" else 200_000, seed=2)
    term = TERM + 1 if change == "term" else TERM
    out = Outgoing("n2", INDEX, term, str(tmp_path / "other.json"))
    inc = Incoming(str(tmp_path / "rx"), INDEX, term, out.size, out.crc32)
    assert inc.offset == 0
    ack = decode(inc.accept(decode(out.due(0)[1])))   # the second chunk: not at 0
    assert ack["offset"] == 0
    run(out, lambda c: inc, net)
    assert inc.complete and inc.failures == 0
    assert open(inc.done_path, "rb").read() == other


def test_higher_index_deletes_lower_partial_files(tmp_path):
    write_file(tmp_path / "snap.json", 200_000)
    half_transfer(tmp_path, tmp_path / "snap.json")
    rx = tmp_path / "rx"
    old = st.partial_path(str(rx), INDEX)
    assert os.path.exists(old) and os.path.exists(old + ".meta")
    inc = Incoming(str(rx), INDEX + 1, TERM, 10, 0)
    assert not os.path.exists(old) and not os.path.exists(old + ".meta")
    assert os.path.exists(inc.path) and os.path.exists(inc.meta_path)
    inc.close()
    Incoming(str(rx), INDEX - 1, TERM, 10, 0).close()     # a lower one leaves it alone
    assert os.path.exists(inc.path)


# Receiver rules ############################################################

def test_receiver_keeps_only_the_chunk_covering_its_offset(tmp_path):
    data = write_file(tmp_path / "snap.json", 10_000)
    size, crc = len(data), zlib.crc32(data)
    inc = Incoming(str(tmp_path), INDEX, TERM, size, crc)

    def chunk(lo, hi):
        return decode(encode_chunk(INDEX, TERM, lo, size, crc, data[lo:hi]))

    assert decode(inc.accept(chunk(4000, 6000)))["offset"] == 0    # ahead: dropped
    assert decode(inc.accept(chunk(0, 3000)))["offset"] == 3000
    assert decode(inc.accept(chunk(0, 1000)))["offset"] == 3000    # duplicate: re-ack
    assert decode(inc.accept(chunk(2000, 5000)))["offset"] == 5000  # overlap: the tail
    ack = decode(inc.accept(chunk(5000, 10_000)))
    assert ack == {"type": "snap_ack", "index": INDEX, "term": TERM, "offset": size,
                   "complete": True}
    assert open(inc.done_path, "rb").read() == data
    assert decode(inc.accept(chunk(0, 10)))["complete"]    # after complete: re-ack
    with pytest.raises(ValueError):
        inc.accept(decode(encode_chunk(INDEX, TERM + 1, 0, size, crc, data[:10])))


# Sender rules ##############################################################

def test_sender_window_and_resend_timing(tmp_path):
    write_file(tmp_path / "snap.json", 20 * 1000)
    out = Outgoing("n2", INDEX, TERM, str(tmp_path / "snap.json"), chunk_bytes=1000,
                   window=8, resend_ticks=3)
    first = out.due(0)
    assert [decode(p)["offset"] for p in first] == [i * 1000 for i in range(8)]
    assert out.due(1) == [] and out.due(2) == []
    assert out.due(3) == first                       # nothing acked: all re-sent
    out.on_ack(decode(encode_ack(INDEX, TERM, 2000, False)))
    assert [decode(p)["offset"] for p in out.due(4)] == [8000, 9000]   # window slid
    out.on_ack(decode(encode_ack(INDEX, TERM, 1000, False)))   # a stale, late ack
    assert out.due(4) == []                          # re-opened chunk counts as sent
    assert [decode(p)["offset"] for p in out.due(7)][0] == 1000
    out.close()


def test_ack_for_another_transfer_is_ignored(tmp_path):
    write_file(tmp_path / "snap.json", 5000)
    out = Outgoing("n2", INDEX, TERM, str(tmp_path / "snap.json"))
    out.due(0)
    for ack in [encode_ack(INDEX + 1, TERM, 5000, True),
                encode_ack(INDEX - 1, TERM, 5000, True),
                encode_ack(INDEX, TERM + 1, 5000, True),
                encode_ack(INDEX, TERM, 6000, False),      # more than the file
                encode_ack(INDEX, TERM, 4000, True)]:      # complete, but not all
        out.on_ack(decode(ack))
        assert not out.done and out.offset == 0
    out.on_ack(decode(encode_ack(INDEX, TERM, 5000, True)))
    assert out.done
    out.close()


def test_expired_after_silence_and_progress_resets_it(tmp_path):
    write_file(tmp_path / "snap.json", 100_000)
    out = Outgoing("n2", INDEX, TERM, str(tmp_path / "snap.json"), chunk_bytes=1000,
                   max_silent_ticks=100)
    out.due(0)
    assert not out.expired(99) and out.expired(100)
    out.due(120)
    out.on_ack(decode(encode_ack(INDEX, TERM, 1000, False)))   # progress at tick 120
    assert not out.expired(219) and out.expired(220)
    out.on_ack(decode(encode_ack(INDEX, TERM, 1000, False)))   # same offset: none
    assert out.expired(220)
    out.close()


def test_outgoing_rejects_bad_config(tmp_path):
    write_file(tmp_path / "snap.json", 10)
    for kw in [{"chunk_bytes": 0}, {"chunk_bytes": 60 * 1024 + 1}, {"window": 0}]:
        with pytest.raises(ValueError):
            Outgoing("n2", INDEX, TERM, str(tmp_path / "snap.json"), **kw)
    assert CHUNK_BYTES == 32 * 1024


# Wire format ###############################################################

def test_round_trip():
    p = encode_chunk(INDEX, TERM, 10, 100, 0xDEADBEEF, b"x" * 20)
    assert p[:1] == b"C"
    assert decode(p) == {"type": "snap_chunk", "index": INDEX, "term": TERM,
                         "offset": 10, "size": 100, "crc32": 0xDEADBEEF,
                         "data": b"x" * 20}
    a = encode_ack(INDEX, TERM, 64, False)
    assert a[:1] == b"A"
    assert decode(a) == {"type": "snap_ack", "index": INDEX, "term": TERM,
                         "offset": 64, "complete": False}


GOOD_CHUNK = encode_chunk(INDEX, TERM, 0, 100, 7, b"abc")
GOOD_ACK = encode_ack(INDEX, TERM, 5, True)


def raw_chunk(index=INDEX, term=TERM, offset=0, size=100, crc=7, data=b"abc", n=None):
    return st._CHUNK.pack(b"C", index, term, offset, size, crc,
                          len(data) if n is None else n) + data


@pytest.mark.parametrize("payload", [
    b"",
    b"{\"type\": \"append\"}",                              # a Raft JSON message
    b"X" + GOOD_CHUNK[1:],                                  # bad tag
    GOOD_CHUNK[:20],                                        # short header
    GOOD_CHUNK[:-1],                                        # data shorter than its len
    GOOD_CHUNK + b"!",                                      # data longer than its len
    raw_chunk(offset=98),                                   # offset + len > size
    raw_chunk(offset=101, data=b""),                        # offset > size
    raw_chunk(size=(64 << 30) + 1, data=b""),               # size over 64 GiB
    raw_chunk(size=1 << 20, data=b"z" * (60 * 1024 + 1)),   # data over 60 KiB
    raw_chunk(index=0),                                     # index 0
    GOOD_ACK[:-1],                                          # short ack
    GOOD_ACK + b"\x00",                                     # long ack
    GOOD_ACK[:-1] + b"\x02",                                # complete not 0/1
    st._ACK.pack(b"A", 0, TERM, 5, 0),                      # ack index 0
    st._ACK.pack(b"A", INDEX, TERM, (64 << 30) + 1, 0),     # ack offset over 64 GiB
])
def test_decode_rejects_malformed(payload):
    with pytest.raises(ValueError):
        decode(payload)


@pytest.mark.parametrize("args", [
    (INDEX, TERM, -1, 100, 7, b""),            # negative offset
    (INDEX, -1, 0, 100, 7, b""),               # negative term
    (INDEX, TERM, 0, -5, 7, b""),              # negative size
    (INDEX, TERM, 0, 100, -7, b""),            # negative crc
    (INDEX, TERM, 99, 100, 7, b"ab"),          # past the end
    (0, TERM, 0, 100, 7, b""),                 # index 0
])
def test_encode_chunk_rejects_out_of_range(args):
    with pytest.raises(ValueError):
        encode_chunk(*args)
