#!/usr/bin/env bash
# Stops every process of the local cluster that cluster-up started (by pid,
# only if it still runs our binary) and removes the cluster state.
#   hack/cluster-down.sh [--keep-pki]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

keep_pki=0
[ "${1:-}" = "--keep-pki" ] && keep_pki=1

# The demo's operator talks to this cluster: it goes first.
if [ -n "$(operator_pid)" ]; then
  kill -TERM "$(operator_pid)" 2>/dev/null || true
fi

stopped=0
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  name="${COMPONENTS[$i]}"
  pid="$(component_pid "$name")"
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    stopped=$((stopped + 1))
  fi
  rm -f "$PID_DIR/$name.pid"
done

if [ "$keep_pki" = 1 ]; then
  rm -rf "$CLUSTER_DIR/etcd" "$CLUSTER_DIR/nodes.json" "$CLUSTER_DIR/topology" "$CLUSTER_DIR/node-disks" \
    "$CLUSTER_DIR/claims"
else
  rm -rf "$CLUSTER_DIR"
fi
log "cluster down ($stopped processes stopped)"
