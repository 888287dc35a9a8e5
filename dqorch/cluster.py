"""What a member of a cluster does besides the Raft core: the UDP transport to its
peers, snapshots sent to followers far behind (in chunks, snapshot_transfer.py),
and the heartbeats followers pass to the leader. Built by app.py once the node has
another member (raft_peers at start, or a member added online: set_peers follows the
applied configuration); the node (raft/node.py) knows none of it but `send` and its
`receivers`.

Rule 1: heartbeats are soft state on the node that got them (DESIGN §1). A follower
passes the leader every heartbeat it received since its last digest, with its age
(never a timestamp: clocks need not agree), every DIGEST_TICKS; the leader keeps the
freshest of each worker's.
Rule 2: a follower accepts snapshot chunks only from the leader it follows; one
transfer in at a time (a newer index replaces an older one), one out per peer.
Rule 3: every member tells every other, every DIGEST_TICKS, its wall clock (clock.py
makes the cluster's time of it), whether its broker connection works and for how long,
and how far its clock is from the cluster's time (b"B"; peer_news.py decides what it
means).
"""
from __future__ import annotations

import json
import logging
import socket
import time

import gevent

from . import parse
from .errors import ApiError
from .raft import core as C
from .raft import snapshot_transfer as xfer
from .raft.pool import in_thread
from .raft.transport import Codec, UdpTransport

log = logging.getLogger(__name__)

DIGEST_TICKS = 5
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError as e:
        log.warning("cannot resolve a peer host=%s error=%s; trying it as given", host, e)
        return host


def bind_host(host: str) -> str:
    """Bind the Raft socket to node_name's host when it is an address of this machine."""
    try:
        socket.inet_aton(host)
        return host
    except OSError:
        return "0.0.0.0"


def resolve_peers(addresses: dict) -> dict:
    """{name: (host, port)} with each host resolved once."""
    return {name: (_resolve(host), port) for name, (host, port) in addresses.items()}


class Cluster:
    def __init__(self, cfg, node, workers, peers: dict, peer_news, clock) -> None:
        """peers: {name: (host, port)} of every other member, resolved.
        peer_news: peer_news.PeerNews, what each member says of itself; clock:
        clock.ClusterClock, which takes each member's wall clock."""
        self.cfg = cfg
        self.node = node
        self.workers = workers
        self.peer_news = peer_news
        self.clock = clock
        self.codec = Codec(cfg.node_name, cfg.cookie, peers, epoch=time.time_ns())
        self.transport = UdpTransport(self.codec, (bind_host(cfg.node_host), cfg.raft_port),
                                      peers, node.receive, heard=node.heard)
        node.connect(self.transport.send, {
            xfer.CHUNK_TAG: self._on_chunk, xfer.ACK_TAG: self._on_ack,
            b"W": self._on_digest, b"B": self._on_news,
            "snapshot_out": self._snapshot_out})
        self._out: dict[str, xfer.Outgoing] = {}
        self._preparing: set = set()          # peers whose Outgoing is being built
        self._in: xfer.Incoming | None = None
        self._in_from = ""
        self._ticks = 0
        self._digest_mark = 0
        self._loop = None
        self.stats = {"bad_digests": 0, "bad_chunks": 0, "snapshots_sent": 0,
                      "snapshots_received": 0, "bad_news": 0}

    def set_peers(self, peers: dict) -> None:
        """A configuration was applied (resolved {name: (host, port)}): who may send,
        and where to. Only ever added to, never taken from: a member catching up
        applies the log's old configurations on the way (or a snapshot's), which
        need not name the leader it is catching up from; with the peers replaced by
        them it dropped the leader's messages and answered nobody (bench/membership.py
        found it: a replacement stuck at a snapshot forever). A removed member's
        messages count for nothing in the core. Snapshots on their way to a member
        no longer configured stop."""
        self.codec.peers = frozenset(self.codec.peers | set(peers))
        self.transport.peers.update(peers)
        for name in [n for n in self._out if n not in peers]:
            self._out.pop(name).close()

    def start(self) -> None:
        self._remove_stale_received()
        self.transport.start()
        self._loop = gevent.spawn(self._run)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.kill()
        for out in self._out.values():
            out.close()
        if self._in is not None:
            self._in.close()
        self.transport.close()

    def _run(self) -> None:
        while True:
            gevent.sleep(self.node.tick_s)
            self._ticks += 1
            try:
                self._send_snapshots()
                if self._ticks % DIGEST_TICKS == 0:
                    self._send_digest()
                    self._send_news()
            except Exception:
                log.exception("cluster step failed; going on")

    # Heartbeats (Rule 1) ###################################################

    def _send_digest(self) -> None:
        node = self.node
        now = self.workers.now_ms()
        if node.role != "follower" or not node.leader:
            self._digest_mark = now
            return
        fresh = self.workers.fresh_since(self._digest_mark)
        self._digest_mark = now
        if fresh:
            self.transport.send(node.leader, b"W" + _dumps(fresh).encode())

    def _on_digest(self, sender: str, payload: bytes) -> None:
        if self.node.role != "leader":
            return
        try:
            recs = json.loads(payload[1:])
            if type(recs) is not list:
                raise ValueError("not a list")
            for rec in recs:
                age = rec.pop("age_ms")
                if type(age) is not int or age < 0:
                    raise ValueError("age_ms")
                w = parse.heartbeat(rec)
                self.workers.merge(dict(w, age_ms=age))
        except (ValueError, KeyError, TypeError, AttributeError, ApiError):
            self.stats["bad_digests"] += 1

    # News (Rule 3) ########################################################

    def _send_news(self) -> None:
        pn = self.peer_news
        news = b"B" + _dumps({      # ok null: a witness keeps no broker
            "wall_ms": self.clock.wall_ms(), "skew_ms": self.clock.skew_ms(),
            "ok": pn.own_ok, "for_ms": int(pn.own_for_s() * 1000)}).encode()
        for peer in self.node.peers:
            self.transport.send(peer, news)

    def _on_news(self, sender: str, payload: bytes) -> None:
        try:
            d = json.loads(payload[1:])
            wall, skew, ok, for_ms = d["wall_ms"], d["skew_ms"], d["ok"], d["for_ms"]
            if type(wall) is not int or type(skew) is not int or ok not in (True, False, None) \
                    or type(for_ms) is not int or for_ms < 0:
                raise ValueError("not {wall_ms: int, skew_ms: int, ok: bool|null, for_ms: int}")
        except (ValueError, KeyError, TypeError):
            self.stats["bad_news"] += 1
            return
        self.clock.sample(sender, wall)
        self.peer_news.heard(sender, ok, for_ms, skew)

    # Snapshots (Rule 2) ####################################################

    def _remove_stale_received(self) -> None:
        """A transfer completed but not installed before a stop is sent again: the
        leader's snapshot may be newer by now."""
        import glob
        import os
        for path in glob.glob(os.path.join(self.cfg.data_dir, "snapshot-*.json.received")):
            try:
                os.unlink(path)
            except OSError as e:
                log.warning("cannot remove a received snapshot file=%s error=%s", path, e)

    def _snapshot_out(self, m: C.Message) -> None:
        """The core wants peer m.to to get the snapshot at m.index (file m.snapshot).
        Called in the node's loop: the file's checksum is computed in a thread."""
        out = self._out.get(m.to)
        if m.to in self._preparing or not m.snapshot or (
                out is not None and out.index == m.index and not out.expired(self._ticks)):
            return
        if out is not None:
            out.close()
            del self._out[m.to]
        self._preparing.add(m.to)
        gevent.spawn(self._prepare, m)

    def _prepare(self, m: C.Message) -> None:
        try:
            out = in_thread(xfer.Outgoing, m.to, m.index, m.log_term, m.snapshot)
        except OSError as e:
            log.error("cannot send a snapshot peer=%s index=%d error=%s", m.to, m.index, e)
            return
        finally:
            self._preparing.discard(m.to)
        self._out[m.to] = out
        log.info("sending a snapshot peer=%s index=%d bytes=%d", m.to, m.index, out.size)
        self._send_due(m.to, out)

    def _send_due(self, peer: str, out) -> None:
        for payload in out.due(self._ticks):
            self.transport.send(peer, payload)

    def _send_snapshots(self) -> None:
        for peer, out in list(self._out.items()):
            if out.done or out.expired(self._ticks):
                log.info("snapshot transfer %s peer=%s index=%d", "done" if out.done
                         else "given up (silent peer)", peer, out.index)
                if out.done:
                    self.stats["snapshots_sent"] += 1
                out.close()
                del self._out[peer]
                continue
            self._send_due(peer, out)

    def _on_ack(self, sender: str, payload: bytes) -> None:
        out = self._out.get(sender)
        try:
            ack = xfer.decode(payload)
        except ValueError:
            self.stats["bad_chunks"] += 1
            return
        if out is not None and ack["type"] == xfer.SNAP_ACK:
            out.on_ack(ack)
            self._send_due(sender, out)      # ack-clocked: refill the window at once

    def _on_chunk(self, sender: str, payload: bytes) -> None:
        node = self.node
        try:
            chunk = xfer.decode(payload)
        except ValueError:
            self.stats["bad_chunks"] += 1
            return
        if chunk["type"] != xfer.SNAP_CHUNK or sender != node.leader \
                or chunk["index"] <= node.applied_index:
            return
        inc = self._in
        try:
            if inc is None or not inc.matches(chunk) or self._in_from != sender:
                if inc is not None:
                    if chunk["index"] < inc.index:
                        return
                    inc.close()
                inc = self._in = xfer.Incoming(self.cfg.data_dir, chunk["index"],
                                               chunk["term"], chunk["size"], chunk["crc32"])
                self._in_from = sender
                log.info("receiving a snapshot leader=%s index=%d bytes=%d from_offset=%d",
                         sender, inc.index, inc.size, inc.offset)
            ack = inc.accept(chunk)
        except (OSError, ValueError) as e:
            log.error("snapshot chunk cannot be written error=%s", e)
            return
        self.transport.send(sender, ack)
        if inc.complete:
            self.stats["snapshots_received"] += 1
            self._in = None
            inc.close()
            node.step_later(C.Message(C.SNAPSHOT, frm=sender, to=node.node_name,
                                      term=node.term, index=inc.index, log_term=inc.term,
                                      snapshot=inc.done_path))
