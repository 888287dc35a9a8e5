"""Per-second counts of what happened to jobs over the last ten minutes, for the web
console's live graph (GET /api/rates). Soft state of the node that applied the
commands (every member applies them all), lost on restart like HTTP stats.

Rule 1: a ring of `window_s` one-second buckets per series; the bucket of second t is
t % window_s, and a bucket is reset when a new second claims it, so reading costs
O(window_s) and counting O(1), however long the node was idle. The clock is passed in.
"""
from __future__ import annotations

SERIES = ("registered", "completed", "failed")


class Rates:
    def __init__(self, now_ms, window_s: int = 600) -> None:
        self.now_ms = now_ms
        self.window_s = window_s
        self._counts = {s: [0] * window_s for s in SERIES}
        self._second = [-1] * window_s       # which second each bucket holds

    def add(self, series: str, n: int = 1) -> None:
        sec = self.now_ms() // 1000
        k = sec % self.window_s
        if self._second[k] != sec:           # Rule 1: a new second takes the bucket
            self._second[k] = sec
            for counts in self._counts.values():
                counts[k] = 0
        self._counts[series][k] += n

    def snapshot(self) -> dict:
        """{"interval_s", "window_s", "now", "series": {name: [counts, oldest first]}};
        the last bucket is the current (partial) second."""
        now = self.now_ms()
        sec = now // 1000
        out = {s: [] for s in SERIES}
        for t in range(sec - self.window_s + 1, sec + 1):
            k = t % self.window_s
            fresh = self._second[k] == t
            for s in SERIES:
                out[s].append(self._counts[s][k] if fresh else 0)
        return {"interval_s": 1, "window_s": self.window_s, "now": now, "series": out}
