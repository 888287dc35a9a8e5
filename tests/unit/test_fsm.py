"""The job registry behind raft/fsm.py's interface (dqorch/fsm.py): the snapshot format
moved out of raft/log.py byte for byte, and JobFSM applies, snapshots and restores
what state.py does."""
import os

from dqorch import fsm
from dqorch import state as S
from dqorch.fsm import SNAPSHOTS, JobFSM
from dqorch.raft.log import RaftLog
from tests.unit.helpers import T0, cancel, check, fail, fingerprint, fresh, mark_queued, reg, rep

# Written by raft/log.py's snapshot code before it moved here (commit 0d80597), from
# the state registry() builds, as snapshot 17 of term 2.
OLD_FILE = os.path.join(os.path.dirname(__file__), "data", "snapshot-format4.json")


def registry() -> S.State:
    """Every status, a retry's past, events in the outbox, a payload with an integer
    beyond 64 bits (the stdlib's path) and a non-ASCII one."""
    st = fresh(*[reg(f"j{i}", T0 + i, priority=p,
                     payload={"n": i, "big": 12345678901234567890123 if i == 3 else "x\u00e9"})
                 for i, p in enumerate(["HIGH", "LOW", "MEDIUM", "HIGH", "LOW", "MEDIUM"])])
    for cmd in [mark_queued([["j0", 1], ["j1", 1], ["j2", 1], ["j3", 1]], T0 + 10),
                rep("j0", "running", T0 + 11),
                rep("j0", "completed", T0 + 12, result={"ok": True}),
                rep("j1", "running", T0 + 13, worker="w2"), fail("j1", T0 + 14, worker="w2"),
                cancel("j2", T0 + 15), rep("j3", "running", T0 + 16)]:
        S.apply(st, cmd)
    return st


def test_the_snapshot_bytes_are_those_the_log_wrote_before_the_move(tmp_path):
    with open(OLD_FILE, "rb") as f:
        old = f.read()
    assert b"".join(SNAPSHOTS.write(17, 2, S.to_snapshot(registry()), {})) == old
    lg = RaftLog(str(tmp_path), SNAPSHOTS)
    lg.open()
    lg.write_snapshot(17, 2, S.to_snapshot(registry()))
    with open(lg.snapshot_path(17), "rb") as f:
        assert f.read() == old


def test_a_snapshot_the_log_wrote_before_the_move_restores_the_same_state(tmp_path):
    with open(OLD_FILE, "rb") as f:
        old = f.read()
    with open(os.path.join(tmp_path, "snapshot-%020d.json" % 17), "wb") as f:
        f.write(old)
    lg = RaftLog(str(tmp_path), SNAPSHOTS)
    snap, entries = lg.open()
    assert (snap["index"], snap["term"], lg.last_index, lg.last_term, entries) == \
        (17, 2, 17, 2, [])
    machine = JobFSM()
    machine.restore(snap)
    check(machine.state)
    assert fingerprint(machine.state) == fingerprint(registry())
    assert machine.summary() == "jobs=6"


def test_restore_paces_every_block_and_the_fsm_applies_as_state_does(tmp_path, monkeypatch):
    monkeypatch.setattr(fsm, "JOBS_PER_BLOCK", 4)
    path = os.path.join(tmp_path, "snap")
    with open(path, "wb") as f:
        f.writelines(SNAPSHOTS.write(3, 1, S.to_snapshot(registry()), {}))
    machine, phases = JobFSM(), []
    machine.restore(SNAPSHOTS.read(path), pace=phases.append)
    assert phases == ["loading the snapshot jobs=4 of 6", "loading the snapshot jobs=6 of 6"]
    twin = registry()
    cmd = rep("j3", "completed", T0 + 20)
    assert machine.apply(18, dict(cmd)) == S.apply(twin, dict(cmd))
    assert fingerprint(machine.state) == fingerprint(twin)


def test_describe_names_a_command_and_what_is_not_one():
    assert JobFSM.describe(reg("j9", T0)) == "op=register job=j9"
    assert JobFSM.describe(mark_queued([["a", 1]], T0)) == "op=mark_queued job=a"
    assert JobFSM.describe([1]) == "op=? (not a command: list)"
