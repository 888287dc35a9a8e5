"""The console graph's ring of per-second counters (rates.py Rule 1)."""
from dqorch.rates import Rates


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_counts_land_in_their_second_oldest_first():
    clock = Clock(1_000_000)
    r = Rates(clock, window_s=5)
    r.add("registered", 3)
    clock.ms += 1000
    r.add("registered")
    r.add("failed", 2)
    snap = r.snapshot()
    assert snap["series"]["registered"] == [0, 0, 0, 3, 1]
    assert snap["series"]["failed"] == [0, 0, 0, 0, 2]
    assert snap["series"]["completed"] == [0] * 5
    assert (snap["window_s"], snap["interval_s"], snap["now"]) == (5, 1, clock.ms)


def test_a_second_that_comes_round_again_starts_from_zero():
    clock = Clock(7_000)
    r = Rates(clock, window_s=4)
    r.add("completed", 5)
    clock.ms += 4000                       # the same bucket, four seconds later
    r.add("registered")
    snap = r.snapshot()
    assert snap["series"]["completed"] == [0, 0, 0, 0]
    assert snap["series"]["registered"] == [0, 0, 0, 1]


def test_after_a_long_silence_everything_reads_zero():
    clock = Clock(50_000)
    r = Rates(clock, window_s=3)
    r.add("failed", 9)
    clock.ms += 3_600_000
    assert r.snapshot()["series"]["failed"] == [0, 0, 0]
    clock.ms -= 3_600_000 - 1000           # within the window again: still there
    assert r.snapshot()["series"]["failed"] == [0, 9, 0]
