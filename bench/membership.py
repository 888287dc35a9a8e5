"""Members changed online under continuous registers (issue 27's "done when"):
grow one node to three (each new member started with --join, added as a learner,
promoted once caught up), add a fourth and promote it, remove the leader, replace a
killed member by a new one at a new address, and shrink to one. For each change: how
long it took, the registers answered 503 meanwhile, and the longest time without a
202. At the end every job answered 202 is looked up on every live member (its own
listing, not the leader's).

Loopback, default Raft timings (heartbeat 100 ms, election timeout 1,000 ms), a private
RabbitMQ (started when not running, stopped at the end only then). Talks HTTP only.

Usage: python bench/membership.py [--rabbit-port 5679] [--write docs/BENCHMARKS.md]
"""
import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Target, free_ports  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COOKIE = "bench-membership-cookie-0123456789"
ELECTION_MS = 1000


def say(msg):
    print(f"[membership] {msg}", file=sys.stderr, flush=True)


def call(port, method, path, body=None, timeout=15.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.load(e)
        except ValueError:
            return e.code, None
    except OSError:
        return None, None


class Member:
    def __init__(self, tmp, name, rabbit_port, seeds=()):
        self.name = f"{name}@127.0.0.1"
        self.http, self.metrics, self.raft = free_ports(3)
        cfg = os.path.join(tmp, f"{name}.yaml")
        keys = dict(node_name=self.name, data_dir=os.path.join(tmp, f"{name}-data"),
                    http_port=self.http, metrics_port=self.metrics, raft_port=self.raft,
                    cookie=COOKIE, rabbitmq_port=rabbit_port, log_level="info",
                    raft_peers=json.dumps([f"{s.name}:{s.raft}" for s in seeds]))
        with open(cfg, "w") as f:
            f.write("".join(f"{k}: {v}\n" for k, v in keys.items()))
        argv = [sys.executable, os.path.join(ROOT, "dqorch.py"), "-c", cfg]
        self.target = Target(name, argv + (["--join"] if seeds else []), self.http,
                             os.path.join(tmp, f"{name}.log"), cwd=ROOT)

    def status(self):
        return call(self.http, "GET", "/api/cluster/status")[1] or {}

    def alive(self):
        return self.target.proc.poll() is None

    def job_ids(self):
        ids, cursor = set(), None
        while True:
            path = "/api/jobs?limit=10000" + (f"&cursor={cursor}" if cursor else "")
            code, body = call(self.http, "GET", path, timeout=60)
            if code != 200:
                raise RuntimeError(f"{self.name}: listing answered {code}")
            ids |= {j["id"] for j in body["jobs"]}
            cursor = body.get("next")
            if not cursor:
                return ids


class Loader(threading.Thread):
    """Registers one job after another, round robin over the live members; records
    (monotonic time, status) per answer and the ids answered 202."""

    def __init__(self):
        super().__init__(daemon=True)
        self.members, self.answers, self.accepted, self.stop = [], [], [], False

    def run(self):
        n = 0
        while not self.stop:
            live = [m for m in self.members if m.alive()]
            if not live:
                time.sleep(0.05)
                continue
            m = live[n % len(live)]
            job = f"mb-{n}"
            code, _ = call(m.http, "POST", "/api/jobs/register", {"id": job, "type": "b"}, 10)
            self.answers.append((time.monotonic(), code))
            if code == 202:
                self.accepted.append(job)
                n += 1
            else:
                time.sleep(0.02)        # the same id again, like a client


def until(what, fn, timeout_s=120, every_s=0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(every_s)
    raise RuntimeError(f"timed out: {what}")


def change(members, method, path, body=None):
    """A membership request through any live member, again while it answers 503."""
    def once():
        for m in members:
            if not m.alive():
                continue
            code, answer = call(m.http, method, path, body, 30)
            if code == 200:
                return answer
            if code not in (503, None):
                raise RuntimeError(f"{method} {path}: {code} {answer}")
        return None
    return until(f"{method} {path}", once, 120, 0.2)


def caught_up(members, name):
    for m in members:
        st = m.status()
        if st.get("leader") == st.get("node"):
            return any(x["node"] == name and x.get("caught_up") for x in st["members"])
    return False


def leader_of(members):
    for m in members:
        if m.alive():
            lead = m.status().get("leader")
            if lead:
                return next((x for x in members if x.name == lead), None)
    return None


def add(members, new, loader):
    change(members, "POST", "/api/cluster/members",
           {"node": f"{new.name}:{new.raft}", "api": f"127.0.0.1:{new.http}"})
    try:
        until(f"{new.name} caught up", lambda: caught_up(members, new.name))
    except RuntimeError:
        for m in members:
            say(f"{m.name} sees {json.dumps(m.status())}")
        say(f"{new.name} says {json.dumps(new.status())} "
            f"{json.dumps(call(new.http, 'GET', '/api/raft/status')[1])}")
        raise
    change(members, "POST", f"/api/cluster/members/{new.name}/promote")
    members.append(new)
    loader.members = list(members)


def measure(rows, loader, what, fn):
    t0 = time.monotonic()
    fn()
    t1 = time.monotonic()
    window = [(t, c) for t, c in loader.answers if t0 <= t <= t1]
    ok = [t for t, c in window if c == 202]
    edges = [t0] + ok + [t1]
    gap = max(b - a for a, b in zip(edges, edges[1:]))
    rows.append(dict(change=what, seconds=t1 - t0, refused=sum(1 for _, c in window if c != 202),
                     accepted=len(ok), longest_gap_ms=gap * 1000))
    say(f"{what}: {t1 - t0:.2f} s, {rows[-1]['refused']} refused, longest gap {gap * 1000:.0f} ms")


def run(a):
    started_broker = common.ensure_broker(a.rabbit_port, say)
    tmp = tempfile.mkdtemp(prefix="dq-bench-membership-")
    members, made, rows = [], [], []
    loader = Loader()
    ok = False
    try:
        first = Member(tmp, "n1", a.rabbit_port)
        made.append(first)
        if not first.target.wait_ready(60):
            raise RuntimeError("n1 did not start:\n" + first.target.log_tail())
        members.append(first)
        loader.members = [first]
        loader.start()
        time.sleep(2)
        for name in ("n2", "n3"):
            new = Member(tmp, name, a.rabbit_port, seeds=members)
            made.append(new)
            measure(rows, loader, f"grow to {len(members) + 1}: add {name} as a learner, "
                    f"promote once caught up", lambda: add(members, new, loader))
        new = Member(tmp, "n4", a.rabbit_port, seeds=members)
        made.append(new)
        measure(rows, loader, "add a fourth (n4) as a learner, promote",
                lambda: add(members, new, loader))
        lead = leader_of(members)
        measure(rows, loader, f"remove the leader ({lead.name.split('@')[0]}; it hands over)",
                lambda: change([m for m in members if m is not lead], "DELETE",
                               f"/api/cluster/members/{lead.name}"))
        members.remove(lead)
        loader.members = list(members)
        lead.target.stop()
        lead = leader_of(members)
        victim = next(m for m in members if m is not lead)
        victim.target.proc.kill()
        victim.target.proc.wait()
        loader.members = [m for m in members if m is not victim]
        members.remove(victim)
        new = Member(tmp, "n5", a.rabbit_port, seeds=members)
        made.append(new)

        def replace():
            change(members, "DELETE", f"/api/cluster/members/{victim.name}")
            add(members, new, loader)
        measure(rows, loader, f"replace {victim.name.split('@')[0]} (killed) by n5 at a new "
                f"address: remove, add, promote", replace)
        while len(members) > 1:
            lead = leader_of(members)
            other = next(m for m in members if m is not lead)
            measure(rows, loader, f"shrink to {len(members) - 1}: remove "
                    f"{other.name.split('@')[0]}",
                    lambda: change(members, "DELETE", f"/api/cluster/members/{other.name}"))
            members.remove(other)
            loader.members = list(members)
            other.target.stop()
        time.sleep(2)
        loader.stop = True
        loader.join(30)
        want = set(loader.accepted)
        missing = {m.name: len(want - m.job_ids()) for m in members}
        say(f"{len(want)} jobs answered 202; missing on the live member: {missing}")
        ok = not any(missing.values())
        report(a, rows, len(want), missing, len(loader.answers))
    finally:
        loader.stop = True
        for m in made:
            m.target.stop()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"kept {tmp} (logs)")
        if started_broker:
            common.stop_broker(a.rabbit_port, say)
    return 0 if ok else 1


def report(a, rows, accepted, missing, answers):
    lines = [
        f"Measured {datetime.date.today()} with `python bench/membership.py` "
        f"({common.machine_line(ROOT)}). One loader registering one job after another "
        f"through the live members; default Raft timings (election timeout "
        f"{ELECTION_MS:,} ms).", "",
        "| change | seconds | registers refused (503) meanwhile | longest time without a 202 (ms) |",
        "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['change']} | {r['seconds']:.2f} | {r['refused']} | "
                     f"{r['longest_gap_ms']:,.0f} |")
    lines += ["", f"{accepted:,} jobs answered 202 over {answers:,} answers; missing at the "
              f"end on the last member: {sum(missing.values())}."]
    text = "\n".join(lines)
    print(text)
    if a.write:
        common.replace_section(a.write, "membership", "## Members changed online\n\n" + text)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rabbit-port", type=int, default=5679)
    p.add_argument("--write", help="replace the membership section of this markdown file")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
