"""The schedules' routes (docs/API.md, Schedules): a resource of their own, held by the
cluster like jobs. Every change is a command in the log; the times a command carries
(the first tick, the next after a resume) are computed here, on the leader
(schedules.py Rule 1)."""
from __future__ import annotations

from . import parse, schedules
from .errors import ApiError, bad


def add_routes(app, svc, *, writes, body, drain, register_kw, max_body_bytes: int) -> None:
    """writes: api.py's decorator for routes that propose (forwarded by a follower).
    body(): the request's JSON object; drain(): read and ignore a body that may be
    absent. register_kw(): parse.register's defaults."""

    def status_of(id_):
        job = svc.state().jobs.get(id_)
        return None if job is None else job.status

    def existing(schedule_id: str) -> dict:
        sched = svc.state().schedules.get(schedule_id)
        if sched is None:
            raise ApiError(404, "not_found", f"no schedule {schedule_id!r}")
        return sched

    def shown(sched: dict) -> dict:
        return schedules.view(sched, svc.now_ms(), status_of)

    def fire(cmd: dict, what: str) -> dict:
        out = svc.raft.propose(cmd)
        if out["outcome"] == "stale":
            raise ApiError(409, "conflict", f"schedule {cmd['id']!r} changed while it was "
                           f"being {what}; retry")
        return out

    @app.get("/api/schedules")
    def list_schedules():
        st = svc.state()
        return {"schedules": [shown(s) for _, s in sorted(st.schedules.items())],
                "count": len(st.schedules)}

    @app.get("/api/schedules/<schedule_id>")
    def get_schedule(schedule_id):
        return shown(existing(schedule_id))

    @app.put("/api/schedules/<schedule_id>")
    @writes(max_body_bytes)
    def put_schedule(schedule_id):
        spec = schedules.parse_spec(schedule_id, body(), register_kw=register_kw())
        out = svc.raft.propose({"op": "schedule_put", "id": schedule_id, "spec": spec,
                                "next_at": schedules.next_tick(spec, svc.now_ms())})
        return (201 if out["outcome"] == "created" else 200), shown(out["schedule"])

    @app.delete("/api/schedules/<schedule_id>")
    @writes(max_body_bytes, required=False)
    def delete_schedule(schedule_id):
        drain()
        existing(schedule_id)
        out = svc.raft.propose({"op": "schedule_delete", "id": schedule_id})
        if out["outcome"] == "not_found":
            raise ApiError(404, "not_found", f"no schedule {schedule_id!r}")
        return {"status": "deleted", "id": schedule_id}

    def pause(schedule_id, paused: bool):
        sched = existing(schedule_id)
        out = svc.raft.propose({"op": "schedule_pause", "id": schedule_id, "paused": paused,
                                "next_at": schedules.next_tick(sched["spec"], svc.now_ms())})
        if out["outcome"] == "not_found":
            raise ApiError(404, "not_found", f"no schedule {schedule_id!r}")
        return shown(out["schedule"])

    @app.post("/api/schedules/<schedule_id>/pause")
    @writes(max_body_bytes, required=False)
    def pause_schedule(schedule_id):
        drain()
        return pause(schedule_id, True)

    @app.post("/api/schedules/<schedule_id>/resume")
    @writes(max_body_bytes, required=False)
    def resume_schedule(schedule_id):
        drain()
        return pause(schedule_id, False)

    @app.post("/api/schedules/<schedule_id>/trigger")
    @writes(max_body_bytes, required=False)
    def trigger_schedule(schedule_id):
        drain()
        out = fire(schedules.trigger(existing(schedule_id), svc.now_ms()), "triggered")
        return 202, {"status": "accepted", "job_ids": out["created"]}

    @app.post("/api/schedules/<schedule_id>/backfill")
    @writes(max_body_bytes)
    def backfill_schedule(schedule_id):
        b = body()
        span = []
        for k in ("from", "to"):
            if b.get(k) is None:
                raise bad(k, "is required: ms since the epoch or an ISO-8601 time with a "
                             "zone")
            span.append(parse.time_ms(b[k], k))
        cmd = schedules.backfill(existing(schedule_id), *span)
        out = fire(cmd, "backfilled")
        return 202, {"status": "accepted", "job_ids": out["created"],
                     "existing": len(cmd["runs"]) - len(out["created"])}
