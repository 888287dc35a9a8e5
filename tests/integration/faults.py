"""Fault injection for clusters of real dqorch.py processes (the first slice of a
Jepsen-style suite). Everything here runs in the test process under gevent.

- `UdpProxy`: every member's `raft_peers` point at proxy ports, one UDP socket per
  directed link (src -> dst); the proxy forwards each datagram to dst's real raft port.
  The Raft transport authenticates the sender by name inside the datagram and sends to
  the addresses in `raft_peers` (never to the source address), so the proxy is
  transparent. At run time: `drop` (probability), `delay_s`/`jitter_s`, `dup`
  (probability of a second copy), `block(src, dst)` (one way), `partition(*groups)`,
  `isolate(name)`, `heal()`. Only Raft goes through it: a follower's forwarded HTTP
  requests to the leader do not.
- `TcpProxy`: a TCP relay to RabbitMQ that the nodes use as `rabbitmq_port`;
  `cut()` closes every relayed connection mid-stream, `refuse(s)` also refuses new ones
  for a while. One more in front of each node's API is what its peers forward writes
  to (`api_advertise`): clients reach the API directly, forwarded writes go through it.
- Disks: with `disk_mb`, each data_dir is a tmpfs of its own (needs root); the
  `disk_full` fault fills one to the last byte for a while, then frees it. With
  `slow_disks`, each node runs with slowfsync.c preloaded (built with cc): the
  `slow_disk` fault makes one node's fsyncs 15, 40 or 150 ms slower for a while (this
  machine cannot slow a real device: no device-mapper for dm-delay).
- `FaultCluster`: `cluster_fixtures.Cluster` built with proxy ports, plus the node-level
  faults (kill -9 then restart, SIGSTOP/SIGCONT, and `log_cut`: a follower killed, its
  log cut below the commit it recorded, which must make it refuse to start, then
  repaired as docs/CLUSTER.md says; `replace`: a follower killed, its data_dir
  emptied, and replaced online as docs/CLUSTER.md says, the other faults going on)
  and a log of every fault applied (`events`: (t,
  kind, detail)), which the history checker reads; `log_cuts` says how each start
  after a cut went.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import socket as _socket
import subprocess
import time
import uuid
from pathlib import Path

import gevent
from gevent import socket

from dqorch.raft.log import HEADER, records_end

from .broker_fixtures import SHARED_PORT
from .cluster_fixtures import COOKIE, Cluster
from .conftest import NodeProc, free_port

FILLER = "disk-filler"


def mount_tmpfs(path: str, size_mb: int) -> bool:
    """A tmpfs of size_mb at path (made if missing); False where mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs",
                        path], capture_output=True)
    return r.returncode == 0 and os.path.ismount(path)


def umount(path: str) -> None:
    if subprocess.run(["umount", path], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)


def fill_space(path: Path, leave: int = 0) -> int:
    """Write path until the file system is full, then give back `leave` bytes.
    Returns the filler's size."""
    chunk = b"\0" * (1 << 16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = 0
        for piece in (chunk, chunk[:4096], chunk[:512], chunk[:1]):
            while True:
                try:
                    n = os.write(fd, piece)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                size += n
                if n < len(piece):
                    break
        if leave:
            size = max(0, size - leave)
            os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def _udp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


class UdpProxy:
    """One socket per directed link; `links[(src, dst)] = proxy port` (what src puts in
    its raft_peers for dst)."""

    def __init__(self, names, real_ports: dict, seed=None) -> None:
        self.names = list(names)
        self.real = dict(real_ports)          # name -> real raft port
        self.rng = random.Random(seed)
        self.drop = 0.0
        self.dup = 0.0
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self.blocked: set = set()             # {(src, dst)}
        self.counts = {"forwarded": 0, "dropped": 0, "blocked": 0, "duplicated": 0,
                       "delayed": 0}
        self.socks = {}
        self.links = {}
        for src in self.names:
            for dst in self.names:
                if src != dst:
                    s = _udp_socket()
                    self.socks[(src, dst)] = s
                    self.links[(src, dst)] = s.getsockname()[1]
        self.out = _udp_socket()
        self.loops = [gevent.spawn(self._run, link, s) for link, s in self.socks.items()]

    def _send(self, data: bytes, port: int) -> None:
        try:
            self.out.sendto(data, ("127.0.0.1", port))
        except OSError:
            pass

    def _run(self, link, sock) -> None:
        port = self.real[link[1]]
        while True:
            try:
                data, _ = sock.recvfrom(65536)
            except OSError:
                return
            if link in self.blocked:
                self.counts["blocked"] += 1
                continue
            if self.drop and self.rng.random() < self.drop:
                self.counts["dropped"] += 1
                continue
            copies = 2 if self.dup and self.rng.random() < self.dup else 1
            if copies == 2:
                self.counts["duplicated"] += 1
            for _ in range(copies):
                delay = self.delay_s + (self.rng.random() * self.jitter_s if self.jitter_s else 0)
                if delay > 0:
                    self.counts["delayed"] += 1
                    gevent.spawn_later(delay, self._send, data, port)
                else:
                    self._send(data, port)
            self.counts["forwarded"] += 1

    def block(self, src: str, dst: str) -> None:
        self.blocked.add((src, dst))

    def partition(self, *groups) -> None:
        """Nothing passes between members of different groups (members not named form
        a group of their own each)."""
        where = {}
        for k, g in enumerate(groups):
            for n in g:
                where[n] = k
        for a in self.names:
            for b in self.names:
                if a != b and where.get(a, ("alone", a)) != where.get(b, ("alone", b)):
                    self.blocked.add((a, b))

    def isolate(self, name: str) -> None:
        self.partition([name], [n for n in self.names if n != name])

    def heal(self) -> None:
        self.blocked.clear()
        self.drop = self.dup = self.delay_s = self.jitter_s = 0.0

    def close(self) -> None:
        for g in self.loops:
            g.kill()
        for s in self.socks.values():
            s.close()
        self.out.close()


class TcpProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<upstream>, relaying bytes both ways."""

    def __init__(self, upstream: int = SHARED_PORT) -> None:
        self.upstream = upstream
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.conns: list = []                 # [(client sock, upstream sock)]
        self.refuse_until = 0.0
        self.counts = {"accepted": 0, "refused": 0, "cut": 0}
        self.loop = gevent.spawn(self._accept)

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                self.counts["refused"] += 1
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            self.counts["accepted"] += 1
            pair = (c, u)
            self.conns.append(pair)
            gevent.spawn(self._pump, c, u, pair)
            gevent.spawn(self._pump, u, c, pair)

    def _pump(self, a, b, pair) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            self._close(pair)

    def _close(self, pair) -> None:
        for s in pair:
            try:
                s.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if pair in self.conns:
            self.conns.remove(pair)

    def cut(self) -> int:
        """Close every relayed connection mid-stream; how many were cut."""
        pairs = list(self.conns)
        for pair in pairs:
            self._close(pair)
        self.counts["cut"] += len(pairs)
        return len(pairs)

    def refuse(self, seconds: float) -> None:
        self.refuse_until = time.monotonic() + seconds
        self.cut()

    def close(self) -> None:
        self.loop.kill()
        self.listener.close()
        self.cut()


class TcpProxies:
    """One TcpProxy per member in front of the same upstream (`each[name]`), cut or
    refused all at once like a single one, or one member's alone."""

    def __init__(self, names, upstream: int = SHARED_PORT) -> None:
        self.each = {name: TcpProxy(upstream) for name in names}

    def cut(self) -> int:
        return sum(p.cut() for p in self.each.values())

    def refuse(self, seconds: float) -> None:
        for p in self.each.values():
            p.refuse(seconds)

    def heal(self) -> None:
        for p in self.each.values():
            p.refuse_until = 0.0

    @property
    def counts(self) -> dict:
        out: dict = {}
        for p in self.each.values():
            for k, v in p.counts.items():
                out[k] = out.get(k, 0) + v
        return out

    def close(self) -> None:
        for p in self.each.values():
            p.close()


def _rabbitmqctl(port: int, *args: str) -> subprocess.CompletedProcess:
    """rabbitmqctl against the broker scripts/rabbitmq-local.sh runs on `port`."""
    env = dict(os.environ, HOME=f"/tmp/dqorch-rabbit-{port}",
               RABBITMQ_NODENAME=f"rabbit{port}@localhost", ERL_EPMD_ADDRESS="127.0.0.1")
    return subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-q", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _faketime_lib() -> str | None:
    import glob
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return found[0] if found else None


FAKETIME_LIB = _faketime_lib()
_SLOW_FSYNC: list = []                   # [path or None], built once per process


def slow_fsync_lib() -> str | None:
    """slowfsync.c built with the machine's cc (once per process): an LD_PRELOAD that
    makes fsync and fdatasync sleep while a control file says so. None without cc."""
    if not _SLOW_FSYNC:
        import tempfile
        src = Path(__file__).with_name("slowfsync.c")
        out = os.path.join(tempfile.mkdtemp(prefix="dq-slowfsync-"), "slowfsync.so")
        try:
            r = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", out, str(src),
                                "-ldl"], capture_output=True, text=True, timeout=120)
            ok = r.returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        _SLOW_FSYNC.append(out if ok else None)
    return _SLOW_FSYNC[0]


def preload(node: NodeProc, slow_fsync: Path | None = None, clock: Path | None = None):
    """Run node under the fault libraries: slow_fsync (its control file: slowfsync.c)
    and clock (libfaketime's offset file). Each only where its library exists."""
    env, libs = [], []
    if slow_fsync is not None and slow_fsync_lib():
        env.append(f"SLOWFSYNC_FILE={slow_fsync}")
        libs.append(slow_fsync_lib())
    if clock is not None and FAKETIME_LIB:
        env += ["FAKETIME_DONT_FAKE_MONOTONIC=1", f"FAKETIME_TIMESTAMP_FILE={clock}",
                "FAKETIME_CACHE_DURATION=1"]
        libs.append(FAKETIME_LIB)
    node.prefix = ["env", *env, f"LD_PRELOAD={' '.join(libs)}"] if libs else []


class NoPrivateVhost(RuntimeError):
    """The broker would not give a run a vhost of its own (private_vhost)."""


def private_vhost(port: int = SHARED_PORT) -> str:
    """A vhost of our own on the shared broker (other test runs purge and consume the
    job queues of "/"), guest allowed everything. NoPrivateVhost when it cannot be made:
    falling back to "/" let a run's workers take another run's jobs (issue 28 §4)."""
    name = f"dq-faults-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    why = ""
    try:
        for args in (("add_vhost", name),
                     ("set_permissions", "-p", name, "guest", ".*", ".*", ".*")):
            out = _rabbitmqctl(port, *args)
            if out.returncode != 0:
                why = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
                why = why[0]
                break
        else:
            return name
    except (OSError, subprocess.SubprocessError) as e:
        why = repr(e)
    raise NoPrivateVhost(f"cannot make a vhost of its own on the RabbitMQ at 127.0.0.1:"
                         f"{port} (rabbitmqctl: {why[:200]}); a run on vhost / would "
                         f"share job queues with other runs. Use the broker "
                         f"scripts/rabbitmq-local.sh starts (/tmp/dqorch-rabbit-{port})")


def drop_vhost(name: str, port: int = SHARED_PORT) -> None:
    if name != "/":
        try:
            _rabbitmqctl(port, "delete_vhost", name)
        except (OSError, subprocess.SubprocessError):
            pass


class FaultCluster(Cluster):
    """A Cluster whose Raft traffic goes through a UdpProxy and whose RabbitMQ traffic
    goes through a TcpProxy. `events` logs every fault: (monotonic t, kind, detail)."""

    def __init__(self, tmp_path_factory, n: int = 3, seed=None, disk_mb: int = 0,
                 clock_faults: bool = False, slow_disks: bool = False,
                 **overrides) -> None:
        """clock_faults: every node runs under libfaketime with an offset file of its
        own (`clocks`), for the clock_skew fault (when libfaketime is installed).
        slow_disks: every node runs with slowfsync.c preloaded and a control file of
        its own (`slow`), for the slow_disk fault (when cc can build it)."""
        self.names = [f"n{i}@127.0.0.1" for i in range(1, n + 1)]
        self.vhost = private_vhost()
        overrides.setdefault("rabbitmq_vhost", self.vhost)
        real = {name: free_port() for name in self.names}
        self.udp = UdpProxy(self.names, real, seed=seed)
        self.rabbit = TcpProxies(self.names)   # one per member: a leader alone cut off
        self.rng = random.Random(seed)
        self.events: list = []
        self.nodes: dict[str, NodeProc] = {}
        self.api: dict[str, TcpProxy] = {}   # name -> the proxy its peers forward to
        self.disks: dict[str, str] = {}       # name -> its data_dir's tmpfs
        self.clocks: dict[str, Path] = {}     # name -> its libfaketime offset file
        self.slow: dict[str, Path] = {}       # name -> its slowfsync control file
        for name in self.names:
            peers = [f"{p}:{self.udp.links[(name, p)]}" for p in self.names if p != name]
            cfg = dict(node_name=name, raft_port=real[name], raft_peers=peers,
                       cookie=COOKIE, **overrides)
            node = NodeProc(tmp_path_factory.mktemp(name.split("@")[0]),
                            self.rabbit.each[name].port, **cfg)
            self.api[name] = TcpProxy(node.http_port)
            node.configure(api_advertise=f"127.0.0.1:{self.api[name].port}")
            if disk_mb and mount_tmpfs(node.cfg["data_dir"], disk_mb):
                self.disks[name] = node.cfg["data_dir"]
            clock = node.dir / "clock-offset" if clock_faults and FAKETIME_LIB else None
            if clock is not None:
                clock.write_text("+0\n")
                self.clocks[name] = clock
            slow = node.dir / "slow-fsync" if slow_disks and slow_fsync_lib() else None
            if slow is not None:
                self.slow[name] = slow
            preload(node, slow, clock)
            self.nodes[name] = node
        self.stopped: set = set()             # names SIGSTOPped now
        self.down: set = set()                # names killed and not yet restarted
        self.full: set = set()                # names whose disk is full now
        self.log_cuts: list = []              # {name, index, commit, outcome, line}
        self.replacing: set = set()           # names being replaced now
        self.replaced: list = []              # {name, outcome, steps}
        self.handovers: list = []             # {name, moved, alone}: leader_rabbit_cut
        self.overlap = 1                      # faults at once (the campaign sets it)

    def note(self, kind: str, detail: str = "") -> None:
        self.events.append((time.monotonic(), kind, detail))

    def stop(self) -> None:
        super().stop()
        self.udp.close()
        self.rabbit.close()
        for proxy in self.api.values():
            proxy.close()
        for path in self.disks.values():
            umount(path)
        drop_vhost(self.vhost)

    def name_of(self, node: NodeProc) -> str:
        return node.cfg["node_name"]

    def current_leader(self):
        """The leader some answering node names (no agreement needed), or None."""
        for node in self.up():
            if self.name_of(node) in self.stopped:
                continue
            st = self.status(node)
            if st and st.get("leader") in self.nodes:
                return self.nodes[st["leader"]]
        return None

    # ---- node faults
    # Faults may overlap (several greenlets calling random_fault): a node is killed only
    # when up, restarted only when down, stopped only when running.
    def kill9(self, name: str) -> bool:
        if name in self.down:
            return False
        self.note("kill9", name)
        self.down.add(name)
        self.stopped.discard(name)
        self.nodes[name].kill9()
        return True

    def restart(self, name: str) -> None:
        if name not in self.down:
            return
        self.note("restart", name)
        self.down.discard(name)
        self.nodes[name].start(wait=False)

    def sigstop(self, name: str) -> bool:
        if name in self.down or name in self.stopped:
            return False
        self.note("sigstop", name)
        self.nodes[name].proc.send_signal(signal.SIGSTOP)
        self.stopped.add(name)
        return True

    def sigcont(self, name: str) -> None:
        if name not in self.stopped:
            return
        self.nodes[name].proc.send_signal(signal.SIGCONT)
        self.stopped.discard(name)
        self.note("sigcont", name)

    def cut_log(self, name: str) -> bool:
        """log_cut: kill -9 a member, cut its newest segment at a record at or below the
        commit its hard state records (raft/node.py Rule 6 keeps it fresh), and start
        it: it must exit 3 with one `the log ends at index` line (raft/log.py Rule 4),
        never rejoin with entries it acknowledged gone. Then the repair docs/CLUSTER.md
        gives (log and snapshots moved aside, commit 0); `restart` starts it again."""
        if name in self.down or name in self.stopped or name in self.full:
            return False
        node = self.nodes[name]
        self.kill9(name)
        data = Path(node.cfg["data_dir"])
        try:
            commit = json.loads((data / "hardstate.json").read_text())["commit"]
            seg = max(data.glob("log-*.seg"))
        except (OSError, ValueError, KeyError):
            commit, seg = 0, None
        raw = seg.read_bytes() if seg is not None else b""
        at, pos, end = None, 0, records_end(raw)
        keep_to = commit - self.rng.randint(0, 40)
        while pos + HEADER.size <= end:
            length, _, index, _ = HEADER.unpack_from(raw, pos)
            if 0 < index <= commit and (at is None or index <= keep_to):
                at = (pos, index)
            pos += HEADER.size + length
        if at is None:
            self.note("log_cut", f"{name} skipped (commit {commit})")
            return True
        with open(seg, "r+b") as f:
            f.truncate(at[0])
        self.note("log_cut", f"{name} at {at[1]} (commit {commit})")
        cut = {"name": name, "index": at[1], "commit": commit, "outcome": "?", "line": ""}
        self.log_cuts.append(cut)
        start = node.log_path.stat().st_size
        node.start(wait=False)
        deadline = time.monotonic() + 60
        while node.proc.poll() is None and time.monotonic() < deadline:
            try:
                code, body = node.health()
            except OSError:
                code, body = None, None
            # "503 starting" is the API listening while the log is read (a big
            # snapshot takes seconds): not served yet, and the refusal may follow.
            role = ((body or {}).get("checks") or {}).get("role") or {}
            if code is not None and role.get("role") != "starting":
                break                          # it serves: it rejoined with a hole
            gevent.sleep(0.1)
        with open(node.log_path, "rb") as f:
            f.seek(start)
            out = f.read().decode(errors="replace")
        lines = [x for x in out.splitlines() if "CRITICAL" in x]
        cut["line"] = lines[-1] if lines else out[-300:]
        if node.proc.poll() == 3 and len(lines) == 1 and \
                f"the log ends at index {at[1] - 1} " in lines[0]:
            cut["outcome"] = "refused"
        else:
            cut["outcome"] = f"exit {node.proc.poll()}" if node.proc.poll() is not None \
                else "started"
            node.kill9()
        aside = Path(node.dir) / f"cut-{len(self.log_cuts)}"
        aside.mkdir()
        for f in [*data.glob("log-*.seg"), *data.glob("snapshot-*.json")]:
            shutil.move(str(f), str(aside / f.name))
        hs = json.loads((data / "hardstate.json").read_text())
        (data / "hardstate.json").write_text(json.dumps(dict(hs, commit=0)))
        return True

    def _member_call(self, method: str, path: str, body=None, done=(200,),
                     again=lambda code, msg: code == 503, timeout_s: float = 120) -> bool:
        """A membership request through any answering member but the one replaced,
        tried again while `again` (an election, another change under way, a learner
        still behind). True once answered with a code in `done`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.up():
                name = self.name_of(node)
                if name in self.stopped or name in self.replacing:
                    continue
                try:
                    code, answer = node.client().call(method, path, body)
                except OSError:
                    continue
                msg = (answer or {}).get("message", "") if isinstance(answer, dict) else ""
                if code in done:
                    return True
                if not again(code, msg):
                    self.note("replace", f"{method} {path}: {code} {msg[:120]}")
                    return False
                break
            gevent.sleep(0.5)
        return False

    def replace_member(self, name: str) -> bool:
        """replace: docs/CLUSTER.md's "Replacing a dead member", step by step, while the
        other faults go on (a second failure during catch-up included): kill -9 a
        follower, empty its data_dir (a new member id), remove it, start it with
        --join, add it as a learner, wait until it has caught up, promote it. Requests
        answered 503 (an election, another change) are sent again; answers that say
        it is done already (404 removed, 409 a member already) count as done, since a
        503 "outcome unknown" may have committed."""
        if name in self.down or name in self.stopped or name in self.full \
                or self.replacing:
            return False
        node = self.nodes[name]
        self.replacing.add(name)
        rec = {"name": name, "outcome": "?", "steps": []}
        self.replaced.append(rec)
        try:
            node.args = ["--join"]            # every later start too: it waits to be added
            self.kill9(name)
            data = Path(node.cfg["data_dir"])
            for f in data.iterdir():          # the directory itself may be a tmpfs mount
                shutil.rmtree(f) if f.is_dir() else f.unlink()
            self.note("replace", f"{name} emptied")
            steps = [
                ("removed", "DELETE", f"/api/cluster/members/{name}", None, (200, 404),
                 lambda code, msg: code == 503),
                ("started", None, None, None, None, None),
                ("added", "POST", "/api/cluster/members",
                 {"node": f"{name}:{node.cfg['raft_port']}",
                  "api": f"127.0.0.1:{self.api[name].port}"},
                 (200,), lambda code, msg: code == 503),
                ("promoted", "POST", f"/api/cluster/members/{name}/promote", None, (200,),
                 lambda code, msg: code == 503 or (code == 409 and (
                     "behind" in msg or "heard from" in msg))),
            ]
            for step, method, path, body, done, again in steps:
                if step == "started":
                    if name in self.down:
                        self.down.discard(name)
                        self.note("restart", name)
                        node.start(wait=False)
                    rec["steps"].append(step)
                    continue
                if step == "added":
                    # A 409 "already a member" after a lost answer: it was added.
                    ok = self._member_call(method, path, body, (200, 409), again)
                elif step == "promoted":
                    ok = self._member_call(method, path, body, done, lambda code, msg: (
                        again(code, msg) or (code == 409 and "voter already" not in msg)))
                else:
                    ok = self._member_call(method, path, body, done, again)
                if not ok:
                    rec["outcome"] = f"stopped at {step}"
                    return True
                rec["steps"].append(step)
                self.note("replace", f"{name} {step}")
            rec["outcome"] = "replaced"
            return True
        finally:
            self.replacing.discard(name)

    def id_mismatches(self, lead: NodeProc) -> list:
        """Violations of "the configuration names the data_dirs that run": each member
        the leader's configuration records an id for holds that id in its data_dir
        (identity.json). A replacement whose id was recorded wrong is a voter that can
        never vote (membership.py Rule 3 found it)."""
        code, st = lead.client().call("GET", "/api/cluster/status")
        if code != 200:
            return [("member_id_mismatch", None, f"no cluster status: {code}")]
        out = []
        for m in st["members"]:
            node = self.nodes.get(m["node"])
            if node is None or node is lead or not m.get("id"):
                continue
            path = Path(node.cfg["data_dir"]) / "identity.json"
            try:
                real = json.loads(path.read_text())["member_id"]
            except (OSError, ValueError, KeyError) as e:
                real = f"unreadable ({e!r})"
            if real != m["id"]:
                out.append(("member_id_mismatch", None, f"{m['node']} ({m['member']}): "
                            f"configured id {m['id']}, its data_dir's {real}"))
        return out

    def skew_clock(self, name: str, offset: str, hold_s: float) -> None:
        """clock_skew: one member's wall clock `offset` off for hold_s (libfaketime
        reads the file again within a second), its monotonic clock true. A leader
        hands over (peer_news.py Rule 3); stamps and timers use the cluster's time
        meanwhile, so nothing is timed out early or evicted young (accepted_lost)."""
        self.clocks[name].write_text(offset + "\n")
        self.note("clock_skew", f"{name} {offset}")
        gevent.sleep(hold_s)
        self.clocks[name].write_text("+0\n")
        self.note("clock_back", name)

    def cut_leader_broker(self, name: str) -> None:
        """leader_rabbit_cut: the leader's connections to RabbitMQ cut and refused (the
        others' work) for the nodes' leader_broker_handover_s and 4 s more: enough to
        hand over (peer_news.py Rule 2). `handovers` records whether leadership left
        it meanwhile; it must when no other fault overlaps (the checker's
        broker_handover_missing)."""
        bound = float(self.nodes[name].cfg.get("leader_broker_handover_s", 10))
        hold = bound + 4.0
        proxy = self.rabbit.each[name]
        proxy.refuse(hold)
        self.note("leader_rabbit_cut", f"{name} {hold:.0f}s")
        t0, moved = time.monotonic(), False
        while time.monotonic() < t0 + hold:
            gevent.sleep(0.25)
            lead = self.current_leader()
            if lead is not None and self.name_of(lead) != name:
                moved = True
        proxy.refuse_until = 0.0
        self.handovers.append({"name": name, "moved": moved, "alone": self.overlap == 1})
        self.note("leader_rabbit_heal", name)

    def fill_disk(self, name: str) -> bool:
        if name not in self.disks or name in self.full:
            return False
        size = fill_space(Path(self.disks[name]) / FILLER)
        self.full.add(name)
        self.note("disk_full", f"{name} +{size >> 10} KiB")
        return True

    def free_disk(self, name: str) -> None:
        if name not in self.full:
            return
        os.unlink(Path(self.disks[name]) / FILLER)
        self.full.discard(name)
        self.note("disk_free", name)

    def slow_disk(self, name: str, ms: int, hold_s: float) -> None:
        """name's fsyncs take ms longer for hold_s (raft/node.py Rule 5 should move
        them to a thread, and the node keep committing and serving)."""
        self.slow[name].write_text(f"{ms}\n")
        self.note("slow_disk", f"{name} {ms} ms")
        gevent.sleep(hold_s)
        self.slow[name].unlink(missing_ok=True)
        self.note("slow_disk_heal", name)

    def heal(self) -> None:
        """Every fault undone: network healed, stopped nodes continued, dead restarted,
        disks freed."""
        self.udp.heal()
        self.rabbit.heal()
        for proxy in self.api.values():
            proxy.refuse_until = 0.0
        for name in list(self.full):
            self.free_disk(name)
        for clock in self.clocks.values():
            clock.write_text("+0\n")
        for slow in self.slow.values():
            slow.unlink(missing_ok=True)
        for name in list(self.stopped):
            self.sigcont(name)
        for name in list(self.down):
            self.restart(name)
        self.note("heal")

    # ---- one random fault, held for `hold_s`, then undone
    KINDS = ("kill9", "sigstop_leader", "drop", "delay", "duplicate", "partition",
             "one_way", "rabbit_cut", "http_cut", "disk_full", "log_cut", "replace",
             "leader_rabbit_cut", "clock_skew", "slow_disk")

    def random_fault(self, hold_s: float, kinds=KINDS) -> str:
        if not self.disks:
            kinds = tuple(k for k in kinds if k != "disk_full")
        if not self.clocks:
            kinds = tuple(k for k in kinds if k != "clock_skew")
        if not self.slow:
            kinds = tuple(k for k in kinds if k != "slow_disk")
        kind = self.rng.choice(kinds)
        names = self.names
        if kind == "kill9":
            victim = self.rng.choice(names)
            if self.kill9(victim):
                gevent.sleep(hold_s)
                self.restart(victim)
        elif kind == "replace":
            lead = self.current_leader()
            victims = [n for n in names if lead is not None and n != self.name_of(lead)]
            if victims:
                self.replace_member(self.rng.choice(victims))
        elif kind == "log_cut":
            # A follower: the leader's log keeps what the cut takes, so the cluster
            # loses nothing while the member is repaired.
            lead = self.current_leader()
            victims = [n for n in names if lead is None or n != self.name_of(lead)]
            victim = self.rng.choice(victims)
            if self.cut_log(victim):
                gevent.sleep(hold_s)
                self.restart(victim)
        elif kind == "sigstop_leader":
            lead = self.current_leader()
            victim = self.name_of(lead) if lead else self.rng.choice(names)
            if self.sigstop(victim):
                gevent.sleep(hold_s)
                self.sigcont(victim)
        elif kind in ("drop", "delay", "duplicate"):
            if kind == "drop":
                self.udp.drop = self.rng.choice((0.02, 0.1, 0.3, 0.6))
                detail = f"p={self.udp.drop}"
            elif kind == "delay":
                self.udp.delay_s, self.udp.jitter_s = self.rng.choice(
                    ((0.05, 0.1), (0.2, 0.3), (0.5, 0.8)))
                detail = f"{self.udp.delay_s}+{self.udp.jitter_s}s"
            else:
                self.udp.dup = self.rng.choice((0.2, 0.5))
                detail = f"p={self.udp.dup}"
            self.note(kind, detail)
            gevent.sleep(hold_s)
            self.udp.heal()
            self.note("net_heal")
        elif kind == "partition":
            lead = self.current_leader()
            victim = self.name_of(lead) if lead and self.rng.random() < 0.6 else \
                self.rng.choice(names)
            self.udp.isolate(victim)
            self.api[victim].refuse(hold_s)   # and its peers cannot forward to it
            self.note("partition", f"isolate {victim}")
            gevent.sleep(hold_s)
            self.udp.heal()
            self.note("net_heal")
        elif kind == "one_way":
            a, b = self.rng.sample(names, 2)
            self.udp.block(a, b)
            self.note("one_way", f"{a} -/-> {b}")
            gevent.sleep(hold_s)
            self.udp.heal()
            self.note("net_heal")
        elif kind == "http_cut":
            # Forwarded writes cut mid-stream (and, half the time, refused for a while).
            n = sum(proxy.cut() for proxy in self.api.values())
            self.note("http_cut", f"{n} connections")
            if self.rng.random() < 0.5:
                victim = self.rng.choice(names)
                self.api[victim].refuse(hold_s)
                self.note("http_refuse", f"to {victim} {hold_s:.1f}s")
                gevent.sleep(hold_s)
        elif kind == "disk_full":
            lead = self.current_leader()
            victim = self.name_of(lead) if lead and self.rng.random() < 0.5 else \
                self.rng.choice(names)
            if self.fill_disk(victim):
                gevent.sleep(hold_s * 2)
                self.free_disk(victim)
        elif kind == "clock_skew":
            lead = self.current_leader()
            victim = self.name_of(lead) if lead and self.rng.random() < 0.6 else \
                self.rng.choice(names)
            self.skew_clock(victim, self.rng.choice(("+2h", "-2h")), 3 * hold_s)
        elif kind == "slow_disk":
            # The leader's most of the time: its fsyncs are every commit's. 15 ms is
            # Rule 5's slow (three within 10 s), 150 ms a stall (one is enough).
            lead = self.current_leader()
            victim = self.name_of(lead) if lead and self.rng.random() < 0.7 else \
                self.rng.choice(names)
            self.slow_disk(victim, self.rng.choice((15, 40, 150)), 3 * hold_s)
        elif kind == "leader_rabbit_cut":
            lead = self.current_leader()
            if lead is not None:
                self.cut_leader_broker(self.name_of(lead))
        elif kind == "rabbit_cut":
            n = self.rabbit.cut()
            self.note("rabbit_cut", f"{n} connections")
            if self.rng.random() < 0.5:
                self.rabbit.refuse(hold_s)
                self.note("rabbit_refuse", f"{hold_s:.1f}s")
                gevent.sleep(hold_s)
        return kind

    def fault_counts(self) -> dict:
        out: dict = {}
        for _t, kind, _d in self.events:
            out[kind] = out.get(kind, 0) + 1
        return out
