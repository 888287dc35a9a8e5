"""The command line: `python dqorch.py` and the `dqorch` command. gevent patches the
stdlib here, before anything else is imported; then the config is read, the node
built and started, and stop signals wired to a clean stop."""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import greenlet  # noqa: E402

from . import __version__, config, logfmt, tls  # noqa: E402
from .app import Node  # noqa: E402
from .members import restore_backup  # noqa: E402
from .errors import EXIT_CONFIG, EXIT_DATA, ReplayFailed, StartupError  # noqa: E402
from .raft.log import LogCorrupt  # noqa: E402

log = logging.getLogger(__name__)


def setup_logging(cfg: config.Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.log_format == "json":
        handler.setFormatter(logfmt.JsonFormatter())
    else:
        handler.setFormatter(logfmt.TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.log_level.upper())
    # pika logs 7 ERROR lines per failed connect attempt (every few seconds while the broker
    # is down); dqorch.broker logs each state change once instead.
    logging.getLogger("pika").setLevel(logging.INFO if cfg.log_level == "debug"
                                       else logging.CRITICAL)


def _stop_signals() -> list:
    """SIGTERM, SIGINT and SIGHUP all stop the node cleanly (README, Operations).
    SIGHUP is not a reload: most settings (ports, data_dir, peers, TLS) cannot change
    in a running node, and a reload that takes some and silently keeps the others
    would lie. Without a handler SIGHUP killed the node on the spot, cutting requests
    in flight. A SIGHUP ignored by whoever started us (nohup) stays ignored."""
    sigs = [signal.SIGTERM, signal.SIGINT]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        sigs.append(signal.SIGHUP)
    return sigs


class _StopDuringStart(BaseException):
    """Thrown into start-up by a stop signal. A BaseException, as GreenletExit: no
    `except Exception` on the way may take it for a failure of its own."""


def _stop_on_signal(node, sig, main) -> None:
    log.info("stop asked by signal=%s", signal.Signals(sig).name)
    if node.started:
        gevent.spawn(node.stop)
    elif not node.aborting:
        node.aborting = True
        # start() runs in the main greenlet, which waits in the hub now (the replay
        # hands it a turn every BREATHE_S): it ends there, and main() stops the node.
        gevent.get_hub().loop.run_callback(_abort_start, node, main)


def _abort_start(node, main) -> None:
    if node.started:
        gevent.spawn(node.stop)
    else:
        main.throw(_StopDuringStart())


def run(argv: list[str] | None = None) -> int:
    if not monkey.is_module_patched("socket"):
        print("dqorch: gevent is not patched; start with `python dqorch.py` or the "
              "`dqorch` command, which patch before importing", file=sys.stderr)
        return EXIT_CONFIG
    p = argparse.ArgumentParser(prog="dqorch", description="DistriQueue orchestrator")
    p.add_argument("-c", "--config", default="config.yaml", help="YAML config file")
    p.add_argument("--check-config", action="store_true",
                   help="validate the config, print it with secrets masked, and exit")
    p.add_argument("--version", action="version", version=f"dqorch {__version__}")
    p.add_argument("--force-new-cluster", action="store_true",
                   help="recovery: a majority is lost for good; start this node alone "
                        "from its data as a new cluster of one (docs/CLUSTER.md)")
    p.add_argument("--accept-members", action="store_true",
                   help="record raft_peers as this data_dir's cluster after a deliberate "
                        "change of members (docs/CLUSTER.md)")
    p.add_argument("--join", action="store_true",
                   help="a new member: wait to be added (POST /api/cluster/members on "
                        "the leader) to the cluster raft_peers belong to, instead of "
                        "forming one with them (docs/CLUSTER.md)")
    p.add_argument("--restore-from", metavar="DIR",
                   help="recovery: start from a backup of a data_dir (copied into an "
                        "empty data_dir) as a new cluster of one with a new member id, "
                        "never as the member it was (docs/CLUSTER.md)")
    p.add_argument("--skip-entry", type=int, action="append", default=[], metavar="INDEX",
                   help="recovery: do not apply this log entry on replay (README, "
                        "Recovery); a snapshot taken at once makes it permanent")
    args = p.parse_args(argv)
    try:
        cfg = config.load(args.config)
        tls_contexts = tls.contexts(cfg)          # the files named by the settings
    except config.ConfigError as e:
        print(str(e), file=sys.stderr)
        return EXIT_CONFIG
    unknown_env = config.unknown_env_warning(os.environ)
    if args.check_config:
        if unknown_env:
            print(unknown_env, file=sys.stderr)
        print(json.dumps(cfg.masked(), indent=2))
        return 0
    setup_logging(cfg)
    if unknown_env:
        log.warning("%s", unknown_env)    # one line; README, Deployment
    if cfg.raft_peers and cfg.cookie == config.Config.cookie:
        # The default is public: anyone who can send to raft_port could forge votes
        # and entries, that is, take the cluster over.
        log.critical("config: cookie: still the default %r with raft_peers set; give "
                     "every member the same secret of your own (docs/CLUSTER.md)",
                     config.Config.cookie)
        return EXIT_CONFIG
    if args.join and not cfg.raft_peers:
        log.critical("config: raft_peers: --join needs the members to find the cluster "
                     "through (docs/CLUSTER.md)")
        return EXIT_CONFIG
    if args.restore_from:
        try:
            restore_backup(args.restore_from, cfg.data_dir)
        except StartupError as e:
            log.critical("%s", e)
            return e.code
    if cfg.witness and not cfg.raft_peers:
        log.critical("config: witness: a witness needs raft_peers (it is the third vote "
                     "of a cluster; alone it would lead with no broker)")
        return EXIT_CONFIG
    try:
        node = Node(cfg, skip_entries=args.skip_entry,
                    membership="force-new-cluster"
                    if args.force_new_cluster or args.restore_from
                    else "accept" if args.accept_members
                    else "join" if args.join else "",
                    tls_contexts=tls_contexts)
        main_greenlet = greenlet.getcurrent()
        for sig in _stop_signals():
            gevent.signal_handler(sig, functools.partial(_stop_on_signal, node, sig,
                                                         main_greenlet))
        node.start()
    except _StopDuringStart:
        # Nothing was served yet (every request got 503 starting); the log is where
        # the replay left it, as after any stop.
        log.info("start-up cut short by a stop signal node=%s", cfg.node_name)
        node.stop()
        return 0
    except (LogCorrupt, ReplayFailed) as e:
        log.critical("refusing to start: %s", e)     # one line; README, Recovery
        return EXIT_DATA
    except StartupError as e:
        log.critical("cannot start: %s", e)
        return e.code
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        log.critical("cannot use data_dir=%s%s: %s", cfg.data_dir, where, e.strerror or e)
        return EXIT_DATA
    node.stopped.wait()
    return 0


def main() -> None:
    sys.exit(run())
