"""RaftNode's Rule 1 on a real data_dir: hooks and the disk cannot kill the commit
loop. A failure is contained, counted and visible, and the node keeps serving."""
import json
import os
import resource
import time

import gevent
import pytest

from dqorch.raft.log import RaftLog
from dqorch.fsm import SNAPSHOTS, JobFSM
from dqorch.raft.node import FAST_FSYNC_S, LAZY_S, RaftNode
from tests.unit.helpers import T0, reg


def node_on(path, snapshot_entries=10**6, **hooks) -> RaftNode:
    node = RaftNode(RaftLog(str(path), SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=snapshot_entries,
                    now_ms=lambda: T0, fsync=lambda fd: None, **hooks)
    node.start()
    return node


def lowest_free_fd() -> int:
    """RLIMIT_NOFILE bounds fd numbers, not their count: below the lowest free number
    nothing more can open."""
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


def test_a_listener_that_raises_is_contained_and_counted(tmp_path):
    seen = []

    def broken(cmd, outcome):
        raise RuntimeError("a metrics bug")
    node = node_on(tmp_path, on_applied=(broken, lambda cmd, out: seen.append(cmd["id"])),
                   on_batch=(lambda n, s: 1 / 0,))
    before = node.listener_errors                   # the start's own no-op ran them too
    for i in range(3):
        assert node.propose(reg(f"j{i}", T0))["outcome"] == "created"
    assert seen == ["j0", "j1", "j2"]               # later listeners still run
    assert node.listener_errors - before == 6
    assert node.log_ok and len(node.state.jobs) == 3
    node.stop()


def test_a_snapshot_that_cannot_start_leaves_the_node_serving(tmp_path):
    """EMFILE from rotate (the fd limit reached by idle connections) used to kill the
    commit loop: every later write waited 10 s for a 503."""
    node = node_on(tmp_path, snapshot_entries=5)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free_fd(), hard))  # no new fd
    try:
        for i in range(8):
            node.propose(reg(f"j{i}", T0))
        gevent.sleep(0.05)
        assert node.snaps.error and "Too many open files" in node.snaps.error
        assert node.snaps.failures >= 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert node.propose(reg("after", T0))["outcome"] == "created"   # still serving
    assert node.log_ok
    node.stop()
    assert node.log._fd is None


def test_stop_returns_when_the_log_fd_is_already_gone(tmp_path):
    node = node_on(tmp_path)
    os.close(node.log._fd)                   # EBADF in close used to stop the stop
    node.stop()
    assert node.role == "stopped"


def test_a_failed_snapshot_is_retried_on_an_idle_node(tmp_path, monkeypatch):
    """The retry used to wait for the next write: an idle node stayed degraded."""
    from dqorch.raft import snapshots as snapshots_mod
    monkeypatch.setattr(snapshots_mod, "SNAPSHOT_RETRY_S", 0.2)
    node = node_on(tmp_path, snapshot_entries=5)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free_fd(), hard))
    try:
        for i in range(8):
            node.propose(reg(f"j{i}", T0))
        gevent.sleep(0.05)
        assert node.snaps.error is not None
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for _ in range(300):                      # no more writes from here on
        if node.snaps.written:
            break
        gevent.sleep(0.02)
    assert node.snaps.written == 1 and node.snaps.error is None
    node.stop()


def test_client_proposals_beyond_the_bound_are_refused_and_nothing_admitted_is_lost(tmp_path):
    from gevent import monkey
    from dqorch.errors import Overloaded
    gate = monkey.get_original("threading", "Event")()
    gate.set()
    node = RaftNode(RaftLog(str(tmp_path), SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=10**6,
                    now_ms=lambda: T0, fsync=lambda fd: gate.wait(30), max_pending=10)
    node.start()
    gate.clear()                                  # the disk is slow: nothing commits
    admitted = [gevent.spawn(node.propose, reg("j0", T0))]
    for _ in range(100):                          # its batch is in fsync, held there
        if node._busy:
            break
        gevent.sleep(0.01)
    admitted += [gevent.spawn(node.propose, reg(f"j{i}", T0)) for i in range(1, 10)]
    gevent.sleep(0.05)                            # 10 uncommitted in all: the bound
    with pytest.raises(Overloaded):
        node.propose(reg("refused", T0))
    mark = node.propose_async({"op": "noop"})     # the node's own work is never shed
    assert node.overloaded == 1
    gate.set()
    gevent.joinall(admitted + [gevent.spawn(mark.get)], timeout=10)
    assert all(g.successful() and g.value["outcome"] == "created" for g in admitted)
    assert "refused" not in node.state.jobs and len(node.state.jobs) == 10
    node.stop()


def test_a_failed_disk_write_in_the_threadpool_is_raised_once_and_not_printed(monkeypatch):
    """gevent prints a traceback for an exception raised inside its threadpool; a full
    disk made 79 of them a minute next to the one line the node logs."""
    import errno

    import gevent
    from dqorch.raft.pool import in_thread
    printed = []
    monkeypatch.setattr(gevent.get_hub(), "print_exception",
                        lambda *a: printed.append(a))

    def write():
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as e:
        in_thread(write)
    assert e.value.errno == errno.ENOSPC
    assert in_thread(lambda a, b: a + b, 2, 3) == 5
    gevent.sleep(0.01)
    assert printed == []


def test_a_lazy_proposal_rides_in_the_next_round_or_goes_alone(tmp_path):
    """Rule 4: a mark starts no fsync'd round of its own while a request is coming."""
    syncs = []
    node = RaftNode(RaftLog(str(tmp_path), SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=10**6,
                    now_ms=lambda: T0, fsync=lambda fd: syncs.append(fd))
    node.start()
    node.propose(reg("a", T0))
    before = len(syncs)
    mark = node.propose_async({"op": "noop"}, lazy=True)
    node.propose(reg("b", T0))                    # one round carries both
    assert mark.ready() and mark.successful()
    assert len(syncs) == before + 1
    alone = node.propose_async({"op": "noop"}, lazy=True)
    alone.get(timeout=10)                         # nothing else came: it goes by itself
    assert len(syncs) == before + 2
    late = node.propose_async({"op": "noop"}, lazy=True)
    node.stop()                                   # stop commits what was proposed
    assert late.ready()


def test_a_lazy_proposal_waits_its_full_time_after_earlier_waits_ended(tmp_path):
    """Rule 4, again and again: a wait that fired or was cut short leaves nothing
    behind, so the next mark still waits for the next request (a reused libev timer
    kept ~0 s left after it fired, and every mark then went alone)."""
    syncs = []
    node = RaftNode(RaftLog(str(tmp_path), SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=10**6,
                    now_ms=lambda: T0, fsync=lambda fd: syncs.append(fd))
    node.start()
    for i in range(20):
        node.propose_async({"op": "noop"}, lazy=True)
        node.propose(reg(f"cut{i}", T0))          # cuts the wait short
    node.propose_async({"op": "noop"}, lazy=True).get(timeout=10)    # waits it out
    rode = 0
    for i in range(5):
        before = len(syncs)
        t0 = time.monotonic()
        mark = node.propose_async({"op": "noop"}, lazy=True)
        gevent.sleep(0.001)
        if time.monotonic() - t0 > LAZY_S / 2:
            continue                              # a loaded machine: not a fair try
        assert not mark.ready()
        node.propose(reg(f"ride{i}", T0))
        assert mark.ready() and len(syncs) == before + 1
        rode += 1
    node.stop()
    assert rode


def test_a_proposal_not_committed_in_time_is_a_propose_timeout_and_may_still_commit(tmp_path):
    from dqorch.errors import ProposeTimeout
    slow = []
    node = RaftNode(RaftLog(str(tmp_path), SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=10**6, now_ms=lambda: T0,
                    fsync=lambda fd: gevent.sleep(0.3) if slow else None)
    node.start()
    node.propose(reg("fast", T0), timeout_s=5)        # in time: its outcome
    slow.append(True)
    with pytest.raises(ProposeTimeout):
        node.propose(reg("late", T0), timeout_s=0.05)
    slow.clear()
    node.propose(reg("after", T0))
    assert {"fast", "late", "after"} <= set(node.state.jobs)   # the outcome was unknown
    node.stop()


def _fsync_node(tmp_path, slow: list, busy_s: float):
    """A started node whose fsync records the OS thread that ran it and, for each True
    it pops from slow, takes busy_s (busy: a slow disk, not a yield). Returns the node,
    the threads list and the hub's thread."""
    import time
    from gevent.monkey import get_original
    thread_id = get_original("threading", "get_ident")    # patched: the greenlet's
    threads = []

    def fsync(fd):
        threads.append(thread_id())
        if slow:
            slow.pop()
            t0 = time.monotonic()
            while time.monotonic() - t0 < busy_s:
                pass
    node = RaftNode(RaftLog(str(tmp_path), SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=10**6, now_ms=lambda: T0, fsync=fsync)
    node.start()
    return node, threads, thread_id()


def test_fsync_runs_inline_past_a_lone_slow_one_and_in_a_thread_on_a_slow_disk(tmp_path):
    """Rule 5. One slow fsync is an outlier: the next ones stay inline (it used to put
    the next 10 s of rounds through the pool); SLOW_FSYNCS slow ones within SLOW_DISK_S
    are a slow disk: the next go to the thread."""
    from dqorch.raft import node as node_mod
    slow = []
    node, threads, hub = _fsync_node(tmp_path, slow, 2 * FAST_FSYNC_S)
    node.propose(reg("fast", T0))
    n = len(threads)
    slow.append(True)
    for i in range(3):
        node.propose(reg(f"once{i}", T0))
    assert set(threads) == {hub}                  # a lone slow one: inline still
    slow.extend([True] * (node_mod.SLOW_FSYNCS - 1))
    for i in range(node_mod.SLOW_FSYNCS + 2):
        node.propose(reg(f"s{i}", T0))
    node.stop()
    k = n + 3 + node_mod.SLOW_FSYNCS - 1          # the fsync that made the disk slow
    assert set(threads[:k]) == {hub}
    assert len(threads) >= k + 2 and hub not in threads[k:k + 2]


def test_slow_fsyncs_further_apart_than_the_window_stay_inline(tmp_path, monkeypatch):
    """Rule 5: SLOW_FSYNCS slow ones make a slow disk only within SLOW_DISK_S."""
    from dqorch.raft import node as node_mod
    monkeypatch.setattr(node_mod, "SLOW_DISK_S", 0.05)
    slow = []
    node, threads, hub = _fsync_node(tmp_path, slow, 2 * FAST_FSYNC_S)
    for i in range(node_mod.SLOW_FSYNCS):
        if i:
            gevent.sleep(2 * node_mod.SLOW_DISK_S)
        slow.append(True)
        node.propose(reg(f"s{i}", T0))
    node.propose(reg("right after the last", T0))
    node.stop()
    assert set(threads) == {hub}


def test_a_busy_hub_does_not_keep_fast_fsyncs_in_the_thread(tmp_path, monkeypatch):
    """Rule 5: an fsync in the thread is timed there. Timed by the caller it counted
    the wait for the hub to take the answer back, and a busy node's fsyncs stayed in
    the thread for as long as it was busy, whatever the disk did."""
    from dqorch.raft import node as node_mod
    monkeypatch.setattr(node_mod, "SLOW_DISK_S", 1.0)
    slow = [True] * node_mod.SLOW_FSYNCS
    node, threads, hub = _fsync_node(tmp_path, slow, 2 * FAST_FSYNC_S)
    busy = [True]

    def hog():                    # the hub busy 1.5 * FAST_FSYNC_S at a time
        while busy[0]:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.5 * FAST_FSYNC_S:
                pass
            gevent.sleep(0.001)   # a turn for the loop's I/O, not only its callbacks
    try:
        for i in range(node_mod.SLOW_FSYNCS):
            node.propose(reg(f"slow{i}", T0))
        assert threads[-1] != hub                 # a slow disk: the thread
        g = gevent.spawn(hog)
        until, i = time.monotonic() + 10, 0
        while time.monotonic() < until and threads[-1] != hub:
            node.propose(reg(f"fast{i}", T0))
            i += 1
        busy[0] = False
        g.join()
        assert threads[-1] == hub                 # fast fsyncs: inline again
    finally:
        busy[0] = False
        node.stop()


def test_one_stalled_fsync_is_enough_for_the_thread(tmp_path, monkeypatch):
    """Rule 5: one fsync slower than STALL_FSYNC_S blocked the hub for that long: the
    next go to the thread without waiting for more."""
    from dqorch.raft import node as node_mod
    monkeypatch.setattr(node_mod, "STALL_FSYNC_S", 3 * FAST_FSYNC_S)
    slow = []
    node, threads, hub = _fsync_node(tmp_path, slow, 4 * FAST_FSYNC_S)
    node.propose(reg("fast", T0))
    n = len(threads)
    slow.append(True)
    for i in range(3):
        node.propose(reg(f"s{i}", T0))
    node.stop()
    assert threads[n] == hub and len(threads) >= n + 3
    assert hub not in threads[n + 1:n + 3]


def test_a_disk_that_stays_slow_keeps_fsync_off_the_hub(tmp_path, monkeypatch, caplog):
    """Rule 5: fsyncs in the thread are timed too; while they stay slow the hub is never
    blocked by one again, however long that lasts. Once they are fast, inline again.
    One log line each way, not one per slow fsync."""
    import logging
    caplog.set_level(logging.INFO, logger="dqorch.raft.node")
    import time
    from gevent.monkey import get_original
    from dqorch.raft import node as node_mod
    monkeypatch.setattr(node_mod, "SLOW_DISK_S", 0.2)
    thread_id = get_original("threading", "get_ident")
    threads, slow = [], [True]

    def fsync(fd):
        threads.append(thread_id())
        if slow[0]:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2 * node_mod.FAST_FSYNC_S:
                pass
    node = RaftNode(RaftLog(str(tmp_path), SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=10**6,
                    now_ms=lambda: T0, fsync=fsync)
    node.start()
    hub = thread_id()
    try:
        for i in range(node_mod.SLOW_FSYNCS):     # slow by now: the pool from here on
            node.propose(reg(f"first{i}", T0))
        n = len(threads)
        until, i = time.monotonic() + 3 * node_mod.SLOW_DISK_S, 0
        while time.monotonic() < until:
            node.propose(reg(f"slow{i}", T0))
            i += 1
        assert len(threads) > n and hub not in threads[n:]
        slow[0] = False
        until = time.monotonic() + 10
        while time.monotonic() < until and threads[-1] != hub:
            node.propose(reg(f"fast{i}", T0))
            i += 1
            gevent.sleep(0.01)
        assert threads[-1] == hub
    finally:
        node.stop()
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "fsyncs go to a thread" in m]) == 1, said
    assert len([m for m in said if "fsyncs inline again" in m]) == 1, said


def test_a_node_without_peers_keeps_no_applied_command_in_memory(tmp_path):
    """Only followers are sent applied entries: a single node drops them (after a
    restart too), so the log tail since the last snapshot costs no memory."""
    node = node_on(tmp_path)
    for i in range(3):
        node.propose(reg(f"m{i}", T0))
    assert all(e.data is None for e in node.core.log if e.index <= node.applied_index)
    node.stop()
    node = node_on(tmp_path)
    assert set(node.state.jobs) >= {"m0", "m1", "m2"}
    assert all(e.data is None for e in node.core.log if e.index <= node.applied_index)
    node.stop()


def test_files_a_snapshot_replaces_are_removed_outside_the_hub(tmp_path, monkeypatch):
    """Unlinking a 200 MB snapshot held the hub for ~45 ms: the old snapshot and
    segments go in a thread, after the core forgot their entries."""
    from gevent.monkey import get_original
    thread_id = get_original("threading", "get_ident")
    real, removed = os.unlink, []

    def unlink(path, *args, **kwargs):
        if str(tmp_path) in str(path) and not str(path).endswith(".tmp"):
            removed.append((os.path.basename(path), thread_id()))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", unlink)
    node = node_on(tmp_path, snapshot_entries=3)
    hub = thread_id()
    try:
        for i in range(20):
            node.propose(reg(f"j{i}", T0))
            gevent.sleep(0.01)                     # room for the snapshot child
        deadline = time.monotonic() + 10
        while not any(n.startswith("snapshot-") for n, _ in removed) and \
                time.monotonic() < deadline:
            node.propose(reg("more", T0))
            gevent.sleep(0.05)
    finally:
        node.stop()
    assert any(n.startswith("snapshot-") for n, _ in removed), removed
    assert any(n.startswith("log-") for n, _ in removed), removed
    assert hub not in {t for _, t in removed}
    assert len([n for n in os.listdir(tmp_path) if n.startswith("snapshot-")]) == 1


# Rule 6: the commit in hard state ##########################################

def hard_state_commit(path) -> int:
    with open(os.path.join(path, "hardstate.json")) as f:
        return json.load(f)["commit"]


def recorded(node) -> list:
    """The commits the loop records (Rule 6), in order."""
    commits, real = [], node.log.save_hard_state

    def save(term, vote, commit=None):
        commits.append(commit)
        return real(term, vote, commit)
    node.log.save_hard_state = save
    return commits


def test_the_commit_is_recorded_at_a_bounded_rate_not_once_a_round(tmp_path, monkeypatch):
    from dqorch.raft import node as node_mod
    monkeypatch.setattr(node_mod, "COMMIT_RECORD_S", 3600.0)
    node = node_on(tmp_path)
    commits = recorded(node)
    node._record_at = 0.0                    # the period starts now
    for i in range(20):
        assert node.propose(reg(f"r{i}", T0))["outcome"] == "created"
    gevent.sleep(0.3)                        # ticks go by: still nothing more
    assert len(commits) == 1 and commits[0] >= 2
    assert hard_state_commit(tmp_path) == commits[0]
    node.stop()                              # a clean stop records it exactly
    assert hard_state_commit(tmp_path) == 21 == node.log.last_index


def test_an_idle_node_records_the_commit_it_reached(tmp_path, monkeypatch):
    """kill -9 leaves the last record: it must reach the end once writes stop, or
    the check at the next open (log.py Rule 4) has nothing to compare against."""
    from dqorch.raft import node as node_mod
    monkeypatch.setattr(node_mod, "COMMIT_RECORD_S", 0.2)
    node = node_on(tmp_path)
    for i in range(20):
        node.propose(reg(f"i{i}", T0))
    deadline = time.monotonic() + 10
    while hard_state_commit(tmp_path) < node.log.last_index and time.monotonic() < deadline:
        gevent.sleep(0.02)
    assert hard_state_commit(tmp_path) == node.log.last_index == 21
    node.stop()


def test_a_commit_record_that_fails_is_one_line_and_the_node_serves(tmp_path, monkeypatch,
                                                                     caplog):
    from dqorch.raft import node as node_mod
    monkeypatch.setattr(node_mod, "COMMIT_RECORD_S", 0.0)
    node = node_on(tmp_path)
    real = node.log.save_hard_state
    node.log.save_hard_state = lambda *a: (_ for _ in ()).throw(OSError(28, "No space"))
    with caplog.at_level("INFO"):
        for i in range(5):
            assert node.propose(reg(f"f{i}", T0))["outcome"] == "created"
            gevent.sleep(0.01)
        assert node.log_ok and node.commit_record_error == "[Errno 28] No space"
        node.log.save_hard_state = real
        node.propose(reg("f5", T0))
        deadline = time.monotonic() + 10
        while node.commit_record_error and time.monotonic() < deadline:
            gevent.sleep(0.02)
    assert [r.getMessage()[:30] for r in caplog.records if "commit" in r.getMessage()
            and "hard state" in r.getMessage()] == ["commit not recorded in hard st",
                                                  "commit recorded in hard state "]
    node.stop()


def test_a_node_without_peers_is_alone_leads_at_once_and_keeps_nothing_applied(tmp_path):
    """`alone`, the one test for a cluster of one: it leads as soon as it started, needs
    no quorum contact, and keeps no applied command for followers it has not got."""
    node = node_on(tmp_path)
    assert node.alone and node.role == "leader" and node.has_quorum_contact(lease=True)
    for i in range(3):
        assert node.propose(reg(f"a{i}", T0))["outcome"] == "created"
    applied = [e for e in node.core.log if e.index <= node.applied_index]
    assert applied and all(e.data is None for e in applied)
    assert node.transfer_leadership(0.1) is False    # nobody to hand over to
    node.stop()


class Counter:
    """The smallest FSM (raft/fsm.py): RaftNode runs one that is not the registry."""

    def __init__(self):
        self.state = {"n": 0, "applied": []}

    def apply(self, index, cmd):
        if cmd["op"] == "add":
            self.state["n"] += cmd["by"]
        self.state["applied"].append(index)
        return self.state["n"]

    def snapshot(self):
        return self.state

    def restore(self, snap, pace=None):
        self.state = snap["data"]

    def summary(self):
        return f"n={self.state['n']}"

    def describe(self, cmd):
        return f"op={cmd.get('op')}"


class CounterSnapshots:
    def write(self, index, term, data, raft):
        yield json.dumps({"index": index, "term": term, "data": data, "raft": raft}).encode()

    def read(self, path):
        with open(path, "rb") as f:
            return json.loads(f.read())


def test_the_node_drives_any_fsm_through_apply_snapshot_and_restore(tmp_path):
    def counter_node():
        node = RaftNode(RaftLog(str(tmp_path), CounterSnapshots()), "n1", fsm=Counter(),
                        snapshot_entries=4, now_ms=lambda: T0, fsync=lambda fd: None)
        node.start()
        return node
    node = counter_node()
    assert [node.propose({"op": "add", "by": b}) for b in (1, 2, 3, 4, 5)] == [1, 3, 6, 10, 15]
    for _ in range(200):
        if node.snaps.written and node.snaps.child is None:
            break
        gevent.sleep(0.01)
    assert node.snaps.written >= 1 and node.log.snapshot_index >= 4
    state = json.loads(json.dumps(node.state))
    node.stop()
    again = counter_node()                   # the snapshot restored, the tail applied
    assert again.fsm.state["n"] == 15 and again.state["applied"][:len(state["applied"])] \
        == state["applied"]
    assert again.propose({"op": "add", "by": 1}) == 16
    again.stop()


def test_time_in_the_log_never_goes_back_and_never_stops(tmp_path):
    """Rule 7: after a stamp ahead of the cluster's time (a majority's clocks off, or
    an older version's leader), the next stamps go on at half speed until the time
    catches up, then follow it; the old max(now, newest) froze them for the skew."""
    now = [T0 + 3_600_000]
    node = RaftNode(RaftLog(str(tmp_path), SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=10**6, now_ms=lambda: now[0], fsync=lambda fd: None)
    node.start()
    try:
        def stamp(id_):
            cmd = reg(id_, 0)
            del cmd["at_ms"]                      # the node stamps it
            node.propose(cmd)
            return node.state.jobs[id_]["created_at"]
        ahead = stamp("ahead")                    # an hour ahead
        now[0] = T0
        t0 = time.monotonic()
        stamps = [stamp("b0")]
        for i in range(1, 4):
            gevent.sleep(0.05)
            stamps.append(stamp(f"b{i}"))
        real_ms = (time.monotonic() - t0) * 1000
        assert ahead <= stamps[0] < stamps[1] < stamps[2] < stamps[3]  # on, not frozen
        assert stamps[3] - stamps[0] < real_ms    # slower than real time: it catches up
        now[0] = T0 + 7_200_000
        assert stamp("caught_up") == now[0]
    finally:
        node.stop(timeout_s=1)


def test_a_node_alone_replays_a_log_past_its_recorded_commit(tmp_path, monkeypatch, caplog):
    """A node alone counts every entry it wrote as committed at start (a majority of
    one), however far its recorded commit lags (Rule 6 records it now and then; a
    tail written by bench/memory.py records none). The replay's progress line divided
    by the count known before that, 0, and the start crashed at its first progress
    line, on every restart; it counts the entries read now."""
    import logging

    from dqorch.raft import node as node_mod
    monkeypatch.setattr(node_mod, "PROGRESS_EVERY", 10)
    node = node_on(tmp_path, snapshot_entries=5)
    for i in range(5):
        node.propose(reg(f"j{i}", T0))
    for _ in range(500):                               # a snapshot, as the bench's
        if node.snaps.written and node.snaps.child is None:
            break
        gevent.sleep(0.01)
    assert node.snaps.written >= 1
    node.snaps.every = 10**6                           # then a tail of 25 after it
    for i in range(5, 30):
        node.propose(reg(f"j{i}", T0))
    snap_index = node.log.snapshot_index
    node.stop()
    lg = RaftLog(str(tmp_path), SNAPSHOTS)
    lg.open()
    lg.save_hard_state(lg.term, lg.vote, snap_index)   # nothing after it recorded
    lg.close()
    caplog.set_level(logging.INFO, logger="dqorch.raft.node")
    again = node_on(tmp_path)
    assert again.log.snapshot_index == snap_index
    assert sorted(again.state.jobs) == sorted(f"j{i}" for i in range(30))
    assert "replaying log entries=10 of 26 (38%)" in caplog.text   # the tail: 25 + a no-op
    assert "replayed log entries=26 " in caplog.text
    again.stop()
