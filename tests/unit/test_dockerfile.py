"""No Docker engine runs here: check the Dockerfile against the config it ships with."""
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
