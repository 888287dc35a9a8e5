"""dqorch.raft.core driven by transcripts: tests/unit/raft_testdata/*.txt, in the manner
of etcd-io/raft's testdata (cockroachdb's datadriven format, our own small dialect).

A file is a list of cases run in order against one set of cores. A case is a command
line, optional input lines, a line `----`, and the expected output up to the next
blank line; lines starting with `#` between cases are comments. Every command prints
at least one line (`ok` when it has nothing to say), so every case can fail.

The network is a plain list of messages in flight, delivered only when a command says
so (etcd's rafttest/interaction_env.go). Election jitter is fixed per node (`jitter=`),
so ticks are as predictable as the rest. The commands:

  add-nodes N [election=10] [heartbeat=1] [pre-vote=true] [check-quorum=true]
            [max-entries=64] [jitter=j1,j2,...]
                                      members 1..N; input lines set a member's start:
                                      `<id> term=T vote=V commit=C log=t1,t2,...`
  campaign ID                         step a local hup (pre-vote first when on)
  tick ID [N]                         N ticks (default 1)
  propose ID DATA                     propose DATA on ID: its index, or NotLeader
  process-ready ID...                 print each one's Ready, queue its messages,
                                      apply its committed entries, advance
  deliver-msgs ID [from=ID]           step ID with the messages in flight to it
  drop-msgs ID                        discard the messages in flight to ID
  stabilize [ID...]                   process-ready and deliver-msgs until quiet
  cut A B | isolate ID | heal         lose messages between members from now on
  raft-state                          one line per member
  transfer-leadership ID TO           ask leader ID to hand over to TO
  add-node ID [voters=1,2,3]          a new, empty member that knows the voters but is
                                      none of them (it waits to be added)
  set-members ID... voters=.. [learners=..]
                                      apply a configuration on each ID, as the glue
                                      does when a configuration entry is applied
  members ID...                       each one's voters and learners

DQ_REWRITE=1 rewrites the expected output of every file from what the cores print:
for writing a new case; read the diff before committing it.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from dqorch.raft import core as C

DATA = Path(__file__).with_name("raft_testdata")
FILES = sorted(DATA.glob("*.txt"))
SEP = "----"


class FixedJitter(random.Random):
    """The core's only use of its rng is the election jitter: here a fixed number."""

    def __init__(self, jitter: int) -> None:
        super().__init__(0)
        self.jitter = jitter

    def randrange(self, n, *rest):
        return min(self.jitter, n - 1)


# Printing ##################################################################

def fmt_entries(entries) -> str:
    return "[" + " ".join(f"{e.index}/{e.term}" + ("" if e.data is None else f":{e.data}")
                          for e in entries) + "]"


FIELDS = {
    C.PRE_VOTE: ("index", "log_term"), C.VOTE: ("index", "log_term"),
    C.APPEND: ("index", "log_term", "commit", "entries"), C.APPEND_RESP: ("index",),
    C.SNAPSHOT: ("index", "log_term"),
}


def fmt_msg(m: C.Message) -> str:
    parts = [f"{m.frm}->{m.to} {m.type} term={m.term}"]
    for name in FIELDS.get(m.type, ()):
        value = getattr(m, name)
        parts.append(f"{name}={fmt_entries(value) if name == 'entries' else value}")
    if m.reject:
        parts.append("reject" + (f" hint={m.hint}" if m.type == C.APPEND_RESP else ""))
    if m.context:
        parts.append(f"context={m.context}")
    return " ".join(parts)


def fmt_event(event) -> str:
    name, fields = event
    return " ".join([name] + [f"{k}={v}" for k, v in fields.items()])


# The environment ###########################################################

class Env:
    def __init__(self) -> None:
        self.cores: dict[str, C.Core] = {}
        self.net: list[C.Message] = []           # in flight, in the order sent
        self.cuts: set[frozenset] = set()

    def cut_between(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cuts

    def ids(self, args) -> list[str]:
        return list(args) or sorted(self.cores, key=int)

    # commands ----------------------------------------------------------------

    def add_nodes(self, args, kw, lines) -> list[str]:
        n = int(args[0])
        ids = [str(i) for i in range(1, n + 1)]
        jitter = [int(j) for j in kw.get("jitter", ",".join("0" * n)).split(",")]
        starts = {}
        for line in lines:
            id_, *fields = line.split()
            starts[id_] = dict(f.split("=", 1) for f in fields)
        for k, id_ in enumerate(ids):
            st = starts.get(id_, {})
            terms = [int(t) for t in st.get("log", "").split(",") if t]
            vote = st.get("vote")
            self.cores[id_] = C.Core(
                id_, ids, rng=FixedJitter(jitter[k]),
                election_ticks=int(kw.get("election", 10)),
                heartbeat_ticks=int(kw.get("heartbeat", 1)),
                pre_vote=kw.get("pre-vote", "true") == "true",
                check_quorum=kw.get("check-quorum", "true") == "true",
                max_msg_entries=int(kw.get("max-entries", 64)),
                hard_state=(int(st.get("term", 0)), vote, int(st.get("commit", 0))),
                entries=[C.Entry(i + 1, t) for i, t in enumerate(terms)])
            # A start is a restart whose committed entries were applied before.
            self.cores[id_].applied = self.cores[id_].commit
        return self.raft_state((), {}, ())

    def add_node(self, args, kw, lines) -> list[str]:
        id_ = args[0]
        voters = kw.get("voters", ",".join(sorted(self.cores, key=int))).split(",")
        self.cores[id_] = C.Core(id_, voters, rng=FixedJitter(int(kw.get("jitter", 0))),
                                 election_ticks=int(kw.get("election", 10)))
        return self.raft_state([id_], {}, ())

    def set_members(self, args, kw, lines) -> list[str]:
        voters = kw["voters"].split(",")
        learners = [x for x in kw.get("learners", "").split(",") if x]
        for id_ in args:
            self.cores[id_].set_members(voters, learners)
        return self.members(args, {}, ())

    def members(self, args, kw, lines) -> list[str]:
        return [f"{id_}: voters={','.join(self.cores[id_].voters)} "
                f"learners={','.join(self.cores[id_].learners) or '-'}"
                for id_ in self.ids(args)]

    def campaign(self, args, kw, lines) -> list[str]:
        core = self.cores[args[0]]
        core.step(C.Message(C.HUP, frm=core.id, term=core.term))
        return ["ok"]

    def tick(self, args, kw, lines) -> list[str]:
        for _ in range(int(args[1]) if len(args) > 1 else 1):
            self.cores[args[0]].tick()
        return ["ok"]

    def propose(self, args, kw, lines) -> list[str]:
        try:
            return [f"index {self.cores[args[0]].propose(args[1])}"]
        except C.NotLeader as e:
            return [f"NotLeader: leader {e.args[0]}"]

    def transfer_leadership(self, args, kw, lines) -> list[str]:
        self.cores[args[0]].transfer_leadership(args[1])
        return ["ok"]

    def process_ready(self, args, kw, lines) -> list[str]:
        out = []
        for id_ in self.ids(args):
            out += self._ready(id_) or [f"> {id_} no Ready"]
        return out

    def _ready(self, id_: str) -> list[str]:
        core = self.cores[id_]
        rd = core.ready()
        if rd.empty():
            return []
        out = [f"> {id_} handling Ready"]
        if rd.hard_state is not None:
            term, vote, commit = rd.hard_state
            out.append(f"  hard_state term={term} vote={vote} commit={commit}")
        if rd.entries:
            out.append(f"  entries {fmt_entries(rd.entries)}")
        if rd.snapshot is not None:
            out.append(f"  snapshot index={rd.snapshot[0]} term={rd.snapshot[1]}")
        for m in rd.messages:
            out.append(f"  send {fmt_msg(m)}")
        if rd.committed:
            out.append(f"  apply {fmt_entries(rd.committed)}")
        for ev in rd.events:
            out.append(f"  event {fmt_event(ev)}")
        self.net.extend(rd.messages)
        core.advance(rd)
        return out

    def deliver_msgs(self, args, kw, lines) -> list[str]:
        return self._deliver(args[0], kw.get("from")) or [f"> {args[0]} no messages"]

    def _deliver(self, to: str, frm: str | None = None) -> list[str]:
        mine = [m for m in self.net if m.to == to and frm in (None, m.frm)]
        if not mine:
            return []
        self.net = [m for m in self.net if not (m.to == to and frm in (None, m.frm))]
        out = [f"> {to} receiving"]
        for m in mine:
            if self.cut_between(m.frm, m.to):
                out.append(f"  lost {fmt_msg(m)}")
            else:
                out.append(f"  step {fmt_msg(m)}")
                self.cores[to].step(m)
        return out

    def drop_msgs(self, args, kw, lines) -> list[str]:
        gone = [m for m in self.net if m.to == args[0]]
        self.net = [m for m in self.net if m.to != args[0]]
        return [f"dropped {fmt_msg(m)}" for m in gone] or ["ok"]

    def stabilize(self, args, kw, lines) -> list[str]:
        ids, out = self.ids(args), []
        for _ in range(1000):
            step = []
            for id_ in ids:
                step += self._ready(id_)
            for id_ in ids:
                step += self._deliver(id_)
            if not step:
                return out or ["ok"]
            out += step
        raise AssertionError("stabilize: still busy after 1000 rounds")

    def cut(self, args, kw, lines) -> list[str]:
        self.cuts.add(frozenset(args[:2]))
        return ["ok"]

    def isolate(self, args, kw, lines) -> list[str]:
        for other in self.cores:
            if other != args[0]:
                self.cuts.add(frozenset((args[0], other)))
        return ["ok"]

    def heal(self, args, kw, lines) -> list[str]:
        self.cuts.clear()
        return ["ok"]

    def raft_state(self, args, kw, lines) -> list[str]:
        out = []
        for id_ in self.ids(args):
            c = self.cores[id_]
            out.append(f"{id_}: {c.role} term={c.term} vote={c.vote} lead={c.lead} "
                       f"commit={c.commit} applied={c.applied} log={fmt_entries(c.log)}")
        return out


# The file format ###########################################################

class Case:
    def __init__(self, path: Path, line_no: int, command: str, lines: list, expected: list):
        self.path, self.line_no, self.command = path, line_no, command
        self.input, self.expected = lines, expected
        self.actual: list[str] = []

    def where(self) -> str:
        return f"{self.path.name}:{self.line_no}: {self.command}"


def parse(path: Path, text: str) -> list:
    """The file as a list of verbatim lines (comments, blank lines) and Cases."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            out.append(line)
            i += 1
            continue
        start, command, given = i + 1, line, []
        i += 1
        while i < len(lines) and lines[i] != SEP:
            if not lines[i].strip():
                raise ValueError(f"{path.name}:{i + 1}: a blank line before {SEP}")
            given.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{path.name}:{start}: no {SEP} after {command!r}")
        i += 1
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        out.append(Case(path, start, command, given, expected))
    return out


def run(items: list) -> None:
    """Run every case in order against one Env; fills case.actual."""
    env = Env()
    for case in items:
        if not isinstance(case, Case):
            continue
        name, *words = case.command.split()
        args = [w for w in words if "=" not in w]
        kw = dict(w.split("=", 1) for w in words if "=" in w)
        handler = getattr(env, name.replace("-", "_"), None)
        if handler is None or name.startswith("_"):
            raise ValueError(f"{case.where()}: unknown command")
        case.actual = handler(args, kw, case.input)
        assert case.actual and all(line.strip() for line in case.actual), case.where()


def render(items: list) -> str:
    out = []
    for item in items:
        if isinstance(item, Case):
            out += [item.command, *item.input, SEP, *item.actual]
        else:
            out.append(item)
    return "\n".join(out) + "\n"


def first_mismatch(items: list) -> str | None:
    for case in items:
        if isinstance(case, Case) and case.actual != case.expected:
            return "\n".join([case.where(), "--- expected", *case.expected,
                              "--- actual", *case.actual])
    return None


# Tests #####################################################################

def test_there_are_transcripts():
    assert {p.stem for p in FILES} >= {"election", "election_split_vote",
                                       "election_stale_term", "replication",
                                       "replication_catch_up", "commit_previous_term",
                                       "leader_step_down"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_transcript(path: Path):
    items = parse(path, path.read_text())
    run(items)
    if os.environ.get("DQ_REWRITE") == "1":
        path.write_text(render(items))
        return
    problem = first_mismatch(items)
    if problem is not None:
        pytest.fail(problem + "\n(DQ_REWRITE=1 rewrites the expected output)", pytrace=False)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_case_fails_when_one_expected_line_is_wrong(path: Path):
    """Honest transcripts: breaking any one case's first expected line is caught, at
    that case."""
    items = parse(path, path.read_text())
    run(items)
    for case in (c for c in items if isinstance(c, Case)):
        good = case.expected
        case.expected = ["(broken)" + (good[0] if good else "")] + good[1:]
        try:
            problem = first_mismatch(items)
        finally:
            case.expected = good
        assert problem is not None and problem.startswith(case.where() + "\n"), case.where()


def test_the_format_rejects_a_case_without_its_separator():
    with pytest.raises(ValueError, match="no ----"):
        parse(Path("x.txt"), "raft-state\n1: follower\n")
