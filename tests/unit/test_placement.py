"""Placement of replica groups on simulated HGX inventories (pure)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mistral_operator.core.inventory import GpuNode, Taint, Toleration, build_inventory
from mistral_operator.core.placement import PlacementRequest, plan_new_groups

BLOCK = "network.topology.nvidia.com/block"
GPU_TAINT = Taint("nvidia.com/gpu", "present", "NoSchedule")
GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator="Exists")


def node(
    name: str,
    block: str = "a",
    *,
    product: str = "NVIDIA-H200",
    free: int = 8,
    ready: bool = True,
    unschedulable: bool = False,
) -> GpuNode:
    return GpuNode(
        name=name,
        labels={"nvidia.com/gpu.product": product, BLOCK: block},
        taints=(GPU_TAINT,),
        gpus_allocatable=8,
        gpus_requested=8 - free,
        ready=ready,
        unschedulable=unschedulable,
    )


def request(nodes: int = 2, topology: str | None = BLOCK, **kw: Any) -> PlacementRequest:
    return PlacementRequest(
        nodes_per_group=nodes,
        gpus_per_node=8,
        gpu_products=frozenset({"NVIDIA-H200"}),
        tolerations=(GPU_TOLERATION,),
        topology_key=topology,
        **kw,
    )


def inv(*nodes: GpuNode) -> dict[str, GpuNode]:
    return {n.name: n for n in nodes}


FOUR_H200 = inv(node("h200-0", "a"), node("h200-1", "a"), node("h200-2", "b"), node("h200-3", "b"))


def test_two_groups_fill_two_blocks() -> None:
    result = plan_new_groups(FOUR_H200, request(), 2)
    assert result.groups == (("h200-0", "h200-1"), ("h200-2", "h200-3"))
    assert not result.short


def test_third_group_is_short_with_numbers() -> None:
    result = plan_new_groups(FOUR_H200, request(), 3)
    assert len(result.groups) == 2
    assert result.unplaced == 1
    message = result.shortage_message()
    assert "1 replica group(s) cannot be placed" in message
    assert "2 nodes x 8 GPUs (16 GPUs" in message
    assert "one network.topology.nvidia.com/block domain" in message
    assert "a: 0 nodes / 0 GPUs, b: 0 nodes / 0 GPUs" in message


def test_running_groups_keep_their_nodes() -> None:
    result = plan_new_groups(FOUR_H200, request(), 1, taken={"h200-0", "h200-1"})
    assert result.groups == (("h200-2", "h200-3"),)


def test_a_group_never_spans_two_blocks() -> None:
    nodes = inv(node("h200-0", "a"), node("h200-2", "b"))
    result = plan_new_groups(nodes, request(), 1)
    assert result.groups == ()
    assert "a: 1 nodes / 8 GPUs, b: 1 nodes / 8 GPUs" in result.shortage_message()


def test_without_a_topology_key_any_nodes_do() -> None:
    nodes = inv(node("h200-0", "a"), node("h200-2", "b"))
    assert plan_new_groups(nodes, request(topology=None), 1).groups == (("h200-0", "h200-2"),)


def test_busy_unready_cordoned_and_wrong_gpu_nodes_are_skipped() -> None:
    nodes = inv(
        node("busy", free=4),
        node("down", ready=False),
        node("cordoned", unschedulable=True),
        node("h100", product="NVIDIA-H100-80GB-HBM3"),
        node("ok-1"),
        node("ok-2"),
    )
    assert plan_new_groups(nodes, request(), 1).groups == (("ok-1", "ok-2"),)


def test_untolerated_taint_excludes_a_node() -> None:
    tainted = GpuNode(
        name="t",
        labels={"nvidia.com/gpu.product": "NVIDIA-H200", BLOCK: "a"},
        taints=(GPU_TAINT, Taint("maintenance", "", "NoExecute")),
        gpus_allocatable=8,
        gpus_requested=0,
        ready=True,
        unschedulable=False,
    )
    nodes = inv(tainted, node("x"))
    assert plan_new_groups(nodes, request(nodes=1), 2).groups == (("x",),)
    assert Toleration(operator="Exists").tolerates(Taint("maintenance", "", "NoExecute"))


def test_warm_cache_domain_and_nodes_win() -> None:
    result = plan_new_groups(FOUR_H200, request(warm_nodes=frozenset({"h200-3"})), 1)
    assert result.groups == (("h200-3", "h200-2"),)


def test_tightest_domain_is_used_first() -> None:
    nodes = inv(*(node(f"a{i}", "a") for i in range(4)), node("b0", "b"), node("b1", "b"))
    assert plan_new_groups(nodes, request(), 1).groups == (("b0", "b1"),)


def test_inventory_subtracts_gpus_of_bound_unfinished_pods() -> None:
    nodes = [
        {
            "metadata": {"name": "n", "labels": {"nvidia.com/gpu.product": "NVIDIA-H200"}},
            "spec": {
                "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
            },
            "status": {
                "allocatable": {"nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    ]

    def pod(gpus: int, phase: str) -> dict[str, Any]:
        return {
            "spec": {
                "nodeName": "n",
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
            },
            "status": {"phase": phase},
        }

    inventory = build_inventory(nodes, [pod(2, "Running"), pod(3, "Pending"), pod(4, "Succeeded")])
    assert inventory["n"].gpus_free == 3
    assert inventory["n"].healthy
    assert inventory["n"].taints == (GPU_TAINT,)


@given(
    blocks=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=4),
    nodes_per_group=st.integers(min_value=1, max_value=4),
    count=st.integers(min_value=0, max_value=6),
)
def test_plans_never_share_nodes_or_cross_blocks(
    blocks: list[int], nodes_per_group: int, count: int
) -> None:
    nodes = inv(*(node(f"n{b}-{i}", f"b{b}") for b, size in enumerate(blocks) for i in range(size)))
    result = plan_new_groups(nodes, request(nodes=nodes_per_group), count)
    picked = [name for group in result.groups for name in group]
    assert len(picked) == len(set(picked))
    for group in result.groups:
        assert len(group) == nodes_per_group
        assert len({nodes[n].labels[BLOCK] for n in group}) == 1
    possible = sum(size // nodes_per_group for size in blocks)
    assert len(result.groups) == min(count, possible)
    assert result.unplaced == count - len(result.groups)


def test_a_pinned_pod_waiting_for_the_scheduler_already_counts_on_its_node() -> None:
    node = {
        "metadata": {"name": "n", "labels": {"nvidia.com/gpu.product": "NVIDIA-H200"}},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    term = {
        "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n"]}]
    }
    pending = {
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
                }
            },
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
        "status": {"phase": "Pending"},
    }
    assert build_inventory([node], [pending])["n"].gpus_free == 0
    assert build_inventory([node], [{**pending, "status": {"phase": "Failed"}}])["n"].gpus_free == 8
