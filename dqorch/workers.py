"""The worker heartbeat table: soft state on the leader, rebuilt from the next
heartbeats after a restart (DESIGN §1), so it never enters the log.

A worker is `active` while its last heartbeat is younger than the timeout, then
`unresponsive` (CONTRACT §2.4). The clock is passed in.
"""
from __future__ import annotations

import bisect
import logging

log = logging.getLogger(__name__)

ACTIVE, UNRESPONSIVE = "active", "unresponsive"
FORGET_AFTER_S = 3600    # an unresponsive worker is dropped from the table after this
# Most workers held. Heartbeats under ever new ids (a fuzzer, a bug, an attacker) grew
# the table for an hour each; past this the longest silent one is dropped (a real
# worker reappears with its next heartbeat; an unknown worker is never expired).
MAX_WORKERS = 10_000


class WorkerTable:
    def __init__(self, timeout_s: float, now_ms, max_workers: int = MAX_WORKERS) -> None:
        self.timeout_ms = int(timeout_s * 1000)
        self.now_ms = now_ms
        self.max_workers = max_workers
        # Ordered by last heartbeat received (each one moves its worker to the end).
        self.workers: dict[str, dict] = {}
        self._unresponsive: set[str] = set()
        self.dropped = 0                  # workers dropped for room (a metric)
        self._ids: list[str] | None = None   # sorted worker ids; None: to be sorted again

    def heartbeat(self, w: dict) -> bool:
        """Record a parsed heartbeat (parse.heartbeat). Returns True for a new worker."""
        now = self.now_ms()
        old = self.workers.pop(w["worker_id"], None)
        if old is None and len(self.workers) >= self.max_workers:
            self._drop_oldest()
        rec = dict(w, last_heartbeat=now,
                   first_seen=old["first_seen"] if old else now,
                   heartbeats=(old["heartbeats"] + 1) if old else 1)
        self.workers[w["worker_id"]] = rec
        if old is None:
            self._ids = None
        if w["worker_id"] in self._unresponsive:
            self._unresponsive.discard(w["worker_id"])
            log.info("worker back worker=%s", w["worker_id"])
        elif old is None:
            log.info("worker joined worker=%s type=%s", w["worker_id"], w["worker_type"])
        return old is None

    def _drop_oldest(self) -> None:
        wid = next(iter(self.workers))
        del self.workers[wid]
        self._ids = None
        self._unresponsive.discard(wid)
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("worker table full max_workers=%d; dropped the longest silent "
                        "worker=%s (dropped so far: %d)", self.max_workers, wid, self.dropped)

    def fresh_since(self, mark_ms: int) -> list[dict]:
        """Heartbeats received here after mark_ms, with their age instead of a time
        (a follower passes them to the leader: ages, so clocks need not agree)."""
        now = self.now_ms()
        return [dict({k: v for k, v in rec.items()
                      if k not in ("last_heartbeat", "first_seen", "heartbeats")},
                     age_ms=now - rec["last_heartbeat"])
                for rec in self.workers.values() if rec["last_heartbeat"] > mark_ms]

    def merge(self, w: dict) -> None:
        """A heartbeat another node received, `age_ms` old: kept when it is fresher
        than what this table has (the leader keeps the freshest of every node's)."""
        at = self.now_ms() - max(0, int(w["age_ms"]))
        old = self.workers.get(w["worker_id"])
        if old is not None and old["last_heartbeat"] >= at:
            return
        w = {k: v for k, v in w.items() if k != "age_ms"}
        self.heartbeat(w)
        self.workers[w["worker_id"]]["last_heartbeat"] = at

    def is_unresponsive(self, worker_id: str) -> bool:
        """False for a worker never seen: after a restart the table is empty until
        the next heartbeats, and silence we never observed proves nothing."""
        rec = self.workers.get(worker_id)
        return rec is not None and self.status_of(rec, self.now_ms()) == UNRESPONSIVE

    def status_of(self, rec: dict, now: int) -> str:
        return ACTIVE if now - rec["last_heartbeat"] <= self.timeout_ms else UNRESPONSIVE

    def check(self) -> list[str]:
        """Workers that became unresponsive since the last check (sorted ids). Workers
        silent for FORGET_AFTER_S (or 10 timeouts, if longer) are forgotten, so that a
        worker taken out of service on purpose does not stay `unresponsive` forever."""
        now = self.now_ms()
        forget_ms = max(FORGET_AFTER_S * 1000, 10 * self.timeout_ms)
        for wid in [w for w, rec in self.workers.items()
                    if now - rec["last_heartbeat"] > forget_ms]:
            del self.workers[wid]
            self._ids = None
            self._unresponsive.discard(wid)
            log.info("worker forgotten worker=%s", wid)
        gone = sorted(wid for wid, rec in self.workers.items()
                      if wid not in self._unresponsive and self.status_of(rec, now) == UNRESPONSIVE)
        for wid in gone:
            self._unresponsive.add(wid)
            log.warning("worker unresponsive worker=%s silent_ms=%d", wid,
                        now - self.workers[wid]["last_heartbeat"])
        return gone

    def listing(self, running: dict) -> list[dict]:
        """Every worker, by id. running: {worker: jobs running there}
        (state.running_counts)."""
        return self.page(running, len(self.workers) or 1)[0]

    def page(self, running: dict, limit: int, after: str | None = None):
        """(workers, count, last): the first `limit` workers whose id sorts after
        `after` (all when None), by id; how many workers there are; and the id of the
        last one returned when more follow, else None. The sorted ids are kept until
        a worker joins or leaves, so a page costs its own size plus a bisection."""
        if self._ids is None:
            self._ids = sorted(self.workers)
        ids = self._ids
        start = 0 if after is None else bisect.bisect_right(ids, after)
        chosen = ids[start:start + limit]
        now = self.now_ms()
        out = []
        for wid in chosen:
            rec = self.workers[wid]
            out.append({
                "worker_id": wid, "worker_type": rec["worker_type"],
                "status": self.status_of(rec, now), "capacity": rec["capacity"],
                "current_load": rec["current_load"],
                "running_jobs": running.get(wid, 0),
                "last_heartbeat": rec["last_heartbeat"], "first_seen": rec["first_seen"],
                "heartbeats": rec["heartbeats"], "stats": rec["stats"],
            })
        more = start + limit < len(ids)
        return out, len(ids), (chosen[-1] if more and chosen else None)

    def counts(self) -> dict:
        now = self.now_ms()
        active = sum(1 for rec in self.workers.values() if self.status_of(rec, now) == ACTIVE)
        return {"total": len(self.workers), "active": active,
                "unresponsive": len(self.workers) - active}
