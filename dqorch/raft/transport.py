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
Rule 3: a message in fragments is repaired, never only resent whole. At loss p, n
fragments arrive together with probability (1-p)^n: a 58 KB entry is ~50 of them, 0.5%
at 10% loss, so whole resends alone stopped every write (issue 28). The receiver asks
for the parts it misses (a NACK) once a message's fragments stop arriving for
NACK_AFTER_S, again with backoff while parts are missing, for at most REASSEMBLY_S;
the sender keeps its recent messages' fragments (RESEND_BYTES in all) and seals the
asked ones again (with a new seq: the window refuses a datagram seen before). A NACK
for a message already forgotten is left to Raft, which sends again what is not
acknowledged.

Datagram: b"DQ" | version 1 | kind (0 whole, 1 fragment, 2 NACK) | epoch u64 | seq u64
          | [msg u64, part u16, parts u16] | sender name (u8 length + utf-8)
          | payload | HMAC-SHA256 of everything before it (32 bytes).
A NACK's payload: the fragments' epoch u64 and msg u64, then the missing parts, u16 each.
`epoch` is the sender's start time in ns: a restarted peer starts a new epoch, and
within an epoch `seq` only grows, so a receiver keeps, per sender, the newest epoch and
a 1024-wide window of seqs seen (as IPsec and WireGuard do).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import struct
import time
from collections import OrderedDict

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
_NACK = struct.Struct("<QQ")              # the fragments' epoch, msg; then u16 parts
# Rule 3. A message's fragments leave back to back, so a pause this long means the
# missing ones are lost (or late: a NACK for a late one costs one duplicate).
NACK_AFTER_S = 0.02
MAX_NACKS = 6                             # in a row without a part arriving
REASSEMBLY_S = 3.0                        # a partial message older than this is dropped
RESEND_BYTES = 4 << 20                    # fragments kept for resending, all peers


class _Partial:
    __slots__ = ("parts", "have", "first", "next_nack", "nacks")

    def __init__(self, parts: int, now: float) -> None:
        self.parts = parts
        self.have: dict[int, bytes] = {}
        self.first = now
        self.next_nack = now + NACK_AFTER_S
        self.nacks = 0


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
        self._parts: dict[tuple, _Partial] = {}             # (sender, epoch, msg) -> parts
        self._pending_bytes = 0
        self._sent: OrderedDict = OrderedDict()             # msg -> (peer, [fragment payloads])
        self._sent_bytes = 0
        self._nack_room = (max_datagram_bytes - _HEAD.size - 1 - len(self._name)
                           - MAC_BYTES - _NACK.size) // 2
        self.outbox: list[tuple[str, bytes]] = []         # (peer, datagram) to send now
        self.last_part_from: str | None = None   # open(): a fragment stored, message incomplete
        self.dropped = {r: 0 for r in DROP_REASONS}
        self.stats = {"nacks_sent": 0, "fragments_resent": 0, "nacks_unanswerable": 0,
                      "partials_expired": 0}

    # Sending ###############################################################

    def seal(self, payload: bytes, to: str = "") -> list[bytes]:
        """The datagrams that carry payload, each at most max_datagram_bytes. to: the
        peer they go to, whose NACKs are answered (Rule 3); "" keeps nothing."""
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
        chunks = [payload[i * room:(i + 1) * room] for i in range(parts)]
        if to:
            self._sent[self._msg] = (to, chunks)
            self._sent_bytes += len(payload)
            while self._sent_bytes > RESEND_BYTES and len(self._sent) > 1:
                _, (_, old) = self._sent.popitem(last=False)
                self._sent_bytes -= sum(map(len, old))
        return [self._datagram(1, _FRAG.pack(self._msg, i, parts), c)
                for i, c in enumerate(chunks)]

    def _datagram(self, kind: int, frag: bytes, payload: bytes) -> bytes:
        self._seq += 1
        body = (_HEAD.pack(MAGIC, kind, self.epoch, self._seq) + frag
                + bytes([len(self._name)]) + self._name + payload)
        return body + hmac.new(self._key, body, hashlib.sha256).digest()

    # Receiving #############################################################

    def open(self, data: bytes, now: float = 0.0):
        """(sender, payload) of a whole message, None while fragments are missing (then
        last_part_from names the sender), for a NACK (its answer goes to `outbox`), or
        when the datagram is dropped (counted in `dropped`). now: a monotonic clock."""
        self.last_part_from = None
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
        elif kind not in (0, 2):
            return self._drop("bad_fragment")
        n = body[pos]
        sender = body[pos + 1:pos + 1 + n].decode("utf-8", "replace")
        payload = body[pos + 1 + n:]
        if sender not in self.peers:
            return self._drop("unknown_sender")
        if not self._fresh(sender, epoch, seq):
            return None
        if kind == 2:
            return self._answer_nack(sender, payload)
        if frag is None:
            return sender, payload
        return self._reassemble(sender, epoch, frag, payload, now)

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

    def _reassemble(self, sender: str, epoch: int, frag: tuple, payload: bytes,
                    now: float):
        msg, part, parts = frag
        if not 0 <= part < parts <= MAX_PARTS:
            return self._drop("bad_fragment")
        key = (sender, epoch, msg)
        p = self._parts.get(key)
        if p is None:
            p = self._parts[key] = _Partial(parts, now)
        elif p.parts != parts:
            return self._drop("bad_fragment")
        if part in p.have:
            return None
        if self._pending_bytes + len(payload) > MAX_REASSEMBLY_BYTES:
            # Under a flood of partial messages, forget the oldest ones, not the link.
            for old in list(self._parts)[:max(1, len(self._parts) // 2)]:
                if old != key:
                    self._forget(old)
        p.have[part] = payload
        self._pending_bytes += len(payload)
        if len(p.have) < parts:
            p.next_nack, p.nacks = now + NACK_AFTER_S, 0    # still arriving
            self.last_part_from = sender
            return None
        self._forget(key)
        return sender, b"".join(p.have[i] for i in range(parts))

    def _forget(self, key: tuple) -> None:
        self._pending_bytes -= sum(map(len, self._parts.pop(key).have.values()))

    def _forget_parts(self, sender: str) -> None:
        for key in [k for k in self._parts if k[0] == sender]:
            self._forget(key)

    # Repair (Rule 3) #######################################################

    def repair(self, now: float) -> float | None:
        """NACKs (into outbox) for the partial messages whose fragments stopped
        arriving; those past REASSEMBLY_S, or asked for MAX_NACKS times in vain, are
        dropped. Returns when to call again, None while nothing is partial."""
        due = None
        for key, p in list(self._parts.items()):
            if now - p.first > REASSEMBLY_S or p.nacks >= MAX_NACKS:
                self._forget(key)
                self.stats["partials_expired"] += 1
                continue
            if now >= p.next_nack:
                sender, epoch, msg = key
                missing = [i for i in range(p.parts) if i not in p.have][:self._nack_room]
                self.outbox.append((sender, self._datagram(
                    2, b"", _NACK.pack(epoch, msg) + struct.pack(f"<{len(missing)}H",
                                                                 *missing))))
                self.stats["nacks_sent"] += 1
                p.nacks += 1
                p.next_nack = now + NACK_AFTER_S * (1 << p.nacks)
            due = p.next_nack if due is None else min(due, p.next_nack)
        return due

    def _answer_nack(self, sender: str, payload: bytes) -> None:
        if len(payload) < _NACK.size or (len(payload) - _NACK.size) % 2:
            return self._drop("bad_fragment")
        epoch, msg = _NACK.unpack_from(payload)
        kept = self._sent.get(msg)
        if epoch != self.epoch or kept is None or kept[0] != sender:
            self.stats["nacks_unanswerable"] += 1     # forgotten: Raft sends again
            return None
        chunks = kept[1]
        parts = len(chunks)
        for (part,) in struct.iter_unpack("<H", payload[_NACK.size:]):
            if part < parts:
                self.outbox.append((sender, self._datagram(
                    1, _FRAG.pack(msg, part, parts), chunks[part])))
                self.stats["fragments_resent"] += 1
        return None

    def _drop(self, reason: str):
        self.dropped[reason] += 1
        return None


class UdpTransport:
    """One UDP socket and the greenlet that reads it. `deliver(sender, payload)` is
    called in the hub for every whole, authenticated message; it must not block.
    Peers: {name: (host, port)}."""

    def __init__(self, codec: Codec, bind: tuple, peers: dict, deliver,
                 heard=None) -> None:
        """heard(sender): part of a message arrived, the rest still missing."""
        from gevent import socket          # glue: the pure Codec above needs none of it
        self.codec = codec
        self.peers = dict(peers)
        self.deliver = deliver
        self.heard = heard or (lambda sender: None)
        self._timeout = socket.timeout
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
            datagrams = self.codec.seal(payload, peer)
        except ValueError:            # more fragments than a message may have
            self.send_errors += 1
            return
        for datagram in datagrams:
            try:
                self.sock.sendto(datagram, addr)
                self.sent += 1
            except OSError:
                self.send_errors += 1

    def _flush(self) -> None:
        out, self.codec.outbox = self.codec.outbox, []
        for peer, datagram in out:
            addr = self.peers.get(peer)
            try:
                if addr is not None:
                    self.sock.sendto(datagram, addr)
                    self.sent += 1
            except OSError:
                self.send_errors += 1

    def _run(self) -> None:
        limit = self.codec.max_datagram_bytes + 1     # one byte more shows "oversized"
        codec = self.codec
        while True:
            now = time.monotonic()
            due = codec.repair(now)
            if codec.outbox:
                self._flush()
            self.sock.settimeout(None if due is None else max(0.001, due - now))
            try:
                data, _ = self.sock.recvfrom(limit)
            except self._timeout:
                continue                              # time to ask for missing parts
            except OSError as e:
                if self.sock.fileno() < 0:
                    return
                log.warning("raft socket receive failed error=%s", e)
                continue
            got = codec.open(data, time.monotonic())
            if codec.outbox:
                self._flush()                         # a NACK answered
            if got is not None:
                try:
                    self.deliver(*got)
                except Exception:
                    log.exception("raft message handler failed sender=%s", got[0])
            elif codec.last_part_from is not None:
                try:
                    self.heard(codec.last_part_from)
                except Exception:
                    log.exception("raft contact handler failed")

    def close(self) -> None:
        if self._loop is not None:
            self._loop.kill()
        self.sock.close()
