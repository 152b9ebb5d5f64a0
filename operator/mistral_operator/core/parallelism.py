"""The shape of one replica: nodes, GPUs and SGLang parallel sizes, planned and checked."""

from __future__ import annotations

from dataclasses import dataclass

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.catalogue.profiles import (
    GPUS_PER_HGX_NODE,
    GpuProfile,
    ModelProfile,
    gpu_profile,
    model_profile,
)
from mistral_operator.core.errors import SpecError


@dataclass(frozen=True)
class ReplicaShape:
    """Everything about one replica group that the pods' command lines depend on."""

    profile: ModelProfile
    gpu: GpuProfile
    gpus_per_node: int
    nodes: int
    tensor_parallel: int
    pipeline_parallel: int
    expert_parallel: int
    attention_data_parallel: int
    moe_a2a_backend: str | None
    context_length: int

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def _default_nodes(profile: ModelProfile, gpu: GpuProfile, gpus_per_node: int) -> int:
    """The profile's nodes per replica assume 8-GPU nodes; smaller slices need more nodes."""
    full_nodes = profile.nodes_per_replica(gpu.name)
    return -(-full_nodes * GPUS_PER_HGX_NODE // gpus_per_node)


def plan_shape(spec: MistralModelSpec) -> ReplicaShape:
    """Fill the unset parallel sizes from the profile and GPU, then apply SGLang's rules.

    SGLang 0.5 requires every GPU of the group to run one rank
    (tp x pp == nodes x GPUs per node, so (tp x pp) % nnodes == 0),
    tp % attn_dp_size == 0, ep dividing tp, and ep == tp with any all-to-all backend
    (SGLang forces it for all but `none`; see docs/sglang-facts.md).
    """
    profile = model_profile(spec.model.profile)
    gpu = gpu_profile(spec.gpu.product)
    par = spec.parallelism
    per_node = spec.gpu.gpus_per_node
    pp = par.pipeline_parallel_size or 1

    if par.nodes_per_replica is not None:
        nodes = par.nodes_per_replica
    elif par.tensor_parallel_size is not None:
        nodes = max(1, par.tensor_parallel_size * pp // per_node)
    else:
        nodes = _default_nodes(profile, gpu, per_node)
    world = nodes * per_node

    if world % pp:
        raise SpecError(
            "spec.parallelism.pipelineParallelSize",
            f"{pp} does not divide the group's {world} GPUs ({nodes} nodes x {per_node})",
        )
    tp = par.tensor_parallel_size or world // pp
    if tp * pp != world:
        raise SpecError(
            "spec.parallelism.tensorParallelSize",
            f"tp {tp} x pp {pp} = {tp * pp} must equal the group's {world} GPUs "
            f"({nodes} nodes x {per_node} GPUs): every GPU runs one rank",
        )

    attn_dp = par.attention_data_parallel_size or 1
    if tp % attn_dp:
        raise SpecError(
            "spec.parallelism.attentionDataParallelSize",
            f"{attn_dp} must divide tensorParallelSize {tp}",
        )

    backend = par.moe_a2a_backend if par.moe_a2a_backend not in (None, "none") else None
    if profile.is_moe:
        ep = par.expert_parallel_size or tp
        if backend is not None and ep != tp:
            raise SpecError(
                "spec.parallelism.expertParallelSize",
                f"{ep} must equal tensorParallelSize {tp} with moeA2ABackend {backend}",
            )
        if tp % ep:
            raise SpecError(
                "spec.parallelism.expertParallelSize", f"{ep} must divide tensorParallelSize {tp}"
            )
        if profile.experts and profile.experts % ep:
            raise SpecError(
                "spec.parallelism.expertParallelSize",
                f"{ep} must divide the model's {profile.experts} experts",
            )
    else:
        ep = 1

    return ReplicaShape(
        profile=profile,
        gpu=gpu,
        gpus_per_node=per_node,
        nodes=nodes,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        expert_parallel=ep,
        attention_data_parallel=attn_dp,
        moe_a2a_backend=backend,
        context_length=spec.runtime.context_length or profile.max_context_length,
    )
