"""The greenlet that drives this node's log: propose -> append -> fsync -> commit ->
apply -> answer. Owns ordering and group commit; the disk belongs to log.py and the
rules of what a command does to state.py.

Today a node has no peers: it is the leader of a Raft cluster of one, and an entry
commits once it is fsync'd. The shape is Raft's (term bumped and persisted on every
start, a no-op entry of the new term, commit and applied indexes), so replication
can come in behind propose() without changing callers.

Rule 1: the commit loop never dies of the disk. A failed write fails its batch (the
waiting handlers get LogFailed), `log_ok` turns false (health says degraded), one line
is logged per change of state, and the loop probes with a no-op until a write works.
Rule 2: an apply that raises stops the node (replicas must never diverge); on the next
start the replay refuses with ReplayFailed naming the entry. `skip_entries` lets an
operator start past it once; a snapshot right after makes that permanent.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import time

import gevent
import gevent.event

from .. import state as st_mod
from ..errors import LogFailed, NotLeader, Overloaded, ProposeTimeout, ReplayFailed
from .log import MAX_APPEND_BYTES, RaftLog, encode

log = logging.getLogger(__name__)

PROGRESS_EVERY = 100_000
PROBE_S = 1.0                  # while the log cannot be written, try a no-op this often
SNAPSHOT_RETRY_S = 30.0        # after a failed snapshot, wait this long before the next


def _entry_name(index: int, cmd) -> str:
    """index, op and job id of a command, for the one line that names it."""
    if not isinstance(cmd, dict):
        return f"index={index} op=? (not a command: {type(cmd).__name__})"
    job = cmd.get("id") or cmd.get("worker_id") or (cmd.get("ids") or [None])[0] \
        or ((cmd.get("items") or [[None]])[0] or [None])[0]
    return f"index={index} op={cmd.get('op')} job={job}"


class RaftNode:
    def __init__(self, raft_log: RaftLog, node_name: str, *, snapshot_entries: int,
                 now_ms, fsync=os.fsync, skip_entries=frozenset(),
                 max_pending: int = 5000) -> None:
        self.log = raft_log
        self.node_name = node_name
        self.snapshot_entries = snapshot_entries
        self.now_ms = now_ms
        self._fsync = fsync
        self.skip_entries = frozenset(skip_entries)
        self.max_pending = max_pending
        self.overloaded = 0           # client proposals refused: the queue was full
        self.state = st_mod.State()
        self.role = "starting"
        self.leader: str | None = None
        self.commit_index = 0
        self.applied_index = 0
        self.log_ok = True
        self.log_error: str | None = None
        self.failed_writes = 0        # since the log was last writable
        self.listeners: list = []         # fn(cmd, outcome) after each live apply
        self.batch_observers: list = []   # fn(entries, seconds) after each commit
        self.listener_errors = 0
        self.snapshots = 0
        self.snapshot_failures = 0
        self.snapshot_error: str | None = None
        self._queue: list = []
        self._wake = gevent.event.Event()
        self._loop = None
        self._snap_child = None
        self._snap_retry_at = 0.0     # monotonic; no snapshot attempt before it
        self._probe_at = 0.0

    # Start and stop ########################################################

    def start(self) -> None:
        """Replay snapshot + log, bump the term, become leader. Blocks until ready.
        LogCorrupt: data_dir is damaged. ReplayFailed: an entry cannot be applied.
        OSError: data_dir cannot be read or written."""
        t0 = time.monotonic()
        snap, entries = self.log.open()
        if snap is not None:
            jobs = self._progress(snap["state"]["jobs"], snap["total_jobs"])
            try:
                self.state = st_mod.from_snapshot(dict(snap["state"], jobs=jobs))
            except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as e:
                raise ReplayFailed(f"snapshot index={snap['index']} cannot be loaded: "
                                   f"{e!r}; see README, Recovery")
            self.applied_index = snap["index"]
            log.info("loaded snapshot index=%d jobs=%d", snap["index"], len(self.state.jobs))
        total = len(entries)
        skipped = 0
        for n, (index, _term, cmd) in enumerate(entries, 1):
            if index in self.skip_entries:
                log.warning("skipping log entry as asked %s", _entry_name(index, cmd))
                skipped += 1
            else:
                try:
                    st_mod.apply(self.state, cmd)
                except Exception as e:
                    raise ReplayFailed(f"log entry {_entry_name(index, cmd)} cannot be "
                                       f"applied: {e!r}; see README, Recovery")
            self.applied_index = index
            if n % PROGRESS_EVERY == 0:
                log.info("replaying log entries=%d of %d (%d%%)", n, total, n * 100 // total)
                gevent.sleep(0)
        self.commit_index = self.applied_index
        term = self.log.term + 1
        self.log.save_hard_state(term, self.node_name)  # a cluster of one votes for itself
        log.info("replayed log entries=%d jobs=%d applied=%d seconds=%.2f", total,
                 len(self.state.jobs), self.applied_index, time.monotonic() - t0)
        self.role, self.leader = "leader", self.node_name
        log.info("became leader term=%d last_index=%d", term, self.log.last_index)
        self._loop = gevent.spawn(self._run)
        # Raft §5.4.2: a new leader commits an entry of its own term.
        self.propose({"op": "noop"})
        if skipped:
            self.snapshot_now()       # Rule 2: later starts need no skip_entries

    @staticmethod
    def _progress(jobs, total: int):
        for n, job in enumerate(jobs, 1):
            if n % PROGRESS_EVERY == 0:
                log.info("loading snapshot jobs=%d of %d (%d%%)", n, total, n * 100 // total)
            yield job

    def stop(self, timeout_s: float = 5.0) -> None:
        """Refuse new proposals, commit what was already proposed, close the log.
        Always returns within about timeout_s."""
        if self.role == "stopped":
            return
        self.role = "stopped"
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._busy) and time.monotonic() < deadline:
            gevent.sleep(0.01)
        if self._loop is not None:
            self._loop.kill(block=True, timeout=1)
        if self._snap_child is not None:
            self._snap_child.join(timeout=max(0.0, deadline - time.monotonic()))
        for _, result in self._queue:
            result.set_exception(NotLeader("node stopped before this command was logged"))
        self._queue = []
        self.log.close()
        log.info("log closed commit=%d", self.commit_index)

    # Proposals #############################################################

    @property
    def term(self) -> int:
        return self.log.term

    def propose_async(self, cmd: dict) -> gevent.event.AsyncResult:
        """Queue a command for the next group commit. The leader stamps `at_ms`.
        Raises NotLeader when this node cannot commit now."""
        if self.role != "leader":
            raise NotLeader(f"node is {self.role}")
        cmd.setdefault("at_ms", self.now_ms())
        result = gevent.event.AsyncResult()
        self._queue.append((cmd, result))
        self._wake.set()
        return result

    def propose(self, cmd: dict, timeout_s: float = 10.0) -> dict:
        """Commit and apply one client command; return apply's outcome.
        NotLeader, Overloaded, LogFailed: not committed (unless LogFailed says the
        outcome is unknown). ProposeTimeout: outcome unknown.

        Overloaded when max_pending commands already wait: beyond that a client would
        wait longer than it would like and memory would grow with the backlog. The
        node's own commands (marks, timers: propose_async) are never refused, so the
        work that drains the backlog is never what is shed."""
        self._admit()
        result = self.propose_async(cmd)
        try:
            return result.get(timeout=timeout_s)
        except gevent.Timeout:
            raise ProposeTimeout(f"no commit within {timeout_s:g} s; the outcome is unknown")

    def _admit(self) -> None:
        if len(self._queue) >= self.max_pending:
            self.overloaded += 1
            raise Overloaded(f"{len(self._queue)} commands wait for the log "
                             f"(max_pending_proposals); retry shortly")

    def propose_many(self, cmds: list, timeout_s: float = 10.0) -> list:
        """Commit client commands together (they join one group commit); one outcome
        per command, in order, or the exception for that one (LogFailed, NotLeader,
        ProposeTimeout). Overloaded, for all of them, as propose()."""
        self._admit()
        results = [self.propose_async(cmd) for cmd in cmds]
        deadline = time.monotonic() + timeout_s
        out = []
        for result in results:
            try:
                out.append(result.get(timeout=max(0.0, deadline - time.monotonic())))
            except gevent.Timeout:
                out.append(ProposeTimeout(f"no commit within {timeout_s:g} s; the "
                                          f"outcome is unknown"))
            except (LogFailed, NotLeader) as e:
                out.append(e)
        return out

    # The loop ##############################################################

    _busy = False

    def _run(self) -> None:
        while True:
            # Wake by itself while something must be retried: the log probe, or a
            # failed snapshot on a node that may get no writes at all.
            idle = self.log_ok and self.snapshot_error is None
            self._wake.wait(timeout=None if idle else PROBE_S)
            self._wake.clear()
            if not self.log_ok and not self._queue and self.role == "leader" \
                    and time.monotonic() >= self._probe_at:
                self._probe_at = time.monotonic() + PROBE_S
                self.propose_async({"op": "noop"})     # Rule 1: is the disk back?
            while self._queue:
                batch, self._queue = self._queue, []
                self._busy = True
                try:
                    self._commit(batch)
                except Exception:
                    # A bug outside the disk path; a dead loop would leave every
                    # request waiting forever, so stop and let the supervisor restart.
                    log.critical("commit loop failed; stopping", exc_info=True)
                    os._exit(70)
                finally:
                    self._busy = False
            if self.role == "leader":
                try:
                    self._maybe_snapshot()
                except Exception as e:
                    self._snapshot_failed(f"cannot start: {e}")

    def _commit(self, batch: list) -> None:
        t0 = time.monotonic()
        term = self.log.term
        prev_index, prev_term = self.log.last_index, self.log.last_term
        index = prev_index
        chunks, kept, size = [], [], 0
        for n, (cmd, result) in enumerate(batch):
            try:
                chunk = encode(index + 1, term, cmd)
            except (TypeError, ValueError) as e:
                # parse.py should have refused it; one bad command must not stop the
                # loop that commits everyone else's.
                log.error("command cannot be logged op=%s error=%s", cmd.get("op"), e)
                result.set_exception(LogFailed(f"command cannot be logged: {e}"))
                continue
            if chunks and size + len(chunk) > MAX_APPEND_BYTES:
                self._queue[:0] = batch[n:]      # log.py: one append stays bounded
                break
            index += 1
            size += len(chunk)
            chunks.append(chunk)
            kept.append((cmd, result))
        batch = kept
        if not batch:
            return
        if not self._write(b"".join(chunks), batch, index, term, prev_index, prev_term):
            return
        self.commit_index = index
        for cmd, result in batch:
            try:
                outcome = st_mod.apply(self.state, cmd)
            except Exception as e:
                # Every replica must reach the same state; one that cannot must stop.
                log.critical("apply failed %s error=%r; stopping (see README, Recovery)",
                             _entry_name(self.applied_index + 1, cmd), e, exc_info=True)
                os._exit(70)
            self.applied_index += 1
            result.set(outcome)
            for fn in self.listeners:
                try:
                    fn(cmd, outcome)
                except Exception:
                    self._listener_failed(fn)
        elapsed = time.monotonic() - t0
        for fn in self.batch_observers:
            try:
                fn(len(batch), elapsed)
            except Exception:
                self._listener_failed(fn)

    def _write(self, data: bytes, batch: list, index: int, term: int,
               prev_index: int, prev_term: int) -> bool:
        """Append and fsync one batch. False: the batch failed (its waiters told)."""
        offset = None
        try:
            if self.log.unsure is not None:
                self.log.truncate(self.log.unsure)   # nothing of this batch written yet
            offset = self.log.append(data, index, term)
            # fsync in a thread so the hub keeps serving requests; what arrives
            # meanwhile forms the next batch (group commit).
            gevent.get_hub().threadpool.apply(self._fsync, (self.log.fileno(),))
        except OSError as e:
            if offset is not None:
                try:
                    self.log.truncate(offset)
                except OSError:
                    pass                  # log.unsure now says so
            self.log.last_index, self.log.last_term = prev_index, prev_term
            unknown = offset is not None and self.log.unsure is not None
            self._write_failed(e, len(batch), unknown)
            message = ("log write failed and the log could not be cut back: the outcome "
                       "is unknown; retrying is safe" if unknown else
                       "log write failed, not committed")
            for _, result in batch:
                result.set_exception(LogFailed(f"{message}: {e}"))
            return False
        if not self.log_ok:
            log.warning("log writable again failed_writes=%d", self.failed_writes)
        self.log_ok, self.log_error, self.failed_writes = True, None, 0
        return True

    def _write_failed(self, e: OSError, entries: int, unknown: bool) -> None:
        self.failed_writes += 1
        self.log_error = str(e) + ("; log tail unknown, writes stopped until it can be "
                                   "cut back" if self.log.unsure is not None else "")
        if self.log_ok:                   # one line per change of state (Rule 1)
            log.error("log write failed entries=%d outcome=%s error=%s; retrying every "
                      "%gs", entries, "unknown" if unknown else "not_committed",
                      self.log_error, PROBE_S)
        self.log_ok = False
        self._probe_at = time.monotonic() + PROBE_S

    def _listener_failed(self, fn) -> None:
        self.listener_errors += 1
        if self.listener_errors == 1 or self.listener_errors % 1000 == 0:
            log.error("listener failed listener=%s errors=%d", getattr(fn, "__qualname__", fn),
                      self.listener_errors, exc_info=True)

    # Snapshots #############################################################

    def _maybe_snapshot(self) -> None:
        if self._snap_child is not None or time.monotonic() < self._snap_retry_at:
            return
        if self.applied_index - self.log.snapshot_index < self.snapshot_entries:
            return
        self.snapshot_now()

    def snapshot_now(self) -> None:
        """Write a snapshot of the applied state from a forked child: the child sees a
        copy-on-write image of the dicts, so serialising 1M jobs never stalls the hub.
        OSError (rotate, fork): no snapshot now; the node goes on."""
        self.log.rotate()
        index, term = self.applied_index, self.log.last_term
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:       # child: no greenlet switches, no logging, just write and exit
            code = 1
            try:
                # Die with the node: an orphan would hold data_dir and grow a .tmp.
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG
                if os.getppid() == parent:
                    self.log.write_snapshot(index, term, st_mod.to_snapshot(self.state))
                    code = 0
            except OSError as e:
                code = e.errno if e.errno and 0 < e.errno < 256 else 1
            finally:
                os._exit(code)
        log.info("snapshot started index=%d pid=%d", index, pid)
        self._snap_child = gevent.spawn(self._wait_snapshot, pid, index, term)

    def _wait_snapshot(self, pid: int, index: int, term: int) -> None:
        try:
            _, status = os.waitpid(pid, 0)
            if status == 0:
                removed = self.log.compact(index, term)
                self.snapshots += 1
                self.snapshot_error = None
                log.info("snapshot written index=%d removed_files=%d", index, removed)
            else:
                code = os.waitstatus_to_exitcode(status)
                self._snapshot_failed(f"index {index}: " + (
                    os.strerror(code) if code > 1 else f"child exited with {code}"))
        except OSError as e:
            self._snapshot_failed(f"index {index}: {e}")
        finally:
            self._snap_child = None

    def _snapshot_failed(self, reason: str) -> None:
        self.snapshot_failures += 1
        self.snapshot_error = reason
        self._snap_retry_at = time.monotonic() + SNAPSHOT_RETRY_S
        log.error("snapshot failed %s; retry in %gs", reason, SNAPSHOT_RETRY_S)

    def status(self) -> dict:
        return {"role": self.role if self.role in ("leader", "follower", "candidate")
                else "follower",
                "term": self.log.term, "leader": self.leader,
                "commit_index": self.commit_index, "applied_index": self.applied_index,
                "last_log_index": self.log.last_index}
