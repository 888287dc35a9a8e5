"""Real clusters for integration tests: N dqorch.py processes on loopback, each with
its own ports and data_dir, peers of one another over UDP, and the shared RabbitMQ.
Waiting is polling with a deadline (wait_until), never a timing assert."""
from __future__ import annotations

import signal

import pytest

from .conftest import NodeProc, free_port
from .broker_fixtures import SHARED_PORT, wait_until

COOKIE = "cluster-test-cookie-0123456789"


class Cluster:
    def __init__(self, tmp_path_factory, n: int = 3, witness: int | None = None,
                 rabbit_port: int = SHARED_PORT, **overrides) -> None:
        self.names = [f"n{i}@127.0.0.1" for i in range(1, n + 1)]
        raft_ports = [free_port() for _ in self.names]
        self.nodes: dict[str, NodeProc] = {}
        for i, name in enumerate(self.names):
            peers = [f"{p}:{raft_ports[j]}" for j, p in enumerate(self.names) if j != i]
            cfg = dict(node_name=name, raft_port=raft_ports[i], raft_peers=peers,
                       cookie=COOKIE, witness=(witness == i + 1), **overrides)
            self.nodes[name] = NodeProc(tmp_path_factory.mktemp(name.split("@")[0]),
                                        rabbit_port, **cfg)

    def start(self) -> "Cluster":
        for node in self.nodes.values():
            node.start(wait=False)
        self.wait_leader()
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                try:
                    node.proc.send_signal(signal.SIGCONT)
                except OSError:
                    pass
            node.stop()

    def up(self) -> list[NodeProc]:
        return [n for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]

    def status(self, node: NodeProc):
        try:
            code, body = node.client().call("GET", "/api/cluster/status")
        except OSError:
            return None
        return body if code == 200 else None

    def leader(self, among=None) -> NodeProc | None:
        """The node that says it leads, when every node asked agrees on it."""
        seen = set()
        for node in among or self.up():
            st = self.status(node)
            if st is None or st["leader"] is None:
                return None
            seen.add(st["leader"])
        if len(seen) != 1:
            return None
        return self.nodes[seen.pop()]

    def wait_leader(self, among=None, timeout_s: float = 60) -> NodeProc:
        found = []

        def agreed():
            lead = self.leader(among)
            if lead is not None and lead in (among or self.up()):
                found.append(lead)
                return True
            return False
        wait_until(agreed, timeout_s, 0.05, "one leader all agree on\n" + self.logs())
        return found[-1]

    def followers(self) -> list[NodeProc]:
        lead = self.wait_leader()
        return [n for n in self.up() if n is not lead]

    def logs(self, n: int = 15) -> str:
        return "\n".join(f"--- {name}\n{node.log_tail(n)}" for name, node in self.nodes.items())


@pytest.fixture
def cluster(tmp_path_factory):
    """make(n=3, **kw) -> a started Cluster; every cluster made is stopped afterwards.
    A module that uses it imports it: `from .cluster_fixtures import cluster`."""
    made = []

    def make(n=3, **kw) -> Cluster:
        c = Cluster(tmp_path_factory, n, **kw)
        made.append(c)
        return c.start()
    yield make
    for c in made:
        c.stop()
