"""build-orchestrator.sh start / status / stop / run, as an operator runs them, on a node
whose http_host is a loopback address other than 127.0.0.1 (start used to probe
127.0.0.1 for 60 s and report a failure while the node ran fine; status said `stopped`
while a node started by `run` served).

The script runs from a copy of the checkout's layout in a temporary directory (its
pid file and log go to var/run there, not into the checkout) with a stand-in venv
whose python is this one and whose deps are marked installed: nothing is installed."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from .conftest import REPO, SHARED_PORT, free_port, wait_until

HOST = "127.0.3.1"


@pytest.fixture
def script(tmp_path, shared_rabbit):
    root = tmp_path / "dq"
    root.mkdir()
    shutil.copy(os.path.join(REPO, "build-orchestrator.sh"), root)
    for name in ("dqorch.py", "dqorch", "scripts", "setup.py", "constraints.txt"):
        os.symlink(os.path.join(REPO, name), root / name)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    py.chmod(0o755)
    (venv / ".dqorch-deps").touch()          # newer than setup.py: deps does nothing
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"http_host: {HOST}\nhttp_port: {free_port()}\nmetrics_port: "
                   f"{free_port()}\nraft_port: {free_port()}\nrabbitmq_port: {SHARED_PORT}\n"
                   f"data_dir: {tmp_path / 'data'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DQ_")}
    env.update(DQ_VENV=str(venv), DQ_CONFIG=str(cfg))
    started = []

    def run(*args, timeout=120):
        out = subprocess.run([str(root / "build-orchestrator.sh"), *args], env=env,
                             capture_output=True, text=True, timeout=timeout)
        return out.returncode, out.stdout, out.stderr

    def popen(*args):
        p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=root)
        started.append(p)
        return p

    run.popen = popen
    run.root = root
    run.cfg = cfg
    yield run
    run("stop", timeout=60)
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)


def pid_file(script) -> str:
    return (script.root / "var" / "run" / "dqorch.pid").read_text().strip()


def test_start_status_stop_on_a_loopback_address_of_its_own(script):
    code, out, err = script("status")
    assert code == 3 and out.strip() == "stopped", err
    code, out, err = script("start")
    assert code == 0, out + err
    assert f"running (pid {pid_file(script)}, {HOST}:" in out
    code, out, err = script("status")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == f"running (pid {pid_file(script)})"
    rows = dict(line.split(None, 1) for line in lines[1:])
    assert rows["status"] == "healthy" and rows["raft"].startswith("leader")
    code, out, err = script("stop")
    assert code == 0 and out.startswith("build-orchestrator: stopped"), out + err
    assert script("status")[0] == 3


def test_status_and_stop_know_a_node_started_by_run(script):
    proc = script.popen(str(script.root / "build-orchestrator.sh"), "run")
    # The pid file is there from the start (run writes it, then execs the node).
    wait_until(lambda: proc.poll() is not None or "healthy" in script("status")[1], 60, 0.5,
               "the node started by run answering")
    assert proc.poll() is None
    code, out, err = script("status")
    assert code == 0 and out.splitlines()[0] == f"running (pid {proc.pid})", out + err
    assert "healthy" in out
    code, out, err = script("stop")
    assert code == 0, out + err
    assert proc.wait(30) == 0                 # a clean stop of the node run exec'd


def test_status_finds_a_node_it_did_not_start(script):
    proc = script.popen(sys.executable, "dqorch.py", "-c", str(script.cfg))
    wait_until(lambda: proc.poll() is not None or script("status")[0] == 0, 60, 0.5,
               "the node answering")
    code, out, _ = script("status")
    assert code == 0 and out.startswith("running (no pid file")
    code, out, err = script("start")          # its port is taken: say so, start nothing
    assert code == 1 and "in use" in err and f"{HOST}:" in err
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
