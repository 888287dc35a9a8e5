"""A seeded simulation of dqorch.raft.core: several Cores, a network that is a plain
list of in-flight messages (delivered in any order, dropped, duplicated, cut by
partitions, including one-way ones), crashes that lose everything but what a Ready
persisted, restarts from it, and compaction into snapshots. The invariants are checked
as the run goes; a failure names the seed so it can be replayed:

    DQ_SIM_SEED=<seed> pytest tests/unit/test_raft_core.py -k replay

With `spares`, membership changes too (issue 27): spare nodes start outside the
configuration; the leader adds learners, promotes them, removes members (itself
included), one change at a time, applied when committed, as raft/node.py does. A
configuration entry's data is ("conf", voters, learners). Every invariant above holds,
and after healing the members of the final configuration agree.

Learnt from etcd-io/raft's rafttest (the network is a list the test controls) and
hashicorp/raft's fuzzy tests (faults on a schedule); written for our core.
"""
from __future__ import annotations

import random

from dqorch.raft import core as C


class SafetyViolation(AssertionError):
    pass


class Sim:
    def __init__(self, n: int, seed: int, *, witnesses=(), drop: float = 0.05,
                 dup: float = 0.03, election_ticks: int = 10, max_msg_entries: int = 0,
                 disk_fail: float = 0.02, spares: int = 0):
        self.seed = seed
        self.rng = random.Random(seed)
        self.ids = [f"n{i}" for i in range(1, n + spares + 1)]
        self.initial = (tuple(self.ids[:n]), ())          # (voters, learners)
        self.changes = spares > 0
        self.pending: dict[str, int] = {}          # leader -> index of its last change
        self.witnesses = frozenset(witnesses)
        self.drop, self.dup, self.disk_fail = drop, dup, disk_fail
        self.election_ticks = election_ticks
        # Small batches make followers acknowledge old entries without the new
        # leader's no-op: the only way the §5.4.2 commit rule is ever put to the test.
        self.max_msg_entries = max_msg_entries or self.rng.choice([1, 1, 2, 8])
        # What survives a crash: exactly what the Readies asked to persist.
        self.disk = {i: {"hs": (0, None, 0), "snap": (0, 0, ()), "log": []} for i in self.ids}
        self.nodes: dict[str, C.Core | None] = {}
        self.state: dict[str, list] = {}           # applied (index, data), per node
        self.net: list[C.Message] = []
        self.cut: set[tuple[str, str]] = set()     # (from, to) pairs that lose everything
        self.leaders: dict[int, str] = {}          # term -> the one leader of it
        self.committed: dict[int, tuple] = {}      # index -> (term, data), from any node
        self.proposed = 0
        self.trace: list[str] = []
        for i in self.ids:
            self.start(i)

    # Nodes #################################################################

    def config_of(self, applied) -> tuple:
        """(voters, learners) after the applied entries (index, data), in order."""
        confs = [d for _, d in applied if type(d) is tuple and d[0] == "conf"]
        return confs[-1][1:] if confs else self.initial

    def start(self, i: str) -> None:
        d = self.disk[i]
        voters, learners = self.config_of(d["snap"][2])
        self.nodes[i] = C.Core(i, voters, learners=learners,
                               rng=random.Random(self.rng.random()),
                               election_ticks=self.election_ticks, hard_state=d["hs"],
                               snapshot=d["snap"], entries=list(d["log"]),
                               witnesses=self.witnesses,
                               max_msg_entries=self.max_msg_entries)
        self.state[i] = list(d["snap"][2])
        self.process(i)

    def crash(self, i: str) -> None:
        self.nodes[i] = None
        self.trace.append(f"crash {i}")

    def up(self) -> list[str]:
        return [i for i in self.ids if self.nodes[i] is not None]

    def leader(self) -> str | None:
        live = [i for i in self.up() if self.nodes[i].role == C.LEADER]
        return max(live, key=lambda i: self.nodes[i].term) if live else None

    def process(self, i: str) -> None:
        """Carry out node i's Ready in the documented order, checking as it goes."""
        node = self.nodes[i]
        rd = node.ready()
        if rd.empty():
            return
        d = self.disk[i]
        if rd.entries and self.rng.random() < self.disk_fail:
            # The write failed: nothing of this Ready is durable, nothing is sent or
            # applied, and the node forgets the entries (node.py does the same).
            self.trace.append(f"disk fails {i} from {rd.entries[0].index}")
            node.forget_unstable(rd.entries[0].index)
            return
        if rd.hard_state is not None:
            d["hs"] = rd.hard_state
        if rd.snapshot is not None:
            index, term, data = rd.snapshot
            d["snap"], d["log"] = (index, term, data), []
            self.state[i] = list(data)
            # The snapshot's configuration takes effect with it (node.py _install).
            node.set_members(*self.config_of(data), self.witnesses)
        if rd.entries:
            first = rd.entries[0].index
            d["log"] = [e for e in d["log"] if e.index < first] + list(rd.entries)
            self._check_contiguous(i, d)
        for m in rd.messages:
            self.net.append(m)
        for e in rd.committed:
            self._apply(i, e)
        for name, fields in rd.events:
            if name == "became_leader":
                self._check_new_leader(i, fields["term"])
        node.advance(rd)

    def _check_contiguous(self, i: str, d: dict) -> None:
        want = d["snap"][0] + 1
        for e in d["log"]:
            if e.index != want:
                self.fail(f"{i}: stored log has {e.index} where {want} belongs")
            want += 1

    def _apply(self, i: str, e: C.Entry) -> None:
        state = self.state[i]
        last = state[-1][0] if state else self.disk[i]["snap"][0]
        if e.index != last + 1:
            self.fail(f"{i} applied {e.index} after {last}")
        seen = self.committed.setdefault(e.index, (e.term, e.data))
        if seen != (e.term, e.data):
            self.fail(f"{i} applied {e.index}={e.term, e.data}, another node {seen}")
        state.append((e.index, e.data))
        if type(e.data) is tuple and e.data[0] == "conf":
            self.nodes[i].set_members(e.data[1], e.data[2], self.witnesses)
            self.trace.append(f"{i} applies conf {e.index} {e.data[1:]}")

    def _check_new_leader(self, i: str, term: int) -> None:
        other = self.leaders.setdefault(term, i)
        if other != i:
            self.fail(f"two leaders in term {term}: {other} and {i}")
        node = self.nodes[i]
        for index, (t, _) in self.committed.items():   # leader completeness (§5.4)
            if index > node.snap_index and node.term_at(index) != t:
                self.fail(f"new leader {i} (term {term}) lacks committed entry {index}")

    def fail(self, what: str) -> None:
        raise SafetyViolation(f"seed {self.seed}: {what}\nlast steps: {self.trace[-25:]}")

    # Network ###############################################################

    def deliver_one(self) -> bool:
        if not self.net:
            return False
        m = self.net.pop(self.rng.randrange(len(self.net)))     # any order
        if self.nodes.get(m.to) is None or (m.frm, m.to) in self.cut:
            return True
        if self.rng.random() < self.drop:
            return True
        if self.rng.random() < self.dup:
            self.net.append(m)
        self.trace.append(f"{m.type} {m.frm}->{m.to} t{m.term} i{m.index}"
                          f"{' rej' if m.reject else ''}")
        self.nodes[m.to].step(m)
        self.process(m.to)
        return True

    def partition(self) -> None:
        """A random cut: a group that cannot reach the rest, one-way at times."""
        self.cut.clear()
        group = set(self.rng.sample(self.ids, self.rng.randrange(1, len(self.ids))))
        one_way = self.rng.random() < 0.3
        for a in self.ids:
            for b in self.ids:
                if (a in group) != (b in group) and (not one_way or a in group):
                    self.cut.add((a, b))
        self.trace.append(f"partition {sorted(group)}{' one-way' if one_way else ''}")

    # Actions ###############################################################

    def tick(self, i: str) -> None:
        self.nodes[i].tick()
        self.process(i)

    def propose(self) -> None:
        lead = self.leader()
        if lead is None:
            return
        self.proposed += 1
        try:
            self.nodes[lead].propose(f"v{self.proposed}")
        except C.NotLeader:
            return
        self.process(lead)

    def change(self) -> None:
        """The leader proposes one membership change, if it may (node.py's rules:
        its term's first entry applied, its last change applied)."""
        lead = self.leader()
        if lead is None:
            return
        node = self.nodes[lead]
        if node.term_at(node.applied) != node.term or self.pending.get(lead, 0) > node.applied:
            return
        voters, learners = set(node.voters), set(node.learners)
        outside = [i for i in self.ids if i not in voters | learners]
        r = self.rng.random()
        if r < 0.35 and outside:
            what, learners = "add", learners | {self.rng.choice(outside)}
        elif r < 0.7 and learners:
            x = self.rng.choice(sorted(learners))
            what, voters, learners = "promote", voters | {x}, learners - {x}
        elif len(voters) > 1 or learners:
            # Never itself: the API hands leadership over first, and so does this.
            # (A leader that applies its own removal, then crashes before the others
            # know it is committed, leaves them needing the vote of a member that no
            # longer votes and holds a longer log: thesis §4.2.2's case, which
            # configurations taking effect when committed cannot avoid.)
            choices = sorted((voters - {lead}) | learners) if len(voters) > 1 else sorted(learners)
            if not choices:
                return
            x = self.rng.choice(choices)
            what, voters, learners = "remove", voters - {x}, learners - {x}
        else:
            return
        data = ("conf", tuple(sorted(voters)), tuple(sorted(learners)))
        try:
            self.pending[lead] = node.propose(data)
        except C.NotLeader:
            return
        self.trace.append(f"{lead} proposes {what} {data[1:]}")
        self.process(lead)

    def compact(self, i: str) -> None:
        node = self.nodes[i]
        if node.applied <= node.snap_index:
            return
        data = tuple(self.state[i])
        term = node.term_at(node.applied)
        node.compact(node.applied, data)
        d = self.disk[i]
        d["snap"] = (node.applied, term, data)
        d["log"] = [e for e in d["log"] if e.index > node.applied]

    def random_step(self) -> None:
        r = self.rng.random()
        up = self.up()
        if r < 0.50:
            self.deliver_one()
        elif r < 0.80 and up:
            self.tick(self.rng.choice(up))
        elif r < 0.88:
            if self.changes and self.rng.random() < 0.15:
                self.change()
            else:
                self.propose()
        elif r < 0.895 and up:
            self.crash(self.rng.choice(up))
        elif r < 0.93:
            down = [i for i in self.ids if self.nodes[i] is None]
            if down:
                i = self.rng.choice(down)
                self.trace.append(f"restart {i}")
                self.start(i)
        elif r < 0.95:
            if self.cut and self.rng.random() < 0.5:
                self.cut.clear()
                self.trace.append("heal")
            else:
                self.partition()
        elif r < 0.98 and up:
            self.compact(self.rng.choice(up))
        elif up:
            lead = self.leader()
            if lead is not None:
                self.nodes[lead].transfer_leadership(self.rng.choice(self.ids))
                self.process(lead)

    def check_logs_match(self) -> None:
        """Log matching (§5.3): same index and term -> same entries up to there."""
        up = self.up()
        for a in up:
            for b in up:
                if a >= b:
                    continue
                na, nb = self.nodes[a], self.nodes[b]
                lo = max(na.snap_index, nb.snap_index) + 1
                hi = min(na.last_index(), nb.last_index())
                top = next((i for i in range(hi, lo - 1, -1)
                            if na.term_at(i) == nb.term_at(i)), None)
                if top is None:
                    continue
                for i in range(lo, top + 1):
                    ea, eb = na.entries(i, i + 1)[0], nb.entries(i, i + 1)[0]
                    if ea != eb:
                        self.fail(f"logs of {a} and {b} agree at {top} but differ at {i}")

    def settle(self, max_rounds: int = 400) -> None:
        """Heal everything and run fault-free: a leader must emerge and a fresh
        proposal must reach every node (liveness with a connected majority)."""
        self.cut.clear()
        self.drop = self.dup = self.disk_fail = 0.0
        for i in self.ids:
            if self.nodes[i] is None:
                self.start(i)
        target, by = None, None
        for _ in range(max_rounds):
            for i in self.ids:
                self.tick(i)
            for _ in range(len(self.net) * 2 + 10):
                if not self.deliver_one():
                    break
            lead = self.leader()
            if target is not None and (lead, self.nodes[lead].term if lead else 0) != by:
                target = None                    # its leader lost office: propose anew
            if target is None and lead is not None and self.nodes[lead].transferee is None:
                self.proposed += 1
                target, by = f"v{self.proposed}", (lead, self.nodes[lead].term)
                try:
                    self.nodes[lead].propose(target)
                    self.process(lead)
                except C.NotLeader:
                    target = None
            members = self.members()
            if target is not None and all(
                    any(d == target for _, d in self.state[i]) for i in members):
                self.check_equal_states(members)
                if self.witnesses and self.leader() in self.witnesses:
                    continue                     # it must hand over: run on
                return
        self.fail(f"no progress after healing: leader={self.leader()} "
                  f"{[self.nodes[i].status() for i in self.ids]}")

    def members(self) -> list:
        """The leader's configuration (every node without changes)."""
        lead = self.leader()
        if not self.changes or lead is None:
            return self.ids
        node = self.nodes[lead]
        return sorted(set(node.voters) | set(node.learners))

    def check_equal_states(self, ids=None) -> None:
        """Every member applied the same sequence (each has applied the last proposal)."""
        ids = ids or self.ids
        states = {i: self.state[i] for i in ids}
        upto = min(s[-1][0] for s in states.values())
        cut = {i: [x for x in s if x[0] <= upto] for i, s in states.items()}
        first = cut[ids[0]]
        for i, s in cut.items():
            if s[-len(first):] != first[-len(s):] or s[-1][0] != upto:
                self.fail(f"applied states differ: {ids[0]} and {i} up to {upto}")


def run(seed: int, n: int = 3, steps: int = 2000, **kw) -> Sim:
    sim = Sim(n, seed, **kw)
    for k in range(steps):
        sim.random_step()
        if k % 50 == 0:
            sim.check_logs_match()
    sim.check_logs_match()
    sim.settle()
    sim.check_logs_match()
    return sim
