"""MistralModels as tests drive them: the quick start applied, its pods, status and groups read."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.support import weights
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.wait import wait_for

BLOCK = "network.topology.nvidia.com/block"
MODEL = "mistral-small-4"


def quickstart(replicas: int, **placement: Any) -> dict[str, Any]:
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "quickstart-h200.yaml").read_text())
    manifest["spec"]["replicas"] = replicas
    manifest["spec"]["placement"] = {"topologyKey": BLOCK, **placement}
    # The fills read the session's stub hub (tests.support.weights), as from a mirror.
    manifest["spec"]["model"]["credentialsSecretRef"] = {"name": weights.SECRET}
    # Recreate failed groups quickly; the backoff itself is covered by unit tests.
    manifest["spec"]["groupFailurePolicy"] = {"initialBackoffSeconds": 1}
    return dict(manifest)


def multinode(replicas: int, nodes: int = 2) -> dict[str, Any]:
    """The quick start as MultiNode replicas: one pod on each of ``nodes`` nodes per group,
    so tests can break one rank of a group and watch the whole group."""
    manifest = quickstart(replicas)
    manifest["spec"]["parallelism"] = {"shape": "MultiNode", "nodesPerReplica": nodes}
    return manifest


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items = cluster.get_json("pods", "-n", namespace, "-l", f"mistral-operator.dev/model={MODEL}")
    return list(items["items"])


def model(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return dict(cluster.get_json("mm", MODEL, "-n", namespace))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None
    )


def running_groups(cluster: Cluster, namespace: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for pod in pods(cluster, namespace):
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            groups.setdefault(pod["metadata"]["labels"]["mistral-operator.dev/group"], []).append(
                pod
            )
    return groups


def wait_ready(cluster: Cluster, namespace: str, timeout: int = 90) -> None:
    result = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", f"mm/{MODEL}", f"--timeout={timeout}s",
        check=False, timeout=timeout + 30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def serve_quickstart(cluster: Cluster, namespace: str, replicas: int) -> None:
    """Apply the quick start with ``replicas`` Compact replicas and wait until it is Ready."""
    apply(cluster, namespace, quickstart(replicas=replicas))
    wait_ready(cluster, namespace)


def serve_multinode(cluster: Cluster, namespace: str, replicas: int) -> None:
    """Apply the quick start with ``replicas`` 2-node groups and wait until it is Ready."""
    apply(cluster, namespace, multinode(replicas=replicas))
    wait_ready(cluster, namespace)


def nodes_by_name(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}


def table(printed: str) -> list[dict[str, str]]:
    """Rows of a `kubectl get` table by column name, cut at the header's column starts
    (an empty cell, such as the Queue of a model without autoscaling, stays empty)."""
    header, *rows = printed.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [
        {name: row[a:b].strip() for name, (a, b) in zip(names, bounds, strict=True)} for row in rows
    ]


def enforce_quota(cluster: Cluster, namespace: str, name: str, hard: dict[str, str]) -> None:
    """A ResourceQuota in ``namespace``, once the quota controller enforces it (until it
    has counted usage, the API server admits everything)."""
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
             "spec": {"hard": hard}}  # fmt: skip
    apply(cluster, namespace, quota)
    wait_for(
        lambda: cluster.get_json("resourcequota", name, "-n", namespace)["status"].get("hard"),
        timeout=20,
        what="the quota to be enforced",
    )
