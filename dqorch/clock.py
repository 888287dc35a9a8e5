"""The cluster's time: what every member stamps commands with and measures durations
by, so that one member's wrong wall clock decides nothing (issue 28 §2: a leader 2 h
ahead timed out healthy jobs and evicted young ones, and its stamps then froze the
log's time for two hours).

Every member tells the others its wall clock every half second (cluster.py, b"B").
A member keeps, per member (itself included), the offset `wall - monotonic` seen
(for a peer: its wall clock when it sent, against our monotonic clock when it
arrived: late by the one-way delay, milliseconds). The cluster's time is our
monotonic clock plus the median of the fresh offsets.

Rule 1: a member's own wall clock is one vote among the members': with a majority
right, the median is right whatever one member's clock says, and a jump of our own
wall clock moves nothing until it is the median.
Rule 2: alone (no fresh word from a peer), the cluster's time is our wall clock.
Rule 3: `skew_ms` is how far our wall clock is from the cluster's time: a metric, a
health check past `max_clock_skew_s`, and a leader past it hands leadership over
(peer_news.py). Pure but for the clocks passed in.
"""
from __future__ import annotations

import time

STALE_S = 3.0                 # an offset older than this counts no more (Rule 2)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _mono_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class ClusterClock:
    def __init__(self, wall_ms=_wall_ms, mono_ms=_mono_ms) -> None:
        self.wall_ms = wall_ms
        self.mono_ms = mono_ms
        self._offsets: dict[str, tuple[int, int]] = {}   # peer -> (offset, heard at mono)

    def sample(self, peer: str, peer_wall_ms: int) -> None:
        """peer says its wall clock reads peer_wall_ms (as it sent it)."""
        now = self.mono_ms()
        self._offsets[peer] = (peer_wall_ms - now, now)

    def forget(self, peer: str) -> None:
        self._offsets.pop(peer, None)

    def _median_offset(self, mono: int, own: int) -> int:
        fresh = sorted([own] + [o for o, at in self._offsets.values()
                                if mono - at <= STALE_S * 1000])
        # The lower median of an even count: two members disagreeing have no majority,
        # and either may be right; it is at least one member's clock.
        return fresh[(len(fresh) - 1) // 2]

    def now_ms(self) -> int:
        mono = self.mono_ms()
        own = self.wall_ms() - mono
        if not self._offsets:
            return mono + own                     # alone: the wall clock (Rule 2)
        return mono + self._median_offset(mono, own)

    def skew_ms(self) -> int:
        """Our wall clock minus the cluster's time (Rule 3)."""
        mono = self.mono_ms()
        own = self.wall_ms() - mono
        return own - self._median_offset(mono, own)

    def peers_heard(self) -> int:
        mono = self.mono_ms()
        return sum(1 for _, at in self._offsets.values() if mono - at <= STALE_S * 1000)
