#!/usr/bin/env bash
# Runs as process 1 of a private network, PID and mount namespace (see run.sh): starts
# PostgreSQL+PostGIS, RabbitMQ and OpenTAKServer (API, cot_parser, CoT TCP and TLS handlers) from
# the root file system made by install.sh, provisions users and client certificates, runs the
# given command (the tests) with the connection details in its environment, then stops every
# service by PID. The namespace has its own loopback and no other interface: every server
# listens on 127.0.0.1 there, on its default port, and nothing can reach out or in. When this
# script exits the kernel kills whatever is left in the namespace.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
INTEROP_DIR="${INTEROP_DIR:-$REPO/.interop}"
ROOTFS="$INTEROP_DIR/rootfs"
RUN="/srv/ots"                # runtime data inside the root file system (made anew each run)
HOST_RUN="$ROOTFS$RUN"
LOGS="$HOST_RUN/logs"
# Users with a client certificate (CN = user name) issued by OpenTAKServer's own CA.
OTS_USERS="${OTS_USERS:-forwarder subscriber sender reader}"
secret() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
DB_PASSWORD="$(secret)"
OTS_ADMIN_PASSWORD="$(secret)"
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  LANG=C.UTF-8 LC_ALL=C.UTF-8)
OTS_ENV=("${CLEAN_ENV[@]}" HOME="$RUN" OTS_DATA_FOLDER="$RUN/data"
  SQLALCHEMY_DATABASE_URI="postgresql+psycopg://ots:$DB_PASSWORD@127.0.0.1/ots"
  OTS_STREAMING_INTERFACE=127.0.0.1 OTS_LISTENER_ADDRESS=127.0.0.1 OTS_MEDIAMTX_ENABLE=False)
RABBIT_ENV=("${CLEAN_ENV[@]}" HOME="$RUN/rabbit" RABBITMQ_NODENAME=rabbit@localhost
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1
  RABBITMQ_MNESIA_BASE="$RUN/rabbit/mnesia" RABBITMQ_LOG_BASE="$RUN/rabbit/log"
  RABBITMQ_PID_FILE="$RUN/rabbit/pid"
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")

declare -a PIDS=() NAMES=()
COMMAND_PID=""

log() { printf 'interop: %s\n' "$*" >&2; }

# start NAME COMMAND...: runs COMMAND in the root file system, output to $LOGS/NAME.log.
start() {
  local name="$1"; shift
  chroot "$ROOTFS" "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!"); NAMES+=("$name")
  log "started $name (pid $!)"
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND every 0.5 s until it succeeds.
wait_for() {
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$what not ready after ${seconds}s; log tails:"
      tail -n 20 "$LOGS"/*.log "$HOST_RUN"/data/logs/*.log 2>/dev/null >&2 || true
      return 1
    fi
    sleep 0.5
  done
  log "$what ready"
}

# shellcheck disable=SC2317 # called through wait_for
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# shellcheck disable=SC2317 # called by the EXIT trap
stop_all() {
  local i pid
  if [ -n "$COMMAND_PID" ]; then kill -TERM "$COMMAND_PID" 2>/dev/null || true; fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid="${PIDS[i]}"
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      log "${NAMES[i]} (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    log "stopped ${NAMES[i]} (pid $pid)"
  done
  PIDS=(); NAMES=()
}
trap stop_all EXIT
trap 'exit 143' TERM INT HUP

ip link set lo up
mount -t proc proc "$ROOTFS/proc"
mount --rbind /dev "$ROOTFS/dev"
mount -t tmpfs -o size=256m tmpfs "$ROOTFS/dev/shm"
mkdir -p "$ROOTFS/interop"
mount --bind -o ro "$REPO/scripts/interop" "$ROOTFS/interop"

rm -rf "$HOST_RUN"
mkdir -p "$HOST_RUN"/{pg,pgsock,rabbit,data} "$LOGS"
chroot "$ROOTFS" chown postgres:postgres "$RUN/pg" "$RUN/pgsock"
chroot "$ROOTFS" chown rabbitmq:rabbitmq "$RUN/rabbit"

# --- PostgreSQL with PostGIS -------------------------------------------------------------------
PG_BIN=$(chroot "$ROOTFS" sh -c 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1')
chroot "$ROOTFS" "${CLEAN_ENV[@]}" setpriv --reuid=postgres --regid=postgres --clear-groups \
  "$PG_BIN/initdb" -D "$RUN/pg" -U postgres --auth=trust >"$LOGS/initdb.log" 2>&1
start postgres "${CLEAN_ENV[@]}" setpriv --reuid=postgres --regid=postgres --clear-groups \
  "$PG_BIN/postgres" -D "$RUN/pg" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories="$RUN/pgsock" -c fsync=off
wait_for PostgreSQL 60 chroot "$ROOTFS" "${CLEAN_ENV[@]}" pg_isready -h 127.0.0.1 -q
psql() { chroot "$ROOTFS" "${CLEAN_ENV[@]}" psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q "$@"; }
psql -c "CREATE USER ots PASSWORD '$DB_PASSWORD'" -c "CREATE DATABASE ots OWNER ots"
psql -d ots -c "CREATE EXTENSION postgis"

# --- RabbitMQ ----------------------------------------------------------------------------------
start rabbitmq "${RABBIT_ENV[@]}" setpriv --reuid=rabbitmq --regid=rabbitmq --clear-groups \
  /usr/lib/rabbitmq/bin/rabbitmq-server
wait_for RabbitMQ 120 listening 5672

# --- OpenTAKServer -----------------------------------------------------------------------------
# The API process migrates the database, creates the CA and the server certificate and declares
# the exchanges: everything else starts after it answers.
start opentakserver "${OTS_ENV[@]}" /opt/ots/bin/opentakserver
wait_for "OpenTAKServer API" 180 listening 8081
# shellcheck disable=SC2086 # a list of user names
chroot "$ROOTFS" "${OTS_ENV[@]}" OTS_ADMIN_PASSWORD="$OTS_ADMIN_PASSWORD" \
  /opt/ots/bin/python /interop/provision.py $OTS_USERS \
  >"$LOGS/provision.log" 2>&1 || { cat "$LOGS/provision.log" >&2; exit 1; }
start cot_parser "${OTS_ENV[@]}" /opt/ots/bin/cot_parser
start eud_handler_tcp "${OTS_ENV[@]}" /opt/ots/bin/eud_handler
start eud_handler_ssl "${OTS_ENV[@]}" /opt/ots/bin/eud_handler --ssl
wait_for "CoT TCP 8088" 60 listening 8088
wait_for "CoT TLS 8089" 60 listening 8089

CA_DIR="$HOST_RUN/data/ca"
export OTS_INTEROP=1
export OTS_TCP_URL=tcp://127.0.0.1:8088
export OTS_TLS_URL=tls://127.0.0.1:8089
export OTS_API_URL=http://127.0.0.1:8081 OTS_ADMIN_USER=administrator OTS_ADMIN_PASSWORD
export OTS_TLS_CA="$CA_DIR/ca.pem"
export OTS_TLS_SERVER_NAME=opentakserver
export OTS_CERT_DIR="$CA_DIR/certs"   # <user>/<user>.pem and <user>/<user>.nopass.key
export OTS_USERS OTS_LOG_DIR="$LOGS" OTS_DATA_LOG_DIR="$HOST_RUN/data/logs"

log "OpenTAKServer is up; running: $*"
# In the background, so that a SIGTERM reaches the trap (and stop_all) at once.
"$@" <&0 &
COMMAND_PID=$!
set +e
wait "$COMMAND_PID"
status=$?
set -e
COMMAND_PID=""
exit "$status"
