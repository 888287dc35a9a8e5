"""What each member says of itself (its RabbitMQ connection, its clock), and when a
leader hands leadership to a member better placed to lead (issue 28: a leader cut off
from the broker kept leading while jobs piled up pending, every health check saying
all was well; a leader 2 h ahead timed out healthy jobs).

Every member but a witness keeps a broker connection: the leader publishes on it; a
follower only holds it open (app.py), so that it knows, and says, whether it could.
Every member tells every peer every DIGEST_TICKS (cluster.py, b"B"): its wall clock
(clock.py takes it), whether its broker works and for how long (an age, never an
instant), and how far its wall clock is from the cluster's time. Pure: the caller
passes the clock.

Rule 1: a report older than STALE_S says nothing (its member may be gone or cut off).
Rule 2: a leader whose own broker has not worked for longer than `bound_s` hands
leadership to the first of the given candidates (caught-up data voters) whose fresh
report says its broker works and its clock is right; again no sooner than bound_s
later. bound_s 0: never.
Rule 3: a leader whose wall clock is more than `max_skew_ms` off the cluster's time
hands over at once, to a candidate as in Rule 2 (again no sooner than RETRY_S later).
Its stamps and timers use the cluster's time (clock.py) meanwhile, so it does no harm
while it leads; it hands over so that a member whose own clock is right leads.
"""
from __future__ import annotations

STALE_S = 3.0
DOWN_S = 5.0      # a member's broker down this long is news (health), not a reconnect
RETRY_S = 10.0    # Rule 3's pause between two tries


class PeerNews:
    def __init__(self, bound_s: float, max_skew_ms: int, clock) -> None:
        self.bound_s = bound_s
        self.max_skew_ms = max_skew_ms
        self.clock = clock
        self.own_ok: bool | None = None      # None: this member keeps no broker (a witness)
        self._own_since = clock()
        self._said: dict[str, tuple] = {}    # name -> (ok, since, heard_at, skew_ms)
        self._tried = float("-inf")
        self.handovers = {"broker": 0, "clock": 0}

    def own(self, ok: bool) -> None:
        """This member's broker state, now (called every second or so)."""
        if ok != self.own_ok:
            self.own_ok, self._own_since = ok, self.clock()

    def own_for_s(self) -> float:
        return self.clock() - self._own_since

    def heard(self, name: str, ok: bool | None, for_ms: int, skew_ms: int) -> None:
        now = self.clock()
        self._said[name] = (ok, now - for_ms / 1000, now, skew_ms)

    def said(self, name: str) -> tuple | None:
        """(broker ok or None, for how many seconds, clock skew ms) from name's fresh
        report, else None (Rule 1)."""
        s = self._said.get(name)
        if s is None:
            return None
        now = self.clock()
        if now - s[2] > STALE_S:
            return None
        return s[0], now - s[1], s[3]

    def leader_check(self, leader: str | None) -> dict:
        """A follower's health view of the leader's publishing: not ok once the leader
        has said, for longer than DOWN_S, that its broker does not work."""
        s = self.said(leader) if leader else None
        if s is None or s[0] is None:
            return {"node": leader, "ok": None}          # no word (yet): nothing to say
        ok, for_s, _ = s
        out = {"node": leader, "ok": ok or for_s < DOWN_S, "for_s": round(for_s, 1)}
        if not out["ok"]:
            out["error"] = (f"the leader {leader} cannot publish: its RabbitMQ connection "
                            f"has not worked for {for_s:.0f} s; jobs wait pending")
        return out

    def handover_to(self, candidates, own_skew_ms: int) -> tuple | None:
        """Rules 2 and 3: (whom this leader should hand leadership to now, why), or
        None. candidates: caught-up data voters, best first."""
        now = self.clock()
        if abs(own_skew_ms) > self.max_skew_ms:
            why, pause = "clock", RETRY_S
        elif self.bound_s > 0 and self.own_ok is False \
                and now - self._own_since >= self.bound_s:
            why, pause = "broker", self.bound_s
        else:
            return None
        if now - self._tried < pause:
            return None
        for name in candidates:
            s = self.said(name)
            if s is not None and s[0] and abs(s[2]) <= self.max_skew_ms:
                self._tried = now
                self.handovers[why] += 1
                return name, why
        return None
