"""clock.py: the cluster's time, on hand-driven clocks."""
from dqorch.clock import STALE_S, ClusterClock

H2 = 2 * 3600 * 1000


class Clocks:
    def __init__(self, wall=1_700_000_000_000, mono=50_000):
        self.wall, self.mono = wall, mono

    def tick(self, ms):
        self.wall += ms
        self.mono += ms


def make(c: Clocks):
    return ClusterClock(wall_ms=lambda: c.wall, mono_ms=lambda: c.mono)


def test_alone_the_cluster_time_is_the_wall_clock():
    c = Clocks()
    clock = make(c)
    assert clock.now_ms() == c.wall and clock.skew_ms() == 0


def test_one_member_two_hours_ahead_is_outvoted_and_knows_it():
    """Rule 1: the skewed member's own stamps and timers use the others' time."""
    me, a, b = Clocks(wall=1_700_000_000_000 + H2), Clocks(), Clocks()
    clock = make(me)
    clock.sample("a", a.wall)
    clock.sample("b", b.wall + 3)            # a few ms of disagreement: fine
    assert abs(clock.now_ms() - a.wall) <= 3
    assert abs(clock.skew_ms() - H2) <= 3
    # Its own wall clock jumps (an NTP step, an operator): nothing moves.
    me.wall -= H2
    assert abs(clock.now_ms() - a.wall) <= 3 and abs(clock.skew_ms()) <= 3


def test_the_right_member_keeps_its_time_beside_a_skewed_one():
    me, a, b = Clocks(), Clocks(), Clocks(wall=1_700_000_000_000 - H2)
    clock = make(me)
    clock.sample("a", a.wall)
    clock.sample("b", b.wall)
    assert clock.now_ms() == me.wall and clock.skew_ms() == 0


def test_the_cluster_time_runs_on_the_monotonic_clock_between_samples():
    me, a, b = Clocks(wall=1_700_000_000_000 + H2), Clocks(), Clocks()
    clock = make(me)
    clock.sample("a", a.wall)
    clock.sample("b", b.wall)
    for _ in range(5):
        me.tick(500)
        a.tick(500)
        clock.sample("a", a.wall)
        clock.sample("b", a.wall)
        assert clock.now_ms() == a.wall


def test_stale_samples_count_no_more():
    me = Clocks(wall=1_700_000_000_000 + H2)
    clock = make(me)
    clock.sample("a", 1_700_000_000_000)
    clock.sample("b", 1_700_000_000_000)
    me.tick(int(STALE_S * 1000) + 1)
    assert clock.now_ms() == me.wall and clock.peers_heard() == 0      # Rule 2
