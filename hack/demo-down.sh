#!/usr/bin/env bash
# `make demo-down`: stop the demo's operator process and the local cluster.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pid="$(operator_pid)"
if [ -n "$pid" ]; then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  log "operator stopped (pid $pid)"
fi
rm -f "$PID_DIR/operator.pid"
for helper in process-kubelet:tests.support.process_kubelet weights-hub:tests.support.weights; do
  pid="$(pid_running "${helper%%:*}" "${helper#*:}")"
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    log "${helper%%:*} stopped (pid $pid)"
  fi
  rm -f "$PID_DIR/${helper%%:*}.pid"
done
"$HACK_DIR/cluster-down.sh"
