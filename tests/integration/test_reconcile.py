"""Reconcile on the local control plane: replica groups on simulated H200 nodes."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.audit import AuditLog
from tests.support.cluster import Cluster
from tests.support.models import (
    BLOCK,
    MODEL,
    apply,
    condition,
    model,
    multinode,
    nodes_by_name,
    pods,
    running_groups,
    serve_multinode,
    serve_quickstart,
    table,
)
from tests.support.nodes import healthy, restore_node
from tests.support.operator import RunningOperator
from tests.support.sglang_sim import SimulatorFleet
from tests.support.wait import holds_for, wait_for


@pytest.fixture
def restore_nodes(cluster: Cluster) -> Iterator[None]:
    """Tests that break nodes leave the topology as they found it."""
    yield
    for node in cluster.get_json("nodes")["items"]:
        if not healthy(node):
            restore_node(cluster, node["metadata"]["name"])
    Cluster.up(cluster.topology)  # re-creates deleted nodes


def test_the_quick_start_packs_four_compact_replicas_on_one_node(
    cluster: Cluster, model_namespace: str
) -> None:
    ns = model_namespace
    serve_quickstart(cluster, ns, replicas=4)
    groups = running_groups(cluster, ns)
    assert sorted(groups) == ["g0", "g1", "g2", "g3"]
    members = [pod for group in groups.values() for pod in group]
    assert len(members) == 4, "a Compact replica is one pod"
    assert len({p["spec"]["nodeName"] for p in members}) == 1, "all four share one node"
    for pod in members:
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        flag = dict(zip(container["args"][::2], container["args"][1::2], strict=False))
        assert flag["--tp-size"] == "2"
        assert "--nnodes" not in flag
        assert "--ep-size" not in flag
    topology = model(cluster, ns)["status"]["topology"]
    assert topology["shape"] == "Compact"
    assert topology["gpusPerReplica"] == 2
    assert topology["replicasPerNode"] == 4
    assert topology["memory"].startswith("2 x H200: weights 110.8 GiB (fp8)")
    (row,) = table(cluster.kubectl("get", "mm", "-n", ns).stdout)
    assert row["GPUS/REPLICA"] == "2"
    assert row["QUEUE"] == "", "no autoscaler: nothing read"
    # A fifth replica needs another node.
    cluster.kubectl("scale", "mm", MODEL, "-n", ns, "--replicas=5")
    wait_for(
        lambda: model(cluster, ns)["status"].get("readyReplicas") == 5,
        timeout=30,
        what="5 replicas ready",
    )
    nodes = {p["spec"]["nodeName"] for g in running_groups(cluster, ns).values() for p in g}
    assert len(nodes) == 2


def test_multinode_replicas_give_two_pinned_groups_with_expert_parallelism(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    ns = model_namespace
    serve_multinode(cluster, ns, replicas=2)

    groups = running_groups(cluster, ns)
    assert sorted(groups) == ["g0", "g1"]
    nodes = nodes_by_name(cluster)
    used: list[str] = []
    for members in groups.values():
        assert len(members) == 2
        blocks = {nodes[p["spec"]["nodeName"]]["metadata"]["labels"][BLOCK] for p in members}
        assert len(blocks) == 1, f"a group spans blocks {blocks}"
        for pod in members:
            used.append(pod["spec"]["nodeName"])
            limits = pod["spec"]["containers"][0]["resources"]["limits"]
            assert limits["nvidia.com/gpu"] == "8"
            pinned = pod["spec"]["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]["nodeSelectorTerms"][0]["matchExpressions"][0]
            assert pinned == {
                "key": "kubernetes.io/hostname",
                "operator": "In",
                "values": [pod["spec"]["nodeName"]],
            }
    assert len(used) == len(set(used)) == 4, "each pod alone on its node"

    leader = next(
        p for p in groups["g0"] if p["metadata"]["labels"]["mistral-operator.dev/rank"] == "0"
    )
    args = leader["spec"]["containers"][0]["args"]
    flag = dict(zip(args[::2], args[1::2], strict=False))
    assert flag["--nnodes"] == "2"
    assert flag["--node-rank"] == "0"
    assert flag["--tp-size"] == "16"
    assert flag["--ep-size"] == "16"
    # Attention is data-parallel on every GPU, never tensor-parallel across the nodes.
    assert flag["--attn-dp-size"] == "16"
    assert flag["--moe-a2a-backend"] == "deepep"
    # --dist-init-addr is the leader's own DNS name under the headless Service.
    headless = cluster.get_json("service", f"{MODEL}-ranks", "-n", ns)
    host, port = flag["--dist-init-addr"].rsplit(":", 1)
    assert host == f"{leader['spec']['hostname']}.{leader['spec']['subdomain']}.{ns}.svc"
    assert leader["spec"]["subdomain"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    selected = cluster.get_json(
        "pods",
        "-n",
        ns,
        "-l",
        ",".join(f"{k}={v}" for k, v in headless["spec"]["selector"].items()),
    )
    assert leader["metadata"]["name"] in {p["metadata"]["name"] for p in selected["items"]}
    assert any(p["port"] == int(port) for p in headless["spec"]["ports"])

    # The client Service routes to the serving leaders only.
    client = cluster.get_json("service", MODEL, "-n", ns)
    routed = cluster.get_json(
        "pods", "-n", ns, "-l", ",".join(f"{k}={v}" for k, v in client["spec"]["selector"].items())
    )
    assert sorted(p["metadata"]["name"] for p in routed["items"]) == [
        f"{MODEL}-g0-0",
        f"{MODEL}-g1-0",
    ]

    status = model(cluster, ns)["status"]
    assert status["readyReplicas"] == 2
    assert status["observedGeneration"] == model(cluster, ns)["metadata"]["generation"]
    assert status["topology"]["nodesPerReplica"] == 2
    assert status["topology"]["shape"] == "MultiNode"
    printed = cluster.kubectl("get", "mm", "-n", ns).stdout
    assert "Ready" in printed.splitlines()[1]

    # The operator's own metrics tell the same story.
    serving = (
        f'mistral_operator_replica_groups{{model="{MODEL}",namespace="{ns}",state="Serving"}} 2.0'
    )
    wait_for(lambda: serving in operator.metrics(), timeout=30, what="2 serving groups in /metrics")
    metrics = operator.metrics()
    assert 'mistral_operator_reconciles_total{result="success"}' in metrics
    assert "mistral_operator_reconcile_duration_seconds_count" in metrics
    assert 'mistral_operator_api_requests_total{kind="Pod",verb="apply"}' in metrics


def test_a_third_replica_that_cannot_fit_is_reported_and_nothing_thrashes(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    ns = model_namespace
    apply(cluster, ns, multinode(replicas=3))

    def reported() -> dict[str, Any] | None:
        mm = model(cluster, ns)
        cond = condition(mm, "Schedulable")
        serving = [g for g in mm["status"].get("groups", []) if g["state"] == "Serving"]
        return cond if cond and cond["status"] == "False" and len(serving) == 2 else None

    cond = wait_for(
        reported, timeout=90, what="2 groups running and the third reported unschedulable"
    )
    assert cond["reason"] == "InsufficientGPUs"
    assert "1 replica group(s) cannot be placed" in cond["message"]
    assert "2 nodes x 8 GPUs (16 GPUs" in cond["message"]
    events = cluster.get_json("events", "-n", ns, "--field-selector", "reason=Unschedulable")[
        "items"
    ]
    assert events, "an Unschedulable event names the shortage"

    audit = AuditLog.of(cluster)
    audit.mark()
    # Many reconciles' worth (each node or pod event wakes one): none writes a pod.
    holds_for(
        lambda: not audit.writes(user=operator.user, resource="pods", namespace=ns),
        duration=20,
        interval=2,
        what="no pod writes while the third group cannot be placed",
        detail=lambda: audit.writes(user=operator.user, resource="pods", namespace=ns),
    )
    assert len(running_groups(cluster, ns)) == 2


def test_group_on_a_deleted_node_is_recreated_elsewhere(
    cluster: Cluster, model_namespace: str, restore_nodes: None
) -> None:
    ns = model_namespace
    serve_multinode(cluster, ns, replicas=1)
    gone = running_groups(cluster, ns)["g0"][0]["spec"]["nodeName"]
    cluster.kubectl("delete", "node", gone)

    def moved() -> bool:
        members = running_groups(cluster, ns).get("g0", [])
        return len(members) == 2 and gone not in {p["spec"]["nodeName"] for p in members}

    wait_for(moved, timeout=90, what=f"group g0 recreated away from deleted node {gone}")
    failure = model(cluster, ns)["status"]["groups"][0]["lastFailure"]
    assert failure["reason"] == "NodeLost"


def test_unrelated_label_change_writes_no_pods(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    ns = model_namespace
    serve_quickstart(cluster, ns, replicas=1)
    audit = AuditLog.of(cluster)
    # The reconcile that saw the group turn ready may still be writing its status.
    wait_for(
        lambda: model(cluster, ns)["status"]["groups"][0]["state"] == "Serving",
        timeout=30,
        what="the group to be marked serving",
    )
    audit.mark()
    cluster.kubectl("label", "mm", MODEL, "-n", ns, "team=inference")
    holds_for(
        lambda: not audit.writes(user=operator.user, resource="pods", namespace=ns),
        duration=12,
        interval=1,
        what="no pod writes after an unrelated label change",
    )
    assert "team=inference" not in operator.log_tail()  # it was not treated as a spec change


def test_deleting_the_model_leaves_nothing_behind(cluster: Cluster, model_namespace: str) -> None:
    ns = model_namespace
    serve_quickstart(cluster, ns, replicas=2)
    cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=60s", timeout=90)

    def empty() -> bool:
        left = cluster.get_json(
            "pods,services", "-n", ns, "-l", f"mistral-operator.dev/model={MODEL}"
        )
        return not left["items"]

    wait_for(empty, timeout=60, what="every pod and Service of the model to be gone")


def test_a_crashed_rank_recreates_its_group_and_records_the_exit_code(
    cluster: Cluster, model_namespace: str
) -> None:
    ns = model_namespace
    serve_multinode(cluster, ns, replicas=1)
    before = {p["metadata"]["uid"] for p in running_groups(cluster, ns)["g0"]}
    # The simulated kubelet restarts the container after it exits with 139 (SIGSEGV).
    cluster.kubectl(
        "annotate", "pod", f"{MODEL}-g0-1", "-n", ns, "sim.mistral-operator.dev/crash-exit-code=139"
    )

    def recreated() -> dict[str, Any] | None:
        members = running_groups(cluster, ns).get("g0", [])
        fresh = len(members) == 2 and before.isdisjoint(p["metadata"]["uid"] for p in members)
        record = model(cluster, ns)["status"]["groups"][0]
        return record if fresh and record.get("lastFailure") else None

    record = wait_for(recreated, timeout=90, what="g0 recreated after its rank 1 crashed")
    failure = record["lastFailure"]
    assert failure["reason"] == "ContainerRestarted"
    assert failure["rank"] == 1
    assert failure["exitCode"] == 139
    events = cluster.get_json("events", "-n", ns, "--field-selector", "reason=GroupFailed")["items"]
    assert any("exit code 139" in e["message"] for e in events)


def test_a_process_serves_sglang_at_the_leader_pods_ip(
    cluster: Cluster, model_namespace: str
) -> None:
    """The platform's promise: what the operator would scrape lives at the pod's own IP."""
    ns = model_namespace
    serve_quickstart(cluster, ns, replicas=1)
    with SimulatorFleet() as fleet:
        changes = fleet.sync(pods(cluster, ns))
        leader_ip = cluster.get_json("pod", f"{MODEL}-g0-0", "-n", ns)["status"]["podIP"]
        assert changes["started"] == [leader_ip]
        models = json.loads(
            urllib.request.urlopen(f"http://{leader_ip}:30000/v1/models", timeout=5).read()
        )
        served = model(cluster, ns)["status"]["endpoint"]["servedName"]
        assert [m["id"] for m in models["data"]] == [served]
        metrics = (
            urllib.request.urlopen(f"http://{leader_ip}:30000/metrics", timeout=5).read().decode()
        )
        assert "sglang:num_queue_reqs{" in metrics
        assert f'model_name="{served}"' in metrics
