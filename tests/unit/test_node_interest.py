"""The node watch's wake-up rule: which models a node's change concerns."""

from __future__ import annotations

from typing import Any

from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.node_interest import (
    ModelView,
    cache_nodes,
    concerned,
    model_view,
    nodes_in_use,
    wants_any_node,
    wants_gpus,
)

CONVERGED: dict[str, Any] = {
    "observedGeneration": 3,
    "conditions": [
        {"type": "Ready", "status": "True"},
        {"type": "Progressing", "status": "False"},
        {"type": "Degraded", "status": "False"},
        {"type": "Schedulable", "status": "True"},
        {"type": "CacheReady", "status": "True"},
    ],
    "cache": {"nodes": [{"node": "n-cache", "state": "Ready"}, {"name": "a-claim"}]},
}


def with_condition(kind: str, value: str) -> dict[str, Any]:
    conditions = [
        c | ({"status": value} if c["type"] == kind else {}) for c in CONVERGED["conditions"]
    ]
    return CONVERGED | {"conditions": conditions}


def pod(node: str | None = None, pinned: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": node} if node else {}
    if pinned:
        term = {"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [pinned]}
        ]}  # fmt: skip
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [term]}}
        }  # fmt: skip
    return {"metadata": {}, "spec": spec}


def test_a_converged_model_wants_no_other_node() -> None:
    assert not wants_any_node(3, {}, CONVERGED)


def test_a_model_not_converged_or_keeping_spares_wants_any_node() -> None:
    assert wants_any_node(3, {}, {})  # never reconciled
    assert wants_any_node(4, {}, CONVERGED)  # its status lags a new spec
    assert wants_any_node(3, {}, with_condition("Ready", "False"))
    assert wants_any_node(3, {}, with_condition("Progressing", "True"))
    assert wants_any_node(3, {}, with_condition("Degraded", "True"))
    assert wants_any_node(3, {}, with_condition("Schedulable", "False"))
    assert wants_any_node(3, {}, with_condition("CacheReady", "False"))
    assert wants_any_node(3, {"cache": {"prewarmSpareNodes": 1}}, CONVERGED)


def test_the_nodes_a_model_uses() -> None:
    job = {"metadata": {"labels": {L.CACHE_NODE: "n-job"}}}
    claim_job = {"metadata": {"labels": {L.CACHE_CLAIM: "a-claim"}}}
    used = nodes_in_use([pod("n-bound"), pod(pinned="n-pinned"), pod()], [job, claim_job],
                        [pod("n-fill")])  # fmt: skip
    assert used == {"n-bound", "n-pinned", "n-job", "n-fill"}
    assert cache_nodes(CONVERGED) == frozenset({"n-cache"})


def test_a_node_concerns_the_models_on_it_and_those_wanting_any() -> None:
    calm = model_view(3, {}, CONVERGED)
    assert calm == ModelView(False, frozenset({"n-cache"}))
    assert concerned("n-bound", calm, [pod("n-bound")], [], [])
    assert concerned("n-cache", calm, [], [], [])
    assert not concerned("n-elsewhere", calm, [pod("n-bound")], [], [])
    waiting = model_view(3, {}, with_condition("Schedulable", "False"))
    assert concerned("n-elsewhere", waiting, [], [], [])
    assert concerned("n-elsewhere", None, [], [], [])  # not seen yet: it decides itself


def test_freed_gpus_wake_only_the_models_that_could_use_them() -> None:
    assert not wants_gpus(model_view(3, {}, CONVERGED))
    assert wants_gpus(model_view(3, {}, with_condition("Ready", "False")))
    assert wants_gpus(None)
