"""raft/pool.py's Lane: calls in one OS thread of its own, answered in order to the
greenlet that made each, exceptions carried back, the hub free meanwhile."""
import time

import gevent
import pytest
from gevent.monkey import get_original

from dqorch.raft import pool
from dqorch.raft.pool import Lane

thread_id = get_original("threading", "get_ident")   # patched: the greenlet's


def test_a_call_runs_in_another_os_thread_and_returns_its_value():
    lane = Lane()
    assert lane.call(lambda a, b: (a + b, thread_id()), 2, 3)[0] == 5
    assert lane.call(thread_id) != thread_id()


def test_an_exception_is_raised_in_the_caller():
    lane = Lane()

    def fails():
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        lane.call(fails)
    assert lane.call(lambda: "still works") == "still works"


def test_the_hub_runs_other_greenlets_while_a_call_blocks():
    """The point of the lane: a slow fsync does not stop the hub."""
    lane = Lane()
    ticks = []

    def ticker():
        for _ in range(5):
            ticks.append(time.monotonic())
            gevent.sleep(0.01)
    g = gevent.spawn(ticker)
    lane.call(get_original("time", "sleep"), 0.2)    # a real blocking sleep
    during = len(ticks)
    g.join()
    assert during == 5


def test_calls_from_many_greenlets_each_get_their_own_answer_in_order():
    lane = Lane()
    order = []

    def call(n):
        order.append(n)
        return lane.call(lambda: (order.append(-n), n * 10)[1])
    gs = [gevent.spawn(call, n) for n in range(1, 21)]
    gevent.joinall(gs, timeout=10)                # a lost answer fails, not hangs
    assert [g.value for g in gs] == [n * 10 for n in range(1, 21)]
    ran = [-x for x in order if x < 0]
    assert ran == sorted(ran)
    assert lane._out == 0 and not lane._async.ref  # idle: it holds the hub's loop no more


def test_a_caller_killed_while_waiting_leaves_the_lane_working():
    lane = Lane()
    g = gevent.spawn(lane.call, get_original("time", "sleep"), 0.1)
    gevent.sleep(0.01)
    g.kill()
    assert lane._out == 0 and not lane._async.ref
    assert lane.call(lambda: 7) == 7
    assert lane._out == 0 and not lane._async.ref


def test_without_a_thread_the_calls_go_to_the_hubs_threadpool(monkeypatch):
    """A process out of threads: the lane cannot start its own, and must not hang."""
    def refuse(*_args):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(pool, "_start_thread", refuse)
    lane = Lane()
    assert lane.call(lambda: thread_id()) != thread_id()
    assert lane._async is None
