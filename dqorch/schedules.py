"""Periodic schedules (issue 29): what a schedule says (every N, or a cron spec in a
time zone), its ticks, and the leader's plan for the ticks that are due. A run is a
job whose id is the schedule's id and the tick's time, ISO-8601 UTC:
`nightly@2026-12-07T02:30:00Z`.

Rule 1: apply (state.py) never computes a tick. The leader computes them here and puts
them in the command (`fire`: the runs and the next tick): a cron spec in a zone reads
the machine's time zone database, which the replicas need not share.
Rule 2: a tick fires once. A fire names the schedule's revision it was planned from
(`rev`, +1 on every change of the schedule); apply takes it only while that is still
the revision, so of two leaders' plans of one tick, one lands. And a run's job id is
its tick's: a run registered twice is one job.
Rule 3: what is due when the leader looks: every tick from the schedule's next one to
now. Those older than catchup_window are skipped and counted (the cluster was down,
or had no leader); the others run as the overlap policy says: `skip` runs one and
skips the rest while a run of the schedule is not finished, `buffer_one` keeps one
waiting for it and skips the rest, `allow_all` runs them all.

Pure but for the clock it is given and the zone database it reads (zoneinfo).
"""
from __future__ import annotations

import datetime
import re
import zoneinfo

from cronsim import CronSim, CronSimError

from . import jobs, parse
from .errors import ApiError, bad

OVERLAP = ("skip", "buffer_one", "allow_all")
DEFAULT_CATCHUP_S = 60
MAX_EVERY_S = 366 * 86400
MAX_CATCHUP_S = 366 * 86400
MAX_BACKFILL = 1000            # runs one backfill may start
MAX_SCAN = 100_000             # ticks one plan walks (a cron spec a minute: ten weeks)
MAX_SCHEDULE_ID = 200          # the run's id adds "@" and the time (CONTRACT: 256)
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, None: 1000, "m": 60_000, "min": 60_000, "h": 3_600_000,
            "d": 86_400_000}


# What a schedule says ######################################################

def parse_spec(sid: str, body: dict, *, register_kw: dict) -> dict:
    """PUT /api/schedules/{id}: the schedule's spec, or ApiError (400) naming the
    field. register_kw: parse.register's keyword arguments (the node's defaults)."""
    parse.job_id(sid, "id")
    if len(sid) > MAX_SCHEDULE_ID or "@" in sid:
        raise bad("id", f"a schedule id is 1-{MAX_SCHEDULE_ID} characters without '@' "
                        f"(its runs are named id@time)")
    every, cron = body.get("every"), body.get("cron")
    if (every is None) == (cron is None):
        raise bad("every", "give every (\"30s\", \"5m\", seconds) or cron "
                           "(\"*/5 * * * *\"), one of them")
    spec: dict = {}
    if every is not None:
        spec["every_ms"] = every_ms(every)
        if body.get("timezone") not in (None, "UTC"):
            raise bad("timezone", "applies to cron only; every counts from the epoch")
        spec["timezone"] = "UTC"
    else:
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise bad("cron", "must be five fields: minute hour day-of-month month "
                              "day-of-week")
        spec["cron"] = " ".join(cron.split())
        spec["timezone"] = zone_name(body.get("timezone", "UTC"))
        try:
            CronSim(spec["cron"], datetime.datetime.now(datetime.timezone.utc))
        except (CronSimError, ValueError) as e:
            raise bad("cron", f"{e or 'cannot be read'}: {cron[:60]!r}")
    job = body.get("job", {})
    if not isinstance(job, dict):
        raise bad("job", "must be a register body (an object) without id")
    for key in ("id", "jobId", "job_id", "run_at", "runAt", "delay"):
        if job.get(key) is not None:
            raise bad("job", f"must not have {key}: each run's id is the schedule's id "
                             f"and its time")
    try:
        cmd = parse.register(dict(job, id="x"), new_id=None, **register_kw)
    except ApiError as e:
        raise ApiError(e.status, e.code, f"job: {e.message}", "job")
    spec["job"] = cmd["job"]
    overlap = body.get("overlap", "skip")
    if overlap not in OVERLAP:
        raise bad("overlap", f"must be one of {', '.join(OVERLAP)}")
    spec["overlap"] = overlap
    window = body.get("catchup_window", DEFAULT_CATCHUP_S)
    if isinstance(window, bool) or not isinstance(window, (int, float)) \
            or not 0 <= window <= MAX_CATCHUP_S:
        raise bad("catchup_window", f"must be seconds from 0 to {MAX_CATCHUP_S}")
    spec["catchup_window_ms"] = round(window * 1000)
    paused = body.get("paused", False)
    if not isinstance(paused, bool):
        raise bad("paused", "must be true or false")
    spec["paused"] = paused
    return spec


def every_ms(v) -> int:
    """"30s", "5m", "1.5h", "2d", "500ms", or a number of seconds."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise bad("every", "must be a duration (\"30s\", \"5m\", \"1h\") or seconds")
    if isinstance(v, str):
        m = _EVERY.match(v)
        if m is None:
            raise bad("every", f"must be a duration like 30s, 5m, 1h, 1d; got {v[:40]!r}")
        ms = round(float(m.group(1)) * _UNIT_MS[m.group(2)])
    else:
        ms = round(v * 1000)
    if not 1000 <= ms <= MAX_EVERY_S * 1000:
        raise bad("every", f"must be from 1 s to {MAX_EVERY_S // 86400} days")
    return ms


def zone_name(v) -> str:
    if not isinstance(v, str) or not v or len(v) > 64:
        raise bad("timezone", "must be an IANA zone name (Europe/Rome, UTC)")
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise bad("timezone", f"unknown time zone {v[:64]!r}; an IANA name (Europe/Rome)")
    return v


# Ticks #####################################################################

def _dt(ms: int, zone: str) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, zoneinfo.ZoneInfo(zone))


def ticks_after(spec: dict, after_ms: int):
    """The ticks strictly after after_ms, in order (ms since the epoch), for ever."""
    every = spec.get("every_ms")
    if every is not None:
        t = (after_ms // every + 1) * every        # aligned to the epoch
        while True:
            yield t
            t += every
    # cronsim starts after the minute the time is in.
    for dt in CronSim(spec["cron"], _dt(after_ms, spec["timezone"])):
        t = round(dt.timestamp() * 1000)
        if t > after_ms:
            yield t


def next_tick(spec: dict, after_ms: int) -> int:
    return next(ticks_after(spec, after_ms))


def next_ticks(spec: dict, after_ms: int, n: int) -> list:
    out = []
    for t in ticks_after(spec, after_ms):
        if len(out) == n:
            break
        out.append(t)
    return out


# The leader's plan ##########################################################

def active(sched: dict, job_status) -> bool:
    """A run of the schedule is not finished (job_status(id): its status or None)."""
    return any(job_status(j) not in (None, *jobs.TERMINAL) for _, j in sched["last_runs"])


def plan(sched: dict, now_ms: int, job_status) -> dict | None:
    """The fire command for what is due now (Rule 3), or None."""
    spec = sched["spec"]
    if spec["paused"] or sched["next_at"] > now_ms and sched.get("buffered") is None:
        return None
    busy = active(sched, job_status)
    runs, buffered = [], sched.get("buffered")
    if buffered is not None and not busy:
        runs.append(buffered)
        buffered, busy = None, True
    late = overlap = 0
    nxt = sched["next_at"]
    if nxt <= now_ms:
        start = now_ms - spec["catchup_window_ms"]
        every = spec.get("every_ms")
        if every is not None and nxt < start:      # skip the late ones by arithmetic
            late = -(-(start - nxt) // every)
            nxt += late * every
        walked = 0
        for t in ticks_after(spec, nxt - 1):
            if t > now_ms or walked >= MAX_SCAN:
                nxt = t if t > now_ms else next_tick(spec, now_ms)
                break
            walked += 1
            if t < start:
                late += 1
            elif spec["overlap"] == "allow_all" or not busy:
                runs.append(t)
                busy = True
            elif spec["overlap"] == "buffer_one" and buffered is None:
                buffered = t
            else:
                overlap += 1
    elif not runs:
        return None
    return {"op": "fire", "id": sched["id"], "rev": sched["rev"], "runs": runs,
            "next_at": nxt, "buffered": buffered, "skipped_late": late,
            "skipped_overlap": overlap}


def backfill(sched: dict, from_ms: int, to_ms: int) -> dict:
    """POST /api/schedules/{id}/backfill: a run for every tick in [from, to), whatever
    the overlap policy (a job that exists already is not run again)."""
    if to_ms <= from_ms:
        raise bad("to", "must be after from")
    runs = []
    for t in ticks_after(sched["spec"], from_ms - 1):
        if t >= to_ms:
            break
        if len(runs) == MAX_BACKFILL:
            raise bad("to", f"more than {MAX_BACKFILL} runs in that range; backfill it "
                            f"in parts")
        runs.append(t)
    return {"op": "fire", "id": sched["id"], "rev": sched["rev"], "runs": runs,
            "next_at": sched["next_at"], "buffered": sched.get("buffered"),
            "skipped_late": 0, "skipped_overlap": 0, "manual": "backfill"}


def trigger(sched: dict, now_ms: int) -> dict:
    """POST /api/schedules/{id}/trigger: one run now, whatever the policy."""
    return {"op": "fire", "id": sched["id"], "rev": sched["rev"], "runs": [now_ms],
            "next_at": sched["next_at"], "buffered": sched.get("buffered"),
            "skipped_late": 0, "skipped_overlap": 0, "manual": "trigger"}


def view(sched: dict, now_ms: int, job_status) -> dict:
    """GET /api/schedules/{id}: the schedule, its next runs, its last runs."""
    spec = sched["spec"]
    out = {"id": sched["id"]}
    if "every_ms" in spec:
        out["every"] = f"{spec['every_ms'] / 1000:g}s"
    else:
        out["cron"] = spec["cron"]
    out.update(timezone=spec["timezone"], overlap=spec["overlap"],
               catchup_window=spec["catchup_window_ms"] / 1000, paused=spec["paused"],
               job=spec["job"], created_at=sched["created_at"],
               updated_at=sched["updated_at"])
    out["next_runs"] = [] if spec["paused"] else [
        jobs.iso_ms(t) for t in [sched["next_at"]] +
        next_ticks(spec, max(sched["next_at"], now_ms), 4)]
    out["last_runs"] = [{"job_id": j, "scheduled_for": jobs.iso_ms(t),
                         "status": job_status(j)} for t, j in reversed(sched["last_runs"])]
    out["buffered"] = None if sched.get("buffered") is None else jobs.iso_ms(sched["buffered"])
    out.update({k: sched[k] for k in ("fired", "skipped_late", "skipped_overlap")})
    return out
