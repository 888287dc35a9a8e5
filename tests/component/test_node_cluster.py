"""RaftNode as a member of a cluster, in one process: real nodes on real data_dirs,
their datagrams carried in memory (the transport has its own tests), faults put on
one node's disk. Each test is a bug found by review; waiting is polling with a
deadline."""
import os
import random

import gevent
import pytest

from dqorch import state as st_mod
from dqorch.errors import LogFailed, ProposeTimeout
from dqorch.raft import core as C
from dqorch.raft import membership as M
from dqorch.raft.log import RaftLog
from dqorch.fsm import SNAPSHOTS, JobFSM
from dqorch.raft.node import MAX_REPLICATED_ENTRY_BYTES, ChangePending, RaftNode
from tests.unit.helpers import T0, reg


def wait(pred, what, timeout_s=10.0):
    for _ in range(int(timeout_s / 0.01)):
        if pred():
            return
        gevent.sleep(0.01)
    raise AssertionError(what)


@pytest.fixture
def cluster(tmp_path):
    made = {}

    def make(names=("a", "b", "c"), members=None):
        """members: the base configuration's voters (default: names); a node of
        names outside it waits to be added."""
        def sender(frm):
            def send(peer, payload):
                target = made.get(peer)
                if target is not None and not target._stopped and not frm._cut:
                    gevent.spawn_later(0.001, target.receive, frm.node_name, payload)
            return send
        for n in names:
            d = tmp_path / n
            d.mkdir()
            node = RaftNode(RaftLog(str(d), SNAPSHOTS), n, fsm=JobFSM(),
                            snapshot_entries=10**6, now_ms=lambda: T0,
                            fsync=lambda fd: None, config=M.Config.of(members or names),
                            member_id=f"id-{n}",
                            tick_s=0.01, election_ticks=10, api=f"{n}:1",
                            rng=random.Random(n))
            node._cut = False
            node.send = sender(node)
            made[n] = node
        for node in made.values():
            node.start()
        return made
    yield make
    for node in made.values():
        node.stop(timeout_s=1)


def leader_of(nodes):
    found = []

    def one():
        ls = [n for n in nodes.values() if n.role == "leader" and not n._cut]
        found[:] = ls
        return len(ls) == 1
    wait(one, "one leader")
    return found[0]


def test_a_leader_whose_disk_fails_hands_over_and_the_cluster_goes_on(cluster):
    nodes = cluster()
    lead = leader_of(nodes)
    assert lead.propose(reg("before", T0))["outcome"] == "created"

    def broken(fd):
        raise OSError(28, "No space left on device")
    lead._fsync = broken
    with pytest.raises(LogFailed):
        lead.propose(reg("refused", T0))
    # Its heartbeats still go out; without the hand-over nobody else would lead.
    wait(lambda: any(n.role == "leader" for n in nodes.values() if n is not lead),
         "another node leads")
    new = leader_of({k: n for k, n in nodes.items() if n is not lead})
    assert new.propose(reg("after", T0))["outcome"] == "created"
    assert "refused" not in new.state.jobs and "before" in new.state.jobs


def test_a_follower_reports_its_log_writable_again_after_one_failed_hard_state_write(cluster):
    nodes = cluster()
    lead = leader_of(nodes)
    follower = next(n for n in nodes.values() if n is not lead)
    real = follower.log.save_hard_state
    calls = []

    def flaky(*args):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        return real(*args)
    follower.log.save_hard_state = flaky
    follower._cut = True                # nobody hears it: no new entries ever reach it
    # A vote at a newer term (forced, as a transfer does): a hard state write and
    # nothing else.
    follower.step_later(C.Message(C.VOTE, frm=lead.node_name, to=follower.node_name,
                                  term=lead.term + 1, index=10**6, log_term=lead.term + 1,
                                  context=C.CAMPAIGN_TRANSFER))
    wait(lambda: calls, "a hard state write tried")
    wait(lambda: len(calls) >= 2 and follower.log_ok, "writable again on an idle follower")


def test_a_snapshot_install_that_failed_half_way_is_tried_again_and_completes(cluster, tmp_path):
    nodes = cluster()
    lead = leader_of(nodes)
    follower = next(n for n in nodes.values() if n is not lead)
    follower._cut = True                 # it hears the leader but cannot answer
    st = st_mod.State()
    for i in range(3):
        st_mod.apply(st, reg(f"s{i}", T0))
    src = RaftLog(str(tmp_path / "src"), SNAPSHOTS)
    src.open()
    index = lead.commit_index + 50
    src.write_snapshot(index, lead.term, st_mod.to_snapshot(st))
    received = os.path.join(follower.log.dir, "snapshot-%020d.json.received" % index)
    os.replace(src.snapshot_path(index), received)
    real, calls = follower.log._new_segment, []

    def flaky(first):
        calls.append(first)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(first)
    follower.log._new_segment = flaky
    follower.step_later(C.Message(C.SNAPSHOT, frm=lead.node_name, to=follower.node_name,
                                  term=lead.term, index=index, log_term=lead.term,
                                  snapshot=received))
    wait(lambda: len(calls) >= 2 and follower.applied_index == index,
         "the install tried again and done")
    assert set(follower.state.jobs) == {"s0", "s1", "s2"}
    assert follower.log.snapshot_index == index and follower.log_ok


def test_a_command_too_large_to_replicate_is_refused_and_the_next_commits(cluster):
    nodes = cluster()
    lead = leader_of(nodes)
    big = reg("big", T0)
    big["job"]["payload"] = {"blob": "x" * (MAX_REPLICATED_ENTRY_BYTES + 1)}
    with pytest.raises(LogFailed, match="too large to replicate"):
        lead.propose(big)
    assert lead.propose(reg("small", T0))["outcome"] == "created"
    for node in nodes.values():
        wait(lambda: "small" in node.state.jobs, "replicated")


def test_applied_entries_are_kept_as_json_and_still_reach_a_follower_that_lagged(cluster):
    """node.py keeps applied entries as their command's JSON bytes; a follower cut off
    while they committed gets them from those bytes and applies the same jobs."""
    nodes = cluster()
    lead = leader_of(nodes)
    late = next(n for n in nodes.values() if n is not lead)
    late._cut = True
    for i in range(5):
        assert lead.propose(reg(f"lag{i}", T0))["outcome"] == "created"
    kept = [e.data for e in lead.core.log if e.index <= lead.applied_index]
    assert kept and all(d is None or type(d) is bytes for d in kept)
    assert not lead.alone and any(type(d) is bytes for d in kept)
    late._cut = False
    wait(lambda: all(f"lag{i}" in late.state.jobs for i in range(5)), "the follower caught up")
    assert late.state.jobs["lag3"]["status"] == lead.state.jobs["lag3"]["status"]


def change(node, fn):
    """node.change_members(fn), again while another change (an id being recorded)
    is under way."""
    done = []

    def once():
        try:
            done.append(node.change_members(fn))
        except ChangePending:
            return False
        return True
    wait(once, "the change is taken")
    return done[0]


def test_members_change_online_one_at_a_time_and_the_log_holds_them(cluster, tmp_path):
    """Add d as a learner (it gets every entry, it counts toward no commit), promote
    it, remove the leader (it steps down, the others go on), and restart one: its
    configuration is the log's, not the one it was built with."""
    nodes = cluster(("a", "b", "c", "d"), members=("a", "b", "c"))
    lead = leader_of({k: n for k, n in nodes.items() if k != "d"})
    d = nodes["d"]
    assert lead.propose(reg("j1", T0))["outcome"] == "created"
    assert d.role == "follower" and d.applied_index == 0        # nobody sends it anything
    cfg = change(lead, lambda c: c.add(M.Member("d", M.LEARNER)))
    assert cfg.learners == ("d",) and cfg.index > 0
    with pytest.raises(M.ChangeRefused):
        change(lead, lambda c: c.add(M.Member("d")))
    wait(lambda: "j1" in d.state.jobs and d.config.learners == ("d",), "d catches up")
    wait(lambda: lead.config.get("d").id == "id-d", "the leader records d's id")
    cfg = change(lead, lambda c: c.promote("d"))
    assert cfg.voters == ("a", "b", "c", "d")
    wait(lambda: all(n.config.index == cfg.index for n in nodes.values()), "all apply it")
    old = lead
    with pytest.raises(M.ChangeRefused):                    # it must hand over first
        change(lead, lambda c: c.remove(old.node_name))
    assert old.transfer_leadership(2.0)
    rest = {k: n for k, n in nodes.items() if n is not old}
    new = leader_of(rest)
    cfg = change(new, lambda c: c.remove(old.node_name))
    assert new.propose(reg("j2", T0))["outcome"] == "created"
    wait(lambda: all("j2" in n.state.jobs for n in rest.values()), "j2 everywhere")
    assert new.config.voters == tuple(sorted(rest))
    # A restart reads the configuration from its log.
    d.stop(timeout_s=1)
    again = RaftNode(RaftLog(str(tmp_path / "d"), SNAPSHOTS), "d", fsm=JobFSM(),
                     snapshot_entries=10**6, now_ms=lambda: T0, fsync=lambda fd: None,
                     config=M.Config.of(["a", "b", "c"]), tick_s=0.01, election_ticks=10)
    again.start()
    try:
        assert again.config.voters == tuple(sorted(rest)) and again.config.index == cfg.index
    finally:
        again.stop(timeout_s=1)


def test_one_membership_change_at_a_time(cluster):
    nodes = cluster()
    lead = leader_of(nodes)
    lead._config_index = lead.applied_index + 10**6        # as if one were in flight
    with pytest.raises(ChangePending):
        lead.change_members(lambda c: c.add(M.Member("z", M.LEARNER)))
    follower = next(n for n in nodes.values() if n is not lead)
    with pytest.raises(C.NotLeader):
        follower.change_members(lambda c: c.add(M.Member("z", M.LEARNER)))


def test_a_node_alone_that_gains_a_member_snapshots_what_it_forgot_and_keeps_the_config(tmp_path):
    """A cluster of one keeps no data of what it applied: adding a member makes it
    write a snapshot past those entries (the only way to send them), and that
    snapshot's head holds the configuration, which a restart reads back."""
    def node_a():
        n = RaftNode(RaftLog(str(tmp_path / "a"), SNAPSHOTS), "a", fsm=JobFSM(),
                     snapshot_entries=10**6, now_ms=lambda: T0, fsync=lambda fd: None,
                     tick_s=0.01, election_ticks=10)
        n.start()
        return n
    a = node_a()
    try:
        for i in range(5):
            a.propose(reg(f"j{i}", T0))
        assert a.alone and a.core.sendable_from > a.log.snapshot_index + 1
        cfg = a.change_members(lambda c: c.add(M.Member("b", M.LEARNER, "127.0.0.1:1")))
        assert a.alone and a.peers == ("b",)
        wait(lambda: a.snaps.written == 1 and a.log.snapshot_index >= cfg.index - 1,
             "a snapshot past the forgotten entries")
        snap = a.log.read_snapshot(a.log.snapshot_index)
        assert snap["raft"]["config"]["members"][1]["name"] == "b"
        for _ in snap["state"]["job_blocks"]:
            pass
    finally:
        a.stop(timeout_s=1)
    a = node_a()
    try:
        assert a.config.learners == ("b",) and a.config.index == cfg.index
        assert a.role == "leader" and len(a.state.jobs) == 5
    finally:
        a.stop(timeout_s=1)


def test_a_member_whose_data_dir_was_emptied_never_counts_as_the_old_one(cluster, tmp_path):
    """Issue 27's loss, at its root: c restarted on an empty data_dir (a new member id)
    under its old name. With b cut off, c's acknowledgements would make a majority
    with the leader's; they are refused, so nothing commits on the strength of a
    member that lost what it acknowledged (and a later election could not lose it)."""
    import shutil
    nodes = cluster()
    lead = leader_of(nodes)
    assert lead.propose(reg("before", T0))["outcome"] == "created"
    wait(lambda: all(m.id for m in lead.config.members), "the leader records every id")
    b, c = [n for n in nodes.values() if n is not lead]
    c.stop(timeout_s=1)
    shutil.rmtree(tmp_path / c.node_name)
    (tmp_path / c.node_name).mkdir()
    wiped = RaftNode(RaftLog(str(tmp_path / c.node_name), SNAPSHOTS), c.node_name,
                     fsm=JobFSM(), snapshot_entries=10**6, now_ms=lambda: T0,
                     fsync=lambda fd: None, config=M.Config.of(sorted(nodes)),
                     member_id="id-wiped", tick_s=0.01, election_ticks=10,
                     rng=random.Random(9))
    wiped._cut, wiped.send = False, c.send
    nodes[c.node_name] = wiped
    wiped.start()
    b._cut = True
    with pytest.raises((ProposeTimeout, C.NotLeader)):
        lead.propose(reg("after", T0), timeout_s=0.5)
    assert lead.stats["wrong_member_id"] > 0
    assert "after" not in wiped.state.jobs and "before" not in wiped.state.jobs


def test_a_removed_data_dirs_late_datagrams_never_count_for_the_member_added_again(
        cluster, tmp_path):
    """Found by the fault campaign (seed 20261211): c replaced under its own name, the
    old c's acknowledgement still in flight (a delaying network) reached the leader
    after the new c was added. The leader recorded the old id for the new member,
    counted the old acknowledgement as caught up, and refused the real new c for good:
    a voter that could never vote. A removed id is kept (membership.py Rule 3), so the
    late datagram is dropped and the new c's own id is the one recorded."""
    import shutil
    from dqorch.raft import wire
    nodes = cluster()
    lead = leader_of(nodes)
    assert lead.propose(reg("before", T0))["outcome"] == "created"
    wait(lambda: all(m.id for m in lead.config.members), "the leader records every id")
    c = next(n for n in nodes.values() if n is not lead)
    name = c.node_name
    c.stop(timeout_s=1)
    cfg = change(lead, lambda k: k.remove(name))
    assert cfg.removed == {f"id-{name}"}
    cfg = change(lead, lambda k: k.add(M.Member(name, M.LEARNER)))
    assert cfg.get(name).id == ""
    stale = C.Message(C.APPEND_RESP, frm=name, to=lead.node_name, term=lead.core.term,
                      index=lead.core.last_index())
    lead.receive(name, wire.encode(stale, f"id-{name}"))
    gevent.sleep(0.1)
    assert lead.stats["removed_member_id"] == 1
    assert lead.config.get(name).id == ""
    assert lead.core.progress[name].match == 0            # not caught up on its word
    with pytest.raises(M.ChangeRefused):
        lead.change_members(lambda k: k.promote(name))
    shutil.rmtree(tmp_path / name)
    (tmp_path / name).mkdir()
    new = RaftNode(RaftLog(str(tmp_path / name), SNAPSHOTS), name, fsm=JobFSM(),
                   snapshot_entries=10**6, now_ms=lambda: T0, fsync=lambda fd: None,
                   config=M.Config.of([n for n in nodes if n != name]), member_id="id-new",
                   tick_s=0.01, election_ticks=10, rng=random.Random(7))
    new._cut, new.send = False, c.send
    nodes[name] = new
    new.start()
    wait(lambda: lead.config.get(name).id == "id-new", "the new c's id recorded")
    wait(lambda: "before" in new.state.jobs, "the new c caught up")
    assert change(lead, lambda k: k.promote(name)).get(name).role == M.VOTER
    assert lead.stats["wrong_member_id"] == 0


def test_removed_ids_survive_a_snapshot_and_a_restart(tmp_path):
    """membership.py Rule 3 through the real files: the removed id is in the snapshot's
    head and in the configuration read back after a restart from it."""
    def node_a():
        n = RaftNode(RaftLog(str(tmp_path / "a"), SNAPSHOTS), "a", fsm=JobFSM(),
                     snapshot_entries=10**6, now_ms=lambda: T0, fsync=lambda fd: None,
                     tick_s=0.01, election_ticks=10)
        n.start()
        return n
    a = node_a()
    try:
        a.propose(reg("j0", T0))
        change(a, lambda c: c.add(M.Member("b", M.LEARNER, "127.0.0.1:1", id="id-b")))
        cfg = change(a, lambda c: c.remove("b"))
        assert cfg.removed == {"id-b"}
        a.propose(reg("j1", T0))
        done = a.snaps.written
        a.snaps.now()
        wait(lambda: a.snaps.written > done and a.log.snapshot_index >= cfg.index,
             "a snapshot past the removal")
        assert a.log.read_snapshot(a.log.snapshot_index)["raft"]["config"]["removed"] \
            == ["id-b"]
    finally:
        a.stop(timeout_s=1)
    a = node_a()
    try:
        assert a.config.removed == {"id-b"} and "j1" in a.state.jobs
    finally:
        a.stop(timeout_s=1)


def test_a_snapshot_asked_for_while_one_is_written_waits_for_it(tmp_path):
    """Snapshots Rule 1: now() while a child still writes the same index waited for
    nothing, and two children wrote snapshot-N.json.tmp; the one that renamed second
    failed with ENOENT (a suite run saw it, through the learner's snapshot and the test
    above asking for one at the same index)."""
    n = RaftNode(RaftLog(str(tmp_path / "a"), SNAPSHOTS), "a", fsm=JobFSM(),
                 snapshot_entries=10**6, now_ms=lambda: T0, fsync=lambda fd: None,
                 tick_s=0.01, election_ticks=10)
    n.start()
    try:
        for i in range(50):
            n.propose(reg(f"j{i}", T0))
        for _ in range(3):
            n.snaps.now()               # the same applied index each time
        wait(lambda: n.snaps.child is None, "the snapshots written")
        assert (n.snaps.written, n.snaps.failures, n.snaps.error) == (3, 0, None)
    finally:
        n.stop(timeout_s=1)
