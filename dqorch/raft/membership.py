"""The cluster's configuration: who is a member, in which role, at which addresses.
Pure. It lives in the log (a configuration entry, applied by raft/node.py itself, never
by the FSM) and in every snapshot's head, like hashicorp/raft's configuration.go; the
config file's raft_peers only give the configuration of a cluster whose log holds none
yet (the base, index 0).

Rule 1: one change at a time (Core's docstring, Membership): change() makes the next
configuration from this one and refuses any that differs by more than one voter.
Rule 2: a member is its node_name; `id` is made when its data_dir is first created, so
a wiped data_dir is another member ("" while unknown).
Rule 3: an id once removed never comes back. remove() keeps the member's id in
`removed`: the old data_dir's datagrams still on the wire (delayed, duplicated, or a
removed node still running) must never be recorded as the id of the member added
again under the same name, nor count for it (etcd keeps removed ids the same way).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

OP = "raft_config"            # a configuration entry's "op"
VOTER, LEARNER, WITNESS = "voter", "learner", "witness"
ROLES = (VOTER, LEARNER, WITNESS)


# A learner is caught up (may be promoted) within this many entries of the leader's
# last: at a few thousand commands a second, a fraction of a second of work behind.
CAUGHT_UP_ENTRIES = 1000


def caught_up(match: int, last_index: int) -> bool:
    """match: what the leader knows the member holds. 0 is "nothing acknowledged yet"
    (a snapshot still on its way), however short the log."""
    return match > 0 and last_index - match <= CAUGHT_UP_ENTRIES


_DIGESTS: dict = {}


class ChangeRefused(ValueError):
    """A membership change that this configuration cannot take (the message says why)."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str                 # node_name, name@host
    role: str = VOTER         # voter, learner or witness (a voter that must not lead)
    raft: str = ""            # host:port of its Raft socket; "" : node_name's host, raft_port
    api: str = ""             # host:port of its HTTP API, for forwarded writes
    id: str = ""              # Rule 2

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "raft": self.raft, "api": self.api,
                "id": self.id}


@dataclass(frozen=True, slots=True)
class Config:
    members: tuple = ()
    index: int = 0            # the entry it was applied from; 0: the base
    removed: frozenset = frozenset()   # Rule 3: ids of removed members, forever

    @classmethod
    def of(cls, names, witnesses=(), index: int = 0) -> "Config":
        return cls(tuple(Member(n, WITNESS if n in witnesses else VOTER)
                         for n in sorted(set(names))), index)

    @classmethod
    def from_dict(cls, d: dict, index: int) -> "Config":
        """ValueError when d is not a configuration."""
        try:
            members = tuple(Member(str(m["name"]), str(m.get("role", VOTER)),
                                   str(m.get("raft", "")), str(m.get("api", "")),
                                   str(m.get("id", ""))) for m in d["members"])
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a configuration: {e!r}")
        try:
            removed = frozenset(str(i) for i in d.get("removed", ()))
        except TypeError as e:
            raise ValueError(f"not a configuration: {e!r}")
        cfg = cls(tuple(sorted(members, key=lambda m: m.name)), index, removed)
        cfg.check()
        return cfg

    def to_dict(self) -> dict:
        d = {"members": [m.to_dict() for m in self.members]}
        if self.removed:
            d["removed"] = sorted(self.removed)
        return d

    def check(self) -> None:
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"a member is listed twice: {names}")
        bad = [m.role for m in self.members if m.role not in ROLES]
        if bad:
            raise ValueError(f"unknown role {bad[0]!r}")
        if not self.voters:
            raise ValueError("a configuration needs at least one voter")

    @property
    def names(self) -> tuple:
        return tuple(m.name for m in self.members)

    @property
    def voters(self) -> tuple:
        """Voting members, witnesses included."""
        return tuple(m.name for m in self.members if m.role != LEARNER)

    @property
    def learners(self) -> tuple:
        return tuple(m.name for m in self.members if m.role == LEARNER)

    @property
    def witnesses(self) -> tuple:
        return tuple(m.name for m in self.members if m.role == WITNESS)

    def get(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    # Rule 1 ####################################################################

    def add(self, member: Member) -> "Config":
        if self.get(member.name) is not None:
            raise ChangeRefused(f"{member.name} is a member already")
        if member.role not in ROLES:
            raise ChangeRefused(f"role must be one of {', '.join(ROLES)}")
        return self._with(self.members + (member,))

    def promote(self, name: str, role: str = VOTER) -> "Config":
        m = self.get(name)
        if m is None:
            raise ChangeRefused(f"{name} is not a member")
        if m.role != LEARNER:
            raise ChangeRefused(f"{name} is a {m.role} already, not a learner")
        if role not in (VOTER, WITNESS):
            raise ChangeRefused("a learner is promoted to voter or witness")
        if not m.id:
            raise ChangeRefused(f"{name} has not been heard from yet (its member id is "
                                f"unknown); promote it once it has caught up")
        return self._with(tuple(replace(x, role=role) if x.name == name else x
                                for x in self.members))

    def remove(self, name: str) -> "Config":
        m = self.get(name)
        if m is None:
            raise ChangeRefused(f"{name} is not a member")
        if m.role != LEARNER and len(self.voters) == 1:
            raise ChangeRefused(f"{name} is the last voter")
        return self._with(tuple(x for x in self.members if x.name != name),
                          self.removed | {m.id} if m.id else self.removed)

    def with_id(self, name: str, id_: str) -> "Config":
        """The same members, name's id recorded (changes no vote)."""
        if id_ in self.removed:
            raise ChangeRefused(f"member id {id_} was removed (Rule 3)")
        return self._with(tuple(replace(x, id=id_) if x.name == name else x
                                for x in self.members))

    def digest(self) -> str:
        """What a member whose configuration is still the base tells the others it
        lists, so that members started with different raft_peers refuse each other
        instead of forming a cluster with a phantom. Cached: stamped on every message."""
        d = _DIGESTS.get(self.members)
        if d is None:
            d = _DIGESTS[self.members] = "%08x" % zlib.crc32(
                ",".join(sorted(self.voters)).encode())
        return d

    def _with(self, members, removed=None) -> "Config":
        new = Config(tuple(sorted(members, key=lambda m: m.name)), self.index,
                     self.removed if removed is None else removed)
        new.check()
        if len(set(self.voters) ^ set(new.voters)) > 1:
            raise ChangeRefused("a change may add or remove one voter at a time")
        return new
