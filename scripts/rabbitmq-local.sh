#!/usr/bin/env bash
# Start, stop or query a private RabbitMQ on loopback, everything under one folder.
# Usage: scripts/rabbitmq-local.sh start|stop|status|install  (env: RABBIT_DIR, RABBIT_PORT)
# AMQPS listens too, on RABBIT_TLS_PORT (default RABBIT_PORT + 1000), with a certificate
# for 127.0.0.1/localhost signed by a throw-away CA made at the first start:
# $RABBIT_DIR/tls/ca.pem is what a client trusts (rabbitmq_tls_ca_file).
# Uses the scripts in /usr/lib/rabbitmq/bin directly: the /usr/sbin wrappers switch user
# and cookie when run as root. Installs Debian's rabbitmq-server when root and missing.
set -euo pipefail
RABBIT_PORT=${RABBIT_PORT:-5672}
RABBIT_DIR=${RABBIT_DIR:-${TMPDIR:-/tmp}/dqorch-rabbit-$RABBIT_PORT}
RABBIT_TLS_PORT=${RABBIT_TLS_PORT:-$((RABBIT_PORT + 1000))}
BIN=/usr/lib/rabbitmq/bin
export HOME=$RABBIT_DIR
export RABBITMQ_NODENAME=${RABBITMQ_NODENAME:-rabbit$RABBIT_PORT@localhost}
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$RABBIT_PORT
export RABBITMQ_DIST_PORT=$((RABBIT_PORT + 20000))
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_MNESIA_BASE=$RABBIT_DIR/mnesia
export RABBITMQ_LOG_BASE=$RABBIT_DIR/log
export RABBITMQ_CONFIG_FILE=$RABBIT_DIR/rabbitmq
export RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins
export RABBITMQ_PID_FILE=$RABBIT_DIR/rabbit.pid
export ERL_CRASH_DUMP=$RABBIT_DIR/erl_crash.dump   # not in the caller's cwd

die() { echo "rabbitmq-local: $*" >&2; exit 1; }

install() {
  [ -x "$BIN/rabbitmq-server" ] && return 0
  [ "$(id -u)" = 0 ] || die "rabbitmq-server is not installed and we are not root; run: apt-get install -y rabbitmq-server"
  echo "rabbitmq-local: installing rabbitmq-server from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq rabbitmq-server >/dev/null \
    || die "apt-get install rabbitmq-server failed"
}

tls_files() {   # status 1 (and a warning) when there is no openssl to make them
  local d=$RABBIT_DIR/tls
  [ -s "$d/server.pem" ] && return 0
  if ! command -v openssl >/dev/null && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null 2>&1 || true
  fi
  if ! command -v openssl >/dev/null; then
    echo "rabbitmq-local: no openssl: AMQPS is not set up (only plain AMQP)" >&2
    return 1
  fi
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=dqorch-rabbit-local CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    >/dev/null 2>&1 || die "openssl could not make the test CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 \
    || die "openssl could not make the broker's key"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$d/ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/ext" -out "$d/server.pem" >/dev/null 2>&1 \
    || die "openssl could not sign the broker's certificate"
  chmod 600 "$d"/*.key
}

running() { [ -f "$RABBITMQ_PID_FILE" ] && kill -0 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null; }

start() {
  install
  if running; then echo "rabbitmq-local: already running on 127.0.0.1:$RABBIT_PORT"; return 0; fi
  if (exec 3<>/dev/tcp/127.0.0.1/"$RABBIT_PORT") 2>/dev/null; then
    die "port $RABBIT_PORT is in use by another process"
  fi
  mkdir -p "$RABBIT_DIR/mnesia" "$RABBIT_DIR/log"
  echo '[].' > "$RABBITMQ_ENABLED_PLUGINS_FILE"
  cat > "$RABBITMQ_CONFIG_FILE.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$RABBIT_PORT
loopback_users = none
CONF
  if tls_files; then
    cat >> "$RABBITMQ_CONFIG_FILE.conf" <<CONF
listeners.ssl.default = 127.0.0.1:$RABBIT_TLS_PORT
ssl_options.cacertfile = $RABBIT_DIR/tls/ca.pem
ssl_options.certfile = $RABBIT_DIR/tls/server.pem
ssl_options.keyfile = $RABBIT_DIR/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
  fi
  "$BIN/rabbitmq-server" -detached >"$RABBIT_DIR/start.out" 2>&1 || true
  "$BIN/rabbitmqctl" wait --timeout 90 "$RABBITMQ_PID_FILE" >/dev/null 2>&1 \
    || die "broker did not start; see $RABBIT_DIR/log"
  echo "rabbitmq-local: running on 127.0.0.1:$RABBIT_PORT, AMQPS on $RABBIT_TLS_PORT (data in $RABBIT_DIR)"
}

stop() {
  if running; then "$BIN/rabbitmqctl" stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true; fi
  rm -f "$RABBITMQ_PID_FILE"
  echo "rabbitmq-local: stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo running; else echo stopped; exit 3; fi ;;
  ctl) shift; exec "$BIN/rabbitmqctl" "$@" ;;
  *) echo "usage: $0 start|stop|status|install|ctl ARGS" >&2; exit 64 ;;
esac
