"""A worker that behaves like DistriQueue's Python worker (CONTRACT §1): consume
job.high -> job.medium -> job.low, post `running`, do the work, post `completed` (or
`failed`), ack, and heartbeat every `beat_s`. Run in a greenlet or as a process:

    python -m tests.integration.workersim HTTP_PORT RABBIT_PORT WORKER_ID [WORK_S [ack-early]]
"""
from __future__ import annotations

import json
import sys
import time

import gevent
import pika

JOB_QUEUES = ("job.high", "job.medium", "job.low")


def run(http_port: int, rabbit_port: int, worker_id: str, stop=lambda: False,
        work_s: float = 0.0, beat_s: float = 0.5, outcome=lambda job: "completed",
        handled: list | None = None, ack_early: bool = False) -> None:
    """ack_early: ack on receipt (auto-ack consumers do), so a killed worker's job is
    not redelivered by RabbitMQ and only the orchestrator's retry runs it again."""
    from .conftest import Client
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", rabbit_port))
    ch = conn.channel()
    client = Client(http_port)

    def post(path, body, ok=(200,)):
        # The Python worker fails a heartbeat on anything but 200, a report on
        # anything but 200/202.
        status, out = client.call("POST", path, body)
        if status not in ok:
            raise AssertionError(f"POST {path} -> {status} {out}")

    last_beat = 0.0
    try:
        while not stop():
            if time.monotonic() - last_beat > beat_s:
                post("/api/workers/heartbeat", {
                    "workerId": worker_id, "workerType": "python", "capacity": 1})
                last_beat = time.monotonic()
            for q in JOB_QUEUES:
                method, props, body = ch.basic_get(q, auto_ack=False)
                if method is not None:
                    break
            else:
                gevent.sleep(0.02)
                continue
            job = json.loads(body)
            if ack_early:
                ch.basic_ack(method.delivery_tag)
            post("/api/jobs/status", {"jobId": job["id"], "status": "running",
                                      "workerId": worker_id}, (200, 202))
            deadline = time.monotonic() + work_s
            while time.monotonic() < deadline:         # keep heartbeating while working
                if time.monotonic() - last_beat > beat_s:
                    post("/api/workers/heartbeat", {"workerId": worker_id})
                    last_beat = time.monotonic()
                gevent.sleep(0.05)
            status = outcome(job)
            post("/api/jobs/status", {"jobId": job["id"], "status": status,
                                      "workerId": worker_id, "result": {"n": job["id"]},
                                      "errorMessage": "simulated failure"
                                      if status == "failed" else None}, (200, 202))
            if not ack_early:
                ch.basic_ack(method.delivery_tag)
            if handled is not None:
                handled.append((job["id"], props.headers.get("x-dq-attempt")))
    finally:
        client.close()
        try:
            conn.close()
        except Exception:
            pass


if __name__ == "__main__":
    from gevent import monkey
    monkey.patch_all()
    run(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
        work_s=float(sys.argv[4]) if len(sys.argv) > 4 else 0.0,
        ack_early=len(sys.argv) > 5 and sys.argv[5] == "ack-early")
