"""Garbage collection of the keys a SharedPVC claim holds, on the real control plane.

The operator is test_cache_gc.py's, whose GC collects within seconds (a key unused for
its RETENTION goes, in rounds every INTERVAL); the claim is test_cache_shared.py's, bound
by the real PV controller, its files in the directory the process kubelet maps it to
(`process_kubelet.claim_dir`). A claim's GC Job runs `cacheclean` in the claim's
namespace on whichever node the scheduler picks, with the claim mounted at the keys'
directory. What the tests show: a model's old revision stays on the claim while it is
the model's last good one and a pod reads it, then leaves the claim's directory, labels
and annotations; a key a pod mounting the claim reads stays, though its model is gone;
a deleted model's key leaves the claim after the retention. Errors (tracebacks) in the
operator's log fail a test (conftest).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from tests.integration.test_cache_gc import KEPT_FOR, delete_model, gc_namespace, operator
from tests.integration.test_cache_shared import SUB_PATH, claim, claim_entry, shared_quickstart
from tests.support.caches import (
    CACHE_LABEL_PREFIX,
    GC_ANNOTATION_PREFIX,
    cache_status,
    serve_revision,
)
from tests.support.cluster import Cluster
from tests.support.models import MODEL, apply, pods, wait_ready
from tests.support.operator import RunningOperator
from tests.support.process_kubelet import ProcessKubelet
from tests.support.stub_hub import StubHub
from tests.support.wait import WaitTimeoutError, holds_for, wait_for

# Fixtures of the sibling modules this one runs with (the operator needs gc_namespace).
__all__ = ["claim", "gc_namespace", "operator"]


@dataclass(frozen=True)
class Claim:
    """One claim as the GC leaves it: its directory of keys, its labels and annotations."""

    cluster: Cluster
    kubelet: ProcessKubelet
    operator: RunningOperator
    namespace: str
    name: str

    def files(self, key: str) -> list[str]:
        """What of ``key`` is in the claim's directory: the key itself, its lock, fills'
        temporary directories."""
        root = self.kubelet.claim_dir(self.namespace, self.name) / SUB_PATH
        if not root.is_dir():
            return []
        return sorted(
            p.name for p in root.iterdir() if p.name == key or p.name.startswith(f"{key}.")
        )

    def marks(self, key: str) -> dict[str, str]:
        """What the claim says of ``key``: its ``label``, contents ``annotation`` and
        ``gc`` note, each left out when absent."""
        meta = self.cluster.get_json("pvc", self.name, "-n", self.namespace)["metadata"]
        labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
        found = {
            "label": labels.get(CACHE_LABEL_PREFIX + key),
            "annotation": notes.get(CACHE_LABEL_PREFIX + key),
            "gc": notes.get(GC_ANNOTATION_PREFIX + key),
        }
        return {k: str(v) for k, v in found.items() if v is not None}

    def traces(self, key: str) -> dict[str, Any]:
        """What is left of ``key`` on the claim; empty once it has gone."""
        files, marks = self.files(key), self.marks(key)
        return {"files": files, **marks} if files or marks else {}

    def not_kept(self, key: str) -> dict[str, Any]:
        """What is off with ``key``; empty while the claim keeps it: its directory there,
        its label Ready, not even noted unused."""
        files, marks = self.files(key), self.marks(key)
        if key in files and marks.get("label") == "Ready" and "gc" not in marks:
            return {}
        return {"files": files, **marks}

    def keeps(self, key: str, why: str) -> None:
        """Assert the claim keeps ``key`` long enough for it to have gone otherwise."""
        holds_for(
            lambda: not self.not_kept(key),
            duration=KEPT_FOR,
            what=f"{key} kept on the claim {why}",
            detail=lambda: self.not_kept(key),
        )

    def wait_gone(self, key: str, timeout: float = 60) -> None:
        try:
            wait_for(
                lambda: not self.traces(key),
                timeout=timeout,
                what=f"{key} gone from claim {self.name}",
            )
        except WaitTimeoutError as exc:
            raise AssertionError(
                f"{exc}\nstill there: {self.traces(key)}\n"
                f"operator log:\n{self.operator.log_tail(40)}"
            ) from None

    def removed_events(self) -> list[str]:
        """The messages of the GC's CacheRemoved events about the claim (in its namespace)."""
        selector = (
            "involvedObject.kind=PersistentVolumeClaim,"
            f"involvedObject.name={self.name},reason=CacheRemoved"
        )
        items = self.cluster.get_json("events", "-n", self.namespace, "--field-selector", selector)[
            "items"
        ]
        return [str(e["message"]) for e in items]


@pytest.fixture
def held(
    cluster: Cluster,
    process_kubelet: ProcessKubelet,
    operator: RunningOperator,
    model_namespace: str,
    claim: str,
) -> Claim:
    return Claim(cluster, process_kubelet, operator, model_namespace, claim)


def serve_from_claim(cluster: Cluster, ns: str, hub: StubHub) -> str:
    """Apply a model reading a revision only this test serves from the claim; its key,
    once it serves."""
    apply(cluster, ns, shared_quickstart(hub))
    wait_ready(cluster, ns)
    key = wait_for(
        lambda: cache_status(cluster, ns).get("lastGoodKey"), timeout=30, what="a last good key"
    )
    assert key == cache_status(cluster, ns)["key"]
    return str(key)


def reader_pod(ns: str, claim: str, key: str) -> dict[str, Any]:
    """A pod, not the model's, that reads ``key`` from the claim as a serving pod does."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "reader",
            "namespace": ns,
            "labels": {
                "mistral-operator.dev/model": "reader",
                "mistral-operator.dev/cache-key": key,
            },
        },
        "spec": {
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "reader",
                    "image": "busybox",
                    "volumeMounts": [{"name": "model", "mountPath": "/model", "readOnly": True}],
                }
            ],
            "volumes": [
                {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
            ],
        },
    }


# -- tests ------------------------------------------------------------------------------


def test_an_old_revision_stays_on_the_claim_while_the_model_may_go_back_to_it_then_goes(
    cluster: Cluster, model_namespace: str, hub: StubHub, held: Claim
) -> None:
    ns = model_namespace
    old = serve_from_claim(cluster, ns, hub)
    assert not held.not_kept(old)
    assert json.loads(held.marks(old)["annotation"])["root"] == f"/{SUB_PATH}"

    # A new revision, filled slowly into the claim: while it fills, the old key is the
    # model's last good one and its pod reads it. Nothing may take it.
    hub.rate = 40 * 1024  # the test weights (768 KiB) take about 20 s
    revision = serve_revision(hub)
    patch = {"spec": {"model": {"revision": revision}}}
    cluster.kubectl("patch", "mm", MODEL, "-n", ns, "--type=merge", "-p", json.dumps(patch))
    new = wait_for(
        lambda: (key := cache_status(cluster, ns).get("key")) != old and key,
        timeout=30,
        what="the model's new key",
    )
    wait_for(
        lambda: claim_entry(cluster, ns).get("state") == "Filling",
        timeout=30,
        what="the new revision filling into the claim",
    )
    held.keeps(old, "while the new revision fills")
    assert cache_status(cluster, ns).get("lastGoodKey") == old

    # The rollout ends: the new key is the last good one, no pod reads the old one, and
    # the old one leaves the claim after the retention, though the model still exists.
    hub.rate = None

    def rolled_out() -> bool:
        serving = pods(cluster, ns)
        return cache_status(cluster, ns).get("lastGoodKey") == new and all(
            p["metadata"]["labels"].get("mistral-operator.dev/cache-key") == new for p in serving
        )

    wait_for(rolled_out, timeout=120, what="the rollout to the new revision")
    held.wait_gone(old)
    assert any(old in m for m in held.removed_events())
    assert not held.not_kept(new)

    # The model goes: its pods and fill Jobs at once, its key after the retention.
    delete_model(cluster, ns)
    held.wait_gone(new)
    assert any(new in m for m in held.removed_events())


def test_a_key_a_pod_mounting_the_claim_reads_stays_after_its_model_goes(
    cluster: Cluster, model_namespace: str, hub: StubHub, claim: str, held: Claim
) -> None:
    ns = model_namespace
    key = serve_from_claim(cluster, ns, hub)
    reader = reader_pod(ns, claim, key)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(reader))

    # Nothing names the key now but that pod's label, and it mounts the claim.
    delete_model(cluster, ns)
    held.keeps(key, "while a pod mounting the claim reads it")

    cluster.kubectl("delete", "pod", "reader", "-n", ns, "--grace-period=0", "--force")
    held.wait_gone(key)
