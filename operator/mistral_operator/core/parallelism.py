"""The shape of one replica: nodes, GPUs and SGLang parallel sizes, planned and checked.

Three shapes (spec.parallelism.shape):
- Compact: one pod with the fewest GPUs that hold the weights and KV cache (sizing.py);
  tensor parallelism over those GPUs, as SGLang's cookbook runs it. Replicas share nodes.
- Node: one pod on a whole node; for mixture-of-experts models data-parallel attention
  with expert parallelism inside the node.
- MultiNode: one pod on each of N nodes; for mixture-of-experts models expert
  parallelism across the nodes with data-parallel attention and an all-to-all backend,
  for dense models tensor parallelism inside a node and pipeline stages across nodes.
Attention is never tensor-parallel across nodes: every attention group sits in one node.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.topology import DEFAULT_MULTI_NODES
from mistral_operator.catalogue.profiles import (
    GpuProfile,
    ModelProfile,
    gpu_profile,
    model_profile,
)
from mistral_operator.core.errors import SpecError
from mistral_operator.core.sizing import MemoryPlan, compact_gpus, precision_of

# The all-to-all backend expert parallelism uses between nodes when none is asked for.
MULTI_NODE_A2A = "deepep"


@dataclass(frozen=True)
class ReplicaShape:
    """Everything about one replica group that the pods' command lines depend on."""

    profile: ModelProfile
    gpu: GpuProfile
    # GPUs each pod of the group requests on its node.
    gpus_per_node: int
    nodes: int
    tensor_parallel: int
    pipeline_parallel: int
    expert_parallel: int
    attention_data_parallel: int
    moe_a2a_backend: str | None
    context_length: int
    shape: str
    # What each GPU holds, and the requests its KV room fits.
    memory: MemoryPlan
    # GPUs of one node (spec.gpu.gpusPerNode): what replicas of one node share.
    node_gpus: int

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def replicas_per_node(self) -> int:
        """Replicas one node holds: several for Compact, one for Node and MultiNode."""
        return max(1, self.node_gpus // self.gpus_per_node) if self.nodes == 1 else 1


def _pod_gpus(spec: MistralModelSpec, profile: ModelProfile, gpu: GpuProfile) -> tuple[int, int]:
    """(nodes, GPUs per pod) of the replica."""
    par = spec.parallelism
    node_gpus = spec.gpu.gpus_per_node
    if par.shape == "MultiNode":
        return par.nodes_per_replica or DEFAULT_MULTI_NODES, node_gpus
    if par.shape == "Node":
        return 1, node_gpus
    if par.tensor_parallel_size is not None:
        return 1, par.tensor_parallel_size * (par.pipeline_parallel_size or 1)
    precision = precision_of(spec.model.quantization, profile)
    context = spec.runtime.context_length or profile.max_context_length
    plan = compact_gpus(profile, gpu, precision, context)
    if plan is None or plan.gpus > node_gpus:
        largest = MemoryPlan(profile, gpu, precision, context, node_gpus)
        raise SpecError(
            "spec.parallelism.shape",
            f"a Compact replica does not fit one node: {largest.summary()}; choose shape "
            "MultiNode, or lower runtime.contextLength",
        )
    return 1, plan.gpus


def plan_shape(spec: MistralModelSpec) -> ReplicaShape:
    """Fill the unset parallel sizes for the shape, then apply SGLang's rules and ours.

    SGLang 0.5 requires every GPU of the group to run one rank
    (tp x pp == nodes x GPUs per node, so (tp x pp) % nnodes == 0),
    tp % attn_dp_size == 0, ep dividing tp, and ep == tp with any all-to-all backend
    (SGLang forces it for all but `none`; see docs/sglang-facts.md).
    """
    profile = model_profile(spec.model.profile)
    gpu = gpu_profile(spec.gpu.product)
    par = spec.parallelism
    nodes, per_pod = _pod_gpus(spec, profile, gpu)
    world = nodes * per_pod
    multi = par.shape == "MultiNode"

    # Dense models cross nodes by pipeline stages, never by tensor parallelism.
    default_pp = nodes if multi and not profile.is_moe and par.tensor_parallel_size is None else 1
    pp = par.pipeline_parallel_size or default_pp
    if world % pp:
        raise SpecError(
            "spec.parallelism.pipelineParallelSize",
            f"{pp} must divide the group's {world} GPUs ({nodes} nodes x {per_pod}): every GPU "
            "runs one rank",
        )
    tp = par.tensor_parallel_size or world // pp
    if tp * pp != world:
        raise SpecError(
            "spec.parallelism.tensorParallelSize",
            f"tp {tp} x pp {pp} = {tp * pp} must equal the group's {world} GPUs "
            f"({nodes} nodes x {per_pod} GPUs): every GPU runs one rank",
        )

    spread = profile.is_moe and par.shape != "Compact"
    attn_dp = par.attention_data_parallel_size or (tp if spread else 1)
    if tp % attn_dp:
        raise SpecError(
            "spec.parallelism.attentionDataParallelSize",
            f"{attn_dp} must divide tensorParallelSize {tp}",
        )
    attention_group = tp // attn_dp
    if nodes > 1 and per_pod % attention_group:
        raise SpecError(
            "spec.parallelism.attentionDataParallelSize",
            f"attention would be tensor-parallel across nodes: tp {tp} / attn-dp {attn_dp} = "
            f"{attention_group} GPUs per attention group must fit within one node's {per_pod}",
        )

    ep, backend = _experts(spec, profile, tp, spread=spread, multi=multi)
    context = spec.runtime.context_length or profile.max_context_length
    precision = precision_of(spec.model.quantization, profile)
    memory = MemoryPlan(profile, gpu, precision, context, world, attention_dp=attn_dp)
    if not memory.holds_one_request:
        raise SpecError(
            "spec.parallelism",
            f"the replica's GPUs cannot hold the model and one full-context request: "
            f"{memory.summary()}",
        )
    return ReplicaShape(
        profile=profile,
        gpu=gpu,
        gpus_per_node=per_pod,
        nodes=nodes,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        expert_parallel=ep,
        attention_data_parallel=attn_dp,
        moe_a2a_backend=backend,
        context_length=context,
        shape=par.shape,
        memory=memory,
        node_gpus=spec.gpu.gpus_per_node,
    )


def _experts(
    spec: MistralModelSpec, profile: ModelProfile, tp: int, *, spread: bool, multi: bool
) -> tuple[int, str | None]:
    """Expert-parallel size and all-to-all backend, planned or checked."""
    par = spec.parallelism
    asked = par.moe_a2a_backend
    if not profile.is_moe:
        return 1, None
    experts = profile.experts or tp
    if par.expert_parallel_size is not None:
        ep = par.expert_parallel_size
    elif spread:
        ep = tp if experts % tp == 0 else gcd(tp, experts)
    else:
        ep = 1  # Compact: experts split by tensor parallelism, as the cookbook runs it
    if asked is None:
        backend = MULTI_NODE_A2A if multi and ep == tp else None
    else:
        backend = None if asked == "none" else asked
    if backend is not None and ep != tp:
        raise SpecError(
            "spec.parallelism.expertParallelSize",
            f"{ep} must equal tensorParallelSize {tp} with moeA2ABackend {backend} (SGLang "
            "forces ep_size = tp_size)",
        )
    if tp % ep:
        raise SpecError(
            "spec.parallelism.expertParallelSize", f"{ep} must divide tensorParallelSize {tp}"
        )
    if experts % ep:
        raise SpecError(
            "spec.parallelism.expertParallelSize",
            f"{ep} must divide the model's {experts} experts",
        )
    return ep, backend
