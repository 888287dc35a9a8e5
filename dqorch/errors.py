"""Named failures that cross module boundaries. Each carries what the HTTP edge needs."""
from __future__ import annotations


class ApiError(Exception):
    """A failure the client caused or must know about; rendered as
    {"error": code, "message": message, "field"?: field} with HTTP `status`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def body(self) -> dict:
        out = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


def bad(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_request", f"{field}: {message}", field)


# NotLeader is in raft/core.py, which raises it too and imports nothing of dqorch.


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


EXIT_CONFIG = 2    # the config (or a flag) is wrong: nothing was opened
EXIT_DATA = 3      # data_dir damaged, unwritable, in use, or an entry that cannot be applied
EXIT_LISTEN = 4    # a port (http_port, metrics_port, raft_port) cannot be listened on


class StartupError(Exception):
    """Start-up cannot go on; `code` is the exit code (EXIT_*), the message one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
