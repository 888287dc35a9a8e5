"""Recovery through the real files: a random command log is proposed to a real
RaftNode on a real data_dir (group commits, forked snapshots, compaction), the node
is stopped, a new RaftNode starts from the same directory, and its state must equal
the live one: to_snapshot(before) == to_snapshot(after the restart), terminal order
included, every index consistent, and the next command giving the same outcome.

Nothing is handed to a loader here: state comes back only through log.py's files.
fsync is a no-op (the files are real; the kernel's durability is not under test).
DQ_RECOVERY_EXAMPLES sets how many examples (default 40).
"""
import json
import os
import shutil
import tempfile

import gevent
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as hs

from dqorch.jobs import Job
from dqorch import state as S
from dqorch.raft.log import RaftLog
from dqorch.raft.node import RaftNode
from tests.unit.test_properties import build, steps
from tests.unit.test_state import T0, check, fingerprint

RECOVERY = settings(
    max_examples=int(os.environ.get("DQ_RECOVERY_EXAMPLES", "40")),
    derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def make_node(data_dir: str, snapshot_entries: int) -> RaftNode:
    return RaftNode(RaftLog(data_dir), "n1", snapshot_entries=snapshot_entries,
                    now_ms=lambda: T0, fsync=lambda fd: None)


def content(st) -> str:
    """The state without its `term`: each start is a new leader term (its no-op says
    so), which changes no job."""
    return json.dumps(dict(S.to_snapshot(st), term=None), default=Job.to_record)


def settle(node: RaftNode) -> None:
    """Wait for a running snapshot child, so the files are what a stop leaves."""
    if node._snap_child is not None:
        node._snap_child.join(timeout=30)
    assert node._snap_child is None, "snapshot child did not finish"


def drive(node: RaftNode, steps_, group_sizes) -> tuple:
    """Propose the log in groups (one group commit each); return (log, outcomes)."""
    log, outcomes, at, i = [], [], T0, 0
    while i < len(steps_):
        group = []
        for delta, template in steps_[i:i + next(group_sizes)]:
            at += delta
            cmd = build(node.state, template, at)
            log.append(json.loads(json.dumps(cmd)))
            group.append(node.propose_async(cmd))
        i += len(group)
        outcomes.extend(r.get(timeout=30) for r in group)
        gevent.sleep(0)               # let the loop try a snapshot between groups
    return log, outcomes


@RECOVERY
@given(steps, hs.sampled_from([3, 7, 25, 10**6]), hs.randoms(use_true_random=False))
def test_a_restart_from_the_files_gives_the_same_state(steps_, every, rnd):
    data_dir = tempfile.mkdtemp(prefix="dq-recovery-")
    try:
        node = make_node(data_dir, every)
        node.start()
        sizes = iter(lambda: rnd.choice([1, 1, 2, 5]), None)
        log, _ = drive(node, steps_, sizes)
        settle(node)
        before = fingerprint(node.state)
        snaps = node.snapshots
        node.stop()
        note(f"snapshot every {every}: {snaps} written; files {sorted(os.listdir(data_dir))}")
        again = make_node(data_dir, 10**6)
        again.start()
        try:
            check(again.state)
            assert content(again.state) == content(node.state), "the restarted state differs"
            assert again.applied_index >= len(log)
            # The same next commands give the same outcomes on both.
            twin = S.from_snapshot(json.loads(before))
            at = max([c["at_ms"] for c in log] + [T0]) + 1
            for delta, template in steps_[:10]:
                at += delta
                cmd = build(twin, template, at)
                assert again.propose(json.loads(json.dumps(cmd))) == S.apply(twin, cmd)
            assert content(again.state) == content(twin)
        finally:
            again.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_snapshot_really_happens_in_the_property(tmp_path):
    """The property above is only worth something if snapshots are taken and the
    restart loads one: check that once, with a log long enough."""
    node = make_node(str(tmp_path), 3)
    node.start()
    for i in range(40):
        node.propose({"op": "register", "id": f"j{i}", "publish": True, "at_ms": T0 + i,
                      "job": {"type": "t", "priority": 5, "payload": {}, "max_retries": 1,
                              "execution_timeout": 60, "metadata": {}}})
        gevent.sleep(0)
    settle(node)
    node.stop()
    assert node.snapshots >= 1
    assert [n for n in os.listdir(tmp_path) if n.startswith("snapshot-")]
    again = make_node(str(tmp_path), 10**6)
    again.start()
    assert again.log.snapshot_index > 0
    assert sorted(again.state.jobs) == sorted(node.state.jobs)
    again.stop()


def test_a_snapshot_from_before_packed_histories_loads_through_the_files(tmp_path):
    """The previous version's snapshot: no history_format, each history spelt out
    ([at_ms, status, by, reason] in full). A node starting on it has the same jobs."""
    from dqorch.jobs import history_of
    from tests.unit.test_state import fresh, rep, reg
    st = fresh(reg("a", T0), rep("a", "running", T0 + 5), rep("a", "completed", T0 + 9),
               reg("b", T0 + 20))
    snap = json.loads(json.dumps(S.to_snapshot(st), default=Job.to_record))
    del snap["history_format"]
    for rec in snap["jobs"]:
        rec["history"] = json.dumps([list(h) for h in history_of(st.jobs[rec["id"]])])
    log = RaftLog(str(tmp_path))
    log.open()
    log.write_snapshot(7, 1, snap)
    log.close()
    node = make_node(str(tmp_path), 10**6)
    node.start()
    try:
        for id_ in ("a", "b"):
            assert history_of(node.state.jobs[id_]) == history_of(st.jobs[id_])
        assert node.state.jobs["a"]["status"] == "completed"
    finally:
        node.stop()
