#!/usr/bin/env bash
# dqorch's rebuild script. Safe to run again and again: it only ever stops processes it
# started itself (pid files under ./var), never by name.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=${DQ_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
CONFIG=${DQ_CONFIG:-$ROOT/config.yaml}
RUN_DIR=$ROOT/var/run
PID_FILE=$RUN_DIR/dqorch.pid
LOG_FILE=$RUN_DIR/dqorch.log

usage() {
  cat <<USAGE
usage: ./build-orchestrator.sh [-c CONFIG] COMMAND

  deps     create .venv and install dqorch with its test extras, at the versions
           constraints.txt pins (idempotent)
  broker   make sure RabbitMQ answers at the configured rabbitmq_host:rabbitmq_port;
           when that is loopback and nothing listens, start a private broker there
           (scripts/rabbitmq-local.sh; installs Debian's rabbitmq-server when root)
  run      deps + broker, then run the orchestrator in the foreground (Ctrl-C stops it;
           its pid is in var/run/dqorch.pid meanwhile)
  start    deps + broker, then run it in the background (pid in var/run/dqorch.pid,
           log in var/run/dqorch.log); waits until /health (metrics port) answers
           where the node listens (http_host; loopback for 0.0.0.0 and ::)
  stop     stop the orchestrator started by 'start' or 'run' (SIGTERM, then wait)
  status   say whether the orchestrator runs (started by 'start' or 'run', or
           answering where the config says) and show its health (dqctl status);
           exit 0 running, 3 stopped
  test     deps + a local broker on 127.0.0.1:\$DQ_TEST_RABBIT_PORT (default 5672), then
           the whole test suite; arguments go to pytest (test tests/unit -x). Tests
           that stop and start a broker use \$DQ_TEST_PRIVATE_RABBIT_PORT (default 5673)
  clean    stop what 'start' started, remove .venv, var/ and caches (not config.yaml)

CONFIG defaults to ./config.yaml (or \$DQ_CONFIG). DQ_* variables override its keys.
USAGE
}

die() { echo "build-orchestrator: $*" >&2; exit 1; }

deps() {
  command -v python3 >/dev/null || die "python3 is missing; install Python 3.11+"
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV" || die "cannot create $VENV (Debian: apt-get install python3-venv)"
  fi
  local stamp=$VENV/.dqorch-deps
  if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    "$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]" \
      || die "pip install failed (needs access to PyPI)"
    touch "$stamp"
  fi
}

# Prints "host port" of the broker the config points at.
broker_address() {
  "$PY" dqorch.py -c "$CONFIG" --check-config >/dev/null || exit 2
  "$PY" - "$CONFIG" <<'PY'
import sys
from dqorch import config
cfg = config.load(sys.argv[1])
print(cfg.rabbitmq_host, cfg.rabbitmq_port)
PY
}

reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

broker() {
  local host port
  read -r host port < <(broker_address)
  if reachable "$host" "$port"; then
    echo "build-orchestrator: RabbitMQ answers at $host:$port"
    return 0
  fi
  case "$host" in
    127.*|localhost|::1) RABBIT_PORT=$port scripts/rabbitmq-local.sh start ;;
    *) echo "build-orchestrator: warning: no RabbitMQ at $host:$port; the node will run" \
            "degraded and publish once it is reachable" >&2 ;;
  esac
}

# The pid file names a live dqorch.py (after a crash or a reboot it may name another
# process by now: that one is not ours).
running() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null || return 1
  [ ! -r "/proc/$pid/cmdline" ] || tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "dqorch\.py"
}

setting() {
  "$PY" -c 'import sys; from dqorch import config; print(getattr(config.load(sys.argv[1]), sys.argv[2]))' "$CONFIG" "$1"
}
http_port() { setting http_port; }
# Where this machine reaches the node: http_host, or loopback for 0.0.0.0 and ::.
http_addr() {
  "$PY" -c 'import sys; from dqorch import client, config; print(client.local_host(config.load(sys.argv[1]).http_host))' "$CONFIG"
}
# dqctl on the node the config describes (tables; the API's certificate is not
# checked: this is our own process on this machine).
ctl() { "$PY" -m dqorch.ctl -c "$CONFIG" --insecure "$@"; }
# GET /health on the metrics port, where the node listens (plain HTTP even when the
# API speaks HTTPS).
probe() { ctl --timeout 1 probe >/dev/null 2>&1; }

start() {
  deps; broker
  mkdir -p "$RUN_DIR"
  if running; then echo "build-orchestrator: already running (pid $(cat "$PID_FILE"))"; return 0; fi
  local port addr; port=$(http_port); addr=$(http_addr)
  reachable "$addr" "$port" && die "$addr:$port (http_host:http_port) is in use by another process"
  nohup "$PY" dqorch.py -c "$CONFIG" >>"$LOG_FILE" 2>&1 &
  echo $! > "$PID_FILE"
  for _ in $(seq 1 300); do
    if ! running; then tail -n 20 "$LOG_FILE" >&2; rm -f "$PID_FILE"; die "the orchestrator exited; log above"; fi
    if probe; then
      echo "build-orchestrator: running (pid $(cat "$PID_FILE"), $addr:$port, log $LOG_FILE)"
      return 0
    fi
    sleep 0.2
  done
  die "the orchestrator did not answer at $addr (metrics port /health) within 60 s; see $LOG_FILE"
}

stop() {
  if ! running; then rm -f "$PID_FILE"; echo "build-orchestrator: not running"; return 0; fi
  local pid; pid=$(cat "$PID_FILE")
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then die "pid $pid did not stop within 30 s; it is still running"; fi
  rm -f "$PID_FILE"
  echo "build-orchestrator: stopped (pid $pid)"
}

status() {
  if running; then
    echo "running (pid $(cat "$PID_FILE"))"
  elif probe; then
    echo "running (no pid file: not started by this script's start or run)"
  else
    echo "stopped"; return 3
  fi
  ctl --timeout 2 status || true      # exit 8 degraded, 7 unavailable: still running
}

run_tests() {
  deps
  scripts/prometheus-local.sh install    # promtool and prometheus for the metrics tests
  if ! command -v faketime >/dev/null; then   # a skewed clock for tests/integration/test_clock_skew.py
    if [ "$(id -u)" = 0 ]; then
      apt-get install -y -qq --no-install-recommends faketime >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends faketime >/dev/null; } \
        || echo "build-orchestrator: warning: apt-get install faketime failed; the clock skew tests will be skipped" >&2
    else
      echo "build-orchestrator: warning: no faketime (apt-get install faketime); the clock skew tests will be skipped" >&2
    fi
  fi
  scripts/browser-local.sh || echo "build-orchestrator: warning: no Chromium; the console's" \
    "browser tests will be skipped" >&2
  RABBIT_PORT=${DQ_TEST_RABBIT_PORT:-5672} scripts/rabbitmq-local.sh start
  "$PY" -m pytest -q "$@"
}

clean() {
  stop || true
  rm -rf "$VENV" "$ROOT/var" .pytest_cache .hypothesis build dist ./*.egg-info
  find . -name __pycache__ -type d -prune -exec rm -rf {} +
  echo "build-orchestrator: clean"
}

while [ $# -gt 0 ]; do
  case "$1" in
    -c|--config) CONFIG=$(realpath "$2"); shift 2 ;;
    -h|--help|help) usage; exit 0 ;;
    *) break ;;
  esac
done
cmd=${1:-}; [ $# -gt 0 ] && shift
case "$cmd" in
  deps) deps ;;
  broker) deps; broker ;;
  run) deps; broker; mkdir -p "$RUN_DIR"
       running && die "already running (pid $(cat "$PID_FILE")); './build-orchestrator.sh stop' first"
       echo $$ > "$PID_FILE"       # exec keeps this pid: status and stop know the node
       exec "$PY" dqorch.py -c "$CONFIG" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  test) run_tests "$@" ;;
  clean) clean ;;
  "") usage; exit 64 ;;
  *) echo "build-orchestrator: unknown command '$cmd'" >&2; usage >&2; exit 64 ;;
esac
