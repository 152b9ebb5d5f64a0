#!/usr/bin/env bash
# `make demo`: the local cluster with simulated HGX H200 nodes, the Helm chart,
# the operator running as the chart's ServiceAccount, and the quick start served.
# `make demo SHAPE=multinode` serves it as MultiNode replicas (2 nodes each) instead.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SHAPE="${SHAPE:-compact}"
case "$SHAPE" in
  compact|multinode) ;;
  *) die "unknown SHAPE '$SHAPE'; known: compact, multinode" ;;
esac

DEMO_DIR="$CLUSTER_DIR/demo"
OPERATOR="$REPO_ROOT/.venv/bin/mistral-operator"
NS=mistral-demo

"$HACK_DIR/cluster-up.sh" h200
mkdir -p "$DEMO_DIR"
HELM="$BIN_DIR/helm"

log "installing the chart (release mistral-operator in mistral-system)"
"$HELM" --kubeconfig "$KUBECONFIG_ADMIN" upgrade --install mistral-operator "$REPO_ROOT/charts/mistral-operator" \
  --namespace mistral-system --create-namespace --take-ownership --force-conflicts \
  --set webhook.mode=local >/dev/null

# Simulated nodes run no containers, so the operator runs here, with exactly the
# permissions the chart gives its ServiceAccount, and registers its validating webhook
# at https://127.0.0.1:19443 (chart value webhook.mode=local).
if [ -z "$(operator_pid)" ]; then
  token="$(kubectl_admin create token mistral-operator -n mistral-system --duration=24h)"
  server="https://127.0.0.1:$APISERVER_PORT"
  cat > "$DEMO_DIR/operator.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority: "$PKI_DIR/ca.crt"}}]
users: [{name: mistral-operator, user: {token: "$token"}}]
contexts: [{name: local, context: {cluster: local, user: mistral-operator}}]
current-context: local
KC
  KUBECONFIG="$DEMO_DIR/operator.kubeconfig" setsid "$OPERATOR" run --peering-name mistral-operator \
    --log-format plain --metrics-port 18080 --health-port 18081 \
    --webhook local --webhook-port 19443 --webhook-namespace mistral-system \
    >"$LOG_DIR/operator.log" 2>&1 </dev/null &
  echo $! > "$PID_DIR/operator.pid"
  wait_until 60 "operator /healthz" curl -fsS http://127.0.0.1:18081/healthz \
    || { tail -n 30 "$LOG_DIR/operator.log" >&2; die "the operator did not start (log: $LOG_DIR/operator.log)"; }
  log "operator running (pid $(cat "$PID_DIR/operator.pid"), log $LOG_DIR/operator.log)"
fi

# The weights. Nothing here reaches the Hugging Face Hub, so a local stand-in serves
# small generated shards under the quick start's repository, and the simulated nodes'
# kubelet for fill Jobs (the process kubelet) runs each fill as a real download into
# that node's directory under $CLUSTER_DIR/node-disks. The quick start's fills find the
# stand-in through HF_ENDPOINT in a Secret, as they would find a mirror.
cd "$REPO_ROOT"  # the stand-in hub and the process kubelet are modules of tests/support
if [ -z "$(pid_running weights-hub "tests.support.weights")" ]; then
  rm -f "$DEMO_DIR/hub.url"
  setsid "$REPO_ROOT/.venv/bin/python" -m tests.support.weights --url-file "$DEMO_DIR/hub.url" \
    >"$LOG_DIR/weights-hub.log" 2>&1 </dev/null &
  echo $! > "$PID_DIR/weights-hub.pid"
  wait_until 30 "the weights hub" test -s "$DEMO_DIR/hub.url" || die "the weights hub did not start"
fi
if [ -z "$(pid_running process-kubelet "tests.support.process_kubelet")" ]; then
  setsid "$REPO_ROOT/.venv/bin/python" -m tests.support.process_kubelet \
    --root "$CLUSTER_DIR/node-disks" --kubeconfig "$KUBECONFIG_ADMIN" \
    >"$LOG_DIR/process-kubelet.log" 2>&1 </dev/null &
  echo $! > "$PID_DIR/process-kubelet.pid"
fi

kubectl_admin create namespace "$NS" --dry-run=client -o yaml | kubectl_admin apply -f - >/dev/null
kubectl_admin create secret generic weights-hub -n "$NS" --from-literal=HF_ENDPOINT="$(cat "$DEMO_DIR/hub.url")" \
  --dry-run=client -o yaml | kubectl_admin apply -f - >/dev/null
WEIGHTS='"model":{"credentialsSecretRef":{"name":"weights-hub"}}'
if [ "$SHAPE" = multinode ]; then
  # The quick start with expert parallelism across 2 nodes per replica (DeepEP,
  # data-parallel attention), both nodes of a replica in one block.
  kubectl_admin patch --local -o yaml -f "$REPO_ROOT/examples/quickstart-h200.yaml" --type=merge \
    -p '{"spec":{'"$WEIGHTS"',"parallelism":{"shape":"MultiNode","nodesPerReplica":2},"placement":{"topologyKey":"network.topology.nvidia.com/block"}}}' \
    | kubectl_admin apply -n "$NS" -f -
else
  kubectl_admin patch --local -o yaml -f "$REPO_ROOT/examples/quickstart-h200.yaml" --type=merge \
    -p '{"spec":{'"$WEIGHTS"'}}' | kubectl_admin apply -n "$NS" -f -
fi
start=$SECONDS
kubectl_admin wait -n "$NS" --for=condition=Ready mm/mistral-small-4 --timeout=120s >/dev/null
log "mistral-small-4 Ready in $((SECONDS - start)) s"
echo
kubectl_admin get mm,pods -n "$NS" -o wide
echo
kubectl_admin get mm -n "$NS" mistral-small-4 -o jsonpath='{range .status.cache.nodes[*]}cache on {.node}: {.state}, {.bytesDone} bytes at {.bytesPerSecond} B/s{"\n"}{end}'
if [ "$SHAPE" = multinode ]; then
  cat <<MSG

Try next:
  export KUBECONFIG=$KUBECONFIG_ADMIN PATH=$BIN_DIR:\$PATH
  kubectl describe mm -n $NS mistral-small-4              # topology, memory, groups, events
  kubectl scale mm -n $NS mistral-small-4 --replicas=2   # a second group on the other block
  kubectl scale mm -n $NS mistral-small-4 --replicas=3   # more than fits: see Schedulable
  kubectl delete pod -n $NS mistral-small-4-g0-1         # the whole group is recreated
  curl -s http://127.0.0.1:18080/metrics | grep mistral_operator_
  make demo-down                                          # stop the operator and the cluster
MSG
else
  cat <<MSG

Try next:
  export KUBECONFIG=$KUBECONFIG_ADMIN PATH=$BIN_DIR:\$PATH
  kubectl describe mm -n $NS mistral-small-4              # topology, memory, groups, events
  kubectl scale mm -n $NS mistral-small-4 --replicas=4   # 4 replicas of 2 GPUs share one node
  kubectl scale mm -n $NS mistral-small-4 --replicas=17  # more than 4 nodes hold: see Schedulable
  kubectl delete pod -n $NS mistral-small-4-g0-0         # the replica is recreated
  curl -s http://127.0.0.1:18080/metrics | grep mistral_operator_
  make demo-down                                          # stop the operator and the cluster
  make demo-down && make demo SHAPE=multinode             # replicas spanning 2 nodes each
MSG
fi
