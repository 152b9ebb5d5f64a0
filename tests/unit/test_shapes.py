"""Replica shapes (spec.parallelism.shape): GPUs from memory, packing, flags and refusals."""

from __future__ import annotations

import copy
from collections import Counter
from contextlib import ExitStack
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mistral_operator.api.crd import openapi_schema
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.topology import ParallelismSpec
from mistral_operator.catalogue.profiles import (
    GPU_PROFILES,
    MODEL_PROFILES,
    GpuName,
    Precision,
    model_profile,
)
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.inventory import pinned_node
from mistral_operator.core.parallelism import ReplicaShape, plan_shape
from mistral_operator.core.reconcile import Plan, plan_reconcile
from mistral_operator.core.sizing import MemoryPlan
from tests.support.sglang_args import parse_sglang_command
from tests.unit.cel_subset import evaluate, with_defaults
from tests.unit.reconcile_fixtures import MULTI_NODE, converge, example, observed, pods_of

TOPOLOGY = {"H100": "h100", "H200": "h200", "B200": "b200"}


def quick(replicas: int = 1, **changes: Any) -> dict[str, Any]:
    """The quick start (Mistral Small 4 FP8 on H200, shape Compact by default) with changes."""
    s: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    s["replicas"] = replicas
    s.update(changes)
    return s


def shape_of(s: dict[str, Any]) -> ReplicaShape:
    return plan_shape(MistralModelSpec.model_validate(s))


def plan_for(s: dict[str, Any]) -> Plan:
    return plan_reconcile(observed(s, topology=TOPOLOGY[s["gpu"]["product"]]))


def argv(pod: dict[str, Any]) -> list[str]:
    container = pod["spec"]["containers"][0]
    return [*container["command"], *container["args"]]


def gpus_of(pod: dict[str, Any]) -> int:
    return int(pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])


def condition(plan: Plan, type_: str) -> dict[str, Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == type_)


def refusal(s: dict[str, Any]) -> str:
    """The InvalidSpec message of a spec the operator refuses; it writes nothing for it."""
    plan = plan_for(s)
    assert plan.apply == []
    assert plan.delete == []
    degraded = condition(plan, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    message: str = degraded["message"]
    return message


def sglang_accepts(pods: list[dict[str, Any]]) -> list[Any]:
    """SGLang's real parser takes every rank's command, and SGLang's own rules hold."""
    parsed = []
    for pod in pods:
        args = parse_sglang_command(argv(pod), allow_abbrev=False)
        nnodes = args.nnodes or 1
        assert nnodes == int(pod["metadata"]["labels"][L.GROUP_SIZE])
        assert args.tp_size * args.pp_size == nnodes * gpus_of(pod), "one rank per GPU"
        assert (args.tp_size * args.pp_size) % nnodes == 0
        assert args.tp_size % args.attn_dp_size == 0
        assert args.tp_size % args.ep_size == 0
        if args.moe_a2a_backend not in (None, "none"):
            assert args.ep_size == args.tp_size
        assert args.dp_size == 1
        # Attention is never tensor-parallel across nodes.
        assert args.tp_size // args.attn_dp_size <= gpus_of(pod)
        parsed.append(args)
    return parsed


# --- Compact: the fewest GPUs that hold the weights and KV ------------------------------------


@pytest.mark.parametrize(
    ("gpu", "quantization", "precision", "gpus"),
    [
        ("H100", "auto", "fp8", 2),
        ("H200", "auto", "fp8", 2),
        ("B200", "auto", "fp8", 1),
        ("B200", "nvfp4", "fp4", 1),
    ],
)
def test_compact_small4_is_the_cookbooks_gpu_count(
    gpu: GpuName, quantization: str, precision: Precision, gpus: int
) -> None:
    s = quick(gpu={"product": gpu}, model={"quantization": quantization})
    shape = shape_of(s)
    cookbook = model_profile("mistral-small-4-119b").cookbook_gpus[
        (precision, GPU_PROFILES[gpu].architecture)
    ]
    assert shape.gpus / cookbook == 1.0
    assert (shape.shape, shape.nodes, shape.gpus_per_node) == ("Compact", 1, gpus)
    assert shape.tensor_parallel == gpus
    assert shape.memory is not None
    assert (shape.memory.precision, shape.memory.gpus) == (precision, gpus)
    pods = pods_of(plan_for(s))
    assert [gpus_of(p) for p in pods] == [gpus]
    (args,) = sglang_accepts(pods)
    assert (args.tp_size, args.ep_size, args.attn_dp_size, args.nnodes) == (gpus, 1, 1, 1)
    assert args.moe_a2a_backend in (None, "none")


def test_the_quick_start_is_one_pod_with_two_h200_gpus() -> None:
    shape = shape_of(quick())
    assert shape.shape == "Compact"
    assert (shape.nodes, shape.gpus_per_node, shape.gpus) == (1, 2, 2)
    assert (shape.tensor_parallel, shape.pipeline_parallel) == (2, 1)
    assert (shape.expert_parallel, shape.attention_data_parallel) == (1, 1)
    assert shape.moe_a2a_backend is None
    assert shape.replicas_per_node == 4
    (pod,) = pods_of(plan_for(quick()))
    args = argv(pod)
    for flag in ("--ep-size", "--attn-dp-size", "--moe-a2a-backend", "--nnodes"):
        assert flag not in args, "Compact uses tensor parallelism only"


def test_a_compact_replica_larger_than_gpus_per_node_is_refused_with_the_numbers() -> None:
    message = refusal(quick(gpu={"product": "H200", "gpusPerNode": 1}))
    assert "spec.parallelism.shape" in message
    assert "a Compact replica does not fit one node" in message
    assert "1 x H200: weights 110.8 GiB (fp8)" in message
    assert "126.4 GiB usable" in message
    assert "choose shape MultiNode, or lower runtime.contextLength" in message


# --- Packing Compact replicas onto nodes ------------------------------------------------------


def nodes_of(pods: list[dict[str, Any]]) -> Counter[str]:
    return Counter(pinned_node(p) or "" for p in pods)


def test_four_compact_replicas_share_one_h200_node_and_the_fifth_goes_to_another() -> None:
    pods = pods_of(plan_for(quick(5)))
    assert len(pods) == 5
    assert nodes_of(pods) == {"h200-0": 4, "h200-1": 1}
    assert {gpus_of(p) for p in pods} == {2}
    # Once they run, a sixth replica joins the part-used node (best fit), not an empty one.
    running, status = converge(quick(5))
    sixth = plan_reconcile(observed(quick(6), pods=running, status=status))
    assert nodes_of(pods_of(sixth)) == {"h200-1": 1}


def test_a_seventeenth_replica_is_unschedulable_with_the_numbers() -> None:
    plan = plan_for(quick(17))
    pods = pods_of(plan)
    assert len(pods) == 16, "4 nodes x 8 GPUs hold 16 replicas of 2 GPUs"
    assert nodes_of(pods) == {f"h200-{i}": 4 for i in range(4)}
    schedulable = condition(plan, "Schedulable")
    assert schedulable["status"] == "False"
    assert schedulable["message"] == (
        "1 replica group(s) cannot be placed: each needs 1 nodes x 2 GPUs (2 GPUs, "
        "NVIDIA-H200) in the cluster; free with at least 2 GPUs per node: cluster: "
        "0 nodes / 0 GPUs"
    )
    assert [e.reason for e in plan.events].count("Unschedulable") == 1


def test_never_two_ranks_of_one_multinode_group_on_one_node() -> None:
    # MultiNode pods of 4 GPUs: two groups' pods may share a node, one group's may not.
    s = quick(5, gpu={"product": "H200", "gpusPerNode": 4}, parallelism=dict(MULTI_NODE))
    plan = plan_for(s)
    pods = pods_of(plan)
    by_group: dict[str, list[str]] = {}
    for pod in pods:
        by_group.setdefault(pod["metadata"]["labels"][L.GROUP], []).append(pinned_node(pod) or "")
    assert len(by_group) == 4, "32 GPUs hold 4 groups of 2 x 4 GPUs"
    for group, nodes in by_group.items():
        assert len(nodes) == len(set(nodes)) == 2, group
    assert set(nodes_of(pods).values()) == {2}, "every node holds two pods of 4 GPUs"
    assert condition(plan, "Schedulable")["status"] == "False"


# --- Node and MultiNode: experts spread, attention data-parallel --------------------------------


def test_node_shape_spreads_experts_and_attention_inside_one_node() -> None:
    s = quick(parallelism={"shape": "Node"})
    shape = shape_of(s)
    assert (shape.nodes, shape.gpus_per_node, shape.replicas_per_node) == (1, 8, 1)
    pods = pods_of(plan_for(s))
    (args,) = sglang_accepts(pods)
    assert (args.tp_size, args.ep_size, args.attn_dp_size) == (8, 8, 8)
    assert args.moe_a2a_backend in (None, "none"), "no all-to-all backend inside one node"
    assert "--nnodes" not in argv(pods[0])
    assert gpus_of(pods[0]) == 8


def test_multinode_moe_flags_are_accepted_by_sglangs_parser() -> None:
    s = quick(parallelism=dict(MULTI_NODE))
    pods = pods_of(plan_for(s))
    assert len(pods) == 2
    parsed = sglang_accepts(pods)
    for rank, args in enumerate(parsed):
        assert (args.tp_size, args.ep_size, args.attn_dp_size) == (16, 16, 16)
        assert args.moe_a2a_backend == "deepep"
        assert (args.nnodes, args.node_rank) == (2, rank)
        assert args.dist_init_addr == "mistral-small-4-g0-0.mistral-small-4-ranks.serving.svc:20000"
    assert len({pinned_node(p) for p in pods}) == 2
    # The backend is planned, not forced: none spreads the experts without DeepEP.
    plain = shape_of(quick(parallelism={**MULTI_NODE, "moeA2ABackend": "none"}))
    assert (plain.expert_parallel, plain.moe_a2a_backend) == (16, None)


def test_dense_multinode_is_tensor_parallel_in_a_node_and_pipelined_across_nodes() -> None:
    s = quick(model={"profile": "mistral-large-2-123b"}, parallelism=dict(MULTI_NODE))
    pods = pods_of(plan_for(s))
    assert len(pods) == 2
    for args in sglang_accepts(pods):
        assert (args.tp_size, args.pp_size, args.nnodes) == (8, 2, 2)
        assert (args.ep_size, args.attn_dp_size) == (1, 1)
        assert args.moe_a2a_backend in (None, "none")


@pytest.mark.parametrize(
    ("profile", "parallelism"),
    [
        pytest.param("mistral-small-4-119b", {"attentionDataParallelSize": 1}, id="moe"),
        pytest.param("mistral-large-2-123b", {"tensorParallelSize": 16}, id="dense"),
    ],
)
def test_attention_tensor_parallel_across_nodes_is_refused(
    profile: str, parallelism: dict[str, Any]
) -> None:
    s = quick(model={"profile": profile}, parallelism={**MULTI_NODE, **parallelism})
    # Refused when the spec is read (as the API server's CEL rule refuses it at apply).
    with pytest.raises(ValidationError, match="attention would be tensor-parallel across nodes"):
        MistralModelSpec.model_validate(s)
    message = refusal(s)
    assert message.startswith("spec.parallelism.attentionDataParallelSize: ")
    assert "attention would be tensor-parallel across nodes" in message
    # Attention groups of one node's GPUs are fine.
    within = shape_of(quick(parallelism={**MULTI_NODE, "attentionDataParallelSize": 2}))
    assert within.tensor_parallel // within.attention_data_parallel == 8


def test_a_replica_too_small_for_the_model_is_refused_with_the_memory_numbers() -> None:
    large = {"profile": "mistral-large-2-123b"}  # dense, bf16: about 229 GiB of weights
    s = quick(model=large, gpu={"product": "H100", "gpusPerNode": 1}, parallelism={"shape": "Node"})
    with pytest.raises(ValidationError, match="cannot hold the model's weights"):
        MistralModelSpec.model_validate(s)
    assert refusal(s).startswith("spec.parallelism: the replica's GPUs cannot hold")
    # The planner's arithmetic, which `mistral-operator sizing` prints, has the numbers.
    one = MemoryPlan(
        MODEL_PROFILES["mistral-large-2-123b"], GPU_PROFILES["H100"], "bf16", 131072, 1
    )
    assert not one.holds_one_request
    summary = one.summary()
    assert "1 x H100: weights 229.1 GiB (bf16)" in summary
    assert "71.7 GiB usable" in summary
    assert "131072 tokens" in summary
    # A whole H100 node holds it.
    whole = quick(model=large, gpu={"product": "H100"}, parallelism={"shape": "Node"})
    assert shape_of(whole).gpus == 8


@pytest.mark.parametrize("shape", ["Compact", "Node", "MultiNode"])
@pytest.mark.parametrize("gpu", list(GPU_PROFILES))
@pytest.mark.parametrize("profile", list(MODEL_PROFILES))
def test_every_planned_shape_is_one_sglang_accepts(profile: str, gpu: str, shape: str) -> None:
    s = quick(model={"profile": profile}, gpu={"product": gpu}, parallelism={"shape": shape})
    planned = shape_of(s)
    assert planned.memory is not None
    assert planned.memory.gpus == planned.gpus
    pods = pods_of(plan_for(s))
    assert len(pods) == planned.nodes
    sglang_accepts(pods)


# --- Architecture flags --------------------------------------------------------------------------


def test_blackwell_adds_flashinfer_attention_for_small_4_and_hopper_does_not() -> None:
    for gpu in ("B200", "H200", "H100"):
        args = argv(pods_of(plan_for(quick(gpu={"product": gpu})))[0])
        blackwell = GPU_PROFILES[gpu].architecture == "blackwell"
        assert ("--attention-backend" in args) == blackwell, gpu
        if blackwell:
            assert args[args.index("--attention-backend") + 1] == "flashinfer"
            assert parse_sglang_command(args, allow_abbrev=False).attention_backend == "flashinfer"
    other = quick(model={"profile": "mistral-7b-v0.3"}, gpu={"product": "B200"})
    assert "--attention-backend" not in argv(pods_of(plan_for(other))[0])


# --- Status -------------------------------------------------------------------------------------


def test_status_topology_shows_the_shape_replicas_per_node_and_the_memory() -> None:
    topology = plan_for(quick()).status["topology"]
    assert topology["shape"] == "Compact"
    assert topology["replicasPerNode"] == 4
    assert (topology["gpusPerNode"], topology["nodesPerReplica"], topology["gpusPerReplica"]) == (
        2,
        1,
        2,
    )
    memory = shape_of(quick()).memory
    assert memory is not None
    assert topology["memory"] == memory.summary()
    assert topology["memory"].startswith("2 x H200: weights 110.8 GiB (fp8)")
    assert "262144 tokens" in topology["memory"]
    node = plan_for(quick(parallelism={"shape": "Node"})).status["topology"]
    assert (node["shape"], node["replicasPerNode"], node["gpusPerReplica"]) == ("Node", 1, 8)
    assert node["memory"].startswith("8 x H200: ")
    multi = plan_for(quick(parallelism=dict(MULTI_NODE))).status["topology"]
    assert (multi["shape"], multi["replicasPerNode"], multi["nodesPerReplica"]) == (
        "MultiNode",
        1,
        2,
    )
    assert multi["memory"].startswith("16 x H200: ")


# --- The CEL rules agree with their Python twins ----------------------------------------------


def test_nodes_per_replica_above_one_needs_multinode() -> None:
    with pytest.raises(ValueError, match="nodesPerReplica above 1 needs shape MultiNode"):
        MistralModelSpec.model_validate(quick(parallelism={"nodesPerReplica": 2}))
    with pytest.raises(ValueError, match="MultiNode spans at least 2 nodes"):
        MistralModelSpec.model_validate(
            quick(parallelism={"shape": "MultiNode", "nodesPerReplica": 1})
        )
    MistralModelSpec.model_validate(quick(parallelism={"shape": "Node", "nodesPerReplica": 1}))


RULED = (ParallelismSpec, MistralModelSpec)
SCHEMA = openapi_schema()["properties"]["spec"]
sizes = st.one_of(st.none(), st.sampled_from([1, 2, 3, 4, 8, 16, 24, 32]))


@st.composite
def spec_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Specs that vary every input of the cross-field rules of spec and spec.parallelism."""
    parallelism = {
        "shape": draw(st.sampled_from([None, "Compact", "Node", "MultiNode"])),
        "nodesPerReplica": draw(st.one_of(st.none(), st.integers(min_value=1, max_value=4))),
        "tensorParallelSize": draw(sizes),
        "pipelineParallelSize": draw(st.one_of(st.none(), st.sampled_from([1, 2, 3]))),
        "expertParallelSize": draw(sizes),
        "attentionDataParallelSize": draw(sizes),
        "moeA2ABackend": draw(st.sampled_from([None, "none", "deepep", "mooncake"])),
    }
    model = {
        "profile": draw(
            st.sampled_from(["mistral-small-4-119b", "mistral-7b-v0.3", "pixtral-12b"])
        ),
        "quantization": draw(st.sampled_from(["auto", "fp8", "nvfp4"])),
        "source": draw(st.sampled_from([None, "hf://mistralai/x", "pvc://weights/x"])),
        "credentialsSecretRef": draw(st.sampled_from([None, {"name": "hf"}])),
    }
    return {
        "gpu": {
            "product": draw(st.sampled_from(list(GPU_PROFILES))),
            "gpusPerNode": draw(st.sampled_from([1, 2, 4, 8])),
        },
        "model": {k: v for k, v in model.items() if v is not None},
        "parallelism": {k: v for k, v in parallelism.items() if v is not None},
        "runtime": {"contextLength": draw(st.sampled_from([32768, 65536, 262144]))},
        "capabilities": {
            "reasoning": draw(st.sampled_from([True, False])),
            "toolCalling": draw(st.sampled_from([True, False])),
        },
        "cache": {"mode": draw(st.sampled_from(["NodeLocal", "None"]))},
    }


def test_every_cross_field_rule_is_in_the_crd_as_written() -> None:
    spec_rules = SCHEMA["x-kubernetes-validations"]
    parallelism_rules = SCHEMA["properties"]["parallelism"]["x-kubernetes-validations"]
    assert [r.to_schema() for r in MistralModelSpec.cel_rules] == spec_rules
    assert [r.to_schema() for r in ParallelismSpec.cel_rules] == parallelism_rules
    assert all(r.check is not None for cls in RULED for r in cls.cel_rules)


@given(spec_bodies())
def test_cel_rules_and_their_python_checks_agree(body: dict[str, Any]) -> None:
    with ExitStack() as stack:
        for cls in RULED:
            stack.enter_context(patch.object(cls, "cel_rules", ()))
        parsed = MistralModelSpec.model_validate(body)
    stored = with_defaults(SCHEMA, body)  # what the API server validates
    for rule in MistralModelSpec.cel_rules:
        assert rule.check is not None
        assert evaluate(rule.rule, stored) is rule.check(parsed), rule.message
    for rule in ParallelismSpec.cel_rules:
        assert rule.check is not None
        assert evaluate(rule.rule, stored["parallelism"]) is rule.check(parsed.parallelism), (
            rule.message
        )
