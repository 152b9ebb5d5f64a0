#!/usr/bin/env bash
# `make demo-load`: with `make demo` running, turn on the built-in autoscaler for the
# quick start, serve an SGLang simulator at each leader, send a burst of requests and
# print the queue and the group count each second as it scales up and back down.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ -n "$(operator_pid)" ] || die "the demo is not running: start it with make demo"
cd "$REPO_ROOT"  # the simulators are modules of tests/support
exec "$REPO_ROOT/.venv/bin/python" -m tests.support.demo_load \
  --kubectl "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"
