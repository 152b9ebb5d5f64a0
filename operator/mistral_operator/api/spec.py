"""`spec` of a MistralModel: all its parts, and the rules that relate one part to another."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field

from mistral_operator.api.base import CelRule, SpecModel
from mistral_operator.api.cache import CacheSpec
from mistral_operator.api.model import CapabilitiesSpec, ModelSpec
from mistral_operator.api.placement import PlacementSpec
from mistral_operator.api.rollout import GroupFailurePolicySpec, RolloutSpec
from mistral_operator.api.runtime import RuntimeSpec
from mistral_operator.api.scaling import AutoscalingSpec
from mistral_operator.api.shape_rules import SHAPE_RULES
from mistral_operator.api.sizing_rules import SIZING_RULES
from mistral_operator.api.topology import DEFAULT_MULTI_NODES, GpuSpec, ParallelismSpec
from mistral_operator.catalogue.profiles import (
    GPU_PROFILES,
    MODEL_PROFILES,
    moe_profiles,
    profiles_with,
)


def _cel_list(names: Iterable[str]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


_MAX_CONTEXT = (
    "{" + ", ".join(f"'{p.name}': {p.max_context_length}" for p in MODEL_PROFILES.values()) + "}"
)
_FP4_GPUS = tuple(g.name for g in GPU_PROFILES.values() if g.supports_fp4)
_MOE_PROFILES = moe_profiles()


def _nodes(p: ParallelismSpec) -> int:
    if p.nodes_per_replica is not None:
        return p.nodes_per_replica
    return DEFAULT_MULTI_NODES if p.shape == "MultiNode" else 1


def _world_size(p: ParallelismSpec) -> int | None:
    if p.tensor_parallel_size is None:
        return None
    return p.tensor_parallel_size * (p.pipeline_parallel_size or 1)


_CEL_WORLD_SIZE = (
    "self.parallelism.tensorParallelSize * (has(self.parallelism.pipelineParallelSize) ? "
    "self.parallelism.pipelineParallelSize : 1)"
)


def _capability_rule(
    field: Literal["reasoning", "toolCalling"],
    attribute: Literal["reasoning", "tool_calling"],
) -> CelRule:
    supported = profiles_with(attribute)
    return CelRule(
        rule=(
            f"!has(self.capabilities.{field}) || !self.capabilities.{field} || "
            f"self.model.profile in {_cel_list(supported)}"
        ),
        message=f"capabilities.{field} needs a profile that supports it: {', '.join(supported)}",
        field_path=f".capabilities.{field}",
        check=lambda s: not getattr(s.capabilities, attribute) or s.model.profile in supported,
    )


def _context_limits() -> str:
    by_length: dict[int, list[str]] = {}
    for p in MODEL_PROFILES.values():
        by_length.setdefault(p.max_context_length, []).append(p.name)
    return "; ".join(
        f"{length} for {', '.join(profiles)}"
        for length, profiles in sorted(by_length.items(), reverse=True)
    )


def _context_fits(spec: Any) -> bool:
    length = spec.runtime.context_length
    return length is None or length <= MODEL_PROFILES[spec.model.profile].max_context_length


def _reads_the_hub(spec: Any) -> bool:
    """Whether a fill Job or SGLang itself downloads the weights: credentialsSecretRef's readers."""
    source = spec.model.source
    if spec.cache.mode != "None":  # NodeLocal and SharedPVC caches are filled by Jobs
        return True
    return bool(spec.cache.mode == "None" and (source is None or source.startswith("hf://")))


def _fillable(source: str | None) -> bool:
    """A source the cache-fill program reads over HTTP (the Hub, or a mirror of it)."""
    return source is None or source.startswith(("hf://", "https://", "http://"))


def _read_by_the_pods(source: str | None) -> bool:
    """A source SGLang reads itself (cache.mode None): the Hub (the default) or a claim."""
    return source is None or source.startswith(("hf://", "pvc://"))


def _uses_experts(p: ParallelismSpec) -> bool:
    return (p.expert_parallel_size or 1) > 1 or p.moe_a2a_backend not in (None, "none")


class MistralModelSpec(SpecModel):
    """The desired state of a served Mistral model."""

    cel_rules = (
        CelRule(
            rule=(
                "!has(self.parallelism.tensorParallelSize) || "
                "self.parallelism.shape == 'Compact' || "
                f"{_CEL_WORLD_SIZE} == (has(self.parallelism.nodesPerReplica) ? "
                "self.parallelism.nodesPerReplica : (self.parallelism.shape == 'MultiNode' ? "
                f"{DEFAULT_MULTI_NODES} : 1)) * self.gpu.gpusPerNode"
            ),
            message=(
                "with shape Node or MultiNode, parallelism.tensorParallelSize x "
                "parallelism.pipelineParallelSize must equal the replica's nodes x "
                "gpu.gpusPerNode: every GPU of a group runs one rank"
            ),
            field_path=".parallelism.tensorParallelSize",
            check=lambda s: (
                _world_size(s.parallelism) is None
                or s.parallelism.shape == "Compact"
                or _world_size(s.parallelism) == _nodes(s.parallelism) * s.gpu.gpus_per_node
            ),
        ),
        CelRule(
            rule=(
                "!has(self.parallelism.tensorParallelSize) || "
                "self.parallelism.shape != 'Compact' || "
                f"self.gpu.gpusPerNode % ({_CEL_WORLD_SIZE}) == 0"
            ),
            message=(
                "with shape Compact, parallelism.tensorParallelSize x "
                "parallelism.pipelineParallelSize must divide gpu.gpusPerNode: a Compact "
                "replica is one pod on part of one node"
            ),
            field_path=".parallelism.tensorParallelSize",
            check=lambda s: (
                _world_size(s.parallelism) is None
                or s.parallelism.shape != "Compact"
                or s.gpu.gpus_per_node % (_world_size(s.parallelism) or 1) == 0
            ),
        ),
        CelRule(
            rule=(
                "((!has(self.parallelism.expertParallelSize) || "
                "self.parallelism.expertParallelSize == 1) && "
                "(!has(self.parallelism.moeA2ABackend) || "
                "self.parallelism.moeA2ABackend == 'none')) || "
                f"self.model.profile in {_cel_list(_MOE_PROFILES)}"
            ),
            message=(
                "parallelism.expertParallelSize > 1 and parallelism.moeA2ABackend need a "
                f"mixture-of-experts profile: {', '.join(_MOE_PROFILES)}"
            ),
            field_path=".parallelism.expertParallelSize",
            check=lambda s: not _uses_experts(s.parallelism) or s.model.profile in _MOE_PROFILES,
        ),
        CelRule(
            rule=(
                f"self.model.quantization != 'nvfp4' || self.gpu.product in {_cel_list(_FP4_GPUS)}"
            ),
            message=(
                f"model.quantization nvfp4 needs a GPU with FP4 support: {', '.join(_FP4_GPUS)}"
            ),
            field_path=".model.quantization",
            check=lambda s: s.model.quantization != "nvfp4" or s.gpu.product in _FP4_GPUS,
        ),
        CelRule(
            rule=(
                "!has(self.runtime.contextLength) || "
                f"!(self.model.profile in {_MAX_CONTEXT}) || "
                f"self.runtime.contextLength <= {_MAX_CONTEXT}[self.model.profile]"
            ),
            message=(
                "runtime.contextLength must not exceed the profile's maximum context length: "
                + _context_limits()
            ),
            field_path=".runtime.contextLength",
            check=_context_fits,
        ),
        *SIZING_RULES,
        *SHAPE_RULES,
        _capability_rule("reasoning", "reasoning"),
        _capability_rule("toolCalling", "tool_calling"),
        CelRule(
            rule=(
                "!has(self.model.credentialsSecretRef) || self.cache.mode != 'None' || "
                "(self.cache.mode == 'None' && "
                "(!has(self.model.source) || self.model.source.startsWith('hf://')))"
            ),
            message=(
                "model.credentialsSecretRef is used only by readers of the Hugging Face Hub: "
                "the fill Jobs of cache.mode NodeLocal or SharedPVC, or the pods themselves "
                "with cache.mode None and an hf:// source"
            ),
            field_path=".model.credentialsSecretRef",
            check=lambda s: s.model.credentials_secret_ref is None or _reads_the_hub(s),
        ),
        CelRule(
            rule=(
                "self.cache.mode == 'None' || !has(self.model.source) || "
                "self.model.source.startsWith('hf://') || "
                "self.model.source.startsWith('https://') || "
                "self.model.source.startsWith('http://')"
            ),
            message=(
                "with cache.mode NodeLocal or SharedPVC, model.source must be hf:// or an "
                "http(s):// mirror: the fill Jobs do not read s3:// or pvc:// sources; use "
                "cache.mode None for pvc://"
            ),
            field_path=".model.source",
            check=lambda s: s.cache.mode == "None" or _fillable(s.model.source),
        ),
        CelRule(
            rule=(
                "self.cache.mode != 'None' || !has(self.model.source) || "
                "self.model.source.startsWith('hf://') || self.model.source.startsWith('pvc://')"
            ),
            message=(
                "cache.mode None serves only hf:// and pvc:// sources, which the pods read "
                "themselves: an http(s):// mirror needs cache.mode NodeLocal or SharedPVC, "
                "and s3:// sources are not read yet"
            ),
            field_path=".cache.mode",
            check=lambda s: s.cache.mode != "None" or _read_by_the_pods(s.model.source),
        ),
    )

    model: ModelSpec = Field(
        default_factory=ModelSpec,
        json_schema_extra={"default": {}},
        description="Which model to serve and where its weights come from.",
    )
    runtime: RuntimeSpec = Field(
        default_factory=RuntimeSpec,
        json_schema_extra={"default": {}},
        description="The SGLang container: image, extra arguments, environment and resources.",
    )
    capabilities: CapabilitiesSpec = Field(
        default_factory=CapabilitiesSpec,
        json_schema_extra={"default": {}},
        description="Reasoning and tool calling; unset ones follow the profile.",
    )
    gpu: GpuSpec = Field(description="The GPU nodes replica groups run on.")
    parallelism: ParallelismSpec = Field(
        default_factory=ParallelismSpec,
        json_schema_extra={"default": {}},
        description=(
            "How one replica is split over nodes and GPUs (SGLang --nnodes, --tp-size, "
            "--pp-size, --ep-size, --attn-dp-size, --moe-a2a-backend). Leave fields unset to "
            "let the operator plan them from the profile and GPU; status.topology shows the plan."
        ),
    )
    placement: PlacementSpec = Field(
        default_factory=PlacementSpec,
        json_schema_extra={"default": {}},
        description="Node selection, tolerations, topology domain, host network and RDMA.",
    )
    cache: CacheSpec = Field(
        default_factory=CacheSpec,
        json_schema_extra={"default": {}},
        description="Where pods read the weights: a node directory, a shared volume or the source.",
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1024,
        description=(
            "Desired replica groups, each serving the whole model. While autoscaling.enabled "
            "is true the built-in autoscaler decides and this is only the count to start "
            "from. Otherwise an HPA or KEDA may set it through the scale subresource "
            "(kubectl scale mm/<name> --replicas=N)."
        ),
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description=(
            "The built-in autoscaler: the group count follows the requests queued at the "
            "serving groups, within minReplicas..maxReplicas. Unset: spec.replicas is served."
        ),
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec,
        json_schema_extra={"default": {}},
        description="How groups are replaced when a pod-affecting field changes.",
    )
    group_failure_policy: GroupFailurePolicySpec = Field(
        default_factory=GroupFailurePolicySpec,
        json_schema_extra={"default": {}},
        description="What happens when a pod of a running group fails or restarts.",
    )
