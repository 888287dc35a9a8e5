"""Raft consensus as a pure state machine, in the shape of etcd-io/raft: no clock, no
socket, no disk, no randomness of its own. The caller drives it with tick(), step(msg)
and propose(data), and carries out what ready() returns, in this order:

  1. persist Ready.hard_state and Ready.entries (truncating the stored log from the
     first entry's index when it overlaps), and install Ready.snapshot if there is one;
  2. send Ready.messages;
  3. apply Ready.committed, in order;
  4. call advance(ready).

Rule 1: everything that decides a role, a vote or a commit lives in this file; the
glue (raft/node.py) decides nothing. Time is ticks: election_ticks is a number of
tick() calls, and the election jitter comes from the injected random.Random.
Rule 2: this file does not know what an entry means. Entry.data is opaque (None is the
leader's no-op), and so is the snapshot payload the caller hands to compact().

The rules are the Raft paper's Figure 2 (§5), plus pre-vote and check-quorum (§9.6 of
Ongaro's thesis), commit of current-term entries only by counting (§5.4.2), and
leadership transfer (thesis §3.10). A witness votes and stores every entry, and hands
leadership to a caught-up data member as soon as it can. A learner gets every entry and
neither votes nor counts toward a commit (etcd's learners).

Membership: the caller changes it with set_members() when a configuration entry is
*applied* (etcd's ApplyConfChange), one change at a time: raft/node.py proposes the
next only once the last is applied, and a new leader only once its term's no-op is
applied (thesis §4.1 with its fix). Two consecutive configurations differ by one voter,
so any majority of one meets any majority of the other. A member that is in neither
list (one waiting to be added, or removed) never campaigns.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

# Message types. Local ones (HUP, BEAT, CHECK_QUORUM, TRANSFER, CONTACT) never cross
# the network: tick() and the caller step them like any other message. A proposal is
# not a message: the caller calls propose() or propose_batch() on the leader.
HUP = "hup"                     # local: start an election (pre-vote first)
BEAT = "beat"                   # local, leader: send heartbeats (empty appends)
CHECK_QUORUM = "check_quorum"   # local, leader: step down without a live majority
TRANSFER = "transfer"           # local, leader: hand leadership to `to`
CONTACT = "contact"             # local: part of a message from `frm` arrived (a large
                                # append in fragments): from the leader, as good as one
_LOCAL = frozenset((HUP, BEAT, CHECK_QUORUM, TRANSFER, CONTACT))
PRE_VOTE = "pre_vote"           # would you vote for me at term+1? (term not raised)
PRE_VOTE_RESP = "pre_vote_resp"
VOTE = "vote"                   # index/log_term: the candidate's last entry
VOTE_RESP = "vote_resp"
APPEND = "append"               # index/log_term: the entry before `entries`
APPEND_RESP = "append_resp"     # index: the follower's match (or, rejected, the probe)
SNAPSHOT = "snapshot"           # index/log_term: the snapshot's last entry; `snapshot`
TIMEOUT_NOW = "timeout_now"     # leadership transfer: campaign now, skip pre-vote

MAX_QUEUED_MESSAGES = 10_000   # messages waiting for a Ready to go out
LEADER, FOLLOWER, CANDIDATE, PRE_CANDIDATE = "leader", "follower", "candidate", "pre_candidate"
CAMPAIGN_TRANSFER = "transfer"  # Message.context of a vote forced by TIMEOUT_NOW


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    data: object = None          # None: the no-op a new leader commits


@dataclass(frozen=True, slots=True)
class Message:
    """One envelope for every type. Do not subclass.

    term: the sender's term (for a granted PRE_VOTE_RESP, the term it was asked about).
    index, log_term: see each type above. commit: the leader's commit index (APPEND).
    reject/hint: a refused vote or append; hint is the follower's last index.
    api: the leader's HTTP address, so followers can forward writes to it.
    sid, digest: set and read by raft/node.py only, never here: the sender's member id
    (raft/membership.py Rule 2) and, on a vote request from a member whose
    configuration is still the base, a digest of the members it lists."""
    type: str
    frm: str = ""
    to: str = ""
    term: int = 0
    index: int = 0
    log_term: int = 0
    entries: tuple = ()
    commit: int = 0
    reject: bool = False
    hint: int = 0
    context: str = ""
    snapshot: object = None
    api: str = ""
    sid: str = ""
    digest: str = ""


@dataclass(slots=True)
class Ready:
    """What the caller must do now, in field order (module docstring).

    hard_state: (term, vote, commit) to persist before sending anything, or None.
    entries: to append durably before sending; entries[0].index may be at or below the
      stored last index: the stored log is truncated from there first.
    snapshot: (index, term, data) to install (replace the state, drop the log).
    messages: to send once the above is durable.
    committed: entries to apply, in order; they are among the entries persisted by this
      or an earlier Ready.
    events: (name, fields) that happened, past tense, for logs and the glue:
      became_leader, stepped_down, became_follower, became_candidate, leader_changed."""
    hard_state: tuple | None = None
    entries: list = field(default_factory=list)
    snapshot: tuple | None = None
    messages: list = field(default_factory=list)
    committed: list = field(default_factory=list)
    events: list = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.hard_state or self.entries or self.snapshot or self.messages
                    or self.committed or self.events)


def _mentions(m: Message, index: int) -> bool:
    """Does m carry or acknowledge an entry at or above index?"""
    if m.type == APPEND:
        return m.index + len(m.entries) >= index or m.commit >= index
    return m.type == APPEND_RESP and not m.reject and m.index >= index


class NotLeader(Exception):
    """This member cannot commit a command now. propose() raises it on a member that
    is not the leader or is handing leadership over (the message is the leader's id);
    raft/node.py raises it with a message that says why: not the leader, stopped, or
    the command's term is over. Not committed, unless the message says the outcome is
    unknown (leadership lost, or the node stopped, after the command was logged).
    Defined here, not in errors.py, because this module imports nothing of dqorch."""


class _Progress:
    """The leader's view of one follower (etcd's Progress, three states)."""
    __slots__ = ("match", "next", "state", "paused", "active", "pending_snapshot", "denied")

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = "probe"        # probe: one append at a time; replicate: pipeline;
        self.paused = False         # snapshot: wait for the snapshot's answer
        self.active = False         # heard from since the last check-quorum
        self.pending_snapshot = 0
        self.denied = None          # the heartbeat round it first denied its match in


class Core:
    """A thread-unsafe Raft member. `voters` lists the members that vote (this one too,
    unless it is a learner or waits to be added), `learners` those that only follow,
    `witnesses` the voters that must not stay leader."""

    def __init__(self, id: str, voters, *, rng, election_ticks: int = 10,
                 heartbeat_ticks: int = 1, hard_state=(0, None, 0), snapshot=(0, 0, None),
                 entries=(), witnesses=(), learners=(), pre_vote: bool = True,
                 check_quorum: bool = True, max_msg_entries: int = 64, api: str = "") -> None:
        if election_ticks <= heartbeat_ticks:
            raise ValueError("election_ticks must be greater than heartbeat_ticks")
        self.id = id
        self.voters: tuple = ()
        self.learners: tuple = ()
        self.peers: tuple = ()
        self.witnesses: frozenset = frozenset()
        self.role = FOLLOWER
        self.progress: dict[str, _Progress] = {}
        self.set_members(voters, learners, witnesses)
        self.rng = rng
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.max_msg_entries = max_msg_entries
        self.api = api
        self.term, self.vote, self.commit = hard_state
        self.snap_index, self.snap_term, self.snap_data = snapshot
        self.log: list[Entry] = list(entries)         # after snap_index, contiguous
        if self.log and self.log[0].index != self.snap_index + 1:
            raise ValueError("entries must follow the snapshot")
        self.commit = max(self.commit, self.snap_index)
        self.commit = min(self.commit, self.last_index())
        self.applied = self.snap_index
        self._compacted = self.snap_index          # entries up to here hold compact data
        # Entries below it lost their data (compact_applied's forget, a cluster of one):
        # a follower that needs one waits for a snapshot at or past it.
        self.sendable_from = 0
        self.stable = self.last_index()
        self.unstable_from = self.stable + 1
        self.lead: str | None = None
        self.lead_api = ""
        self.votes: dict[str, bool] = {}
        self.transferee: str | None = None
        self.elapsed = 0
        self.heartbeat_elapsed = 0
        self.beats = 0                  # a leader's heartbeat rounds (progress.denied)
        self.timeout = 0
        self._msgs: list[Message] = []
        self._events: list = []
        self._snapshot_in: tuple | None = None
        self._hs = (self.term, self.vote, self.commit)
        self._reset_timeout()

    # Log #####################################################################

    def last_index(self) -> int:
        return self.snap_index + len(self.log)

    def last_term(self) -> int:
        return self.log[-1].term if self.log else self.snap_term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at index; None when compacted away or not there."""
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index():
            return None
        return self.log[index - self.snap_index - 1].term

    def entries(self, lo: int, hi: int) -> list:
        """Entries [lo, hi); lo must be above snap_index."""
        return self.log[lo - self.snap_index - 1:hi - self.snap_index - 1]

    def compact_applied(self, upto: int, compact) -> None:
        """Replace the data of the entries up to `upto`, which the caller has applied,
        by compact(data) (node.py: the command's JSON bytes, a third of the decoded
        dict): they are kept only to be sent to followers. None stays None."""
        k = max(self._compacted, self.snap_index) - self.snap_index
        end = min(upto, self.last_index()) - self.snap_index
        log = self.log
        while k < end:
            e = log[k]
            if e.data is not None:
                log[k] = Entry(e.index, e.term, compact(e.data))
            k += 1
        self._compacted = max(self._compacted, self.snap_index + end)

    def _append(self, entries) -> None:
        """Append after the matching prefix; entries that conflict (same index, other
        term) and everything after them are dropped first (Figure 2, AppendEntries 3-4)."""
        for e in entries:
            have = self.term_at(e.index)
            if have == e.term:
                continue
            if have is not None or e.index <= self.snap_index:
                if e.index <= self.commit:
                    raise AssertionError(f"{self.id}: a committed entry {e.index} would change")
                del self.log[e.index - self.snap_index - 1:]
            if e.index != self.last_index() + 1:
                raise AssertionError(f"{self.id}: entry {e.index} after {self.last_index()}")
            self.log.append(e)
            self.unstable_from = min(self.unstable_from, e.index)
            self.stable = min(self.stable, e.index - 1)

    def _up_to_date(self, index: int, term: int) -> bool:
        return term > self.last_term() or (term == self.last_term() and index >= self.last_index())

    def compact(self, index: int, data) -> None:
        """The caller took a snapshot of the state at `index` (<= applied): forget the
        entries up to it; `data` is what followers too far behind are sent."""
        if index <= self.snap_index:
            return
        if index > self.applied:
            raise ValueError(f"compact({index}) beyond applied {self.applied}")
        term = self.term_at(index)
        del self.log[:index - self.snap_index]
        self.snap_index, self.snap_term, self.snap_data = index, term, data

    def forget_unstable(self, index: int) -> None:
        """The caller could not persist Ready.entries from `index` on: drop them and
        what was decided from them (commit, queued messages that carry or count them),
        as if they had never been proposed or received. Only entries above `stable`
        can go; none of them has been sent, since messages leave after the persist."""
        index = max(index, self.stable + 1, self.snap_index + 1)
        if index > self.last_index():
            return
        del self.log[index - self.snap_index - 1:]
        self.unstable_from = min(self.unstable_from, index)
        self.commit = min(self.commit, index - 1)
        self._msgs = [m for m in self._msgs if not _mentions(m, index)]
        for pr in self.progress.values():
            if pr.next > index:
                pr.next = max(pr.match + 1, index)
            if pr.state == "probe":
                pr.paused = False
        if self.role == LEADER and self.last_term() != self.term:
            # It lost its own no-op: without an entry of its term nothing commits (§5.4.2).
            self._append([Entry(self.last_index() + 1, self.term, None)])

    # Membership ##############################################################

    def set_members(self, voters, learners=(), witnesses=()) -> None:
        """The configuration applied last (module docstring, Membership). A leader
        starts probing a new member from its last index and forgets a removed one.
        A leader that is no longer a voter goes on leading without counting itself
        and hands over to a voter (etcd before StepDownOnRemoval): stepping down at
        once left the others, who may not know the removal is committed, needing
        its vote, which its longer log then refused (the simulation found it)."""
        voters, learners = set(voters), set(learners) - set(voters)
        if not voters:
            raise ValueError("a configuration needs at least one voter")
        self.voters = tuple(sorted(voters))
        self.learners = tuple(sorted(learners))
        self.peers = tuple(sorted((voters | learners) - {self.id}))
        self.witnesses = frozenset(witnesses) & voters
        if self.role != LEADER:
            return
        for p in self.peers:
            if p not in self.progress:
                pr = self.progress[p] = _Progress(self.last_index() + 1)
                pr.active = True                  # a grace of one election timeout
                self._send_append(p)
        for p in [p for p in self.progress if p not in self.peers]:
            del self.progress[p]
        if self.transferee is not None and self.transferee not in self.voters:
            self.transferee = None
        if self._maybe_commit():                  # another majority may commit more
            for p in self.peers:
                self._send_append(p)
        self._maybe_hand_over()

    def is_voter(self) -> bool:
        return self.id in self.voters

    # The caller's surface ####################################################

    def tick(self) -> None:
        if self.role == LEADER:
            self.heartbeat_elapsed += 1
            self.elapsed += 1
            if self.elapsed >= self.election_ticks:
                self.elapsed = 0
                if self.check_quorum:
                    self.step(Message(CHECK_QUORUM, frm=self.id, term=self.term))
                self.transferee = None              # a transfer that did not finish
            if self.role == LEADER and self.heartbeat_elapsed >= self.heartbeat_ticks:
                self.heartbeat_elapsed = 0
                self.step(Message(BEAT, frm=self.id, term=self.term))
        else:
            self.elapsed += 1
            if self.elapsed >= self.timeout:
                self.elapsed = 0
                if self.id in self.voters:
                    self.step(Message(HUP, frm=self.id, term=self.term))

    def propose(self, data) -> int:
        """Append data as a new entry of this term; returns its index. NotLeader when
        this member is not the leader or is handing leadership over."""
        return self.propose_batch([data])

    def propose_batch(self, datas) -> int:
        """propose() for each of datas, in order, with one append message per peer for
        all of them; returns the index of the first."""
        if self.role != LEADER or self.transferee is not None or self.id not in self.voters:
            raise NotLeader(self.lead)            # (a leader no longer a voter is leaving)
        first = self.last_index() + 1
        self._append([Entry(first + k, self.term, d) for k, d in enumerate(datas)])
        self._maybe_commit()
        for p in self.peers:
            self._send_append(p)
        return first

    def transfer_leadership(self, to: str) -> None:
        self.step(Message(TRANSFER, frm=self.id, to=to, term=self.term))

    def ready(self) -> Ready:
        rd = Ready()
        hs = (self.term, self.vote, self.commit)
        if hs != self._hs:
            rd.hard_state = hs
        if self.unstable_from <= self.last_index():
            rd.entries = self.entries(max(self.unstable_from, self.snap_index + 1),
                                      self.last_index() + 1)
        rd.snapshot = self._snapshot_in
        rd.messages = list(self._msgs)
        if self.commit > self.applied:
            # After a snapshot installed in this same Ready, from just past it.
            rd.committed = self.entries(max(self.applied, self.snap_index) + 1,
                                        self.commit + 1)
        rd.events = list(self._events)
        return rd

    def advance(self, rd: Ready) -> None:
        """The caller did all of rd: forget it."""
        if rd.hard_state is not None:
            self._hs = rd.hard_state
        if rd.entries:
            self.stable = max(self.stable, rd.entries[-1].index)
            self.unstable_from = max(self.unstable_from, rd.entries[-1].index + 1)
        if rd.snapshot is not None:
            self._snapshot_in = None
            self.applied = max(self.applied, rd.snapshot[0])
        if rd.committed:
            self.applied = max(self.applied, rd.committed[-1].index)
        del self._msgs[:len(rd.messages)]
        del self._events[:len(rd.events)]

    # Roles ###################################################################

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term, self.vote = term, None
        self.lead = None
        self.elapsed = self.heartbeat_elapsed = 0
        self.votes = {}
        self.transferee = None
        self._reset_timeout()

    def _reset_timeout(self) -> None:
        # Figure 2's randomized timeout: [election_ticks, 2 * election_ticks).
        self.timeout = self.election_ticks + self.rng.randrange(self.election_ticks)

    def _set_role(self, role: str) -> None:
        if self.role == LEADER and role != LEADER:
            self._events.append(("stepped_down", {"term": self.term}))
        self.role = role

    def _become_follower(self, term: int, lead: str | None) -> None:
        was = (self.role, self.lead)
        self._set_role(FOLLOWER)
        self._reset(term)
        self._set_lead(lead)
        if was[0] != FOLLOWER:
            self._events.append(("became_follower", {"term": term, "leader": lead}))

    def _set_lead(self, lead: str | None, api: str = "") -> None:
        if lead != self.lead:
            self._events.append(("leader_changed", {"term": self.term, "leader": lead}))
        self.lead = lead
        if api or lead is None:
            self.lead_api = api

    def _become_pre_candidate(self) -> None:
        # Pre-vote (thesis §9.6): ask first, at term+1, without raising our own term,
        # so a node cut off from the others cannot disrupt them when it returns.
        self._set_role(PRE_CANDIDATE)
        self.votes = {}
        self._set_lead(None)
        self.elapsed = 0
        self._reset_timeout()

    def _become_candidate(self) -> None:
        self._set_role(CANDIDATE)
        self._reset(self.term + 1)
        self.vote = self.id
        self._events.append(("became_candidate", {"term": self.term}))

    def _become_leader(self) -> None:
        self._set_role(LEADER)
        self._reset(self.term)
        self._set_lead(self.id, self.api)
        self.progress = {p: _Progress(self.last_index() + 1) for p in self.peers}
        for pr in self.progress.values():
            pr.active = True                  # a grace of one election timeout
        self._events.append(("became_leader", {"term": self.term}))
        # Raft §5.4.2: entries of earlier terms commit only through one of this term.
        self._append([Entry(self.last_index() + 1, self.term, None)])
        self._maybe_commit()
        for p in self.peers:
            self._send_append(p)

    def _campaign(self, kind: str) -> None:
        if kind == PRE_VOTE:
            self._become_pre_candidate()
            term, vtype = self.term + 1, PRE_VOTE
        else:
            self._become_candidate()
            term, vtype = self.term, VOTE
        if self._tally(self.id, True) == "won":
            self._won(kind)
            return
        ctx = CAMPAIGN_TRANSFER if kind == CAMPAIGN_TRANSFER else ""
        for p in self.voters:
            if p == self.id:
                continue
            self._send(Message(vtype, to=p, term=term, index=self.last_index(),
                               log_term=self.last_term(), context=ctx))

    def _won(self, kind: str) -> None:
        if kind == PRE_VOTE:
            self._campaign(VOTE)
        else:
            self._become_leader()

    def _tally(self, frm: str, granted: bool) -> str:
        if frm not in self.voters:
            return "pending"                      # a learner's answer counts for nothing
        self.votes.setdefault(frm, granted)
        yes = sum(1 for k, v in self.votes.items() if v and k in self.voters)
        no = sum(1 for k, v in self.votes.items() if not v and k in self.voters)
        if yes >= self._quorum():
            return "won"
        if no >= self._quorum():
            return "lost"
        return "pending"

    def _quorum(self) -> int:
        return len(self.voters) // 2 + 1

    # Step ####################################################################

    def step(self, m: Message) -> None:
        """Handle one message: its term first (for every type), then by role."""
        if m.term > self.term and m.type not in _LOCAL:
            if m.type in (PRE_VOTE, VOTE):
                # Check-quorum lease: a member that heard from a leader within the
                # election timeout ignores votes, unless the leader asked (transfer).
                in_lease = self.check_quorum and self.lead is not None \
                    and self.elapsed < self.election_ticks
                if in_lease and m.context != CAMPAIGN_TRANSFER:
                    return
            if m.type == PRE_VOTE:
                pass                              # never raise the term for a pre-vote
            elif m.type == PRE_VOTE_RESP and not m.reject:
                pass                              # a grant carries the term it was asked
            elif m.type in (APPEND, SNAPSHOT):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term and m.type not in _LOCAL:
            if m.type == APPEND:
                # A deposed leader (or one cut off by check-quorum): tell it the term.
                self._send(Message(APPEND_RESP, to=m.frm, term=self.term, reject=True,
                                   index=m.index, hint=self.last_index()))
            elif m.type == PRE_VOTE:
                self._send(Message(PRE_VOTE_RESP, to=m.frm, term=self.term, reject=True))
            return

        if m.type == CONTACT:
            # The leader is sending: a follower whose appends arrive in pieces over a
            # lossy network hears it as well as one that gets them whole, and neither
            # campaigns nor grants a vote (the lease) meanwhile.
            if self.role == FOLLOWER and m.frm == self.lead:
                self.elapsed = 0
            return
        if m.type == HUP:
            if self.role != LEADER and self.id in self.voters:
                self._campaign(PRE_VOTE if self.pre_vote else VOTE)
            return
        if m.type in (PRE_VOTE, VOTE):
            self._handle_vote(m)
            return
        {LEADER: self._step_leader, FOLLOWER: self._step_follower,
         CANDIDATE: self._step_candidate, PRE_CANDIDATE: self._step_candidate}[self.role](m)

    def _handle_vote(self, m: Message) -> None:
        resp = PRE_VOTE_RESP if m.type == PRE_VOTE else VOTE_RESP
        can = (self.vote == m.frm or (self.vote is None and self.lead is None)
               or (m.type == PRE_VOTE and m.term > self.term))
        if can and self._up_to_date(m.index, m.log_term):
            # A grant answers with the term it was asked about (etcd does the same).
            self._send(Message(resp, to=m.frm, term=m.term))
            if m.type == VOTE:
                self.elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, to=m.frm, term=self.term, reject=True))

    def _step_follower(self, m: Message) -> None:
        if m.type == APPEND:
            self.elapsed = 0
            self._set_lead(m.frm, m.api)
            self._handle_append(m)
        elif m.type == SNAPSHOT:
            self.elapsed = 0
            self._set_lead(m.frm, m.api)
            self._handle_snapshot(m)
        elif m.type == TIMEOUT_NOW and self.id in self.voters:
            self._campaign(CAMPAIGN_TRANSFER)     # the leader asked: skip pre-vote
        # TRANSFER on a follower is ignored. Writes never get here: propose() raises
        # NotLeader, and the glue forwards them to the leader itself.

    def _step_candidate(self, m: Message) -> None:
        mine = PRE_VOTE_RESP if self.role == PRE_CANDIDATE else VOTE_RESP
        if m.type in (APPEND, SNAPSHOT):
            self._become_follower(m.term, m.frm)   # a leader of this term exists
            self._step_follower(m)
        elif m.type == mine:
            outcome = self._tally(m.frm, not m.reject)
            if outcome == "won":
                self._won(PRE_VOTE if self.role == PRE_CANDIDATE else VOTE)
            elif outcome == "lost":
                self._become_follower(self.term, None)

    def _step_leader(self, m: Message) -> None:
        if m.type == BEAT:
            self.beats += 1
            for p in self.peers:
                pr = self.progress[p]
                if pr.state == "snapshot":
                    # An empty append keeps its election timer quiet while the snapshot
                    # travels: a follower that stops following would refuse the chunks.
                    self._send(Message(APPEND, to=p, term=self.term, api=self.api))
                pr.paused = False
                self._send_append(p)
            self._maybe_hand_over()
            return
        if m.type == CHECK_QUORUM:
            live = sum(1 for p in self.voters if p == self.id or self.progress[p].active)
            if live < self._quorum():
                self._become_follower(self.term, None)
                return
            for pr in self.progress.values():
                pr.active = False
            return
        if m.type == TRANSFER:
            to = m.to
            if to == self.id or to not in self.voters or to not in self.progress \
                    or self.transferee == to:
                return
            self.transferee = to
            self.elapsed = 0                      # the transfer has one election timeout
            if self.progress[to].match == self.last_index():
                self._send(Message(TIMEOUT_NOW, to=to, term=self.term))
            else:
                self._send_append(to)
            return
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.active = True
        if m.type == APPEND_RESP:
            self._handle_append_resp(m, pr)

    def _maybe_hand_over(self) -> None:
        """A witness, or a leader no longer a voter, leads only until a data member
        has caught up."""
        if self.transferee is not None or (
                self.id not in self.witnesses and self.id in self.voters):
            return
        ready = [p for p in self.peers
                 if p in self.voters and self.progress[p].match == self.last_index()]
        data = [p for p in ready if p not in self.witnesses]
        if data or (ready and self.id not in self.voters):
            self.step(Message(TRANSFER, frm=self.id, to=(data or ready)[0], term=self.term))

    # Replication #############################################################

    def _handle_append(self, m: Message) -> None:
        if m.index < self.commit:
            self._send(Message(APPEND_RESP, to=m.frm, term=self.term, index=self.commit))
            return
        if self.term_at(m.index) == m.log_term:
            self._append(m.entries)
            last_new = m.index + len(m.entries)
            if m.commit > self.commit:
                self.commit = min(m.commit, last_new)
            self._send(Message(APPEND_RESP, to=m.frm, term=self.term, index=last_new))
        else:
            self._send(Message(APPEND_RESP, to=m.frm, term=self.term, index=m.index,
                               reject=True, hint=min(m.index - 1, self.last_index())))

    def _handle_snapshot(self, m: Message) -> None:
        index, term = m.index, m.log_term
        if index <= self.commit:
            self._send(Message(APPEND_RESP, to=m.frm, term=self.term, index=self.commit))
            return
        if self.term_at(index) == term:
            self.commit = index               # we hold it already: just commit to it
        else:
            self.log = []
            self.snap_index, self.snap_term, self.snap_data = index, term, m.snapshot
            self.commit = self.stable = index
            self.unstable_from = index + 1
            self._snapshot_in = (index, term, m.snapshot)
        self._send(Message(APPEND_RESP, to=m.frm, term=self.term, index=self.last_index()))

    def _handle_append_resp(self, m: Message, pr: _Progress) -> None:
        if m.reject:
            if pr.state == "replicate":
                pr.state = "probe"
                pr.next = max(pr.match + 1, min(m.index, m.hint + 1))
            elif pr.state == "probe" and m.index == pr.next - 1:
                if m.index <= pr.match:
                    # It denies an entry it acknowledged. A rejection sent before it
                    # had the entry, delayed or duplicated, looks the same once; the
                    # probe sent again then gets an acknowledgement (denied cleared).
                    # Denied again in a later heartbeat round, it lost the entry: its
                    # data_dir was replaced (docs/CLUSTER.md). Count nothing of it
                    # until it acknowledges again, and probe down from what it has.
                    if pr.denied is None:
                        pr.denied = self.beats
                        pr.paused = False
                        self._send_append(m.frm)
                        return
                    if pr.denied == self.beats:
                        return                    # the next heartbeat asks again
                    self._events.append(("member_lost_entries", {
                        "member": m.frm, "match": pr.match, "hint": m.hint}))
                    pr.match, pr.denied = 0, None
                pr.next = max(pr.match + 1, min(m.index, m.hint + 1))
            else:
                return                            # a stale rejection
            pr.paused = False
            self._send_append(m.frm)
            return
        pr.denied = None
        if m.index > pr.match:
            pr.match = m.index
        pr.next = max(pr.next, pr.match + 1)
        if pr.state == "snapshot" and pr.match >= pr.pending_snapshot:
            pr.state = "probe"
        if pr.state == "probe":
            pr.state = "replicate"
        pr.paused = False
        if self._maybe_commit():
            for p in self.peers:                  # the new commit index, and what is new
                self._send_append(p)
        elif pr.next <= self.last_index():
            self._send_append(m.frm)
        if m.frm == self.transferee and pr.match == self.last_index():
            self._send(Message(TIMEOUT_NOW, to=m.frm, term=self.term))
        self._maybe_hand_over()

    def _maybe_commit(self) -> bool:
        matches = sorted([self.last_index() if p == self.id else self.progress[p].match
                          for p in self.voters], reverse=True)
        n = matches[self._quorum() - 1]
        if n > self.commit and self.term_at(n) == self.term:   # §5.4.2: by count, own term
            self.commit = n
            return True
        return False

    def _send_append(self, to: str) -> None:
        pr = self.progress[to]
        if pr.paused:
            return
        if pr.next < self.sendable_from and self.snap_index + 1 < self.sendable_from:
            return                                # no snapshot covers them yet: wait
        if pr.next - 1 < self.snap_index or self.term_at(pr.next - 1) is None:
            # The entries it needs were compacted: send the snapshot (node.py chunks it).
            pr.state, pr.pending_snapshot, pr.paused = "snapshot", self.snap_index, True
            self._send(Message(SNAPSHOT, to=to, term=self.term, index=self.snap_index,
                               log_term=self.snap_term, snapshot=self.snap_data,
                               api=self.api))
            return
        ents = self.entries(pr.next, min(self.last_index() + 1, pr.next + self.max_msg_entries))
        self._send(Message(APPEND, to=to, term=self.term, index=pr.next - 1,
                           log_term=self.term_at(pr.next - 1), entries=tuple(ents),
                           commit=self.commit, api=self.api))
        if pr.state == "replicate":
            if ents:
                pr.next = ents[-1].index + 1      # pipeline: optimistic
        else:
            pr.paused = True                      # probe: one at a time

    def _send(self, m: Message) -> None:
        if len(self._msgs) >= MAX_QUEUED_MESSAGES:
            # Readies keep failing (a broken disk): the oldest are the stalest, and
            # the network may lose any message anyway.
            del self._msgs[:len(self._msgs) // 2]
        self._msgs.append(replace(m, frm=self.id) if not m.frm else m)

    # Introspection (tests, metrics) ##########################################

    def status(self) -> dict:
        return {"id": self.id, "role": self.role, "term": self.term, "vote": self.vote,
                "voters": list(self.voters), "learners": list(self.learners),
                "leader": self.lead, "commit": self.commit, "applied": self.applied,
                "last_index": self.last_index(),
                "progress": {p: {"match": pr.match, "next": pr.next, "state": pr.state}
                             for p, pr in self.progress.items()}
                if self.role == LEADER else {}}
