"""The fault campaign: a 3-member cluster under random faults (faults.py), a workload
recording every request and message (history.py), then the history checker. Run for
40 s by tests/integration/test_faults.py and for minutes by scripts/fault-run.py."""
from __future__ import annotations

import random
import time

import gevent

from . import history as H
from .broker_fixtures import SHARED_PORT
from .conftest import Client, all_jobs
from .faults import FaultCluster


def campaign(tmp_path_factory, fault_s: float, seed: int, settle_s: float = 60,
             loaders: int = 3, workers: int = 4, overlap: int = 1, log=print,
             disk_mb: int = 128, **node_overrides):
    """Run one fault campaign; returns (history, violations, cluster, figures).
    disk_mb: each node's data_dir a tmpfs of this size, for the disk_full fault (root
    only; elsewhere that fault is left out and figures["disk_full"] says so)."""
    rng = random.Random(seed)
    # A leader cut off from RabbitMQ hands over after this (leader_rabbit_cut).
    node_overrides.setdefault("leader_broker_handover_s", 2)
    c = FaultCluster(tmp_path_factory, 3, seed=seed, disk_mb=disk_mb, clock_faults=True,
                     slow_disks=True, **node_overrides)
    c.overlap = overlap
    hist = H.History()
    figures: dict = {"seed": seed, "vhost": c.vhost,
                     "disk_full": "on" if c.disks else "off (no tmpfs: needs root)",
                     "clock_skew": "on" if c.clocks else "off (no libfaketime)",
                     "slow_disk": "on" if c.slow else "off (no cc for slowfsync.c)"}
    try:
        c.start()
        for name in c.names:
            hist.restarts[name] = []
        ports = {name: node.http_port for name, node in c.nodes.items()}
        stop_load, stop_work = [], []
        ls = [H.Loader(hist, ports, f"L{k}", random.Random(rng.random()))
              for k in range(loaders)]
        ws = [H.Worker(hist, ports, SHARED_PORT, f"w{k}", random.Random(rng.random()),
                       vhost=c.vhost)
              for k in range(workers)]
        _put_schedule(c)
        gl = [gevent.spawn(x.run, lambda: bool(stop_load)) for x in ls]
        gw = [gevent.spawn(x.run, lambda: bool(stop_work)) for x in ws]
        t_end = time.monotonic() + fault_s
        gevent.sleep(2)

        def faulter(k: int) -> None:
            frng = random.Random(rng.random())
            gevent.sleep(k * 0.7)
            while time.monotonic() < t_end:
                kind = c.random_fault(frng.uniform(1.0, 3.0))
                log(f"{time.monotonic():.1f} fault[{k}] {kind}: accepted="
                    f"{len(hist.accepted())} requests={len(hist.http)} "
                    f"messages={len(hist.msgs)}")
                gevent.sleep(frng.uniform(0.5, 2.0))
        gevent.joinall([gevent.spawn(faulter, k) for k in range(overlap)], raise_error=True)
        stop_load.append(True)
        gevent.joinall(gl, timeout=90)
        c.heal()
        for t, kind, detail in c.events:
            if kind == "restart":
                hist.restarts[detail].append(t)
        lead = c.wait_leader(timeout_s=60)
        _call_leader(c, "POST", f"/api/schedules/{H.SCHEDULE_ID}/pause")
        accepted = hist.accepted()
        log(f"healed; leader {c.name_of(lead)}; accepted {len(accepted)}; settling")

        def open_jobs():
            try:
                jobs = {j["id"]: j["status"] for j in all_jobs(c.wait_leader().client())}
            except (OSError, AssertionError):
                return None
            runs = [i for i in jobs if i.startswith(H.SCHEDULE_ID + "@")]
            return [i for i in [*accepted, *runs] if jobs.get(i) not in H.TERMINAL]
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            left = open_jobs()
            if left == []:
                break
            gevent.sleep(0.5)
        stop_work.append(True)
        gevent.joinall(gw, timeout=60)
        crashed = [f"{ws[k].who}: {g.exception!r}" for k, g in enumerate(gw)
                   if g.exception is not None]
        crashed += [f"{ls[k].who}: {g.exception!r}" for k, g in enumerate(gl)
                    if g.exception is not None]
        figures["client_crashes"] = crashed
        for q in H.JOB_QUEUES:
            for props, _body in H.drain(SHARED_PORT, c.vhost, q):
                hist.leftover.setdefault(props.message_id, []).append(
                    (props.headers or {}).get("x-dq-term"))
        # Final state: every node, once they agree (or the deadline).
        deadline = time.monotonic() + 30
        while True:
            for name, node in c.nodes.items():
                try:
                    hist.final[name] = {j["id"]: j for j in all_jobs(node.client(), full=1)}
                except (OSError, AssertionError):
                    hist.final[name] = {}
            views = [{i: jobs.get(i, {}).get("status") for i in accepted}
                     for jobs in hist.final.values()]
            if all(v == views[0] for v in views) or time.monotonic() > deadline:
                break
            gevent.sleep(0.5)
        lead = c.wait_leader()
        leader_jobs = hist.final[c.name_of(lead)]
        hist.schedule = _call_leader(c, "GET", f"/api/schedules/{H.SCHEDULE_ID}")
        hist.schedule_runs = {i for i in leader_jobs if i.startswith(H.SCHEDULE_ID + "@")}
        accepted = accepted | hist.schedule_runs
        for i in accepted:
            j = leader_jobs.get(i)
            if j is not None and j["status"] not in H.TERMINAL:
                code, body = Client(lead.http_port).call("GET", f"/api/jobs/{i}")
                hist.why[i] = body.get("why") if code == 200 else None
        hist.faults = list(c.events)
        violations = H.check(hist)
        violations += [("log_cut_not_refused", None, f"{cut['name']} cut at index "
                        f"{cut['index']} below its recorded commit {cut['commit']}: "
                        f"{cut['outcome']}: {cut['line']}")
                       for cut in c.log_cuts if cut["outcome"] != "refused"]
        # A member replaced as docs/CLUSTER.md says must end a voter again, whatever
        # else failed meanwhile (each step is retried for two minutes).
        violations += c.id_mismatches(lead)
        # A leader alone cut off from RabbitMQ, nothing else going on, hands over.
        violations += [("broker_handover_missing", None, f"{h['name']} kept leading "
                        f"without RabbitMQ past leader_broker_handover_s")
                       for h in c.handovers if h["alone"] and not h["moved"]]
        logs = [node.log_tail(10 ** 9) for node in c.nodes.values()]
        engaged = sum(text.count(SLOW_DISK_LINE) for text in logs)
        violations += slow_disk_violations(c.events, engaged)
        violations += [("replace_incomplete", None, f"{r['name']}: {r['outcome']} after "
                        f"{r['steps']}") for r in c.replaced if r["outcome"] != "replaced"]
        statuses: dict = {}
        for i in accepted:
            s = leader_jobs.get(i, {}).get("status", "ABSENT")
            statuses[s] = statuses.get(s, 0) + 1
        codes: dict = {}
        for r in hist.http:
            codes[r["status"] or r["err"].split(":")[0]] = \
                codes.get(r["status"] or r["err"].split(":")[0], 0) + 1
        figures.update(jobs_accepted=len(accepted), final_statuses=statuses,
                       faults=c.fault_counts(), requests=len(hist.http),
                       answers=codes, messages=len(hist.msgs),
                       distinct_jobs_in_messages=len({m["message_id"] for m in hist.msgs}),
                       udp=dict(c.udp.counts), rabbit_proxy=dict(c.rabbit.counts),
                       leader_broker_cuts=list(c.handovers),
                       api_proxies={n: dict(p.counts) for n, p in c.api.items()},
                       slowest_requests_s=sorted(
                           (round(r["t1"] - r["t0"], 2) for r in hist.http), reverse=True)[:5],
                       not_found=[f"{r['t0']:.3f} {r['client']} -> {r['node']} {r['method']} "
                                  f"{r['path']} -> 404 {r['resp']}" for r in hist.http
                                  if r["status"] == 404][:10],
                       worker_give_ups=len(hist.notes),
                       schedule={k: (hist.schedule or {}).get(k) for k in (
                           "fired", "skipped_late", "skipped_overlap")},
                       delayed_jobs=sum(1 for j in leader_jobs.values()
                                        if j.get("run_at") is not None),
                       left_in_queues=sum(len(x) for x in hist.leftover.values()),
                       violations_by_check={k: sum(1 for v in violations if v[0] == k)
                                            for k in {v[0] for v in violations}},
                       log_cuts={o: sum(1 for x in c.log_cuts if x["outcome"] == o)
                                 for o in {x["outcome"] for x in c.log_cuts}},
                       replaced={o: sum(1 for x in c.replaced if x["outcome"] == o)
                                 for o in {x["outcome"] for x in c.replaced}},
                       fsyncs_to_thread=engaged,
                       tracebacks=_tracebacks(logs),
                       logs={n: str(node.log_path) for n, node in c.nodes.items()})
        return hist, violations, c, figures
    finally:
        c.stop()


SLOW_DISK_LINE = "fsyncs go to a thread"     # raft/node.py Rule 5, moving them


def slow_disk_violations(events, engaged: int) -> list:
    """The slow_disk fault must reach the code it is for: a run that slowed fsyncs
    (every fault holds for seconds, each fsync 15-150 ms slower, a member fsyncs every
    append) and never moved a node's fsyncs to a thread tested nothing of Rule 5."""
    slowed = [d for _t, kind, d in events if kind == "slow_disk"]
    if slowed and not engaged:
        return [("slow_disk_not_engaged", None, f"{len(slowed)} slow_disk faults "
                 f"({', '.join(slowed[:5])}) and no node logged {SLOW_DISK_LINE!r}")]
    return []


def _call_leader(c, method: str, path: str, body=None, deadline_s: float = 60):
    """An answer from the leader (retried through faults), or None."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            code, out = Client(c.wait_leader(timeout_s=30).http_port).call(method, path, body)
        except (OSError, AssertionError):
            code, out = None, None
        if code in (200, 201):
            return out
        gevent.sleep(0.5)
    return None


def _put_schedule(c) -> None:
    """The campaign's schedule: a job every SCHEDULE_EVERY_MS through every fault,
    kept whatever comes late (allow_all, an hour's catch-up): history.check's
    `schedule` then wants one run per tick and none skipped."""
    out = _call_leader(c, "PUT", f"/api/schedules/{H.SCHEDULE_ID}", {
        "every": H.SCHEDULE_EVERY_MS / 1000, "overlap": "allow_all",
        "catchup_window": 3600, "job": {"type": "fault", "maxRetries": 2}})
    assert out is not None, "the campaign's schedule was never accepted"


def _tracebacks(logs) -> dict:
    """The exception line of every traceback in the nodes' logs, counted."""
    out: dict = {}
    for text in logs:
        lines = text.splitlines()
        for k, line in enumerate(lines):
            if line.startswith("Traceback"):
                last = next((x for x in lines[k + 1:] if x and not x.startswith(" ")), "?")
                out[last[:120]] = out.get(last[:120], 0) + 1
    return out
