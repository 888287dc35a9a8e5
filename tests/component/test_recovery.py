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

from dqorch.jobs import _NO_EXTRA, Job
from dqorch import state as S
from dqorch.raft.log import RaftLog
from dqorch.fsm import SNAPSHOTS, JobFSM
from dqorch.raft.node import RaftNode
from tests.unit.helpers import T0, build, check, fingerprint, steps

RECOVERY = settings(
    max_examples=int(os.environ.get("DQ_RECOVERY_EXAMPLES", "40")),
    derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def make_node(data_dir: str, snapshot_entries: int) -> RaftNode:
    return RaftNode(RaftLog(data_dir, SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=snapshot_entries,
                    now_ms=lambda: T0, fsync=lambda fd: None)


def content(st) -> str:
    """The state without its `term`: each start is a new leader term (its no-op says
    so), which changes no job."""
    return json.dumps(dict(S.to_snapshot(st), term=None), default=Job.to_record)


def settle(node: RaftNode) -> None:
    """Wait for a running snapshot child, so the files are what a stop leaves."""
    if node.snaps.child is not None:
        node.snaps.child.join(timeout=30)
    assert node.snaps.child is None, "snapshot child did not finish"


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
        snaps = node.snaps.written
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
    assert node.snaps.written >= 1
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
    from tests.unit.helpers import fresh, rep, reg
    st = fresh(reg("a", T0), rep("a", "running", T0 + 5), rep("a", "completed", T0 + 9),
               reg("b", T0 + 20))
    snap = json.loads(json.dumps(S.to_snapshot(st), default=Job.to_record))
    del snap["history_format"]
    for rec in snap["jobs"]:
        rec["history"] = json.dumps([list(h) for h in history_of(st.jobs[rec["id"]])])
    log = RaftLog(str(tmp_path), SNAPSHOTS)
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


def every_kind_of_job() -> S.State:
    """Jobs with each optional field: running (running_since), a progress, a result,
    an error, a stale worker waiting for its retry, one first seen in a report, a
    client createdAt, a payload with a 30-digit integer."""
    from tests.unit.helpers import fresh, rep, reg
    return fresh(
        reg("p", T0, payload={"n": 123456789012345678901234567890}, createdAt=T0 - 5),
        reg("r", T0 + 1), rep("r", "running", T0 + 2, progress=40),
        reg("c", T0 + 3), rep("c", "running", T0 + 4), rep("c", "completed", T0 + 5,
                                                          result={"ok": True}),
        reg("f", T0 + 6, maxRetries=0), rep("f", "failed", T0 + 7, errorMessage="boom"),
        reg("t", T0 + 8), rep("t", "running", T0 + 9, worker="ghost"),
        {"op": "timeout", "id": "t", "attempt": 0, "at_ms": T0 + 10_000},
        rep("x", "running", T0 + 11, worker="w9"))


def write_format_3(path: str, index: int, state: dict) -> None:
    """A snapshot as the previous version wrote it: one job record per line."""
    import zlib

    def line(obj) -> bytes:
        body = json.dumps(obj, separators=(",", ":")).encode()
        return b"%08x " % zlib.crc32(body) + body + b"\n"
    jobs = state["jobs"]
    lines = [line({"format": 3, "index": index, "term": 1, "jobs": len(jobs),
                   "state": {k: v for k, v in state.items() if k != "jobs"}})]
    lines += [line(job) for job in jobs]
    whole = zlib.crc32(b"".join(lines))
    with open(path, "wb") as f:
        f.write(b"".join(lines) + line({"end": len(jobs), "crc32": whole}))


def test_a_format_3_snapshot_loads_and_the_next_snapshot_is_format_4(tmp_path):
    st = every_kind_of_job()
    assert {"running_since", "progress", "past", "from_report",
            "client_created_at", "error_message"} <= {
        k for j in st.jobs.values() for k in j.keys()}, "every optional field is held"
    snap = json.loads(json.dumps(S.to_snapshot(st), default=Job.to_record))
    write_format_3(os.path.join(str(tmp_path), "snapshot-%020d.json" % 7), 7, snap)
    node = make_node(str(tmp_path), 1)            # snapshots again at its first entry
    node.start()
    try:
        check(node.state)
        assert content(node.state) == content(st)
        settle(node)
        assert node.snaps.written >= 1
    finally:
        node.stop()
    newest = max(n for n in os.listdir(tmp_path) if n.startswith("snapshot-"))
    with open(os.path.join(str(tmp_path), newest), "rb") as f:
        assert json.loads(f.readline().split(b" ", 1)[1])["format"] == 4
    again = make_node(str(tmp_path), 10**6)
    again.start()
    try:
        check(again.state)
        assert content(again.state) == content(st)
    finally:
        again.stop()


def through_a_snapshot_file(data_dir: str, st: S.State) -> S.State:
    """st written by RaftLog.write_snapshot and read back from the file; the same
    content, checked here."""
    lg = RaftLog(data_dir, SNAPSHOTS)
    lg.open()
    lg.write_snapshot(3, 1, S.to_snapshot(st))
    again = S.from_snapshot(lg.read_snapshot(3)["state"])
    lg.close()
    assert content(again) == content(st)
    return again


def test_snapshot_rows_keep_every_field_and_share_what_a_live_job_shares(tmp_path):
    st = every_kind_of_job()
    again = through_a_snapshot_file(str(tmp_path), st)
    for id_, job in again.jobs.items():
        assert job.to_dict() == st.jobs[id_].to_dict(), id_
    r = again.jobs["r"]
    assert r.running_since is r.started_at                # one int, as when live
    assert again.jobs["p"].execution_timeout is again.jobs["c"].execution_timeout
    assert again.jobs["c"].queue is again.jobs["r"].queue     # one copy of each name
    assert not st.jobs["c"]._extra and again.jobs["c"]._extra is _NO_EXTRA


def test_a_job_without_a_row_field_is_written_as_its_record_among_rows(tmp_path):
    """Snapshots from older versions may hold jobs that lack a field every job now
    has; such a job goes into the next snapshot as its record, between rows."""
    st = every_kind_of_job()
    del st.jobs["f"].attempt
    assert isinstance(st.jobs["f"].to_row(), dict) and isinstance(st.jobs["p"].to_row(), list)
    again = through_a_snapshot_file(str(tmp_path), st)
    assert "attempt" not in again.jobs["f"]
