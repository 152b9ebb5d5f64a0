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

# start_component NAME ARGS...: start a binary in its own session, log to a file.
start_component() {
  local name="$1"; shift
  if [ -n "$(component_pid "$name")" ]; then
    return 0
  fi
  setsid "$BIN_DIR/$name" "$@" >"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$PID_DIR/$name.pid"
}

# alive_or_die NAME: fail with the log's tail if the component is not running.
alive_or_die() {
  if [ -z "$(component_pid "$1")" ]; then
    tail -n 30 "$LOG_DIR/$1.log" >&2 || true
    die "$1 exited during start (log: $LOG_DIR/$1.log)"
  fi
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do [ -n "$(component_pid "$c")" ] || return 1; done
}

# kwok acts as the kubelet of nodes labelled type=kwok, except those whose kubelet a
# test killed (sim.mistral-operator.dev/kubelet=down). The API server applies a label
# selector to kwok's watch, so relabelling a node takes it from or gives it back to
# kwok at runtime (kwok filters annotations itself and never lets a node go on one).
# It renews each node Lease every 3 s (a quarter of its duration), well inside the
# controller manager's 15 s grace.
KWOK_ARGS=(
  --kubeconfig="$PKI_DIR/kwok.kubeconfig"
  --config="$HACK_DIR/kwok/stages.yaml"
  --manage-all-nodes=false
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
  --manage-nodes-with-label-selector='type=kwok,sim.mistral-operator.dev/kubelet!=down'
  --node-lease-duration-seconds=12
  --server-address="127.0.0.1:$KWOK_PORT"
)
# kwok reads its stages once, at start: the stamp of what it runs with.
kwok_stamp() { { cat "$HACK_DIR/kwok/stages.yaml"; printf '%s\n' "${KWOK_ARGS[@]}"; } | sha256sum | cut -c1-12; }
start_kwok() {
  start_component kwok "${KWOK_ARGS[@]}"
  kwok_stamp > "$CLUSTER_DIR/kwok.stamp"
}

if all_running && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
  log "cluster already up; reusing it"
  # A kwok started with other stages or flags (the repo changed since) is restarted;
  # it keeps no state of its own, and the node Leases outlive the gap.
  if [ "$(cat "$CLUSTER_DIR/kwok.stamp" 2>/dev/null)" != "$(kwok_stamp)" ]; then
    log "kwok's stages or flags changed; restarting kwok"
    kwok_pid="$(component_pid kwok)"
    kill "$kwok_pid"
    for _ in $(seq 50); do [ -z "$(component_pid kwok)" ] && break; sleep 0.1; done
    [ -z "$(component_pid kwok)" ] || die "kwok (pid $kwok_pid) did not stop"
    start_kwok
    wait_until 60 "kwok /healthz" curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz" || alive_or_die kwok
    alive_or_die kwok
  fi
else
  # A partial cluster is stopped first so each start is clean.
  "$HACK_DIR/cluster-down.sh" --keep-pki >/dev/null
  mkdir -p "$PID_DIR" "$LOG_DIR"
  "$HACK_DIR/pki.sh"
  rm -rf "$CLUSTER_DIR/etcd"

  start_component etcd \
    --name=local --data-dir="$CLUSTER_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls="" \
    --unsafe-no-fsync=true --log-level=warn
  wait_until 30 "etcd health" curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health" || alive_or_die etcd
  alive_or_die etcd

  start_component kube-apiserver \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key" \
    --client-ca-file="$PKI_DIR/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI_DIR/sa.pub" \
    --service-account-signing-key-file="$PKI_DIR/sa.key" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --audit-policy-file="$HACK_DIR/audit-policy.yaml" \
    --audit-log-path="$LOG_DIR/audit.log" \
    --audit-log-format=json \
    --audit-log-maxsize=200 \
    --profiling=false \
    --v=1
  wait_until 60 "kube-apiserver /readyz" kubectl_admin get --raw /readyz || alive_or_die kube-apiserver
  alive_or_die kube-apiserver

  # Node health is judged within seconds (no Lease renewal for 15 s: Unknown and
  # the unreachable taints), so tests of a dead kubelet run fast.
  start_component kube-controller-manager \
    --kubeconfig="$PKI_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$PKI_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$PKI_DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" \
    --service-account-private-key-file="$PKI_DIR/sa.key" \
    --root-ca-file="$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key" \
    --use-service-account-credentials=true \
    --controllers='*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller' \
    --node-monitor-period=2s \
    --node-monitor-grace-period=15s \
    --leader-elect=false \
    --profiling=false \
    --v=1
  start_component kube-scheduler \
    --kubeconfig="$PKI_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$PKI_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$PKI_DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
    --leader-elect=false \
    --profiling=false \
    --v=1
  start_kwok
  wait_until 60 "kube-controller-manager /healthz" curl -kfsS "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" \
    || alive_or_die kube-controller-manager
  wait_until 60 "kube-scheduler /healthz" curl -kfsS "https://127.0.0.1:$SCHEDULER_PORT/healthz" \
    || alive_or_die kube-scheduler
  wait_until 60 "kwok /healthz" curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz" || alive_or_die kwok
  for c in "${COMPONENTS[@]}"; do alive_or_die "$c"; done
fi

# Nodes of another topology go; the asked topology's nodes are applied.
"$PYTHON" "$HACK_DIR/topology.py" "$TOPOLOGY_FILE" > "$CLUSTER_DIR/nodes.json"
kubectl_admin delete nodes -l "sim.mistral-operator.dev/topology,sim.mistral-operator.dev/topology!=$TOPOLOGY" --wait=false >/dev/null
kubectl_admin apply --server-side --force-conflicts --field-manager=cluster-up -f "$CLUSTER_DIR/nodes.json" >/dev/null
echo "$TOPOLOGY" > "$CLUSTER_DIR/topology"

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
