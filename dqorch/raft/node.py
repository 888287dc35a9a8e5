"""The greenlet that drives this node's log: propose -> append -> fsync -> commit ->
apply -> answer. Owns ordering and group commit; the disk belongs to log.py and the
rules of what a command does to state.py.

Today a node has no peers: it is the leader of a Raft cluster of one, and an entry
commits once it is fsync'd. The shape is Raft's (term bumped and persisted on every
start, a no-op entry of the new term, commit and applied indexes), so replication
can come in behind propose() without changing callers.
"""
from __future__ import annotations

import logging
import os
import time

import gevent
import gevent.event

from .. import state as st_mod
from ..errors import LogFailed, NotLeader, ProposeTimeout
from .log import RaftLog, encode

log = logging.getLogger(__name__)

PROGRESS_EVERY = 100_000


class RaftNode:
    def __init__(self, raft_log: RaftLog, node_name: str, *, snapshot_entries: int,
                 now_ms, fsync=os.fsync) -> None:
        self.log = raft_log
        self.node_name = node_name
        self.snapshot_entries = snapshot_entries
        self.now_ms = now_ms
        self._fsync = fsync
        self.state = st_mod.State()
        self.role = "starting"
        self.leader: str | None = None
        self.commit_index = 0
        self.applied_index = 0
        self.log_ok = True
        self.log_error: str | None = None
        self.listeners: list = []         # fn(cmd, outcome) after each live apply
        self.batch_observers: list = []   # fn(entries, seconds) after each commit
        self.snapshots = 0
        self.snapshot_failures = 0
        self._queue: list = []
        self._wake = gevent.event.Event()
        self._loop = None
        self._snap_child = None
        self._snap_failed_at = 0      # do not retry a failed snapshot on every batch

    # Start and stop ########################################################

    def start(self) -> None:
        """Replay snapshot + log, bump the term, become leader. Blocks until ready."""
        t0 = time.monotonic()
        snap, entries = self.log.open()
        if snap is not None:
            snap["state"]["jobs"] = self._progress(snap["state"]["jobs"], snap["total_jobs"])
            self.state = st_mod.from_snapshot(snap["state"])
            self.applied_index = snap["index"]
            log.info("loaded snapshot index=%d jobs=%d", snap["index"], len(self.state.jobs))
        total = len(entries)
        for n, (index, _term, cmd) in enumerate(entries, 1):
            st_mod.apply(self.state, cmd)
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

    @staticmethod
    def _progress(jobs, total: int):
        for n, job in enumerate(jobs, 1):
            if n % PROGRESS_EVERY == 0:
                log.info("loading snapshot jobs=%d of %d (%d%%)", n, total, n * 100 // total)
            yield job

    def stop(self, timeout_s: float = 5.0) -> None:
        """Refuse new proposals, commit what was already proposed, close the log."""
        if self.role == "stopped":
            return
        self.role = "stopped"
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._busy) and time.monotonic() < deadline:
            gevent.sleep(0.01)
        if self._loop is not None:
            self._loop.kill()
        if self._snap_child is not None:
            self._snap_child.join(timeout=max(0.0, deadline - time.monotonic()))
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
        """Commit and apply one command; return apply's outcome.
        NotLeader, LogFailed: not committed. ProposeTimeout: outcome unknown."""
        result = self.propose_async(cmd)
        try:
            return result.get(timeout=timeout_s)
        except gevent.Timeout:
            raise ProposeTimeout(f"no commit within {timeout_s:g} s; the outcome is unknown")

    # The loop ##############################################################

    _busy = False

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                self._busy = True
                try:
                    self._commit(batch)
                except Exception:
                    # A dead commit loop would leave every request waiting forever;
                    # stopping lets a supervisor restart and replay the log.
                    log.critical("commit loop failed; stopping", exc_info=True)
                    os._exit(70)
                finally:
                    self._busy = False
            if self.role == "leader":
                self._maybe_snapshot()

    def _commit(self, batch: list) -> None:
        t0 = time.monotonic()
        term = self.log.term
        prev_index, prev_term = self.log.last_index, self.log.last_term
        index = prev_index
        chunks, kept = [], []
        for cmd, result in batch:
            try:
                chunk = encode(index + 1, term, cmd)
            except (TypeError, ValueError) as e:
                # parse.py should have refused it; one bad command must not stop the
                # loop that commits everyone else's.
                log.error("command cannot be logged op=%s error=%s", cmd.get("op"), e)
                result.set_exception(LogFailed(f"command cannot be logged: {e}"))
                continue
            index += 1
            chunks.append(chunk)
            kept.append((cmd, result))
        batch = kept
        if not batch:
            return
        offset = None
        try:
            offset = self.log.append(b"".join(chunks), index, term)
            # fsync in a thread so the hub keeps serving requests; what arrives
            # meanwhile forms the next batch (group commit).
            gevent.get_hub().threadpool.apply(self._fsync, (self.log.fileno(),))
        except OSError as e:
            if offset is not None:
                self.log.truncate(offset)
            self.log.last_index, self.log.last_term = prev_index, prev_term
            self.log_ok, self.log_error = False, str(e)
            log.error("log write failed entries=%d error=%s", len(batch), e)
            for _, result in batch:
                result.set_exception(LogFailed(f"log write failed: {e}"))
            return
        self.log_ok, self.log_error = True, None
        self.commit_index = index
        for cmd, result in batch:
            try:
                outcome = st_mod.apply(self.state, cmd)
            except Exception:
                # Every replica must reach the same state; one that cannot must stop.
                log.critical("apply failed index=%d op=%s; stopping", self.applied_index + 1,
                             cmd.get("op"), exc_info=True)
                os._exit(70)
            self.applied_index += 1
            result.set(outcome)
            for fn in self.listeners:
                fn(cmd, outcome)
        elapsed = time.monotonic() - t0
        for fn in self.batch_observers:
            fn(len(batch), elapsed)

    # Snapshots #############################################################

    def _maybe_snapshot(self) -> None:
        if self._snap_child is not None:
            return
        if self.applied_index - max(self.log.snapshot_index, self._snap_failed_at) \
                < self.snapshot_entries:
            return
        self.snapshot_now()

    def snapshot_now(self) -> None:
        """Write a snapshot of the applied state from a forked child: the child sees a
        copy-on-write image of the dicts, so serialising 1M jobs never stalls the hub."""
        self.log.rotate()
        index, term = self.applied_index, self.log.last_term
        pid = os.fork()
        if pid == 0:       # child: no greenlet switches, no logging, just write and exit
            code = 1
            try:
                self.log.write_snapshot(index, term, st_mod.to_snapshot(self.state))
                code = 0
            finally:
                os._exit(code)
        log.info("snapshot started index=%d pid=%d", index, pid)
        self._snap_child = gevent.spawn(self._wait_snapshot, pid, index)

    def _wait_snapshot(self, pid: int, index: int) -> None:
        try:
            _, status = os.waitpid(pid, 0)
            if status == 0:
                removed = self.log.compact(index)
                self.snapshots += 1
                log.info("snapshot written index=%d removed_files=%d", index, removed)
            else:
                self._snap_failed_at = index
                self.snapshot_failures += 1
                log.error("snapshot failed index=%d status=%d", index, status)
        finally:
            self._snap_child = None

    def status(self) -> dict:
        return {"role": self.role if self.role in ("leader", "follower", "candidate")
                else "follower",
                "term": self.log.term, "leader": self.leader,
                "commit_index": self.commit_index, "applied_index": self.applied_index,
                "last_log_index": self.log.last_index}
