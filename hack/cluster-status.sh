#!/usr/bin/env bash
# Prints which components of the local cluster run (name and pid).
#   hack/cluster-status.sh [--quiet]   --quiet prints only when all are up
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

up=0
lines=()
for c in "${COMPONENTS[@]}"; do
  pid="$(component_pid "$c")"
  if [ -n "$pid" ]; then up=$((up + 1)); lines+=("$c running (pid $pid)"); else lines+=("$c stopped"); fi
done
if [ "${1:-}" = "--quiet" ]; then
  [ "$up" = "${#COMPONENTS[@]}" ] && echo "up"
  exit 0
fi
printf '%s\n' "${lines[@]}"
