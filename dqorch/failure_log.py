"""One log line per failed attempt and per job failed for good, on the leader (every
member applies the same moves; one of them says so), and a summary instead when they
come faster than LINES_PER_S: the log of a bad deploy stays readable, and the count
stays right."""
from __future__ import annotations

import collections
import logging

log = logging.getLogger("dqorch.jobs")

LINES_PER_S = 10


class FailureLog:
    """clock(): monotonic seconds."""

    def __init__(self, clock) -> None:
        self._clock = clock
        self._second = -1
        self._lines = 0
        self._held: collections.Counter = collections.Counter()   # type -> not logged

    def failed(self, job, final: bool) -> None:
        """job: the job record after the move (its error, worker, attempt)."""
        now = int(self._clock())
        if now != self._second:
            self.flush()
            self._second, self._lines = now, 0
        if self._lines >= LINES_PER_S:
            self._held[job.type] += 1
            return
        self._lines += 1
        error = job.get("error_message") or "no error message"
        if final:
            log.warning("job failed id=%s type=%s worker=%s attempts=%d error=%s",
                        job.id, job.type, job.worker_id or "-", job.retry_count + 1, error)
        else:           # the retry is the current attempt; the failed one's worker is past
            past = job.get("past")
            log.info("job attempt failed id=%s type=%s worker=%s attempt=%d retry=%d/%d "
                     "error=%s", job.id, job.type, past[-1][0] if past else "-",
                     job.attempt, job.retry_count, job.max_retries, error)

    def flush(self) -> None:
        """The summary of what was not logged (called at least once a second)."""
        if self._held:
            n = sum(self._held.values())
            top = ", ".join(f"{t}={c}" for t, c in self._held.most_common(5))
            log.warning("job failures not logged one by one count=%d by_type=%s "
                        "(more than %d a second)", n, top, LINES_PER_S)
            self._held.clear()
