"""How a proposal or a replay fails, named (hashicorp/raft api.go: ErrNotLeader, ...).
NotLeader is in core.py, which raises it too. dqorch/errors.py re-exports these for
the HTTP edge; this package imports nothing of dqorch outside raft/."""
from __future__ import annotations


class ProposeTimeout(Exception):
    """The command was handed to the log but no outcome came back in time: it may or
    may not commit. Retrying is safe for register (idempotent)."""


class LogFailed(Exception):
    """The command was not committed: writing or syncing the log failed, or the
    command cannot be encoded for the log, or its entry is too large to replicate."""


class ReplayFailed(Exception):
    """A snapshot or log entry read back at start-up cannot be applied (a bug, or data
    from another version). The node refuses to start; the message names the entry."""


class Overloaded(Exception):
    """More proposals wait for the log than max_pending_proposals: refused before
    anything was logged (not committed); the client should retry after a moment."""
