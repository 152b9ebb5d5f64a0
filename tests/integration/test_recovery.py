"""Recovery on nodes that behave like real ones: dead kubelets, evictions, refusals, stuck pods.

The operator runs with a 300 s drift interval (tests/support/operator.py): every reaction
here comes from an event or from a deadline the operator set itself.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.audit import AuditLog
from tests.support.cluster import Cluster
from tests.support.models import (
    MODEL,
    apply,
    condition,
    enforce_quota,
    model,
    multinode,
    pods,
    running_groups,
    serve_multinode,
    wait_ready,
)
from tests.support.nodes import (
    IMAGE_UNPULLABLE,
    healthy,
    kill_kubelet,
    make_not_ready,
)
from tests.support.operator import RunningOperator
from tests.support.wait import holds_for, wait_for

SERVING = "mistral-operator.dev/serving"
GROUP = "mistral-operator.dev/group"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# The operator's node grace in tests (tests/support/operator.py).
NODE_GRACE = timedelta(seconds=5)


@pytest.fixture(scope="module")
def webhook() -> bool:
    """This module's operator runs without the validating webhook, so that a spec it would
    refuse is stored, as while no replica answers under failurePolicy Ignore, or as one
    stored before an upgrade added a rule: what serves must be kept all the same."""
    return False


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def pod_uids(cluster: Cluster, ns: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(cluster, ns)}


def group_record(cluster: Cluster, ns: str, name: str = "g0") -> dict[str, Any]:
    return next(g for g in model(cluster, ns)["status"]["groups"] if g["name"] == name)


def leader_labels(cluster: Cluster, ns: str, group: str = "g0") -> dict[str, str]:
    pod = cluster.get_json("pod", f"{MODEL}-{group}-0", "-n", ns)
    return dict(pod["metadata"].get("labels") or {})


def test_a_deleted_worker_tears_its_group_down_at_once_and_it_returns_after_its_backoff(
    cluster: Cluster, model_namespace: str
) -> None:
    ns = model_namespace
    serve_multinode(cluster, ns, replicas=1)
    before = pod_uids(cluster, ns)
    cluster.kubectl("delete", "pod", f"{MODEL}-g0-1", "-n", ns, "--wait=false")
    deleted = time.monotonic()

    def leader_going() -> bool:
        leader = cluster.get_json(
            "pods", "-n", ns, "--field-selector", f"metadata.name={MODEL}-g0-0"
        )
        items = leader["items"]
        return (
            not items
            or items[0]["metadata"]["uid"] != before[f"{MODEL}-g0-0"]
            or bool(items[0]["metadata"].get("deletionTimestamp"))
        )

    wait_for(leader_going, timeout=10, interval=0.05, what="the surviving leader to be deleted")
    print(f"teardown after a worker deletion: {time.monotonic() - deleted:.2f} s")

    def back() -> bool:
        now = pod_uids(cluster, ns)
        return len(now) == 2 and not set(now.values()) & set(before.values())

    wait_for(back, timeout=30, what="g0 recreated under its own name after its 1 s backoff")
    print(f"group recreated after: {time.monotonic() - deleted:.2f} s")
    wait_ready(cluster, ns)
    record = group_record(cluster, ns)
    assert record["lastFailure"]["reason"] == "PodDeleted"
    assert record["recreations"] == 1
    assert sorted(running_groups(cluster, ns)) == ["g0"], "no second group was started"


def test_not_ready_past_the_grace_is_acted_on_at_once_and_terminating_pods_are_forced(
    cluster: Cluster, model_namespace: str, broken_nodes: list[str]
) -> None:
    ns = model_namespace
    serve_multinode(cluster, ns, replicas=1)
    worker = cluster.get_json("pod", f"{MODEL}-g0-1", "-n", ns)
    node = worker["spec"]["nodeName"]
    broken_nodes.append(node)
    make_not_ready(cluster, node)
    ready = next(
        c for c in cluster.get_json("node", node)["status"]["conditions"] if c["type"] == "Ready"
    )
    grace_ends = parse(ready["lastTransitionTime"]) + NODE_GRACE

    def worker_gone() -> datetime | None:
        left = cluster.get_json(
            "pods", "-n", ns, "--field-selector", f"metadata.name={MODEL}-g0-1"
        )["items"]
        fresh = [p for p in left if p["metadata"]["uid"] != worker["metadata"]["uid"]]
        return datetime.now(UTC) if len(left) == len(fresh) else None

    # The node's kubelet confirms nothing: only a deletion without grace removes the pod.
    gone_at = wait_for(worker_gone, timeout=30, interval=0.1, what=f"the pod on {node} removed")
    print(f"acted on {(gone_at - grace_ends).total_seconds():.2f} s after the node grace ended")

    def moved() -> list[str] | None:
        members = running_groups(cluster, ns).get("g0", [])
        nodes = [p["spec"]["nodeName"] for p in members]
        return nodes if len(members) == 2 and node not in nodes else None

    wait_for(moved, timeout=60, what=f"g0 running again away from {node}")
    wait_ready(cluster, ns)
    failure = group_record(cluster, ns)["lastFailure"]
    assert (failure["reason"], failure["node"]) == ("NodeNotReady", node)


def test_a_dead_kubelet_does_not_strand_its_group(
    cluster: Cluster, model_namespace: str, broken_nodes: list[str]
) -> None:
    ns = model_namespace
    serve_multinode(cluster, ns, replicas=1)
    node = cluster.get_json("pod", f"{MODEL}-g0-0", "-n", ns)["spec"]["nodeName"]
    broken_nodes.append(node)
    kill_kubelet(cluster, node)

    def moved() -> bool:
        members = running_groups(cluster, ns).get("g0", [])
        return len(members) == 2 and node not in {p["spec"]["nodeName"] for p in members}

    # The controller manager gives up on the node after 15 s; then the operator's grace.
    wait_for(moved, timeout=90, what=f"g0 running away from the dead node {node}")
    wait_ready(cluster, ns)
    stranded = [p for p in pods(cluster, ns) if p["spec"].get("nodeName") == node]
    assert stranded == [], "no pod is left Terminating on the dead node"
    assert group_record(cluster, ns)["lastFailure"]["node"] == node


def test_an_eviction_is_recorded_and_the_group_returns_whole_after_its_backoff(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    ns = model_namespace
    serve_multinode(cluster, ns, replicas=1)
    audit = AuditLog.of(cluster)
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": f"{MODEL}-g0-1", "namespace": ns},
    }
    cluster.kubectl(
        "create", "--raw", f"/api/v1/namespaces/{ns}/pods/{MODEL}-g0-1/eviction",
        "-f", "-", input=json.dumps(eviction),
    )  # fmt: skip

    def recorded() -> dict[str, Any] | None:
        record = group_record(cluster, ns)
        failure = record.get("lastFailure") or {}
        return record if failure.get("reason") == "EvictionByEvictionAPI" else None

    record = wait_for(recorded, timeout=20, what="the eviction recorded as g0's failure")
    assert record["recreations"] == 1
    wait_for(
        lambda: len(running_groups(cluster, ns).get("g0", [])) == 2,
        timeout=30,
        what="g0 back with both ranks",
    )
    wait_ready(cluster, ns)
    writes = audit.writes(user=operator.user, resource="pods", namespace=ns)
    # Server-side apply creates with a patch; only g0's own pods were ever written.
    assert f"patch {MODEL}-g0-1" in writes, writes
    assert all(w.rsplit(" ", 1)[-1].startswith(f"{MODEL}-g0-") for w in writes), writes


def test_a_held_group_is_taken_out_of_traffic(cluster: Cluster, model_namespace: str) -> None:
    ns = model_namespace
    manifest = multinode(replicas=1)
    manifest["spec"]["groupFailurePolicy"] = {"action": "Hold"}
    apply(cluster, ns, manifest)
    wait_ready(cluster, ns)
    wait_for(
        lambda: leader_labels(cluster, ns).get(SERVING) == "true",
        timeout=10,
        what="the leader routed",
    )
    cluster.kubectl(
        "annotate", "pod", f"{MODEL}-g0-1", "-n", ns, "sim.mistral-operator.dev/crash-exit-code=1"
    )
    wait_for(
        lambda: SERVING not in leader_labels(cluster, ns),
        timeout=15,
        what="the held group's leader out of the client Service",
    )
    assert group_record(cluster, ns)["state"] == "Held"
    held = [p for p in pods(cluster, ns) if p["metadata"]["labels"][GROUP] == "g0"]
    assert len(held) == 2, "a held group keeps its pods for inspection"


def test_a_rank_refused_by_a_quota_is_recorded_as_a_create_failure(
    cluster: Cluster, model_namespace: str
) -> None:
    ns = model_namespace
    enforce_quota(cluster, ns, "one-pod", {"pods": "1"})
    apply(cluster, ns, multinode(replicas=1))

    def refused() -> dict[str, Any] | None:
        groups = model(cluster, ns).get("status", {}).get("groups") or []
        failure = (groups[0].get("lastFailure") or {}) if groups else {}
        return failure if failure.get("reason") == "CreateFailed" else None

    failure = wait_for(refused, timeout=30, what="g0's refused rank recorded")
    assert "exceeded quota" in failure["message"]
    events = cluster.get_json("events", "-n", ns, "--field-selector", "reason=CreateFailed")
    assert any("exceeded quota" in e["message"] for e in events["items"])
    ready = condition(model(cluster, ns), "Ready")
    assert ready is not None
    assert ready["status"] == "False"


def test_an_unpullable_image_fails_the_group_with_the_kubelets_reason(
    cluster: Cluster, model_namespace: str
) -> None:
    ns = model_namespace
    manifest = multinode(replicas=1)
    manifest["spec"]["runtime"] = {"image": IMAGE_UNPULLABLE}
    apply(cluster, ns, manifest)

    def failed() -> dict[str, Any] | None:
        groups = model(cluster, ns).get("status", {}).get("groups") or []
        failure = (groups[0].get("lastFailure") or {}) if groups else {}
        return failure if failure.get("reason") in {"ImagePullBackOff", "ErrImagePull"} else None

    wait_for(failed, timeout=30, what="g0 failed for its image")
    degraded = condition(model(cluster, ns), "Degraded")
    assert degraded is not None
    assert degraded["status"] == "True"


def test_gpus_held_in_namespaces_the_operator_does_not_watch_are_counted(
    cluster: Cluster, model_namespace: str, namespace: str
) -> None:
    """The operator watches rt-* only; a GPU pod in another namespace still holds its node."""
    nodes = [
        n["metadata"]["name"]
        for n in cluster.get_json("nodes", "-l", "nvidia.com/gpu.product=NVIDIA-H200")["items"]
        if healthy(n)
    ]
    taken = nodes[0]
    foreign = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "training-job"},
        "spec": {
            "nodeName": taken,
            "tolerations": [GPU_TOLERATION],
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/train:1",
                    "resources": {"limits": {"nvidia.com/gpu": "8"}},
                }
            ],
        },
    }
    apply(cluster, namespace, foreign)
    apply(cluster, model_namespace, multinode(replicas=2))

    def short() -> dict[str, Any] | None:
        cond = condition(model(cluster, model_namespace), "Schedulable")
        return cond if cond and cond["status"] == "False" else None

    wait_for(short, timeout=30, what="the second group reported unschedulable")
    used = {p["spec"].get("nodeName") for p in pods(cluster, model_namespace)}
    assert taken not in used
    # The foreign pod goes: its GPUs are free again and the waiting group is placed.
    cluster.kubectl("delete", "pod", "training-job", "-n", namespace, "--wait=false")
    wait_ready(cluster, model_namespace, timeout=30)


def test_a_pod_change_rolls_at_once_and_other_changes_roll_nothing(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    ns = model_namespace
    manifest = multinode(replicas=2)
    # No room to surge on 4 nodes: one group at a time, 10% of 2 rounding to one.
    manifest["spec"]["rollout"] = {"maxSurge": 0, "maxUnavailable": "10%"}
    apply(cluster, ns, manifest)
    wait_ready(cluster, ns)
    revision = model(cluster, ns)["status"]["updateRevision"]
    audit = AuditLog.of(cluster)
    manifest["spec"]["groupFailurePolicy"] = {"initialBackoffSeconds": 2, "maxBackoffSeconds": 60}
    apply(cluster, ns, manifest)
    wait_for(
        lambda: model(cluster, ns)["status"]["observedGeneration"] == 2,
        timeout=10,
        what="the operator to see generation 2",
    )
    holds_for(
        lambda: not audit.writes(user=operator.user, resource="pods", namespace=ns),
        duration=5,
        what="no pod writes for a change that reaches no pod",
    )
    assert model(cluster, ns)["status"]["updateRevision"] == revision

    manifest["spec"]["runtime"] = {"extraArgs": ["--mem-fraction-static", "0.85"]}
    apply(cluster, ns, manifest)

    def rolled() -> bool:
        status = model(cluster, ns)["status"]
        groups = running_groups(cluster, ns)
        revisions = {
            p["metadata"]["labels"]["mistral-operator.dev/revision"]
            for g in groups.values()
            for p in g
        }
        return (
            status["updateRevision"] != revision
            and status.get("currentRevision") == status["updateRevision"]
            and status["readyReplicas"] == 2
            and revisions == {status["updateRevision"]}
        )

    wait_for(rolled, timeout=90, what="both groups rolled to the new revision")


def test_an_invalid_edit_keeps_what_serves_and_reports_a_failure_without_replacing(
    cluster: Cluster, model_namespace: str
) -> None:
    ns = model_namespace
    manifest = multinode(replicas=1)
    apply(cluster, ns, manifest)
    wait_ready(cluster, ns)
    manifest["spec"]["parallelism"] = {"attentionDataParallelSize": 3}
    apply(cluster, ns, manifest)

    def invalid() -> dict[str, Any] | None:
        cond = condition(model(cluster, ns), "Degraded")
        return cond if cond and cond["reason"] == "InvalidSpec" else None

    cond = wait_for(invalid, timeout=10, what="the InvalidSpec condition")
    assert "spec.parallelism.attentionDataParallelSize" in cond["message"]
    ready = condition(model(cluster, ns), "Ready")
    assert ready is not None
    assert ready["status"] == "True", "the group of the last valid spec still serves"
    cluster.kubectl(
        "annotate", "pod", f"{MODEL}-g0-1", "-n", ns, "sim.mistral-operator.dev/crash-exit-code=1"
    )
    wait_for(
        lambda: (condition(model(cluster, ns), "Ready") or {}).get("status") == "False",
        timeout=15,
        what="Ready to turn False once the only group failed",
    )
    assert SERVING not in leader_labels(cluster, ns)
    # Fixing the spec brings the group back.
    del manifest["spec"]["parallelism"]
    apply(cluster, ns, manifest)
    wait_ready(cluster, ns, timeout=60)
