"""Members change online, with real processes on loopback, while jobs keep coming
(issue 27, docs/CLUSTER.md): a node alone grows to three (each new member started with
--join, added as a learner, promoted once caught up), the leader removes itself, and
the cluster shrinks back to one. Every job answered 202 is on every live member at the
end; a register refused meanwhile (503: an election, a change under way) is retried
with the same id, as a client would."""
from __future__ import annotations

import gevent
import pytest

from .broker_fixtures import wait_until
from .cluster_fixtures import COOKIE
from .conftest import Client, all_jobs, free_port

pytestmark = pytest.mark.usefixtures("clean_queues")


class Loader:
    """Registers jobs one after another through `nodes` in turn; keeps the ids answered
    202. A 503 or a lost connection is retried with the same id."""

    def __init__(self, nodes) -> None:
        self.nodes = nodes
        self.accepted: list[str] = []
        self.refused = 0
        self._stop = False
        self._g = gevent.spawn(self._run)

    def _run(self) -> None:
        n = 0
        while not self._stop:
            job = f"m{n}"
            node = self.nodes[n % len(self.nodes)]
            try:
                code, _ = Client(node.http_port).call(
                    "POST", "/api/jobs/register", {"id": job, "type": "t", "payload": {}})
            except OSError:
                code = None
            if code == 202:
                self.accepted.append(job)
                n += 1
            else:
                self.refused += 1
                gevent.sleep(0.05)

    def stop(self) -> None:
        self._stop = True
        self._g.join(30)


def status(node) -> dict:
    code, body = node.client().call("GET", "/api/cluster/status")
    assert code == 200, body
    return body


def member(node, name) -> dict | None:
    return next((m for m in status(node)["members"] if m["node"] == name), None)


def change(node, method, path, body=None) -> dict:
    """A membership change, retried while another is under way (503)."""
    out = []

    def done():
        code, answer = node.client().call(method, path, body)
        if code == 503:
            return False
        assert code == 200, (code, answer)
        out.append(answer)
        return True
    wait_until(done, 60, 0.2, f"{method} {path} answered")
    return out[0]


def test_grow_from_one_to_five_with_a_witness_and_shrink_back_to_one_under_load(make_node):
    """1 -> 3 -> 5 (the fifth a witness: its config says so, and it is promoted to
    witness) -> 3 (the witness and a voter removed) -> the leader removes itself (asked
    through a follower: it hands over first) -> 1, registers going on all along."""
    names = ("n1", "n2", "n3", "n4", "n5")
    raft = {n: free_port() for n in names}

    def name(n):
        return f"{n}@127.0.0.1"
    first = make_node(node_name=name("n1"), raft_port=raft["n1"], cookie=COOKIE)
    nodes = {"n1": first}
    loader = Loader([first])

    def grow(n, role="voter", **cfg):
        new = make_node(start=False, node_name=name(n), raft_port=raft[n], cookie=COOKIE,
                        raft_peers=[f"{name('n1')}:{raft['n1']}"], **cfg)
        new.args = ["--join"]
        new.start(wait=False)
        nodes[n] = new
        added = change(first, "POST", "/api/cluster/members",
                       {"node": f"{name(n)}:{raft[n]}", "api": f"127.0.0.1:{new.http_port}"})
        assert {"name": name(n), "role": "learner"}.items() <= \
            next(m for m in added["members"] if m["name"] == name(n)).items()
        wait_until(lambda: (member(first, name(n)) or {}).get("caught_up"), 60, 0.1,
                   f"{n} catches up\n" + new.log_tail())
        change(first, "POST", f"/api/cluster/members/{name(n)}/promote", {"role": role})
        if role == "voter":
            loader.nodes = [x for k, x in nodes.items() if k != "n5"]

    try:
        grow("n2")
        grow("n3")
        # Bad input and bad luck: a clear JSON error each.
        c = first.client()
        assert c.call("POST", "/api/cluster/members", {"node": "no-at-sign"})[0] == 400
        assert c.call("POST", "/api/cluster/members", {"node": name("n9"), "role": "boss"})[0] == 400
        code, body = c.call("POST", "/api/cluster/members", {"node": name("n2")})
        assert code == 409 and "already" in body["message"]
        assert c.call("POST", "/api/cluster/members/zz@127.0.0.1/promote")[0] == 404
        assert c.call("DELETE", "/api/cluster/members/zz@127.0.0.1")[0] == 404
        code, body = c.call("POST", f"/api/cluster/members/{name('n2')}/promote")
        assert code == 409 and "learner" in body["message"]
        grow("n4")
        grow("n5", role="witness", witness=True)
        places = {m["node"]: m["member"] for m in status(first)["members"]}
        assert places == {name("n1"): "voter", name("n2"): "voter", name("n3"): "voter",
                          name("n4"): "voter", name("n5"): "witness"}, places
        # 5 -> 3: the witness, then a voter that does not lead.
        change(first, "DELETE", f"/api/cluster/members/{name('n5')}")
        lead = status(first)["leader"]
        drop = next(n for n in ("n4", "n3", "n2") if name(n) != lead)
        change(first, "DELETE", f"/api/cluster/members/{name(drop)}")
        rest = [n for n in ("n1", "n2", "n3", "n4") if n != drop]
        loader.nodes = [nodes[n] for n in rest]
        # The leader removes itself, asked through a follower.
        lead = status(nodes[rest[0]])["leader"]
        via = next(n for n in rest if name(n) != lead)
        removed = change(nodes[via], "DELETE", f"/api/cluster/members/{lead}")
        assert lead not in [m["name"] for m in removed["members"]]
        rest = [n for n in rest if name(n) != lead]
        loader.nodes = [nodes[n] for n in rest]
        lead = status(nodes[rest[0]])["leader"]
        other = next(n for n in rest if name(n) != lead)
        change(nodes[rest[0]], "DELETE", f"/api/cluster/members/{name(other)}")
        survivor = next(nodes[n] for n in rest if n != other)
        loader.nodes = [survivor]
        n_before = len(loader.accepted)
        wait_until(lambda: len(loader.accepted) > n_before + 20, 60, 0.1,
                   "registers go on with one member\n" + survivor.log_tail())
    finally:
        loader.stop()
    assert [m["node"] for m in status(survivor)["members"]] == [status(survivor)["node"]]
    # Every 202 is on the survivor, in its own listing.
    held = {j["id"] for j in all_jobs(survivor.client())}
    assert set(loader.accepted) <= held, sorted(set(loader.accepted) - held)[:5]
    assert loader.accepted, "the loader registered nothing"


def test_members_listing_other_members_at_first_start_refuse_each_others_votes(make_node):
    """n3 lists a fourth member that does not exist; n1 and n2 list the three. Before,
    n3 could lead {n1, n3, n4} with n1's vote and shut n2 out. Now a vote request
    says which members its sender lists while no configuration is in the log: n1 and
    n2 lead between them, n3 never does; n3 logs one line naming what it refused, and
    tells whom it refused, who log one line too (the leader at least: a follower
    talks only to its leader). Once the leader's configuration is in the log, n3
    follows it."""
    raft = {n: free_port() for n in ("n1", "n2", "n3", "n4")}

    def peer(n):
        return f"{n}@127.0.0.1:{raft[n]}"
    nodes = {}
    for n, peers in (("n1", ["n2", "n3"]), ("n2", ["n1", "n3"]), ("n3", ["n1", "n2", "n4"])):
        nodes[n] = make_node(start=False, node_name=f"{n}@127.0.0.1", raft_port=raft[n],
                             cookie=COOKIE, raft_peers=[peer(p) for p in peers])
    for node in nodes.values():
        node.start(wait=False)

    def leader():
        try:
            st = status(nodes["n1"])
        except (OSError, AssertionError):
            return None
        return st["leader"]
    wait_until(lambda: leader() in ("n1@127.0.0.1", "n2@127.0.0.1"), 60, 0.1,
               "n1 or n2 leads\n" + nodes["n3"].log_tail())
    wait_until(lambda: "messages refused member=" in nodes["n3"].log_path.read_text(),
               30, 0.1, "n3 says it refused the others' messages")
    lead = leader()
    lead_node = nodes[lead.split("@")[0]]
    wait_until(lambda: "messages refused by member=n3@127.0.0.1" in
               lead_node.log_path.read_text(), 30, 0.1, "the leader is told, and says so")
    # n3 follows the log's configuration, which does not have n4.
    wait_until(lambda: status(nodes["n3"])["config_index"] > 0, 30, 0.1,
               "n3 applies the leader's configuration\n" + nodes["n3"].log_tail())
    names = [m["node"] for m in status(nodes["n3"])["members"]]
    assert sorted(names) == [f"{n}@127.0.0.1" for n in ("n1", "n2", "n3")]
    assert status(nodes["n3"])["leader"] != "n3@127.0.0.1"


def test_a_new_member_catches_up_from_a_snapshot_that_names_other_members(make_node):
    """n1 alone grows to n2 (the snapshot written then names n1 and n2), then n3; n1 is
    removed and n3 made leader (POST /api/cluster/leader). n4 joins: it is sent that
    old snapshot, whose configuration does not name n3, its leader. It once took that
    configuration's members as its only peers, dropped n3's messages and never caught
    up (bench/membership.py found it); a node's peers now only grow."""
    raft = {n: free_port() for n in ("n1", "n2", "n3", "n4")}

    def name(n):
        return f"{n}@127.0.0.1"
    nodes = {"n1": make_node(node_name=name("n1"), raft_port=raft["n1"], cookie=COOKIE)}
    c1 = nodes["n1"].client()
    for i in range(50):
        assert c1.call("POST", "/api/jobs/register", {"id": f"old-{i}"})[0] == 202

    def grow(n, via, seeds):
        new = make_node(start=False, node_name=name(n), raft_port=raft[n], cookie=COOKIE,
                        raft_peers=[f"{name(s)}:{raft[s]}" for s in seeds])
        new.args = ["--join"]
        new.start(wait=False)
        nodes[n] = new
        change(nodes[via], "POST", "/api/cluster/members",
               {"node": f"{name(n)}:{raft[n]}", "api": f"127.0.0.1:{new.http_port}"})
        wait_until(lambda: (member(nodes[via], name(n)) or {}).get("caught_up"), 60, 0.1,
                   f"{n} catches up\n" + new.log_tail())
        change(nodes[via], "POST", f"/api/cluster/members/{name(n)}/promote")
    grow("n2", "n1", ["n1"])
    grow("n3", "n1", ["n1"])
    change(nodes["n2"], "DELETE", f"/api/cluster/members/{name('n1')}")
    change(nodes["n2"], "POST", "/api/cluster/leader", {"to": name("n3")})
    wait_until(lambda: status(nodes["n2"])["leader"] == name("n3"), 30, 0.1, "n3 leads")
    grow("n4", "n3", ["n2", "n3"])
    held = {j["id"] for j in all_jobs(nodes["n4"].client())}
    assert {f"old-{i}" for i in range(50)} <= held
