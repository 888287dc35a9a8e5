"""No Docker engine runs here: check the Dockerfile against the config it ships with."""
import json
import os
import re

import pytest

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


def test_healthcheck_needs_no_curl_and_asks_the_node_where_it_listens():
    """dqctl probe reads the node's own config file (and DQ_* variables), so it asks
    where the node listens: 127.0.0.1 whatever http_host said, before, failed a node
    given DQ_HTTP_HOST=10.0.0.5. Where that is: tests/unit/test_ctl.py."""
    text = dockerfile()
    hc = json.loads(re.search(r"^HEALTHCHECK .*?CMD (\[[^]]*\])", text, re.M | re.S).group(1))
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    assert "curl" not in hc and "wget" not in hc and "127.0.0.1" not in " ".join(hc)
    assert hc[0] == "dqctl" and hc[-1] == "probe"
    assert hc[hc.index("--config") + 1] == entry[entry.index("-c") + 1]
    from dqorch import ctl
    assert ctl.parser().parse_args(hc[1:]).fn is ctl.cmd_probe


def _requirements() -> list[str]:
    """The names setup.py requires, runtime and test extra."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        text = f.read()
    block = text[text.index("install_requires"):text.index('"bench"')]
    return re.findall(r'"([A-Za-z][\w.-]*)(?:[<>=!][^"]*)?"(?!\s*:)', block)


def _pins() -> dict:
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    pins = dict(line.split("==") for line in lines if line)
    return {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}


def test_every_requirement_is_pinned():
    pins = _pins()
    names = [re.sub(r"[-_.]+", "-", n).lower() for n in _requirements()]
    assert "gevent" in names and "pytest" in names
    assert [n for n in names if n not in pins] == []
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+]*", v) for v in pins.values())


def test_the_image_and_the_test_command_install_with_the_pins():
    assert re.search(r"^RUN pip install .*-c constraints\.txt", dockerfile(), re.M)
    assert re.search(r"^COPY .*constraints\.txt", dockerfile(), re.M)
    with open(os.path.join(ROOT, "build-orchestrator.sh")) as f:
        script = f.read()
    deps = script[script.index("\ndeps() {"):script.index("\n}\n", script.index("\ndeps() {"))]
    assert re.search(r"pip install .*-c constraints\.txt", deps)
    assert "constraints.txt -nt" in deps       # a new pin installs again


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
