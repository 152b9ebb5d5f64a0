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


def request(
    nodes: int = 2, topology: str | None = BLOCK, gpus: int = 8, **kw: Any
) -> PlacementRequest:
    return PlacementRequest(
        nodes_per_group=nodes,
        gpus_per_node=gpus,
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
    # A running group holds its GPUs in the inventory: new groups go around it.
    busy = inv(
        node("h200-0", "a", free=0),
        node("h200-1", "a", free=0),
        node("h200-2", "b"),
        node("h200-3", "b"),
    )
    result = plan_new_groups(busy, request(), 1)
    assert result.groups == (("h200-2", "h200-3"),)
    assert plan_new_groups(busy, request(), 2).unplaced == 1


# --- Replicas on part of a node: packing --------------------------------------------------------


def test_small_replicas_fill_the_fullest_node_that_still_fits() -> None:
    nodes = inv(node("empty-0"), node("empty-1"), node("half", free=4), node("full", free=1))
    result = plan_new_groups(nodes, request(nodes=1, topology=None, gpus=2), 3)
    # Best fit: the node with 4 free takes two, then an empty node; the 1 free GPU stays.
    assert result.groups == (("half",), ("half",), ("empty-0",))
    assert not result.short


def test_packing_counts_what_each_new_group_takes() -> None:
    nodes = inv(node("a"), node("b"))
    result = plan_new_groups(nodes, request(nodes=1, topology=None, gpus=2), 9)
    assert result.groups == (("a",),) * 4 + (("b",),) * 4
    assert result.unplaced == 1
    assert "each needs 1 nodes x 2 GPUs (2 GPUs" in result.shortage_message()
    assert "cluster: 0 nodes / 0 GPUs" in result.shortage_message()


def test_best_fit_wins_over_a_tighter_domain_for_one_node_replicas() -> None:
    # Block a has a partly used node and an empty one; block b has one empty node.
    nodes = inv(
        node("a-used", "a", free=6),
        node("a-empty", "a"),
        node("b-empty", "b"),
        node("b-full", "b", free=0),
    )
    result = plan_new_groups(nodes, request(nodes=1, gpus=2), 1)
    assert result.groups == (("a-used",),), "a one-pod replica packs onto the fullest node"


def test_two_ranks_of_one_group_never_share_a_node() -> None:
    # 8 free GPUs would hold both 4-GPU pods of the group, but the ranks are on separate
    # nodes (each rank is a node of SGLang's --nnodes).
    one = inv(node("only"))
    result = plan_new_groups(one, request(nodes=2, topology=None, gpus=4), 1)
    assert result.groups == ()
    assert "each needs 2 nodes x 4 GPUs (8 GPUs" in result.shortage_message()
    two = inv(node("x"), node("y"))
    assert plan_new_groups(two, request(nodes=2, topology=None, gpus=4), 2).groups == (
        ("x", "y"),
        ("x", "y"),
    )


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
    free=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(min_value=0, max_value=8)),
        min_size=1,
        max_size=6,
    ),
    nodes_per_group=st.integers(min_value=1, max_value=3),
    gpus=st.sampled_from([1, 2, 4, 8]),
    count=st.integers(min_value=0, max_value=12),
    topology=st.sampled_from([BLOCK, None]),
)
def test_plans_fit_the_free_gpus_and_stop_only_when_nothing_fits(
    free: list[tuple[str, int]],
    nodes_per_group: int,
    gpus: int,
    count: int,
    topology: str | None,
) -> None:
    nodes = inv(*(node(f"n{i}", block, free=f) for i, (block, f) in enumerate(free)))
    req = request(nodes=nodes_per_group, topology=topology, gpus=gpus)
    result = plan_new_groups(nodes, req, count)
    taken = dict.fromkeys(nodes, 0)
    for group in result.groups:
        assert len(group) == nodes_per_group
        assert len(set(group)) == nodes_per_group, "two ranks of one group on one node"
        if topology:
            assert len({nodes[n].labels[BLOCK] for n in group}) == 1
        for name in group:
            taken[name] += gpus
    assert all(taken[n] <= nodes[n].gpus_free for n in nodes), "more GPUs than are free"
    assert len(result.groups) + result.unplaced == count
    if result.short:
        # Nothing left in any domain could hold one more group.
        room: dict[str, int] = {}
        for name, n in nodes.items():
            if n.gpus_free - taken[name] >= gpus:
                key = n.labels[BLOCK] if topology else ""
                room[key] = room.get(key, 0) + 1
        assert all(count_ < nodes_per_group for count_ in room.values())
        assert sum(c.free_nodes for c in result.capacity) == sum(room.values())


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
