"""RabbitMQ's own count of each job queue's ready messages and consumers: a passive
queue.declare per queue on a short connection of its own (no management plugin). Never
on the publishing channel: a queue that is gone answers 404, which closes the channel
it was asked on. Read at most once per TTL_S, one read at a time.

AMQP's declare-ok carries the ready messages and the consumers, not the unacknowledged
ones: those need the management plugin's HTTP API, which we do not require (docs/API.md,
Queues)."""
from __future__ import annotations

import logging
import time

import gevent.lock
import pika
import pika.exceptions

from .jobs import QUEUES

log = logging.getLogger(__name__)

TTL_S = 2.0
TIMEOUT_S = 3.0


class QueueDepths:
    """params(): the broker's pika.ConnectionParameters (broker.Broker.params)."""

    def __init__(self, params, clock=time.monotonic) -> None:
        self._params = params
        self._clock = clock
        self._lock = gevent.lock.Semaphore()
        self._at = -TTL_S
        self._last: dict = {}

    def get(self) -> dict:
        """{queue: {"messages_ready", "consumers"}}, or {"error": why} when RabbitMQ
        could not be asked; at most TTL_S old."""
        with self._lock:
            if self._clock() - self._at >= TTL_S:
                self._last = self._read()
                self._at = self._clock()
            return self._last

    def _read(self) -> dict:
        params = self._params()
        params.blocked_connection_timeout = TIMEOUT_S
        params.socket_timeout = TIMEOUT_S
        params.stack_timeout = TIMEOUT_S
        params.client_properties = {"connection_name": "dqorch-depths"}
        out: dict = {}
        conn = None
        try:
            conn = pika.BlockingConnection(params)
            for queue in QUEUES:
                ch = conn.channel()
                try:
                    ok = ch.queue_declare(queue, passive=True).method
                    out[queue] = {"messages_ready": ok.message_count,
                                  "consumers": ok.consumer_count}
                    ch.close()
                except pika.exceptions.ChannelClosedByBroker as e:
                    out[queue] = {"error": f"{e.reply_code} {e.reply_text}"[:200]}
            return out
        except (pika.exceptions.AMQPError, OSError) as e:
            return {"error": f"RabbitMQ not asked: {type(e).__name__} {e}"[:200]}
        finally:
            if conn is not None and conn.is_open:
                try:
                    conn.close()
                except (pika.exceptions.AMQPError, OSError):
                    pass
