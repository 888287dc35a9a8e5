"""What RaftNode needs of the state machine it replicates (hashicorp/raft fsm.go:
Apply, Snapshot, Restore), and of the snapshot files that state machine writes. raft/
knows a command only as a JSON value it logs and sends, and a snapshot only as a file
it names, moves and sends; what either means is the FSM's (dqorch/fsm.py: the job
registry). Documented duck types: nothing here runs.

Entries that are not commands stay inside raft/: a new leader's empty entry reaches
apply as the command {"op": "noop", "term": t} (the FSM refuses a deposed leader's
commands by their term); configuration entries ({"op": "raft_config"},
raft/membership.py) are applied by RaftNode itself and never reach the FSM.
"""
from __future__ import annotations

from typing import Iterable, Protocol


class FSM(Protocol):
    def apply(self, index: int, cmd) -> object:
        """Apply the committed command at index; its result goes back to whoever
        proposed it. Deterministic: the same commands give the same state on every
        replica and every replay (no clock, no randomness, no I/O); the leader's time
        is in cmd["at_ms"]. Raising stops the node (replicas must never diverge): on
        the next start the replay refuses with ReplayFailed naming the entry. Called
        once per entry, from the commit loop only."""

    def snapshot(self) -> object:
        """The state as of the last apply, as SnapshotFormat.write takes it. Called in
        a forked child: the child's copy-on-write image is the point-in-time capture,
        so a view that shares the live structures is enough (hashicorp's Snapshot
        captures, Persist writes; here the fork captures)."""

    def restore(self, snap: dict, pace=None) -> None:
        """Replace the state with the snapshot SnapshotFormat.read returned. pace(what)
        may be called between parts of a long load (start-up hands the hub a turn and
        shows `what` as its phase). KeyError, TypeError, ValueError, AttributeError,
        AssertionError: the snapshot cannot be loaded (ReplayFailed at start-up)."""

    def summary(self) -> str:
        """key=value fields for the lines that log a replay or a load ("jobs=12")."""

    def describe(self, cmd) -> str:
        """key=value fields that name a command (or a value that is not one) in the
        one line that says an entry cannot be applied or is skipped."""


class SnapshotFormat(Protocol):
    def write(self, index: int, term: int, data, raft: dict) -> Iterable[bytes]:
        """The bytes of snapshot-<index>.json for FSM.snapshot()'s data, in chunks
        (written as they come, in the forked child). They record index, term and
        `raft`, a JSON object that is Raft's own (the configuration), as they got it."""

    def read(self, path: str) -> dict:
        """The snapshot file at path as {"index", "term", "raft", ...}: what RaftLog
        and RaftNode need at once, the rest for FSM.restore, which may stream it.
        "raft" is {} in a file written without one. Damage: LogCorrupt, at the latest
        when the stream ends."""
