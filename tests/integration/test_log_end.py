"""A node whose log ends before what it acknowledged refuses to start (raft/log.py
Rules 1 and 4, raft/node.py Rule 6): exit 3 and one line naming the file and the
missing entries, files left as they were, the same refusal on every try, and the
documented recovery (docs/RELIABILITY.md, A log behind its commit) then works. Real
processes on real files: the damage is made to a stopped node's data_dir, as a disk,
a restore from an older copy or a careless hand would make it."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from dqorch.raft.log import HEADER, records_end

from .cluster_fixtures import cluster  # noqa: F401  (the fixture)
from .conftest import all_jobs, critical_lines, wait_until

BEHIND = re.compile(r"refusing to start: (\S+): the log ends at index (\d+) but (\S+) "
                    r"records commit (\d+): committed entr(?:y|ies) (\d+)(?:-(\d+))? gone")


def register(node, prefix: str, n: int) -> list:
    c = node.client()
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    for id_ in ids:
        status, body = c.call("POST", "/api/jobs/register", {"id": id_, "type": prefix})
        assert status == 202, body
    c.close()
    return ids


def hard_state_commit(node) -> int:
    with open(os.path.join(node.cfg["data_dir"], "hardstate.json")) as f:
        return json.load(f)["commit"]


def newest_segment(node) -> Path:
    return max(Path(node.cfg["data_dir"]).glob("log-*.seg"))


def records(seg: Path) -> list:
    """(offset, index) of each record in seg, batch marks (index 0) included."""
    data = seg.read_bytes()
    out, pos, end = [], 0, records_end(data)
    while pos < end:
        length, _, index, _ = HEADER.unpack_from(data, pos)
        out.append((pos, index))
        pos += HEADER.size + length
    assert pos == end, "the segment reads whole before the damage"
    return out


def start_refused(node) -> str:
    """Start the node; it must exit 3 without a traceback (answering /api/health fails
    the test at once: today's bug). Its output."""
    start = node.log_path.stat().st_size if node.log_path.exists() else 0
    node.start(wait=False)

    def exited() -> bool:
        if node.proc.poll() is not None:
            return True
        try:
            status, body = node.health()
        except OSError:
            return False
        pytest.fail(f"the node started (health {status} {body}) after losing what it "
                    f"acknowledged:\n{node.log_tail()}")
    wait_until(exited, 60, 0.05, "the node to exit")
    with open(node.log_path, "rb") as f:
        f.seek(start)
        err = f.read().decode(errors="replace")
    assert node.proc.returncode == 3 and "Traceback" not in err, err
    return err


def refused_behind(node) -> tuple:
    """Start, expect exit 3 with one line of log.py Rule 4; (file, end, commit, line)."""
    err = start_refused(node)
    (line,) = critical_lines(err)
    m = BEHIND.search(line)
    assert m, line
    where, end, hs, commit, lo, hi = m.groups()
    assert hs == os.path.join(node.cfg["data_dir"], "hardstate.json")
    assert int(lo) == int(end) + 1 and int(hi or lo) == int(commit), line
    assert "docs/RELIABILITY.md" in line
    return where, int(end), int(commit), line


def stopped_with_jobs(make_node, n: int = 300, **cfg) -> tuple:
    """A node that acknowledged n jobs and stopped cleanly; (node, ids, a copy of its
    data_dir as the operator's last backup)."""
    node = make_node(**cfg).wait_healthy()
    ids = register(node, "le", n)
    assert node.stop() == 0
    backup = Path(str(node.cfg["data_dir"]) + ".backup")
    shutil.copytree(node.cfg["data_dir"], backup)
    return node, ids, backup


def test_a_log_cut_at_a_record_boundary_refuses_then_a_restored_copy_starts(make_node):
    node, ids, backup = stopped_with_jobs(make_node)
    seg = newest_segment(node)
    recs = [r for r in records(seg) if r[1]]
    offset, first_lost = recs[-40]                # 40 whole records go, at a boundary
    with open(seg, "r+b") as f:
        f.truncate(offset)
    commit = hard_state_commit(node)
    where, end, recorded, line = refused_behind(node)
    assert (where, end, recorded) == (str(seg), first_lost - 1, commit)
    assert os.path.getsize(seg) == offset         # nothing cut, nothing made
    assert refused_behind(node)[3].split("CRITICAL")[-1] == line.split("CRITICAL")[-1]
    shutil.rmtree(node.cfg["data_dir"])           # the documented recovery: the copy
    shutil.copytree(backup, node.cfg["data_dir"])
    node.start()
    assert {j["id"] for j in all_jobs(node.client(), type="le")} == set(ids)


def test_a_log_cut_mid_record_refuses_and_is_not_cut_as_a_torn_tail(make_node):
    node, _, _ = stopped_with_jobs(make_node)
    seg = newest_segment(node)
    size = records(seg)[-3][0] + 30                # inside the third record from the end
    with open(seg, "r+b") as f:
        f.truncate(size)
    err = start_refused(node)
    (line,) = critical_lines(err)
    assert f"{seg}: damaged record at byte" in line and "where committed entr" in line
    assert f"records commit {hard_state_commit(node)}" in line
    assert "cutting a torn log tail" not in err
    assert os.path.getsize(seg) == size


def test_a_deleted_newest_segment_refuses_naming_where_the_log_ends(make_node):
    node, _, _ = stopped_with_jobs(make_node, n=1300, snapshot_entries=1000)
    segs = sorted(Path(node.cfg["data_dir"]).glob("log-*.seg"))
    snaps = sorted(Path(node.cfg["data_dir"]).glob("snapshot-*.json"))
    assert snaps, "a snapshot was taken"
    newest = segs[-1]
    first = int(newest.name[4:24])
    newest.unlink()
    where, end, commit, _ = refused_behind(node)
    assert end == first - 1 and commit == hard_state_commit(node) > end
    # The log now ends in the segment before it, or at the snapshot that replaced it.
    assert where == (str(segs[-2]) if len(segs) > 1 else str(snaps[-1]))
    assert not Path(newest).exists()              # none made anew


def test_a_flipped_byte_in_the_newest_record_refuses_and_the_job_is_kept(make_node):
    """It was cut as a torn tail with one WARNING, and the job answered 404."""
    node, ids, _ = stopped_with_jobs(make_node)
    seg = newest_segment(node)
    data = seg.read_bytes()
    offset, index = records(seg)[-1]
    pos = offset + HEADER.size + 5                 # inside its JSON body
    with open(seg, "r+b") as f:
        f.seek(pos)
        f.write(bytes([data[pos] ^ 0x04]))
    err = start_refused(node)
    (line,) = critical_lines(err)
    assert f"{seg}: damaged record at byte {offset} " in line, line
    assert "torn" not in err.replace("not a torn write", "")
    assert seg.read_bytes()[:pos] == data[:pos] and len(seg.read_bytes()) == len(data)


def test_after_kill9_the_recorded_commit_catches_a_cut_log(make_node):
    """kill -9 leaves no clean stop to record the commit: the node records it while
    it runs (raft/node.py Rule 6), so it is nonzero and reaches the last 202."""
    node = make_node().wait_healthy()
    ids = register(node, "k9", 300)
    c = node.client()
    wait_until(lambda: c.call("GET", "/api/jobs?status=pending&limit=1")[1]["count"] == 0,
               60, 0.05, "every job queued (the dispatcher's marks committed)")
    wait_until(lambda: hard_state_commit(node) >= c.call("GET", "/api/raft/status")[1][
        "commit_index"] > len(ids), 30, 0.05, "the commit recorded in hardstate.json")
    node.kill9()
    commit = hard_state_commit(node)
    seg = newest_segment(node)
    recs = [r for r in records(seg) if r[1]]
    offset, first_lost = recs[-25]
    assert commit >= first_lost > len(ids)        # recorded, and past the cut
    with open(seg, "r+b") as f:
        f.truncate(offset)
    where, end, recorded, _ = refused_behind(node)
    assert (where, end, recorded) == (str(seg), first_lost - 1, commit)


def test_a_member_behind_its_commit_refuses_until_its_data_dir_is_replaced(cluster):
    """A member that lost entries it acknowledged must not vote or count toward a
    commit: it refuses to start (never joins) until the operator replaces its
    data_dir, after which it catches up from the leader (docs/CLUSTER.md)."""
    c = cluster(3, publish_on_register=False)
    lead = c.wait_leader()
    member = c.followers()[0]
    ids = register(lead, "cl", 200)
    target = lead.client().call("GET", "/api/raft/status")[1]["commit_index"]
    wait_until(lambda: member.client().call("GET", "/api/raft/status")[1][
        "commit_index"] >= target, 30, 0.05, "the member has every job committed")
    assert member.stop() == 0
    seg = newest_segment(member)
    recs = [r for r in records(seg) if r[1]]
    offset, first_lost = recs[-30]
    with open(seg, "r+b") as f:
        f.truncate(offset)
    where, end, recorded, _ = refused_behind(member)
    assert (where, end) == (str(seg), first_lost - 1) and recorded >= target
    assert c.wait_leader() is lead                # the others go on without it
    # The documented repair: the log and snapshots moved aside, commit set to 0 in a
    # hard state kept for its term and vote.
    data = Path(member.cfg["data_dir"])
    aside = Path(str(data) + ".damaged")
    aside.mkdir()
    for f in [*data.glob("log-*.seg"), *data.glob("snapshot-*.json")]:
        shutil.move(str(f), str(aside / f.name))
    hs = json.loads((data / "hardstate.json").read_text())
    (data / "hardstate.json").write_text(json.dumps(dict(hs, commit=0)))
    member.start(wait=False)

    def has_every_job() -> bool:
        try:
            return {j["id"] for j in all_jobs(member.client(), type="cl")} == set(ids)
        except (OSError, AssertionError):
            return False
    wait_until(has_every_job, 60, 0.1, "the member caught up")
    assert "member denies entries it acknowledged member=%s" % member.cfg["node_name"] \
        in lead.log_path.read_text()
    assert json.loads((data / "hardstate.json").read_text())["term"] >= hs["term"]
