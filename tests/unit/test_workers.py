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


def test_pages_walk_every_worker_once_by_id():
    from dqorch import parse
    now = [1000]
    table = WorkerTable(30, lambda: now[0])
    ids = ["w 1", "w&2", "w#3", "w+4", "ジ5", "a/6", "z"]
    for wid in ids:
        beat(table, wid)
    seen, after, pages = [], None, 0
    while True:
        q = parse.workers_query({"limit": "2", "cursor": None if after is None
                                 else parse.worker_cursor(after)})
        page, count, after = table.page({"z": 3}, q["limit"], q["after"])
        assert count == len(ids) and len(page) <= 2
        seen += [w["worker_id"] for w in page]
        pages += 1
        if after is None:
            break
    assert seen == sorted(ids) and pages == 4
    assert {w["worker_id"]: w["running_jobs"] for w in table.listing({"z": 3})}["z"] == 3
    beat(table, "b-new")                 # a join is seen by the next walk
    assert "b-new" in [w["worker_id"] for w in table.page({}, 100)[0]]
    assert table.page({}, 100, after="\U0010ffff") == ([], 8, None)


def test_the_workers_query_is_checked():
    import pytest
    from dqorch import parse
    from dqorch.errors import ApiError
    assert parse.workers_query({}) == {"limit": 10000, "after": None}
    assert parse.workers_query({"cursor": parse.worker_cursor("w&1")})["after"] == "w&1"
    for q in ({"limit": "0"}, {"limit": "10001"}, {"limit": "x"}, {"cursor": "!!"},
              {"cursor": "_w"}):
        with pytest.raises(ApiError) as e:
            parse.workers_query(q)
        assert e.value.field in ("limit", "cursor")


def test_a_worker_silent_after_saying_it_was_idle_is_stopped_not_unresponsive():
    now = [1000]
    table = WorkerTable(30, lambda: now[0])
    for wid, load in (("idle", 0), ("busy", 2), ("idle-but-holds", 0)):
        table.heartbeat({"worker_id": wid, "worker_type": "python", "capacity": 4,
                         "current_load": load, "stats": {}})
    running = {"idle-but-holds": 1}       # the node records a job running there
    now[0] += 31_000
    statuses = {w["worker_id"]: w["status"] for w in table.page(running, 10)[0]}
    assert statuses == {"idle": "stopped", "busy": "unresponsive",
                        "idle-but-holds": "unresponsive"}
    assert table.counts(running) == {"total": 3, "active": 0, "unresponsive": 2,
                                     "stopped": 1}
    # Silent either way: the jobs of a silent worker are still given up.
    assert table.is_unresponsive("idle") and table.check() == sorted(statuses)


def test_load_history_keeps_the_last_heartbeats_oldest_first():
    from dqorch.workers import LOAD_HISTORY_MAX
    now = [1000]
    table = WorkerTable(30, lambda: now[0])
    for n in range(LOAD_HISTORY_MAX + 5):
        table.heartbeat({"worker_id": "w", "worker_type": "t", "capacity": 9,
                         "current_load": n % 7, "stats": {}})
        now[0] += 10
    hist = table.detail("w", 0)["load_history"]
    assert len(hist) == LOAD_HISTORY_MAX
    assert hist[0] == [1050, 5 % 7] and hist[-1] == [1000 + 10 * (LOAD_HISTORY_MAX + 4),
                                                    (LOAD_HISTORY_MAX + 4) % 7]
    assert table.detail("nope", 0) is None
    assert table.forget("w") and not table.forget("w") and table.detail("w", 0) is None
