"""Writing this node's snapshots: when one is due, the forked child that writes it,
and the compaction of log and core once it is written. (Installing a snapshot the
leader sent is the node's: it replaces state and configuration; see node._install.)

Rule 1: one snapshot at a time; after a failure none is tried for SNAPSHOT_RETRY_S,
and `error` says why until the next one is written (health shows it).
Rule 2: the child sees a copy-on-write image of the state machine, so serialising
1,000,000 jobs never stalls the hub; it dies with the node (an orphan would hold
data_dir and grow a .tmp) and runs niced behind it.
Rule 3: a snapshot written behind one the leader installed meanwhile compacts
nothing.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import time

import gevent

from .pool import in_thread

log = logging.getLogger(__name__)

SNAPSHOT_RETRY_S = 30.0        # after a failed snapshot, wait this long before the next
SNAPSHOT_NICE = 10             # the snapshot child's niceness: ~10% of a core the node wants


class Snapshots:
    """raft_log: the node's RaftLog. fsm: its state machine (snapshot() in the child).
    core(): the node's Core or None. applied(): the index applied last. meta(): what
    the snapshot records of Raft itself (the configuration). peers(): the other
    members. every: entries applied between two snapshots."""

    def __init__(self, raft_log, fsm, *, core, applied, meta, peers, every: int) -> None:
        self.log = raft_log
        self.fsm = fsm
        self.core = core
        self.applied = applied
        self.meta = meta
        self.peers = peers
        self.every = every
        self.written = 0
        self.failures = 0
        self.error: str | None = None
        self.child = None              # the greenlet waiting for the child, while one runs
        self._retry_at = 0.0           # monotonic; no attempt before it (Rule 1)

    def maybe(self) -> None:
        """A snapshot now if one is due (the commit loop asks after each turn)."""
        core = self.core()
        if self.child is not None or time.monotonic() < self._retry_at or core is None:
            return
        # A new member needs entries this node kept no data of (a cluster of one
        # forgets what it applied): a snapshot past them is the only way to send them.
        behind = self.peers() and core.sendable_from > self.log.snapshot_index + 1
        if behind or self.applied() - self.log.snapshot_index >= self.every:
            try:
                self.now()
            except Exception as e:
                self.failed(f"cannot start: {e}")

    def now(self) -> None:
        """Start writing a snapshot of the applied state (Rule 2), after the one
        running, if any, is done (Rule 1: two children wrote the same .tmp, and one
        failed with ENOENT when the other renamed it away). OSError (rotate, fork): no
        snapshot now; the node goes on."""
        if self.child is not None:
            self.child.join()
        self.log.rotate()
        index = self.applied()
        core = self.core()
        term = core.term_at(index) if core is not None else self.log.last_term
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:       # child: no greenlet switches, no logging, just write and exit
            code = 1
            try:
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG
                # Serialising 1,000,000 jobs takes a core for 4 s. Paced p99 while it
                # ran, 2 cores: 17-19 ms, 2.8 niced.
                os.nice(SNAPSHOT_NICE)
                if os.getppid() == parent:
                    self.log.write_snapshot(index, term, self.fsm.snapshot(), self.meta())
                    code = 0
            except OSError as e:
                code = e.errno if e.errno and 0 < e.errno < 256 else 1
            finally:
                os._exit(code)
        log.info("snapshot started index=%d pid=%d", index, pid)
        self.child = gevent.spawn(self._wait, pid, index, term)

    def join(self, timeout_s: float) -> None:
        if self.child is not None:
            self.child.join(timeout=timeout_s)

    def _wait(self, pid: int, index: int, term: int) -> None:
        try:
            _, status = os.waitpid(pid, 0)
            if status == 0:
                removed = 0
                if index >= self.log.snapshot_index:     # Rule 3
                    # The core first: while the files go (in a thread), it must not
                    # ask the log for entries the log no longer has.
                    core = self.core()
                    if core is not None and index > core.snap_index:
                        core.compact(index, self.log.snapshot_path(index))
                    removed = self.log.compact(index, term,
                                               remove=lambda path: in_thread(os.unlink, path))
                self.written += 1
                self.error = None
                log.info("snapshot written index=%d removed_files=%d", index, removed)
            else:
                code = os.waitstatus_to_exitcode(status)
                self.failed(f"index {index}: " + (
                    os.strerror(code) if code > 1 else f"child exited with {code}"))
        except OSError as e:
            self.failed(f"index {index}: {e}")
        finally:
            self.child = None

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.error = reason
        self._retry_at = time.monotonic() + SNAPSHOT_RETRY_S
        log.error("snapshot failed %s; retry in %gs", reason, SNAPSHOT_RETRY_S)
