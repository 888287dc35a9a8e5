"""WorkerTable: bounded, longest silent dropped first."""
from dqorch.workers import WorkerTable


def beat(table, wid):
    table.heartbeat({"worker_id": wid, "worker_type": "python", "capacity": 1,
                     "current_load": 0, "stats": {}})


def test_the_table_is_bounded_and_drops_the_longest_silent_worker():
    now = [1000]
    table = WorkerTable(30, lambda: now[0], max_workers=3)
    for wid in ("a", "b", "c"):
        beat(table, wid)
        now[0] += 10
    beat(table, "a")                      # a heard again: b is now the longest silent
    beat(table, "d")
    assert sorted(table.workers) == ["a", "c", "d"] and table.dropped == 1
    for k in range(100):                  # a flood of new ids never grows it
        beat(table, f"x{k}")
    assert len(table.workers) == 3 and table.dropped == 101
    beat(table, "a")                      # a dropped worker comes back with its next beat
    assert "a" in table.workers and table.workers["a"]["heartbeats"] == 1
