#!/usr/bin/env bash
# `make interop`: install (once) and run OpenTAKServer in private namespaces, then run COMMAND
# (default: the tests under tests/interop) inside the same namespaces, so that the tests, the
# product and OpenTAKServer all talk over that namespace's own loopback. Everything started is
# stopped by PID when COMMAND ends (in-namespace.sh), and the kernel ends whatever is left when
# the namespace's first process exits. Needs root.
#
#   scripts/interop/run.sh                       # the interop tests (INTEROP_TESTS, PYTEST_ARGS)
#   scripts/interop/run.sh bash                  # a shell with OpenTAKServer up (see env OTS_*)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
"$REPO/scripts/interop/install.sh"
if [ "$#" -eq 0 ]; then
  # shellcheck disable=SC2086 # lists of options and paths
  set -- "$REPO/.venv/bin/python" -m pytest -p no:cacheprovider -s ${PYTEST_ARGS:-} \
    ${INTEROP_TESTS:-tests/interop}
fi
# --kill-child: if unshare dies, the namespace's first process gets SIGKILL (and with it every
# process in the namespace). unshare itself ignores SIGTERM and SIGINT, so this script passes
# them on to that first process (in-namespace.sh), which stops the services by PID.
unshare --net --pid --mount --fork --kill-child --mount-proc \
  "$REPO/scripts/interop/in-namespace.sh" "$@" <&0 &
UNSHARE_PID=$!
# shellcheck disable=SC2317 # called by the trap
forward() {
  local first
  first="$(pgrep -P "$UNSHARE_PID" || true)"
  if [ -n "$first" ]; then kill -TERM "$first" 2>/dev/null || true; fi
}
trap forward TERM INT HUP
status=0
while true; do
  wait "$UNSHARE_PID" && status=0 || status=$?
  kill -0 "$UNSHARE_PID" 2>/dev/null || break  # wait also returns when a signal arrives
done
exit "$status"
