"""Membership's checks on every Raft message before the core sees it, and the
leader's recording of member ids (raft/membership.py Rules 2 and 3). The node
(raft/node.py) calls `accept(m)` for each decoded message and `refused_by(...)` for a
REFUSED_TAG payload; nothing else here is called from outside.

What a message is checked on, in order:
1. Its member id is one the configuration lists as removed: dropped, one line per id
   (a late datagram of a replaced data_dir, or one still sent by it).
2. Its member id differs from the one recorded for its member, and the message counts
   toward an election or a commit (_COUNTS): dropped, one line per id. Appends are
   not checked: a member catching up applies old configurations on the way, whose ids
   may be out of date, and a leader's authority comes from the votes checked here.
3. Both sides still run the base configuration (the config file's) and list different
   members (the digest): dropped, one line, and the sender is told (REFUSED_TAG) so
   that it says so too.
A message that passes and carries an id its member has none recorded for gets it
recorded: the leader proposes a configuration entry that changes no vote (`pin`).

Counts go into the node's stats dict (wrong_member_id, removed_member_id,
other_members). The gate holds no configuration of its own: it reads the one in force
through `config()` each time.
"""
from __future__ import annotations

import logging
import time

from . import core as C
from . import membership as M

log = logging.getLogger(__name__)

# The first byte of "your messages are refused: I list other members": not a Raft
# message (those start with b"{"), nor a chunk, an ack or a digest (cluster.py).
REFUSED_TAG = b"R"

# What a member's id is checked on: the messages that count toward an election or a
# commit.
_COUNTS = frozenset({C.PRE_VOTE, C.PRE_VOTE_RESP, C.VOTE, C.VOTE_RESP, C.APPEND_RESP})

PIN_RETRY_S = 1.0     # a member's id is proposed again at most this often


class MemberGate:
    """config(): the configuration in force. send(peer, payload): the transport.
    propose(cmd): queue a configuration entry (the node's propose_async).
    may_change(): this node leads and may propose a membership change now (its term's
    first entry applied, no change pending, not stopped). behind(): this node is not
    yet up to date with the leader it follows (a wrong id is then a WARNING, since a
    configuration it has not applied may record the member's new id)."""

    def __init__(self, node_name: str, member_id: str, *, config, send, propose,
                 may_change, behind, stats: dict) -> None:
        self.node_name = node_name
        self.member_id = member_id
        self.config = config
        self.send = send
        self.propose = propose
        self.may_change = may_change
        self.behind = behind
        self.stats = stats
        for key in ("wrong_member_id", "removed_member_id", "other_members"):
            stats.setdefault(key, 0)
        self._pinning: dict = {}      # member -> monotonic time its id was last proposed
        self._refused: set = set()    # (member, id or digest) already logged

    def accept(self, m: C.Message) -> bool:
        """True: the core may step m. (The module docstring says what is checked.)"""
        config = self.config()
        member = config.get(m.frm)
        if m.sid and m.sid in config.removed:
            self.stats["removed_member_id"] += 1
            if self._first((m.frm, m.sid)):
                log.warning("messages refused member=%s member_id=%s: that data_dir was "
                            "removed from the cluster; a member added again under this "
                            "name starts from an empty data_dir (docs/CLUSTER.md)",
                            m.frm, m.sid)
            return False
        if member is not None and member.id and m.sid != member.id and m.type in _COUNTS:
            self.stats["wrong_member_id"] += 1
            if self._first((m.frm, m.sid)):
                log.log(logging.WARNING if self.behind() else logging.ERROR,
                        "messages refused member=%s member_id=%s configured_id=%s "
                        "config_index=%d: its data_dir is not the one that joined (emptied "
                        "or restored?), or this member has not applied the configuration "
                        "that added it again yet; remove it and add it again "
                        "(docs/CLUSTER.md, Replacing a dead member)", m.frm, m.sid or "-",
                        member.id, config.index)
            return False
        if m.digest and config.index == 0 and m.digest != config.digest():
            self.stats["other_members"] += 1
            if self._first((m.frm, m.digest)):
                log.error("messages refused member=%s: it lists other members than this "
                          "node's raft_peers (%s); raft_peers must name the same members "
                          "on every node at first start (docs/CLUSTER.md)", m.frm,
                          ",".join(config.voters))
                # And tell it, so that it says so too, even if it never hears from us.
                self.send(m.frm, REFUSED_TAG + ",".join(config.voters).encode()[:79])
            return False
        if m.sid and member is not None and not member.id:
            self._pin(m.frm, m.sid)
        return True

    def refused_by(self, sender: str, payload: bytes) -> None:
        """A REFUSED_TAG payload: a member whose raft_peers list other members refuses
        this node's messages. One line here too, and one count, once per member."""
        if self._first(("by", sender)):
            self.stats["other_members"] += 1
            log.error("messages refused by member=%s: its raft_peers list other members "
                      "(%s) than this node's (%s); raft_peers must name the same members "
                      "on every node at first start (docs/CLUSTER.md)", sender,
                      payload[1:80].decode("ascii", "replace"),
                      ",".join(self.config().voters))

    def _first(self, key) -> bool:
        if key in self._refused:
            return False
        self._refused.add(key)
        return True

    def _pin(self, name: str, sid: str) -> None:
        """The leader records a member's id the first time it hears from it (and its
        own): a configuration entry that changes no vote. Retried PIN_RETRY_S later
        when another change is under way."""
        now = time.monotonic()
        if not self.may_change() or now - self._pinning.get(name, 0.0) < PIN_RETRY_S:
            return
        self._pinning[name] = now
        new = self.config().with_id(name, sid)
        me = new.get(self.node_name)
        if me is not None and not me.id and self.member_id:
            new = new.with_id(self.node_name, self.member_id)
        log.info("member id recorded member=%s member_id=%s", name, sid)
        self.propose({"op": M.OP, "config": new.to_dict()})
