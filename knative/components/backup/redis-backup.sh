#!/bin/sh
# Back up a running Redis: a fresh RDB snapshot (BGSAVE) and its append-only file, copied from the
# server's data directory into BACKUP_DIR/<UTC time>/ with SHA256SUMS and backup.info, then old
# backups pruned. `offsite` copies the finished backups to an rclone remote and prunes it.
#
#   redis-backup.sh [snapshot]    needs REDIS_DATA_DIR (read access) and BACKUP_DIR
#   redis-backup.sh offsite       needs BACKUP_DIR and BACKUP_REMOTE (e.g. offsite:bucket/prefix)
#
# POSIX sh: it runs in the Redis image (busybox) of the backup CronJob, in the rclone image for
# `offsite`, and on a workstation (dash/bash). One run at a time per BACKUP_DIR (the CronJob's
# concurrencyPolicy is Forbid): a run removes unfinished directories it finds.
#
# Environment (defaults in brackets):
#   REDIS_HOST [127.0.0.1]  REDIS_PORT [6379]  REDISCLI_AUTH  password, read by redis-cli itself
#   REDIS_CLI [redis-cli]   REDIS_DATA_DIR     the server's `dir`, as mounted here
#   BACKUP_DIR              where backups go    BGSAVE_TIMEOUT_SECONDS [600]
#   BACKUP_RETENTION_HOURS [48]  BACKUP_KEEP_MIN [3]  (older backups go, but never the newest N)
#   BACKUP_REMOTE  RCLONE [rclone]  BACKUP_OFFSITE_RETENTION_HOURS [168]   (offsite only)
set -eu

REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
BGSAVE_TIMEOUT_SECONDS="${BGSAVE_TIMEOUT_SECONDS:-600}"
BACKUP_RETENTION_HOURS="${BACKUP_RETENTION_HOURS:-48}"
BACKUP_KEEP_MIN="${BACKUP_KEEP_MIN:-3}"
BACKUP_OFFSITE_RETENTION_HOURS="${BACKUP_OFFSITE_RETENTION_HOURS:-168}"
RCLONE="${RCLONE:-rclone}"
# Finished backups are named like 20261127T031700Z; unfinished ones start with a dot.
SNAPSHOT_GLOB='[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z'

log() { printf '%s redis-backup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

need_number() {
  case "$2" in
    '' | *[!0-9]*) die "$1 must be a whole number, got '$2'" ;;
  esac
}

# redis-cli without the password on its command line (REDISCLI_AUTH) and without \r in replies.
rcli() { "$REDIS_CLI" -h "$REDIS_HOST" -p "$REDIS_PORT" --no-auth-warning "$@" | tr -d '\r'; }

# `CONFIG GET name` answers two lines, name then value; the value is empty for unknown names
# (appenddirname on Redis 6).
config_get() { rcli CONFIG GET "$1" | sed -n '2p'; }

info_field() { rcli INFO "$1" | sed -n "s/^$2://p"; }

# --- snapshot ------------------------------------------------------------------------------------

# Starts a BGSAVE that begins after this call and waits for it; fails unless it succeeded.
fresh_rdb() {
  lastsave="$(rcli LASTSAVE)"
  need_number LASTSAVE "$lastsave"
  # LASTSAVE has one-second resolution: start in a later second than the last save, so that a
  # changed LASTSAVE can only mean our save finished.
  while [ "$(rcli TIME | sed -n '1p')" -le "$lastsave" ]; do sleep 1; done
  waited=0
  while :; do
    # SCHEDULE: if an AOF rewrite is running, the save starts right after it instead of failing.
    reply="$(rcli BGSAVE SCHEDULE)"
    case "$reply" in
      *'Background saving started'* | *'Background saving scheduled'*) break ;;
      # A save that began before this run does not hold everything acknowledged until now.
      *'already in progress'*) ;;
      *) die "BGSAVE failed: $reply" ;;
    esac
    [ "$waited" -lt "$BGSAVE_TIMEOUT_SECONDS" ] || die "a running BGSAVE did not finish in time"
    sleep 1
    waited=$((waited + 1))
  done
  log "BGSAVE started ($reply); waiting for LASTSAVE to move past $lastsave"
  while :; do
    if [ "$(rcli LASTSAVE)" -gt "$lastsave" ] && [ "$(info_field persistence rdb_bgsave_in_progress)" = 0 ]; then
      break
    fi
    [ "$waited" -lt "$BGSAVE_TIMEOUT_SECONDS" ] || die "BGSAVE did not finish in ${BGSAVE_TIMEOUT_SECONDS}s"
    sleep 1
    waited=$((waited + 1))
  done
  status="$(info_field persistence rdb_last_bgsave_status)"
  [ "$status" = ok ] || die "BGSAVE finished with status '$status' (see the Redis log)"
}

wait_no_aof_rewrite() {
  waited=0
  while [ "$(info_field persistence aof_rewrite_in_progress)" != 0 ]; do
    [ "$waited" -lt "$BGSAVE_TIMEOUT_SECONDS" ] || die "an AOF rewrite did not finish in time"
    sleep 1
    waited=$((waited + 1))
  done
}

# Redis 7 keeps the AOF as a directory of parts listed by a manifest: copy the manifest, then the
# parts it names. A rewrite that finishes in between deletes parts; then start over.
copy_multipart_aof() {
  src="$REDIS_DATA_DIR/$1"
  dst="$2/$1"
  manifest="$3.manifest"
  for attempt in 1 2 3; do
    wait_no_aof_rewrite
    rm -rf "$dst"
    mkdir "$dst"
    cp "$src/$manifest" "$dst/$manifest" || die "no AOF manifest $src/$manifest"
    copied=yes
    # Manifest lines: file <name> seq <n> type <b|h|i>
    while read -r keyword part _; do
      [ "$keyword" = file ] || continue
      cp "$src/$part" "$dst/$part" 2>/dev/null || copied=no
    done <"$dst/$manifest"
    [ "$copied" = yes ] && return 0
    log "AOF parts changed while copying (a rewrite finished); attempt $attempt again"
  done
  die "could not copy a consistent AOF from $src"
}

# KiB used by a file or directory of the Redis data directory (0 when it is missing).
size_kb() { (cd "$REDIS_DATA_DIR" && du -sk "$1" 2>/dev/null || echo 0) | awk '{ print $1 + 0 }'; }

# Everything in the backup, relative to it, one per line (names never contain blanks).
backup_files() { (cd "$1" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | sort); }

prune() {
  now="$(date +%s)"
  kept=0
  # Newest first: the names sort by time.
  for dir in $(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -name "$SNAPSHOT_GLOB" |
    sed 's|.*/||' | sort -r); do
    kept=$((kept + 1))
    [ "$kept" -gt "$BACKUP_KEEP_MIN" ] || continue
    created="$(sed -n 's/^created_epoch=//p' "$BACKUP_DIR/$dir/backup.info" 2>/dev/null || true)"
    case "$created" in '' | *[!0-9]*) created=0 ;; esac
    if [ $((now - created)) -gt $((BACKUP_RETENTION_HOURS * 3600)) ]; then
      log "removing $dir (older than ${BACKUP_RETENTION_HOURS}h)"
      rm -rf "${BACKUP_DIR:?}/$dir"
    fi
  done
}

snapshot() {
  : "${REDIS_DATA_DIR:?REDIS_DATA_DIR (the Redis data directory) is required}"
  : "${BACKUP_DIR:?BACKUP_DIR is required}"
  for n in BGSAVE_TIMEOUT_SECONDS BACKUP_RETENTION_HOURS BACKUP_KEEP_MIN; do
    eval "need_number $n \"\$$n\""
  done
  [ "$BACKUP_KEEP_MIN" -ge 1 ] || die "BACKUP_KEEP_MIN must be at least 1"
  [ -d "$REDIS_DATA_DIR" ] || die "REDIS_DATA_DIR $REDIS_DATA_DIR is not a directory"
  mkdir -p "$BACKUP_DIR"
  command -v "$REDIS_CLI" >/dev/null || die "no $REDIS_CLI (set REDIS_CLI)"
  [ "$(rcli PING)" = PONG ] || die "Redis at $REDIS_HOST:$REDIS_PORT does not answer PING"

  version="$(info_field server redis_version)"
  dbfilename="$(config_get dbfilename)"
  appendonly="$(config_get appendonly)"
  appendfilename="$(config_get appendfilename)"
  appenddirname="$(config_get appenddirname)"

  rm -rf "$BACKUP_DIR"/.incomplete-*
  fresh_rdb
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  work="$BACKUP_DIR/.incomplete-$stamp"
  mkdir "$work"

  # What will be copied (the data directory may hold more, e.g. pre-restore-* directories).
  needed_kb="$(size_kb "$dbfilename")"
  if [ "$appendonly" = yes ]; then
    needed_kb=$((needed_kb + $(size_kb "${appenddirname:-$appendfilename}")))
  fi
  free_kb="$(df -Pk "$BACKUP_DIR" | awk 'NR == 2 { print $4 }')"
  [ "$free_kb" -gt $((needed_kb + needed_kb / 10)) ] ||
    die "$BACKUP_DIR has ${free_kb} KiB free, a backup needs about ${needed_kb} KiB: prune or grow it"

  cp "$REDIS_DATA_DIR/$dbfilename" "$work/$dbfilename" || die "no $dbfilename in $REDIS_DATA_DIR"
  layout=none
  if [ "$appendonly" = yes ]; then
    if [ -n "$appenddirname" ]; then
      layout=multipart
      copy_multipart_aof "$appenddirname" "$work" "$appendfilename"
    else
      layout=single
      wait_no_aof_rewrite
      cp "$REDIS_DATA_DIR/$appendfilename" "$work/$appendfilename" ||
        die "no $appendfilename in $REDIS_DATA_DIR"
    fi
  fi

  {
    echo "created_epoch=$(date +%s)"
    echo "created_utc=$stamp"
    echo "redis_version=$version"
    echo "lastsave=$(rcli LASTSAVE)"
    echo "dbsize=$(rcli DBSIZE)"
    echo "dbfilename=$dbfilename"
    echo "aof_layout=$layout"
    echo "appendfilename=$appendfilename"
    echo "appenddirname=$appenddirname"
  } >"$work/backup.info"
  (cd "$work" && backup_files . | while read -r f; do sha256sum "$f"; done) >"$work/SHA256SUMS"
  sync
  # Published whole or not at all: a rename within one file system.
  mv "$work" "$BACKUP_DIR/$stamp"
  log "backup $BACKUP_DIR/$stamp done: Redis $version, $(rcli DBSIZE) keys, AOF $layout"
  prune
}

# --- offsite -------------------------------------------------------------------------------------

offsite() {
  : "${BACKUP_DIR:?BACKUP_DIR is required}"
  : "${BACKUP_REMOTE:?BACKUP_REMOTE (an rclone remote path, e.g. offsite:bucket/detection-api) is required}"
  command -v "$RCLONE" >/dev/null || die "no $RCLONE (set RCLONE)"
  need_number BACKUP_OFFSITE_RETENTION_HOURS "$BACKUP_OFFSITE_RETENTION_HOURS"
  # Finished backups only; copy skips what the remote already has (same size and time).
  "$RCLONE" copy "$BACKUP_DIR" "$BACKUP_REMOTE" --include "/$SNAPSHOT_GLOB/**"
  "$RCLONE" delete "$BACKUP_REMOTE" --min-age "${BACKUP_OFFSITE_RETENTION_HOURS}h"
  "$RCLONE" rmdirs "$BACKUP_REMOTE" --leave-root
  log "copied the backups of $BACKUP_DIR to $BACKUP_REMOTE"
}

case "${1:-snapshot}" in
  snapshot) snapshot ;;
  offsite) offsite ;;
  *) die "usage: $0 [snapshot|offsite]" ;;
esac
