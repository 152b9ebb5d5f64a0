"""Admission rules from the catalogue: memory that must fit and attention that stays in a node.

The planner (core/parallelism.py) checks the same, with the numbers in its refusal; these
rules let `kubectl apply` refuse such a spec before it is stored. They cover replicas
whose GPU count the spec fixes: Node and MultiNode shapes, and Compact with an explicit
tensorParallelSize. A Compact replica the operator sizes itself is sized to fit.

Everything is integer arithmetic in bytes, in CEL and in the Python twin alike:
    weights + GPUs x (one full-context request's KV per GPU) <= GPUs x usable memory per GPU
where a request's KV is whole on every GPU with latent attention (MLA) and split over the
attention group's GPUs with grouped-query attention.
"""

from __future__ import annotations

from typing import Any, get_args

from mistral_operator.api.base import CelRule
from mistral_operator.api.model import Quantization
from mistral_operator.api.topology import DEFAULT_MULTI_NODES
from mistral_operator.catalogue.profiles import (
    GIB,
    GPU_PROFILES,
    MODEL_PROFILES,
    moe_profiles,
    precision_of,
)

_MOE = moe_profiles()
_LATENT = tuple(p.name for p in MODEL_PROFILES.values() if p.latent_attention)


def weight_bytes(profile: str, quantization: str) -> int:
    model = MODEL_PROFILES[profile]  # type: ignore[index]
    return int(model.weight_gib(precision_of(quantization, model)) * GIB)


def _cel_map(entries: dict[str, Any]) -> str:
    return "{" + ", ".join(f"'{k}': {v}" for k, v in entries.items()) + "}"


_WEIGHTS = _cel_map(
    {
        name: _cel_map({q: weight_bytes(name, q) for q in get_args(Quantization)})
        for name in MODEL_PROFILES
    }
)
_KV_BYTES = _cel_map({name: p.kv_bytes_per_token for name, p in MODEL_PROFILES.items()})
_MAX_CONTEXT = _cel_map({name: p.max_context_length for name, p in MODEL_PROFILES.items()})
_USABLE = _cel_map({name: g.usable_bytes for name, g in GPU_PROFILES.items()})


def _list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


# The planner's defaults, spelled in CEL over the defaulted object (shape_rules.py uses
# them too): nodes, pipeline stages, GPUs and tensor size of one replica.
PAR = "self.parallelism"
HAS_TP = f"has({PAR}.tensorParallelSize)"
IS_MOE = f"self.model.profile in {_list(_MOE)}"
NODES = (
    f"(has({PAR}.nodesPerReplica) ? {PAR}.nodesPerReplica : "
    f"({PAR}.shape == 'MultiNode' ? {DEFAULT_MULTI_NODES} : 1))"
)
PP = (
    f"(has({PAR}.pipelineParallelSize) ? {PAR}.pipelineParallelSize : "
    f"({PAR}.shape == 'MultiNode' && !({IS_MOE}) && !{HAS_TP} ? {NODES} : 1))"
)
GPUS = (
    f"({PAR}.shape == 'Compact' ? {PAR}.tensorParallelSize * {PP} : {NODES} * self.gpu.gpusPerNode)"
)
TP = f"({HAS_TP} ? {PAR}.tensorParallelSize : {GPUS} / {PP})"
# True where the spec does not fix the tensor size: a Compact replica sized by the
# memory search, or pipeline stages that do not divide the GPUs (a rule of its own).
# Where it is false, GPUS, PP and TP are defined and TP >= 1.
UNPLANNED = f"({PAR}.shape == 'Compact' && !{HAS_TP}) || {GPUS} % {PP} != 0"
_GROUP = (
    f"(has({PAR}.attentionDataParallelSize) ? {TP} / {PAR}.attentionDataParallelSize : "
    f"(({IS_MOE}) && {PAR}.shape != 'Compact' ? 1 : {TP}))"
)
# Sizes another rule refuses (or that cannot divide) are left to that rule.
_UNSIZED = (
    f"{UNPLANNED} || "
    f"(has({PAR}.attentionDataParallelSize) && {TP} % {PAR}.attentionDataParallelSize != 0)"
)
_CONTEXT = (
    "(has(self.runtime.contextLength) ? self.runtime.contextLength : "
    f"{_MAX_CONTEXT}[self.model.profile])"
)
_KV = f"{_CONTEXT} * {_KV_BYTES}[self.model.profile]"
# Pipeline stages each hold the KV of their own layers; the planner counts a latent
# cache whole on every GPU (safe with stages too).
_KV_PER_GPU = f"(self.model.profile in {_list(_LATENT)} ? {_KV} : {_KV} / ({_GROUP} * {PP}))"

MEMORY_RULE = (
    f"{_UNSIZED} || "
    f"{_WEIGHTS}[self.model.profile][self.model.quantization] + {GPUS} * {_KV_PER_GPU} "
    f"<= {GPUS} * {_USABLE}[self.gpu.product]"
)

ATTENTION_RULE = f"{PAR}.shape != 'MultiNode' || {_UNSIZED} || self.gpu.gpusPerNode % {_GROUP} == 0"


def planned(spec: Any) -> tuple[int, int, int] | None:
    """(GPUs, pipeline stages, tensor size) of a replica as the planner defaults them;
    None where UNPLANNED holds: the memory search sizes it, or the stages do not divide
    the GPUs."""
    par = spec.parallelism
    moe = spec.model.profile in _MOE
    if par.nodes_per_replica is not None:
        nodes = par.nodes_per_replica
    else:
        nodes = DEFAULT_MULTI_NODES if par.shape == "MultiNode" else 1
    dense_multi = par.shape == "MultiNode" and not moe and par.tensor_parallel_size is None
    pp = par.pipeline_parallel_size or (nodes if dense_multi else 1)
    if par.shape == "Compact":
        if par.tensor_parallel_size is None:
            return None
        gpus = par.tensor_parallel_size * pp
    else:
        gpus = nodes * spec.gpu.gpus_per_node
    if gpus % pp:
        return None
    return gpus, pp, par.tensor_parallel_size or gpus // pp


def _sizes(spec: Any) -> tuple[int, int, int] | None:
    """(GPUs, pipeline stages, attention group) as the planner defaults them; None
    where the spec leaves the size to the planner or another rule refuses it."""
    sizes = planned(spec)
    if sizes is None:
        return None
    gpus, pp, tp = sizes
    par = spec.parallelism
    dp = par.attention_data_parallel_size
    if dp is not None and tp % dp:
        return None
    spread = spec.model.profile in _MOE and par.shape != "Compact"  # data-parallel attention
    default_group = 1 if spread else tp
    return gpus, pp, (tp // dp if dp is not None else default_group)


def memory_fits(spec: Any) -> bool:
    sizes = _sizes(spec)
    if sizes is None:
        return True
    gpus, pp, group = sizes
    model = MODEL_PROFILES[spec.model.profile]
    context = spec.runtime.context_length or model.max_context_length
    kv = context * model.kv_bytes_per_token
    per_gpu = kv if model.latent_attention else kv // (group * pp)
    usable = GPU_PROFILES[spec.gpu.product].usable_bytes
    return weight_bytes(spec.model.profile, spec.model.quantization) + gpus * per_gpu <= (
        gpus * usable
    )


def attention_within_a_node(spec: Any) -> bool:
    sizes = _sizes(spec)
    if spec.parallelism.shape != "MultiNode" or sizes is None:
        return True
    return bool(spec.gpu.gpus_per_node % sizes[2] == 0)


SIZING_RULES = (
    CelRule(
        rule=MEMORY_RULE,
        message=(
            "the replica's GPUs cannot hold the model's weights and the KV cache of one "
            "full-context request: use more GPUs (tensorParallelSize, shape Node or "
            "MultiNode), a smaller model.quantization or a shorter runtime.contextLength; "
            "`mistral-operator sizing` shows the arithmetic per GPU"
        ),
        field_path=".parallelism",
        check=memory_fits,
    ),
    CelRule(
        rule=ATTENTION_RULE,
        message=(
            "attention would be tensor-parallel across nodes: tensorParallelSize / "
            "attentionDataParallelSize GPUs per attention group must divide gpu.gpusPerNode "
            "(use attentionDataParallelSize = tensorParallelSize / GPUs per node or more)"
        ),
        field_path=".parallelism.attentionDataParallelSize",
        check=attention_within_a_node,
    ),
)
