"""Periodic schedules (issue 29): ticks, the leader's plan (catch-up and overlap), the
fire command's one-run-per-tick rule, DST in a named zone, and the spec's errors."""
import datetime
import json
import zoneinfo

import pytest

from dqorch import jobs, schedules
from dqorch import state as S
from dqorch.errors import ApiError

from tests.unit.helpers import T0, check, fresh, rep, run

KW = dict(max_retries=3, execution_timeout=300, max_job_bytes=60000, publish=True)
MIN = 60_000


def spec(**body) -> dict:
    return schedules.parse_spec("s", dict({"every": "1m"}, **body) if "cron" not in body
                                else body, register_kw=KW)


def put(st, sid="s", at=T0, **body) -> dict:
    sp = schedules.parse_spec(sid, body or {"every": "1m"}, register_kw=KW)
    return run(st, {"op": "schedule_put", "id": sid, "spec": sp,
                    "next_at": schedules.next_tick(sp, at), "at_ms": at})


def status_of(st):
    return lambda id_: st.jobs[id_]["status"] if id_ in st.jobs else None


def fire_due(st, sid, now) -> dict | None:
    cmd = schedules.plan(st.schedules[sid], now, status_of(st))
    if cmd is not None:
        cmd["at_ms"] = now
        run(st, cmd)
    return cmd


def utc(*args) -> int:
    return int(datetime.datetime(*args, tzinfo=datetime.timezone.utc).timestamp() * 1000)


# Ticks ######################################################################

def test_every_is_aligned_to_the_epoch_and_strictly_after():
    sp = spec(every="30s")
    assert schedules.next_tick(sp, 29_999) == 30_000
    assert schedules.next_tick(sp, 30_000) == 60_000
    assert schedules.next_ticks(sp, 0, 3) == [30_000, 60_000, 90_000]


@pytest.mark.parametrize("every, ms", [("30s", 30_000), ("5m", 300_000), ("1.5h", 5_400_000),
                                       ("2d", 172_800_000), (" 90 ", 90_000),
                                       ("1500ms", 1_500), (45, 45_000), ("2min", 120_000)])
def test_every_reads_durations(every, ms):
    assert schedules.every_ms(every) == ms


def test_cron_ticks_in_utc_by_default():
    sp = spec(cron="*/5 * * * *")
    assert schedules.next_ticks(sp, utc(2026, 12, 7, 10, 3), 2) == [
        utc(2026, 12, 7, 10, 5), utc(2026, 12, 7, 10, 10)]
    assert schedules.next_tick(sp, utc(2026, 12, 7, 10, 5)) == utc(2026, 12, 7, 10, 10)


def test_cron_follows_the_named_zone_across_dst():
    """Europe/Rome: 2026-03-29 02:00 -> 03:00; 2026-10-25 03:00 -> 02:00. A daily
    02:30 runs once on both days: at 03:00 when 02:30 does not exist, at the first
    02:30 when it exists twice (Debian cron's rule, as cronsim implements it)."""
    rome = zoneinfo.ZoneInfo("Europe/Rome")
    sp = spec(cron="30 2 * * *", timezone="Europe/Rome")

    def local(t):
        return datetime.datetime.fromtimestamp(t / 1000, rome).strftime("%m-%d %H:%M %z")
    spring = schedules.next_ticks(sp, utc(2026, 3, 27, 12), 3)
    assert [local(t) for t in spring] == ["03-28 02:30 +0100", "03-29 03:00 +0200",
                                          "03-30 02:30 +0200"]
    autumn = schedules.next_ticks(sp, utc(2026, 10, 23, 12), 3)
    assert [local(t) for t in autumn] == ["10-24 02:30 +0200", "10-25 02:30 +0200",
                                          "10-26 02:30 +0100"]
    assert autumn[2] - autumn[1] == 25 * 3600_000


def test_a_run_is_named_by_its_schedule_and_tick():
    assert jobs.run_id("nightly", utc(2026, 12, 7, 2, 30)) == "nightly@2026-12-07T02:30:00Z"
    assert jobs.run_id("fast", utc(2026, 12, 7) + 500) == "fast@2026-12-07T00:00:00.500Z"


# The plan ###################################################################

def test_a_due_tick_registers_one_job_named_by_it_and_moves_on():
    st = fresh()
    put(st, every="1m")
    t1 = (T0 // MIN + 1) * MIN
    assert fire_due(st, "s", t1 - 1) is None
    cmd = fire_due(st, "s", t1 + 250)
    assert cmd["runs"] == [t1] and cmd["next_at"] == t1 + MIN
    assert jobs.run_id("s", t1) in st.jobs
    assert st.jobs[jobs.run_id("s", t1)]["status"] == "pending"
    assert st.schedules["s"]["fired"] == 1 and st.schedules["s"]["next_at"] == t1 + MIN
    assert fire_due(st, "s", t1 + 500) is None               # once


def test_two_leaders_planning_one_tick_register_one_job():
    """schedules.py Rule 2: the second plan names a revision that is gone."""
    st = fresh()
    put(st, every="1m")
    t1 = (T0 // MIN + 1) * MIN
    a = schedules.plan(st.schedules["s"], t1 + 10, status_of(st))
    b = schedules.plan(st.schedules["s"], t1 + 20, status_of(st))
    assert run(st, dict(a, at_ms=t1 + 10))["outcome"] == "fired"
    assert run(st, dict(b, at_ms=t1 + 20))["outcome"] == "stale"
    assert sorted(st.jobs) == [jobs.run_id("s", t1)]


def test_after_an_outage_ticks_within_the_catchup_window_run_and_older_are_counted():
    st = fresh()
    put(st, every="10s", catchup_window=30, overlap="allow_all")
    t1 = (T0 // 10_000 + 1) * 10_000
    now = t1 + 100_000                  # 11 ticks due: t1 .. t1 + 100 s
    cmd = fire_due(st, "s", now)
    assert cmd["runs"] == [now - 30_000 + i * 10_000 for i in range(4)]
    assert cmd["skipped_late"] == 7 and cmd["next_at"] == now + 10_000
    sched = st.schedules["s"]
    assert (sched["fired"], sched["skipped_late"]) == (4, 7)


def test_a_cron_outage_counts_what_it_skipped_too():
    st = fresh()
    put(st, cron="* * * * *", catchup_window=0, at=utc(2026, 12, 7, 10, 0, 30))
    cmd = fire_due(st, "s", utc(2026, 12, 7, 11, 0, 30))
    assert cmd["runs"] == [] and cmd["skipped_late"] == 60
    assert cmd["next_at"] == utc(2026, 12, 7, 11, 1)


def test_overlap_skip_runs_nothing_while_a_run_is_not_finished():
    st = fresh()
    put(st, every="10s", overlap="skip")
    t1 = (T0 // 10_000 + 1) * 10_000
    fire_due(st, "s", t1)
    first = jobs.run_id("s", t1)
    cmd = fire_due(st, "s", t1 + 10_000)
    assert cmd["runs"] == [] and cmd["skipped_overlap"] == 1
    run(st, rep(first, "running", t1 + 10_001), rep(first, "completed", t1 + 10_002))
    assert fire_due(st, "s", t1 + 20_000)["runs"] == [t1 + 20_000]


def test_overlap_buffer_one_keeps_one_tick_for_when_the_run_ends():
    st = fresh()
    put(st, every="10s", overlap="buffer_one", catchup_window=600)
    t1 = (T0 // 10_000 + 1) * 10_000
    fire_due(st, "s", t1)
    first = jobs.run_id("s", t1)
    cmd = fire_due(st, "s", t1 + 20_000)
    assert cmd["runs"] == [] and cmd["buffered"] == t1 + 10_000 and cmd["skipped_overlap"] == 1
    assert fire_due(st, "s", t1 + 21_000) is None        # still running
    run(st, rep(first, "running", t1 + 21_001), rep(first, "failed", t1 + 21_002,
                                                    errorMessage="x", maxRetries=0))
    run(st, {"op": "cancel", "id": first, "at_ms": t1 + 21_003})
    cmd = fire_due(st, "s", t1 + 22_000)
    assert cmd["runs"] == [t1 + 10_000] and cmd["buffered"] is None
    assert jobs.run_id("s", t1 + 10_000) in st.jobs


def test_overlap_allow_all_runs_every_tick():
    st = fresh()
    put(st, every="10s", overlap="allow_all", catchup_window=600)
    t1 = (T0 // 10_000 + 1) * 10_000
    assert fire_due(st, "s", t1 + 20_000)["runs"] == [t1, t1 + 10_000, t1 + 20_000]


def test_paused_fires_nothing_and_resume_starts_from_the_next_tick():
    st = fresh()
    put(st, every="10s", paused=True)
    t1 = (T0 // 10_000 + 1) * 10_000
    assert fire_due(st, "s", t1 + 100_000) is None
    now = t1 + 100_500
    run(st, {"op": "schedule_pause", "id": "s", "paused": False, "at_ms": now,
             "next_at": schedules.next_tick(st.schedules["s"]["spec"], now)})
    assert fire_due(st, "s", now) is None
    assert fire_due(st, "s", t1 + 110_000)["runs"] == [t1 + 110_000]


def test_trigger_and_backfill_run_even_while_busy_and_never_twice():
    st = fresh()
    put(st, every="1m", at=utc(2026, 12, 7, 9))
    sched = st.schedules["s"]
    cmd = dict(schedules.backfill(sched, utc(2026, 12, 7, 8), utc(2026, 12, 7, 8, 3)),
               at_ms=utc(2026, 12, 7, 9, 0, 1))
    out = run(st, cmd)
    assert out["created"] == [jobs.run_id("s", utc(2026, 12, 7, 8, m)) for m in range(3)]
    again = dict(schedules.backfill(st.schedules["s"], utc(2026, 12, 7, 8),
                                    utc(2026, 12, 7, 8, 4)), at_ms=utc(2026, 12, 7, 9, 0, 2))
    assert run(st, again)["created"] == [jobs.run_id("s", utc(2026, 12, 7, 8, 3))]
    trig = dict(schedules.trigger(st.schedules["s"], utc(2026, 12, 7, 9, 0, 3)),
                at_ms=utc(2026, 12, 7, 9, 0, 3))
    assert run(st, trig)["created"] == [jobs.run_id("s", utc(2026, 12, 7, 9, 0, 3))]
    assert st.schedules["s"]["next_at"] == utc(2026, 12, 7, 9, 1)     # unchanged


def test_a_backfill_of_more_than_the_limit_is_refused():
    st = fresh()
    put(st, every="1s")
    with pytest.raises(ApiError) as e:
        schedules.backfill(st.schedules["s"], T0, T0 + 2_000_000)
    assert e.value.field == "to"


def test_replacing_keeps_the_counts_and_deleting_keeps_the_jobs():
    st = fresh()
    put(st, every="1m")
    t1 = (T0 // MIN + 1) * MIN
    fire_due(st, "s", t1)
    out = put(st, every="5m", at=t1 + 1)
    assert out["outcome"] == "updated" and out["schedule"]["fired"] == 1
    assert run(st, {"op": "schedule_delete", "id": "s", "at_ms": t1 + 2})["outcome"] == "deleted"
    assert jobs.run_id("s", t1) in st.jobs and "s" not in st.schedules


def test_schedules_survive_a_snapshot():
    st = fresh()
    put(st, every="1m", job={"type": "report", "payload": {"n": 1}})
    t1 = (T0 // MIN + 1) * MIN
    fire_due(st, "s", t1)
    back = S.from_snapshot(json.loads(json.dumps(S.to_snapshot(st),
                                                 default=jobs.Job.to_record)))
    check(back)
    assert back.schedules == st.schedules
    assert "schedules" not in S.to_snapshot(fresh())       # old snapshots' bytes stay


def test_the_view_shows_next_and_last_runs():
    st = fresh()
    put(st, every="1m", job={"type": "report"})
    t1 = (T0 // MIN + 1) * MIN
    fire_due(st, "s", t1)
    v = schedules.view(st.schedules["s"], t1 + 5, status_of(st))
    assert v["every"] == "60s" and v["job"]["type"] == "report"
    assert v["next_runs"][:2] == [jobs.iso_ms(t1 + MIN), jobs.iso_ms(t1 + 2 * MIN)]
    assert v["last_runs"] == [{"job_id": jobs.run_id("s", t1), "status": "pending",
                               "scheduled_for": jobs.iso_ms(t1)}]


# The spec's errors ##########################################################

@pytest.mark.parametrize("sid, body, field", [
    ("s", {}, "every"),
    ("s", {"every": "1m", "cron": "* * * * *"}, "every"),
    ("s", {"every": "0s"}, "every"),
    ("s", {"every": "fortnightly"}, "every"),
    ("s", {"every": True}, "every"),
    ("s", {"cron": "* * * *"}, "cron"),
    ("s", {"cron": "61 * * * *"}, "cron"),
    ("s", {"cron": 5}, "cron"),
    ("s", {"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ("s", {"cron": "* * * * *", "timezone": "../../etc/passwd"}, "timezone"),
    ("s", {"every": "1m", "timezone": "Europe/Rome"}, "timezone"),
    ("s", {"every": "1m", "job": {"id": "x"}}, "job"),
    ("s", {"every": "1m", "job": {"delay": 5}}, "job"),
    ("s", {"every": "1m", "job": {"priority": "urgent"}}, "job"),
    ("s", {"every": "1m", "job": []}, "job"),
    ("s", {"every": "1m", "overlap": "cancel_other"}, "overlap"),
    ("s", {"every": "1m", "catchup_window": -1}, "catchup_window"),
    ("s", {"every": "1m", "paused": "yes"}, "paused"),
    ("a@b", {"every": "1m"}, "id"),
    ("x" * 201, {"every": "1m"}, "id"),
])
def test_a_bad_spec_is_refused_naming_the_field(sid, body, field):
    with pytest.raises(ApiError) as e:
        schedules.parse_spec(sid, body, register_kw=KW)
    assert e.value.status == 400 and e.value.field == field, e.value.message
