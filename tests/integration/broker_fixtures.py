"""Fixtures for tests that need a real RabbitMQ: the shared one and a private one.

The shared broker (127.0.0.1:5672, guest/guest) is never stopped by tests; tests that
stop or restart a broker use a private one on DQ_TEST_PRIVATE_RABBIT_PORT (default
5673), started and stopped with scripts/rabbitmq-local.sh. Waiting is polling with a
deadline, never a bare sleep.
"""

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import tempfile
import time

import gevent
import pika
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "rabbitmq-local.sh")
SHARED_PORT = int(os.environ.get("DQ_TEST_RABBIT_PORT", "5672"))
PRIVATE_PORT = int(os.environ.get("DQ_TEST_PRIVATE_RABBIT_PORT", "5673"))


def wait_until(predicate, timeout_s=30.0, interval_s=0.01, what="condition"):
    """Poll ``predicate`` until it is true; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            pytest.fail("timed out after %ss waiting for %s" % (timeout_s, what))
        gevent.sleep(interval_s)


def port_open(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def blocking_channel(port, vhost="/"):
    """A BlockingConnection channel on ``port``; the caller closes its connection."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port,
                                                             virtual_host=vhost))
    return conn, conn.channel()


def purge(port, *queues):
    conn, ch = blocking_channel(port)
    try:
        for q in queues:
            try:
                ch.queue_purge(q)
            except pika.exceptions.ChannelClosedByBroker:   # 404: nothing to purge
                ch = conn.channel()
    finally:
        conn.close()


def message_count(port, queue):
    conn, ch = blocking_channel(port)
    try:
        return ch.queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


class LocalRabbit:
    """A broker run by scripts/rabbitmq-local.sh on one port."""

    def __init__(self, port):
        self.port = port

    def _script(self, *args, check=True):
        # Erlang writes erl_crash.dump into its working directory: keep it out of the repo.
        tmp = tempfile.gettempdir()
        env = dict(os.environ, RABBIT_PORT=str(self.port), ERL_CRASH_DUMP=os.path.join(
            tmp, "dqorch-rabbit-%d-erl_crash.dump" % self.port))
        return subprocess.run([SCRIPT, *args], env=env, check=check, timeout=180, cwd=tmp,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def start(self):
        self._script("start")
        wait_until(lambda: port_open(self.port), 60, 0.1, "port %d" % self.port)

    def stop(self):
        self._script("stop")
        wait_until(lambda: not port_open(self.port), 60, 0.1, "port %d closed" % self.port)

    def pid(self):
        """The broker's OS process (beam.smp), from the pid file scripts/rabbitmq-local.sh
        keeps in its RABBIT_DIR (${TMPDIR:-/tmp}/dqorch-rabbit-<port>)."""
        path = os.path.join(os.environ.get("TMPDIR") or "/tmp",
                            "dqorch-rabbit-%d" % self.port, "rabbit.pid")
        with open(path) as f:
            return int(f.read().strip())

    @contextlib.contextmanager
    def frozen(self):
        """SIGSTOP the broker for the block: connections stay open, nothing is answered
        (a hung host, a paused VM). Always SIGCONT on the way out."""
        pid = self.pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            yield pid
        finally:
            os.kill(pid, signal.SIGCONT)

    def ctl(self, *args):
        """Run rabbitmqctl against this broker; returns its output."""
        return self._script("ctl", *args).stdout

    def ctl_json(self, *args):
        """rabbitmqctl output as JSON, e.g. ctl_json("list_queues", "name")."""
        import json
        return json.loads(self.ctl(*args, "-q", "--formatter", "json"))

    def exclusive(self, timeout_s=900.0):
        """Hold a lock on this port for as long as the returned file stays open.

        Two pytest runs that share the private broker would stop it under each other
        (and two starts of one node name crash the second); the lock makes the later
        run wait for the earlier one.
        """
        path = os.path.join(tempfile.gettempdir(), "dqorch-rabbit-%d.lock" % self.port)
        f = open(path, "w")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return f
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.close()
                    pytest.fail("private broker on port %d stayed locked by another "
                                "test run for %ss" % (self.port, timeout_s))
                gevent.sleep(0.5)


@pytest.fixture(scope="session")
def shared_rabbit():
    """The long-running broker on 5672; started by the script if nothing listens."""
    rabbit = LocalRabbit(SHARED_PORT)
    if not port_open(SHARED_PORT):
        rabbit.start()
    return rabbit


@pytest.fixture(scope="module")
def private_rabbit():
    """A broker on 5673 that tests may stop and start; stopped at the end."""
    if SHARED_PORT == PRIVATE_PORT:
        pytest.fail("private broker port must differ from the shared one")
    rabbit = LocalRabbit(PRIVATE_PORT)
    lock = rabbit.exclusive()
    try:
        rabbit.start()
        yield rabbit
        rabbit.stop()
    finally:
        lock.close()


class Recorder:
    """Collects Broker callbacks the way the real caller must: append, nothing more."""

    def __init__(self):
        self.confirmed = []
        self.rejected = []      # (token, reason)
        self.states = []

    def on_confirmed(self, tokens):
        self.confirmed.extend(tokens)

    def on_rejected(self, tokens, reason):
        self.rejected.extend((t, reason) for t in tokens)

    def on_state(self, connected):
        self.states.append(connected)

    def settled(self):
        return len(self.confirmed) + len(self.rejected)

    def reports(self):
        """token -> list of outcomes ("confirmed" or the rejection reason)."""
        out = {}
        for t in self.confirmed:
            out.setdefault(t, []).append("confirmed")
        for t, reason in self.rejected:
            out.setdefault(t, []).append(reason)
        return out


@pytest.fixture
def make_broker():
    """Factory: make_broker(port, **kw) -> (Broker, Recorder), stopped at teardown."""
    from dqorch.broker import Broker

    made = []

    def make(port, **kw):
        rec = Recorder()
        kw.setdefault("username", "guest")
        kw.setdefault("password", "guest")
        b = Broker("127.0.0.1", port, on_confirmed=rec.on_confirmed,
                   on_rejected=rec.on_rejected, on_state=rec.on_state, **kw)
        made.append(b)
        return b, rec

    yield make
    for b in made:
        b.stop()
