"""The job queues' routes (docs/API.md, Queues): each queue's state, our jobs in it by
status and RabbitMQ's own counts; pause and resume publishing to it (a command in the
log, so every member and every next leader knows: dispatch.py Rule 6)."""
from __future__ import annotations

from . import jobs
from .errors import ApiError


def add_routes(app, svc, *, writes, drain, leader_view, max_body_bytes: int) -> None:
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
