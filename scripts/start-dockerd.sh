#!/usr/bin/env bash
# Start dockerd the way kernelhub's machines need it (docs/architecture.md, The embedded stack
# and Docker): no default bridge (it would take 172.17/16), no iptables rules, overlay2 under
# KH_DOCKER_ROOT. Does nothing when a daemon already answers; waits until the new one does.
set -euo pipefail
ROOT=${KH_DOCKER_ROOT:-/var/lib/kh-docker}
LOG=${KH_DOCKER_LOG:-/tmp/kh-dockerd.log}

if docker info >/dev/null 2>&1; then
  echo "start-dockerd: a daemon answers"
  exit 0
fi
command -v dockerd >/dev/null || { echo "start-dockerd: dockerd is not installed" >&2; exit 1; }
mkdir -p "$ROOT"
nohup dockerd --bridge=none --iptables=false --ip6tables=false --storage-driver=overlay2 \
  --data-root "$ROOT" --host unix:///var/run/docker.sock >"$LOG" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "start-dockerd: up (log: $LOG)"
    exit 0
  fi
  sleep 0.5
done
echo "start-dockerd: dockerd did not answer within 30 s; its log:" >&2
tail -20 "$LOG" >&2
exit 1
