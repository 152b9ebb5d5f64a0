"""`spec.gpu` and `spec.parallelism`: the GPUs a replica runs on and how SGLang splits the model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from mistral_operator.api.base import CelRule, SpecModel
from mistral_operator.catalogue.profiles import GpuName

MoeA2ABackend = Literal["none", "deepep", "mooncake", "flashinfer"]
Shape = Literal["Compact", "Node", "MultiNode"]
# Nodes a MultiNode replica spans when parallelism.nodesPerReplica is unset.
DEFAULT_MULTI_NODES = 2


def _an_integer(value: Any) -> Any:
    """Only an integer: pydantic's Literal would take `true` as 1 and `2.0` as 2, which
    the API server refuses (a boolean) or may refuse (a float, in a CEL rule)."""
    if isinstance(value, bool | float):
        raise ValueError("Input should be 1, 2, 4 or 8")
    return value


class GpuSpec(SpecModel):
    """The GPU nodes replica groups run on."""

    product: GpuName = Field(
        description=(
            "GPU product. H100 matches nodes labelled nvidia.com/gpu.product="
            "NVIDIA-H100-80GB-HBM3, H200 matches NVIDIA-H200, B200 matches NVIDIA-B200 "
            "(labels from NVIDIA GPU feature discovery). Its memory sets the planned GPUs per "
            "replica: a Compact Mistral Small 4 (FP8) replica takes 2 H100, 2 H200 or 1 B200."
        ),
    )
    gpus_per_node: Annotated[Literal[1, 2, 4, 8], BeforeValidator(_an_integer)] = Field(
        default=8,
        description=(
            "GPUs of one node a replica may use (HGX and DGX nodes have 8). A Node or "
            "MultiNode pod requests all of them (nvidia.com/gpu); a Compact replica "
            "requests what it needs, at most this many."
        ),
    )


def _nodes_fit_shape(shape: str, nodes: int | None) -> bool:
    if nodes is None:
        return True
    return nodes >= 2 if shape == "MultiNode" else nodes == 1


def _divides(divisor: int | None, dividend: int | None) -> bool:
    return divisor is None or dividend is None or dividend % divisor == 0


class ParallelismSpec(SpecModel):
    """How one replica is split across nodes and GPUs. Unset fields are planned from the profile."""

    cel_rules = (
        CelRule(
            rule=(
                "!has(self.nodesPerReplica) || "
                "(has(self.shape) && self.shape == 'MultiNode' ? self.nodesPerReplica >= 2 "
                ": self.nodesPerReplica == 1)"
            ),
            message=(
                "nodesPerReplica above 1 needs shape MultiNode, and MultiNode spans at least "
                "2 nodes (Compact and Node replicas run on one node)"
            ),
            field_path=".nodesPerReplica",
            check=lambda p: _nodes_fit_shape(p.shape, p.nodes_per_replica),
        ),
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

    shape: Shape = Field(
        default="Compact",
        description=(
            "How a replica maps to nodes. Compact: one pod with the fewest GPUs that hold the "
            "weights and the KV cache of 4 full-context requests (Mistral Small 4 FP8: 2 H100 "
            "or H200, 1 B200, as in SGLang's cookbook); several replicas share a node. Node: "
            "one pod on a whole node, data-parallel attention with expert parallelism inside "
            "it, for throughput per node. MultiNode: nodesPerReplica pods on as many nodes, "
            "expert parallelism across them with data-parallel attention and an all-to-all "
            "backend (pipeline stages across nodes for dense models); attention is never "
            "tensor-parallel across nodes. status.topology shows the plan and its memory "
            "arithmetic."
        ),
    )
    nodes_per_replica: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description=(
            "Nodes (one pod each) in one replica group (SGLang --nnodes), for shape MultiNode. "
            f"Unset: {DEFAULT_MULTI_NODES} with MultiNode, 1 otherwise."
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
