"""Time and flow (issue 29) on real nodes and a real RabbitMQ (a vhost of this
module's own): jobs that run later (not in their queue before their time, published
after it, cancellable, kept through a restart and a snapshot), schedules (one job per
tick across leader kills), queues paused and resumed, and jobs that wait for others."""
from __future__ import annotations

import json
import time

import pytest

from .broker_fixtures import blocking_channel, wait_until
from .conftest import SHARED_PORT, NodeProc, drain
from .faults import drop_vhost, private_vhost


@pytest.fixture(scope="module")
def vhost(shared_rabbit):
    name = private_vhost()
    yield name
    drop_vhost(name)


@pytest.fixture
def node(tmp_path, vhost):
    n = NodeProc(tmp_path, SHARED_PORT, rabbitmq_vhost=vhost,
                 snapshot_entries=1000).start().wait_healthy()
    yield n
    n.stop()


def take_all(vhost: str, queue: str = "job.medium") -> list:
    """Every message in the queue now: [(properties, body)]."""
    return drain(SHARED_PORT, queue, vhost)


def job(c, id_: str) -> dict:
    status, body = c.call("GET", f"/api/jobs/{id_}")
    assert status == 200, body
    return body


def test_a_delayed_job_waits_in_scheduled_and_is_published_after_its_time(node, vhost):
    c = node.client()
    status, out = c.call("POST", "/api/jobs/register", {"id": "later", "delay": 3})
    assert status == 202 and out["job_id"] == "later", out
    run_at = out["run_at"]
    seen = job(c, "later")
    assert seen["status"] == "scheduled" and seen["run_at"] == run_at
    assert seen["why"].startswith("scheduled for ")
    status, listed = c.call("GET", "/api/jobs?status=scheduled")
    assert [j["id"] for j in listed["jobs"]] == ["later"]
    got: list = []
    while not got:
        got = take_all(vhost)
        if not got:
            assert job(c, "later")["status"] == "scheduled" or time.time() * 1000 >= run_at
            time.sleep(0.05)
        assert time.time() * 1000 < run_at + 30_000, "never published"
    [(props, body)] = got
    assert body["id"] == "later"
    # Published by the node after its time: by its own record and by the message's.
    assert props.timestamp >= run_at // 1000
    wait_until(lambda: job(c, "later")["status"] == "queued", 10, 0.05, "queued")
    done = job(c, "later")
    assert done["queued_at"] >= run_at
    moves = [(h["status"], h["by"]) for h in done["history"]]
    assert moves == [("scheduled", "api"), ("pending", "timer"), ("queued", "broker")]
    assert [h for h in done["history"] if h["status"] == "pending"][0]["at"] >= run_at


def test_a_scheduled_job_cancelled_is_never_published(node, vhost):
    c = node.client()
    status, out = c.call("POST", "/api/jobs/register", {"id": "never", "delay": 1})
    assert status == 202
    assert c.call("POST", "/api/jobs/never/cancel")[0] == 200
    status, out2 = c.call("POST", "/api/jobs/register", {"id": "marker", "delay": 1.5})
    # The marker, due after the cancelled one, is published: by then the cancelled
    # one would have been too.
    got: list = []
    wait_until(lambda: got.extend(take_all(vhost)) or got, 30, 0.05, "the marker published")
    assert [b["id"] for _, b in got] == ["marker"]
    assert job(c, "never")["status"] == "cancelled"


def test_scheduled_jobs_survive_a_snapshot_and_a_restart(node, vhost):
    c = node.client()
    for i in range(30):
        assert c.call("POST", "/api/jobs/register",
                      {"id": f"s{i}", "delay": 8 + i % 3})[0] == 202
    # Past snapshot_entries (the minimum, 1000): a snapshot holds the scheduled jobs.
    for n in range(2):
        status, out = c.call("POST", "/api/jobs/batch", {"jobs": [
            {"id": f"f{n}-{i}", "type": "filler", "priority": 1} for i in range(500)]})
        assert status == 202 and out["accepted"] == 500, out
    wait_until(lambda: "snapshot written" in node.log_path.read_text(), 30, 0.1,
               "a snapshot")
    node.stop()
    node.start().wait_healthy()
    c = node.client()
    assert job(c, "s0")["status"] in ("scheduled", "pending", "queued")
    got: list = []
    wait_until(lambda: got.extend(take_all(vhost)) or len(got) >= 30, 60, 0.1,
               "all 30 published")
    assert sorted(b["id"] for _, b in got) == sorted(f"s{i}" for i in range(30))
    take_all(vhost, "job.low")


@pytest.mark.parametrize("body, field", [
    ({"delay": -1}, "delay"),
    ({"run_at": 1_700_000_000}, "run_at"),
    ({"run_at": "2030-01-01T00:00:00"}, "run_at"),
])
def test_bad_times_are_a_400_naming_the_field(node, body, field):
    status, out = node.client().call("POST", "/api/jobs/register", dict(body, id="bad"))
    assert status == 400 and out["field"] == field, out
    assert node.client().call("GET", "/api/jobs/bad")[0] == 404


# Schedules ##################################################################

def tick_of(job_id: str) -> int:
    """The tick a run's id names (schedule@2026-12-07T10:42:02Z), in ms."""
    import datetime
    iso = job_id.split("@", 1)[1].replace("Z", "+00:00")
    return round(datetime.datetime.fromisoformat(iso).timestamp() * 1000)


def runs(node, sid: str) -> list:
    from .conftest import all_jobs
    try:
        return sorted(j["id"] for j in all_jobs(node.client(), type="tick")
                      if j["id"].startswith(sid + "@"))
    except (OSError, AssertionError):
        return []


def test_a_schedule_fires_one_job_per_tick_across_two_leader_kills(tmp_path_factory,
                                                                   vhost):
    """Issue 29: every 2 s on three nodes, the leader killed twice: one job per tick,
    no duplicate, no gap (the outages are inside catchup_window), and each published."""
    from .cluster_fixtures import Cluster
    c = Cluster(tmp_path_factory, 3, rabbitmq_vhost=vhost).start()
    try:
        lead = c.wait_leader()
        status, sched = lead.client().call("PUT", "/api/schedules/tick", {
            "every": "2s", "catchup_window": 60, "overlap": "allow_all",
            "job": {"type": "tick", "priority": 1}})
        assert status == 201, sched
        assert sched["next_runs"] and sched["fired"] == 0
        for kill in range(2):
            have = len(runs(lead, "tick"))
            wait_until(lambda: len(runs(lead, "tick")) >= have + 2, 30, 0.2,
                       "two more runs\n" + c.logs())
            lead.kill9()
            survivors = c.up()
            lead = c.wait_leader(survivors)
            have = len(runs(lead, "tick"))
            wait_until(lambda: len(runs(lead, "tick")) >= have + 2, 30, 0.2,
                       "runs under the new leader\n" + c.logs())
            dead = next(n for n in c.nodes.values() if n.proc.poll() is not None)
            dead.start(wait=False)
        status, paused = lead.client().call("POST", "/api/schedules/tick/pause")
        assert status == 200 and paused["paused"] and paused["next_runs"] == []
        ids = runs(lead, "tick")
        ticks = [tick_of(i) for i in ids]
        assert len(set(ticks)) == len(ticks)
        assert ticks == list(range(ticks[0], ticks[-1] + 1, 2000)), ids
        assert paused["fired"] == len(ids) and paused["skipped_late"] == 0
        published = set()
        wait_until(lambda: published.update(b["id"] for _, b in take_all(vhost, "job.low"))
                   or published >= set(ids), 30, 0.2, "every run published")
        assert published == set(ids)
    finally:
        c.stop()


def test_schedule_routes_answer_in_the_api_shape(node):
    c = node.client()
    status, out = c.call("PUT", "/api/schedules/daily", {
        "cron": "30 2 * * *", "timezone": "Europe/Rome", "job": {"type": "report"}})
    assert status == 201 and out["cron"] == "30 2 * * *" and len(out["next_runs"]) == 5
    assert c.call("PUT", "/api/schedules/daily", {"cron": "0 3 * * *"})[0] == 200
    status, listed = c.call("GET", "/api/schedules")
    assert status == 200 and [s["id"] for s in listed["schedules"]] == ["daily"]
    status, fired = c.call("POST", "/api/schedules/daily/trigger")
    assert status == 202 and len(fired["job_ids"]) == 1
    assert fired["job_ids"][0].startswith("daily@")
    status, back = c.call("POST", "/api/schedules/daily/backfill",
                          {"from": "2026-01-01T00:00:00Z", "to": "2026-01-04T00:00:00Z"})
    assert status == 202 and back["job_ids"] == [
        "daily@2026-01-01T03:00:00Z", "daily@2026-01-02T03:00:00Z",
        "daily@2026-01-03T03:00:00Z"], back
    assert c.call("GET", "/api/schedules/daily")[1]["last_runs"][0]["job_id"] == \
        "daily@2026-01-03T03:00:00Z"
    status, err = c.call("PUT", "/api/schedules/bad", {"cron": "61 * * * *"})
    assert status == 400 and err["field"] == "cron"
    assert c.call("DELETE", "/api/schedules/daily")[0] == 200
    assert c.call("GET", "/api/schedules/daily")[0] == 404
    assert c.call("POST", "/api/schedules/daily/trigger")[0] == 404
    assert c.call("GET", f"/api/jobs/{fired['job_ids'][0]}")[0] == 200   # jobs stay
    take_all(vhost_of(node), "job.medium")


def vhost_of(node) -> str:
    return node.cfg["rabbitmq_vhost"]


# Queues paused and resumed ##################################################

def test_a_paused_queue_holds_its_jobs_and_resume_releases_them(node, vhost):
    c = node.client()
    take_all(vhost, "job.low")
    status, q = c.call("POST", "/api/queues/job.low/pause")
    assert status == 200 and q["paused"] and q["paused_at"], q
    for i in range(3):
        assert c.call("POST", "/api/jobs/register",
                      {"id": f"held-{i}", "priority": 1})[0] == 202
    assert c.call("POST", "/api/jobs/register", {"id": "other", "priority": 10})[0] == 202
    # The other queues are not held: once job.high has its job, job.low would have too.
    got: list = []
    wait_until(lambda: got.extend(take_all(vhost, "job.high")) or got, 30, 0.05,
               "job.high's job")
    assert take_all(vhost, "job.low") == []
    why = job(c, "held-0")["why"]
    assert why.startswith("pending: job.low is paused since "), why
    status, listed = c.call("GET", "/api/queues")
    assert status == 200
    low = next(x for x in listed["queues"] if x["queue"] == "job.low")
    assert low["paused"] and low["jobs"]["pending"] == 3
    assert low["rabbitmq"] == {"messages_ready": 0, "consumers": 0}, low
    assert c.call("POST", "/api/queues/job.nope/pause")[0] == 404
    status, q = c.call("POST", "/api/queues/job.low/resume")
    assert status == 200 and not q["paused"]
    wait_until(lambda: got.extend(take_all(vhost, "job.low")) or len(got) >= 4, 30, 0.05,
               "the held jobs published")
    assert sorted(b["id"] for _, b in got) == ["held-0", "held-1", "held-2", "other"]


def test_queue_depths_come_from_rabbitmq(node, vhost):
    c = node.client()
    for q in ("job.high", "job.medium", "job.low"):
        take_all(vhost, q)
    for i in range(5):
        assert c.call("POST", "/api/jobs/register", {"id": f"deep-{i}", "priority": 5})[0] == 202
    wait_until(lambda: job(c, "deep-4")["status"] == "queued", 30, 0.05, "queued")

    def medium():
        listed = c.call("GET", "/api/queues")[1]
        return next(x for x in listed["queues"] if x["queue"] == "job.medium")
    # A read is at most depths.TTL_S old: the five arrive within a few reads.
    wait_until(lambda: medium()["rabbitmq"] == {"messages_ready": 5, "consumers": 0},
               30, 0.2, "RabbitMQ's count of job.medium")
    assert medium()["jobs"]["queued"] == 5
    take_all(vhost, "job.medium")


# Jobs that wait for others ##################################################

def work(c, vhost: str, queue: str = "job.medium") -> list:
    """Run what is in the queue now, as a worker: running, then completed."""
    ran = []
    for _, body in take_all(vhost, queue):
        for s in ("running", "completed"):
            assert c.call("POST", "/api/jobs/status",
                          {"jobId": body["id"], "status": s, "workerId": "w-chain"})[0] == 200
        ran.append(body["id"])
    return ran


def test_a_chain_of_three_runs_in_order_and_a_failed_parent_cancels_its_child(node, vhost):
    c = node.client()
    take_all(vhost, "job.medium")
    status, out = c.call("POST", "/api/jobs/batch", {"jobs": [
        {"id": "third", "depends_on": ["second"]},
        {"id": "second", "depends_on": ["first"]},
        {"id": "first"},
        {"id": "loop-a", "depends_on": ["loop-b"]},
        {"id": "loop-b", "depends_on": ["loop-a"]}]})
    assert status == 202 and out["accepted"] == 3, out
    assert [r.get("field") for r in out["results"][3:]] == ["depends_on", "depends_on"]
    assert job(c, "third")["why"] == "waiting for 1 of 1 jobs to complete: second"
    order: list = []
    wait_until(lambda: order.extend(work(c, vhost)) or len(order) >= 3, 30, 0.05,
               f"the chain run, so far {order}")
    assert order == ["first", "second", "third"]
    wait_until(lambda: job(c, "third")["status"] == "completed", 10, 0.05, "completed")

    assert c.call("POST", "/api/jobs/register", {"id": "parent", "maxRetries": 0})[0] == 202
    assert c.call("POST", "/api/jobs/register",
                  {"id": "child", "depends_on": ["parent"]})[0] == 202
    status, err = c.call("POST", "/api/jobs/register",
                         {"id": "lost", "depends_on": ["no-such-job"]})
    assert status == 400 and err["field"] == "depends_on"
    got: list = []
    wait_until(lambda: got.extend(take_all(vhost)) or got, 30, 0.05, "the parent")
    for s, extra in (("running", {}), ("failed", {"errorMessage": "disk full"})):
        c.call("POST", "/api/jobs/status", dict(extra, jobId="parent", status=s,
                                                workerId="w-chain"))
    child = job(c, "child")
    assert child["status"] == "cancelled" and child["history"][-1]["reason"] == \
        "parent parent failed", child
    assert take_all(vhost) == []
    # Issue 31: a failure leaves one line in the node's log, naming it.
    assert "job failed id=parent type=default worker=w-chain attempts=1 error=disk full" \
        in node.log_path.read_text()


# Limits per job type ########################################################

def test_a_concurrency_limit_of_two_never_has_three_queued_or_running(node, vhost):
    c = node.client()
    take_all(vhost, "job.medium")
    status, lim = c.call("PUT", "/api/limits/etl", {"concurrency": 2})
    assert status == 201 and lim["concurrency"] == 2 and lim["rate"] is None, lim
    assert c.call("PUT", "/api/limits/etl", {"concurrency": 0})[0] == 400
    for i in range(6):
        assert c.call("POST", "/api/jobs/register", {"id": f"etl-{i}", "type": "etl"})[0] == 202
    seen_active, in_queue, done = [], [], []

    def active() -> int:
        listed = c.call("GET", "/api/jobs?type=etl&limit=100")[1]["jobs"]
        return sum(1 for j in listed if j["status"] in ("queued", "running"))

    def step() -> bool:
        seen_active.append(active())
        got = take_all(vhost)
        in_queue.append(len(got))
        for _, body in got:            # run them one at a time, each to its end
            for s in ("running", "completed"):
                c.call("POST", "/api/jobs/status", {"jobId": body["id"], "status": s,
                                                    "workerId": "w-etl"})
                seen_active.append(active())
            done.append(body["id"])
        return len(done) == 6
    wait_until(step, 60, 0.05, f"six etl jobs done, so far {done}")
    assert max(seen_active) <= 2 and max(in_queue) <= 2, (seen_active, in_queue)
    pending = [j for j in c.call("GET", "/api/jobs?type=etl")[1]["jobs"]]
    assert all(j["status"] == "completed" for j in pending)
    assert c.call("DELETE", "/api/limits/etl")[0] == 200
    assert c.call("GET", "/api/limits")[1] == {"limits": []}


def test_why_names_the_limit_that_holds_a_job(node, vhost):
    c = node.client()
    assert c.call("PUT", "/api/limits/slow", {"concurrency": 1})[0] == 201
    for i in range(2):
        assert c.call("POST", "/api/jobs/register", {"id": f"slow-{i}", "type": "slow"})[0] == 202
    wait_until(lambda: job(c, "slow-0")["status"] == "queued", 30, 0.05, "the first queued")
    why = job(c, "slow-1")["why"]
    assert why == ("pending: type slow is at its concurrency limit (1 of 1 queued or "
                   "running); it goes when one of them ends"), why
    c.call("DELETE", "/api/limits/slow")
    wait_until(lambda: job(c, "slow-1")["status"] == "queued", 30, 0.05, "released")
    take_all(vhost)
