#!/usr/bin/env bash
# Installs what `make interop` needs to run OpenTAKServer here, once (idempotent; each step is
# cached by a stamp file and bounded by `timeout`).
#
# OpenTAKServer 1.7.14 uses Python 3.12 syntax (PEP 701 f-strings) while this machine's Debian
# (bookworm) stops at Python 3.11, so OpenTAKServer runs from a Debian trixie root file system
# made by debootstrap from the same Debian archive the host uses: python3.13, PostgreSQL 17 with
# PostGIS 3 and RabbitMQ come from trixie's packages, OpenTAKServer from PyPI into a virtualenv
# inside it. Nothing is installed on the host but debootstrap. Needs root (debootstrap, chroot).
#
# Environment: INTEROP_DIR (default <repo>/.interop), OTS_VERSION (default 1.7.14),
# DEBIAN_SUITE (default trixie), DEBIAN_MIRROR (default: the host's own Debian archive, read from
# apt's configuration).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
INTEROP_DIR="${INTEROP_DIR:-$REPO/.interop}"
ROOTFS="$INTEROP_DIR/rootfs"
OTS_VERSION="${OTS_VERSION:-1.7.14}"
DEBIAN_SUITE="${DEBIAN_SUITE:-trixie}"
# Packages of the root file system: the interpreter, a compiler for the one dependency without a
# cp313 wheel (unishox2-py3), and the two servers OpenTAKServer needs.
BASE_PACKAGES="python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates,openssl,procps"
SERVER_PACKAGES="postgresql-17-postgis-3 rabbitmq-server"
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  LANG=C.UTF-8 LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive)

log() { printf 'interop-install: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and namespaces)"

host_mirror() {
  local codename
  codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)"
  # shellcheck disable=SC2016 # apt's own $(FIELD) placeholders
  apt-get indextargets --format '$(REPO_URI) $(CODENAME)' 2>/dev/null \
    | awk -v c="$codename" '$2 == c { print $1; exit }'
}

# in_rootfs SECONDS COMMAND...: runs COMMAND inside the root file system with /proc and /dev, in
# a private mount namespace (the mounts vanish with it) and a clean environment, for at most
# SECONDS.
in_rootfs() {
  local seconds="$1"; shift
  # shellcheck disable=SC2016 # expanded by the inner shell
  timeout "$seconds" unshare --mount --fork --kill-child sh -c '
    root="$1"; shift
    mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" && exec chroot "$root" "$@"
  ' in_rootfs "$ROOTFS" "${CLEAN_ENV[@]}" "$@"
}

mkdir -p "$INTEROP_DIR"

if [ ! -f "$ROOTFS/.stamp-base" ]; then
  command -v debootstrap >/dev/null || {
    log "installing debootstrap (apt-get)"
    timeout 300 apt-get install -y -qq debootstrap >/dev/null \
      || { timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq debootstrap >/dev/null; }
  }
  mirror="${DEBIAN_MIRROR:-$(host_mirror)}"
  [ -n "$mirror" ] || die "no Debian archive found in apt's configuration: set DEBIAN_MIRROR"
  rm -rf "$ROOTFS"
  log "debootstrap $DEBIAN_SUITE into $ROOTFS (about 1 minute)"
  timeout 900 debootstrap --variant=minbase --include="$BASE_PACKAGES" \
    "$DEBIAN_SUITE" "$ROOTFS" "$mirror" >"$INTEROP_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed: see $INTEROP_DIR/debootstrap.log"
  touch "$ROOTFS/.stamp-base"
fi

if [ ! -f "$ROOTFS/.stamp-servers" ]; then
  # Packages must not start their services at install time: we start them ourselves.
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  log "installing $SERVER_PACKAGES into the root file system"
  # shellcheck disable=SC2086 # a list of package names
  in_rootfs 900 apt-get install -y -q --no-install-recommends $SERVER_PACKAGES \
    >"$INTEROP_DIR/apt.log" 2>&1 || die "apt-get failed: see $INTEROP_DIR/apt.log"
  touch "$ROOTFS/.stamp-servers"
fi

if [ ! -f "$ROOTFS/.stamp-ots-$OTS_VERSION" ]; then
  # Trust what the host trusts (a TLS-inspecting egress proxy adds its CA to the host's bundle).
  cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  log "installing OpenTAKServer $OTS_VERSION from PyPI into /opt/ots (about 1 minute)"
  rm -rf "$ROOTFS/opt/ots"
  in_rootfs 900 sh -c "python3 -m venv /opt/ots && /opt/ots/bin/pip install -q \
    --disable-pip-version-check opentakserver==$OTS_VERSION" >"$INTEROP_DIR/pip.log" 2>&1 \
    || die "pip failed: see $INTEROP_DIR/pip.log"
  rm -f "$ROOTFS"/.stamp-ots-*
  touch "$ROOTFS/.stamp-ots-$OTS_VERSION"
fi

log "ready: $(chroot "$ROOTFS" python3 --version), OpenTAKServer $OTS_VERSION in $ROOTFS"
