"""A cluster on a real, imperfect network (issue 28): three real processes whose Raft
datagrams all pass the UDP proxy of tests/integration/faults.py."""
import random

from .faults import FaultCluster

BIG_JOB_BYTES = 58_000          # under max_job_bytes (60,000) with the job's fields


def terms(c) -> dict:
    return {name: node.client().call("GET", "/api/raft/status")[1]["term"]
            for name, node in c.nodes.items()}


def test_large_jobs_through_a_follower_commit_at_10_percent_loss_without_elections(
        tmp_path_factory, clean_queues):
    """Issue 28 §1: each 58 KB job is ~50 datagrams, and the append holding it was lost
    if any one was (0.5% arrive whole at 10% loss): 1 register in 40 s, the term
    climbing by 50. Missing fragments are asked for and sent again (transport.py
    Rule 3), and parts of the leader's append are its contact (core.CONTACT)."""
    c = FaultCluster(tmp_path_factory, 3, seed=28)
    try:
        c.start()
        lead = c.wait_leader()
        follower = next(n for n in c.nodes.values() if n is not lead)
        before = terms(c)
        c.udp.drop = 0.10
        rng = random.Random(28)
        n = 40
        codes = []
        for i in range(n):
            blob = "".join(rng.choice("abcdefgh") for _ in range(BIG_JOB_BYTES))
            codes.append(follower.client().call("POST", "/api/jobs/register",
                                                {"id": f"big-{i}", "payload": {"b": blob}})[0])
        c.udp.drop = 0.0
        accepted = codes.count(202)
        assert accepted >= 0.9 * n, (codes, c.udp.counts)
        assert terms(c) == before, "an election without a fault that warrants one"
        assert c.udp.counts["dropped"] > 0
    finally:
        c.stop()
