"""GPU inventory: what each Node offers a replica group, read from Node and Pod objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mistral_operator.core.timestamps import parse_time

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
HOSTNAME_LABEL = "kubernetes.io/hostname"
_BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' matching rule for one toleration against one taint."""
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


@dataclass(frozen=True)
class GpuNode:
    """One node as placement sees it."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    gpus_allocatable: int
    gpus_requested: int
    ready: bool
    unschedulable: bool
    deleting: bool = False
    internal_ip: str | None = None
    # When the Ready condition last turned away from True (None while Ready).
    not_ready_since: datetime | None = None

    @property
    def gpus_free(self) -> int:
        return max(0, self.gpus_allocatable - self.gpus_requested)

    @property
    def product(self) -> str | None:
        return self.labels.get(GPU_PRODUCT_LABEL)

    @property
    def healthy(self) -> bool:
        """Ready, not cordoned and not going away: a node a group may run on."""
        return self.ready and not self.unschedulable and not self.deleting

    def tolerated_by(self, tolerations: Sequence[Toleration]) -> bool:
        return all(
            any(t.tolerates(taint) for t in tolerations)
            for taint in self.taints
            if taint.effect in _BLOCKING_EFFECTS
        )

    def matches_selector(self, selector: Mapping[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())


def parse_quantity_int(value: Any) -> int:
    """Integer quantities such as GPU counts ("8"); anything else counts as 0."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def pod_gpu_request(pod: Mapping[str, Any]) -> int:
    """GPUs a pod holds on its node: the sum over containers (limits win over requests)."""
    total = 0
    for container in pod.get("spec", {}).get("containers", []) or []:
        resources = container.get("resources", {}) or {}
        amount = (resources.get("limits") or {}).get(GPU_RESOURCE)
        if amount is None:
            amount = (resources.get("requests") or {}).get(GPU_RESOURCE)
        total += parse_quantity_int(amount)
    return total


def pinned_node(pod: Mapping[str, Any]) -> str | None:
    """The one node a pod's required node affinity allows by hostname, if it names one."""
    try:
        terms = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
    except (KeyError, TypeError):
        return None
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            values = expr.get("values") or []
            if (
                expr.get("key") == HOSTNAME_LABEL
                and expr.get("operator") == "In"
                and len(values) == 1
            ):
                return str(values[0])
    return None


def gpu_node_of(pod: Mapping[str, Any]) -> str | None:
    """The node whose GPUs an unfinished pod holds: where it is bound, else where it is
    pinned (a pinned pod waiting for the scheduler can go nowhere else)."""
    if pod.get("status", {}).get("phase") in _TERMINAL_PHASES or pod_gpu_request(pod) == 0:
        return None
    return pod.get("spec", {}).get("nodeName") or pinned_node(pod)


def _ready_condition(node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in node.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == "Ready":
            return condition  # type: ignore[no-any-return]
    return None


def node_is_ready(node: Mapping[str, Any]) -> bool:
    condition = _ready_condition(node)
    return condition is not None and condition.get("status") == "True"


def _not_ready_since(node: Mapping[str, Any]) -> datetime | None:
    condition = _ready_condition(node)
    if condition is None:
        return parse_time(node.get("metadata", {}).get("creationTimestamp"))
    if condition.get("status") == "True":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def _internal_ip(node: Mapping[str, Any]) -> str | None:
    for address in node.get("status", {}).get("addresses", []) or []:
        if address.get("type") == "InternalIP":
            return str(address.get("address"))
    return None


def build_inventory(
    nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> dict[str, GpuNode]:
    """Every node with its GPUs still free after the pods bound to it."""
    requested: dict[str, int] = {}
    for pod in pods:
        node_name = gpu_node_of(pod)
        if node_name is not None:
            requested[node_name] = requested.get(node_name, 0) + pod_gpu_request(pod)
    inventory: dict[str, GpuNode] = {}
    for node in nodes:
        meta = node.get("metadata", {})
        spec = node.get("spec", {}) or {}
        name = meta["name"]
        inventory[name] = GpuNode(
            name=name,
            labels=dict(meta.get("labels") or {}),
            taints=tuple(
                Taint(t.get("key", ""), t.get("value", "") or "", t.get("effect", ""))
                for t in spec.get("taints") or []
            ),
            gpus_allocatable=parse_quantity_int(
                (node.get("status", {}).get("allocatable") or {}).get(GPU_RESOURCE)
            ),
            gpus_requested=requested.get(name, 0),
            ready=node_is_ready(node),
            unschedulable=bool(spec.get("unschedulable")),
            deleting=bool(meta.get("deletionTimestamp")),
            internal_ip=_internal_ip(node),
            not_ready_since=_not_ready_since(node),
        )
    return inventory
