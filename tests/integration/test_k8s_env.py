"""Kubernetes service links in a real process's environment (issue 8): DQ_* variables
that are not settings are one warning line, not exit 2; a link that overrides a setting
(DQ_RABBITMQ_PORT=tcp://...) is exit 2 with a line that says where it came from."""
from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO, SHARED_PORT

DQORCH = [sys.executable, os.path.join(REPO, "dqorch.py")]

# What Kubernetes injects for a Service named "dq" (port 8081) and one named "dq-api".
SERVICE_LINKS = {
    "DQ_SERVICE_HOST": "10.96.0.12",
    "DQ_SERVICE_PORT": "8081",
    "DQ_PORT": "tcp://10.96.0.12:8081",
    "DQ_PORT_8081_TCP": "tcp://10.96.0.12:8081",
    "DQ_PORT_8081_TCP_PROTO": "tcp",
    "DQ_PORT_8081_TCP_PORT": "8081",
    "DQ_PORT_8081_TCP_ADDR": "10.96.0.12",
    "DQ_API_SERVICE_HOST": "10.96.0.13",
    "DQ_API_PORT": "tcp://10.96.0.13:80",
}


def test_service_links_are_one_warning_and_the_node_serves(make_node, monkeypatch):
    for name, value in SERVICE_LINKS.items():
        monkeypatch.setenv(name, value)           # inherited by the node process
    monkeypatch.setenv("DQ_RABBIT_HOST", "not-a-setting")
    node = make_node(rabbit_port=SHARED_PORT).wait_healthy()   # exit 2 before
    lines = node.log_path.read_text().splitlines()
    warned = [line for line in lines if "not settings" in line]
    assert len(warned) == 1, "\n".join(lines)
    (line,) = warned
    assert " WARNING dqorch.cli ignoring 10 DQ_* environment variables" in line
    assert all(name in line for name in SERVICE_LINKS)
    assert "DQ_RABBIT_HOST (did you mean DQ_RABBITMQ_HOST?)" in line
    assert "enableServiceLinks: false" in line
    text = "\n".join(lines)
    assert "10.96.0." not in text and "not-a-setting" not in text   # names only


def test_service_link_over_a_setting_stops_start_saying_so(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n")
    out = subprocess.run(DQORCH + ["-c", str(cfg)], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ,
                                              DQ_RABBITMQ_PORT="tcp://10.96.3.4:5672"))
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("config: rabbitmq_port: must be an integer 1-65535, got "
                           "'tcp://10.96.3.4:5672' (from DQ_RABBITMQ_PORT)")
    assert "Kubernetes service link (for a Service named dq-rabbitmq)" in line
    assert line.endswith("set enableServiceLinks: false on the pod")


def test_check_config_shows_the_warning_on_stderr(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("http_port: 9000\n")
    out = subprocess.run(DQORCH + ["-c", str(cfg), "--check-config"], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, DQ_SERVICE_HOST="10.1.1.1"))
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines() == [
        "ignoring 1 DQ_* environment variable that is not a setting: Kubernetes service "
        "links DQ_SERVICE_HOST (set enableServiceLinks: false on the pod to stop them)"]
    assert '"http_port": 9000' in out.stdout
