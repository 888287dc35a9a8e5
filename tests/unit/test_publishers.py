"""The dispatcher's two pipelines, driven one step at a time with no node, no broker
and no clock: a fake broker that records publishes and lets the test confirm, reject
or hold each token, and a fake propose that records marks and applies them to a real
State (state.apply) when the test says so. Dispatcher.check() runs after every step,
as tests/unit/helpers.check() does for the State.

The loop greenlet that Dispatcher.start() spawns never runs here (nothing yields);
the test calls step() itself."""
from unittest import mock

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as hs

import dqorch.dispatch as D
from dqorch import state as S
from dqorch.dispatch import Dispatcher, EventToken, JobToken, View
from dqorch.jobs import PENDING
from dqorch.raft.core import NotLeader
from tests.unit.helpers import T0, cancel, check, fail, reg, rep

TERM = 3


class Result:
    """What RaftNode.propose_async returns, answered when the test says so."""

    def __init__(self) -> None:
        self._links: list = []
        self.ok = None
        self.exception = None

    def rawlink(self, fn) -> None:
        self._links.append(fn)

    def successful(self) -> bool:
        return self.ok

    def answer(self, ok: bool) -> None:
        self.ok, self.exception = ok, None if ok else OSError("log not writable")
        for fn in self._links:
            fn(self)


class Rig:
    """A State, a fake broker, a fake propose and a Dispatcher wired to them."""

    def __init__(self, window: int = 1000) -> None:
        self.st = S.State()
        self.t_ms = 0                  # the fake clocks: wall T0 + t_ms, monotonic t_ms
        self.window = window
        self.out: list = []            # tokens published, not yet handed back
        self.published: list = []      # (token, routing key), every publish
        self.redeclares = 0
        self.proposals: list = []      # (cmd, Result) proposed, not yet answered
        self.leader = True             # propose raises NotLeader when False
        self.writable = True           # View.may_publish
        self.disp = Dispatcher(
            View(lambda: self.st, lambda term: self.leader and term == TERM,
                 lambda term: self.leader and self.writable and term == TERM),
            self.propose, self, now_ms=self.now_ms, clock=lambda: self.t_ms / 1000)

    def now_ms(self) -> int:
        return T0 + self.t_ms

    # the broker's side (dqorch.broker.Broker's publishing surface)

    def free_slots(self) -> int:
        return self.window - len(self.out)

    def redeclare(self) -> bool:
        self.redeclares += 1
        return True

    def publish(self, token, exchange, key, body, props, mandatory, message_id=None):
        if type(token) is JobToken:
            job = self.st.jobs[token.job_id]
            assert job.status == PENDING, "published a job that is not pending"
            assert job.attempt == token.attempt
            not_before = job.get("not_before")
            assert not_before is None or not_before <= self.now_ms(), \
                "published a retry before its backoff ended (Rule 4)"
            assert all(getattr(t, "job_id", None) != token.job_id for t in self.out)
            assert key not in self.st.paused_queues, "published to a paused queue (Rule 6)"
        else:
            assert type(token) is EventToken
            assert token.seq > self.st.outbox_done, "published a marked event again"
        self.out.append(token)
        self.published.append((token, key))
        return True

    def confirm(self, tokens) -> None:
        for t in tokens:
            self.out.remove(t)
        self.disp.on_confirmed(list(tokens))

    def reject(self, tokens, reason: str) -> None:
        for t in tokens:
            self.out.remove(t)
        self.disp.on_rejected(list(tokens), reason)

    # the log's side (RaftNode.propose_async and its listeners)

    def propose(self, cmd: dict, lazy: bool = False) -> Result:
        assert lazy, "a mark rides in the next commit round"
        assert cmd["term"] == TERM
        if not self.leader:
            raise NotLeader("n2")
        result = Result()
        self.proposals.append((cmd, result))
        return result

    def commit(self, cmd: dict) -> dict:
        """A client command committed and applied, listeners told."""
        cmd = dict(cmd, at_ms=self.now_ms())
        out = S.apply(self.st, cmd)
        self.disp.on_applied(cmd, out)
        return out

    def answer(self, ok: bool = True) -> None:
        """The oldest mark committed and applied (ok), or failed to be written."""
        cmd, result = self.proposals.pop(0)
        if ok:
            self.commit(cmd)
        result.answer(ok)

    def step(self) -> None:
        self.disp.step()
        self.check()

    def check(self) -> None:
        self.disp.check(self.out)
        check(self.st)

    def jobs_published(self) -> list:
        return [t for t, _ in self.published if type(t) is JobToken]

    def job_tokens(self, id_=None) -> list:
        return [t for t in self.out if type(t) is JobToken
                and (id_ is None or t.job_id == id_)]


def started(**kw) -> Rig:
    rig = Rig(**kw)
    rig.disp.start(TERM)
    rig.check()
    return rig


# One pipeline at a time ###################################################

def test_a_job_is_published_confirmed_and_marked_queued():
    rig = started()
    rig.commit(reg("j1", T0))
    rig.step()
    [tok] = rig.job_tokens()
    assert tok.job_id == "j1" and tok.attempt == rig.st.jobs["j1"].attempt
    rig.confirm([tok])
    rig.step()
    [(cmd, _)] = rig.proposals
    assert cmd["op"] == "mark_queued" and cmd["items"] == [["j1", tok.attempt]]
    rig.answer()
    rig.step()
    assert rig.st.jobs["j1"].status == "queued"
    assert rig.disp.backlog() == {"jobs_to_publish": 0, "jobs_waiting_backoff": 0,
                                  "jobs_in_flight": 0, "events_unpublished": 0,
                                  "jobs_held_by_limits": 0}


def test_a_paused_queue_gets_nothing_until_resumed_and_then_its_pending_jobs():
    """Rule 6, and the other queues are not held by it."""
    rig = started()
    rig.commit({"op": "queue_pause", "queue": "job.low", "paused": True})
    rig.commit(reg("low", T0, priority=1))
    rig.commit(reg("high", T0, priority=10))
    rig.step()
    assert [t.job_id for t in rig.jobs_published()] == ["high"]
    rig.t_ms += 60_000
    rig.step()
    assert [t.job_id for t in rig.jobs_published()] == ["high"]
    rig.commit({"op": "queue_pause", "queue": "job.low", "paused": False})
    rig.step()
    assert [t.job_id for t in rig.jobs_published()] == ["high", "low"]


def _run(rig, id_, worker="w1"):
    """A worker takes the job: running (and the test says when it ends)."""
    rig.commit(rep(id_, "running", T0 + rig.t_ms, worker=worker))


def _confirm_and_mark(rig):
    rig.confirm(rig.job_tokens())
    rig.step()
    while rig.proposals:
        rig.answer()
    rig.step()


def test_a_concurrency_limit_of_two_never_has_three_queued_or_running():
    """Rule 7 (limits.py): publishes in flight count as much as queued jobs."""
    rig = started()
    rig.commit({"op": "limit_put", "type": "etl", "concurrency": 2, "rate": None})
    for i in range(5):
        rig.commit(reg(f"e{i}", T0, type="etl"))
    rig.commit(reg("other", T0, type="mail"))
    rig.step()
    assert sorted(t.job_id for t in rig.jobs_published()) == ["e0", "e1", "other"]
    assert rig.disp.backlog()["jobs_held_by_limits"] == 3
    _confirm_and_mark(rig)
    rig.step()
    assert len(rig.jobs_published()) == 3                  # queued count as active
    _run(rig, "e0")
    rig.commit(rep("e0", "completed", T0 + 1))
    rig.step()
    assert [t.job_id for t in rig.jobs_published()][-1] == "e2"
    assert len(rig.jobs_published()) == 4
    rig.commit({"op": "limit_delete", "type": "etl"})
    rig.step()
    assert sorted(t.job_id for t in rig.jobs_published()[4:]) == ["e3", "e4"]


def test_a_rate_limit_publishes_at_most_that_many_a_second():
    rig = started()
    rig.commit({"op": "limit_put", "type": "api", "concurrency": None, "rate": 2})
    for i in range(6):
        rig.commit(reg(f"a{i}", T0, type="api"))
    rig.step()
    assert len(rig.jobs_published()) == 2                  # the bucket holds max(1, rate)
    for second in range(1, 3):
        rig.t_ms += 1000
        rig.step()
        assert len(rig.jobs_published()) == 2 + 2 * second


def test_a_new_leader_holds_what_it_finds_pending_while_its_running_may_arrive():
    """Rule 5: a job the last leader published a moment ago is pending in the state
    until its worker's `running` commits. Published again at once, a second delivery
    of the attempt ran beside the first, and its reports were read as the next
    attempt's when the first failed. Held, the `running` comes first."""
    rig = Rig()
    rig.st = S.State()
    S.apply(rig.st, dict(reg("j1", T0), at_ms=T0))
    rig.disp.start(TERM, hold_s=1.0)
    rig.step()
    assert rig.jobs_published() == []                # held
    rig.commit({"op": "report", "id": "j1", "status": "running", "worker_id": "w1"})
    rig.t_ms += 1000
    rig.step()
    assert rig.jobs_published() == []                # running: nothing to publish
    rig.commit(reg("j2", T0))                         # after the hold: at once
    rig.step()
    assert [t.job_id for t in rig.jobs_published()] == ["j2"]


def test_events_are_marked_published_up_to_the_confirmed_prefix():
    rig = started()
    rig.commit(reg("e1", T0, publish=False))
    rig.commit(rep("e1", "running", T0))
    rig.commit(rep("e1", "completed", T0))
    rig.step()
    first, second = [t for t in rig.out if type(t) is EventToken]
    rig.confirm([second])               # out of order: nothing to mark yet
    rig.step()
    assert not rig.proposals
    rig.confirm([first])
    rig.step()
    [(cmd, _)] = rig.proposals
    assert cmd == {"op": "mark_published", "upto": second.seq, "term": TERM}
    rig.answer()
    rig.step()
    assert rig.st.outbox_done == second.seq and not rig.st.outbox


def test_a_failed_mark_is_retried_after_its_backoff_and_nothing_is_published_again():
    rig = started()
    rig.commit(reg("j1", T0))
    rig.step()
    rig.confirm(rig.job_tokens())
    rig.step()
    rig.answer(ok=False)                # the log cannot be written
    rig.step()
    assert not rig.proposals, "the mark waits its backoff"
    rig.t_ms += int(D.MARK_RETRY_S[0] * 1000)
    rig.step()
    assert [c["op"] for c, _ in rig.proposals] == ["mark_queued"]
    rig.answer()
    rig.step()
    assert rig.st.jobs["j1"].status == "queued"
    assert len(rig.jobs_published()) == 1


def test_a_mark_this_node_cannot_propose_is_kept_and_proposed_again():
    """Rule 2. Hypothesis found the case: proposals refused for a moment (a leadership
    transfer that did not happen) while the node leads on; the mark was dropped and
    the job, its message confirmed, stayed pending for good."""
    rig = started()
    rig.commit(reg("j1", T0))
    rig.step()
    rig.leader = False                  # refused for now
    rig.confirm(rig.job_tokens())
    rig.step()
    assert not rig.proposals and rig.disp.jobs._marking == {"j1"}
    assert rig.st.jobs["j1"].status == PENDING
    rig.leader = True                   # leading on
    rig.t_ms += 1_000                   # past the marks' backoff
    rig.step()
    rig.answer()
    assert rig.st.jobs["j1"].status == "queued"
    assert len(rig.jobs_published()) == 1          # marked, never published again


def test_a_stale_mark_does_not_publish_a_retry_before_its_backoff():
    """Rule 4 on the path that once pushed ids straight to the publish queue: attempt
    1 is confirmed after it failed and attempt 2 waits out a backoff. Its mark is
    stale, the job still pending: attempt 2 goes once the backoff is over, not at once."""
    rig = started()
    rig.commit(reg("b1", T0))
    rig.step()
    [tok] = rig.job_tokens()
    rig.commit(rep("b1", "running", T0))
    rig.commit(fail("b1", T0, backoff_ms=10_000))
    not_before = rig.st.jobs["b1"]["not_before"]
    rig.confirm([tok])
    rig.step()
    rig.answer()                        # stale: attempt 1 is not the job's attempt
    rig.step()
    assert rig.st.jobs["b1"].status == PENDING
    assert len(rig.jobs_published()) == 1, "published before its backoff"
    rig.t_ms = not_before - T0
    rig.step()
    [tok2] = rig.job_tokens()
    assert tok2.attempt == rig.st.jobs["b1"].attempt != tok.attempt


def test_jobs_lost_with_the_connection_go_first_and_in_order():
    rig = started(window=3)
    for i in range(5):
        rig.commit(reg(f"c{i}", T0))
    rig.step()
    assert [t.job_id for t in rig.job_tokens()] == ["c0", "c1", "c2"]
    rig.reject(rig.job_tokens(), "connection_lost")
    rig.step()
    assert [t.job_id for t in rig.job_tokens()] == ["c0", "c1", "c2"]


def test_a_returned_job_waits_for_its_round_and_ends_the_episode_when_routed():
    rig = started()
    rig.commit(reg("r1", T0))
    rig.step()
    rig.reject(rig.job_tokens(), "returned")
    rig.step()
    assert "job.medium" in rig.disp.unroutable and rig.redeclares == 1
    assert not rig.job_tokens()
    rig.t_ms += int(D.RETURNED_RETRY_S[0] * 1000)
    rig.step()
    rig.confirm(rig.job_tokens())
    rig.step()
    assert not rig.disp.unroutable


# Any order of events ######################################################

IDS = [f"h{i}" for i in range(4)]
action = hs.one_of(
    hs.tuples(hs.just("register"), hs.sampled_from(IDS)),
    hs.tuples(hs.just("running"), hs.sampled_from(IDS)),
    hs.tuples(hs.just("fail"), hs.sampled_from(IDS), hs.sampled_from([0, 700, 3000])),
    hs.tuples(hs.just("complete"), hs.sampled_from(IDS)),
    hs.tuples(hs.just("cancel"), hs.sampled_from(IDS)),
    hs.tuples(hs.just("confirm"), hs.integers(0, 5)),
    hs.tuples(hs.just("reject"), hs.integers(0, 5),
              hs.sampled_from(["nack", "returned", "connection_lost"])),
    hs.tuples(hs.just("answer"), hs.booleans()),
    hs.tuples(hs.just("writable"), hs.booleans()),
    hs.tuples(hs.just("leader"), hs.booleans()),
    hs.tuples(hs.just("restart")),
    hs.tuples(hs.just("tick"), hs.sampled_from([100, 500, 2000])),
    hs.tuples(hs.just("step")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(action, max_size=60), hs.sampled_from([1000, 2]))
def test_any_order_keeps_the_invariants_and_publishes_everything_at_last(actions, window):
    with mock.patch.object(D, "MAX_TODO", 3):   # the rescan path too
        rig = started(window=window)
        for a in actions:
            note(repr(a))
            kind = a[0]
            at = rig.now_ms()
            if kind == "register":
                rig.commit(reg(a[1], at))
            elif kind in ("running", "complete", "fail", "cancel") and a[1] in rig.st.jobs:
                rig.commit(rep(a[1], "running", at) if kind == "running" else
                           rep(a[1], "completed", at) if kind == "complete" else
                           fail(a[1], at, backoff_ms=a[2]) if kind == "fail" else
                           cancel(a[1], at))
            elif kind == "confirm" and rig.out:
                rig.confirm([rig.out[a[1] % len(rig.out)]])
            elif kind == "reject" and rig.out:
                rig.reject([rig.out[a[1] % len(rig.out)]], a[2])
            elif kind == "answer" and rig.proposals:
                rig.answer(a[1])
            elif kind == "writable":
                rig.writable = a[1]
            elif kind == "leader":
                rig.leader = a[1]
            elif kind == "restart":          # stepped down and elected again
                rig.disp.stop()
                rig.reject(list(rig.out), "connection_lost")   # Broker.stop
                rig.disp.start(TERM)
            elif kind == "tick":
                rig.t_ms += a[1]
            elif kind == "step":
                rig.step()
            rig.check()
        # Everything healthy again: every pending job is queued and every event
        # marked, in a bounded number of passes.
        rig.leader = rig.writable = True
        for _ in range(30):
            rig.t_ms += 10_000
            rig.step()
            rig.confirm(list(rig.out))
            rig.step()
            while rig.proposals:
                rig.answer()
            rig.step()
        assert not rig.st.by_status[PENDING], "a pending job was never published"
        assert rig.st.outbox_done == rig.st.outbox_next - 1, "an event never marked"
        rig.disp.stop()


def test_an_event_rejected_while_the_next_is_in_flight_is_published_again_alone():
    """Hypothesis found it (E2): with a window of 2, event 1 nacked while event 2 was
    in flight; the rewind published 2 a second time, and the second copy's confirm,
    arriving once 2 was acked, stayed below acked for good. E4: a seq in flight is
    skipped by the rewind, and a confirm of a seq already acked counts for nothing."""
    rig = started(window=2)
    at = rig.now_ms()
    rig.commit(reg("h0", at))
    rig.commit(rep("h0", "running", at))
    rig.commit(fail("h0", at, backoff_ms=0))
    rig.step()
    first, second = [t for t in rig.out if type(t) is EventToken]
    rig.reject([first], "nack")
    rig.step()
    assert [t.seq for t in rig.out if type(t) is EventToken] == [2, 1]   # 1 again, 2 once
    rig.confirm(list(rig.out))
    rig.step()
    assert [t.seq for t, _ in rig.published if type(t) is EventToken] == [1, 2, 1]
    while rig.proposals:
        rig.answer()
    rig.step()
    assert rig.st.outbox_done == 2
