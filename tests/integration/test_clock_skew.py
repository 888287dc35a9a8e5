"""A member whose wall clock is off (issue 28 §2), made with Debian's faketime on one
real process of a 3-member cluster: a leader 2 h ahead once timed out healthy jobs,
evicted young ones, and froze time in the log for two hours after it."""
import datetime
import time

import gevent
import pytest

from .broker_fixtures import wait_until
from .conftest import all_jobs
from .faults import FAKETIME_LIB, FaultCluster

pytestmark = pytest.mark.skipif(FAKETIME_LIB is None,
                                reason="needs libfaketime (apt-get install faketime; "
                                       "./build-orchestrator.sh test installs it as root)")

TWO_HOURS_MS = 2 * 3600 * 1000


def skewed(node, offset: str) -> None:
    """Run node under libfaketime: its wall clock `offset` off (its monotonic clock
    true, as on a machine whose clock is simply wrong). Preloaded through env, which
    execs: the faketime wrapper forks, and stopping it left the node running."""
    node.prefix = ["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", f"FAKETIME={offset}",
                   f"LD_PRELOAD={FAKETIME_LIB}"]


def ms(v) -> int:
    """A job's time field: milliseconds (CONTRACT §2.5), or ISO 8601 text."""
    if isinstance(v, int):
        return v
    return int(datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)


def leader_name(c) -> str:
    return c.name_of(c.wait_leader())


def move_leadership(c, to: str) -> None:
    lead = c.wait_leader()
    code, body = lead.client().call("POST", "/api/cluster/leader", {"to": to})
    assert code == 200, body
    wait_until(lambda: leader_name(c) == to, 30, 0.1, f"{to} leads")


@pytest.mark.parametrize("offset", ["+2h", "-2h"])
def test_a_leader_whose_clock_is_off_times_out_nothing_evicts_nothing_freezes_nothing(
        tmp_path_factory, clean_queues, offset):
    """The skewed member leads (its max_clock_skew_s set so high that it does not hand
    over) past its grace period: stamps and timers use the cluster's time (clock.py),
    so the healthy running jobs run on, the finished ones stay, a job past its short
    execution timeout times out, new jobs are stamped with the real time, and after
    leadership moves back time in the log goes on."""
    c = FaultCluster(tmp_path_factory, 3, seed=282, worker_heartbeat_timeout_s=2,
                     job_retention_s=600)
    odd = c.names[2]
    skewed(c.nodes[odd], offset)
    c.nodes[odd].configure(max_clock_skew_s=86400)
    beating = []
    try:
        c.start()
        lead = c.wait_leader()
        api = lead.client()
        for i in range(3):
            assert api.call("POST", "/api/jobs/register", {"id": f"run-{i}"})[0] == 202
            assert api.call("POST", f"/api/jobs/run-{i}/status",
                            {"status": "running", "workerId": "w1"})[0] == 200
            assert api.call("POST", "/api/jobs/register", {"id": f"done-{i}"})[0] == 202
            for s in ("running", "completed"):
                assert api.call("POST", f"/api/jobs/done-{i}/status",
                                {"status": s, "workerId": "w1"})[0] == 200

        # A job whose execution timeout is short must still time out: a leader behind
        # once saw its age negative and never did.
        assert api.call("POST", "/api/jobs/register",
                        {"id": "short", "timeout": 3, "maxRetries": 0})[0] == 202
        assert api.call("POST", "/api/jobs/short/status",
                        {"status": "running", "workerId": "w1"})[0] == 200

        def beat():
            while not beating:
                for node in c.nodes.values():
                    try:
                        node.client().call("POST", "/api/workers/heartbeat",
                                           {"workerId": "w1", "workerType": "python"})
                    except OSError:
                        pass
                gevent.sleep(0.3)
        gevent.spawn(beat)
        move_leadership(c, odd)
        node = c.nodes[odd]
        # Past the grace (2 s) and a few timer rounds: nothing it decides is wrong.
        gevent.sleep(6)
        assert leader_name(c) == odd
        jobs = {j["id"]: j for j in all_jobs(node.client())}
        assert [jobs[f"run-{i}"]["status"] for i in range(3)] == ["running"] * 3, jobs
        assert all(f"done-{i}" in jobs for i in range(3)), sorted(jobs)
        assert jobs["short"]["status"] == "failed", jobs["short"]
        health = node.health()[1]["checks"]["clock"]
        assert abs(abs(health["skew_s"]) - 7200) < 60, health     # seen, if tolerated
        assert (health["skew_s"] > 0) == offset.startswith("+")
        real = time.time() * 1000
        assert node.client().call("POST", "/api/jobs/register", {"id": "on-odd"})[0] == 202
        on_odd = ms(node.client().call("GET", "/api/jobs/on-odd")[1]["created_at"])
        assert abs(on_odd - real) < TWO_HOURS_MS / 100, (on_odd, real)
        back = c.names[0]
        move_leadership(c, back)
        real = time.time() * 1000
        assert c.nodes[back].client().call("POST", "/api/jobs/register",
                                           {"id": "after"})[0] == 202
        after = ms(c.nodes[back].client().call("GET", "/api/jobs/after")[1]["created_at"])
        assert on_odd <= after and abs(after - real) < TWO_HOURS_MS / 100, (after, real)
        for name in c.names[:2]:
            assert c.nodes[name].health()[1]["checks"]["clock"]["ok"] is True
    finally:
        beating.append(True)
        c.stop()


def test_a_member_whose_clock_is_off_hands_leadership_back(tmp_path_factory, clean_queues):
    """Moved onto the skewed member, leadership leaves it at once (peer_news.py Rule 3),
    with one line saying why; the metric says how far off it is."""
    c = FaultCluster(tmp_path_factory, 3, seed=281)
    odd = c.names[2]
    skewed(c.nodes[odd], "+2h")
    try:
        c.start()
        lead = c.wait_leader()
        code, body = lead.client().call("POST", "/api/cluster/leader", {"to": odd})
        wait_until(lambda: "handing leadership over" in c.nodes[odd].log_path.read_text()
                   and "wall clock" in c.nodes[odd].log_path.read_text(), 30, 0.2,
                   "the skewed member hands over\n" + c.nodes[odd].log_tail())
        wait_until(lambda: leader_name(c) != odd, 30, 0.1, "leadership left it")
        import urllib.request
        with urllib.request.urlopen(
                f"http://127.0.0.1:{c.nodes[odd].metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        skew = float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith("distriqueue_clock_skew_seconds ")))
        assert 7000 < skew < 7400, skew
    finally:
        c.stop()
