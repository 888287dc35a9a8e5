"""The API's Host check (DNS rebinding, docs/SECURITY.md), in-process: which Host
values a node answers to, for each kind of http_host."""
from __future__ import annotations

import pytest

from dqorch import config
from dqorch.api import HostCheck, host_name


@pytest.mark.parametrize("value,name", [
    ("127.0.0.1:8081", "127.0.0.1"), ("LocalHost.", "localhost"), ("[::1]:8081", "::1"),
    ("[::1]", "::1"), ("orch.example:", "orch.example"), ("a:b", "a:b"),
    ("[::1]x", "[::1]x"), ("evil.example:80:80", "evil.example:80:80"),
])
def test_host_name_drops_port_brackets_and_final_dot(value, name):
    assert host_name(value) == name


def check(**settings) -> HostCheck:
    return HostCheck.for_config(config.parse(settings, {}))


def refused(hc: HostCheck, host: str, browser: bool = False) -> bool:
    env = {"HTTP_HOST": host, "PATH_INFO": "/api/jobs"}
    if browser:
        env["HTTP_SEC_FETCH_SITE"] = "same-origin"
    out = hc.refusal(env)
    if out is not None:
        assert out[0].startswith("421") and out[1] == "invalid_request"
    return out is not None


def test_a_loopback_node_answers_its_own_names_only():
    hc = check()
    for host in ("127.0.0.1:8081", "localhost", "[::1]:1"):
        assert not refused(hc, host, browser=True)
    for host in ("evil.example:8081", "10.0.0.5", "127.0.0.2", "localhost.evil.example"):
        assert refused(hc, host) and refused(hc, host, browser=True)


def test_node_name_api_advertise_and_allowed_hosts_are_own_names():
    hc = check(http_host="10.0.0.5", node_name="n1@orch-1.internal",
               api_advertise="orch-1.example:443", allowed_hosts=["lb.example"])
    for host in ("10.0.0.5:8081", "orch-1.internal", "orch-1.example", "LB.example:80"):
        assert not refused(hc, host)
    assert refused(hc, "10.0.0.6")           # an address: not ours unless listed


def test_a_wildcard_node_checks_browsers_only_and_takes_any_address():
    hc = check(http_host="0.0.0.0")
    # The gateway and workers reach it under a service name it cannot know.
    assert not refused(hc, "orchestrator:8081")
    # A browser is held to the node's names, for reads as well as writes ...
    assert refused(hc, "evil.example:8081", browser=True)
    assert refused(hc, "evil.example", browser=False) is False
    env = {"HTTP_HOST": "evil.example", "HTTP_ORIGIN": "http://evil.example"}
    assert hc.refusal(env) is not None
    # ... but an address literal cannot be a rebound name.
    for host in ("10.1.2.3:8081", "[fd00::5]:8081", "127.0.0.1"):
        assert not refused(hc, host, browser=True)


def test_a_wildcard_node_with_allowed_hosts_checks_everyone():
    hc = check(http_host="::", allowed_hosts=["orchestrator"])
    assert not refused(hc, "orchestrator:8081")
    assert not refused(hc, "10.1.2.3:8081")
    assert refused(hc, "other-name:8081")


def test_a_star_turns_the_check_off():
    hc = check(allowed_hosts=["*"])
    assert not refused(hc, "evil.example", browser=True)


def test_no_host_header_is_served():
    assert check().refusal({"PATH_INFO": "/api/health"}) is None


def test_the_cache_of_answers_is_bounded():
    hc = check()
    for n in range(HostCheck.MAX_SEEN * 3):
        assert refused(hc, f"h{n}.evil.example")
    assert len(hc._seen) == HostCheck.MAX_SEEN
    assert refused(hc, "h999.evil.example") and not refused(hc, "localhost")


@pytest.mark.parametrize("settings", [
    {}, {"http_host": "0.0.0.0", "node_name": "n2@orch-2.internal"},
    {"http_host": "10.0.0.7"}, {"http_host": "::", "api_advertise": "[fd00::7]:9443"},
    {"http_host": "0.0.0.0", "api_advertise": "orch-2.example:443",
     "allowed_hosts": ["lb.example"]},
])
def test_the_host_a_forwarding_member_sends_is_the_leader_s_own(settings):
    # forward._Link sends `Host: <host of the leader's advertised API>`, browser
    # headers or not: the leader must answer it (writes reach a follower anywhere).
    from dqorch.app import advertised_api
    cfg = config.parse(settings, {})
    link_host = advertised_api(cfg).rpartition(":")[0]
    hc = HostCheck.for_config(cfg)
    assert not refused(hc, link_host) and not refused(hc, link_host, browser=True)


# allow_from and IPv4-mapped addresses ###########################################

@pytest.mark.parametrize("remote,networks,allowed", [
    ("::ffff:10.0.0.1", ["10.0.0.0/8"], True),       # an IPv4 client on a :: listener
    ("::ffff:10.0.0.1", ["192.168.0.0/16"], False),
    ("::ffff:10.0.0.1", ["::ffff:10.0.0.0/104"], True),
    ("10.0.0.1", ["10.0.0.0/8"], True),
    ("::1", ["127.0.0.0/8"], False),                  # ::1 is not 127.0.0.1
    ("::1", ["::1"], True),
    ("fd00::5", ["10.0.0.0/8", "fd00::/8"], True),
    ("not-an-address", ["0.0.0.0/0"], False),
])
def test_allow_from_matches_ipv4_mapped_addresses(remote, networks, allowed):
    from dqorch.api import Access
    cfg = config.parse({"allow_from": networks}, {})
    refused = Access(allow_from=cfg.allow_from).refusal({"REMOTE_ADDR": remote})
    assert (refused is None) == allowed
