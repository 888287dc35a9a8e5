"""Connection floods against a real node: thousands of connections that connect and
say nothing, and of slowloris clients that send a request one byte a second, while a
well-behaved client keeps registering and reading. The node must answer the good
client throughout and close every flooding connection by itself (http_idle_timeout_s,
http_request_timeout_s). Memory per connection and probe latency are measured by
bench/conn_flood.py, not asserted here. Long mode: scripts/conn-flood.py; `flood` is
in flood.py. Run on both HTTP front ends (config http_server)."""
from __future__ import annotations

from .conftest import SHARED_PORT
from .flood import flood


def test_a_flood_of_idle_and_slow_connections_starves_no_one(make_node, http_server):
    node = make_node(SHARED_PORT, http_idle_timeout_s=5, http_request_timeout_s=5,
                     publish_on_register=False, http_server=http_server)
    f = flood(node, idle=1000, slow=500, hold_s=8)
    print(f)
    assert f["opened"] == 1500, f
    assert f["probes"] > 0 and f["probes_failed"] == 0, f
    assert f["closed_by_node"] == f["opened"], f          # every one, by the node itself
    # The slow ones are closed before their request line is through: one deadline for
    # the whole line (a per-read timeout let each byte a second reach the headers, and
    # then a 408, 34 s later).
    assert f["answered"] == 0, f
    assert f["still_serving"], f
    assert "Traceback" not in node.log_path.read_text()
