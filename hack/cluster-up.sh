#!/usr/bin/env bash
# Starts the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) and kwok with simulated GPU nodes from hack/topologies/.
# Reuses a cluster that is already up and switches it to the asked topology.
#
#   hack/cluster-up.sh [TOPOLOGY]      TOPOLOGY: h200 (default), h100, b200
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOPOLOGY="${1:-${TOPOLOGY:-h200}}"
TOPOLOGY_FILE="$HACK_DIR/topologies/$TOPOLOGY.yaml"
[ -f "$TOPOLOGY_FILE" ] || die "unknown topology '$TOPOLOGY'; known: $(cd "$HACK_DIR/topologies" && ls ./*.yaml | sed 's|./||; s|.yaml||' | tr '\n' ' ')"

"$HACK_DIR/build-binaries.sh"
start=$SECONDS

# The kubelet port nodes report (status.daemonEndpoints): the API server sends pod log
# requests there, at the node's InternalIP; the process kubelet of the tests answers
# them (tests/support/process_kubelet.py).
KUBELET_PORT="${KUBELET_PORT:-17250}"

# Each component's flags.
ETCD_ARGS=(
  --name=local --data-dir="$CLUSTER_DIR/etcd"
  --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT"
  --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT"
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT"
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT"
  --initial-cluster="local=http://127.0.0.1:$ETCD_PEER_PORT"
  --listen-metrics-urls=""
  --unsafe-no-fsync=true --log-level=warn
)
# Kubelet connections (pod logs) go to a node's InternalIP: the simulated nodes'
# Hostname addresses are node names that do not resolve.
KUBE_APISERVER_ARGS=(
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT"
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT"
  --tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key"
  --client-ca-file="$PKI_DIR/ca.crt"
  --service-account-issuer=https://kubernetes.default.svc.cluster.local
  --service-account-key-file="$PKI_DIR/sa.pub"
  --service-account-signing-key-file="$PKI_DIR/sa.key"
  --authorization-mode=Node,RBAC
  --service-cluster-ip-range=10.96.0.0/16
  --endpoint-reconciler-type=none
  --allow-privileged=true
  --kubelet-preferred-address-types=InternalIP
  --audit-policy-file="$HACK_DIR/audit-policy.yaml"
  --audit-log-path="$LOG_DIR/audit.log"
  --audit-log-format=json
  --audit-log-maxsize=200
  --profiling=false
  --v=1
)
# Node health is judged within seconds (no Lease renewal for 15 s: Unknown and
# the unreachable taints), so tests of a dead kubelet run fast.
KUBE_CONTROLLER_MANAGER_ARGS=(
  --kubeconfig="$PKI_DIR/controller-manager.kubeconfig"
  --authentication-kubeconfig="$PKI_DIR/controller-manager.kubeconfig"
  --authorization-kubeconfig="$PKI_DIR/controller-manager.kubeconfig"
  --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT"
  --service-account-private-key-file="$PKI_DIR/sa.key"
  --root-ca-file="$PKI_DIR/ca.crt"
  --cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key"
  --use-service-account-credentials=true
  --controllers='*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller'
  --node-monitor-period=2s
  --node-monitor-grace-period=15s
  --leader-elect=false
  --profiling=false
  --v=1
)
KUBE_SCHEDULER_ARGS=(
  --kubeconfig="$PKI_DIR/scheduler.kubeconfig"
  --authentication-kubeconfig="$PKI_DIR/scheduler.kubeconfig"
  --authorization-kubeconfig="$PKI_DIR/scheduler.kubeconfig"
  --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT"
  --leader-elect=false
  --profiling=false
  --v=1
)
# kwok acts as the kubelet of nodes labelled type=kwok, except those whose kubelet a
# test killed (sim.mistral-operator.dev/kubelet=down). The API server applies a label
# selector to kwok's watch, so relabelling a node takes it from or gives it back to
# kwok at runtime (kwok filters annotations itself and never lets a node go on one).
# It renews each node Lease every 3 s (a quarter of its duration), well inside the
# controller manager's 15 s grace. --node-port is only what the node-initialize stage
# reports as the kubelet port (kwok serves on --server-address).
KWOK_ARGS=(
  --kubeconfig="$PKI_DIR/kwok.kubeconfig"
  --config="$HACK_DIR/kwok/stages.yaml"
  --manage-all-nodes=false
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
  --manage-nodes-with-label-selector='type=kwok,sim.mistral-operator.dev/kubelet!=down'
  --node-lease-duration-seconds=12
  --node-port="$KUBELET_PORT"
  --server-address="127.0.0.1:$KWOK_PORT"
)

# component_stamp NAME: a digest of what the component runs with: its flags, and for
# kwok its stage file, which it reads once, at start.
component_stamp() {
  local var
  var="$(printf %s "$1" | tr 'a-z-' 'A-Z_')_ARGS"
  local -n args="$var"
  { printf '%s\n' "${args[@]}"; [ "$1" != kwok ] || cat "$HACK_DIR/kwok/stages.yaml"; } \
    | sha256sum | cut -c1-12
}

# start_component NAME: start a binary with its flags in its own session, appending to
# its log (a fresh cluster starts with empty logs; a restarted component adds to its).
start_component() {
  local name="$1" var
  if [ -n "$(component_pid "$name")" ]; then
    return 0
  fi
  var="$(printf %s "$name" | tr 'a-z-' 'A-Z_')_ARGS"
  local -n args="$var"
  setsid "$BIN_DIR/$name" "${args[@]}" >>"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$PID_DIR/$name.pid"
  component_stamp "$name" > "$PID_DIR/$name.stamp"
}

# alive_or_die NAME: fail with the log's tail if the component is not running.
alive_or_die() {
  if [ -z "$(component_pid "$1")" ]; then
    tail -n 30 "$LOG_DIR/$1.log" >&2 || true
    die "$1 exited during start (log: $LOG_DIR/$1.log)"
  fi
}

# wait_healthy NAME: wait until the component answers its health check.
wait_healthy() {
  case "$1" in
    etcd) wait_until 30 "etcd health" curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health" ;;
    kube-apiserver) wait_until 60 "kube-apiserver /readyz" kubectl_admin get --raw /readyz ;;
    kube-controller-manager)
      wait_until 60 "kube-controller-manager /healthz" curl -kfsS "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" ;;
    kube-scheduler) wait_until 60 "kube-scheduler /healthz" curl -kfsS "https://127.0.0.1:$SCHEDULER_PORT/healthz" ;;
    kwok) wait_until 60 "kwok /healthz" curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz" ;;
  esac || alive_or_die "$1"
  alive_or_die "$1"
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do [ -n "$(component_pid "$c")" ] || return 1; done
}

if all_running && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
  log "cluster already up; reusing it"
  # A component started with other flags (or kwok with other stages: the repo changed
  # since) is restarted in place; etcd keeps its data, the others keep no state.
  for c in "${COMPONENTS[@]}"; do
    [ "$(cat "$PID_DIR/$c.stamp" 2>/dev/null)" != "$(component_stamp "$c")" ] || continue
    log "$c runs with other flags or stages than the repo's; restarting it"
    pid="$(component_pid "$c")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(component_pid "$c")" ] && break; sleep 0.1; done
    # as cluster-down does: what has not stopped after 10 s is killed
    [ -z "$(component_pid "$c")" ] || kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(component_pid "$c")" ] && break; sleep 0.1; done
    [ -z "$(component_pid "$c")" ] || die "$c (pid $pid) did not stop"
    start_component "$c"
    wait_healthy "$c"
  done
else
  # A partial cluster is stopped first so each start is clean.
  "$HACK_DIR/cluster-down.sh" --keep-pki >/dev/null
  mkdir -p "$PID_DIR" "$LOG_DIR"
  "$HACK_DIR/pki.sh"
  rm -rf "$CLUSTER_DIR/etcd"
  for c in "${COMPONENTS[@]}"; do : > "$LOG_DIR/$c.log"; done

  start_component etcd
  wait_healthy etcd
  start_component kube-apiserver
  wait_healthy kube-apiserver
  start_component kube-controller-manager
  start_component kube-scheduler
  start_component kwok
  for c in kube-controller-manager kube-scheduler kwok; do wait_healthy "$c"; done
fi

# Nodes of another topology go; the asked topology's nodes are applied.
"$PYTHON" "$HACK_DIR/topology.py" "$TOPOLOGY_FILE" > "$CLUSTER_DIR/nodes.json"
kubectl_admin delete nodes -l "sim.mistral-operator.dev/topology,sim.mistral-operator.dev/topology!=$TOPOLOGY" --wait=false >/dev/null
kubectl_admin apply --server-side --force-conflicts --field-manager=cluster-up -f "$CLUSTER_DIR/nodes.json" >/dev/null
echo "$TOPOLOGY" > "$CLUSTER_DIR/topology"
# Every node reports the kubelet port: kwok's node-initialize stage writes it on nodes it
# initializes (kwok --node-port); nodes that were Ready before it did so get it here.
kubectl_admin get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.status.daemonEndpoints.kubeletEndpoint.Port}{"\n"}{end}' \
  | while read -r node port; do
      [ "$port" = "$KUBELET_PORT" ] && continue
      kubectl_admin patch node "$node" --subresource=status --type=merge \
        -p "{\"status\":{\"daemonEndpoints\":{\"kubeletEndpoint\":{\"Port\":$KUBELET_PORT}}}}" >/dev/null
    done

nodes_ready() {
  local want have
  want="$("$PYTHON" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$CLUSTER_DIR/nodes.json")"
  have="$(kubectl_admin get nodes -l "sim.mistral-operator.dev/topology=$TOPOLOGY" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')"
  [ "$have" = "$want" ]
}
wait_until 60 "simulated nodes Ready" nodes_ready || die "simulated nodes did not become Ready (kwok log: $LOG_DIR/kwok.log)"
# Tests create pods in fresh namespaces: the service-account controller must be running.
wait_until 60 "default ServiceAccount" kubectl_admin get serviceaccount default -n default \
  || die "the default ServiceAccount did not appear (log: $LOG_DIR/kube-controller-manager.log)"

log "cluster ready in $((SECONDS - start)) s (topology $TOPOLOGY)"
cat <<MSG

  The local cluster is up ($TOPOLOGY). Point kubectl at it with:

    export KUBECONFIG=$KUBECONFIG_ADMIN
    export PATH=$BIN_DIR:\$PATH
    kubectl get nodes -L nvidia.com/gpu.product,network.topology.nvidia.com/block

  Stop it with: make cluster-down

MSG
