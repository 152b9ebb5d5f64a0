"""Tests of the local control plane: scheduling on simulated GPU nodes, RBAC, versions, and
the realism of the simulated kubelets (dead and NotReady nodes, held pods, hostPath mounts)."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from tests.support.caches import make_claim
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.nodes import (
    CRASH_EXIT_CODE_ANNOTATION,
    HOLD_ANNOTATION,
    IMAGE_CONTAINER_CREATING,
    IMAGE_CRASHLOOP,
    IMAGE_UNPULLABLE,
    SCRATCH_TAINT,
    UNREACHABLE_TAINT,
    get_node,
    get_pod,
    has_taint,
    kill_kubelet,
    make_not_ready,
    ready_status,
    revive_kubelet,
    scratch_node,
    wait_for_unreachable,
    waiting_reason,
)
from tests.support.process_kubelet import MOUNTED_ANNOTATION, ProcessKubelet
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


# -- simulated kubelets: dead, NotReady, holding pods ----------------------------------


@pytest.fixture
def breakable_node(cluster: Cluster) -> Iterator[str]:
    """A node of the test's own to break: other tests share the topology's nodes."""
    with scratch_node(cluster) as node:
        yield node


ANY_IMAGE = "registry.invalid/app:1"


def cpu_pod(
    name: str,
    node: str | None = None,
    *,
    image: str = ANY_IMAGE,
    annotations: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A pod without GPUs, scheduled onto ``node`` (a scratch node) if given."""
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": image}],
        "tolerations": [{"key": SCRATCH_TAINT, "operator": "Exists"}, *(tolerations or [])],
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    metadata: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def unreachable_for(seconds: int) -> list[dict[str, Any]]:
    """Tolerations that keep a pod on an unreachable or not-ready node for ``seconds``."""
    return [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
        for key in (UNREACHABLE_TAINT, "node.kubernetes.io/not-ready")
    ]


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def start_pods(cluster: Cluster, namespace: str, *pods: dict[str, Any]) -> None:
    """Create the pods and wait until each runs and is Ready."""
    for pod in pods:
        apply(cluster, namespace, pod)
    for pod in pods:
        wait_pod(cluster, namespace, pod["metadata"]["name"], pod_ready, what="Ready")


def wait_pod(
    cluster: Cluster,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    *,
    what: str,
    timeout: float = 60,
) -> None:
    """Wait until the pod exists and passes ``check``."""
    wait_for(
        lambda: check(get_pod(cluster, namespace, name) or {}),
        timeout=timeout,
        what=f"pod {name}: {what}",
    )


def terminating(cluster: Cluster, namespace: str, name: str) -> bool:
    """The pod still exists, with a deletion timestamp."""
    pod = get_pod(cluster, namespace, name)
    return pod is not None and bool(pod["metadata"].get("deletionTimestamp"))


def delete_pod(cluster: Cluster, namespace: str, name: str, *, force: bool = False) -> None:
    """Delete a pod without waiting: gracefully, or with grace 0 (`--force`)."""
    args = ["--grace-period=0", "--force"] if force else []
    cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", *args)


def delete_gracefully(cluster: Cluster, namespace: str, name: str) -> None:
    """Delete a pod gracefully and wait until it shows its deletion timestamp."""
    delete_pod(cluster, namespace, name)
    wait_for(
        lambda: terminating(cluster, namespace, name),
        timeout=10,
        what=f"pod {name}: a deletion timestamp",
    )


def stays_terminating(
    cluster: Cluster, namespace: str, name: str, *, duration: float, what: str
) -> None:
    holds_for(lambda: terminating(cluster, namespace, name), duration=duration, what=what)


def wait_gone(cluster: Cluster, namespace: str, name: str, *, timeout: float, what: str) -> None:
    wait_for(lambda: get_pod(cluster, namespace, name) is None, timeout=timeout, what=what)


def test_graceful_delete_on_a_dead_kubelet_node_stays_terminating_until_forced(
    cluster: Cluster, namespace: str, breakable_node: str
) -> None:
    start_pods(cluster, namespace, cpu_pod("stuck", breakable_node))
    kill_kubelet(cluster, breakable_node)

    delete_gracefully(cluster, namespace, "stuck")
    stays_terminating(
        cluster, namespace, "stuck",
        duration=5, what="the pod on a dead kubelet's node staying Terminating",
    )  # fmt: skip

    delete_pod(cluster, namespace, "stuck", force=True)
    wait_gone(cluster, namespace, "stuck", timeout=10, what="the force-deleted pod to be gone")


def test_controller_manager_taints_a_dead_node_and_evicts_pods_after_their_toleration(
    cluster: Cluster, namespace: str, breakable_node: str
) -> None:
    start_pods(
        cluster,
        namespace,
        cpu_pod("short", breakable_node, tolerations=unreachable_for(2)),
        cpu_pod("long", breakable_node, tolerations=unreachable_for(3600)),
    )
    kill_kubelet(cluster, breakable_node)

    node = wait_for_unreachable(cluster, breakable_node)
    assert ready_status(node) == "Unknown"
    assert has_taint(node, UNREACHABLE_TAINT, "NoExecute")
    # The controller adds the NoSchedule taint in a pass of its own, a moment apart.
    wait_for(
        lambda: has_taint(get_node(cluster, breakable_node) or {}, UNREACHABLE_TAINT, "NoSchedule"),
        timeout=30,
        what="the unreachable NoSchedule taint",
    )

    def evicted() -> dict[str, Any] | None:
        pod = get_pod(cluster, namespace, "short")
        return pod if pod and pod["metadata"].get("deletionTimestamp") else None

    pod = wait_for(evicted, timeout=30, what="taint-based eviction of the pod tolerating 2 s")
    disruption = next(c for c in pod["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert disruption["reason"] == "DeletionByTaintManager"
    # The eviction is a graceful delete: with the kubelet dead, nobody confirms it.
    holds_for(
        lambda: (
            terminating(cluster, namespace, "short") and not terminating(cluster, namespace, "long")
        ),
        duration=3,
        what="the evicted pod Terminating, the long-tolerating pod untouched",
    )


def test_deleting_a_dead_node_lets_the_pod_gc_remove_its_pods(
    cluster: Cluster, namespace: str, breakable_node: str
) -> None:
    # One pod stuck Terminating, one still running when its node goes.
    start_pods(
        cluster, namespace, cpu_pod("deleted", breakable_node), cpu_pod("left", breakable_node)
    )
    kill_kubelet(cluster, breakable_node)
    delete_gracefully(cluster, namespace, "deleted")

    cluster.kubectl("delete", "node", breakable_node)
    # The pod GC waits 40 s for a missing node to come back and runs every 20 s.
    wait_for(
        lambda: (
            not cluster.get_json(
                "pods", "-n", namespace, "--field-selector", f"spec.nodeName={breakable_node}"
            )["items"]
        ),
        timeout=120,
        interval=2,
        what=f"the pod GC to remove the pods of deleted node {breakable_node}",
    )


def test_graceful_delete_on_a_not_ready_node_waits_for_the_kubelet_to_return(
    cluster: Cluster, namespace: str, breakable_node: str
) -> None:
    start_pods(cluster, namespace, cpu_pod("waiting", breakable_node))
    make_not_ready(cluster, breakable_node)

    delete_gracefully(cluster, namespace, "waiting")
    stays_terminating(
        cluster, namespace, "waiting",
        duration=3, what="the pod on a NotReady node staying Terminating",
    )  # fmt: skip

    revive_kubelet(cluster, breakable_node)
    wait_gone(
        cluster, namespace, "waiting",
        timeout=30, what="the returning kubelet to finish the deletion",
    )  # fmt: skip


class Held(NamedTuple):
    """How a held pod is made, and how a real kubelet would show it."""

    image: str
    annotations: dict[str, str]
    phase: str
    reason: str  # of the container's `waiting` state


HELD_PODS = {
    "image-container-creating": Held(IMAGE_CONTAINER_CREATING, {}, "Pending", "ContainerCreating"),
    "hold-container-creating": Held(
        ANY_IMAGE, {HOLD_ANNOTATION: "ContainerCreating"}, "Pending", "ContainerCreating"
    ),
    "image-unpullable": Held(IMAGE_UNPULLABLE, {}, "Pending", "ImagePullBackOff"),
    "hold-image-pull-backoff": Held(
        ANY_IMAGE, {HOLD_ANNOTATION: "ImagePullBackOff"}, "Pending", "ImagePullBackOff"
    ),
    "image-crashloop": Held(IMAGE_CRASHLOOP, {}, "Running", "CrashLoopBackOff"),
    "hold-crash-loop": Held(
        ANY_IMAGE,
        {HOLD_ANNOTATION: "CrashLoopBackOff", CRASH_EXIT_CODE_ANNOTATION: "139"},
        "Running",
        "CrashLoopBackOff",
    ),
}


def waiting_in(reason: str) -> Callable[[dict[str, Any]], bool]:
    return lambda pod: waiting_reason(pod) == reason


def test_held_pods_show_as_a_real_kubelet_shows_them_and_never_get_ready(
    cluster: Cluster, namespace: str
) -> None:
    for name, held in HELD_PODS.items():
        apply(cluster, namespace, cpu_pod(name, image=held.image, annotations=held.annotations))
    for name, held in HELD_PODS.items():
        wait_pod(
            cluster,
            namespace,
            name,
            waiting_in(held.reason),
            what=f"waiting in {held.reason}",
            timeout=30,
        )

    def shows_held(name: str, held: Held) -> bool:
        pod = get_pod(cluster, namespace, name) or {}
        status = pod.get("status", {})
        return (
            not pod_ready(pod)
            and not status.get("podIP")
            and status.get("phase") == held.phase
            and waiting_reason(pod) == held.reason
        )

    holds_for(
        lambda: all(shows_held(name, held) for name, held in HELD_PODS.items()),
        duration=3,
        what="every held pod in its state, not Ready and without an IP",
        detail=lambda: {n: get_pod(cluster, namespace, n) for n in HELD_PODS},
    )

    unpullable = get_pod(cluster, namespace, "image-unpullable") or {}
    message = unpullable["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert f'Back-off pulling image "{IMAGE_UNPULLABLE}"' in message
    failed = cluster.get_json(
        "events", "-n", namespace,
        "--field-selector", "involvedObject.name=image-unpullable,reason=Failed",
    )["items"]  # fmt: skip
    assert {e["message"] for e in failed} >= {"Error: ErrImagePull", "Error: ImagePullBackOff"}
    crashed = get_pod(cluster, namespace, "hold-crash-loop") or {}
    container = crashed["status"]["containerStatuses"][0]
    assert container["restartCount"] >= 1
    assert container["lastState"]["terminated"]["exitCode"] == 139


# -- hostPath Directory volumes: the process kubelet checks, kwok waits ---------------


def volume_pod(
    name: str, node: str, volumes: list[dict[str, Any]], *, image: str = ANY_IMAGE
) -> dict[str, Any]:
    """A pod pinned to ``node`` that mounts ``volumes`` read-only, as a serving pod does."""
    container = {
        "name": "main",
        "image": image,
        "volumeMounts": [
            {"name": v["name"], "mountPath": f"/{v['name']}", "readOnly": True} for v in volumes
        ],
    }
    spec = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [GPU_TOLERATION],
        "containers": [container],
        "volumes": volumes,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def directory(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": "Directory"}}


def failed_mounts(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = cluster.get_json(
        "events", "-n", namespace,
        "--field-selector", f"involvedObject.name={name},reason=FailedMount",
    )["items"]  # fmt: skip
    return sorted(e["message"] for e in events)


def test_a_pod_waits_in_container_creating_until_its_host_path_directory_exists(
    cluster: Cluster, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    node = f"{cluster.topology}-1"
    # A cache root of the test's own: the session's simulated disks outlive a test.
    weights = f"/var/lib/mistral-operator/{namespace}/models/key"
    pods = {
        "server": volume_pod("server", node, [directory("model", weights)]),
        # A real kubelet mounts before it pulls: ContainerCreating first, then the pull fails.
        "unpullable": volume_pod(
            "unpullable", node, [directory("model", weights)], image=IMAGE_UNPULLABLE
        ),
    }
    for pod in pods.values():
        apply(cluster, namespace, pod)
    for name in pods:
        wait_pod(
            cluster, namespace, name, waiting_in("ContainerCreating"),
            what="ContainerCreating while its hostPath is missing", timeout=20,
        )  # fmt: skip
    wait_for(
        lambda: all(failed_mounts(cluster, namespace, name) for name in pods),
        timeout=10,
        what="a FailedMount event for each pod",
    )
    assert failed_mounts(cluster, namespace, "server") == [
        'MountVolume.SetUp failed for volume "model" : '
        f"hostPath type check failed: {weights} is not a directory"
    ]

    def held(name: str) -> bool:
        pod = get_pod(cluster, namespace, name) or {}
        return (
            pod["status"]["phase"] == "Pending"
            and waiting_in("ContainerCreating")(pod)
            and not pod_ready(pod)
            and not pod["status"].get("podIP")
            and MOUNTED_ANNOTATION not in (pod["metadata"].get("annotations") or {})
        )

    holds_for(
        lambda: all(held(name) for name in pods),
        duration=3,
        what="both pods held in ContainerCreating",
        detail=lambda: {n: get_pod(cluster, namespace, n) for n in pods},
    )

    # The directory appears on that node (a fill would make it): both go on.
    process_kubelet.host_path(node, weights).mkdir(parents=True)
    wait_pod(cluster, namespace, "server", pod_ready, what="Ready once mounted", timeout=20)
    server = get_pod(cluster, namespace, "server") or {}
    assert server["status"]["podIP"]
    assert MOUNTED_ANNOTATION in server["metadata"]["annotations"]
    wait_pod(
        cluster, namespace, "unpullable", waiting_in("ImagePullBackOff"),
        what="ImagePullBackOff once mounted", timeout=20,
    )  # fmt: skip


def test_a_server_that_cannot_load_its_cached_weights_crash_loops_until_they_are_there(
    cluster: Cluster, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    """A serving pod reading a cache's copy from a claim mounts it at once (the claim is
    bound), but its server exits while the copy is missing or lacks a file the manifest
    lists; the next restart after the copy is whole loads it, as a real SGLang would."""
    node = f"{cluster.topology}-1"
    claim = "weights"
    volume = make_claim(cluster, namespace, claim)
    try:
        pod = volume_pod(
            "server", node, [{"name": "model", "persistentVolumeClaim": {"claimName": claim}}]
        )
        pod["metadata"]["labels"] = {"mistral-operator.dev/cache-key": "key"}
        pod["spec"]["containers"][0]["args"] = ["--model-path", "/model/sub/key"]
        apply(cluster, namespace, pod)
        wait_pod(
            cluster, namespace, "server", waiting_in("CrashLoopBackOff"),
            what="CrashLoopBackOff while the weights are missing", timeout=20,
        )  # fmt: skip
        held = get_pod(cluster, namespace, "server") or {}
        assert not pod_ready(held)
        load_failures = cluster.get_json(
            "events", "-n", namespace,
            "--field-selector", "involvedObject.name=server,reason=ModelLoadFailed",
        )["items"]  # fmt: skip
        assert [e["message"] for e in load_failures] == [
            "the server cannot load its weights: key: no such directory"
        ]

        # A copy whose manifest lists a file it lacks does not load either.
        copy = process_kubelet.claim_dir(namespace, claim) / "sub" / "key"
        copy.mkdir(parents=True)
        files = [{"path": "a.safetensors", "size": 3}]
        (copy / ".mistral-cache.json").write_text(json.dumps({"files": files}))
        holds_for(
            lambda: waiting_in("CrashLoopBackOff")(get_pod(cluster, namespace, "server") or {}),
            duration=2,
            what="still crash-looping without the listed file",
        )
        (copy / "a.safetensors").write_bytes(b"abc")
        wait_pod(cluster, namespace, "server", pod_ready, what="Ready once it loads", timeout=20)
    finally:
        cluster.kubectl("delete", "pod", "-n", namespace, "server", "--wait=false", check=False)
        cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)


def test_pods_without_host_path_directories_start_at_once(cluster: Cluster, namespace: str) -> None:
    node = f"{cluster.topology}-1"
    root = f"/var/lib/mistral-operator/{namespace}"
    pods = [
        volume_pod("no-volumes", node, []),
        volume_pod(
            "other-volumes",
            node,
            [
                {"name": "scratch", "emptyDir": {}},
                {"name": "made", "hostPath": {"path": f"{root}/made", "type": "DirectoryOrCreate"}},
                {"name": "any", "hostPath": {"path": f"{root}/any"}},
            ],
        ),
    ]
    start_pods(cluster, namespace, *pods)
    for pod in pods:
        obj = get_pod(cluster, namespace, pod["metadata"]["name"]) or {}
        assert MOUNTED_ANNOTATION not in (obj["metadata"].get("annotations") or {})
        assert not failed_mounts(cluster, namespace, pod["metadata"]["name"])


def test_a_pod_with_a_startup_delay_is_ready_only_after_it(
    cluster: Cluster, namespace: str
) -> None:
    """A model that takes a while to load: SIM_STARTUP_DELAY keeps the pod from Ready."""
    slow = cpu_pod("slow-start", "cpu-0")
    slow["spec"]["containers"][0]["env"] = [{"name": "SIM_STARTUP_DELAY", "value": "4s"}]
    quick = cpu_pod("quick-start", "cpu-0")
    created = time.monotonic()
    apply(cluster, namespace, slow)
    apply(cluster, namespace, quick)
    wait_pod(cluster, namespace, "quick-start", pod_ready, what="Ready at once", timeout=10)
    holds_for(
        lambda: not pod_ready(get_pod(cluster, namespace, "slow-start") or {}),
        duration=max(0.0, created + 2.5 - time.monotonic()),
        what="the slow pod not Ready during its startup",
    )
    wait_pod(cluster, namespace, "slow-start", pod_ready, what="Ready after 4s", timeout=30)
