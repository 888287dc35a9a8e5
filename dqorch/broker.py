"""The one publishing connection to RabbitMQ (pika's GeventConnection, callback style).

Owns: connecting, declaring the topology of CONTRACT.md §3 on every (re)connect,
publisher confirms with a bounded window of unconfirmed messages, mapping confirms and
returns back to the caller's tokens, and reconnecting with capped exponential backoff.
Must not: decide what to publish or republish (dispatch.py does), block inside pika's
callbacks (they run in the gevent hub), or call ``ioloop.close()`` (it destroys
gevent's loop).
"""

import collections
import logging
import os
import time

import gevent
import gevent.event
import pika
import pika.exceptions
from pika.adapters.gevent_connection import GeventConnection, _GeventSelectorIOLoop
from pika.adapters.utils import io_services_utils

from . import amqp, jobs

log = logging.getLogger(__name__)

JOBS_EXCHANGE = "jobs.exchange"
STATUS_EXCHANGE = "status.exchange"

# Declaring the topology has no timeout of its own in pika (stack_timeout covers only
# TCP + AMQP handshake); a broker that accepts the connection and then never answers a
# declare would otherwise hold us "connecting" forever.
SETUP_TIMEOUT_S = 30.0
# Messages in flight and no ack or nack for this long: the channel is wedged (seen
# twice under load, never reproduced). Reconnect; what was in flight is handed back
# as connection_lost and published again (at-least-once).
CONFIRM_TIMEOUT_S = 30.0
# The oldest message in flight has waited this long for its confirm: GET /api/health says
# degraded ("confirms overdue"), although the connection is up. RabbitMQ confirms within
# milliseconds, a few hundred under heavy disk load; a broker that is stopped (SIGSTOP, a
# paused VM, a path that drops packets without a reset) answers nothing, and the
# connection still looks up until the AMQP heartbeat or CONFIRM_TIMEOUT_S gives up on it.
CONFIRM_OVERDUE_S = 5.0
# Connect failures repeat every few seconds while the broker is down: one warning on the
# first failure after a state change, then "still down" at most this often.
FAILURE_WARN_EVERY_S = 30.0
MAX_ERROR_CHARS = 200



def _faster_io(transport_cls) -> None:
    """Three changes to how pika's plaintext transport sends and reads (TLS keeps
    pika's own):
    - pika hands each frame to its transport separately and sent each with its own
      send(): three syscalls per message, about a tenth of the node's CPU under load
      (py-spy). What is buffered is joined into one send.
    - write() on an empty buffer only turned the writability watcher on, and the
      send came on the next turn of the loop (an epoll_ctl on and one off, pika's
      writable handler and its debug lines: per publish at one connection). It now
      sends at once; only what the socket did not take waits for the watcher, and an
      error is left for pika's own path to meet and handle.
    - on a readable socket pika called recv() until it raised EAGAIN: a syscall and
      a BlockingIOError (with a debug line) per read, about one a register. It now
      reads again only when a read filled its buffer; the watcher is level-triggered,
      so anything left wakes it again."""
    produce, write = transport_cls._produce, transport_cls.write
    if getattr(produce, "_dq", False):
        return

    def _consume(self):
        consumed = 0
        while self._state == self._STATE_ACTIVE and consumed < self._MAX_CONSUME_BYTES:
            data = self._sigint_safe_recv(self._sock, self._MAX_RECV_BYTES)
            if not data:
                raise self.RxEndOfFile()
            consumed += len(data)
            self._protocol.data_received(data)
            if len(data) < self._MAX_RECV_BYTES:
                return

    def _produce(self):
        bufs = self._tx_buffers
        if len(bufs) > 1:
            joined = b"".join(bufs)
            bufs.clear()
            bufs.append(joined)
        produce(self)

    def _write(self, data):
        if data and not self._tx_buffers and self._state == self._STATE_ACTIVE:
            try:
                sent = self._sock.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        write(self, data)
    _produce._dq = _write._dq = True
    transport_cls._produce, transport_cls.write = _produce, _write
    transport_cls._consume = _consume


_faster_io(io_services_utils._AsyncPlaintextTransport)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Pending:
    """One published, not yet settled message. Tags are consecutive per channel."""

    __slots__ = ("tag", "token", "message_id", "at", "returned", "done")

    def __init__(self, tag, token, message_id, at):
        self.tag = tag
        self.token = token
        self.message_id = message_id
        self.at = at            # time.monotonic() of the publish
        self.returned = False   # a basic.return arrived; its ack means "not routed"
        self.done = False       # acked/nacked out of order, still in the deque


def release_ioloop(loop) -> None:
    """Undo what pika's _GeventSelectorIOLoop.__init__ set up (a watcher and a pipe),
    without loop.close(), which destroys gevent's hub loop."""
    queue = loop._callback_queue
    try:
        loop.remove_handler(queue.fd)
    except KeyError:
        pass
    for fd in (queue._read_fd, queue._write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


class Broker:
    """The publishing connection.

    Call ``start``, ``stop``, ``publish``, ``wait_slot`` from greenlets (never from the
    hub). ``on_confirmed(tokens)``, ``on_rejected(tokens, reason)`` and
    ``on_state(connected)`` are called from the gevent hub, inside pika's callbacks:
    they must not block, sleep, do I/O or switch greenlets (append to a list and set a
    ``gevent.event.Event``, nothing more). An exception they raise is logged and
    swallowed so that pika's frame processing is not cut in half.

    Every token passed to a successful ``publish`` is handed back exactly once: in
    ``on_confirmed`` (the broker has the message, routed), or in ``on_rejected`` with
    reason ``"nack"`` (broker refused it), ``"returned"`` (mandatory and unroutable) or
    ``"connection_lost"`` (channel or connection closed before the confirm; the message
    may or may not have been queued, so republishing can duplicate it). Tokens within
    one callback are in publish order.
    """

    def __init__(self, host, port, username, password, vhost="/", *, ssl_options=None,
                 window=1000,
                 on_confirmed=lambda tokens: None,
                 on_rejected=lambda tokens, reason: None,
                 on_state=lambda connected: None,
                 backoff_initial_s=0.2, backoff_max_s=5.0, heartbeat_s=10):
        if window < 1:
            raise ValueError("window must be >= 1")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        self.host = host
        self.port = int(port)
        self.vhost = vhost
        self.window = int(window)
        self._password = password
        self._params = pika.ConnectionParameters(
            host=host, port=self.port, virtual_host=vhost,
            credentials=pika.PlainCredentials(username, password),
            heartbeat=heartbeat_s, connection_attempts=1, ssl_options=ssl_options,
            client_properties={"connection_name": "dqorch-publisher"})
        pika_log = logging.getLogger("pika")
        if pika_log.level == logging.NOTSET:
            # pika logs 7 ERROR lines per refused connect attempt; with the broker down
            # that is a flood every few seconds. We log the state changes ourselves, so
            # keep only pika's critical messages unless the caller set a level
            # (cli.setup_logging does, CRITICAL unless log_level is debug).
            pika_log.setLevel(logging.CRITICAL)
        self._on_confirmed = on_confirmed
        self._on_rejected = on_rejected
        self._on_state = on_state
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s

        self.connected = False
        self.disconnected_since_ms = _now_ms()
        self.last_error = None
        self.stats = dict.fromkeys(
            ("connects", "connect_failures", "published", "confirmed", "nacked",
             "returned", "lost", "confirm_stalls", "redeclares"), 0)
        self._last_confirm_at = 0.0    # monotonic time of the last ack/nack

        self._conn = None          # the current GeventConnection, or None
        self._out: list = []       # encoded messages of this pass, not yet written
        self._channel = None       # the current channel once it is open
        self._next_tag = 0         # delivery tag of the last publish on _channel
        self._pending = collections.deque()   # _Pending in tag order
        self._in_flight = 0        # entries in _pending with done False
        self._session_done = gevent.event.Event()   # current connection finished
        self._wake = gevent.event.Event()           # interrupts the backoff sleep
        self._slot = gevent.event.Event()           # connected and a free slot
        self._stopping = False
        self._greenlet = None
        self._ioloop = None
        self._session_error = None      # first cause seen for the current connection
        self._redeclaring = None        # the channel a redeclare() runs on, until done
        self._reached_connected = False
        self._failures_since_change = 0
        self._last_failure_warn = None  # monotonic s of the last connect-failure warning

    # Public surface ###############################################################

    @property
    def params(self) -> pika.ConnectionParameters:
        """A copy of the connection's parameters (depths.py opens its own)."""
        import copy
        return copy.copy(self._params)

    def start(self) -> None:
        """Spawn the greenlet that connects and reconnects until ``stop``."""
        if self._greenlet is not None:
            raise RuntimeError("broker already started")
        self._stopping = False
        self._greenlet = gevent.spawn(self._run)

    @property
    def running(self) -> bool:
        """Started and not stopped: connected, or trying to be."""
        return self._greenlet is not None

    def stop(self, timeout_s=5.0) -> None:
        """Close the connection and stop reconnecting; waits up to ``timeout_s``.

        Tokens still in flight are reported with ``on_rejected(..., "connection_lost")``.
        """
        self._stopping = True
        self._wake.set()
        self._slot.set()    # let wait_slot callers see _stopping
        conn = self._conn
        if conn is not None and not (conn.is_closing or conn.is_closed):
            self._lose("stopped", warn=False)
            conn.close()
        if self._greenlet is not None:
            self._greenlet.join(timeout_s)
            if not self._greenlet.dead:
                log.warning("broker stop timed out timeout_s=%s", timeout_s)
                self._greenlet.kill(block=False)
                # The greenlet never reached its own cleanup; settle tokens here so
                # none is left unreported.
                self._lose("stopped", warn=False)
            self._greenlet = None
        self._release_ioloop()

    def in_flight(self) -> int:
        """Published and not yet confirmed, nacked or returned."""
        return self._in_flight

    def unconfirmed_age_s(self) -> float:
        """Seconds the oldest message in flight has waited for its confirm; 0.0 if none."""
        if not self._in_flight or not self._pending:
            return 0.0
        # The deque's left end is always an unsettled entry (see _settle).
        return max(0.0, time.monotonic() - self._pending[0].at)

    def confirms_overdue(self):
        """"confirms overdue N s (in_flight=M)" while connected with the oldest message in
        flight unconfirmed for CONFIRM_OVERDUE_S or longer; None otherwise."""
        if not self.connected:
            return None
        age_s = self.unconfirmed_age_s()
        if age_s < CONFIRM_OVERDUE_S:
            return None
        return "confirms overdue %d s (in_flight=%d)" % (age_s, self._in_flight)

    def redeclare(self) -> bool:
        """Declare the topology of CONTRACT §3 again on the open channel, without
        reconnecting: a job queue returned messages unroutable (deleted in RabbitMQ,
        or its binding), and this puts it back. Publishing goes on meanwhile. False
        (nothing done) when not connected or a re-declare is still under way. A
        declare the broker refuses (406: the queue made again with other arguments,
        403) closes the channel, and the connection is made again with its declares,
        as after any lost connection."""
        channel = self._channel
        if not self.connected or channel is None or self._redeclaring is channel:
            return False
        self._redeclaring = channel
        self.stats["redeclares"] += 1
        self._declare_step(channel, 0, again=True)
        return True

    def free_slots(self) -> int:
        """How many more messages ``publish`` accepts now (0 when not connected)."""
        if not self.connected:
            return 0
        return self.window - self._in_flight

    def publish(self, token, exchange, routing_key, body: bytes, properties: tuple,
                mandatory: bool, message_id: str | None = None) -> bool:
        """Send one message; False (and nothing sent) when not connected or window full.
        properties: amqp.properties(...). A mandatory message should say its
        ``message_id`` (the one in its properties) for a return to be matched.

        On True, ``token`` is later handed back exactly once (see the class docstring).
        """
        if not self.connected or self._in_flight >= self.window:
            return False
        conn, channel = self._conn, self._channel
        if conn.is_closed or not channel.is_open:
            return False       # pika learnt of a close that we have not seen yet
        # amqp.py encodes the frames; what one pass of the caller publishes goes to
        # pika's connection as one write, when the caller next yields to the hub.
        self._out.append(amqp.publish(channel.channel_number, exchange, routing_key,
                                      mandatory, properties, body, conn._body_max_length))
        if len(self._out) == 1:
            gevent.get_hub().loop.run_callback(self._flush, conn)
        self._next_tag += 1
        now = time.monotonic()
        self._pending.append(_Pending(self._next_tag, token, message_id, now))
        if self._in_flight == 0:
            self._last_confirm_at = now
        self._in_flight += 1
        self.stats["published"] += 1
        if self._in_flight >= self.window:
            self._slot.clear()
        return True

    def _flush(self, conn) -> None:
        if conn is not self._conn:
            return             # lost meanwhile: _lose dropped what it held
        out, self._out = self._out, []
        if out and not conn.is_closed:
            conn._output_marshaled_frames((b"".join(out),))

    def wait_slot(self, timeout_s=None) -> bool:
        """Block this greenlet until connected with a free slot; False on timeout.

        Returns False at once, without yielding, once ``stop`` has been called: a
        caller that loops on it must check its own stop condition.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._stopping:
            if self.connected and self._in_flight < self.window:
                return True
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
            self._slot.wait(remaining)
            # Several waiters share one Event: each re-checks, and whoever finds the
            # window full again clears it in publish().
            if not (self.connected and self._in_flight < self.window):
                self._slot.clear()
        return False

    # The connecting greenlet ######################################################

    def _run(self) -> None:
        delay_s = self._backoff_initial_s
        try:
            while not self._stopping:
                self._session_done.clear()
                try:
                    was_connected = self._connect_once()
                except Exception:
                    # A bug or an odd pika state must not end reconnecting for good.
                    log.exception("broker connection attempt crashed")
                    self._lose("crashed")
                    self._conn = None
                    was_connected = False
                if self._stopping:
                    break
                if was_connected:
                    delay_s = self._backoff_initial_s   # reset after a good connect
                self._wake.wait(delay_s)
                self._wake.clear()
                delay_s = min(delay_s * 2, self._backoff_max_s)
        finally:
            self._lose("stopped", warn=False)

    def _connect_once(self) -> bool:
        """One connection's life: open, declare, publish, until it closes."""
        if self._ioloop is None:
            # One ioloop adapter for all connections: pika's GeventConnection makes a
            # new _GeventSelectorIOLoop per connection when none is passed, and each one
            # leaks a pipe (2 fds) plus a watcher on the hub, one per reconnect.
            self._ioloop = _GeventSelectorIOLoop(gevent.get_hub())
        self._reached_connected = False
        self._session_error = None
        self._conn = GeventConnection(
            self._params, on_open_callback=self._on_conn_open,
            on_open_error_callback=self._on_conn_open_error,
            on_close_callback=self._on_conn_closed, custom_ioloop=self._ioloop)
        conn = self._conn
        conn._on_data_available = self._reader(conn, conn._on_data_available)
        if not self._session_done.wait(SETUP_TIMEOUT_S) and not self.connected:
            self._note_error("setup timed out after %ss" % SETUP_TIMEOUT_S)
            if not (conn.is_closing or conn.is_closed):
                conn.close()
        while not self._session_done.wait(CONFIRM_TIMEOUT_S / 3):
            if self._in_flight and time.monotonic() - self._last_confirm_at > CONFIRM_TIMEOUT_S:
                self.stats["confirm_stalls"] += 1
                log.warning("broker confirms stalled in_flight=%d seconds=%.0f; reconnecting",
                            self._in_flight, time.monotonic() - self._last_confirm_at)
                self._note_error("no publisher confirm for %ss" % CONFIRM_TIMEOUT_S)
                if not (conn.is_closing or conn.is_closed):
                    conn.close()
                self._session_done.wait()
        self._conn = None
        self._channel = None
        if not self._reached_connected and not self._stopping:
            self._failed(self._session_error or "closed during setup")
        return self._reached_connected

    def _release_ioloop(self) -> None:
        loop, self._ioloop = self._ioloop, None
        if loop is not None:
            release_ioloop(loop)

    # pika callbacks: these run in the hub and must not block ######################

    def _on_conn_open(self, conn) -> None:
        if conn is not self._conn:
            return
        conn.add_on_connection_blocked_callback(self._on_blocked)
        conn.add_on_connection_unblocked_callback(self._on_unblocked)
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_conn_open_error(self, conn, exc) -> None:
        if conn is not self._conn:
            return
        self._note_error(self._describe(exc))
        self._session_done.set()

    def _on_conn_closed(self, conn, exc) -> None:
        if conn is not self._conn:
            return
        self._note_error(self._describe(exc))
        if self._reached_connected:
            self._lose(self._session_error)
        self._session_done.set()

    def _on_channel_open(self, channel) -> None:
        if self._conn is None or channel.connection is not self._conn:
            return
        channel.add_on_close_callback(self._on_channel_closed)
        self._channel = channel
        self._next_tag = 0
        self._declare_step(channel, 0)

    def _on_channel_closed(self, channel, exc) -> None:
        if channel is not self._channel:
            return
        conn = self._conn
        self._channel = None
        self._note_error(self._describe(exc))   # e.g. 406 on a declare
        if self._reached_connected:
            self._lose(self._session_error)
        # Without its one channel the connection is useless: close it, and the run
        # loop reconnects (and re-declares) after the backoff.
        if conn is not None and not (conn.is_closing or conn.is_closed):
            conn.close()

    def _declare_step(self, channel, step, again=False) -> None:
        """Declare the topology one RPC at a time, then enable confirms (again:
        redeclare() on a channel that has them: stop after the declares)."""
        if channel is not self._channel:
            return
        nxt = lambda _frame: self._declare_step(channel, step + 1, again)
        queues = list(jobs.QUEUES.items())   # queue -> x-max-priority
        nq = len(queues)
        if step == 0:
            channel.exchange_declare(JOBS_EXCHANGE, exchange_type="direct", durable=True,
                                     auto_delete=False, internal=False, callback=nxt)
        elif step <= nq:
            name, max_priority = queues[step - 1]
            channel.queue_declare(name, durable=True, exclusive=False, auto_delete=False,
                                  arguments={"x-max-priority": max_priority}, callback=nxt)
        elif step <= 2 * nq:
            name = queues[step - nq - 1][0]
            channel.queue_bind(name, JOBS_EXCHANGE, routing_key=name, callback=nxt)
        elif step == 2 * nq + 1:
            channel.exchange_declare(STATUS_EXCHANGE, exchange_type="topic", durable=True,
                                     auto_delete=False, internal=False, callback=nxt)
        elif again:
            if self._redeclaring is channel:
                self._redeclaring = None
            log.debug("broker topology declared again")
        elif step == 2 * nq + 2:
            channel.add_on_return_callback(self._on_return)
            channel.confirm_delivery(self._on_ack_nack, callback=nxt)
        else:
            self._became_connected()

    def _became_connected(self) -> None:
        self._reached_connected = True
        self.connected = True
        self.disconnected_since_ms = None
        self.last_error = None
        self.stats["connects"] += 1
        log.info("broker connected host=%s port=%d vhost=%s tls=%s failures_before=%d",
                 self.host, self.port, self.vhost,
                 "on" if self._params.ssl_options else "off", self._failures_since_change)
        self._failures_since_change = 0
        self._last_failure_warn = None
        self._slot.set()
        self._call(self._on_state, True)

    def _reader(self, conn, pika_reads):
        """What the connection receives: confirms on our channel are settled here
        (amqp.confirms), the rest goes to pika. The counters are pika's own (its
        heartbeat checker reads bytes_received)."""
        def on_data(data: bytes) -> None:
            channel = self._channel
            found = None
            if not conn._frame_buffer and channel is not None and conn is self._conn:
                found = amqp.confirms(data, channel.channel_number)
            if found is None:
                pika_reads(data)
                return
            conn.bytes_received += len(data)
            conn.frames_received += len(found)
            for tag, multiple, acked in found:
                self._settle(tag, multiple, acked)
        return on_data

    def _on_ack_nack(self, frame) -> None:
        method = frame.method
        self._settle(method.delivery_tag, method.multiple,
                     isinstance(method, pika.spec.Basic.Ack))

    def _settle(self, tag: int, multiple: bool, acked: bool) -> None:
        self._last_confirm_at = time.monotonic()
        pending = self._pending
        if multiple:
            settled = []
            while pending and pending[0].tag <= tag:
                entry = pending.popleft()
                if not entry.done:
                    settled.append(entry)
            while pending and pending[0].done:   # settled out of order before
                pending.popleft()
        else:
            entry = self._find(tag)
            if entry is None or entry.done:
                log.debug("broker confirm for unknown tag=%d", tag)
                return
            entry.done = True
            settled = [entry]
            while pending and pending[0].done:   # keep the deque's left end live
                pending.popleft()
        if not settled:
            return
        self._in_flight -= len(settled)
        if acked:
            confirmed = [e.token for e in settled if not e.returned]
            returned = [e.token for e in settled if e.returned]
            if confirmed:
                self.stats["confirmed"] += len(confirmed)
                self._call(self._on_confirmed, confirmed)
            if returned:
                self.stats["returned"] += len(returned)
                self._call(self._on_rejected, returned, "returned")
        else:
            self.stats["nacked"] += len(settled)
            self._call(self._on_rejected, [e.token for e in settled], "nack")
        if self.connected:
            self._slot.set()

    def _find(self, tag):
        pending = self._pending
        if not pending:
            return None
        i = tag - pending[0].tag   # tags in the deque are consecutive
        if 0 <= i < len(pending):
            return pending[i]
        return None

    def _on_return(self, channel, method, properties, body) -> None:
        # basic.return carries no delivery tag; RabbitMQ sends it before the ack of the
        # same message, so the oldest unsettled, unreturned entry with this message_id
        # is the one (message ids are job ids, unique among messages in flight).
        message_id = properties.message_id
        for entry in self._pending:
            if not entry.done and not entry.returned and entry.message_id == message_id:
                entry.returned = True
                return
        log.warning("broker return matched nothing message_id=%s reply_code=%s",
                    message_id, method.reply_code)

    def _on_blocked(self, conn, frame) -> None:
        log.warning("broker blocked publishing reason=%s",
                    getattr(frame.method, "reason", ""))

    def _on_unblocked(self, conn, frame) -> None:
        log.info("broker unblocked publishing")

    # State changes ###############################################################

    def _lose(self, reason_text, warn=True) -> None:
        """Leave the connected state and settle everything in flight. Idempotent."""
        was_connected = self.connected
        self.connected = False
        self._channel = None
        self._out = []                # never written: what it held is lost below
        self._slot.clear()
        if self.disconnected_since_ms is None:
            self.disconnected_since_ms = _now_ms()
        pending, self._pending = self._pending, collections.deque()
        self._in_flight = 0
        # A returned entry whose ack never came is reported as lost too: either way
        # the message is not known to be queued.
        lost = [e.token for e in pending if not e.done]
        if was_connected:
            if warn:
                self.last_error = reason_text
                log.warning("broker disconnected host=%s port=%d error=%s in_flight=%d",
                            self.host, self.port, reason_text, len(lost))
            else:
                log.info("broker closed host=%s port=%d in_flight=%d",
                         self.host, self.port, len(lost))
            # That line was the state change: failed reconnects are told only by the
            # "still down" line, FAILURE_WARN_EVERY_S from now.
            self._last_failure_warn = time.monotonic()
        if lost:
            self.stats["lost"] += len(lost)
            self._call(self._on_rejected, lost, "connection_lost")
        if was_connected:
            self._call(self._on_state, False)

    def _note_error(self, text) -> None:
        # Keep the first cause: a channel closed with 406 is followed by our own
        # "Normal shutdown" of the connection, which explains nothing.
        if self._session_error is None:
            self._session_error = text

    def _failed(self, text) -> None:
        """A connection attempt ended before we were connected (run greenlet)."""
        self.stats["connect_failures"] += 1
        self.last_error = text
        self._failures_since_change += 1
        now = time.monotonic()
        if self._last_failure_warn is None:
            self._last_failure_warn = now
            log.warning("broker connect failed host=%s port=%d error=%s; retrying, "
                        "told again every %ds while down", self.host, self.port, text,
                        FAILURE_WARN_EVERY_S)
        elif now - self._last_failure_warn >= FAILURE_WARN_EVERY_S:
            self._last_failure_warn = now
            log.warning("broker still down host=%s port=%d attempts=%d down_s=%d error=%s",
                        self.host, self.port, self._failures_since_change,
                        (_now_ms() - (self.disconnected_since_ms or _now_ms())) // 1000, text)
        else:
            log.debug("broker connect failed host=%s port=%d error=%s failures=%d",
                      self.host, self.port, text, self._failures_since_change)

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("broker callback failed callback=%s",
                          getattr(fn, "__name__", fn))

    def _describe(self, exc) -> str:
        """Short text for an exception from pika, without the password."""
        if exc is None:
            return "unknown"
        # pika wraps the real cause (refused, timeout) two or three levels deep:
        # AMQPConnectionError(AMQPConnectionWorkflowFailed(exceptions=(
        # AMQPConnectorSocketConnectError(exception=ConnectionRefusedError(...)),))).
        for _ in range(5):
            inner = getattr(exc, "exceptions", None)
            if inner:
                exc = inner[-1]
            elif isinstance(getattr(exc, "exception", None), BaseException):
                exc = exc.exception             # AMQPConnectorPhaseErrorBase
            elif exc.args and isinstance(exc.args[0], BaseException):
                exc = exc.args[0]
            else:
                break
        text = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return text[:MAX_ERROR_CHARS]
