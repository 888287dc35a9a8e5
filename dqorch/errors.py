"""Named failures that cross module boundaries. Each carries what the HTTP edge needs."""
from __future__ import annotations

# NotLeader is in raft/core.py, the failures of a proposal and of a replay in
# raft/errors.py (raft/ imports nothing of dqorch outside raft/): named here too.
from .raft.errors import LogFailed, Overloaded, ProposeTimeout, ReplayFailed  # noqa: F401


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



EXIT_CONFIG = 2    # the config (or a flag) is wrong: nothing was opened
EXIT_DATA = 3      # data_dir damaged, unwritable, in use, or an entry that cannot be applied
EXIT_LISTEN = 4    # a port (http_port, metrics_port, raft_port) cannot be listened on


class StartupError(Exception):
    """Start-up cannot go on; `code` is the exit code (EXIT_*), the message one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
