"""Builds the node's pieces, starts them in order, stops them in reverse. The only
module that knows all the others.
"""
from __future__ import annotations

import ctypes
import fcntl
import gc
import logging
import os
import time
import uuid

import gevent
import gevent.event

from . import config, jobs, metrics
from .depths import QueueDepths
from .failure_log import FailureLog
from .jobs import TERMINAL
from . import state as st_mod
from .api import Access, HostCheck, Services, guard, hot_routes, make_app, refuse
from .broker import Broker
from .clock import ClusterClock
from .peer_news import PeerNews
from .dispatch import Dispatcher, Timers, node_view
from .errors import EXIT_DATA, EXIT_LISTEN, StartupError
from .forward import Forwarder
from .fsm import SNAPSHOTS, JobFSM
from .members import check_members, member_id, record_in_log
from .rates import Rates
from . import console, http_fast, http_server
from .raft import membership as M
from .raft.log import RaftLog
from .raft.node import RaftNode
from .workers import WorkerTable

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
# The release loop's shortest wait: a release proposed is applied within a commit
# round, and the loop must not spin while it is on its way.
RELEASE_MIN_WAIT_S = 0.01


def _loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def advertised_api(cfg) -> str:
    """host:port where peers reach this node's API (forwarded writes): api_advertise,
    else http_host, or node_name's host when http_host listens on every address."""
    if cfg.api_advertise:
        return cfg.api_advertise
    host = cfg.node_host if cfg.http_host in ("0.0.0.0", "::", "") else cfg.http_host
    return f"{host}:{cfg.http_port}"


def base_config(cfg, join: bool = False) -> M.Config:
    """The configuration of a data_dir whose log holds none yet (raft/membership.py):
    this node and raft_peers, all voters; this node a witness when the config says so.
    join: this node waits to be added, so it is none of them (the peers are who it
    hears from until then)."""
    me = M.Member(cfg.node_name, M.WITNESS if cfg.witness else M.VOTER,
                  f"{cfg.node_host}:{cfg.raft_port}", advertised_api(cfg))
    peers = tuple(M.Member(name, M.VOTER, f"{host}:{port}")
                  for name, host, port in cfg.peer_endpoints)
    members = peers if join else (me,) + peers
    return M.Config(tuple(sorted(members, key=lambda m: m.name)))


def _address(member: M.Member, cfg) -> tuple:
    """(host, port) of a member's Raft socket: as this node's raft_peers say (what it
    knows of its own network wins: a proxy, a NAT), else as the configuration says,
    else its node_name's host at our raft_port."""
    for name, host, port in cfg.peer_endpoints:
        if name == member.name:
            return host, port
    if member.raft:
        host, _, port = member.raft.rpartition(":")
        return host, int(port)
    return member.name.split("@", 1)[-1], cfg.raft_port


# Jobs live long and hold no reference cycles. Moving what survived into gc's permanent
# generation every so many commands keeps full collections from scanning every job:
# without it their cost, and the pauses, grow with the number of jobs held.
GC_FREEZE_EVERY = 10_000


def _trim_heap() -> None:
    """Hand back to the OS the heap the load freed (the snapshot's lines, the log
    tail's entries): glibc keeps freed memory for reuse until asked."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):     # not glibc: nothing to ask
        pass




class Node:
    """One orchestrator process: log + state, broker, dispatcher, HTTP, metrics."""

    def __init__(self, cfg: config.Config, skip_entries=(), membership: str = "",
                 tls_contexts=(None, None, None)) -> None:
        """tls_contexts: tls.contexts(cfg), built before anything is opened.
        membership: "" , "accept", "force-new-cluster" (members.py) or "join" (wait to
        be added to the cluster raft_peers belong to)."""
        # The cluster's time (clock.py): every stamp and duration, never this member's
        # wall clock alone. Alone, it is the wall clock.
        self.clock = ClusterClock()
        self.now_ms = now_ms = self.clock.now_ms
        os.makedirs(cfg.data_dir, mode=0o700, exist_ok=True)   # jobs' payloads: ours only
        self._lock_fd = _lock_data_dir(cfg.data_dir)
        self.cfg = cfg = check_members(cfg, "" if membership == "join" else membership)
        self.cluster = None
        self._recorded = ()               # members.json's names once the log holds them
        self.node = RaftNode(RaftLog(cfg.data_dir, SNAPSHOTS), cfg.node_name, fsm=JobFSM(),
                             snapshot_entries=cfg.snapshot_entries, now_ms=now_ms,
                             skip_entries=skip_entries,
                             max_pending=cfg.max_pending_proposals,
                             config=base_config(cfg, join=membership == "join"),
                             force_config=membership == "force-new-cluster",
                             on_config=self._members_changed,
                             member_id=member_id(cfg.data_dir), witness=cfg.witness,
                             # The dispatcher is built below: reached through self.
                             on_applied=(self._count,
                                         lambda cmd, out: self.dispatcher.on_applied(cmd, out)),
                             on_batch=(self._observe_batch,),
                             on_leadership=(self._leadership,),
                             tick_s=cfg.raft_heartbeat_ms / 1000,
                             election_ticks=cfg.raft_election_timeout_ms // cfg.raft_heartbeat_ms,
                             api=advertised_api(cfg))
        self.workers = WorkerTable(cfg.worker_heartbeat_timeout_s, now_ms)
        self.peer_news = PeerNews(cfg.leader_broker_handover_s,
                                  int(cfg.max_clock_skew_s * 1000), time.monotonic)
        self.rates = Rates(now_ms)        # the console's graph (GET /api/rates)
        self.tls, peer_tls, rabbit_tls = tls_contexts
        if cfg.raft_peers:
            try:        # binds raft_port now: a port in use is a start-up error
                self._make_cluster(self.node.config)
            except OSError as e:
                raise StartupError(EXIT_LISTEN, f"cannot listen on UDP {cfg.node_host}:"
                                   f"{cfg.raft_port} (raft_port): {e.strerror or e}")
        # Idle until another member leads (a cluster of one is always its own leader).
        self.forwarder = Forwarder(self.node, cfg.node_name,
                                   wait_leader_s=2 * cfg.raft_election_timeout_ms / 1000,
                                   tls=peer_tls)
        self.broker = Broker(cfg.rabbitmq_host, cfg.rabbitmq_port, cfg.rabbitmq_username,
                             cfg.rabbitmq_password, cfg.rabbitmq_vhost,
                             ssl_options=rabbit_tls,
                             window=cfg.publish_window, heartbeat_s=cfg.rabbitmq_heartbeat_s,
                             on_confirmed=lambda toks: self.dispatcher.on_confirmed(toks),
                             on_rejected=lambda toks, why: self.dispatcher.on_rejected(toks, why),
                             on_state=self._broker_state)
        self.depths = QueueDepths(lambda: self.broker.params)
        view = node_view(self.node)
        self.dispatcher = Dispatcher(view, self.node.propose_async, self.broker,
                                     now_ms=now_ms)
        self.timers = Timers(view, self.node.propose_async, self.workers, now_ms=now_ms,
                             retry_backoff_s=cfg.job_retry_backoff_s,
                             retention_s=cfg.job_retention_s,
                             retention_max=cfg.job_retention_max)
        self.started = False
        self.stopped = gevent.event.Event()
        self._stopping = False
        self.aborting = False             # a stop signal came during start()
        self._servers: list = []
        self.http = None                  # the API's server, once listening
        self._timers = None
        self._since_freeze = 0
        self._leading = False             # side effects running (Rule below)
        self._want_lead: tuple | None = None
        self._lead_wake = gevent.event.Event()
        self._lead_loop = None
        self._clock_ok = True             # _watch_clock's last word
        self._releases = None
        self.failures = FailureLog(time.monotonic)
        self.type_label = metrics.TypeLabels(cfg.metrics_job_types)
        self._due_wake = gevent.event.Event()   # a job was scheduled: look again

    def new_id(self) -> str:
        return str(uuid.uuid4())

    # Members ###############################################################

    def _peer_addresses(self, config: M.Config) -> dict:
        from .cluster import resolve_peers
        return resolve_peers({m.name: _address(m, self.cfg) for m in config.members
                              if m.name != self.cfg.node_name})

    def _make_cluster(self, config: M.Config) -> None:
        from .cluster import Cluster
        self.cluster = Cluster(self.cfg, self.node, self.workers,
                               self._peer_addresses(config), self.peer_news, self.clock)

    def _members_changed(self, config: M.Config) -> None:
        """node.on_config: the applied configuration changed. Runs in the commit
        loop: quick, never blocks. A node that gains its first peer opens its Raft
        socket now."""
        if config.index and self._recorded != config.names:
            try:
                record_in_log(self.cfg.data_dir, config.names)
                self._recorded = config.names
            except OSError as e:
                log.warning("members.json not updated error=%s", e)
        if self.cluster is not None:
            self.cluster.set_peers(self._peer_addresses(config))
            return
        if not any(m.name != self.cfg.node_name for m in config.members):
            return
        try:
            self._make_cluster(config)
            self.cluster.start()
        except OSError as e:
            self.cluster = None
            log.error("cannot listen on UDP %s:%d (raft_port) error=%s; the other members "
                      "cannot reach this node", self.cfg.node_host, self.cfg.raft_port,
                      e.strerror or e)
            return
        log.info("raft socket open udp=%s:%d members=%s", self.cfg.node_host,
                 self.cfg.raft_port, ",".join(config.names))

    # Start and stop ########################################################

    def start(self) -> None:
        cfg = self.cfg
        metrics.install_gauges(self._gauges)
        # Metrics and API listen first, so health answers "starting" during replay.
        tokens = dict(tokens=cfg.api_tokens, read_tokens=cfg.api_read_tokens,
                      allow_from=cfg.allow_from)
        # /health on the metrics port stays open: container and load-balancer probes.
        self._listen(cfg.http_host, cfg.metrics_port,
                     guard(metrics.wsgi_app(self.ready), (), Access(**tokens, exempt={"/health"})),
                     "metrics_port")
        self.http = self._listen(cfg.http_host, cfg.http_port,
                                 guard(self._until_started(console.serve(
                                     hot_routes(make_app(self._api_services())))),
                                       cfg.allowed_origins,
                                       Access(**tokens, exempt=console.PATHS),
                                       HostCheck.for_config(cfg)),
                                 "http_port", self.tls)
        if not _loopback(cfg.http_host) and not cfg.api_tokens and not cfg.allow_from:
            log.warning("the API listens beyond loopback http_host=%s with no api_tokens "
                        "and no allow_from: anyone who can reach port %d can register and "
                        "cancel jobs (README, Security)", cfg.http_host, cfg.http_port)
        if not _loopback(cfg.http_host) and cfg.api_tokens and self.tls is None:
            log.warning("the API listens beyond loopback http_host=%s with api_tokens but "
                        "no tls_cert_file: the tokens cross the network in clear "
                        "(docs/SECURITY.md)", cfg.http_host)
        self._lead_loop = gevent.spawn(self._follow_leadership)
        if self.cluster is not None:
            try:
                self.cluster.start()
            except OSError as e:
                raise StartupError(EXIT_LISTEN, f"cannot listen on UDP {cfg.node_host}:"
                                   f"{cfg.raft_port} (raft_port): {e.strerror or e}")
        # Loading makes millions of objects and no cycles: collections meanwhile only
        # scan them again and again (+1.5 µs a job at 300,000 jobs, growing with n).
        gc.disable()
        try:
            self.node.start()
        finally:
            gc.enable()
        config = self.node.config
        unknown = sorted({name for name, _, _ in cfg.peer_endpoints} - set(config.names))
        if config.index and unknown:
            log.warning("raft_peers name members the log's configuration does not have "
                        "unknown=%s; the log's is in force members=%s (raft_peers only "
                        "say where to find the cluster; docs/CLUSTER.md)",
                        ",".join(unknown), ",".join(config.names))
        # No collection first: it walked every object (0.5 s at 1,000,000 jobs, ~1 s
        # while a snapshot child shares the pages) to find ~20 unreachable ones.
        gc.freeze()
        _trim_heap()
        self._broker_on()
        self._timers = gevent.spawn(self._check_timers)
        self._releases = gevent.spawn(self._release_due)
        self.started = True
        log.info("node ready node=%s %s=%s:%d metrics=%d jobs=%d", cfg.node_name,
                 "https" if self.tls else "http", cfg.http_host, cfg.http_port,
                 cfg.metrics_port, len(self.node.state.jobs))

    def _api_services(self) -> Services:
        node, broker, dispatcher = self.node, self.broker, self.dispatcher
        return Services(
            cfg=self.cfg, raft=node, state=lambda: node.state, workers=self.workers,
            forwarder=self.forwarder, rates=self.rates, health=self.health,
            cluster_status=self.cluster_status, broker_status=self.broker_status,
            broker_down_since=lambda: None if broker.connected
            else broker.disconnected_since_ms,
            why_returned=dispatcher.why_returned, dispatch_backlog=dispatcher.backlog,
            new_id=self.new_id, now_ms=self.now_ms, queue_depths=self.depths.get)

    def starting_message(self) -> str:
        return f"starting: {self.node.start_phase}; this node serves once it is done"

    def _until_started(self, app):
        """Until start() is done, every request but GET /api/health (which says
        "unavailable", role "starting") is answered 503 starting: the state is
        being loaded, and half of it must never be served as all of it. The replay
        hands the hub a turn every raft.node.BREATHE_S, so this answers at once."""
        def gated(environ, start_response):
            if self.started or environ.get("PATH_INFO") == "/api/health":
                return app(environ, start_response)
            return refuse(start_response, "503 Service Unavailable", "unavailable",
                          self.starting_message(), (("Retry-After", "1"),))
        return gated

    def _listen(self, host: str, port: int, app, key: str, tls_context=None):
        try:
            front = http_fast if self.cfg.http_server == "httptools" else http_server
            server = front.listen(host, port, app,
                                  idle_timeout_s=self.cfg.http_idle_timeout_s,
                                  request_timeout_s=self.cfg.http_request_timeout_s,
                                  tls_context=tls_context)
        except OSError as e:
            raise StartupError(EXIT_LISTEN, f"cannot listen on {host}:{port} ({key}): "
                               f"{e.strerror or e}")
        self._servers.append(server)
        return server

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish, flush the log, close the
        broker connection. Bounded by timeout_s. A second call (a second signal)
        leaves the first one to finish."""
        if self._stopping:
            return
        self._stopping = True
        log.info("stopping node=%s", self.cfg.node_name)
        deadline = time.monotonic() + timeout_s
        if self._servers:
            self._servers[-1].stop(timeout=max(0.1, deadline - time.monotonic()) / 2)
        for g in (self._timers, self._releases):
            if g is not None:
                g.kill()
        if self.cluster is not None:
            # A rolling restart should not wait out an election timeout.
            self.node.transfer_leadership(self.cfg.raft_election_timeout_ms / 1000)
        if self._lead_loop is not None:
            self._lead_loop.kill()
        self.dispatcher.stop()
        self.broker.stop(timeout_s=max(0.1, deadline - time.monotonic()) / 2)
        self.node.stop(timeout_s=max(0.1, deadline - time.monotonic()))
        if self.cluster is not None:
            self.cluster.close()
        for server in self._servers[:-1]:
            server.stop(timeout=0.1)
        log.info("stopped node=%s", self.cfg.node_name)
        self.stopped.set()

    # Leadership ############################################################
    # Rule: side effects (the broker connection, publishing, timers) run only between
    # became_leader and stepped_down (DESIGN §3); a witness has none. The node raises
    # the events in its loop, which must not block: one greenlet follows them, always
    # towards the latest.

    def _leadership(self, is_leader: bool, term: int) -> None:
        self._want_lead = (is_leader, term)
        self._lead_wake.set()

    def _follow_leadership(self) -> None:
        while True:
            self._lead_wake.wait()
            self._lead_wake.clear()
            is_leader, term = self._want_lead
            try:
                if is_leader and not self.cfg.witness:
                    if self._leading:
                        self._stop_side_effects()
                    self.timers.start(term, grace=not self.node.alone)
                    # Rule 5 of dispatch.py: an election timeout's hold.
                    self.dispatcher.start(term, hold_s=0.0 if self.node.alone else
                                          self.cfg.raft_election_timeout_ms / 1000)
                    self._broker_on()         # a follower's connection is kept: warm
                    self._leading = True
                    log.info("side effects started term=%d", term)
                elif not is_leader and self._leading:
                    self._stop_side_effects()
                    log.info("side effects stopped term=%d", term)
            except Exception:
                log.exception("leadership change failed is_leader=%s", is_leader)

    def _stop_side_effects(self) -> None:
        self._leading = False
        self.timers.stop()
        self.dispatcher.stop()
        # Closing settles what is in flight (the next leader publishes it again); the
        # connection is then made again, held open as a follower's (peer_news.py).
        self.broker.stop(timeout_s=2.0)
        if not self._stopping:
            self._broker_on()

    def _broker_on(self) -> None:
        """Every member but a witness keeps a broker connection (peer_news.py)."""
        if not self.cfg.witness and not self.broker.running:
            self.broker.start()

    # Health ################################################################

    def ready(self) -> bool:
        """Serving: the leader, or a follower that knows one. A node without a leader
        for longer than an election timeout is not ready."""
        if not self.started or self.node.role == "stopped":
            return False
        if self.node.leader is not None:
            return True
        since = self.node.no_leader_since
        return since is not None and \
            time.monotonic() - since < self.cfg.raft_election_timeout_ms / 1000

    def cluster_status(self) -> dict:
        """CONTRACT §2: every member as this node sees it. Match indexes are the
        leader's knowledge; on a follower they are null."""
        node, raft, progress = self.node, self.node.status(), self.node.progress()
        now = time.monotonic()
        config = node.config
        last = node.log.last_index if raft["role"] == "leader" else None
        me = config.get(self.cfg.node_name)
        members = [{"node": self.cfg.node_name, "role": raft["role"],
                    "api": advertised_api(self.cfg), "last_contact_ms": 0,
                    "match_index": node.log.last_index,
                    "member": me.role if me is not None else "none",
                    "id": node.member_id, "caught_up": True}]
        for m in config.members:
            if m.name == self.cfg.node_name:
                continue
            heard = node.contact.get(m.name)
            prog = progress.get(m.name)
            members.append({
                "node": m.name,
                "role": "leader" if m.name == node.leader else "follower",
                "api": node.leader_api if m.name == node.leader else (m.api or None),
                "last_contact_ms": None if heard is None else int((now - heard) * 1000),
                "match_index": prog["match"] if prog else None,
                "member": m.role, "id": m.id or None,
                "caught_up": None if prog is None or last is None
                else M.caught_up(prog["match"], last)})
        return {"node": self.cfg.node_name, "leader": raft["leader"], "term": raft["term"],
                "members": members, "config_index": config.index, "timestamp": self.now_ms()}

    def broker_status(self) -> dict:
        b = self.broker
        # Connected but silent (a stopped broker): the overdue confirms are the error.
        return {"connected": b.connected, "down_since": b.disconnected_since_ms,
                "error": b.last_error or b.confirms_overdue(), "in_flight": b.in_flight(),
                "oldest_unconfirmed_s": round(b.unconfirmed_age_s(), 1),
                "stats": dict(b.stats)}

    def health(self):
        node = self.node
        checks = {
            "role": {"ok": self.ready(), "role": node.role if self.started else "starting",
                     "leader": node.leader},
            "log": {"ok": node.log_ok, "error": node.log_error,
                    "commit_index": node.commit_index},
            "snapshot": {"ok": node.snaps.error is None, "error": node.snaps.error,
                         "index": node.log.snapshot_index},
            "broker": dict(self.broker_status(), ok=self._broker_ok())
            if self._leading or not self.cluster else self._follower_broker_check(),
            "clock": self._clock_check(),
            "queues": self._queues_check() if self._leading or not self.cluster else
            {"ok": True, "note": "the leader publishes" if not self.cfg.witness
             else "a witness has no broker"},
        }
        if not checks["role"]["ok"]:
            status, code = "unavailable", 503
        elif all(c["ok"] for c in checks.values()):
            status, code = "healthy", 200
        else:
            status, code = "degraded", 200
        out = {"status": status, "node": self.cfg.node_name, "timestamp": self.now_ms(),
               "checks": checks}
        if not self.started and node.role != "stopped":
            out["message"] = self.starting_message()
        return code, out

    def _follower_broker_check(self) -> dict:
        """A follower (or witness): its own connection, which it would publish on if
        it led (a witness keeps none), and what the leader says of its own."""
        lead = self.peer_news.leader_check(self.node.leader)
        if self.cfg.witness:
            out = dict(self.broker_status(), ok=lead["ok"] is not False,
                       note="a witness has no broker")
        else:
            out = dict(self.broker_status(), ok=self._broker_ok() and lead["ok"] is not False,
                       note="the leader publishes; this connection is held for when "
                            "this member leads")
            if not self._broker_ok() and not out["error"]:
                out["error"] = "not connected to RabbitMQ: this member could not publish"
        out["leader"] = lead
        if lead.get("error"):
            out["error"] = lead["error"] if not out.get("error") \
                else f"{out['error']}; {lead['error']}"
        return out

    def _queues_check(self) -> dict:
        """Not ok while a job queue returns its jobs unroutable (dispatch.py)."""
        unroutable = self.dispatcher.unroutable_status()
        return {"ok": not unroutable, "unroutable": unroutable, "error": "; ".join(
            f"{q} returns jobs unroutable since {jobs.iso_ms(u['since'])[11:19]} UTC "
            f"(returns={u['returned']}; no queue bound to its routing key: deleted?): "
            f"declaring the queues again, next try in {u['next_retry_s']:g} s"
            for q, u in sorted(unroutable.items())) or None}

    # Glue ##################################################################

    def _broker_state(self, connected: bool) -> None:
        self.dispatcher.wake()

    def _count(self, cmd: dict, outcome: dict) -> None:
        """Metrics from a live apply (never from replay). Runs once per command."""
        moved = outcome.get("moved")
        if moved is not None:
            self._count_move(cmd["id"], *moved)
        for id_, frm, to in outcome.get("moves", ()):
            self._count_move(id_, frm, to)
        op = cmd["op"]
        if op == "register":
            metrics.child(metrics.REGISTERS, outcome["outcome"]).inc()
            if outcome["outcome"] in ("created", "restarted"):
                self.rates.add("registered")
        elif op == "report":
            metrics.child(metrics.REPORTS, outcome["outcome"]).inc()
        elif op == "mark_queued" and outcome.get("queued"):
            metrics.transitions("pending", "queued").inc(outcome["queued"])
        elif op == "release":
            jobs_by_id = self.node.state.jobs
            for id_, _frm, _to in outcome["moves"]:
                metrics.SCHEDULED_LATE_SECONDS.observe(
                    max(0, cmd["at_ms"] - jobs_by_id[id_]["run_at"]) / 1000)
        elif op == "fire" and outcome["outcome"] == "fired":
            metrics.child(metrics.SCHEDULE_RUNS, "fired").inc(len(outcome["created"]))
            metrics.child(metrics.SCHEDULE_RUNS, "skipped_late").inc(cmd["skipped_late"])
            metrics.child(metrics.SCHEDULE_RUNS, "skipped_overlap").inc(
                cmd["skipped_overlap"])
            if "manual" not in cmd:
                for tick in cmd["runs"]:
                    metrics.SCHEDULE_LATE_SECONDS.observe(max(0, cmd["at_ms"] - tick) / 1000)
        if "scheduled" in outcome or op in ("schedule_put", "schedule_pause"):
            self._due_wake.set()      # it may be due before the release loop looks

    def _count_move(self, id_: str, frm: str, to: str) -> None:
        if frm == to:
            return
        metrics.transitions(frm, to).inc()
        if to in ("completed", "failed"):
            self.rates.add(to)
        job = self.node.state.jobs.get(id_)
        if job is None:
            return
        if to in ("completed", "failed"):
            label = self.type_label(job.type)
            metrics.child(metrics.JOBS_FINISHED, label, to).inc()
            if frm == "running" and job.get("running_since") and job["completed_at"]:
                metrics.child(metrics.TYPE_RUN_SECONDS, label).observe(
                    max(0, job["completed_at"] - job["running_since"]) / 1000)
        if self._leading and (to == "failed" or to == "pending" and frm in (
                "running", "queued")):
            self.failures.failed(job, final=to == "failed")
        if to == "running":
            since = job["queued_at"] or job["created_at"]
            metrics.child(metrics.QUEUE_WAIT_SECONDS, job["queue"]).observe(
                max(0, job["running_since"] - since) / 1000)
        elif frm == "running" and to in TERMINAL and job["completed_at"]:
            metrics.child(metrics.RUN_SECONDS, job["queue"]).observe(
                max(0, job["completed_at"] - job["running_since"]) / 1000)

    def _observe_batch(self, entries: int, seconds: float) -> None:
        metrics.COMMIT_SECONDS.observe(seconds)
        metrics.COMMIT_ENTRIES.observe(entries)
        self._since_freeze += entries
        if self._since_freeze >= GC_FREEZE_EVERY:
            self._since_freeze = 0
            gc.freeze()

    def _check_timers(self) -> None:
        while True:
            gevent.sleep(CHECK_INTERVAL_S)
            if not self.cfg.witness:
                self.peer_news.own(self._broker_ok())
            self._watch_clock()
            self.failures.flush()
            if not self._leading:
                continue              # the leader's work (a witness has none)
            try:
                self.timers.check()
                self._maybe_hand_over()
            except Exception:
                log.exception("timer check failed")

    def _release_due(self) -> None:
        """The leader releases scheduled jobs as they come due: it looks again when
        the earliest is due, when a job is scheduled, and at least every
        CHECK_INTERVAL_S (leadership comes and goes)."""
        while True:
            wait = CHECK_INTERVAL_S
            if self._leading:
                try:
                    due_in = self.timers.release()
                    if due_in is not None:
                        wait = min(wait, max(RELEASE_MIN_WAIT_S, due_in))
                except Exception:
                    log.exception("release check failed")
            self._due_wake.wait(timeout=wait)
            self._due_wake.clear()

    def _clock_check(self) -> dict:
        skew = self.clock.skew_ms()
        out = {"ok": abs(skew) <= self.cfg.max_clock_skew_s * 1000,
               "skew_s": round(skew / 1000, 3), "members_heard": self.clock.peers_heard()}
        if not out["ok"]:
            out["error"] = (f"this member's wall clock is {skew / 1000:+.1f} s off the "
                            f"cluster's time (the median of the members' clocks; "
                            f"max_clock_skew_s={self.cfg.max_clock_skew_s:g}): stamps and "
                            f"timers use the cluster's time; fix this machine's clock (NTP)")
        return out

    def _watch_clock(self) -> None:
        """One line when this member's clock goes off the cluster's time, one when back."""
        check = self._clock_check()
        if check["ok"] != self._clock_ok:
            self._clock_ok = check["ok"]
            if check["ok"]:
                log.info("wall clock back within the cluster's time skew_s=%.3f",
                         check["skew_s"])
            else:
                log.warning("wall clock off the cluster's time skew_s=%.1f members_heard=%d "
                            "max_clock_skew_s=%g; stamps and timers use the cluster's "
                            "time, and this member hands leadership over", check["skew_s"],
                            check["members_heard"], self.cfg.max_clock_skew_s)

    def _broker_ok(self) -> bool:
        return self.broker.connected and self.broker.confirms_overdue() is None

    def _maybe_hand_over(self) -> None:
        """peer_news.py Rules 2 and 3: this leader cannot publish, or its clock is off,
        and another member could lead better."""
        node, config = self.node, self.node.config
        progress, last = node.progress(), node.log.last_index
        candidates = sorted(
            (p for p in config.voters if p != self.cfg.node_name
             and p not in config.witnesses and p in progress
             and M.caught_up(progress[p]["match"], last)),
            key=lambda p: -progress[p]["match"])
        skew = self.clock.skew_ms() if not self.node.alone else 0
        found = self.peer_news.handover_to(candidates, skew)
        if found is None:
            return
        to, why = found
        if why == "clock":
            log.warning("handing leadership over to=%s: this member's wall clock is %.1f s "
                        "off the cluster's time (max_clock_skew_s=%g) and %s's is not",
                        to, skew / 1000, self.cfg.max_clock_skew_s, to)
        else:
            log.warning("handing leadership over to=%s: this leader's RabbitMQ connection "
                        "has been down %.0f s (leader_broker_handover_s=%g) and %s's "
                        "works; error=%s", to, self.peer_news.own_for_s(),
                        self.cfg.leader_broker_handover_s, to,
                        self.broker.last_error or self.broker.confirms_overdue())
        gevent.spawn(node.transfer_leadership, self.cfg.raft_election_timeout_ms / 1000, to)

    def _depth_gauges(self) -> tuple:
        """RabbitMQ's counts, read by the leader (depths.py); absent elsewhere and
        while RabbitMQ cannot be asked."""
        depths = self.depths.get() if self._leading else {"error": "not leading"}
        if "error" in depths:
            return {}, {}
        ok = {q: d for q, d in depths.items() if "error" not in d}
        return ({(q,): d["messages_ready"] for q, d in ok.items()},
                {(q,): d["consumers"] for q, d in ok.items()})

    def _gauges(self) -> dict:
        """The values of metrics.LIVE, read now: {name: value or {labels: value}}."""
        st, node, now = self.node.state, self.node, self.now_ms()
        broker, backlog = self.broker, self.dispatcher.backlog()
        w = self.workers.counts(st_mod.running_counts(st))
        dropped = dict(self.cluster.codec.dropped) if self.cluster else {}
        fragments = dict(self.cluster.codec.stats) if self.cluster else {}
        depths = self._depth_gauges()
        return {
            "distriqueue_jobs": {(s,): n for s, n in st_mod.counts_by_status(st).items()},
            "distriqueue_schedules": st_mod.schedule_counts(st),
            "distriqueue_queue_jobs": {(q, s): n for q, c in st.queue_counts.items()
                                       for s, n in c.items()},
            # stopped: silent after a last heartbeat with load 0 and no job running
            # there (a scale-down); DqorchWorkersUnresponsive watches only the lost.
            "distriqueue_workers": {("active",): w["active"],
                                    ("unresponsive",): w["unresponsive"],
                                    ("stopped",): w["stopped"]},
            # Every member but a witness holds one (peer_news.py): absent on a witness.
            "distriqueue_clock_skew_seconds": self.clock.skew_ms() / 1000,
            "distriqueue_broker_connected": None if self.cfg.witness
            else int(broker.connected),
            "distriqueue_broker_events_total": {(k,): v for k, v in broker.stats.items()},
            "distriqueue_broker_in_flight": broker.in_flight(),
            "distriqueue_broker_oldest_unconfirmed_seconds": broker.unconfirmed_age_s(),
            "distriqueue_queue_unroutable": {(q,): int(q in self.dispatcher.unroutable)
                                             for q in jobs.QUEUES},
            "distriqueue_queue_paused": {(q,): int(q in st.paused_queues) for q in jobs.QUEUES},
            "distriqueue_rabbitmq_messages_ready": depths[0],
            "distriqueue_rabbitmq_consumers": depths[1],
            "distriqueue_publish_held": {
                ("limit",): backlog["jobs_held_by_limits"],
                ("pause",): sum(st.queue_counts[q]["pending"] for q in st.paused_queues)},
            "distriqueue_publish_backlog": backlog["jobs_to_publish"],
            "distriqueue_outbox_backlog": backlog["events_unpublished"],
            "distriqueue_jobs_evicted_total": st.evicted,
            "distriqueue_oldest_job_age_seconds": {
                (q, s): max(0, now - at) / 1000 for s in ("pending", "queued")
                for q, at in st_mod.oldest_created_at(st, s).items()},
            "distriqueue_raft_term": node.term,
            "distriqueue_raft_commit_index": node.commit_index,
            "distriqueue_raft_applied_index": node.applied_index,
            "distriqueue_raft_is_leader": int(node.role == "leader"),
            "distriqueue_raft_role": {(r,): int(node.role == r)
                                      for r in ("leader", "follower", "candidate")},
            "distriqueue_raft_events_total": {
                ("elections",): node.stats["elections"],
                ("leader_changes",): node.stats["leader_changes"],
                ("slow_disk",): node.stats["slow_disk"]},
            "distriqueue_raft_fsync_in_thread": int(node.fsync_in_thread),
            "distriqueue_raft_messages_dropped_total": {
                **{(r,): n for r, n in dropped.items()},
                ("bad_message",): node.stats["bad_messages"],
                ("wrong_member_id",): node.stats["wrong_member_id"],
                ("removed_member_id",): node.stats["removed_member_id"],
                ("other_members",): node.stats["other_members"],
                ("inbox_full",): node.stats["inbox_full"]},
            "distriqueue_raft_fragments_total": {(k,): n for k, n in fragments.items()},
            "distriqueue_raft_members": {
                (r,): sum(1 for m in node.config.members if m.role == r) for r in M.ROLES},
            "distriqueue_raft_config_index": node.config.index,
            "distriqueue_raft_replication_lag_entries": {
                (p,): max(0, node.log.last_index - pr["match"])
                for p, pr in node.progress().items()},
            "distriqueue_forwarded_requests_total": {
                (k,): v for k, v in (self.forwarder.stats.items() if self.forwarder else ())},
            "distriqueue_log_writable": int(node.log_ok),
            "distriqueue_proposals_refused_total": node.overloaded,
            "distriqueue_listener_errors_total": node.listener_errors,
            "distriqueue_raft_snapshots_total": {("written",): node.snaps.written,
                                                 ("failed",): node.snaps.failures},
            "distriqueue_data_dir_free_bytes": _free_bytes(self.cfg.data_dir),
            "distriqueue_publish_backoff_jobs": backlog["jobs_waiting_backoff"],
            "distriqueue_events_dropped_total": st.events_dropped,
            "distriqueue_workers_dropped_total": self.workers.dropped,
            "distriqueue_tls_handshake_failures_total":
                self.http.tls_failures if self.http else 0,
        }


def _free_bytes(path: str) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _lock_data_dir(data_dir: str) -> int:
    """One process per data_dir: two writers would interleave the log. A POSIX lock
    (lockf), not flock: a forked snapshot child does not inherit it, so a restart
    after kill -9 is not refused while the child still runs."""
    fd = os.open(os.path.join(data_dir, "LOCK"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StartupError(EXIT_DATA, f"data_dir {data_dir} is in use by another dqorch "
                                      f"process")
    return fd
