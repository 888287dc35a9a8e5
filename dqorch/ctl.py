"""`dqctl`: the operator's command line over the JSON API (README, Command line).

Every command is one or a few calls of dqorch.client; tables for people, `--json`
for scripts (the API's own JSON, unchanged), and exit codes a script can test (EXIT_*
below, README). Imports neither gevent nor the node: it runs anywhere dqorch is
installed. The formatting functions are pure: they are given the time."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

from . import __version__
from .client import (DEFAULT_URL, ApiError, Client, ClientError, Conflict, MissingRoute,
                     NotFound, Unauthorized, Unavailable, Unreachable)

EXIT_OK = 0
EXIT_ERROR = 1          # the node refused the request (400, 409, 413, 500, ...)
EXIT_USAGE = 2          # bad arguments (argparse's own code), an unreadable --config
EXIT_NOT_FOUND = 3      # no such job, worker, queue or member
EXIT_UNREACHABLE = 4    # no answer: refused, timed out, TLS failed
EXIT_AUTH = 5           # 401/403: a token is missing, wrong, or read-only
EXIT_NO_ROUTE = 6       # this node does not serve that route (an older dqorch)
EXIT_UNAVAILABLE = 7    # 503: starting, no leader, overloaded; `status`: unavailable
EXIT_DEGRADED = 8       # `status` only: the node serves, some check is not ok
EXIT_CONFLICT = 9       # 409: not allowed in the thing's state (cancel a finished job)

_EXIT_BY_ERROR = ((MissingRoute, EXIT_NO_ROUTE), (NotFound, EXIT_NOT_FOUND),
                  (Unauthorized, EXIT_AUTH), (Unavailable, EXIT_UNAVAILABLE),
                  (Conflict, EXIT_CONFLICT), (Unreachable, EXIT_UNREACHABLE),
                  (ClientError, EXIT_ERROR))


def exit_code(e: ClientError) -> int:
    return next(code for cls, code in _EXIT_BY_ERROR if isinstance(e, cls))


# Formatting (pure) ############################################################

def cell(value) -> str:
    """One table cell: None is "-", anything not a string is JSON, and characters a
    terminal would act on (controls, bidi overrides) are escaped."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else
                   f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in text)


def table(headers: list[str] | None, rows: list[list]) -> str:
    """Left-aligned columns two spaces apart, headers in capitals (None: no header
    line); no trailing spaces."""
    cells = [[cell(v) for v in row] for row in rows]
    lines = ([[h.upper() for h in headers]] if headers else []) + cells
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] \
        if lines else []
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
                     for line in lines)


def age(at_ms, now_ms: int) -> str:
    """How long ago, in the largest whole unit: "12s ago", "3m ago", "5h ago", "2d ago"."""
    if not isinstance(at_ms, (int, float)) or isinstance(at_ms, bool):
        return "-"
    s = max(0, int(now_ms - at_ms) // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"


def utc(at_ms) -> str:
    if not isinstance(at_ms, (int, float)) or isinstance(at_ms, bool):
        return "-"
    return datetime.datetime.fromtimestamp(at_ms / 1000, datetime.timezone.utc) \
        .strftime("%Y-%m-%d %H:%M:%S UTC")


def jobs_table(jobs: list[dict], now_ms: int) -> str:
    return table(["id", "type", "status", "queue", "prio", "worker", "tries", "created"],
                 [[j.get("id"), j.get("type"), j.get("status"), j.get("queue"),
                   j.get("priority"), j.get("worker_id"),
                   f"{j.get('retry_count', 0)}/{j.get('max_retries', '-')}",
                   age(j.get("created_at"), now_ms)] for j in jobs])


_JOB_FIELDS = ("id", "type", "status", "why", "queue", "priority", "worker_id",
               "retry_count", "max_retries", "execution_timeout", "progress",
               "error_message")
_JOB_TIMES = ("created_at", "queued_at", "started_at", "completed_at")


def job_text(job: dict, now_ms: int) -> str:
    """One job for people: its fields, times, payload and result, then its history."""
    rows = [[k, job[k]] for k in _JOB_FIELDS if k in job]
    rows += [[k, f"{utc(job[k])} ({age(job[k], now_ms)})" if job[k] else None]
             for k in _JOB_TIMES if k in job]
    rows += [[k, job[k]] for k in ("payload", "result", "metadata") if job.get(k)]
    out = table(["field", "value"], rows)
    history = job.get("history") or []
    if history:
        out += "\n\n" + table(["at", "status", "by", "reason"],
                              [[utc(h.get("at")), h.get("status"), h.get("by"),
                                h.get("reason")] for h in history])
    return out


def workers_table(workers: list[dict], now_ms: int) -> str:
    return table(["worker", "type", "status", "load", "running", "last heartbeat"],
                 [[w.get("worker_id"), w.get("worker_type"), w.get("status"),
                   f"{w.get('current_load', '-')}/{w.get('capacity', '-')}",
                   w.get("running_jobs"), age(w.get("last_heartbeat"), now_ms)]
                  for w in workers])


def members_table(cluster: dict) -> str:
    leader = cluster.get("leader")
    return table(["member", "role", "place", "api", "last contact", "match", "caught up"],
                 [[m.get("node") + (" *" if m.get("node") == leader else ""),
                   m.get("role"), m.get("member"), m.get("api"),
                   None if m.get("last_contact_ms") is None
                   else f"{m['last_contact_ms']} ms", m.get("match_index"),
                   m.get("caught_up")] for m in cluster.get("members", [])])


def generic_table(items: list[dict], first: tuple = ()) -> str:
    """A table of whatever objects the node answered: the `first` keys that are
    present, then the others in the order met; nested values as JSON."""
    keys = [k for k in first if any(k in i for i in items)]
    for item in items:
        keys += [k for k in item if k not in keys]
    return table(keys, [[item.get(k) for k in keys] for item in items])


def listed(answer, key: str) -> list[dict]:
    """The list of objects in an answer: answer[key] (a list, or a {name: object}
    mapping, named by `name`), or the answer itself when it is a list."""
    found = answer.get(key, answer) if isinstance(answer, dict) else answer
    if isinstance(found, dict):
        return [dict({"name": k}, **(v if isinstance(v, dict) else {"value": v}))
                for k, v in found.items()]
    return [i if isinstance(i, dict) else {"value": i} for i in found or []]


def status_text(health: dict, raft: dict | None, metrics: dict | None) -> str:
    checks = health.get("checks") or {}
    rows = [["node", health.get("node")], ["status", health.get("status")]]
    if health.get("message"):
        rows.append(["message", health["message"]])
    if raft:
        rows.append(["raft", f"{raft.get('role')} term {raft.get('term')}, leader "
                             f"{raft.get('leader') or '-'}, commit {raft.get('commit_index')},"
                             f" applied {raft.get('applied_index')}"])
    broker = checks.get("broker") or {}
    if broker:
        rows.append(["broker", ("connected" if broker.get("connected") else "disconnected")
                     + (f", {broker['error']}" if broker.get("error") else "")])
    if metrics:
        jobs = metrics.get("jobs") or {}
        rows.append(["jobs", ", ".join(f"{s} {n}" for s, n in sorted(jobs.items()))
                     or "none"])
        w = metrics.get("workers") or {}
        rows.append(["workers", f"{w.get('active', 0)} active, "
                                f"{w.get('unresponsive', 0)} unresponsive"])
    bad = [f"{name}: {c.get('error') or 'not ok'}" for name, c in checks.items()
           if isinstance(c, dict) and c.get("ok") is False]
    rows.append(["checks", "; ".join(bad) if bad else "all ok"])
    return table(None, rows)


# Commands ######################################################################

def _now_ms() -> int:
    return int(time.time() * 1000)


def cmd_status(c: Client, a) -> tuple:
    health = c.health()
    raft = metrics = None
    if health.get("status") != "unavailable":
        raft, metrics = c.raft_status(), c.metrics()
    code = {"healthy": EXIT_OK, "degraded": EXIT_DEGRADED}.get(health.get("status"),
                                                               EXIT_UNAVAILABLE)
    return {"health": health, "raft": raft, "metrics": metrics}, \
        status_text(health, raft, metrics), code


def cmd_probe(c: Client, a) -> tuple:
    """GET /health on the metrics port (a container's or a script's liveness check)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(a.health_url, timeout=a.timeout) as r:
            text = r.read().decode(errors="replace").strip()
        return {"health": text}, text, EXIT_OK
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace").strip()
        return {"health": text}, text, EXIT_UNAVAILABLE
    except (OSError, ValueError) as e:
        raise Unreachable(f"cannot reach {a.health_url}: {getattr(e, 'reason', e)}")


def _filters(a) -> dict:
    return dict(status=a.status, type=a.type, worker_id=a.worker, queue=a.queue)


def _listing(a, key: str, one_page, every, rows_table, **query) -> tuple:
    """A listing: one page (from --cursor), or with --all every page as one; the
    table ends with how many, and the next page's --cursor."""
    if a.all:
        found = list(every(**query))
        page = {key: found, "count": len(found), "returned": len(found), "next": None}
    else:
        page = one_page(cursor=a.cursor, **query)
    text = rows_table(page[key], _now_ms()) + f"\n{page['returned']} of {page['count']}"
    if page.get("next"):
        text += f"; next page: --cursor {page['next']}"
    return page, text, EXIT_OK


def cmd_jobs_list(c: Client, a) -> tuple:
    return _listing(a, "jobs", c.jobs, c.iter_jobs, jobs_table, **_filters(a),
                    limit=a.limit, full=a.full)


def cmd_jobs_get(c: Client, a) -> tuple:
    job = c.job(a.id)
    return job, job_text(job, _now_ms()), EXIT_OK


def _done(verb: str):
    def run(c: Client, a) -> tuple:
        out = getattr(c, verb)(a.id)
        return out, f"{a.id}: {(out or {}).get('status', 'done')}", EXIT_OK
    return run


def cmd_jobs_retry(c: Client, a) -> tuple:
    if a.id is not None:
        if a.matching:
            raise SystemExit(_usage("jobs retry: give a job id or --matching, not both"))
        return _done("retry")(c, a)
    if not a.matching:
        raise SystemExit(_usage("jobs retry: give a job id, or --matching with the "
                                "listing's filters to retry every finished job they match"))
    n = c.retry_matching(**_filters(a), limit=a.limit)
    return {"retried": n}, f"retried {n}", EXIT_OK


def cmd_workers_list(c: Client, a) -> tuple:
    return _listing(a, "workers", c.workers, c.iter_workers, workers_table, limit=a.limit)


def cmd_queues_list(c: Client, a) -> tuple:
    out = c.queues()
    return out, generic_table(listed(out, "queues"), ("name", "queue", "paused",
                                                      "messages", "consumers")), EXIT_OK


def schedules_table(items: list) -> str:
    return table(("id", "every/cron", "zone", "overlap", "paused", "next run", "fired",
                  "skipped"),
                 [[s["id"], s.get("every") or s.get("cron"), s["timezone"], s["overlap"],
                   "yes" if s["paused"] else "", (s["next_runs"] or ["-"])[0],
                   s["fired"], s["skipped_late"] + s["skipped_overlap"]] for s in items])


def cmd_schedules_list(c: Client, a) -> tuple:
    out = c.schedules()
    return out, schedules_table(out["schedules"]) + f"\n{out['count']} schedules", EXIT_OK


def cmd_schedules_get(c: Client, a) -> tuple:
    s = c.schedule(a.id)
    runs = "\n".join(f"  {r['scheduled_for']}  {r['status'] or 'gone'}  {r['job_id']}"
                      for r in s["last_runs"]) or "  none yet"
    return s, (schedules_table([s]) + "\nnext runs: " + ", ".join(s["next_runs"] or ["-"])
               + "\nlast runs:\n" + runs), EXIT_OK


def _schedule(verb: str):
    def run(c: Client, a) -> tuple:
        if verb == "delete":
            out = c.delete_schedule(a.id)
            return out, f"{a.id}: deleted", EXIT_OK
        out = c.schedule_action(a.id, verb)
        if verb == "trigger":
            return out, "\n".join(out["job_ids"]), EXIT_OK
        return out, f"{a.id}: {'paused' if out['paused'] else 'running'}", EXIT_OK
    return run


def _queue(verb: str):
    def run(c: Client, a) -> tuple:
        out = getattr(c, f"{verb}_queue")(a.queue)
        return out, f"{a.queue}: {(out or {}).get('status', verb + 'd')}", EXIT_OK
    return run


def cmd_members_list(c: Client, a) -> tuple:
    out = c.cluster_status()
    return out, members_table(out) + f"\nterm {out.get('term')}, leader " \
        f"{out.get('leader') or '-'} (*)", EXIT_OK


def cmd_members_add(c: Client, a) -> tuple:
    out = c.add_member(a.node, api=a.api, role=a.role)
    return out, f"{a.node}: {out.get('status')}", EXIT_OK


def cmd_members_promote(c: Client, a) -> tuple:
    out = c.promote_member(a.node, role=a.role)
    return out, f"{a.node}: {out.get('status')}", EXIT_OK


def cmd_members_remove(c: Client, a) -> tuple:
    out = c.remove_member(a.node)
    return out, f"{a.node}: {(out or {}).get('status', 'removed')}", EXIT_OK


def cmd_members_leader(c: Client, a) -> tuple:
    out = c.transfer_leader(a.to)
    return out, f"leader: {out.get('leader', a.to)}", EXIT_OK


# Arguments #####################################################################

EPILOG = """exit codes: 0 done; 1 the node refused the request; 2 bad arguments;
3 not found; 4 node unreachable; 5 token missing, wrong or read-only; 6 the node has
no such route (an older dqorch); 7 unavailable (503: starting, no leader; `status`:
unavailable); 8 `status`: degraded; 9 conflict (409)."""


def _usage(message: str) -> int:
    print(f"dqctl: {message}", file=sys.stderr)
    return EXIT_USAGE


def _add_filters(p, what: str) -> None:
    p.add_argument("--status", help=f"{what} in this status")
    p.add_argument("--type", help=f"{what} of this type")
    p.add_argument("--worker", metavar="WORKER_ID", help=f"{what} run by this worker")
    p.add_argument("--queue", help=f"{what} in this queue (job.high, job.medium, job.low)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dqctl", epilog=EPILOG,
                                description="Operate a dqorch node over its JSON API.")
    p.add_argument("--version", action="version", version=f"dqctl {__version__}")
    p.add_argument("--url", help=f"the node's API (default: --config's, else $DQ_URL, "
                                 f"else {DEFAULT_URL})")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="reach the node this config file (and DQ_* variables) describes, "
                        "on this machine, where it listens")
    p.add_argument("--token", help="bearer token (default $DQ_TOKEN); prefer the "
                                   "variable: arguments show in the process list")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for each answer (default 30)")
    p.add_argument("--cacert", metavar="FILE", help="CAs for an https node's certificate")
    p.add_argument("--insecure", action="store_true",
                   help="https without checking the certificate (a node on this machine)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(parent, name, fn, help_):
        q = parent.add_parser(name, help=help_, description=help_, epilog=EPILOG)
        q.set_defaults(fn=fn)
        return q

    def group(name, help_):
        g = sub.add_parser(name, help=help_, description=help_)
        return g.add_subparsers(dest="action", required=True, metavar="ACTION")

    cmd(sub, "status", cmd_status, "the node's health, Raft role, jobs and workers "
        "(exit 0 healthy, 8 degraded, 7 unavailable)")
    cmd(sub, "probe", cmd_probe, "GET /health on the metrics port (needs --config); "
        "exit 0 when the node answers 200")

    jobs = group("jobs", "list, show, retry, cancel and discard jobs")
    q = cmd(jobs, "list", cmd_jobs_list, "jobs, newest first (GET /api/jobs)")
    _add_filters(q, "jobs")
    q.add_argument("--limit", type=int, help="jobs per page (1-10000; default 100)")
    q.add_argument("--cursor", help="the page after this one (the `next` of a listing)")
    q.add_argument("--all", action="store_true", help="follow the pages to the end")
    q.add_argument("--full", action="store_true", help="with payloads and results (--json)")
    cmd(jobs, "get", cmd_jobs_get, "one job, with its history").add_argument("id")
    q = cmd(jobs, "retry", cmd_jobs_retry, "a new attempt of a finished job, or with "
            "--matching of every finished job the filters match (failed and cancelled "
            "without --status)")
    q.add_argument("id", nargs="?")
    q.add_argument("--matching", action="store_true", help="retry by filters, not by id")
    _add_filters(q, "jobs")
    q.add_argument("--limit", type=int, help="most jobs retried (default 100)")
    cmd(jobs, "cancel", _done("cancel"), "cancel a job that is not finished") \
        .add_argument("id")
    cmd(jobs, "discard", _done("discard"), "forget a job (DELETE /api/jobs/{id})") \
        .add_argument("id")

    workers = group("workers", "list and forget workers")
    q = cmd(workers, "list", cmd_workers_list, "workers by id (GET /api/workers)")
    q.add_argument("--limit", type=int)
    q.add_argument("--cursor")
    q.add_argument("--all", action="store_true", help="follow the pages to the end")
    cmd(workers, "forget", _done("forget_worker"),
        "forget a worker (DELETE /api/workers/{id})").add_argument("id")

    queues = group("queues", "the job queues: depths, pause, resume")
    cmd(queues, "list", cmd_queues_list, "queues with their RabbitMQ depths (GET /api/queues)")
    for verb in ("pause", "resume"):
        cmd(queues, verb, _queue(verb), f"{verb} a queue (POST /api/queues/{{queue}}/{verb})") \
            .add_argument("queue")

    schedules = group("schedules", "recurring jobs")
    cmd(schedules, "list", cmd_schedules_list, "schedules (GET /api/schedules)")
    cmd(schedules, "get", cmd_schedules_get, "a schedule with its next and last runs") \
        .add_argument("id")
    for verb, what in (("pause", "stop firing until resumed"),
                       ("resume", "fire again from the next tick"),
                       ("trigger", "one run now; prints its job id"),
                       ("delete", "delete a schedule (its jobs stay)")):
        cmd(schedules, verb, _schedule(verb), what).add_argument("id")

    members = group("members", "the cluster's members (docs/CLUSTER.md)")
    cmd(members, "list", cmd_members_list, "members, roles and replication "
        "(GET /api/cluster/status)")
    q = cmd(members, "add", cmd_members_add, "add a member (a learner unless --role)")
    q.add_argument("node", help="name@host[:raft_port]")
    q.add_argument("--api", metavar="HOST:PORT", help="where the members reach its API")
    q.add_argument("--role", choices=("learner", "voter", "witness"))
    q = cmd(members, "promote", cmd_members_promote, "make a caught-up learner a voter")
    q.add_argument("node")
    q.add_argument("--role", choices=("voter", "witness"))
    cmd(members, "remove", cmd_members_remove, "remove a member").add_argument("node")
    cmd(members, "leader", cmd_members_leader, "hand leadership to a voter") \
        .add_argument("to")
    return p


def _client(a, env) -> Client:
    url = a.url            # then the config's address, then $DQ_URL
    a.health_url = None
    if a.config:
        from . import config
        from .client import local_urls
        try:
            urls = local_urls(config.load(a.config, env))
        except config.ConfigError as e:
            raise SystemExit(_usage(str(e)))
        url = url or urls["api"]
        a.health_url = urls["health"]
    if a.fn is cmd_probe and a.health_url is None:
        raise SystemExit(_usage("probe: needs --config (the metrics port's address)"))
    try:
        return Client(url or env.get("DQ_URL") or DEFAULT_URL, token=a.token or env.get("DQ_TOKEN"),
                      timeout_s=a.timeout, cafile=a.cacert, verify=not a.insecure)
    except (ValueError, OSError) as e:
        raise SystemExit(_usage(f"--url: {e}" if isinstance(e, ValueError) else
                                f"--cacert: {e}"))


def run(argv: list[str] | None = None, env=None, out=None, err=None) -> int:
    env = os.environ if env is None else env
    out = out or sys.stdout
    err = err or sys.stderr
    a = parser().parse_args(argv)
    c = _client(a, env)
    try:
        answer, text, code = a.fn(c, a)
    except ClientError as e:
        print(f"dqctl: {e}", file=err)
        if isinstance(e, ApiError) and a.json:
            print(json.dumps({"error": e.code, "message": e.message, "status": e.status,
                              **({"field": e.field} if e.field else {})}), file=out)
        return exit_code(e)
    finally:
        c.close()
    print(json.dumps(answer, indent=2) if a.json else text, file=out)
    return code


def main() -> None:
    try:
        sys.exit(run())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:            # dqctl jobs list | head: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)

if __name__ == "__main__":
    main()
