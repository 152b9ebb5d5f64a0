#!/usr/bin/env bash
# `make demo`: brings up the local cluster with simulated HGX H200 nodes and
# shows what the operator will place models on.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$HACK_DIR/cluster-up.sh" h200
echo
echo "Simulated GPU nodes:"
kubectl_admin get nodes -o wide \
  -L nvidia.com/gpu.product,nvidia.com/gpu.count,network.topology.nvidia.com/block
echo
echo "GPUs allocatable per node:"
kubectl_admin get nodes -o custom-columns='NODE:.metadata.name,GPUS:.status.allocatable.nvidia\.com/gpu,TAINTS:.spec.taints[*].key'
cat <<MSG

Next:
  export KUBECONFIG=$KUBECONFIG_ADMIN PATH=$BIN_DIR:\$PATH
  kubectl describe node h200-0
  make demo-down        # stop the cluster
MSG
