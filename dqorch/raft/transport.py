"""Raft messages over UDP between peers: framing, HMAC-SHA256 keyed by `cookie`,
replay protection, fragmentation below a datagram size bound, and the socket.

Rule 1: nothing that arrives decides anything before it is authenticated. A datagram
that is forged, corrupt, truncated, oversized, replayed, or from a name that is not a
peer is dropped and counted by reason (`dropped`), never raised, never logged one by
one, and never reaches raft/core.py.
Rule 2: datagrams stay below `max_datagram_bytes` (default 1200): a UDP datagram
larger than the path MTU (1500 on Ethernet, less through tunnels and VPNs) is split
into IP fragments, and losing one fragment loses all of it; many networks drop
fragments outright. Bigger payloads (an entry with a 60 KB job) are split here into
numbered fragments and put back together on arrival.

Datagram: b"DQ" | version 1 | kind (0 whole, 1 fragment) | epoch u64 | seq u64
          | [msg u64, part u16, parts u16] | sender name (u8 length + utf-8)
          | payload | HMAC-SHA256 of everything before it (32 bytes).
`epoch` is the sender's start time in ns: a restarted peer starts a new epoch, and
within an epoch `seq` only grows, so a receiver keeps, per sender, the newest epoch and
a 1024-wide window of seqs seen (as IPsec and WireGuard do).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import struct

log = logging.getLogger(__name__)

MAGIC = b"DQ\x01"
_HEAD = struct.Struct("<3sBQQ")           # magic+version, kind, epoch, seq
_FRAG = struct.Struct("<QHH")             # message id, part, parts
MAC_BYTES = 32
WINDOW = 1024                             # seqs remembered behind the newest
MAX_PARTS = 32768                         # a message of at most ~36 MiB at 1200 bytes
MAX_REASSEMBLY_BYTES = 64 << 20           # pending fragments held, all senders
DROP_REASONS = ("short", "magic", "mac", "oversized", "unknown_sender", "replayed",
                "stale_epoch", "bad_fragment")


class Codec:
    """Seal and open datagrams for one member. Pure: the caller gives the epoch (its
    start time) and gets bytes back; no socket, no clock."""

    def __init__(self, name: str, cookie: str, peers, *, epoch: int,
                 max_datagram_bytes: int = 1200) -> None:
        self.name = name
        self._key = hashlib.sha256(b"dqorch raft v1\0" + cookie.encode()).digest()
        self.peers = frozenset(peers)
        self.epoch = epoch
        self.max_datagram_bytes = max_datagram_bytes
        self._seq = 0
        self._msg = 0
        self._name = name.encode()
        if len(self._name) > 255:
            raise ValueError("node name longer than 255 bytes")
        self._seen: dict[str, tuple[int, int, int]] = {}   # sender -> epoch, top, bitmap
        self._parts: dict[tuple, dict[int, bytes]] = {}     # (sender, epoch, msg) -> parts
        self._pending_bytes = 0
        self.dropped = {r: 0 for r in DROP_REASONS}

    # Sending ###############################################################

    def seal(self, payload: bytes) -> list[bytes]:
        """The datagrams that carry payload, each at most max_datagram_bytes."""
        whole = _HEAD.size + 1 + len(self._name) + len(payload) + MAC_BYTES
        if whole <= self.max_datagram_bytes:
            return [self._datagram(0, b"", payload)]
        room = self.max_datagram_bytes - (_HEAD.size + _FRAG.size + 1 + len(self._name)
                                          + MAC_BYTES)
        parts = -(-len(payload) // room)
        if parts > MAX_PARTS:
            raise ValueError(f"message of {len(payload)} bytes needs {parts} fragments "
                             f"(at most {MAX_PARTS})")
        self._msg += 1
        return [self._datagram(1, _FRAG.pack(self._msg, i, parts),
                               payload[i * room:(i + 1) * room]) for i in range(parts)]

    def _datagram(self, kind: int, frag: bytes, payload: bytes) -> bytes:
        self._seq += 1
        body = (_HEAD.pack(MAGIC, kind, self.epoch, self._seq) + frag
                + bytes([len(self._name)]) + self._name + payload)
        return body + hmac.new(self._key, body, hashlib.sha256).digest()

    # Receiving #############################################################

    def open(self, data: bytes):
        """(sender, payload) of a whole message, None while fragments are missing or
        when the datagram is dropped (counted in `dropped`)."""
        if len(data) > self.max_datagram_bytes:
            return self._drop("oversized")
        if len(data) < _HEAD.size + 1 + MAC_BYTES:
            return self._drop("short")
        if data[:3] != MAGIC:
            return self._drop("magic")
        body, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.new(self._key, body, hashlib.sha256).digest()):
            return self._drop("mac")
        _, kind, epoch, seq = _HEAD.unpack_from(body)
        pos = _HEAD.size
        frag = None
        if kind == 1:
            if len(body) < pos + _FRAG.size + 1:
                return self._drop("bad_fragment")
            frag = _FRAG.unpack_from(body, pos)
            pos += _FRAG.size
        elif kind != 0:
            return self._drop("bad_fragment")
        n = body[pos]
        sender = body[pos + 1:pos + 1 + n].decode("utf-8", "replace")
        payload = body[pos + 1 + n:]
        if sender not in self.peers:
            return self._drop("unknown_sender")
        if not self._fresh(sender, epoch, seq):
            return None
        if frag is None:
            return sender, payload
        return self._reassemble(sender, epoch, frag, payload)

    def _fresh(self, sender: str, epoch: int, seq: int) -> bool:
        """Replay window (RFC 4303 §3.4.3 style), per sender and epoch."""
        known = self._seen.get(sender)
        if known is None or epoch > known[0]:
            if known is not None:      # the peer restarted: its old fragments are void
                self._forget_parts(sender)
            self._seen[sender] = (epoch, seq, 1)
            return True
        k_epoch, top, bits = known
        if epoch < k_epoch:
            self._drop("stale_epoch")
            return False
        if seq > top:
            shift = seq - top
            bits = ((bits << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self._seen[sender] = (epoch, seq, bits)
            return True
        back = top - seq
        if back >= WINDOW or bits >> back & 1:
            self._drop("replayed")
            return False
        self._seen[sender] = (epoch, top, bits | 1 << back)
        return True

    def _reassemble(self, sender: str, epoch: int, frag: tuple, payload: bytes):
        msg, part, parts = frag
        if not 0 <= part < parts <= MAX_PARTS:
            return self._drop("bad_fragment")
        key = (sender, epoch, msg)
        have = self._parts.setdefault(key, {})
        if part in have:
            return None
        if self._pending_bytes + len(payload) > MAX_REASSEMBLY_BYTES:
            # Under a flood of partial messages, forget the oldest ones, not the link.
            for old in list(self._parts)[:max(1, len(self._parts) // 2)]:
                if old != key:
                    self._pending_bytes -= sum(map(len, self._parts.pop(old).values()))
        have[part] = payload
        self._pending_bytes += len(payload)
        if len(have) < parts:
            return None
        del self._parts[key]
        self._pending_bytes -= sum(map(len, have.values()))
        return sender, b"".join(have[i] for i in range(parts))

    def _forget_parts(self, sender: str) -> None:
        for key in [k for k in self._parts if k[0] == sender]:
            self._pending_bytes -= sum(map(len, self._parts.pop(key).values()))

    def _drop(self, reason: str):
        self.dropped[reason] += 1
        return None


class UdpTransport:
    """One UDP socket and the greenlet that reads it. `deliver(sender, payload)` is
    called in the hub for every whole, authenticated message; it must not block.
    Peers: {name: (host, port)}."""

    def __init__(self, codec: Codec, bind: tuple, peers: dict, deliver) -> None:
        from gevent import socket          # glue: the pure Codec above needs none of it
        self.codec = codec
        self.peers = dict(peers)
        self.deliver = deliver
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(bind)
        self.address = self.sock.getsockname()
        self.sent = 0
        self.send_errors = 0
        self._loop = None

    def start(self) -> None:
        import gevent
        self._loop = gevent.spawn(self._run)

    def send(self, peer: str, payload: bytes) -> None:
        """Best effort, like the network: an unknown peer or a send error is counted."""
        addr = self.peers.get(peer)
        if addr is None:
            self.send_errors += 1
            return
        try:
            datagrams = self.codec.seal(payload)
        except ValueError:            # more fragments than a message may have
            self.send_errors += 1
            return
        for datagram in datagrams:
            try:
                self.sock.sendto(datagram, addr)
                self.sent += 1
            except OSError:
                self.send_errors += 1

    def _run(self) -> None:
        limit = self.codec.max_datagram_bytes + 1     # one byte more shows "oversized"
        while True:
            try:
                data, _ = self.sock.recvfrom(limit)
            except OSError as e:
                if self.sock.fileno() < 0:
                    return
                log.warning("raft socket receive failed error=%s", e)
                continue
            got = self.codec.open(data)
            if got is not None:
                try:
                    self.deliver(*got)
                except Exception:
                    log.exception("raft message handler failed sender=%s", got[0])

    def close(self) -> None:
        if self._loop is not None:
            self._loop.kill()
        self.sock.close()
