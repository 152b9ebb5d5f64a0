"""Node weight caches as integration tests drive them: a model reading a revision only its
test serves, what its status and the nodes say of the cache, and where the files are."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.support.cluster import Cluster
from tests.support.models import model, quickstart
from tests.support.stub_hub import StubHub
from tests.support.weights import REPO_ID, SECRET, weight_files

HOST_PATH = "/var/lib/mistral-operator/models"  # the quick start's cache.hostPath
CACHE_LABEL_PREFIX = "cache.mistral-operator.dev/"
GC_ANNOTATION_PREFIX = "gc.cache.mistral-operator.dev/"


def serve_revision(hub: StubHub) -> str:
    """A revision name only this test uses, served by ``hub`` beside those it serves already."""
    revision = f"t-{uuid.uuid4().hex[:10]}"
    repo = hub.repos.get(REPO_ID)
    if repo is None:
        hub.add_repo(REPO_ID, weight_files(), refs=(revision,))
    else:
        repo.refs[revision] = repo.commit
    return revision


def cached_quickstart(hub: StubHub, replicas: int = 1, **cache: Any) -> dict[str, Any]:
    """The quick start reading a revision only this test serves (a key no node holds)."""
    manifest = quickstart(replicas)
    manifest["spec"]["model"]["revision"] = serve_revision(hub)
    manifest["spec"]["model"]["credentialsSecretRef"] = {"name": SECRET}
    if cache:
        manifest["spec"]["cache"] = cache
    return manifest


def cache_status(cluster: Cluster, ns: str) -> dict[str, Any]:
    return dict(model(cluster, ns).get("status", {}).get("cache") or {})


def cache_nodes(cluster: Cluster, ns: str) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in cache_status(cluster, ns).get("nodes") or []}


def node_label(cluster: Cluster, node: str, key: str) -> str | None:
    labels = cluster.get_json("node", node)["metadata"].get("labels") or {}
    value = labels.get(CACHE_LABEL_PREFIX + key)
    return str(value) if value is not None else None


def key_marks(cluster: Cluster, node: str, key: str) -> dict[str, str]:
    """What a node says of ``key``: its label, its contents annotation and its GC note
    (``label``, ``annotation``, ``gc``), each left out when absent."""
    meta = cluster.get_json("node", node)["metadata"]
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    found = {
        "label": labels.get(CACHE_LABEL_PREFIX + key),
        "annotation": notes.get(CACHE_LABEL_PREFIX + key),
        "gc": notes.get(GC_ANNOTATION_PREFIX + key),
    }
    return {k: str(v) for k, v in found.items() if v is not None}


def fill_jobs(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    jobs = cluster.get_json("jobs", "-n", ns, "-l", "mistral-operator.dev/component=cache-fill")
    return list(jobs["items"])


def pinned(pod: dict[str, Any]) -> str:
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    return str(terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0])


def make_claim(cluster: Cluster, namespace: str, claim: str) -> str:
    """A PersistentVolumeClaim bound to a static PersistentVolume of its own, as an
    administrator would provision a shared volume; returns the volume's name.

    The real PV controller binds them; the process kubelet keeps the claim's files in a
    directory of its own (``ProcessKubelet.claim_dir``), whatever the volume's source says.
    """
    volume = f"{namespace}-{claim}"
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"namespace": namespace, "name": claim},
                "hostPath": {"path": f"/srv/claims/{volume}"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "10Gi"}},
                "storageClassName": "",
                "volumeName": volume,
            },
        },
    ]
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    cluster.kubectl(
        "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Bound", f"pvc/{claim}",
        "--timeout=30s", timeout=45,
    )  # fmt: skip
    return volume


def claim_marks(cluster: Cluster, namespace: str, claim: str, key: str) -> dict[str, str]:
    """What a claim says of ``key``: its ``label`` and contents ``annotation``, when present."""
    meta = cluster.get_json("pvc", claim, "-n", namespace)["metadata"]
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    found = {
        "label": labels.get(CACHE_LABEL_PREFIX + key),
        "annotation": notes.get(CACHE_LABEL_PREFIX + key),
    }
    return {k: str(v) for k, v in found.items() if v is not None}
