#!/bin/sh
# The Redis restore script lives beside the backup CronJob that ships it into the cluster
# (kustomize only packs files from inside a component): knative/components/backup/redis-restore.sh.
# Usage and environment: see that file.
exec "$(dirname "$0")/../knative/components/backup/redis-restore.sh" "$@"
