"""Smoke tests of the local control plane: scheduling on simulated GPU nodes, RBAC, versions."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import yaml
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.wait import holds_for, wait_for

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pinned(name: str) -> str:
    for line in (REPO_ROOT / "hack" / "versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} is not pinned in hack/versions.env")


def gpu_pod(name: str, gpus: int, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "tolerations": [GPU_TOLERATION],
        "containers": [
            {
                "name": "main",
                "image": "registry.invalid/sglang:test",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }
        ],
    }
    if node:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            }
        }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def test_topology_nodes_look_like_labelled_hgx_nodes(cluster: Cluster) -> None:
    topology = yaml.safe_load(
        (REPO_ROOT / "hack" / "topologies" / f"{cluster.topology}.yaml").read_text()
    )
    nodes = cluster.get_json(
        "nodes", "-l", f"sim.mistral-operator.dev/topology={cluster.topology}"
    )["items"]
    assert len(nodes) == sum(pool["count"] for pool in topology["pools"])
    gpu_nodes = [n for n in nodes if "nvidia.com/gpu" in n["status"]["allocatable"]]
    gpu_pools = [p for p in topology["pools"] if "gpu" in p]
    assert len(gpu_nodes) == sum(p["count"] for p in gpu_pools)
    blocks = {n["metadata"]["labels"]["network.topology.nvidia.com/block"] for n in gpu_nodes}
    assert len(blocks) == sum(p.get("blocks", 1) for p in gpu_pools)
    for node in gpu_nodes:
        labels = node["metadata"]["labels"]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert labels["nvidia.com/gpu.count"] == "8"
        assert labels["nvidia.com/gpu.product"].startswith("NVIDIA-")
        assert int(labels["nvidia.com/gpu.memory"]) > 80_000
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node[
            "spec"
        ]["taints"]
        assert ipaddress.ip_network(node["spec"]["podCIDR"]).network_address.is_loopback
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"


def test_pod_with_8_gpus_runs_on_its_pinned_node_with_a_loopback_ip(
    cluster: Cluster, namespace: str
) -> None:
    node_name = f"{cluster.topology}-1"
    apply(cluster, namespace, gpu_pod("eight", 8, node=node_name))

    def running() -> dict[str, Any] | None:
        pod = cluster.get_json("pod", "eight", "-n", namespace)
        return (
            pod if pod["status"].get("phase") == "Running" and pod["status"].get("podIP") else None
        )

    pod = wait_for(running, timeout=60, what="the 8-GPU pod to run")
    assert pod["spec"]["nodeName"] == node_name
    node = cluster.get_json("node", node_name)
    pod_ip = ipaddress.ip_address(pod["status"]["podIP"])
    assert pod_ip.is_loopback
    assert pod_ip in ipaddress.ip_network(node["spec"]["podCIDR"])
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_pod_with_9_gpus_stays_pending_with_failed_scheduling(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, namespace, gpu_pod("nine", 9))

    def failed_scheduling() -> Any:
        return cluster.get_json(
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=nine,reason=FailedScheduling",
        )["items"]

    events = wait_for(failed_scheduling, timeout=60, what="a FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in events[0]["message"]

    def still_pending() -> bool:
        pod = cluster.get_json("pod", "nine", "-n", namespace)
        return pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")

    holds_for(still_pending, duration=3, what="the 9-GPU pod staying Pending and unbound")


def test_service_account_needs_rbac_to_list_pods(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = cluster.kubectl(
        "create", "token", "reader", "-n", namespace, "--duration=10m"
    ).stdout.strip()
    kubeconfig = cluster.token_kubeconfig(token, tmp_path / "reader.kubeconfig")

    def list_pods() -> Any:
        return cluster.kubectl(
            "--kubeconfig", str(kubeconfig), "get", "pods", "-n", namespace, check=False
        )

    denied = list_pods()
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr

    cluster.kubectl(
        "create", "role", "pod-reader", "-n", namespace, "--verb=list,get", "--resource=pods"
    )
    cluster.kubectl(
        "create", "rolebinding", "reader-pods", "-n", namespace,
        "--role=pod-reader", f"--serviceaccount={namespace}:reader",
    )  # fmt: skip
    wait_for(
        lambda: list_pods().returncode == 0,
        timeout=30,
        what="the RoleBinding to allow listing pods",
    )
    # Other namespaces stay closed to it.
    other = cluster.kubectl(
        "--kubeconfig", str(kubeconfig), "get", "pods", "-n", "default", check=False
    )
    assert other.returncode != 0
    assert "Forbidden" in other.stderr


def test_kubectl_reports_the_pinned_server_version(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    want = pinned("KUBERNETES_VERSION")
    assert version["serverVersion"]["gitVersion"] == want
    assert version["clientVersion"]["gitVersion"] == want
    major, minor = want.lstrip("v").split(".")[:2]
    assert (version["serverVersion"]["major"], version["serverVersion"]["minor"]) == (major, minor)


def test_helm_runs_against_the_cluster(cluster: Cluster) -> None:
    short = cluster.helm("version", "--short").stdout.strip()
    assert short.startswith("v")
    listed = cluster.helm("list", "--all-namespaces", "-o", "json")
    assert isinstance(json.loads(listed.stdout), list)
