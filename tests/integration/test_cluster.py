"""Clusters of real dqorch.py processes on loopback with the real RabbitMQ: election,
writes through any node, fail-over that loses no accepted job, a paused leader that
comes back, catch-up by snapshot, and datagrams that must change nothing.
Waiting is polling with a deadline (wait_until), never a timing assert."""
from __future__ import annotations

import json
import signal
import socket
import time

import gevent

from dqorch.raft.transport import Codec

from .broker_fixtures import SHARED_PORT, wait_until
from .cluster_fixtures import COOKIE, cluster  # noqa: F401  (the fixture)
from .conftest import JOB_QUEUES, all_jobs, drain


def register(node, id_: str):
    return node.client().call("POST", "/api/jobs/register",
                              {"id": id_, "type": "cluster", "payload": {"n": id_}})


def register_until_accepted(nodes, id_: str, timeout_s: float = 30) -> None:
    """A client that retries a 503 (no leader yet) on the next node, as a gateway would."""
    deadline = time.monotonic() + timeout_s
    k = 0
    while True:
        node = nodes[k % len(nodes)]
        k += 1
        try:
            status, body = register(node, id_)
        except OSError:
            status, body = None, None
        if status == 202:
            return
        assert status in (503, None), (status, body)
        assert time.monotonic() < deadline, f"{id_} never accepted: {body}"
        gevent.sleep(0.05)


def job_ids(node) -> set:
    """Every job id the node holds; empty while it is not answering (yet), or answers
    503 "starting" (a restarted node loading its log)."""
    try:
        return {j["id"] for j in all_jobs(node.client())}
    except (OSError, AssertionError):
        return set()


def queued_message_ids() -> dict:
    """message_id -> [x-dq-term of each copy] for every job message in RabbitMQ."""
    out: dict = {}
    for q in JOB_QUEUES:
        for props, _body in drain(SHARED_PORT, q):
            out.setdefault(props.message_id, []).append(props.headers["x-dq-term"])
    return out


def test_three_nodes_elect_one_leader_and_take_writes_through_every_node(cluster,
                                                                         clean_queues):
    c = cluster(3)
    lead = c.wait_leader()
    assert sum(c.status(n)["members"][0]["role"] == "leader" for n in c.up()) == 1
    for k, node in enumerate(c.up()):
        status, body = register(node, f"any-{k}")
        assert status == 202, (status, body, node.log_tail())
        # The node that answered has applied it: a GET there finds it at once.
        status, job = node.client().call("GET", f"/api/jobs/any-{k}")
        assert status == 200, (status, job)
    # A register without an id gets one on the follower, and the leader keeps it.
    follower = c.followers()[0]
    status, body = follower.client().call("POST", "/api/jobs/register", {"type": "x"})
    assert status == 202, body
    assert follower.client().call("GET", f"/api/jobs/{body['job_id']}")[0] == 200
    want = {f"any-{k}" for k in range(3)} | {body["job_id"]}
    for node in c.up():
        wait_until(lambda: want <= job_ids(node), 20, 0.05, "replicated everywhere")
    wait_until(lambda: all(lead.client().call("GET", f"/api/jobs/{i}")[1]["status"]
                           == "queued" for i in want), 20, 0.05, "queued by the leader")
    health = [n.health() for n in c.up()]
    assert all(code == 200 for code, _ in health), health
    members = c.status(lead)["members"]
    assert len(members) == 3 and all(m["match_index"] for m in members), members


def test_kill9_of_the_leader_loses_no_accepted_job(cluster, clean_queues):
    c = cluster(3)
    lead = c.wait_leader()
    nodes = c.up()
    accepted = []

    def client(k: int) -> None:
        for i in range(60):
            id_ = f"kill-{k}-{i}"
            register_until_accepted([n for n in nodes if n.proc.poll() is None], id_)
            accepted.append(id_)

    workers = [gevent.spawn(client, k) for k in range(3)]
    wait_until(lambda: len(accepted) >= 30, 60, 0.02, "load running\n" + c.logs())
    lead.kill9()
    gevent.joinall(workers, timeout=120, raise_error=True)
    assert len(accepted) == 180
    survivors = c.up()
    new_lead = c.wait_leader(survivors)
    assert new_lead is not lead
    for node in survivors:
        wait_until(lambda: set(accepted) <= job_ids(node), 30, 0.1,
                   f"every accepted job on {node.cfg['node_name']}")
    wait_until(lambda: all(j["status"] == "queued" for j in all_jobs(new_lead.client())
                           if j["id"] in set(accepted)), 30, 0.1, "all queued")
    msgs = queued_message_ids()
    missing = set(accepted) - set(msgs)
    assert not missing, f"{len(missing)} accepted jobs never reached RabbitMQ"


def test_a_paused_leader_steps_down_and_publishes_nothing_in_its_old_term(cluster,
                                                                          clean_queues):
    c = cluster(3)
    old = c.wait_leader()
    old_term = c.status(old)["term"]
    old.proc.send_signal(signal.SIGSTOP)
    try:
        others = [n for n in c.up() if n is not old]
        new = c.wait_leader(others)
        for i in range(20):
            register_until_accepted(others, f"after-{i}")
    finally:
        old.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: (c.status(old) or {}).get("leader") == new.cfg["node_name"], 30,
               0.05, "the old leader follows the new one\n" + old.log_tail())
    st = c.status(old)
    assert st["members"][0]["role"] == "follower" and st["term"] > old_term, st
    wait_until(lambda: {f"after-{i}" for i in range(20)} <= job_ids(old), 30, 0.05,
               "the old leader caught up")
    wait_until(lambda: all(new.client().call("GET", f"/api/jobs/after-{i}")[1]["status"]
                           == "queued" for i in range(20)), 30, 0.05, "queued")
    msgs = queued_message_ids()
    for i in range(20):
        terms = msgs.get(f"after-{i}")
        assert terms and all(t > old_term for t in terms), (f"after-{i}", terms, old_term)


def test_a_follower_restarted_after_many_commits_catches_up_by_snapshot(cluster,
                                                                         clean_queues):
    c = cluster(3, snapshot_entries=1000, publish_on_register=False)
    lead = c.wait_leader()
    behind = c.followers()[0]
    behind.stop()
    for b in range(3):
        items = [{"id": f"snap-{b}-{i}", "type": "s"} for i in range(1000)]
        status, body = lead.client().call("POST", "/api/jobs/batch", {"jobs": items})
        assert status == 202 and body["accepted"] == 1000, body
    wait_until(lambda: "snapshot written" in lead.log_path.read_text(), 30, 0.1,
               "the leader compacted its log\n" + lead.log_tail())
    behind.start(wait=False)
    wait_until(lambda: "installed snapshot from the leader" in behind.log_path.read_text(),
               60, 0.1, "snapshot installed\n" + behind.log_tail() + lead.log_tail())
    wait_until(lambda: len(job_ids(behind)) == 3000, 30, 0.1, "every job there")


def test_forged_and_replayed_datagrams_change_nothing(cluster):
    c = cluster(3)
    lead = c.wait_leader()
    target = c.followers()[0]
    before = c.status(target)
    port = target.cfg["raft_port"]
    peer = lead.cfg["node_name"]        # it heartbeats the target: its epoch is known
    good = Codec(peer, COOKIE, [target.cfg["node_name"]], epoch=1)
    forged = Codec(peer, "not-the-cookie-at-all", [], epoch=2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Sealed with the cookie but from an epoch older than the real peer's (a
        # replay of an earlier life of it): stale. Then a wrong key, a stub, an
        # oversized datagram and a flipped bit.
        one = good.seal(b'{"t":"vote","to":"%s","term":99}' % target.cfg["node_name"].encode())[0]
        for data in [one, one, forged.seal(b'{"t":"vote"}')[0], b"DQ", b"x" * 5000,
                     one[:-1] + bytes([one[-1] ^ 1])]:
            sock.sendto(data, ("127.0.0.1", port))
    finally:
        sock.close()

    def counted():
        d = dropped_by_reason(target)
        return d.get("stale_epoch", 0) >= 2 and d.get("mac", 0) >= 2 \
            and d.get("short", 0) >= 1 and d.get("oversized", 0) >= 1
    wait_until(counted, 10, 0.05, "drops counted")
    after = c.status(target)
    assert after["term"] == before["term"] and after["leader"] == before["leader"]
    assert c.wait_leader() is lead


def dropped_by_reason(node) -> dict:
    """distriqueue_raft_messages_dropped_total by reason, from the metrics port."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", node.metrics_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("distriqueue_raft_messages_dropped_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def test_two_data_nodes_and_a_witness_survive_the_loss_of_either_data_node(cluster,
                                                                          clean_queues):
    c = cluster(3, witness=3)
    witness = c.nodes[c.names[2]]
    wait_until(lambda: c.leader() is not None and c.leader() is not witness, 30, 0.05,
               "a data node leads\n" + c.logs())
    for victim_name in c.names[:2]:
        victim = c.nodes[victim_name]
        victim.kill9()
        other = c.nodes[[n for n in c.names[:2] if n != victim_name][0]]
        register_until_accepted([other], f"witness-{victim_name}")
        wait_until(lambda: c.leader([other, witness]) is other, 30, 0.05,
                   "the other data node leads\n" + c.logs())
        victim.start(wait=False)
        wait_until(lambda: f"witness-{victim_name}" in job_ids(victim), 30, 0.1,
                   "the restarted node caught up\n" + victim.log_tail())


def test_a_lost_majority_refuses_writes_until_a_survivor_is_forced_into_a_new_cluster(
        cluster, clean_queues):
    c = cluster(3)
    lead = c.wait_leader()
    for i in range(10):
        register_until_accepted(c.up(), f"lost-{i}")
    survivor = c.followers()[0]
    wait_until(lambda: {f"lost-{i}" for i in range(10)} <= job_ids(survivor), 20, 0.05,
               "replicated")
    for node in c.up():
        if node is not survivor:
            node.kill9()
    # Alone of three: no leader, and a write gets a bounded 503, never a hang.
    wait_until(lambda: survivor.health()[0] == 503, 30, 0.05, "unhealthy without a majority")
    status, body = register(survivor, "lost-after")
    assert status == 503 and body["error"] == "unavailable", (status, body)
    assert survivor.stop() == 0
    # Another cluster's members in the config: the log holds the configuration (the
    # first leader wrote it), so raft_peers only say where to look; one line says so.
    other = dict(survivor.cfg, raft_peers=["zz@127.0.0.1:1"])
    survivor.cfg_path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in other.items()))
    survivor.start(wait=False)
    wait_until(lambda: "raft_peers name members the log's configuration does not have"
               in survivor.log_path.read_text(), 30, 0.1, "the warning")
    assert survivor.stop() == 0
    # The deliberate command: a new cluster of one from its data.
    survivor.args = ["--force-new-cluster"]
    survivor.start()
    assert {f"lost-{i}" for i in range(10)} <= job_ids(survivor)
    assert register(survivor, "lost-after")[0] == 202
    assert lead.proc.poll() is not None


def test_a_worker_that_talks_only_to_a_follower_stays_alive_across_a_leader_change(
        cluster, clean_queues):
    c = cluster(3, worker_heartbeat_timeout_s=2)
    lead = c.wait_leader()
    via = c.followers()[0]
    stop = []

    def beat() -> None:
        w = via.client()
        while not stop:
            status, _ = w.call("POST", "/api/workers/heartbeat",
                               {"workerId": "w-follower", "capacity": 2})
            assert status == 200
            gevent.sleep(0.3)

    beater = gevent.spawn(beat)
    assert register(via, "wf-1")[0] == 202
    wait_until(lambda: via.client().call("GET", "/api/jobs/wf-1")[1]["status"] == "queued",
               20, 0.05, "queued")
    status, body = via.client().call("POST", "/api/jobs/status", {
        "jobId": "wf-1", "status": "running", "workerId": "w-follower"})
    assert status == 200, body

    def job():
        return lead.client().call("GET", "/api/jobs/wf-1")[1]

    def worker_on(node):
        ws = node.client().call("GET", "/api/workers")[1]["workers"]
        return {w["worker_id"]: w["status"] for w in ws}.get("w-follower")
    # Three heartbeat timeouts: only the follower's digests keep it alive on the leader.
    wait_until(lambda: worker_on(lead) == "active", 10, 0.05, "the leader heard it")
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        j = job()
        assert j["status"] == "running" and j["retry_count"] == 0, j
        assert worker_on(lead) == "active"
        gevent.sleep(0.2)
    # A new leader: none of its jobs is retried while it keeps heartbeating.
    lead.kill9()
    lead = c.wait_leader()
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        j = job()
        assert j["status"] == "running" and j["retry_count"] == 0, j
        gevent.sleep(0.2)
    # It dies: its job is retried.
    stop.append(True)
    beater.join(timeout=5)
    wait_until(lambda: job()["retry_count"] == 1, 30, 0.1,
               "retried after the worker went silent\n" + lead.log_tail())


def test_sigterm_of_the_leader_hands_leadership_over_and_loses_nothing(cluster,
                                                                      clean_queues):
    c = cluster(3)
    lead = c.wait_leader()
    for i in range(10):
        register_until_accepted(c.up(), f"roll-{i}")
    assert lead.stop() == 0
    text = lead.log_path.read_text()
    assert "handing leadership over to=" in text, lead.log_tail()
    to = text.rsplit("handing leadership over to=", 1)[1].split()[0]
    new = c.wait_leader()
    assert new.cfg["node_name"] == to, (to, new.cfg["node_name"])
    # The transfer skips the election timeout: the target campaigned at once.
    assert "became leader" in new.log_path.read_text()
    for i in range(10, 20):
        register_until_accepted(c.up(), f"roll-{i}")
    lead.start(wait=False)
    wait_until(lambda: {f"roll-{i}" for i in range(20)} <= job_ids(lead), 30, 0.1,
               "the restarted node caught up")


def test_discard_and_forget_through_a_follower_reach_every_member(cluster, clean_queues):
    """DELETE /api/jobs/{id} is a command in the log: sent to a follower it is
    forwarded, applied by every member, and replayed by one killed and started again.
    DELETE /api/workers/{id} acts on the leader's worker table (a follower's heartbeats
    reach it in digests): through a follower it is forwarded, and every member then
    says the worker is gone."""
    c = cluster(3)
    c.wait_leader()
    follower, other = c.followers()[:2]
    fc = follower.client()
    for id_ in ("keep", "drop"):
        status, body = fc.call("POST", "/api/jobs/register", {"id": id_, "type": "cluster"})
        assert status == 202, body
    assert fc.call("POST", "/api/jobs/drop/cancel")[0] == 200
    status, body = fc.call("DELETE", "/api/jobs/keep")
    assert status == 409, body                     # not finished: refused, kept
    status, body = fc.call("DELETE", "/api/jobs/drop")
    assert (status, body) == (200, {"status": "discarded", "job_id": "drop"}), body
    for node in c.up():
        wait_until(lambda: job_ids(node) == {"keep"}, 20, 0.05, "discarded everywhere")
    other.kill9()
    other.start()
    wait_until(lambda: job_ids(other) == {"keep"}, 60, 0.1,
               "the discard replayed\n" + other.log_tail())

    status, body = fc.call("POST", "/api/workers/heartbeat",
                           {"workerId": "w-gone", "currentLoad": 0})
    assert status == 200, body
    # The follower passes its heartbeats on in its next digest (cluster.py).
    for node in c.up():
        wait_until(lambda: node.client().call("GET", "/api/workers/w-gone")[0] == 200,
                   20, 0.05, "the leader heard of it")
    status, body = fc.call("DELETE", "/api/workers/w-gone")
    assert (status, body) == (200, {"status": "forgotten", "worker_id": "w-gone"}), body
    for node in c.up():
        assert node.client().call("GET", "/api/workers/w-gone")[0] == 404
    assert fc.call("DELETE", "/api/workers/w-gone")[0] == 404
