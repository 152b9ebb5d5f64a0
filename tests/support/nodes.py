"""Breaking and healing simulated nodes: a dead kubelet, a NotReady one, a deleted Node.

kwok is the kubelet of every node labelled ``type=kwok`` unless the node carries
``sim.mistral-operator.dev/kubelet=down`` (see hack/cluster-up.sh). Taking a node
away from kwok is what a dead kubelet looks like to the rest of the cluster: nobody
renews the node Lease, so the real node lifecycle controller marks the node
Unknown and taints it ``node.kubernetes.io/unreachable``, and nobody confirms a
graceful pod deletion there, so such pods stay Terminating.

The helpers wait for the cluster to show what they did, by polling with deadlines.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from tests.support.cluster import Cluster
from tests.support.wait import wait_for

KUBELET_LABEL = "sim.mistral-operator.dev/kubelet"
KUBELET_DOWN = "down"
# kwok manages nodes with this label; the node-not-ready stage changes its value.
KWOK_LABEL = "type"
KWOK_VALUE = "kwok"
NODE_HEALTH_ANNOTATION = "sim.mistral-operator.dev/node-health"
# Scratch nodes carry this label, and a taint with this key: only pods that
# tolerate it land there.
SCRATCH_TAINT = "sim.mistral-operator.dev/scratch"
# Scratch nodes take pod IPs from a loopback range the topologies leave free.
SCRATCH_POD_CIDR = "127.10.250.0/24"
SCRATCH_NODE_IP = "127.11.250.1"

# Pod annotations and images the kwok stages read (hack/kwok/stages.yaml).
HOLD_ANNOTATION = "sim.mistral-operator.dev/hold"
CRASH_EXIT_CODE_ANNOTATION = "sim.mistral-operator.dev/crash-exit-code"
SIM_IMAGE_HOST = "sim.invalid"
IMAGE_UNPULLABLE = f"{SIM_IMAGE_HOST}/unpullable:1"
IMAGE_CONTAINER_CREATING = f"{SIM_IMAGE_HOST}/container-creating:1"
IMAGE_CRASHLOOP = f"{SIM_IMAGE_HOST}/crashloop:1"

UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
NODE_LEASE_NAMESPACE = "kube-node-lease"


def get_node(cluster: Cluster, node: str) -> dict[str, Any] | None:
    """The Node object, or None if there is no such node."""
    result = cluster.kubectl("get", "node", node, "-o", "json", "--ignore-not-found")
    return json.loads(result.stdout) if result.stdout.strip() else None


def get_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The Pod object, or None if there is no such pod."""
    result = cluster.kubectl(
        "get", "pod", name, "-n", namespace, "-o", "json", "--ignore-not-found"
    )
    return json.loads(result.stdout) if result.stdout.strip() else None


def waiting_reason(pod: dict[str, Any]) -> str | None:
    """Why the pod's (first) container is waiting, if it is."""
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    reason = statuses[0].get("state", {}).get("waiting", {}).get("reason")
    return str(reason) if reason else None


def ready_status(node: dict[str, Any]) -> str | None:
    """The node's Ready condition status: "True", "False", "Unknown", or None if unset."""
    for condition in node.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            return str(condition["status"])
    return None


def has_taint(node: dict[str, Any], key: str, effect: str | None = None) -> bool:
    """Whether the node carries a taint with ``key`` (and ``effect``, if given)."""
    return any(
        t["key"] == key and (effect is None or t["effect"] == effect)
        for t in node.get("spec", {}).get("taints") or []
    )


def lease_age(cluster: Cluster, node: str) -> tuple[float, float]:
    """Seconds since the node Lease was last renewed, and kwok's renew interval."""
    lease = cluster.get_json("lease", node, "-n", NODE_LEASE_NAMESPACE)
    renewed = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
    # kwok renews every quarter of the lease duration, like the kubelet.
    interval = int(lease["spec"]["leaseDurationSeconds"]) / 4
    return (datetime.now(UTC) - renewed).total_seconds(), interval


def kubelet_silent(cluster: Cluster, node: str) -> bool:
    """Whether nobody has renewed the node Lease for two renew intervals.

    kwok stops renewing in the same step as it stops acting on the node's pods, so
    once the Lease goes stale a graceful pod deletion there can no longer complete.
    """
    age, interval = lease_age(cluster, node)
    return age > 2 * interval


def kill_kubelet(cluster: Cluster, node: str, *, timeout: float = 30) -> None:
    """Kill the node's (simulated) kubelet and wait until it has gone silent.

    The node keeps its Ready condition until the controller manager notices the
    stale Lease (see `wait_for_unreachable`); pods there stay as they are, and a
    graceful deletion of one never completes.
    """
    cluster.kubectl("label", "node", node, f"{KUBELET_LABEL}={KUBELET_DOWN}", "--overwrite")
    wait_for(
        lambda: kubelet_silent(cluster, node),
        timeout=timeout,
        what=f"the kubelet of {node} to stop renewing its Lease",
    )


def make_not_ready(cluster: Cluster, node: str, *, timeout: float = 30) -> None:
    """Have the node's kubelet report NotReady and then go silent (node-health=NotReady).

    Ready turns False at once, and Unknown after the controller manager's grace
    period; a graceful pod deletion there never completes.
    """
    cluster.kubectl("annotate", "node", node, f"{NODE_HEALTH_ANNOTATION}=NotReady", "--overwrite")
    wait_for(
        lambda: ready_status(get_node(cluster, node) or {}) in {"False", "Unknown"},
        timeout=timeout,
        what=f"{node} to report NotReady",
    )
    wait_for(
        lambda: kubelet_silent(cluster, node),
        timeout=timeout,
        what=f"the NotReady kubelet of {node} to go silent",
    )


def wait_for_unreachable(cluster: Cluster, node: str, *, timeout: float = 60) -> dict[str, Any]:
    """Wait until the node lifecycle controller has given up on the node; return it.

    That is Ready=Unknown (or False) and the NoExecute taint
    ``node.kubernetes.io/unreachable`` (or ``not-ready``), which starts
    taint-based eviction of the pods there.
    """

    def given_up() -> dict[str, Any] | None:
        obj = get_node(cluster, node)
        if obj is None or ready_status(obj) not in {"Unknown", "False"}:
            return None
        tainted = has_taint(obj, UNREACHABLE_TAINT, "NoExecute") or has_taint(
            obj, NOT_READY_TAINT, "NoExecute"
        )
        return obj if tainted else None

    return wait_for(given_up, timeout=timeout, what=f"{node} to be Unknown and tainted")


def healthy(node: dict[str, Any]) -> bool:
    """Ready, and without the lifecycle controller's not-ready or unreachable taints."""
    return (
        ready_status(node) == "True"
        and not has_taint(node, UNREACHABLE_TAINT)
        and not has_taint(node, NOT_READY_TAINT)
    )


def revive_kubelet(cluster: Cluster, node: str, *, timeout: float = 60) -> None:
    """Give the node back to kwok, whatever broke it, and wait until it is healthy.

    Undoes `kill_kubelet` and `make_not_ready`. kwok then renews the Lease, marks
    the node Ready, and completes the pod deletions that were waiting on it; the
    controller manager lifts its taints.
    """
    obj = get_node(cluster, node)
    if obj is None:
        raise AssertionError(f"node {node} does not exist; restore it with restore_node")
    meta = obj["metadata"]
    if NODE_HEALTH_ANNOTATION in meta.get("annotations", {}):
        cluster.kubectl("annotate", "node", node, f"{NODE_HEALTH_ANNOTATION}-")
    labels = meta.get("labels", {})
    if KUBELET_LABEL in labels:
        cluster.kubectl("label", "node", node, f"{KUBELET_LABEL}-")
    if labels.get(KWOK_LABEL) != KWOK_VALUE:
        cluster.kubectl("label", "node", node, f"{KWOK_LABEL}={KWOK_VALUE}", "--overwrite")
    wait_for(
        lambda: healthy(get_node(cluster, node) or {}),
        timeout=timeout,
        what=f"{node} to be Ready and untainted again",
    )


def restore_node(cluster: Cluster, node: str, *, timeout: float = 60) -> None:
    """Bring a node of the topology that a test broke or deleted back to health.

    A deleted node is re-created by re-applying the topology (hack/cluster-up.sh,
    which reuses the running cluster). Scratch nodes are left to the test that owns
    them, which may be breaking one on purpose right now.
    """
    obj = get_node(cluster, node)
    if obj is None:
        Cluster.up(cluster.topology)
    elif SCRATCH_TAINT in obj["metadata"].get("labels", {}):
        return
    revive_kubelet(cluster, node, timeout=timeout)


GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
SCRATCH_BLOCK = "scratch"


def scratch_node_manifest(name: str, gpus: int = 0) -> dict[str, Any]:
    """A small kwok-managed node outside the topology, tainted with SCRATCH_TAINT: a CPU
    node, or with ``gpus`` H200 GPUs (labelled and tainted as the topology's GPU nodes,
    in a leaf block of its own) for a test that needs capacity nobody else can take."""
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    node = kwok_node(name, resources, cidr=SCRATCH_POD_CIDR, ip=SCRATCH_NODE_IP)
    node["metadata"]["labels"][SCRATCH_TAINT] = "true"
    node["spec"]["taints"].append({"key": SCRATCH_TAINT, "value": "true", "effect": "NoSchedule"})
    if gpus:
        with_h200_gpus(node, gpus, SCRATCH_BLOCK)
    return node


def kwok_node(name: str, resources: dict[str, str], *, cidr: str, ip: str) -> dict[str, Any]:
    """A Node kwok manages (as the topology's are), with these resources, pod CIDR and IP."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                KWOK_LABEL: KWOK_VALUE,
            },
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "taints": []},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "addresses": [{"type": "InternalIP", "address": ip}],
        },
    }


def with_h200_gpus(node: dict[str, Any], gpus: int, block: str) -> dict[str, Any]:
    """Give a kwok node ``gpus`` H200 GPUs, labelled and tainted as the topology's GPU
    nodes, in leaf block ``block``."""
    for resources in (node["status"]["allocatable"], node["status"]["capacity"]):
        resources["nvidia.com/gpu"] = str(gpus)
    node["metadata"]["labels"] |= {
        "nvidia.com/gpu.present": "true",
        GPU_PRODUCT_LABEL: "NVIDIA-H200",
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.memory": "143771",
        "nvidia.com/gpu.family": "hopper",
        "network.topology.nvidia.com/block": block,
    }
    node["spec"]["taints"].append(
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    )
    return node


@contextmanager
def scratch_node(cluster: Cluster, *, timeout: float = 60, gpus: int = 0) -> Iterator[str]:
    """A node of its own for a test that breaks or deletes it; gone afterwards.

    It is not part of the topology, so re-applying the topology (which another test
    session may do at any time) neither heals nor re-creates it, and only pods that
    tolerate SCRATCH_TAINT land there. Pods left on it are force-deleted with it.
    """
    name = f"scratch-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "-f", "-", input=json.dumps(scratch_node_manifest(name, gpus)))
    try:
        wait_for(
            lambda: healthy(get_node(cluster, name) or {}),
            timeout=timeout,
            what=f"scratch node {name} to be Ready",
        )
        yield name
    finally:
        cluster.kubectl(
            "delete", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={name}",
            "--grace-period=0", "--force", "--wait=false",
        )  # fmt: skip
        cluster.kubectl("delete", "node", name, "--ignore-not-found", "--wait=false")
