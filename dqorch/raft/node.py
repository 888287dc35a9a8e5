"""The greenlet that drives this node's Raft core (raft/core.py) against the disk
(raft/log.py) and the network (a `send(peer, payload)` the app passes in): propose ->
append -> fsync -> replicate -> commit -> apply -> answer. The core decides every
role, vote and commit; this file carries out its Ready in order (persist, send,
apply, events) and owns group commit and snapshots.

A node that is its configuration's only voter (`alone`) is a Raft cluster of one
through the same path: it starts as a follower with its persisted term and vote, elects
itself at once, and commits on fsync. Every entry written while it was the only voter
was committed when written (a majority of one), so its start-up replays those too; a
member of a cluster replays only what its hard state or snapshot says was committed and
learns the rest from the leader.

Membership (raft/membership.py): a configuration entry {"op": "raft_config"} is applied
here, never by the FSM, and takes effect when applied (core.py, Membership); the
configuration applied last is in every snapshot's head. One change at a time: the
leader proposes the next only after the last is applied and its own term's no-op is.
Every message passes raft/gate.py (member ids, removed ids, raft_peers lists) before
the core sees it; snapshots are written by raft/snapshots.py.

The commands mean nothing here: they are applied to the FSM the node is given
(raft/fsm.py; dqorch/fsm.py is the job registry), and a snapshot is the FSM's data in
its SnapshotFormat's bytes. raft/ imports nothing of dqorch outside raft/.

Rule 1: the commit loop never dies of the disk. A failed write fails the commands
of its batch (LogFailed), the core forgets the entries (`forget_unstable`: nothing of
them was sent), `log_ok` turns false (health says degraded), one line is logged per
change of state, and the Ready is tried again on the next wake-up (at least every
PROBE_S; a leader probes with a no-op).
Rule 2: an apply that raises stops the node (replicas must never diverge); on the next
start the replay refuses with ReplayFailed naming the entry. `skip_entries` lets an
operator start past it once; a snapshot right after makes that permanent.
Rule 3: only this loop touches the core. Messages, ticks and proposals that arrive
while a Ready is being carried out wait in `_inbox`, `_ticks` and `_queue`, so a Ready
never changes under its own feet.
Rule 4: a lazy proposal (the dispatcher's marks: nothing waits on them but the
dispatcher) starts no commit round of its own: it waits in `_lazy` for the next round
another proposal starts, and rides in it ahead of that proposal, or for LAZY_S, then
goes alone. Proposal order is kept: lazy ones were proposed first.
Rule 5: a commit round's fsync runs inline, blocking the hub, while the disk is fast;
in a thread of its own (FSYNC_LANE) while it is slow, until none has been slower than
FAST_FSYNC_S for SLOW_DISK_S (those in the thread are timed too, there: not the hub's
wait to take the answer back). Slow is SLOW_FSYNCS fsyncs slower than FAST_FSYNC_S
within SLOW_DISK_S, or one slower than STALL_FSYNC_S: a lone outlier is not a slow
disk (this VM's disk has about one a 10 s, and each used to put every round of the
next 10 s through the pool).
Rule 6: hard state's commit (log.py Rule 4's evidence) is recorded by this loop at
most every COMMIT_RECORD_S while it advances, and once more within COMMIT_RECORD_S
plus a tick after it stops: never one write per round. After a crash it is at most
that old; a clean stop records it exactly.
Rule 7: time in the log (each command's at_ms, stamped here by the leader from now_ms:
the cluster's time, dqorch/clock.py) never goes back, and never stops: a stamp ahead of
now (written while a majority's clocks were off, or by an older version that stamped
its own wall clock) makes the next ones advance at half the monotonic rate until now
catches up, so a skew of X is absorbed in 2X (the old max(now, newest) froze time
in the log for X).
"""
from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import replace

import gevent
import gevent.event

from . import codec
from . import core as C
from . import membership as M
from .core import NotLeader
from .errors import LogFailed, Overloaded, ProposeTimeout, ReplayFailed
from .gate import REFUSED_TAG, MemberGate
from . import wire
from .log import MAX_APPEND_BYTES, RaftLog, encode
from .pool import Lane, in_thread
from .snapshots import Snapshots

log = logging.getLogger(__name__)

PROGRESS_EVERY = 100_000
# Start-up's loops (snapshot jobs, log entries) hand the hub a turn at least this often,
# so that the API, listening already, answers "503 starting" during a long replay: it
# accepted connections and answered nothing for seconds (250,000 jobs: 3-4 s).
BREATHE_S = 0.05
PROBE_S = 1.0                  # while the log cannot be written, try again this often
MAX_INBOX = 20_000             # messages waiting for the loop; beyond, dropped (UDP is lossy)
# An append bigger than this goes as several (each a valid append of its own part),
# so that one lost fragment costs a resend of at most this much.
MAX_MESSAGE_BYTES = 256 * 1024
# One command must fit in one message of the transport (raft/transport.py MAX_PARTS).
MAX_REPLICATED_ENTRY_BYTES = 30 << 20
# One fsync'd round per mark was half of all rounds at low concurrency (a register,
# then its mark_queued); riding along with the next request's round saves it.
LAZY_S = 0.05
# Through a thread an fsync costs more CPU than inline (the hand-off and two
# wake-ups: ~55 µs on 2026-12-03's VM, 80-125 on 12-07's; bench/fsync.py), paid by
# every commit round; pipeline at 200 jobs/s: -10% node CPU per job. Inline blocks
# the hub for as long as the fsync takes: Rule 5.
# 10 ms, not 2: this VM's disk takes 2-4 ms for about one fsync a second (p50 187 µs,
# p99 732 µs), which with 2 ms kept every round in the pool. One connection,
# publishing, alternating runs: 920-1,041 against 794-809 req/s, 774-873 against
# 916-945 µs of CPU a request. A disk slower than that still goes to the pool.
FAST_FSYNC_S = 0.010
SLOW_DISK_S = 10.0
# A round through gevent's pool cost ~120 µs more CPU than inline on 12-07's VM, and
# one fsync over 10 ms came about every 10 s there (bench/fsync.py; docs/BENCHMARKS.md):
# one outlier kept nearly every round in the pool. Three in SLOW_DISK_S, or one long
# stall, is a disk worth keeping off the hub.
SLOW_FSYNCS = 3
STALL_FSYNC_S = 0.100
# Rule 5's thread: one for the process (pool.Lane), ~25-40 µs less CPU a hand-off than
# the hub's threadpool (docs/BENCHMARKS.md, "fsync hand-off").
FSYNC_LANE = Lane()
# Rule 6. What a crash may lose undetected: the entries committed in the last
# COMMIT_RECORD_S (plus a tick). A record is one write_atomic of hardstate.json (two
# fsyncs and a rename) in the threadpool while the loop waits: 316-411 µs wall and
# 130-231 µs of CPU on this VM (bench/fsync.py), so at most ~1.6 ms of the loop's
# time and ~0.9 ms of CPU a second; an fsync per round would double the disk's work.
COMMIT_RECORD_S = 0.25
LOST = ("lost leadership before this command committed; the outcome is unknown, "
        "retrying is safe")


def _compact(cmd) -> bytes:
    """An applied command as kept in the core, to be sent to followers: its JSON, 248
    bytes against 817 for the decoded dict (a register's, on average; up to
    snapshot_entries of them are held). An exact-size copy: orjson's bytes keep their
    buffer."""
    return cmd if type(cmd) is bytes else memoryview(codec.dumps(cmd)).tobytes()


def _timed(fn, *args) -> float:
    """Seconds fn(*args) took (in the thread that runs it)."""
    t0 = time.monotonic()
    fn(*args)
    return time.monotonic() - t0


def _forget(cmd) -> None:
    return None


def _is_config(cmd) -> bool:
    return type(cmd) is dict and cmd.get("op") == M.OP


class ChangePending(Exception):
    """A membership change cannot start now: one is not yet applied, or this leader's
    term has not committed its first entry (module docstring). Retry shortly."""


def _noop(term: int) -> dict:
    return {"op": "noop", "term": term}


def _time_out(result: gevent.event.AsyncResult, timeout_s: float) -> None:
    if not result.ready():
        result.set_exception(ProposeTimeout(f"no commit within {timeout_s:g} s; the "
                                            f"outcome is unknown"))


class RaftNode:
    """fsm: the state machine the log's commands are applied to (raft/fsm.py FSM);
    raft_log's SnapshotFormat must be the one that writes and reads its snapshots."""

    def __init__(self, raft_log: RaftLog, node_name: str, *, fsm, snapshot_entries: int,
                 now_ms, fsync=os.fsync, skip_entries=frozenset(),
                 max_pending: int = 5000, config: M.Config | None = None,
                 force_config: bool = False, on_config=None, member_id: str = "",
                 witness: bool = False, on_applied=(), on_batch=(), on_leadership=(),
                 tick_s: float = 0.1,
                 election_ticks: int = 10, api: str = "", send=None, rng=None) -> None:
        """config: the base configuration (the config file's), in force until the log
        or a snapshot holds one. force_config: config wins over the log's, every entry
        in the log is taken as committed, and the leader writes config into the log
        (--force-new-cluster). on_config(config): after each configuration applied.
        member_id: this data_dir's (members.py), stamped on every message.
        witness: this node is a witness (it hands leadership over whenever it can).
        Hooks, each a sequence of callables run in the commit loop (quick, never
        blocking; one that raises is contained and counted, listener_errors):
        on_applied: fn(cmd, outcome) after each live apply (not at replay);
        on_batch: fn(entries, seconds) after each commit round that applied any;
        on_leadership: fn(is_leader, term) once this leader's no-op is applied, and
        when it steps down. The transport comes in through connect()."""
        self.log = raft_log
        self.node_name = node_name
        self.snapshot_entries = snapshot_entries
        self.now_ms = now_ms
        self._fsync = fsync
        self.skip_entries = frozenset(skip_entries)
        self.max_pending = max_pending
        self.config = config or M.Config.of([node_name])
        # A witness knows it is one (its config file says so) whatever a configuration
        # written by a leader that did not know says: it never stays leader.
        self._witness = witness
        self._derived = (None, False, ())   # _members()
        self._force_config = force_config
        self._forced_written = not force_config
        self.on_config = on_config or (lambda config: None)
        self._config_index = 0        # this leader's last proposed change (pending until applied)
        self.member_id = member_id
        self.tick_s = tick_s
        self.election_ticks = election_ticks
        self.api = api
        self.send = send or (lambda peer, payload: None)
        self.rng = rng or random.Random()
        self.core: C.Core | None = None
        self.overloaded = 0           # client proposals refused: the queue was full
        self.fsm = fsm
        self._fsm_apply = fsm.apply   # per entry: one call, no attribute walk
        self.applied_index = 0
        self.log_ok = True
        self.log_error: str | None = None
        self.failed_writes = 0        # since the log was last writable
        self._on_applied = tuple(on_applied)
        self._on_batch = tuple(on_batch)
        self._on_leadership = tuple(on_leadership)
        self.receivers: dict = {}         # first payload byte -> fn(sender, payload)
        self.listener_errors = 0
        self.snaps = Snapshots(raft_log, fsm, core=lambda: self.core,
                               applied=lambda: self.applied_index,
                               meta=self._snapshot_meta, peers=lambda: self.peers,
                               every=snapshot_entries)
        self.stats = {"elections": 0, "leader_changes": 0, "bad_messages": 0,
                      "inbox_full": 0, "slow_disk": 0}
        self.gate = MemberGate(node_name, member_id, config=lambda: self.config,
                               send=lambda peer, payload: self.send(peer, payload),
                               propose=self._propose_config, may_change=self._may_change,
                               behind=self._behind, stats=self.stats)
        self.contact: dict[str, float] = {}   # peer -> monotonic time last heard from
        self._heard_at = 0.0                  # heard(): the last CONTACT stepped
        self.no_leader_since = time.monotonic()
        self._stopped = False
        self._queue: list = []        # (cmd, AsyncResult) not yet handed to the core
        self._lazy: list = []         # (cmd, AsyncResult) waiting for a round (Rule 4)
        self._lazy_timer = None       # the hub's timer for LAZY_S while lazy ones wait
        self._inbox: list = []        # Messages not yet stepped
        self._ticks = 0
        self._waiting: dict = {}      # index -> (term, AsyncResult)
        self._encoded: dict = {}      # index -> (term, bytes) of this leader's proposals
        self._last_at = 0             # newest at_ms seen: time in the log never goes back
        self._ahead_since = None      # Rule 7: (the stamp ahead of now, monotonic s then)
        self._wake = gevent.event.Event()
        self._loop = None
        self._ticker = None
        self._probe_at = 0.0
        self._busy = False
        self._log_failed_at = 0.0     # monotonic: when the log last stopped being writable
        self._lead_pending = None     # (term, no-op index): became_leader once applied
        self.start_phase = "not started"   # what start() is doing, for "503 starting"
        self._breathe_at = 0.0        # monotonic: start-up's next turn for the hub
        self._record_at = 0.0         # monotonic; no commit record before it (Rule 6)
        self._recording = False
        self.commit_record_error: str | None = None

    # Start and stop ########################################################

    def _breathe(self, phase: str) -> None:
        """Start-up only: note what it is doing (start_phase) and, once BREATHE_S has
        passed since the last turn, let the hub run. A timer, not sleep(0): sleep(0)
        resumes this greenlet before the loop polls the sockets."""
        self.start_phase = phase
        now = time.monotonic()
        if now >= self._breathe_at:
            gevent.sleep(0.001)
            self._breathe_at = time.monotonic() + BREATHE_S

    def _load_snapshot(self, snap) -> None:
        if snap is None:
            return
        try:
            self.fsm.restore(snap, pace=self._breathe)
        except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as e:
            raise ReplayFailed(f"snapshot index={snap['index']} cannot be loaded: "
                               f"{e!r}; see README, Recovery")
        self.applied_index = snap["index"]
        self._config_from_snapshot(snap)
        log.info("loaded snapshot index=%d %s", snap["index"], self.fsm.summary())

    def _config_from_snapshot(self, snap) -> None:
        raft = snap.get("raft") or {}
        if raft.get("config") is not None and not self._force_config:
            try:
                self.config = M.Config.from_dict(raft["config"], raft.get("config_index", 0))
            except ValueError as e:
                raise ReplayFailed(f"snapshot index={snap['index']}: its configuration "
                                   f"cannot be read: {e}; see README, Recovery")

    def start(self) -> None:
        """Replay snapshot + what is known committed, start the loop (a node without
        peers elects itself at once). LogCorrupt: data_dir is damaged. ReplayFailed: an
        entry cannot be applied. OSError: data_dir cannot be read or written."""
        t0 = time.monotonic()
        self._breathe_at = t0 + BREATHE_S
        self.start_phase = "reading the log"
        snap, entries = self.log.open(raw=True, on_snapshot=self._load_snapshot)
        snap_index, snap_term = (snap["index"], snap["term"]) if snap is not None else (0, 0)
        # Known committed: what hard state or the snapshot says, and every entry
        # written while this node was the only voter (a majority of one; see below).
        known = self.log.last_index if self._force_config else max(self.log.commit, snap_index)
        # Progress counts the entries read: how many count as committed grows while
        # they are applied (the configuration says when this node was alone).
        read = len(entries)
        skipped = 0
        for n, (index, term, body) in enumerate(entries, 1):
            try:
                cmd = codec.loads(body)
            except (ValueError, RecursionError) as e:
                raise ReplayFailed(f"log entry index={index} is not JSON: {e}; see README, "
                                   f"Recovery")
            if isinstance(cmd, dict):
                self._last_at = max(self._last_at, cmd.get("at_ms") or 0)
            if index > known and self.alone:
                known = index          # the only voter: committed when written
            if index > known:
                entries[n - 1] = (index, term, cmd)   # not applied yet: decoded, for apply
                continue
            if index in self.skip_entries:
                log.warning("skipping log entry as asked %s", self._entry_name(index, cmd))
                skipped += 1
            elif _is_config(cmd):
                try:
                    self._apply_config(index, cmd)
                except ValueError as e:
                    raise ReplayFailed(f"log entry index={index} is a configuration that "
                                       f"cannot be read: {e}; see README, Recovery")
            else:
                try:
                    self._fsm_apply(index, cmd)
                except Exception as e:
                    raise ReplayFailed(f"log entry {self._entry_name(index, cmd)} cannot be "
                                       f"applied: {e!r}; see README, Recovery")
            self.applied_index = index
            if n % PROGRESS_EVERY == 0:
                log.info("replaying log entries=%d of %d (%d%%)", n, read, n * 100 // read)
            if n % 256 == 0:
                self._breathe(f"replaying the log entries={n} of {read}")
        total = max(0, known - snap_index)
        log.info("replayed log entries=%d %s applied=%d unknown_commit=%d seconds=%.2f",
                 total, self.fsm.summary(), self.applied_index,
                 len(entries) - total, time.monotonic() - t0)
        self.core = C.Core(
            self.node_name, self.config.voters, learners=self.config.learners,
            rng=self.rng,
            election_ticks=self.election_ticks, heartbeat_ticks=1,
            hard_state=(self.log.term, self.log.vote, known),
            snapshot=(snap_index, snap_term,
                      self.log.snapshot_path(snap_index) if snap is not None else None),
            # Applied entries: bytes for followers, nothing without one (_forget).
            entries=[C.Entry(i, t, None if i <= known and not self.peers else cmd)
                     for i, t, cmd in entries],
            witnesses=self._witnesses(), max_msg_entries=64, api=self.api)
        self.core.applied = self.applied_index
        if not self.peers:
            self.core.sendable_from = known + 1
        self.on_config(self.config)
        if self.alone:
            self.core.step(C.Message(C.HUP, frm=self.node_name))   # leader at once
            # Its new term and vote, before anything else: a disk that cannot take
            # them stops the start (OSError), as it would stop any write.
            self.log.save_hard_state(self.core.term, self.core.vote, known)
        self._loop = gevent.spawn(self._run)
        self._ticker = gevent.spawn(self._tick_forever)
        self._wake.set()
        self.start_phase = "committing the new term's no-op" if self.alone else "electing"
        if self.alone:
            # Serve once the no-op of the new term is in: everything before it is then
            # applied too. A disk that fails it is Rule 1's to report, not a hang here.
            noop, deadline = self.core.last_index(), time.monotonic() + 10
            while self.applied_index < noop and self.log_ok and time.monotonic() < deadline:
                gevent.sleep(0.005)
        if self._force_config:
            # The forced configuration goes into the log: later starts need no flag.
            self._forced_written = True
            self.propose({"op": M.OP, "config": self.config.to_dict()})
        if skipped:
            self.snaps.now()          # Rule 2: later starts need no skip_entries

    def transfer_leadership(self, timeout_s: float, to: str | None = None) -> bool:
        """A leader with other voters hands over to `to`, or to its most caught-up
        data voter (a rolling restart then needs no election timeout). True once
        another node leads."""
        core = self.core
        voters = [p for p in self.config.voters if p != self.node_name]
        if core is None or core.role != C.LEADER or not voters:
            return False
        data_peers = [p for p in voters if p not in self.config.witnesses] or voters
        best = to if to in voters else max(data_peers, key=lambda p: core.progress[p].match)
        log.info("handing leadership over to=%s", best)
        self._inbox.append(C.Message(C.TRANSFER, frm=self.node_name, to=best, term=core.term))
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            gevent.sleep(0.02)
            if core.role != C.LEADER:
                return True
        return False

    def stop(self, timeout_s: float = 5.0) -> None:
        """Refuse new proposals, commit what was already proposed, close the log.
        Always returns within about timeout_s."""
        if self._stopped:
            return
        deadline = time.monotonic() + timeout_s
        self._stopped = True
        self._lazy_due()
        # A commit record in flight (Rule 6) finishes first: two writes of hard state
        # at once would share its .tmp file.
        while (self._queue or self._busy or self._waiting or self._recording) \
                and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for g in (self._ticker, self._loop):
            if g is not None:
                g.kill(block=True, timeout=1)
        self.snaps.join(max(0.0, deadline - time.monotonic()))
        for _, result in self._queue:
            result.set_exception(NotLeader("node stopped before this command was logged"))
        self._queue = []
        self._fail_waiting("node stopped before this command committed; the outcome is "
                           "unknown, retrying is safe")
        core = self.core
        if core is not None and self.log_ok and self.log.unsure is None:
            try:     # the next start then applies all it knows committed, leader or not
                self.log.save_hard_state(core.term, core.vote,
                                         min(core.commit, self.log.last_index))
            except OSError as e:
                log.warning("hard state not saved at stop error=%s", e)
        self.log.close()
        log.info("log closed commit=%d", self.commit_index)

    # What the others read ##################################################

    @property
    def alone(self) -> bool:
        """The only voter of the applied configuration: it elects itself at once,
        commits on its own fsync (what it wrote as the only voter was committed when
        written) and needs no quorum contact. (Without any other member, `peers` is
        empty too, and it keeps nothing applied for followers.)"""
        return self._members()[1]

    @property
    def peers(self) -> tuple:
        """Every other member, learners included: whom the leader replicates to."""
        return self._members()[2]

    def _members(self) -> tuple:
        """(config, alone, peers), computed again only when the configuration
        changes: both are asked per command."""
        d = self._derived
        if d[0] is not self.config:
            c = self.config
            d = self._derived = (c, c.voters == (self.node_name,),
                                 tuple(n for n in c.names if n != self.node_name))
        return d

    @property
    def state(self):
        """The state machine's state (dqorch reads node.state: the API, the
        dispatcher). Replaced by a snapshot's restore: fetch it anew, never keep it."""
        return self.fsm.state

    def _entry_name(self, index: int, cmd) -> str:
        """The entry at index, for the one line that names it."""
        return f"index={index} {self.fsm.describe(cmd)}"

    @property
    def role(self) -> str:
        if self._stopped:
            return "stopped"
        if self.core is None:
            return "starting"
        return C.CANDIDATE if self.core.role == C.PRE_CANDIDATE else self.core.role

    @property
    def leader(self) -> str | None:
        return None if self.core is None else self.core.lead

    @property
    def leader_api(self) -> str:
        return "" if self.core is None else self.core.lead_api

    @property
    def term(self) -> int:
        return self.log.term if self.core is None else self.core.term

    @property
    def commit_index(self) -> int:
        return self.applied_index if self.core is None else self.core.commit

    # Proposals #############################################################

    def propose_async(self, cmd: dict, lazy: bool = False) -> gevent.event.AsyncResult:
        """Queue a command for the next group commit; the leader stamps `at_ms`. A
        command with a `term` is refused unless it is still this leader's term.
        lazy: it may wait up to LAZY_S for a round to ride in (Rule 4).
        Raises NotLeader when this node cannot commit now."""
        if self.role != C.LEADER:
            raise NotLeader(f"node is {self.role}" + (f"; leader is {self.leader}"
                                                       if self.leader else ""))
        result = gevent.event.AsyncResult()
        if lazy:
            self._lazy.append((cmd, result))
            # A watcher, not a greenlet (spawn_later, then its kill when a round takes
            # the marks first: ~20 calls a mark at one connection). A fresh one each
            # wait: libev keeps a stopped or fired timer's remaining time (~0 after it
            # fired), so a restarted one would fire at once and every mark go alone.
            if self._lazy_timer is None:
                self._lazy_timer = gevent.get_hub().loop.timer(LAZY_S)
                self._lazy_timer.start(self._lazy_due)
            return result
        self._queue.append((cmd, result))
        self._wake.set()
        return result

    def _lazy_due(self) -> None:
        """The lazy proposals go now, ahead of anything queued after them. (Runs in
        the hub when the timer is due, or in the commit loop.)"""
        if self._lazy_timer is not None:
            self._lazy_timer.stop()
            self._lazy_timer = None
        if self._lazy:
            self._queue[:0], self._lazy = self._lazy, []
        self._wake.set()

    def propose(self, cmd: dict, timeout_s: float = 10.0) -> dict:
        """Commit and apply one client command; return apply's outcome.
        NotLeader, Overloaded, LogFailed: not committed (unless the message says the
        outcome is unknown). ProposeTimeout: outcome unknown.

        Overloaded when max_pending commands already wait: beyond that a client would
        wait longer than it would like and memory would grow with the backlog. The
        node's own commands (marks, timers: propose_async) are never refused, so the
        work that drains the backlog is never what is shed."""
        self._admit()
        result = self.propose_async(cmd)
        # A hub timer, not get(timeout=): that made a gevent.Timeout a request (6.6-8.8
        # against 4.3 µs for a get that waits once, timeit).
        timer = gevent.get_hub().loop.timer(timeout_s)
        timer.start(_time_out, result, timeout_s)
        try:
            return result.get()
        finally:
            timer.stop()

    def _admit(self) -> None:
        if len(self._queue) + len(self._waiting) >= self.max_pending:
            self.overloaded += 1
            raise Overloaded(f"{len(self._queue) + len(self._waiting)} commands wait for "
                             f"the log (max_pending_proposals); retry shortly")

    def propose_many(self, cmds: list, timeout_s: float = 10.0) -> list:
        """Commit client commands together (they join one group commit); one outcome
        per command, in order, or the exception for that one (LogFailed, NotLeader,
        ProposeTimeout). Overloaded, for all of them, as propose()."""
        self._admit()
        results = [self.propose_async(cmd) for cmd in cmds]
        deadline = time.monotonic() + timeout_s
        out = []
        for result in results:
            try:
                out.append(result.get(timeout=max(0.0, deadline - time.monotonic())))
            except gevent.Timeout:
                out.append(ProposeTimeout(f"no commit within {timeout_s:g} s; the "
                                          f"outcome is unknown"))
            except (LogFailed, NotLeader) as e:
                out.append(e)
        return out

    def connect(self, send, receivers: dict) -> None:
        """The transport (cluster.py, once there is another member): send(peer,
        payload) for Raft messages, and receivers for payloads that are not Raft
        messages: {first byte: fn(sender, payload)}, and "snapshot_out": fn(message)
        for a snapshot the core wants sent."""
        self.send = send
        self.receivers = dict(receivers)

    # Membership ############################################################

    def change_members(self, change, timeout_s: float = 10.0) -> M.Config:
        """Commit change(config), the next configuration (raft/membership.py), and
        return it once applied here. M.ChangeRefused: change() refused it.
        ChangePending: one is not applied yet, or this leader's term has not committed
        its first entry. NotLeader, Overloaded, LogFailed, ProposeTimeout: as propose()."""
        core = self.core
        if self.role != C.LEADER:
            raise NotLeader(f"node is {self.role}" + (f"; leader is {self.leader}"
                                                       if self.leader else ""))
        if core.term_at(self.applied_index) != core.term:
            raise ChangePending("this leader's term has not committed its first entry "
                                "yet; retry shortly")
        new = change(self.config)
        if self.node_name not in new.voters:
            # A leader that applied its own removal and then crashed would leave the
            # others, not yet knowing it committed, needing its vote (thesis §4.2.2):
            # it hands over first, and the next leader removes it.
            raise M.ChangeRefused(f"{self.node_name} leads: hand leadership over first "
                                  f"(DELETE /api/cluster/members/{{name}} does)")
        outcome = self.propose({"op": M.OP, "config": new.to_dict(), "term": core.term},
                               timeout_s)
        return M.Config.from_dict(outcome["config"], outcome["index"])

    def _apply_config(self, index: int, cmd: dict) -> dict:
        """A configuration entry, committed: it takes effect now (ValueError: not a
        configuration). Under force_config, the log's own are overridden."""
        new = M.Config.from_dict(cmd.get("config"), index)
        if self._force_config and not self._forced_written:
            log.warning("configuration in the log ignored (forced) index=%d members=%s",
                        index, ",".join(new.names))
            # Its removed ids stay removed (membership.py Rule 3).
            self.config = replace(self.config, removed=self.config.removed | new.removed)
            return {"config": self.config.to_dict(), "index": self.config.index}
        old, self.config = self.config, new
        log.info("configuration applied index=%d voters=%s learners=%s%s", index,
                 ",".join(new.voters), ",".join(new.learners) or "-",
                 "" if old.names == new.names and old.voters == new.voters
                 else f" (was voters={','.join(old.voters)} learners="
                      f"{','.join(old.learners) or '-'})")
        self._config_applied()
        return {"config": new.to_dict(), "index": index}

    def _config_applied(self) -> None:
        if self.core is not None:
            cfg = self.config
            self.core.set_members(cfg.voters, cfg.learners, self._witnesses())
            self.on_config(cfg)

    def _witnesses(self) -> tuple:
        own = (self.node_name,) if self._witness and self.node_name in self.config.voters \
            else ()
        return tuple(set(self.config.witnesses) | set(own))

    def _snapshot_meta(self) -> dict:
        """What a snapshot records of Raft itself: the configuration applied last,
        unless it is still the base (the config file's: not in the log)."""
        if self.config.index == 0:
            return {}
        return {"config": self.config.to_dict(), "config_index": self.config.index}

    def _may_change(self) -> bool:
        """This node leads and may propose a membership change now (change_members'
        rules): its term's first entry applied, no change pending, not stopped."""
        core = self.core
        return core is not None and core.role == C.LEADER and not self._stopped \
            and core.term_at(self.applied_index) == core.term \
            and self._config_index <= self.applied_index

    def _behind(self) -> bool:
        """Not up to date with the leader this node follows (or leads)."""
        core = self.core
        return core is None or core.role != C.LEADER and (
            core.lead is None or self.applied_index < core.commit)

    def _propose_config(self, cmd: dict) -> None:
        self.propose_async({**cmd, "term": self.core.term})

    # The network's side ####################################################

    def receive(self, sender: str, payload: bytes) -> None:
        """From the transport (in the hub, authenticated): queue for the loop."""
        self.contact[sender] = time.monotonic()
        if payload[:1] == REFUSED_TAG:
            self.gate.refused_by(sender, payload)
            return
        fn = self.receivers.get(payload[:1])
        if fn is not None:
            fn(sender, payload)
            return
        try:
            m = wire.decode(sender, self.node_name, payload)
        except ValueError:
            self.stats["bad_messages"] += 1
            return
        if self.gate.accept(m):
            self.step_later(m)

    def heard(self, sender: str) -> None:
        """From the transport (in the hub): part of a message from sender arrived, the
        rest still on its way (transport.py Rule 3). The leader's is contact: the core
        restarts its election timer (core.CONTACT), at most once a tick."""
        now = time.monotonic()
        self.contact[sender] = now
        core = self.core
        if core is not None and sender == core.lead and core.role == C.FOLLOWER \
                and now - self._heard_at >= self.tick_s:
            self._heard_at = now
            self.step_later(C.Message(C.CONTACT, frm=sender))

    def _stamp(self, now: int) -> int:
        """Rule 7."""
        if now >= self._last_at:
            self._ahead_since = None
            return now
        if self._ahead_since is None:
            self._ahead_since = (self._last_at, time.monotonic())
        base, since = self._ahead_since
        return max(self._last_at, base + int((time.monotonic() - since) * 500))

    def step_later(self, m: C.Message) -> None:
        if len(self._inbox) >= MAX_INBOX:
            self.stats["inbox_full"] += 1
            return
        self._inbox.append(m)
        self._wake.set()

    def _tick_forever(self) -> None:
        # A sleep that returns late (a busy hub) is one tick, not a burst: this node
        # being slow is no reason to call an election.
        while True:
            gevent.sleep(self.tick_s)
            self._ticks += 1
            self._wake.set()

    # The loop ##############################################################

    def _run(self) -> None:
        while True:
            idle = self.log_ok and self.snaps.error is None
            self._wake.wait(timeout=None if idle else PROBE_S)
            self._wake.clear()
            self._busy = True
            try:
                self._turn()
            except Exception:
                # A bug outside the disk path; a dead loop would leave every request
                # waiting forever, so stop and let the supervisor restart.
                log.critical("commit loop failed; stopping", exc_info=True)
                os._exit(70)
            finally:
                self._busy = False
            self.snaps.maybe()
            self._record_commit()      # after: it yields, and a snapshot due goes first

    def _turn(self) -> None:
        core = self.core
        while self._inbox or self._ticks or self._queue or not self.log_ok:
            inbox, self._inbox = self._inbox, []
            for m in inbox:
                core.step(m)
            if self._ticks:
                self._ticks = 0
                core.tick()
            if not self.log_ok and core.role == C.LEADER and not self.alone \
                    and core.is_voter() and core.transferee is None \
                    and time.monotonic() - self._log_failed_at \
                    > self.election_ticks * self.tick_s:
                # It cannot commit anything, and its heartbeats keep the others from
                # electing one that can: hand over. (It cannot win again before its
                # disk works: a vote must be persisted before it is sent.)
                best = max((p for p in core.voters if p != self.node_name),
                           key=lambda p: core.progress[p].match)
                log.error("log not writable for an election timeout; handing leadership "
                          "over to=%s", best)
                core.step(C.Message(C.TRANSFER, frm=self.node_name, to=best, term=core.term))
            if not self.log_ok and core.role == C.LEADER and not self._queue \
                    and time.monotonic() >= self._probe_at:
                self._probe_at = time.monotonic() + PROBE_S
                self._queue.append(({"op": "noop"}, gevent.event.AsyncResult()))  # Rule 1
            self._take_proposals()
            while True:
                rd = core.ready()
                if rd.empty():
                    break
                if not self._handle(rd):
                    return            # Rule 1: tried again on the next wake-up
            if not self.log_ok:
                return

    def _take_proposals(self) -> None:
        if not self._queue:
            return
        if self._lazy:
            self._lazy_due()                     # Rule 4: they ride in this round
        core = self.core
        batch, self._queue = self._queue, []
        if core.role != C.LEADER or core.transferee is not None or not core.is_voter():
            why = NotLeader(f"node is {self.role}; leader is {self.leader}")
            for _, result in batch:
                result.set_exception(why)
            return
        size, datas = 0, []
        for n, (cmd, result) in enumerate(batch):
            if cmd.get("term", core.term) != core.term:
                result.set_exception(NotLeader(f"proposed in term {cmd['term']}, now "
                                               f"{core.term}"))
                continue
            if _is_config(cmd):
                if self._config_index > self.applied_index:
                    result.set_exception(ChangePending(
                        f"the membership change at index {self._config_index} is not "
                        f"applied yet; one change at a time"))
                    continue
                self._config_index = core.last_index() + 1 + len(datas)
            cmd["at_ms"] = self._stamp(cmd.get("at_ms") or self.now_ms())
            index, term = core.last_index() + 1 + len(datas), core.term
            try:
                chunk = encode(index, term, cmd)
            except (TypeError, ValueError) as e:
                # parse.py should have refused it; one bad command must not stop the
                # loop that commits everyone else's.
                log.error("command cannot be logged op=%s error=%s", cmd.get("op"), e)
                result.set_exception(LogFailed(f"command cannot be logged: {e}"))
                continue
            if self.peers and len(chunk) > MAX_REPLICATED_ENTRY_BYTES:
                result.set_exception(LogFailed(
                    f"command of {len(chunk)} bytes is too large to replicate (at most "
                    f"{MAX_REPLICATED_ENTRY_BYTES}); not committed"))
                continue
            if size and size + len(chunk) > MAX_APPEND_BYTES:
                self._queue[:0] = batch[n:]      # log.py: one append stays bounded
                self._wake.set()
                break
            datas.append(cmd)
            self._last_at = cmd["at_ms"]
            self._encoded[index] = (term, chunk)
            self._waiting[index] = (term, result)
            size += len(chunk)
        if datas:
            core.propose_batch(datas)

    def _handle(self, rd: C.Ready) -> bool:
        """Carry out one Ready in the core's order. False: persisting failed (Rule 1)."""
        t0 = time.monotonic()
        core = self.core
        try:
            if rd.snapshot is not None:
                self._install(rd.snapshot)
        except OSError as e:
            self._write_failed(e, 0, False)
            return False
        first = self._persist(rd.entries) if rd.entries else None
        if first is not None:
            # Entries before `first` are on disk: they stay (the next Ready writes them
            # again); the rest is forgotten and its proposers told.
            core.forget_unstable(first)
            for index in [i for i in self._waiting if i >= first]:
                self._encoded.pop(index, None)
                _, result = self._waiting.pop(index)
                result.set_exception(LogFailed(self._last_failure))
            return False
        wrote = rd.snapshot is not None or bool(rd.entries)
        if rd.hard_state is not None:
            term, vote, commit = rd.hard_state
            if (term, vote) != (self.log.term, self.log.vote):
                wrote = True
                try:
                    in_thread(self.log.save_hard_state, term, vote,
                              min(commit, self.log.last_index))
                except OSError as e:
                    self._write_failed(e, 0, False)
                    return False
        if not self.log_ok and wrote:      # a write worked: the disk is back
            log.warning("log writable again failed_writes=%d", self.failed_writes)
            self.log_ok, self.log_error, self.failed_writes = True, None, 0
        for m in rd.messages:
            self._send(m)
        for e in rd.committed:
            self._apply(e)
        core.advance(rd)
        if rd.committed:
            # Only followers are ever sent applied entries: without any, none is kept.
            if self.peers:
                core.compact_applied(self.applied_index, _compact)
            else:
                core.compact_applied(self.applied_index, _forget)
                core.sendable_from = self.applied_index + 1
        for name, fields in rd.events:
            self._event(name, fields)
        if rd.committed:
            elapsed = time.monotonic() - t0
            for fn in self._on_batch:
                try:
                    fn(len(rd.committed), elapsed)
                except Exception:
                    self._listener_failed(fn)
        return True

    def _persist(self, entries: list) -> int | None:
        """Append entries durably, in appends of at most MAX_APPEND_BYTES, each
        fsync'd (Rule 1 of log.py: a torn tail is at most the last append). None when
        all are on disk, else the index of the first that is not."""
        first = entries[0].index
        if first <= self.log.last_index:
            try:
                self.log.truncate_from(first)   # Raft §5.3: the leader's log wins
            except OSError as e:
                self._write_failed(e, len(entries), False)
                return first
            log.info("log truncated from index=%d (a new leader's entries differ)", first)
        chunks, size, start = [], 0, first
        for e in entries:
            have = self._encoded.get(e.index)
            if have is not None and have[0] == e.term:
                chunk = have[1]
            else:
                chunk = encode(e.index, e.term, _noop(e.term) if e.data is None else e.data)
            if chunks and size + len(chunk) > MAX_APPEND_BYTES:
                if not self._write(b"".join(chunks), len(chunks)):
                    return start
                chunks, size, start = [], 0, e.index
            chunks.append(chunk)
            size += len(chunk)
        if not self._write(b"".join(chunks), len(chunks)):
            return start
        for e in entries:
            self._encoded.pop(e.index, None)
        return None

    _last_failure = "log write failed, not committed"
    _thread_sync_until = 0.0
    _slow_fsyncs: tuple = ()           # monotonic ends of the last SLOW_FSYNCS slow ones

    def _sync(self) -> None:
        """Rule 5: fsync inline while the disk is fast; in FSYNC_LANE's thread while it is
        slow, until SLOW_DISK_S pass without an fsync slower than FAST_FSYNC_S, so that
        the hub keeps serving requests (and the next batch forms) meanwhile."""
        fd = self.log.fileno()
        t0 = time.monotonic()
        pooled = t0 < self._thread_sync_until
        if pooled:
            # Timed in the thread: the wait for the hub to take the answer back is the
            # hub's business, and counted here it kept a busy node's fsyncs in the
            # thread whatever the disk did.
            took = FSYNC_LANE.call(_timed, self._fsync, fd)
        else:
            if self._thread_sync_until:
                self._thread_sync_until = 0.0
                log.info("fsyncs inline again: none slower than %.0f ms for %.0f s",
                         FAST_FSYNC_S * 1000, SLOW_DISK_S)
            self._fsync(fd)
            took = time.monotonic() - t0
        end = time.monotonic()
        if took <= FAST_FSYNC_S:
            return
        self._slow_fsyncs = (self._slow_fsyncs + (end,))[-SLOW_FSYNCS:]
        if pooled:                      # a disk still slow keeps it there
            self._thread_sync_until = end + SLOW_DISK_S
        elif took > STALL_FSYNC_S or (len(self._slow_fsyncs) == SLOW_FSYNCS and
                                      end - self._slow_fsyncs[0] <= SLOW_DISK_S):
            log.info("slow fsync seconds=%.3f slow_in_window=%d: fsyncs go to a thread "
                     "until %.0f s pass without one slower than %.0f ms", took,
                     sum(end - t <= SLOW_DISK_S for t in self._slow_fsyncs),
                     SLOW_DISK_S, FAST_FSYNC_S * 1000)
            self._thread_sync_until = end + SLOW_DISK_S
            self.stats["slow_disk"] += 1

    @property
    def fsync_in_thread(self) -> bool:
        """Rule 5: the commit loop's fsyncs go to the thread now (a slow disk)."""
        return time.monotonic() < self._thread_sync_until

    def _write(self, data: bytes, count: int) -> bool:
        """Append and fsync one batch of encoded records."""
        prev_index, prev_term = self.log.last_index, self.log.last_term
        index, term = encode_last(data)
        offset = None
        try:
            if self.log.unsure is not None:
                self.log.truncate(self.log.unsure)   # nothing of this batch written yet
            offset = self.log.append(data, index, term)
            self._sync()
        except OSError as e:
            if offset is not None:
                try:
                    self.log.truncate(offset)
                except OSError:
                    pass                  # log.unsure now says so
            self.log.last_index, self.log.last_term = prev_index, prev_term
            unknown = offset is not None and self.log.unsure is not None
            self._write_failed(e, count, unknown)
            self._last_failure = (
                "log write failed and the log could not be cut back: the outcome is "
                "unknown; retrying is safe" if unknown else
                "log write failed, not committed") + f": {e}"
            return False
        if not self.log_ok:
            log.warning("log writable again failed_writes=%d", self.failed_writes)
        self.log_ok, self.log_error, self.failed_writes = True, None, 0
        return True

    def _record_commit(self) -> None:
        """Rule 6: hard state's commit, once COMMIT_RECORD_S have passed since the last
        record. Only what is on disk and committed: everything this loop appended has
        been fsync'd (or cut back) by now. A failure is logged once and tried again a
        period later; the log itself is not affected."""
        core, lg = self.core, self.log
        if core is None or not self.log_ok or lg.unsure is not None:
            return
        commit = min(core.commit, lg.last_index)
        now = time.monotonic()
        if commit <= lg.commit or now < self._record_at:
            return
        self._record_at = now + COMMIT_RECORD_S
        self._recording = True
        try:
            in_thread(lg.save_hard_state, lg.term, lg.vote, commit)
        except OSError as e:
            if self.commit_record_error is None:
                log.warning("commit not recorded in hard state error=%s; retrying every "
                            "%gs", e, COMMIT_RECORD_S)
            self.commit_record_error = str(e)
            return
        finally:
            self._recording = False
        if self.commit_record_error is not None:
            log.info("commit recorded in hard state again commit=%d", commit)
        self.commit_record_error = None

    def _write_failed(self, e: OSError, entries: int, unknown: bool) -> None:
        self.failed_writes += 1
        self.log_error = str(e) + ("; log tail unknown, writes stopped until it can be "
                                   "cut back" if self.log.unsure is not None else "")
        if self.log_ok:                   # one line per change of state (Rule 1)
            log.error("log write failed entries=%d outcome=%s error=%s; retrying every "
                      "%gs", entries, "unknown" if unknown else "not_committed",
                      self.log_error, PROBE_S)
        if self.log_ok:
            self._log_failed_at = time.monotonic()
        self.log_ok = False
        self._probe_at = time.monotonic() + PROBE_S

    def _send(self, m: C.Message) -> None:
        if m.type == C.SNAPSHOT:
            fn = self.receivers.get("snapshot_out")
            if fn is not None:
                fn(m)
            return
        payload = wire.encode(m, self.member_id,
                              self.config.digest() if self.config.index == 0 else "")
        if len(payload) <= MAX_MESSAGE_BYTES or len(m.entries) < 2:
            self.send(m.to, payload)
            return
        half = len(m.entries) // 2
        first, rest = m.entries[:half], m.entries[half:]
        self._send(replace(m, entries=first))
        self._send(replace(m, index=first[-1].index, log_term=first[-1].term, entries=rest))

    def _apply(self, e: C.Entry) -> None:
        cmd = _noop(e.term) if e.data is None else e.data
        try:
            if _is_config(cmd):
                outcome = self._apply_config(e.index, cmd)
            else:
                outcome = self._fsm_apply(e.index, cmd)
        except Exception as ex:
            # Every replica must reach the same state; one that cannot must stop.
            log.critical("apply failed %s error=%r; stopping (see README, Recovery)",
                         self._entry_name(e.index, cmd), ex, exc_info=True)
            os._exit(70)
        self.applied_index = e.index
        self._last_at = max(self._last_at, cmd.get("at_ms") or 0)
        pending = self._lead_pending
        if pending is not None and e.index >= pending[1]:
            self._lead_pending = None
            self._leadership(True, pending[0])
        waiting = self._waiting.pop(e.index, None)
        if waiting is not None:
            if waiting[0] == e.term:
                waiting[1].set(outcome)
            else:
                waiting[1].set_exception(NotLeader(
                    "a new leader's entry took this command's place: not committed; "
                    "retrying is safe"))
        for fn in self._on_applied:
            try:
                fn(cmd, outcome)
            except Exception:
                self._listener_failed(fn)

    def _event(self, name: str, fields: dict) -> None:
        if name == "leader_changed":
            self.stats["leader_changes"] += 1
            lead = fields["leader"]
            self.no_leader_since = None if lead else time.monotonic()
            log.info("leader changed term=%d leader=%s", fields["term"], lead or "-")
            return
        if name == "became_candidate":
            self.stats["elections"] += 1
            return
        if name == "member_lost_entries":
            log.warning("member denies entries it acknowledged member=%s match=%d hint=%d; "
                        "counting none of its acknowledgements until it has caught up "
                        "again (its data_dir was replaced?)", fields["member"],
                        fields["match"], fields["hint"])
            return
        if name not in ("became_leader", "stepped_down"):
            return
        is_leader = name == "became_leader"
        log.info("%s term=%d last_index=%d", name.replace("_", " "), fields["term"],
                 self.core.last_index())
        if is_leader:
            # Side effects start once the state holds everything committed before this
            # term (its no-op applied), or a new dispatcher would redo what the last
            # leader's late marks already say is done.
            noop = next((i for i in range(self.core.last_index(), self.core.snap_index, -1)
                         if self.core.term_at(i) == fields["term"]
                         and self.core.term_at(i - 1) != fields["term"]), 0)
            if self.applied_index < noop:
                self._lead_pending = (fields["term"], noop)
                return
        else:
            self._lead_pending = None
            self._fail_waiting(LOST)
        self._leadership(is_leader, fields["term"])

    def _leadership(self, is_leader: bool, term: int) -> None:
        for fn in self._on_leadership:
            try:
                fn(is_leader, term)
            except Exception:
                self._listener_failed(fn)

    def has_quorum_contact(self, lease: bool = False) -> bool:
        """Heard from a majority (itself included) within an election timeout: what a
        leader must have before a side effect, so that one cut off stops publishing
        without waiting for check-quorum to depose it. lease: within half of it, what
        a read of its own state needs to be current. The others may elect a new leader
        a tick short of an election timeout after they last heard it (timers count
        ticks), and a reply arrives after the heartbeat that reset their timers: a
        clean-clone test run read an isolated old leader 0.98 s after its last contact,
        0.05 s after the new leader was elected."""
        if self.alone:
            return True
        window = self.election_ticks * self.tick_s * (0.5 if lease else 1.0)
        since = time.monotonic() - window
        voters = self.config.voters
        heard = sum(1 for p in voters if p == self.node_name
                    or self.contact.get(p, 0) >= since)
        return heard >= len(voters) // 2 + 1

    def _fail_waiting(self, message: str) -> None:
        waiting, self._waiting = self._waiting, {}
        self._encoded.clear()
        for _, result in waiting.values():
            result.set_exception(NotLeader(message))

    def _listener_failed(self, fn) -> None:
        self.listener_errors += 1
        if self.listener_errors == 1 or self.listener_errors % 1000 == 0:
            log.error("listener failed listener=%s errors=%d", getattr(fn, "__qualname__", fn),
                      self.listener_errors, exc_info=True)

    # Snapshots #############################################################

    def _install(self, snap: tuple) -> None:
        """A snapshot the leader sent (Ready.snapshot: index, term, received file)
        replaces this node's state and log."""
        index, term, path = snap
        t0 = time.monotonic()
        self.log.install_snapshot(index, term, path=path)
        snap = self.log.read_snapshot(index)
        self.fsm.restore(snap)
        self._config_from_snapshot(snap)
        self._config_applied()
        self.applied_index = index
        self.core.snap_data = self.log.snapshot_path(index)
        log.info("installed snapshot from the leader index=%d term=%d %s seconds=%.2f",
                 index, term, self.fsm.summary(), time.monotonic() - t0)

    def status(self) -> dict:
        return {"role": self.role if self.role in ("leader", "follower", "candidate")
                else "follower",
                "term": self.term, "leader": self.leader,
                "commit_index": self.commit_index, "applied_index": self.applied_index,
                "last_log_index": self.log.last_index}

    def progress(self) -> dict:
        """The leader's {peer: {"match", "next", "state"}}; {} on a follower."""
        return self.core.status()["progress"] if self.core is not None else {}


def encode_last(data: bytes) -> tuple[int, int]:
    """(index, term) of the last record in a run of encoded records."""
    from .log import HEADER
    pos, index, term = 0, 0, 0
    while pos < len(data):
        length, _, index, term = HEADER.unpack_from(data, pos)
        pos += HEADER.size + length
    return index, term
