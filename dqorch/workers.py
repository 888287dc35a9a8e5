"""The worker heartbeat table: soft state on the leader, rebuilt from the next
heartbeats after a restart (DESIGN §1), so it never enters the log.

A worker is `active` while its last heartbeat is younger than the timeout, then
`unresponsive` (CONTRACT §2.4), or `stopped` when it went silent after saying it was
idle (its last heartbeat had load 0), the node records no job running on it, and it
was not given up while it held jobs (`lost_with_jobs`: the leader's timers expired it
with jobs running there, which then moved away): a planned scale-down, not a loss.
The clock is passed in.
"""
from __future__ import annotations

import bisect
import logging

log = logging.getLogger(__name__)

ACTIVE, UNRESPONSIVE, STOPPED = "active", "unresponsive", "stopped"
LOAD_HISTORY_MAX = 60    # (at, load) of the last heartbeats a worker keeps: ~10 min
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

    def heartbeat(self, w: dict, at: int | None = None) -> bool:
        """Record a parsed heartbeat (parse.heartbeat), received now (or at `at`, ms).
        Returns True for a new worker."""
        now = self.now_ms() if at is None else at
        old = self.workers.pop(w["worker_id"], None)
        if old is None and len(self.workers) >= self.max_workers:
            self._drop_oldest()
        loads = old["load_history"][-(LOAD_HISTORY_MAX - 1):] if old else []
        loads.append((now, w["current_load"]))
        rec = dict(w, last_heartbeat=now,
                   first_seen=old["first_seen"] if old else now,
                   heartbeats=(old["heartbeats"] + 1) if old else 1, load_history=loads)
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
                      if k not in ("last_heartbeat", "first_seen", "heartbeats",
                                   "load_history")},
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
        self.heartbeat(w, at)

    def is_unresponsive(self, worker_id: str) -> bool:
        """False for a worker never seen: after a restart the table is empty until
        the next heartbeats, and silence we never observed proves nothing."""
        rec = self.workers.get(worker_id)
        return rec is not None and self._silent(rec, self.now_ms())

    def _silent(self, rec: dict, now: int) -> bool:
        """No heartbeat for the timeout: stopped or unresponsive."""
        return now - rec["last_heartbeat"] > self.timeout_ms

    def status_of(self, rec: dict, now: int, running: int = 0) -> str:
        """running: jobs the node records running on it (state.running_counts)."""
        if not self._silent(rec, now):
            return ACTIVE
        return STOPPED if rec["current_load"] == 0 and running == 0 \
            and not rec.get("lost_jobs") else UNRESPONSIVE

    def lost_with_jobs(self, worker_id: str) -> None:
        """The leader gave up the jobs running on this silent worker: it was lost,
        not stopped, until its next heartbeat (which makes a new record)."""
        rec = self.workers.get(worker_id)
        if rec is not None:
            rec["lost_jobs"] = True

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
                      if wid not in self._unresponsive and self._silent(rec, now))
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
        out = [self._view(wid, now, running.get(wid, 0)) for wid in chosen]
        more = start + limit < len(ids)
        return out, len(ids), (chosen[-1] if more and chosen else None)

    def _view(self, wid: str, now: int, running: int) -> dict:
        rec = self.workers[wid]
        return {
            "worker_id": wid, "worker_type": rec["worker_type"],
            "status": self.status_of(rec, now, running), "capacity": rec["capacity"],
            "current_load": rec["current_load"], "running_jobs": running,
            "last_heartbeat": rec["last_heartbeat"], "first_seen": rec["first_seen"],
            "heartbeats": rec["heartbeats"], "stats": rec["stats"],
        }

    def detail(self, worker_id: str, running: int) -> dict | None:
        """GET /api/workers/{id}: the listing's fields plus `load_history`, the
        [at_ms, current_load] of its last LOAD_HISTORY_MAX heartbeats, oldest first.
        None for a worker this table does not hold."""
        if worker_id not in self.workers:
            return None
        out = self._view(worker_id, self.now_ms(), running)
        out["load_history"] = [list(p) for p in self.workers[worker_id]["load_history"]]
        return out

    def forget(self, worker_id: str) -> bool:
        """DELETE /api/workers/{id}: drop it now (its next heartbeat brings it back).
        False when it is not held."""
        if self.workers.pop(worker_id, None) is None:
            return False
        self._ids = None
        self._unresponsive.discard(worker_id)
        log.info("worker forgotten by request worker=%s", worker_id)
        return True

    def counts(self, running: dict | None = None) -> dict:
        """{total, active, unresponsive, stopped}. running: {worker: jobs running there}
        (state.running_counts); without it a silent worker that said load 0 counts as
        stopped."""
        now, running = self.now_ms(), running or {}
        out = {"total": len(self.workers), ACTIVE: 0, UNRESPONSIVE: 0, STOPPED: 0}
        for wid, rec in self.workers.items():
            out[self.status_of(rec, now, running.get(wid, 0))] += 1
        return out
