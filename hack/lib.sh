#!/usr/bin/env bash
# Shared paths and helpers for the hack/ scripts; source it, do not run it.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"

# Binaries live outside the repo, keyed by a stamp of every pin.
STAMP="$(cat "$HACK_DIR/versions.env" | sha256sum | cut -c1-12)"
CACHE_ROOT="${MISTRAL_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mistral-operator}"
BIN_DIR="$CACHE_ROOT/bin-$STAMP"
BUILD_DIR="$CACHE_ROOT/build"
# Cluster state (certs, etcd data, logs, kubeconfig) also lives outside the repo.
CLUSTER_DIR="${MISTRAL_OPERATOR_CLUSTER_DIR:-$CACHE_ROOT/cluster}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# step NAME CMD...: run a step, print its duration, and name it on failure.
step() {
  local name="$1"; shift
  local start=$SECONDS
  log "step: $name"
  if ! "$@"; then
    die "step '$name' failed (see output above)"
  fi
  log "done: $name ($((SECONDS - start)) s)"
}

# Ports of the local cluster; all bind 127.0.0.1.
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-17379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-17380}"
APISERVER_PORT="${APISERVER_PORT:-17443}"
CONTROLLER_MANAGER_PORT="${CONTROLLER_MANAGER_PORT:-17257}"
SCHEDULER_PORT="${SCHEDULER_PORT:-17259}"
KWOK_PORT="${KWOK_PORT:-17247}"

PKI_DIR="$CLUSTER_DIR/pki"
PID_DIR="$CLUSTER_DIR/pids"
LOG_DIR="$CLUSTER_DIR/logs"
KUBECONFIG_ADMIN="$CLUSTER_DIR/admin.kubeconfig"
# The order processes start in; they stop in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x "$REPO_ROOT/.venv/bin/python" ]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# pid_running NAME COMMAND: the pid in pids/NAME.pid if that process still runs
# COMMAND (pids are reused, so the command line is checked), or nothing.
pid_running() {
  local f="$PID_DIR/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$2"; then
    echo "$pid"
  fi
}

# component_pid NAME: the pid of a running control-plane component we started.
component_pid() { pid_running "$1" "$BIN_DIR/$1 "; }

# wait_until SECONDS WHAT CMD...: poll CMD until it succeeds or the deadline passes.
wait_until() {
  local timeout="$1" what="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${timeout}s waiting for: $what"
      return 1
    fi
    sleep 0.5
  done
}

# operator_pid: the pid of the demo's operator process, if it runs.
operator_pid() { pid_running operator "mistral-operator run "; }
