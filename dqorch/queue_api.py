"""Flow control's routes (docs/API.md, Queues and Limits): each job queue's state, our
jobs in it by status and RabbitMQ's own counts; pause and resume publishing to it; and
limits per job type. Each change is a command in the log, so every member and every
next leader knows (dispatch.py Rules 6 and 7)."""
from __future__ import annotations

import math

from . import jobs, parse
from .errors import ApiError, bad

MAX_CONCURRENCY = 1_000_000
MAX_RATE = 1_000_000


def parse_limit(body: dict) -> dict:
    """PUT /api/limits/{type}: {"concurrency": n or null, "rate": per second or null},
    at least one of them."""
    c, rate = body.get("concurrency"), body.get("rate")
    if c is not None and (isinstance(c, bool) or not isinstance(c, int)
                          or not 1 <= c <= MAX_CONCURRENCY):
        raise bad("concurrency", f"must be an integer 1-{MAX_CONCURRENCY} or null")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not math.isfinite(rate) or not 0 < rate <= MAX_RATE):
        raise bad("rate", f"must be a number of jobs a second, above 0 and at most "
                          f"{MAX_RATE}, or null")
    if c is None and rate is None:
        raise bad("concurrency", "give concurrency, rate or both (DELETE removes a limit)")
    return {"concurrency": c, "rate": rate}


def add_routes(app, svc, *, writes, body, drain, leader_view, max_body_bytes: int) -> None:
    """writes, leader_view: api.py's decorators (a follower forwards the request to
    the leader: it proposes, or it reads what the leader knows: RabbitMQ's counts).
    drain(): read and ignore a body that may be absent."""

    def known(queue: str) -> str:
        if queue not in jobs.QUEUES:
            raise ApiError(404, "not_found", f"no job queue {queue!r}; the queues are "
                           f"{', '.join(jobs.QUEUES)}")
        return queue

    def view(queue: str, rabbit) -> dict:
        st = svc.state()
        paused = st.paused_queues.get(queue)
        if isinstance(rabbit, dict) and "error" not in rabbit:
            rabbit = rabbit.get(queue)
        return {"queue": queue, "paused": paused is not None,
                "paused_at": paused, "jobs": dict(st.queue_counts[queue]),
                "rabbitmq": rabbit}

    @app.get("/api/queues")
    @leader_view
    def list_queues():
        rabbit = svc.queue_depths()
        return {"queues": [view(q, rabbit) for q in jobs.QUEUES],
                "timestamp": svc.now_ms()}

    def pause(queue: str, paused: bool) -> dict:
        drain()
        svc.raft.propose({"op": "queue_pause", "queue": known(queue), "paused": paused})
        return view(queue, None)

    @app.post("/api/queues/<queue>/pause")
    @writes(max_body_bytes, required=False)
    def pause_queue(queue):
        return pause(queue, True)

    @app.post("/api/queues/<queue>/resume")
    @writes(max_body_bytes, required=False)
    def resume_queue(queue):
        return pause(queue, False)

    def limit_view(type_: str, limit: dict) -> dict:
        counts = svc.state().pair_counts.get(("type", type_), {})
        return {"type": type_, "concurrency": limit["concurrency"], "rate": limit["rate"],
                "updated_at": limit["updated_at"],
                "active": counts.get("queued", 0) + counts.get("running", 0),
                "pending": counts.get("pending", 0)}

    @app.get("/api/limits")
    def list_limits():
        st = svc.state()
        return {"limits": [limit_view(t, lim) for t, lim in sorted(st.limits.items())]}

    @app.put("/api/limits/<job_type>")
    @writes(max_body_bytes)
    def put_limit(job_type):
        parse.client_name(job_type, "type", parse.MAX_TYPE_CHARS)
        limit = parse_limit(body())
        out = svc.raft.propose(dict(limit, op="limit_put", type=job_type))
        return (201 if out["outcome"] == "created" else 200), limit_view(job_type,
                                                                           out["limit"])

    @app.delete("/api/limits/<job_type>")
    @writes(max_body_bytes, required=False)
    def delete_limit(job_type):
        drain()
        if svc.raft.propose({"op": "limit_delete", "type": job_type})["outcome"] == \
                "not_found":
            raise ApiError(404, "not_found", f"no limit for type {job_type!r}")
        return {"status": "deleted", "type": job_type}
