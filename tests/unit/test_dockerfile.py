"""No Docker engine runs here: check the Dockerfile against the config it ships with."""
import pytest
import os
import re

from dqorch import config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dockerfile() -> str:
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        return f.read()


def test_exposed_ports_are_the_config_defaults():
    cfg = config.Config()
    [line] = re.findall(r"^EXPOSE (.+)$", dockerfile(), re.M)
    assert set(line.split()) == {str(cfg.http_port), str(cfg.metrics_port),
                                 f"{cfg.raft_port}/udp"}


def test_env_settings_are_valid_config_keys():
    env = dict(re.findall(r"(DQ_[A-Z_]+)=(\S+)", dockerfile()))
    assert env, "the Dockerfile configures dqorch through DQ_* variables"
    assert config.unknown_env(env) == []  # each is a setting (parse ignores the others)
    cfg = config.parse({}, env)
    assert cfg.http_host == "0.0.0.0"     # reachable from outside the container
    assert cfg.data_dir == re.search(r'^VOLUME \["([^"]+)"\]', dockerfile(), re.M).group(1)


def test_healthcheck_needs_no_curl_and_asks_the_metrics_port():
    text = dockerfile()
    hc = re.search(r"^HEALTHCHECK .*?CMD (.+)$", text, re.M | re.S).group(1)
    assert "curl" not in hc and "wget" not in hc
    assert str(config.Config().metrics_port) in hc and "/health" in hc


def test_runs_as_non_root():
    users = re.findall(r"^USER (\S+)$", dockerfile(), re.M)
    assert users and users[-1] not in ("root", "0")


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.0.0.2", True),
                                       ("localhost", True), ("::1", True),
                                       ("0.0.0.0", False), ("::", False),
                                       ("10.0.0.5", False), ("dq.internal", False)])
def test_the_open_api_warning_is_for_hosts_beyond_loopback(host, loop):
    """The image listens on 0.0.0.0 and the API has no authentication: start-up warns
    for every http_host that is not loopback (README, Security)."""
    from dqorch.app import _loopback
    assert _loopback(host) is loop
