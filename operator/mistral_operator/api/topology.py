"""`spec.gpu` and `spec.parallelism`: the GPUs a replica runs on and how SGLang splits the model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mistral_operator.api.base import CelRule, SpecModel
from mistral_operator.catalogue.profiles import GpuName

MoeA2ABackend = Literal["none", "deepep", "mooncake", "flashinfer"]


class GpuSpec(SpecModel):
    """The GPU nodes replica groups run on."""

    product: GpuName = Field(
        description=(
            "GPU product. H100 matches nodes labelled nvidia.com/gpu.product="
            "NVIDIA-H100-80GB-HBM3, H200 matches NVIDIA-H200, B200 matches NVIDIA-B200 "
            "(labels from NVIDIA GPU feature discovery). It sets the default topology: "
            "Mistral Small 4 spans 4 H100, 2 H200 or 1 B200 node per replica."
        ),
    )
    gpus_per_node: Literal[1, 2, 4, 8] = Field(
        default=8,
        description=(
            "GPUs each pod requests (nvidia.com/gpu), one pod per node. HGX and DGX nodes have 8."
        ),
    )


def _divides(divisor: int | None, dividend: int | None) -> bool:
    return divisor is None or dividend is None or dividend % divisor == 0


class ParallelismSpec(SpecModel):
    """How one replica is split across nodes and GPUs. Unset fields are planned from the profile."""

    cel_rules = (
        CelRule(
            rule=(
                "!has(self.tensorParallelSize) || !has(self.attentionDataParallelSize) || "
                "self.tensorParallelSize % self.attentionDataParallelSize == 0"
            ),
            message=(
                "attentionDataParallelSize must divide tensorParallelSize "
                "(SGLang requires tp_size % attn_dp_size == 0)"
            ),
            field_path=".attentionDataParallelSize",
            check=lambda p: _divides(p.attention_data_parallel_size, p.tensor_parallel_size),
        ),
        CelRule(
            rule=(
                "!has(self.tensorParallelSize) || !has(self.expertParallelSize) || "
                "self.tensorParallelSize % self.expertParallelSize == 0"
            ),
            message=(
                "expertParallelSize must divide tensorParallelSize "
                "(SGLang splits each expert across tp_size / ep_size GPUs)"
            ),
            field_path=".expertParallelSize",
            check=lambda p: _divides(p.expert_parallel_size, p.tensor_parallel_size),
        ),
        CelRule(
            rule=(
                "!has(self.moeA2ABackend) || self.moeA2ABackend == 'none' || "
                "!has(self.tensorParallelSize) || !has(self.expertParallelSize) || "
                "self.expertParallelSize == self.tensorParallelSize"
            ),
            message=(
                "with a moeA2ABackend other than none, expertParallelSize must equal "
                "tensorParallelSize (SGLang 0.5 forces ep_size = tp_size for every a2a backend)"
            ),
            field_path=".expertParallelSize",
            check=lambda p: (
                p.moe_a2a_backend in (None, "none")
                or p.tensor_parallel_size is None
                or p.expert_parallel_size is None
                or p.expert_parallel_size == p.tensor_parallel_size
            ),
        ),
        CelRule(
            rule=(
                "!has(self.tensorParallelSize) || !has(self.nodesPerReplica) || "
                "(self.tensorParallelSize * (has(self.pipelineParallelSize) ? "
                "self.pipelineParallelSize : 1)) % self.nodesPerReplica == 0"
            ),
            message=(
                "tensorParallelSize x pipelineParallelSize must be divisible by "
                "nodesPerReplica (SGLang requires (tp_size * pp_size) % nnodes == 0)"
            ),
            field_path=".nodesPerReplica",
            check=lambda p: _divides(
                p.nodes_per_replica,
                None
                if p.tensor_parallel_size is None
                else p.tensor_parallel_size * (p.pipeline_parallel_size or 1),
            ),
        ),
    )

    nodes_per_replica: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description=(
            "Nodes (one pod each) in one replica group (SGLang --nnodes). Unset: the profile's "
            "default for spec.gpu.product, e.g. 2 for Mistral Small 4 on H200."
        ),
    )
    tensor_parallel_size: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description=(
            "Tensor-parallel ranks per replica (--tp-size). tensorParallelSize x "
            "pipelineParallelSize must equal nodesPerReplica x gpu.gpusPerNode. Unset: every "
            "GPU of the group is one tensor-parallel rank."
        ),
    )
    pipeline_parallel_size: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Pipeline-parallel stages per replica (--pp-size). Unset: 1.",
    )
    expert_parallel_size: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description=(
            "Expert-parallel ranks (--ep-size): MoE experts are spread over this many GPUs "
            "instead of each being split by tensor parallelism. Must divide "
            "tensorParallelSize; must equal it with any moeA2ABackend but none. Only for "
            "mixture-of-experts profiles. Unset: planned from the profile."
        ),
    )
    attention_data_parallel_size: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description=(
            "Attention data-parallel groups (--attn-dp-size): attention runs data-parallel "
            "while MoE layers stay expert-parallel. Must divide tensorParallelSize. Unset: "
            "planned from the profile."
        ),
    )
    moe_a2a_backend: MoeA2ABackend | None = Field(
        default=None,
        alias="moeA2ABackend",
        description=(
            "All-to-all backend for expert-parallel MoE layers (--moe-a2a-backend). deepep "
            "needs RDMA between nodes (see spec.placement.rdma). Unset: planned from the "
            "profile and topology."
        ),
    )
