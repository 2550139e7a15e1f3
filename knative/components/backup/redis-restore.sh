#!/bin/sh
# Restore a backup made by redis-backup.sh into the data directory of a Redis that is NOT running:
# checks SHA256SUMS, moves what the directory holds aside (with --force), copies the RDB and the
# append-only file. Start Redis on that directory afterwards, with its usual options.
#
#   redis-restore.sh [--force] [--from-rdb] BACKUP TARGET_DATA_DIR
#
#   BACKUP      a backup directory, or DIR/latest for the newest finished backup in DIR
#   --force     TARGET holds Redis files: move them into TARGET/pre-restore-<time>/ first
#   --from-rdb  use only the RDB snapshot (when the backup has no AOF, or its AOF is damaged):
#               a temporary redis-server (REDIS_SERVER [redis-server]) loads it with
#               appendonly off, writes a fresh AOF from it, and stops. Needed because a Redis
#               started with appendonly yes ignores an RDB without an AOF and starts empty.
#
# POSIX sh (runs in the Redis image of the restore Job, and on a workstation).
set -eu

REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
CONVERT_TIMEOUT_SECONDS="${CONVERT_TIMEOUT_SECONDS:-600}"

log() { printf '%s redis-restore: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

force=no
from_rdb=no
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=yes ;;
    --from-rdb) from_rdb=yes ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
  shift
done
[ $# -eq 2 ] || die "usage: $0 [--force] [--from-rdb] BACKUP TARGET_DATA_DIR"
backup="$1"
target="$2"

if [ "$(basename "$backup")" = latest ] && [ ! -e "$backup" ]; then
  parent="$(dirname "$backup")"
  newest="$(find "$parent" -mindepth 1 -maxdepth 1 -type d \
    -name '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z' |
    sort | tail -n 1)"
  [ -n "$newest" ] || die "no finished backup in $parent"
  backup="$newest"
fi

[ -f "$backup/backup.info" ] || die "$backup is not a backup (no backup.info)"
info() { sed -n "s/^$1=//p" "$backup/backup.info"; }
dbfilename="$(info dbfilename)"
layout="$(info aof_layout)"
appendfilename="$(info appendfilename)"
appenddirname="$(info appenddirname)"
[ -n "$dbfilename" ] || die "backup.info names no dbfilename"

(cd "$backup" && sha256sum -c SHA256SUMS >/dev/null 2>&1) ||
  die "$backup fails its checksums (SHA256SUMS): pick another backup"
log "backup $backup verified: $(info dbsize) keys from Redis $(info redis_version), $(info created_utc)"

if [ "$from_rdb" = no ] && [ "$layout" = none ]; then
  die "$backup has no AOF: restore it with --from-rdb"
fi

mkdir -p "$target"
# The names Redis would read in TARGET; anything else there is left alone.
present=""
for name in "$dbfilename" "$appendfilename" "$appenddirname"; do
  [ -n "$name" ] && [ -e "$target/$name" ] && present="$present $name"
done
if [ -n "$present" ]; then
  [ "$force" = yes ] || die "$target already holds${present}: stop Redis and use --force to move them aside"
  aside="$target/pre-restore-$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir "$aside"
  for name in $present; do mv "$target/$name" "$aside/$name"; done
  log "moved${present} to $aside"
fi

cp "$backup/$dbfilename" "$target/$dbfilename"
if [ "$from_rdb" = no ]; then
  if [ "$layout" = multipart ]; then
    cp -R "$backup/$appenddirname" "$target/$appenddirname"
  else
    cp "$backup/$appendfilename" "$target/$appendfilename"
  fi
  sync
  log "restored RDB and AOF ($layout) into $target"
  exit 0
fi

for tool in "$REDIS_SERVER" "$REDIS_CLI"; do
  command -v "$tool" >/dev/null || die "--from-rdb needs $tool (set REDIS_SERVER / REDIS_CLI)"
done
# --from-rdb: load the RDB with appendonly off (so Redis reads it), then switch appendonly on,
# which writes the whole dataset as a new AOF; stop once that rewrite is done. Only a unix
# socket: nothing can write to this temporary server meanwhile.
socket="$target/.restore-redis.sock"
set -- --dir "$target" --dbfilename "$dbfilename" --appendonly no --port 0 \
  --unixsocket "$socket" --unixsocketperm 700 --save "" --daemonize no \
  --appendfilename "${appendfilename:-appendonly.aof}"
[ -z "$appenddirname" ] || set -- "$@" --appenddirname "$appenddirname"
"$REDIS_SERVER" "$@" >"$target/.restore-redis.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; rm -f "$socket"' EXIT
cli() { "$REDIS_CLI" -s "$socket" "$@" | tr -d '\r'; }

waited=0
until [ "$(cli PING 2>/dev/null || true)" = PONG ]; do
  kill -0 "$server_pid" 2>/dev/null || die "redis-server exited: $(tail -n 5 "$target/.restore-redis.log")"
  [ "$waited" -lt "$CONVERT_TIMEOUT_SECONDS" ] || die "redis-server did not load the RDB in time"
  sleep 1
  waited=$((waited + 1))
done
keys="$(cli DBSIZE)"
[ "$(cli CONFIG SET appendonly yes)" = OK ] || die "CONFIG SET appendonly yes failed"
field() { cli INFO persistence | sed -n "s/^$1://p"; }
until [ "$(field aof_rewrite_in_progress)" = 0 ] && [ "$(field aof_rewrite_scheduled)" = 0 ] &&
  [ "$(field aof_enabled)" = 1 ]; do
  [ "$waited" -lt "$CONVERT_TIMEOUT_SECONDS" ] || die "the AOF rewrite did not finish in time"
  sleep 1
  waited=$((waited + 1))
done
status="$(field aof_last_bgrewrite_status)"
[ "$status" = ok ] || die "the AOF rewrite ended with status '$status'"
cli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
wait "$server_pid" || true
trap - EXIT
rm -f "$socket" "$target/.restore-redis.log"
sync
log "restored $keys keys from the RDB into $target and wrote a fresh AOF"
