#!/usr/bin/env bash
# Start, stop or query a private Prometheus on loopback that scrapes local dqorch nodes
# and evaluates docs/prometheus/alerts.yml. Everything (config, TSDB, log, pid file)
# lives under one folder; stop only ever signals the pid in that folder's pid file.
#
# Usage: scripts/prometheus-local.sh start|stop|status|install
# Environment:
#   PROM_PORT      port of Prometheus' UI and API on 127.0.0.1        (default 9090)
#   PROM_DIR       folder for config, data, log, pid          (default $TMPDIR/dqorch-prometheus-$PROM_PORT)
#   PROM_TARGETS   dqorch metrics addresses, comma-separated   (default 127.0.0.1:9101)
#   PROM_INTERVAL  scrape and rule evaluation interval         (default 5s)
#   PROM_RULES     rule file                                   (default docs/prometheus/alerts.yml)
# Prometheus comes from Debian's package (apt-get install -y prometheus); as root,
# start installs it when it is missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROM_PORT=${PROM_PORT:-9090}
PROM_DIR=${PROM_DIR:-${TMPDIR:-/tmp}/dqorch-prometheus-$PROM_PORT}
PROM_TARGETS=${PROM_TARGETS:-127.0.0.1:9101}
PROM_INTERVAL=${PROM_INTERVAL:-5s}
PROM_RULES=${PROM_RULES:-$ROOT/docs/prometheus/alerts.yml}
PID_FILE=$PROM_DIR/prometheus.pid
LOG_FILE=$PROM_DIR/prometheus.log
CONFIG=$PROM_DIR/prometheus.yml

die() { echo "prometheus-local: $*" >&2; exit 1; }

install() {
  command -v prometheus >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "prometheus is not installed and we are not root; run: apt-get install -y prometheus"
  echo "prometheus-local: installing prometheus from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null \
    && apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || die "apt-get install prometheus failed"
}

# True when the pid file names a live prometheus process (not a recycled pid).
running() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config.file=$CONFIG"
}

write_config() {
  local targets="" t
  IFS=',' read -ra list <<< "$PROM_TARGETS"
  for t in "${list[@]}"; do targets+="\"${t// /}\", "; done
  cat > "$CONFIG" <<YAML
# Written by scripts/prometheus-local.sh; rewritten on every start.
global:
  scrape_interval: $PROM_INTERVAL
  evaluation_interval: $PROM_INTERVAL
rule_files:
  - "$PROM_RULES"
scrape_configs:
  - job_name: dqorch
    static_configs:
      - targets: [${targets%, }]
YAML
}

ready() { curl -fs "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1; }

start() {
  install
  if running; then echo "prometheus-local: already running on http://127.0.0.1:$PROM_PORT"; return 0; fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PROM_PORT") 2>/dev/null; then
    die "port $PROM_PORT is in use by another process"
  fi
  mkdir -p "$PROM_DIR/data"
  write_config
  promtool check config "$CONFIG" >/dev/null || die "generated config $CONFIG is invalid"
  nohup prometheus --config.file="$CONFIG" --storage.tsdb.path="$PROM_DIR/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn \
    >>"$LOG_FILE" 2>&1 </dev/null &
  echo $! > "$PID_FILE"
  for _ in $(seq 1 150); do
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      tail -n 20 "$LOG_FILE" >&2; rm -f "$PID_FILE"; die "prometheus exited; log above"
    fi
    if ready; then
      echo "prometheus-local: running on http://127.0.0.1:$PROM_PORT (pid $(cat "$PID_FILE"), scraping $PROM_TARGETS, folder $PROM_DIR)"
      return 0
    fi
    sleep 0.2
  done
  stop >/dev/null
  die "prometheus did not become ready within 30 s; see $LOG_FILE"
}

stop() {
  if ! running; then rm -f "$PID_FILE"; echo "prometheus-local: not running"; return 0; fi
  local pid; pid=$(cat "$PID_FILE")
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "prometheus-local: pid $pid ignored SIGTERM for 30 s; sending SIGKILL" >&2
    kill -KILL "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -f "$PID_FILE"
  echo "prometheus-local: stopped (pid $pid)"
}

status() {
  if running; then
    echo "prometheus-local: running on http://127.0.0.1:$PROM_PORT (pid $(cat "$PID_FILE"))"
  else
    echo "prometheus-local: stopped"; return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  install) install ;;
  *) echo "usage: $0 start|stop|status|install" >&2; exit 64 ;;
esac
