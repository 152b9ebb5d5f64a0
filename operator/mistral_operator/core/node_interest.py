"""Which models a node's change concerns: the wake-up rule of the node watch.

A change that placement reads (health, cordon, taints, GPUs, cache labels) used to wake
every model. At fleet size that is one reconcile per model for each step of one node's
flap (docs/benchmarks.md). A change concerns a model when:

- the model has something on the node: a pod (bound there or pinned to it), a fill Job
  or its pod, or a cache its status reports there; or
- the model could use any node: it is not converged (its status lags its spec, it is
  not Ready, it progresses, it is degraded or cannot be placed, its cache is not Ready)
  or it keeps spare nodes warm.

A converged model with nothing on the node has nothing to do about it; the periodic
resync is its backstop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mistral_operator.core import conditions as C  # noqa: N812 - short, read as a namespace
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.inventory import pinned_node


@dataclass(frozen=True)
class ModelView:
    """What the node watch keeps of one model, from its latest event."""

    wants_any_node: bool
    cache_nodes: frozenset[str]


def model_view(generation: int, spec: Mapping[str, Any], status: Mapping[str, Any]) -> ModelView:
    return ModelView(wants_any_node(generation, spec, status), cache_nodes(status))


def wants_any_node(generation: int, spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether a change of a node the model has nothing on could change what it does."""
    if ((spec.get("cache") or {}).get("prewarmSpareNodes") or 0) > 0:
        return True
    if not status or status.get("observedGeneration") != generation:
        return True
    found = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return (
        found.get(C.READY) != "True"
        or found.get(C.PROGRESSING) == "True"
        or found.get(C.DEGRADED) == "True"
        or found.get(C.SCHEDULABLE) == "False"
        or found.get(C.CACHE_READY) == "False"
    )


def cache_nodes(status: Mapping[str, Any]) -> frozenset[str]:
    """The nodes the model's cache status speaks of."""
    entries = (status.get("cache") or {}).get("nodes") or []
    return frozenset(str(e["node"]) for e in entries if isinstance(e, Mapping) and e.get("node"))


def nodes_in_use(
    pods: Iterable[Mapping[str, Any]],
    fill_jobs: Iterable[Mapping[str, Any]],
    fill_pods: Iterable[Mapping[str, Any]],
) -> set[str]:
    """The nodes where a model has a pod (bound or pinned), a fill Job or a fill pod."""
    nodes: set[str] = set()
    for pod in (*pods, *fill_pods):
        node = (pod.get("spec") or {}).get("nodeName") or pinned_node(pod)
        if node:
            nodes.add(str(node))
    for job in fill_jobs:
        node = ((job.get("metadata") or {}).get("labels") or {}).get(L.CACHE_NODE)
        if node:
            nodes.add(str(node))
    return nodes


def concerned(
    node: str,
    view: ModelView | None,
    pods: Iterable[Mapping[str, Any]],
    fill_jobs: Iterable[Mapping[str, Any]],
    fill_pods: Iterable[Mapping[str, Any]],
) -> bool:
    """Whether a change of ``node`` should wake the model ``view`` describes (a model not
    seen yet is always woken: it decides for itself)."""
    return (
        view is None
        or view.wants_any_node
        or node in view.cache_nodes
        or node in nodes_in_use(pods, fill_jobs, fill_pods)
    )


def wants_gpus(view: ModelView | None) -> bool:
    """Whether GPUs freed or taken anywhere should wake the model (one not seen yet is)."""
    return view is None or view.wants_any_node
