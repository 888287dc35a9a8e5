"""Whether each member could publish to RabbitMQ, and when a leader that cannot hands
leadership to one that can (issue 28 §3: a leader cut off from the broker kept
leading while jobs piled up pending, and every health check said all was well).

Every member but a witness keeps a broker connection: the leader publishes on it; a
follower only holds it open (app.py), so that it knows, and says, whether it could.
Each member tells every peer what it knows of its own every DIGEST_TICKS (cluster.py,
b"B" {"ok": bool, "for_ms": int}): how long it has been so, an age, never an instant
(clocks need not agree). Pure: the caller passes the clock.

Rule 1: a report older than STALE_S says nothing (its member may be gone or cut off).
Rule 2: a leader whose own broker has not been ok for longer than `bound_s` hands
leadership to the first of the given candidates (caught-up data voters) whose fresh
report says ok, and tries again no sooner than bound_s later. bound_s 0: never.
"""
from __future__ import annotations

STALE_S = 3.0
DOWN_S = 5.0      # a member's broker down this long is news (health), not a reconnect


class BrokerPeers:
    def __init__(self, bound_s: float, clock) -> None:
        self.bound_s = bound_s
        self.clock = clock
        self.own_ok: bool | None = None      # None: this member keeps no broker (a witness)
        self._own_since = clock()
        self._said: dict[str, tuple] = {}    # name -> (ok, since, heard_at) on our clock
        self._tried = float("-inf")
        self.handovers = 0                   # Rule 2's transfers started

    def own(self, ok: bool) -> None:
        """This member's broker state, now (called every second or so)."""
        if ok != self.own_ok:
            self.own_ok, self._own_since = ok, self.clock()

    def own_for_s(self) -> float:
        return self.clock() - self._own_since

    def heard(self, name: str, ok: bool, for_ms: int) -> None:
        now = self.clock()
        self._said[name] = (ok, now - for_ms / 1000, now)

    def said(self, name: str) -> tuple | None:
        """(ok, for how many seconds) from name's fresh report, else None (Rule 1)."""
        s = self._said.get(name)
        if s is None:
            return None
        now = self.clock()
        if now - s[2] > STALE_S:
            return None
        return s[0], now - s[1]

    def leader_check(self, leader: str | None) -> dict:
        """A follower's health view of the leader's publishing: not ok once the leader
        has said, for longer than DOWN_S, that its broker does not work."""
        s = self.said(leader) if leader else None
        if s is None:
            return {"node": leader, "ok": None}          # no word (yet): nothing to say
        ok, for_s = s
        out = {"node": leader, "ok": ok or for_s < DOWN_S, "for_s": round(for_s, 1)}
        if not out["ok"]:
            out["error"] = (f"the leader {leader} cannot publish: its RabbitMQ connection "
                            f"has not worked for {for_s:.0f} s; jobs wait pending")
        return out

    def handover_to(self, candidates) -> str | None:
        """Rule 2: whom this leader should hand leadership to now, or None."""
        if self.bound_s <= 0 or self.own_ok is not False:
            return None
        now = self.clock()
        if now - self._own_since < self.bound_s or now - self._tried < self.bound_s:
            return None
        for name in candidates:
            s = self.said(name)
            if s is not None and s[0]:
                self._tried = now
                self.handovers += 1
                return name
        return None
