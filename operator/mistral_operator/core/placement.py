"""Placement: the nodes of each new replica group, in one topology domain, one pod per node."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mistral_operator.core.inventory import GpuNode, Toleration

NO_DOMAIN = ""


@dataclass(frozen=True)
class PlacementRequest:
    """What every pod of a group needs from its node."""

    nodes_per_group: int
    gpus_per_node: int
    gpu_products: frozenset[str]
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    topology_key: str | None = None
    # Nodes preferred (a weight cache on its way there).
    warm_nodes: frozenset[str] = frozenset()
    # When set, the only nodes a group may use (those whose weight cache is Ready).
    allowed_nodes: frozenset[str] | None = None
    # hostNetwork groups reach their leader at its node's InternalIP: a node without
    # one cannot lead (or, simpler and just as safe, host) such a group.
    needs_internal_ip: bool = False

    @property
    def gpus_per_group(self) -> int:
        return self.nodes_per_group * self.gpus_per_node


@dataclass(frozen=True)
class DomainCapacity:
    """Free room in one topology domain (all nodes when no topology key is set)."""

    domain: str
    free_nodes: int
    free_gpus: int


@dataclass(frozen=True)
class PlacementResult:
    groups: tuple[tuple[str, ...], ...]
    unplaced: int
    request: PlacementRequest
    # Room left per domain after this plan, for the status message when short.
    capacity: tuple[DomainCapacity, ...] = ()

    @property
    def short(self) -> bool:
        return self.unplaced > 0

    def shortage_message(self) -> str:
        """The numbers an SRE needs when a group cannot be placed."""
        req = self.request
        where = f"one {req.topology_key} domain" if req.topology_key else "the cluster"
        free = (
            ", ".join(
                f"{c.domain or 'cluster'}: {c.free_nodes} nodes / {c.free_gpus} GPUs"
                for c in self.capacity
            )
            or "no eligible nodes"
        )
        products = "/".join(sorted(req.gpu_products)) or "any GPU"
        return (
            f"{self.unplaced} replica group(s) cannot be placed: each needs {req.nodes_per_group} "
            f"nodes x {req.gpus_per_node} GPUs ({req.gpus_per_group} GPUs, {products}) in {where}; "
            f"free with at least {req.gpus_per_node} GPUs per node: {free}"
        )


def eligible(node: GpuNode, request: PlacementRequest) -> bool:
    """A node that may host any pod of the model (ignoring how busy it is)."""
    if not node.healthy or node.gpus_allocatable < request.gpus_per_node:
        return False
    if request.allowed_nodes is not None and node.name not in request.allowed_nodes:
        return False
    if request.gpu_products and node.product not in request.gpu_products:
        return False
    if request.topology_key and request.topology_key not in node.labels:
        return False
    if request.needs_internal_ip and not node.internal_ip:
        return False
    return node.matches_selector(request.node_selector) and node.tolerated_by(request.tolerations)


def domain_of(node: GpuNode, request: PlacementRequest) -> str:
    return node.labels.get(request.topology_key, NO_DOMAIN) if request.topology_key else NO_DOMAIN


def free_nodes_by_domain(
    inventory: Mapping[str, GpuNode], request: PlacementRequest, free: Mapping[str, int]
) -> dict[str, list[GpuNode]]:
    """Eligible nodes with room for one pod of a group, by topology domain."""
    domains: dict[str, list[GpuNode]] = {}
    for node in inventory.values():
        if not eligible(node, request):
            continue
        bucket = domains.setdefault(domain_of(node, request), [])
        if free.get(node.name, 0) >= request.gpus_per_node:
            bucket.append(node)
    return domains


def _domain_rank(
    domain: str, nodes: list[GpuNode], request: PlacementRequest, free: Mapping[str, int]
) -> tuple[int, int, str]:
    warm = sum(1 for n in nodes if n.name in request.warm_nodes)
    if request.nodes_per_group == 1:
        # A one-pod group spans no domain: the fullest node that fits wins, wherever it is.
        return (-min(warm, 1), min(free[n.name] for n in nodes), domain)
    return (-min(warm, request.nodes_per_group), len(nodes), domain)


def plan_new_groups(
    inventory: Mapping[str, GpuNode], request: PlacementRequest, count: int
) -> PlacementResult:
    """Choose nodes for ``count`` new groups: one pod of a group per node, while pods of
    different groups may share a node when each asks for part of its GPUs.

    Running groups are never moved (they hold their GPUs in the inventory). A group goes
    to the domain with the most warm-cache nodes, then the tightest fit (keeping large
    domains whole for later groups), then by name; inside it, to the warm nodes first,
    then the fullest nodes that still fit (packing small replicas, keeping whole nodes
    free for large ones), then by name, so the same inputs always give the same plan. A
    one-pod group spans no domain, so it goes to the fullest node that fits in any domain.
    """
    free = {name: node.gpus_free for name, node in inventory.items()}
    groups: list[tuple[str, ...]] = []
    for _ in range(max(0, count)):
        domains = free_nodes_by_domain(inventory, request, free)
        fitting = [
            (domain, nodes)
            for domain, nodes in domains.items()
            if len(nodes) >= request.nodes_per_group
        ]
        if not fitting:
            break
        _, nodes = min(fitting, key=lambda item: _domain_rank(item[0], item[1], request, free))
        picks = sorted(
            nodes, key=lambda n: (n.name not in request.warm_nodes, free[n.name], n.name)
        )[: request.nodes_per_group]
        groups.append(tuple(n.name for n in picks))
        for node in picks:
            free[node.name] -= request.gpus_per_node

    left = free_nodes_by_domain(inventory, request, free)
    # Every domain with an eligible node is listed, even when none of it is free.
    all_domains = {domain_of(n, request) for n in inventory.values() if eligible(n, request)}
    capacity = tuple(
        DomainCapacity(d, len(left.get(d, [])), sum(free[n.name] for n in left.get(d, [])))
        for d in sorted(all_domains)
    )
    return PlacementResult(
        groups=tuple(groups),
        unplaced=max(0, count) - len(groups),
        request=request,
        capacity=capacity,
    )
