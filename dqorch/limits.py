"""Limits per job type (issue 29), as the leader's publisher applies them: at most
`concurrency` jobs of a type queued or running at once, at most `rate` published a
second. The limits themselves are state (state.limits, set by PUT /api/limits/{type}:
every member and every next leader has them); what is counted here is the leader's
own: its publishes not yet marked queued, and the rate's tokens.

Rule 1: a type's active count is its jobs queued or running in the state, plus this
leader's publishes of it in flight or confirmed and not yet marked (`held`): never
less than the truth on this leader. (At-least-once: a job a dead worker held counts
until its timeout or the worker's expiry ends it; publishes of the last leader not yet
marked are not counted until they are.)
Rule 2: a job held by its type's concurrency waits in that type's queue here, not in
a timer: a slot freed (a job of the type leaves queued or running, or the limit
changed) lets that many go back to the publisher, oldest first. A job held by the
rate waits for the next token (the publisher's backoff heap).
Rule 3: nothing here survives a leadership change: the next leader rebuilds from the
state (its publisher reads every pending job again).
"""
from __future__ import annotations

import collections

ACTIVE = ("queued", "running")


class Limits:
    """clock(): monotonic seconds. limits(): the state's {type: {"concurrency",
    "rate"}}; counts(type): the state's {status: n} for that type."""

    def __init__(self, clock, limits, counts) -> None:
        self._clock = clock
        self._limits = limits
        self._counts = counts
        self.reset()

    def reset(self) -> None:
        self.held: collections.Counter = collections.Counter()   # type -> publishes out
        self._held_type: dict = {}          # id -> its type when it was published
        self.waiting: dict = {}             # type -> deque of ids held by concurrency
        self._tokens: dict = {}             # type -> (tokens, clock() of the count)

    def active(self, type_: str) -> int:
        counts = self._counts(type_)
        return sum(counts.get(s, 0) for s in ACTIVE) + self.held[type_]

    def admit(self, id_: str, type_: str) -> float | None:
        """None: publish it now (its publish is counted). Else the seconds until its
        rate lets it (the caller retries then), or 0.0: it waits for a slot (Rule 2;
        queued here)."""
        limit = self._limits().get(type_)
        if limit is None:
            return None
        c = limit.get("concurrency")
        if c is not None and self.active(type_) >= c:
            self.waiting.setdefault(type_, collections.deque()).append(id_)
            return 0.0
        rate = limit.get("rate")
        if rate is not None:
            now = self._clock()
            tokens, at = self._tokens.get(type_, (max(1.0, rate), now))   # full at first
            tokens = min(max(1.0, rate), tokens + (now - at) * rate)
            if tokens < 1.0:
                self._tokens[type_] = (tokens, now)
                return (1.0 - tokens) / rate
            self._tokens[type_] = (tokens - 1.0, now)
        return None

    def published(self, id_: str, type_: str) -> None:
        if id_ not in self._held_type and type_ in self._limits():
            self._held_type[id_] = type_
            self.held[type_] += 1

    def settled(self, id_: str) -> None:
        """Its publish was marked, or rejected: no longer counted here."""
        type_ = self._held_type.pop(id_, None)
        if type_ is not None:
            self.held[type_] -= 1
            if not self.held[type_]:
                del self.held[type_]

    def freed(self, type_: str) -> list:
        """The ids that may go now that a slot of type_ may be free (Rule 2)."""
        q = self.waiting.get(type_)
        if not q:
            return []
        limit = self._limits().get(type_) or {}
        c = limit.get("concurrency")
        n = len(q) if c is None else max(0, c - self.active(type_))
        out = [q.popleft() for _ in range(min(n, len(q)))]
        if not q:
            del self.waiting[type_]
        return out

    def all_freed(self) -> list:
        """Every type's (a limit changed or went)."""
        return [id_ for t in list(self.waiting) for id_ in self.freed(t)]

    def holding(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def check(self) -> None:
        """L1: held is exactly the count of _held_type per type."""
        assert self.held == collections.Counter(self._held_type.values()), "L1"
