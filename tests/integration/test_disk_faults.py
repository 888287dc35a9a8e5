"""Storage faults against a real node (issue "storage safety"): data_dir on a small
tmpfs that runs out of inodes or of space, a start on a full disk, and kill -9 while
a forked snapshot child is writing. The node must go on serving (or refuse cleanly),
say so in /api/health, never republish in a loop, and recover by itself.

The tmpfs tests need root and `mount -t tmpfs`; they skip (saying why) elsewhere.
Waiting is polling with a deadline (wait_until), never a timing assert.
"""
from __future__ import annotations

import collections
import errno
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import gevent
import pika
import pytest

from dqorch.raft.log import batch_mark, encode
from dqorch.raft.snapshots import SNAPSHOT_RETRY_S

from .conftest import JOB_QUEUES, SHARED_PORT, all_jobs, blocking_channel, wait_until
from .faults import fill_space, preload, slow_fsync_lib

EXIT_DATA = 3          # dqorch/app.py: data_dir damaged or unwritable
LINE_RE = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


# tmpfs ########################################################################

def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size, nr_inodes=None) -> a fresh tmpfs under tmp_path, unmounted at
    teardown (lazily when still busy). List this fixture before make_node so that the
    nodes are stopped before their file system goes away."""
    mounted: list[Path] = []

    def mount(name: str, size: str, nr_inodes: int | None = None) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        if shutil.which("mount") is None or shutil.which("umount") is None:
            pytest.skip("mount/umount not installed")
        path = tmp_path / name
        path.mkdir()
        opts = f"size={size}" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (mount -t tmpfs -o {opts}: "
                        f"{(r.stderr or r.stdout).strip()})")
        mounted.append(path)
        if not os.path.ismount(path):
            pytest.fail(f"mount said ok but {path} is not a mount point")
        return path

    yield mount
    for path in reversed(mounted):
        _umount(path)


def fill_inodes(directory: Path) -> list[Path]:
    """Create empty files until the file system has no inode left."""
    made = []
    while True:
        path = directory / f"inode-filler-{len(made)}"
        try:
            path.touch(exist_ok=False)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            return made
        made.append(path)


# node helpers #################################################################

def register(c, id_: str, payload=None, type_: str = "disk"):
    return c.call("POST", "/api/jobs/register",
                  {"id": id_, "type": type_, "payload": payload or {"n": id_}})


def log_text(node, start: int = 0) -> str:
    with open(node.log_path, "rb") as f:
        f.seek(start)
        return f.read().decode("utf-8", "replace")


def log_lines(node, level: str, start: int = 0) -> list[str]:
    return [line for line in log_text(node, start).splitlines()
            if (m := LINE_RE.match(line)) and m.group(1) == level]


def health(node) -> dict:
    status, body = node.health()
    assert status == 200, (status, body)
    return body


def take(queue: str) -> list:
    """The messages in a queue now, as properties; bounded by its count at the start
    (conftest's drain() runs until the queue is empty, which never happens while a
    node republishes in a loop)."""
    conn, ch = blocking_channel(SHARED_PORT)
    out = []
    try:
        try:
            n = ch.queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code != 404:
                raise
            return out
        for _ in range(n):
            method, props, _body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                break
            out.append(props)
    finally:
        conn.close()
    return out


def queue_counts(prefix: str = "full-") -> collections.Counter:
    """(message_id, x-dq-attempt) -> copies of this test's jobs, taking the messages
    from the job queues (the broker is shared: other ids are not ours to judge)."""
    got: collections.Counter = collections.Counter()
    for q in JOB_QUEUES:
        for props in take(q):
            if (props.message_id or "").startswith(prefix):
                got[props.message_id, (props.headers or {}).get("x-dq-attempt")] += 1
    return got


# 1. Out of inodes ##############################################################

def _out_of_inodes(tmpfs, make_node, name: str):
    """A node whose tmpfs has blocks but no inode left, past a snapshot attempt."""
    mnt = tmpfs(name, size="32m", nr_inodes=64)
    node = make_node(data_dir=str(mnt / "data"), snapshot_entries=1000).wait_healthy()
    fillers = fill_inodes(mnt)
    assert fillers and os.statvfs(mnt).f_favail == 0
    c = node.client()
    for i in range(1100):                  # > snapshot_entries: a snapshot is attempted
        status, body = register(c, f"{name}-{i}")
        assert status == 202, (i, status, body, node.log_tail())
    wait_until(lambda: "snapshot failed" in log_text(node), 10, 0.05,
               "a 'snapshot failed' log line\n" + node.log_tail())
    # The commit loop lives on: writes still commit.
    for i in range(1100, 1150):
        status, body = register(c, f"{name}-{i}")
        assert status == 202, (i, status, body, node.log_tail())
    h = health(node)
    assert h["status"] == "degraded", h
    assert h["checks"]["snapshot"]["ok"] is False, h
    assert h["checks"]["snapshot"]["error"], h
    assert h["checks"]["log"]["ok"] is True, h
    return mnt, node, c, fillers


def test_out_of_inodes_snapshot_fails_node_serves_and_stops(tmpfs, make_node, clean_queues):
    mnt, node, c, _ = _out_of_inodes(tmpfs, make_node, "inodes-stop")
    c.close()
    assert node.stop() == 0, node.log_tail()       # 30 s then SIGKILL when it hangs
    text = log_text(node)
    assert "stopped node=" in text, node.log_tail()
    assert "Traceback" not in text, node.log_tail()


def test_out_of_inodes_snapshot_retried_once_inodes_are_free(tmpfs, make_node, clean_queues):
    mnt, node, c, fillers = _out_of_inodes(tmpfs, make_node, "inodes-retry")
    for path in fillers:
        path.unlink()
    n = [0]

    def snapshotted() -> bool:
        # A trickle of writes, as a serving node sees: the loop runs its snapshot
        # check after each commit.
        status, body = register(c, f"inodes-retry-late-{n[0]}")
        assert status == 202, (status, body)
        n[0] += 1
        h = health(node)
        return h["status"] == "healthy" and h["checks"]["snapshot"]["index"] >= 1000
    wait_until(snapshotted, SNAPSHOT_RETRY_S + 30, 0.5,
               "a snapshot once inodes are free\n" + node.log_tail())
    assert "snapshot written" in log_text(node)
    data = mnt / "data"
    assert list(data.glob("snapshot-*.json")), sorted(os.listdir(data))
    assert not list(data.glob("*.tmp")), sorted(os.listdir(data))
    c.close()
    assert node.stop() == 0, node.log_tail()
    node.start()
    c = node.client()
    total = c.call("GET", "/api/jobs?type=disk&limit=1")[1]["count"]
    assert total == 1150 + n[0]


# 2. Disk full while serving ####################################################

def _room(mnt: Path) -> int:
    """Bytes the node could still append: the tmpfs's free blocks plus the unused end
    of the open segment's last page (tmpfs allocates whole pages, and a write into
    that page needs no new one). Segment names carry their first index, zero-padded:
    the newest sorts last."""
    sv = os.statvfs(mnt)
    size = max((mnt / "data").glob("log-*.seg")).stat().st_size
    return sv.f_bfree * sv.f_bsize + (-size) % sv.f_bsize


def _probe_bytes() -> int:
    """The smallest append the node makes while its log cannot be written: the no-op
    probe (raft/node.py _turn, {"op": "noop"} stamped with at_ms) after its batch
    mark. Every mark and register is bigger."""
    return len(batch_mark(0)) + len(encode(1, 1, {"op": "noop",
                                                  "at_ms": int(time.time() * 1000)}))


def _until_truly_full(node, c, accepted: set, mnt: Path) -> None:
    """Drive the log to where not even a no-op fits. A full tmpfs still has room in
    the open segment's last page, so a probe or a mark may succeed a few more times;
    each tiny register uses some of it, and a no-op probe that still fits uses the
    rest. How long the log stays unwritable says nothing: every failed write (the
    dispatcher retrying a mark of a few hundred bytes) puts the next probe off by
    PROBE_S, so a no-op that still fits may first be tried seconds later. Done when
    the log is not writable and the room left, seen on two polls in a row (a failed
    write fills the page for a moment before it is cut back), is less than a no-op."""
    n = [0]
    full_polls = [0]
    need = _probe_bytes()

    def stuck() -> bool:
        if health(node)["checks"]["log"]["ok"]:
            full_polls[0] = 0
            id_ = f"full-t-{n[0]}"
            n[0] += 1
            status, _ = register(c, id_, {})
            if status == 202:
                accepted.add(id_)
            return False
        full_polls[0] = full_polls[0] + 1 if _room(mnt) < need else 0
        return full_polls[0] >= 2
    wait_until(stuck, 60, 0.25, f"a log where not even a no-op ({need} bytes) fits\n"
               + node.log_tail())


RETRY_BACKOFF_S = 12     # the retry jobs fall due while the log cannot be written


def test_disk_full_while_serving_nothing_is_republished(tmpfs, make_node, clean_queues):
    mnt = tmpfs("full", size="4m")
    node = make_node(data_dir=str(mnt / "data"),
                     job_retry_backoff_s=RETRY_BACKOFF_S).wait_healthy()
    c = node.client()
    accepted: set = set()
    for i in range(20):
        assert register(c, f"full-pre-{i}")[0] == 202
        accepted.add(f"full-pre-{i}")
    # Jobs that must be published again later: a failed attempt, retry after the
    # backoff. They fall due once the disk is full, so the node has a pending job to
    # publish whose mark_queued it cannot write (what the old code republished ~1,000
    # times a second).
    retry = [f"full-r-{i}" for i in range(5)]
    for id_ in retry:
        assert register(c, id_)[0] == 202
        accepted.add(id_)
    wait_until(lambda: all(c.call("GET", f"/api/jobs/{id_}")[1]["status"] == "queued"
                           for id_ in retry), 20, 0.05, "retry jobs queued")
    for id_ in retry:
        assert c.call("POST", "/api/jobs/status", {"jobId": id_, "status": "running",
                                                   "workerId": "w-disk"})[0] == 200
        assert c.call("POST", "/api/jobs/status", {
            "jobId": id_, "status": "failed", "workerId": "w-disk",
            "errorMessage": "try again"})[0] == 200
    due = time.monotonic() + RETRY_BACKOFF_S
    assert {c.call("GET", f"/api/jobs/{id_}")[1]["status"] for id_ in retry} == {"pending"}
    log_start = os.path.getsize(node.log_path)

    fill_space(mnt / "filler", leave=48 << 10)   # almost all: a few dozen more fit
    refused = []

    def client(k):
        cc = node.client()
        i = 0
        try:
            while len(refused) < 20:
                id_ = f"full-{k}-{i}"
                i += 1
                status, body = register(cc, id_, {"blob": "y" * 1000})
                if status == 202:
                    accepted.add(id_)
                else:
                    refused.append((status, body))
        finally:
            cc.close()
    gevent.joinall([gevent.spawn(client, k) for k in range(4)], timeout=60,
                   raise_error=True)
    assert len(refused) >= 20, node.log_tail()
    for status, body in refused:
        assert status == 503, (status, body)
        assert body["error"] == "unavailable", body
        assert "log write failed" in body["message"], body

    _until_truly_full(node, c, accepted, mnt)
    margin = due - time.monotonic()
    assert margin > 1, "the disk took too long to fill; raise RETRY_BACKOFF_S"
    h = health(node)
    assert h["status"] == "degraded", h
    assert h["checks"]["log"]["ok"] is False and h["checks"]["log"]["error"], h
    window_start = os.path.getsize(node.log_path)
    before = queue_counts()      # what was published while the log could still be written
    # Watch the job queues for a few seconds past the retries' due time: nothing may be
    # published while the log cannot be written.
    during: collections.Counter = collections.Counter()
    while time.monotonic() < due + 4:
        during.update(queue_counts())
        assert health(node)["checks"]["log"]["ok"] is False, node.log_tail()  # still stuck
        gevent.sleep(0.5)
    during.update(queue_counts())
    pending = {j["id"] for j in all_jobs(c, status="pending", type="disk")}
    print(f"disk full: accepted={len(accepted)} refused={len(refused)} "
          f"pending={len(pending)} published_before={sum(before.values())} "
          f"published_while_full={sum(during.values())} margin_s={margin:.1f}")
    assert set(retry) <= pending
    assert max(during.values(), default=0) <= 2, during.most_common(5)
    assert not set(retry) & {id_ for id_, attempt in during}, during.most_common(5)
    # One ERROR line per change of state, none while the state holds.
    assert not log_lines(node, "ERROR", window_start), log_text(node, window_start)
    errors = log_lines(node, "ERROR", log_start)
    warnings = log_lines(node, "WARNING", log_start)
    write_failed = [e for e in errors if "dqorch.raft.node log write failed" in e]
    mark_failed = [e for e in errors if "dqorch.dispatch cannot mark confirms" in e]
    assert len(write_failed) + len(mark_failed) == len(errors), errors
    assert 1 <= len(write_failed) <= 1 + sum("log writable again" in w for w in warnings), \
        errors
    assert len(mark_failed) <= 1 + sum("marks written again" in w for w in warnings), errors
    assert len(errors) <= 20, errors

    # Space again: the probe finds out by itself.
    os.unlink(mnt / "filler")
    node.wait_healthy(30)
    for i in range(20):
        status, body = register(c, f"full-post-{i}")
        assert status == 202, (status, body)
        accepted.add(f"full-post-{i}")

    def settled() -> bool:
        jobs = {j["id"]: j["status"] for j in all_jobs(c, type="disk")}
        return all(jobs.get(id_) == "queued" for id_ in accepted)
    wait_until(settled, 30, 0.2, "every accepted job queued\n" + node.log_tail())
    after = queue_counts()
    total = before + during + after
    got = {id_ for id_, _attempt in total}
    missing = accepted - got
    assert not missing, f"{len(missing)} accepted jobs never reached RabbitMQ: " \
                        f"{sorted(missing)[:5]}"
    for id_ in retry:
        assert 1 <= total[(id_, 1)] <= 2, (id_, total[(id_, 1)])   # the retry, published
    assert max(total.values()) <= 2, total.most_common(5)


# 3. Starting with the disk full ################################################

def test_start_on_a_full_disk_exits_3_with_one_line(tmpfs, make_node):
    mnt = tmpfs("startfull", size="1m")
    data = mnt / "data"
    data.mkdir()
    fill_space(mnt / "filler")
    node = make_node(data_dir=str(data), start=False)
    node.start(wait=False)
    rc = node.proc.wait(30)
    text = log_text(node)
    assert rc == EXIT_DATA, text
    critical = log_lines(node, "CRITICAL")
    assert len(critical) == 1, text
    assert str(data) in critical[0] and "No space left on device" in critical[0], text
    assert "Traceback" not in text, text
    assert not (data / "hardstate.json.tmp").exists(), sorted(os.listdir(data))


# 4. kill -9 during a snapshot ##################################################

SNAPSHOT_STARTED = re.compile(rb"snapshot started index=(\d+) pid=(\d+)")


def proc_state(pid: int):
    """(state letter, parent pid) from /proc, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[1])


def dead(pid: int) -> bool:
    st = proc_state(pid)
    return st is None or st[0] in ("Z", "X")


class LogWatcher:
    """Whole new lines of a node log since the last call."""

    def __init__(self, node) -> None:
        self.path = node.log_path
        self.pos = os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def new_lines(self) -> list[bytes]:
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.pos += end
        return data[:end].splitlines()


def _catch_snapshot_child(node, watcher: LogWatcher, deadline: float) -> int:
    """SIGSTOP the first snapshot child still running when its log line appears;
    children that already finished are let go and the next snapshot is tried."""
    missed = 0
    while True:
        assert time.monotonic() < deadline, \
            f"no snapshot child caught running ({missed} finished first)\n" + node.log_tail()
        for line in watcher.new_lines():
            m = SNAPSHOT_STARTED.search(line)
            if m is None:
                continue
            pid = int(m.group(2))
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                missed += 1
                continue
            st = proc_state(pid)
            t_end = time.monotonic() + 5
            while st is not None and st[0] not in ("T", "t", "Z", "X") \
                    and time.monotonic() < t_end:
                time.sleep(0.001)
                st = proc_state(pid)
            if st is not None and st[0] in ("T", "t") and st[1] == node.proc.pid:
                return pid
            missed += 1
        gevent.sleep(0.002)


def test_kill9_during_a_snapshot_leaves_data_dir_free_and_clean(make_node, clean_queues):
    node = make_node(snapshot_entries=1000).wait_healthy()
    data = Path(node.cfg["data_dir"])
    blob = "z" * 20000                 # ~20 MB per 1,000 jobs: the child takes a moment
    acked: set = set()
    stop = [False]

    def load():
        cc = node.client()
        i = 0
        try:
            while not stop[0]:
                id_ = f"snap-{i}"
                i += 1
                try:
                    status, _ = register(cc, id_, {"blob": blob}, type_="snap")
                except OSError:
                    return                       # the node was killed
                if status == 202:
                    acked.add(id_)
        finally:
            cc.close()

    watcher = LogWatcher(node)
    loader = gevent.spawn(load)
    child = None
    try:
        deadline = time.monotonic() + 60
        while True:
            child = _catch_snapshot_child(node, watcher, deadline)
            # The stopped child is mid-way: let it run in small steps until its .tmp
            # exists, so that the restart has something to clean up.
            tmp = list(data.glob("snapshot-*.json.tmp"))
            for _ in range(2000):
                if tmp or dead(child):
                    break
                os.kill(child, signal.SIGCONT)
                time.sleep(0.0005)
                os.kill(child, signal.SIGSTOP)
                wait_until(lambda: proc_state(child) is None
                           or proc_state(child)[0] in ("T", "t", "Z", "X"), 5, 0.001,
                           "child stopped again")
                tmp = list(data.glob("snapshot-*.json.tmp"))
            if tmp and not dead(child):
                break
            child = None                 # it finished while being stepped: the next one
        stop[0] = True
        loader.join(timeout=30)
        print(f"snapshot child {child} stopped; tmp files: {[p.name for p in tmp]}")

        node.kill9()
        # PR_SET_PDEATHSIG: the child dies with the node, stopped or not.
        wait_until(lambda: dead(child), 10, 0.01,
                   f"snapshot child {child} gone after kill -9 of the node "
                   f"(state {proc_state(child)})")
        restart = LogWatcher(node)
        node.start()                   # fails the test if it exits ("in use")
        text = b"\n".join(restart.new_lines()).decode("utf-8", "replace")
        assert "in use" not in text, text
        if tmp:
            assert "removing an unfinished write" in text, text

        def settled() -> bool:
            lines = b"\n".join(restart.new_lines())
            settled.log += lines.decode("utf-8", "replace") + "\n"
            started = settled.log.count("snapshot started")
            ended = settled.log.count("snapshot written") + settled.log.count("snapshot failed")
            return started == ended and not list(data.glob("snapshot-*.json.tmp"))
        settled.log = text
        wait_until(settled, 30, 0.05, "no snapshot running and no .tmp left\n"
                   + node.log_tail())
        assert "snapshot failed" not in settled.log, settled.log
        assert not list(data.glob("*.tmp")), sorted(os.listdir(data))
        c = node.client()
        ids = {j["id"] for j in all_jobs(c, type="snap")}
        assert acked <= ids, f"{len(acked - ids)} acknowledged jobs lost"
    finally:
        stop[0] = True
        loader.kill()
        if child is not None and not dead(child):
            os.kill(child, signal.SIGKILL)    # the process this test stopped


# a slow disk ##################################################################

def prom(node, series: str) -> float:
    """One sample of the node's /metrics, by its series as printed (name{labels})."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics",
                                timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    raise AssertionError(f"{series} not in /metrics")


def test_a_slow_disk_moves_fsyncs_to_a_thread_and_every_write_survives_kill9(
        make_node, clean_queues):
    """raft/node.py Rule 5 in a real process on a real log: with every fsync 150 ms
    slower (slowfsync.c, preloaded: this machine cannot slow a real device), the
    commit loop's fsyncs move to the lane's thread, writes from four clients go on
    committing while health answers, and every job acknowledged is there after kill -9."""
    if slow_fsync_lib() is None:
        pytest.skip("no cc to build tests/integration/slowfsync.c")
    node = make_node(start=False)
    ctl = node.dir / "slow-fsync"
    preload(node, slow_fsync=ctl)
    node.start().wait_healthy()
    c = node.client()
    acked: set = set()
    for i in range(5):
        assert register(c, f"slow-{i}")[0] == 202
        acked.add(f"slow-{i}")
    assert prom(node, "distriqueue_raft_fsync_in_thread") == 0
    assert prom(node, 'distriqueue_raft_events_total{event="slow_disk"}') == 0

    ctl.write_text("150\n")
    done, probes = [], []

    def writer(k: int) -> None:
        cc = node.client()
        for i in range(8):
            status, body = register(cc, f"slow-{k}-{i}")
            assert status == 202, (status, body)
            acked.add(f"slow-{k}-{i}")

    def prober() -> None:
        while not done:
            probes.append(node.health()[0])
            gevent.sleep(0.05)

    probe = gevent.spawn(prober)
    gevent.joinall([gevent.spawn(writer, k) for k in range(4)], raise_error=True)
    done.append(True)
    probe.join(10)
    assert probes and set(probes) == {200}, probes
    assert prom(node, "distriqueue_raft_fsync_in_thread") == 1
    assert prom(node, 'distriqueue_raft_events_total{event="slow_disk"}') >= 1
    assert "fsyncs go to a thread" in log_text(node), node.log_tail()

    node.kill9()
    ctl.unlink()
    node.start().wait_healthy()
    held = {j["id"] for j in all_jobs(node.client())}
    assert acked <= held, sorted(acked - held)
