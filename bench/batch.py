"""Batch submit against single registers, on one node in one run.

wrk, --conns keep-alive connections for --duration seconds each: single registers,
then batches of --batch jobs (POST /api/jobs/batch), then singles again (to see
drift), --rounds times; each batch phase is compared with the singles around it.
After each phase the harness waits, with no load, until the node has published every
job and RabbitMQ confirmed it. Reports jobs/s accepted, jobs/s until all are published,
and the node's CPU µs per job over both (publishing included). At the end it checks
that nothing was lost: the node holds every job answered 2xx, each is `queued`, and the
broker's queues hold one message for each.

  python bench/batch.py --write docs/BENCHMARKS.md
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (cpu_seconds, job_queues, machine_line, replace_section,  # noqa: E402
                    run_wrk, start_node)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pending(node):
    return node.get_json("/api/metrics")["jobs"].get("pending", 0)


def phase(node, a, batch, prefix):
    """One load phase and its publishing drain: (accepted jobs/s, published jobs/s,
    CPU µs a job, jobs answered 2xx)."""
    pid = node.proc.pid
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    r = run_wrk(node.port, a.conns, a.duration, prefix, batch=batch)
    load_s = r["duration_us"] / 1e6
    jobs = r["accepted"]
    deadline = time.monotonic() + a.drain_timeout
    while pending(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pending(node):
        sys.exit(f"error: {pending(node):,} jobs still pending {a.drain_timeout:g} s "
                 f"after the load; node log:\n{node.log_tail()}")
    total_s, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    print(f"[bench] {prefix}: {jobs:,} jobs, {jobs / load_s:,.0f}/s accepted, "
          f"{jobs / total_s:,.0f}/s published, {cpu / jobs * 1e6:,.0f} µs/job, "
          f"non-2xx {r['non2xx']}, errors {r['errors']}", file=sys.stderr, flush=True)
    return jobs / load_s, jobs / total_s, cpu / jobs * 1e6, jobs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--rounds", type=int, default=1, help="batch phases, singles between")
    p.add_argument("--rabbitmq-port", type=int, default=5672)
    p.add_argument("--drain-timeout", type=float, default=300)
    p.add_argument("--write", metavar="FILE")
    a = p.parse_args()
    if a.rounds < 1:
        p.error("--rounds: at least 1")
    job_queues(a.rabbitmq_port, purge=True)
    node = start_node(ROOT, tempfile.mkdtemp(prefix="dq-batch-"),
                      rabbitmq_port=a.rabbitmq_port, publish_on_register="true",
                      snapshot_entries=10000000)
    try:
        warm = run_wrk(node.port, a.conns, 2, "warm")["accepted"]
        rows = [("single registers", phase(node, a, 0, "s0"))]
        for rnd in range(1, a.rounds + 1):      # batches between singles, taking turns
            sfx = f", round {rnd}" if a.rounds > 1 else ""
            rows += [(f"batches of {a.batch}{sfx}", phase(node, a, a.batch, f"b{rnd}")),
                     (f"single registers again{sfx}", phase(node, a, 0, f"s{rnd}"))]
        counts = node.get_json("/api/metrics")["jobs"]
    finally:
        node.stop()
    in_broker = sum(job_queues(a.rabbitmq_port, purge=True).values())
    held, queued = sum(counts.values()), counts.get("queued", 0)
    answered = warm + sum(r[3] for _, r in rows)
    # wrk stops with requests in flight, which the node may still accept: it may hold
    # up to that many more than were answered, never fewer.
    in_flight = (len(rows) + 1) * a.conns * max(1, a.batch)
    lost = max(0, answered - queued) + (held - queued) + abs(held - in_broker)
    if queued - answered > in_flight:
        lost = max(lost, 1)
        print(f"error: the node holds {queued - answered:,} jobs more than were answered, "
              f"above the {in_flight:,} wrk can have had in flight", file=sys.stderr)
    # each batch phase against the mean of the single phases before and after it
    vs = {i: rows[i][1][0] * 2 / (rows[i - 1][1][0] + rows[i + 1][1][0])
          for i in range(1, len(rows), 2)}
    lines = [f"### Batch submit against single registers ({a.conns} connections)", "",
             f"- {machine_line(ROOT)}",
             f"- command: `python bench/batch.py --duration {a.duration:g} --batch {a.batch} "
             f"--conns {a.conns} --rounds {a.rounds} --write docs/BENCHMARKS.md`",
             f"- wrk, {a.conns} connections, {a.duration:g} s a phase, publish_on_register "
             f"true; after each phase the node publishes its backlog with no load; CPU "
             f"counts both",
             f"- jobs answered 2xx {answered:,} (the warm-up's included); held by the node "
             f"{held:,} ({counts}); messages in the broker {in_broker:,}: "
             f"**{'0 lost' if not lost else f'{lost:,} LOST'}**", "",
             "| requests | jobs/s accepted | jobs/s until all published | node CPU µs/job "
             "| vs the singles around it (accepted) |", "|---|--:|--:|--:|--:|"]
    lines += [f"| {name} | {acc:,.0f} | {pub:,.0f} | {cpu:,.0f} | "
              f"{f'{vs[i]:.1f}×' if i in vs else '—'} |"
              for i, (name, (acc, pub, cpu, _)) in enumerate(rows)]
    r = sorted(vs.values())
    lines.insert(6, f"- **batches against singles: {statistics.median(r):.1f}×**" + (
        f" (median of {len(r)} rounds, {r[0]:.1f}-{r[-1]:.1f}×)" if len(r) > 1 else "")
        + " (target ≥ 10×)")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        replace_section(a.write, "batch", text)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
