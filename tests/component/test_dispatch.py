"""Dispatcher rules (dispatch.py Rule 1 and Rule 2) against a real RaftNode on a real
data_dir. The broker's side is a recorder: these tests drive exactly the confirms a
broker would send, in an order a real one cannot be made to produce on demand."""
import os

import gevent
import pytest
from gevent import monkey

from dqorch import state as S
from dqorch.dispatch import Dispatcher, EventToken, JobToken, View, node_view
from dqorch.raft.core import APPEND, Message
from dqorch.raft.log import RaftLog
from dqorch.fsm import SNAPSHOTS, JobFSM
from dqorch.raft.node import RaftNode
from tests.unit.helpers import T0, reg, rep


class Recorder:
    """Takes every publish; confirms only when the test says so."""

    def __init__(self) -> None:
        self.published = []
        self.redeclares = 0

    def free_slots(self) -> int:
        return 1000

    def redeclare(self) -> bool:
        self.redeclares += 1
        return True

    def publish(self, token, exchange, key, body, props, mandatory, message_id=None) -> bool:
        self.published.append(token)
        return True


# fsync runs in a real thread: hold it with a real (unpatched) Event, so a test can
# keep a commit in flight while confirms arrive.
GATE = monkey.get_original("threading", "Event")()


@pytest.fixture
def rig(tmp_path):
    GATE.set()
    applied = []                 # the dispatcher's hook, once it exists
    node = RaftNode(RaftLog(str(tmp_path), SNAPSHOTS), "n1", fsm=JobFSM(),
                    snapshot_entries=10**6,
                    now_ms=lambda: T0, fsync=lambda fd: GATE.wait(30),
                    on_applied=(lambda cmd, out: applied[0](cmd, out) if applied else None,))
    node.start()
    broker = Recorder()
    disp = Dispatcher(node_view(node), node.propose_async, broker, now_ms=lambda: T0)
    applied.append(disp.on_applied)
    disp.start(node.term)
    yield node, broker, disp
    disp.stop()
    node.stop()


def wait(pred, what):
    for _ in range(500):
        if pred():
            return
        gevent.sleep(0.01)
    raise AssertionError(what)


def test_event_confirms_that_arrive_during_a_mark_are_marked_next(rig):
    node, broker, disp = rig
    node.propose(reg("e1", T0, publish=False))
    node.propose(rep("e1", "running", T0 + 1))
    node.propose(rep("e1", "completed", T0 + 2))
    wait(lambda: sum(type(t) is EventToken for t in broker.published) == 2, "two events published")
    first, second = [t for t in broker.published if type(t) is EventToken]
    GATE.clear()
    disp.on_confirmed([first])
    wait(lambda: disp.events._marking is not None, "a mark_published in flight")
    disp.on_confirmed([second])              # arrives while that mark is in flight
    gevent.sleep(0.1)
    GATE.set()
    wait(lambda: node.state.outbox_done == 2, "the second confirm marked too")
    assert disp.backlog()["events_unpublished"] == 0


def test_a_confirm_on_a_node_that_is_not_leader_publishes_nothing_again(rig):
    node, broker, disp = rig
    node.propose(reg("j1", T0))
    wait(lambda: any(type(t) is JobToken for t in broker.published), "job published")
    token = [t for t in broker.published if type(t) is JobToken][0]
    # Deposed before the confirm: a leader of a newer term speaks (a real message).
    node.step_later(Message(APPEND, frm="n2", to="n1", term=node.term + 1,
                            index=node.commit_index, log_term=node.term))
    wait(lambda: node.role != "leader", "deposed")
    disp.on_confirmed([token])
    gevent.sleep(0.6)                        # one dispatch pass at least (0.5 s wake)
    assert [t for t in broker.published if type(t) is JobToken] == [token]
    assert S.get_job(node.state, "j1")["status"] == "pending"   # the next leader's work


def test_a_failed_mark_is_retried_and_the_job_not_published_again(rig):
    node, broker, disp = rig
    node.propose(reg("j1", T0))
    wait(lambda: any(type(t) is JobToken for t in broker.published), "job published")
    token = [t for t in broker.published if type(t) is JobToken][0]
    real_fd = node.log._fd
    node.log._fd = os.open(os.path.join(node.log.dir, "LOCKX"), os.O_RDONLY | os.O_CREAT)
    disp.on_confirmed([token])               # its mark_queued cannot be written
    wait(lambda: not node.log_ok, "the mark failed")
    gevent.sleep(1.2)
    assert [t for t in broker.published if type(t) is JobToken] == [token], "published again"
    assert not node.log_ok
    os.close(node.log._fd)
    node.log._fd = real_fd                   # the disk is back
    wait(lambda: S.get_job(node.state, "j1")["status"] == "queued", "mark retried")
    assert node.log_ok
    assert [t for t in broker.published if type(t) is JobToken] == [token]


def test_a_late_mark_of_the_last_leader_does_not_stop_the_outbox_being_marked(rig):
    """A new leader's dispatcher starts, then the last leader's mark_published is
    applied (its no-op committed it). The events it covers are never published again,
    so their confirms never come: the dispatcher must go on from outbox_done, or no
    mark is ever proposed again and the outbox grows without bound."""
    node, broker, disp = rig
    for i in range(3):
        node.propose(reg(f"j{i}", T0, publish=False))
        node.propose(rep(f"j{i}", "running", T0 + 1))
    st = node.state
    disp.stop()
    broker.published.clear()
    disp.start(node.term)
    node.propose({"op": "mark_published", "upto": st.outbox_next - 1, "term": node.term})
    for i in range(3, 6):
        node.propose(reg(f"j{i}", T0, publish=False))
        node.propose(rep(f"j{i}", "running", T0 + 1))
    wait(lambda: sum(type(t) is EventToken for t in broker.published) >= 3, "new events published")
    disp.on_confirmed([t for t in broker.published if type(t) is EventToken])
    wait(lambda: st.outbox_done == st.outbox_next - 1, "every event marked published")
    assert not st.outbox


def test_ids_waiting_while_nothing_can_be_published_stay_bounded(rig, monkeypatch):
    """RabbitMQ down: every register added an id to publish, cancelled ones too."""
    import dqorch.dispatch as D
    node, broker, disp = rig
    monkeypatch.setattr(D, "MAX_TODO", 10)
    view = disp._view
    down = View(view.state, view.leads, lambda term: False)
    monkeypatch.setattr(disp, "_view", down)
    monkeypatch.setattr(disp.jobs, "_view", down)
    for i in range(30):
        node.propose(reg(f"down-{i}", T0))
        if i % 2:
            node.propose({"op": "cancel", "id": f"down-{i}"})
    assert len(disp.jobs._todo) <= 10
    monkeypatch.undo()                                # the broker is back
    disp.wake()
    wait(lambda: {t.job_id for t in broker.published if type(t) is JobToken}
         == {f"down-{i}" for i in range(0, 30, 2)}, "every pending job published once")


def test_a_queue_that_keeps_returning_jobs_is_retried_with_a_doubling_delay(
        rig, monkeypatch, caplog):
    """basic.return: no queue bound (job.medium deleted). Before: retried every second
    for ever, a WARNING each time, health and `why` none the wiser."""
    import logging

    import dqorch.dispatch as D
    node, broker, disp = rig
    monkeypatch.setattr(D, "RETURNED_RETRY_S", (0.05, 0.2))
    caplog.set_level(logging.INFO, logger="dqorch.dispatch")
    node.propose(reg("r1", T0))                          # priority 5: job.medium
    job = node.state.jobs["r1"]
    delays = []
    for n in range(1, 6):
        wait(lambda: sum(getattr(t, "job_id", None) == "r1" for t in broker.published) == n, f"publish {n}")
        token = [t for t in broker.published if getattr(t, "job_id", None) == "r1"][-1]
        disp.on_rejected([token], "returned")
        wait(lambda: disp.unroutable.get("job.medium") is not None
             and disp.unroutable["job.medium"].rounds == n, f"round {n}")
        delays.append(disp.unroutable["job.medium"].delay_s)
        assert disp.why_returned(job).startswith("pending: job.medium returned it "
                                                 "unroutable at ")
    assert delays == [0.05, 0.1, 0.2, 0.2, 0.2]          # doubling, capped
    assert broker.redeclares == 5                        # once a round, not a message
    assert disp.unroutable_status()["job.medium"]["returned"] == 5
    wait(lambda: sum(getattr(t, "job_id", None) == "r1" for t in broker.published) == 6, "publish 6")
    disp.on_confirmed([[t for t in broker.published if getattr(t, "job_id", None) == "r1"][-1]])
    wait(lambda: not disp.unroutable, "the episode over")
    wait(lambda: node.state.jobs["r1"]["status"] == "queued", "queued")
    assert disp.why_returned(node.state.jobs["r1"]) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "dqorch.dispatch"]
    assert sum("job queue unroutable" in m for m in lines) == 1, lines
    assert sum("job queue routable again queue=job.medium returned=5 rounds=5" in m
               for m in lines) == 1, lines
    assert not any("broker refused" in m for m in lines), lines


def test_a_stale_mark_does_not_publish_a_retry_before_its_backoff(rig):
    """The confirm of attempt 1 comes after attempt 1 failed and attempt 2 waits out a
    backoff: its mark_queued is stale, the job still pending. Before, that path pushed
    the id straight to the publish queue and attempt 2 went at once."""
    from tests.unit.helpers import fail
    node, broker, disp = rig
    node.propose(reg("b1", T0))
    wait(lambda: any(getattr(t, "job_id", None) == "b1" for t in broker.published), "attempt 1 published")
    token = broker.published[-1]
    node.propose(rep("b1", "running", T0 + 1))
    node.propose(fail("b1", T0 + 2, backoff_ms=60_000))
    assert node.state.jobs["b1"]["not_before"] > T0
    disp.on_confirmed([token])
    wait(lambda: not disp.jobs._marking, "the stale mark applied")
    gevent.sleep(0.6)                        # one dispatch pass at least
    assert [t for t in broker.published if getattr(t, "job_id", None) == "b1"] == [token]
