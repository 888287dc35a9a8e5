"""A node whose data_dir it cannot trust refuses to start with exit 3 and one line
that names the problem (README, Recovery); the documented recovery then works. Real
processes on real files; the damage is made with RaftLog, as a bug or a disk would."""
from __future__ import annotations

import os
import subprocess
import sys

from dqorch.raft.log import RaftLog, encode
from dqorch.fsm import SNAPSHOTS

from .conftest import REPO, SHARED_PORT, critical_lines, wait_until

DQORCH = [sys.executable, os.path.join(REPO, "dqorch.py")]


def start_and_exit(node, *extra) -> tuple:
    out = subprocess.run(DQORCH + ["-c", str(node.cfg_path), *extra], capture_output=True,
                         text=True, timeout=60)
    return out.returncode, out.stderr


def seed_log(data_dir, cmds) -> None:
    lg = RaftLog(str(data_dir), SNAPSHOTS)
    lg.open()
    first = lg.last_index + 1
    data = b"".join(encode(first + i, 1, c) for i, c in enumerate(cmds))
    lg.append(data, first + len(cmds) - 1, 1)
    lg.close()


def test_an_entry_that_cannot_be_applied_refuses_start_then_skip_entry_recovers(make_node):
    node = make_node(rabbit_port=SHARED_PORT, start=False)
    job = {"type": "t", "priority": 5, "payload": {}, "max_retries": 0,
           "execution_timeout": 60, "metadata": {}}
    seed_log(node.cfg["data_dir"], [
        {"op": "register", "id": "ok-1", "publish": False, "job": job, "at_ms": 1},
        {"op": "frobnicate", "id": "bad-1", "at_ms": 2},          # no such op
        {"op": "register", "id": "ok-2", "publish": False, "job": job, "at_ms": 3}])
    code, err = start_and_exit(node)
    assert code == 3, err
    assert "Traceback" not in err
    (line,) = critical_lines(err)
    assert "index=2 op=frobnicate job=bad-1" in line and "cannot be applied" in line
    code, err = start_and_exit(node)           # refuses again, the same way: no crash loop
    assert code == 3 and [x.split("CRITICAL")[1] for x in critical_lines(err)] == \
        [line.split("CRITICAL")[1]]
    node.proc = subprocess.Popen(                                # the documented recovery
DQORCH + ["-c", str(node.cfg_path), "--skip-entry", "2"],
                                 stdout=open(node.log_path, "ab"), stderr=subprocess.STDOUT)
    wait_until(lambda: "snapshot written" in node.log_tail(200), 60, 0.1,
               "snapshot after the skip\n" + node.log_tail())
    assert "skipping log entry as asked index=2 op=frobnicate" in node.log_tail(200)
    assert node.stop() == 0
    node.start()                               # no flag needed any more
    c = node.client()
    assert c.call("GET", "/api/jobs/ok-1")[0] == 200
    assert c.call("GET", "/api/jobs/ok-2")[0] == 200


def test_a_damaged_log_refuses_start_naming_file_and_offset(make_node):
    node = make_node(rabbit_port=SHARED_PORT, start=False)
    cmds = [{"op": "noop", "at_ms": i} for i in range(1, 6)]
    for c in cmds:
        seed_log(node.cfg["data_dir"], [c])
    seg = os.path.join(node.cfg["data_dir"], "log-%020d.seg" % 1)
    with open(seg, "r+b") as f:
        f.seek(24 + 24 + 5)                    # inside the first entry's record
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x10]))
    size = os.path.getsize(seg)
    code, err = start_and_exit(node)
    assert code == 3 and "Traceback" not in err, err
    (line,) = critical_lines(err)
    assert seg in line and "damaged record at byte 24" in line
    assert os.path.getsize(seg) == size        # nothing cut


def test_a_damaged_hard_state_refuses_start_naming_the_file(make_node):
    node = make_node(rabbit_port=SHARED_PORT, start=False)
    os.makedirs(node.cfg["data_dir"])
    hs = os.path.join(node.cfg["data_dir"], "hardstate.json")
    open(hs, "w").close()
    code, err = start_and_exit(node)
    assert code == 3 and "Traceback" not in err, err
    (line,) = critical_lines(err)
    assert hs in line and "damaged hard state" in line


def test_a_witness_without_peers_refuses_to_start(make_node):
    """Alone, a witness would lead a cluster of one with no broker: nothing published."""
    node = make_node(rabbit_port=SHARED_PORT, start=False, witness=True)
    code, err = start_and_exit(node)
    assert code == 2 and "Traceback" not in err, err
    (line,) = critical_lines(err)
    assert "witness" in line and "raft_peers" in line
    assert not os.path.exists(node.cfg["data_dir"])      # refused before touching it


def test_a_node_with_peers_and_the_default_cookie_refuses_to_start(make_node):
    """The default cookie is public: with it anyone could forge votes and entries."""
    node = make_node(rabbit_port=SHARED_PORT, start=False,
                     raft_peers=["orchestrator@127.0.0.2"])
    code, err = start_and_exit(node)
    assert code == 2 and "Traceback" not in err, err
    (line,) = critical_lines(err)
    assert "cookie" in line and "default" in line and "change-me" in line
    assert not os.path.exists(node.cfg["data_dir"])      # refused before touching it
