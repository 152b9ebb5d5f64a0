"""Admission rules on the planned parallel sizes: what the planner refuses, refused at apply.

The planner (core/parallelism.py, `plan_shape` and `_experts`) fills the sizes a spec
leaves unset and then refuses sizes that do not fit together. The rules of
ParallelismSpec check the sizes a spec sets against each other; these check them against
the sizes the planner would plan (sizing_rules.py spells its defaults in CEL) and against
the catalogue (each MoE profile's expert count, generated into a CEL map here):
- pipelineParallelSize must divide the group's GPUs (nodes x gpu.gpusPerNode);
- attentionDataParallelSize and expertParallelSize must divide the planned tensor size;
- expertParallelSize must divide the model's experts;
- any moeA2ABackend but none needs expertParallelSize equal to the tensor size, also
  when expertParallelSize is planned: as the tensor size where that divides the experts
  (else their greatest common divisor, which does), and as 1 for a Compact replica.

The divisibility and backend rules apply where the existing ones do not: a spec that
sets tensorParallelSize has it checked by ParallelismSpec's rules and the world-size rule
of MistralModelSpec. The pipeline rule applies whether or not tensorParallelSize is set,
so that it names the field the planner names (the world-size rule refuses such a spec
too). A Compact replica with tensorParallelSize unset is sized by a memory search
(core/sizing.py `compact_gpus`, in floating point); what depends on the size it finds
(fitting one node; pipeline, attention and expert sizes against it) is left to the
admission webhook, which runs the planner itself. Every rule's Python twin gives the
CEL's verdict, and tests/unit/test_admission_rules.py checks both against the planner.

An expert size the planner picks can never be refused on its own: with
expertParallelSize unset it is the tensor size or gcd(tensor size, experts), which
divides both, and the backend it picks (deepep between nodes) only when the two are
equal. Such a spec (nodesPerReplica 5 on 8 GPUs a node: tp 40, ep gcd(40, 128) = 8) is
refused only with a moeA2ABackend asked for, by the backend rule.
"""

from __future__ import annotations

from typing import Any

from mistral_operator.api.base import CelRule
from mistral_operator.api.sizing_rules import HAS_TP, IS_MOE, NODES, PAR, TP, UNPLANNED, planned
from mistral_operator.api.topology import DEFAULT_MULTI_NODES
from mistral_operator.catalogue.profiles import MODEL_PROFILES, moe_profiles

_MOE = moe_profiles()
# Routed experts per MoE layer, by profile: what an expert-parallel size must divide.
EXPERTS: dict[str, int] = {
    p.name: p.experts for p in MODEL_PROFILES.values() if p.is_moe and p.experts is not None
}
_EXPERTS_CEL = "{" + ", ".join(f"'{name}': {count}" for name, count in EXPERTS.items()) + "}"


def _experts_in_words() -> str:
    by_count: dict[int, list[str]] = {}
    for name, count in EXPERTS.items():
        by_count.setdefault(count, []).append(name)
    return "; ".join(f"{count} for {', '.join(names)}" for count, names in by_count.items())


_NO_BACKEND = f"!has({PAR}.moeA2ABackend) || {PAR}.moeA2ABackend == 'none'"


def _planned_tp(spec: Any) -> int | None:
    """The tensor size the planner would use; None where UNPLANNED holds."""
    sizes = planned(spec)
    return None if sizes is None else sizes[2]


def _pp_divides_gpus(spec: Any) -> bool:
    par = spec.parallelism
    if par.shape == "Compact":
        return True  # tp x pp GPUs, or sized by the memory search
    pp = par.pipeline_parallel_size
    if pp is None:
        return True  # the planner's default divides
    if par.nodes_per_replica is not None:
        nodes = par.nodes_per_replica
    else:
        nodes = DEFAULT_MULTI_NODES if par.shape == "MultiNode" else 1
    return bool(nodes * spec.gpu.gpus_per_node % pp == 0)


def _divides_planned_tp(size: int | None, spec: Any) -> bool:
    tp = _planned_tp(spec)
    if size is None or spec.parallelism.tensor_parallel_size is not None or tp is None:
        return True
    return tp % size == 0


def _adp_divides_planned_tp(spec: Any) -> bool:
    return _divides_planned_tp(spec.parallelism.attention_data_parallel_size, spec)


def _ep_divides_planned_tp(spec: Any) -> bool:
    if spec.model.profile not in _MOE:
        return True  # expert parallelism of a dense profile is refused by its own rule
    return _divides_planned_tp(spec.parallelism.expert_parallel_size, spec)


def _ep_divides_experts(spec: Any) -> bool:
    ep = spec.parallelism.expert_parallel_size
    experts = EXPERTS.get(spec.model.profile)
    return ep is None or experts is None or experts % ep == 0


def _backend_has_ep_equal_tp(spec: Any) -> bool:
    par = spec.parallelism
    if spec.model.profile not in _MOE or par.moe_a2a_backend in (None, "none"):
        return True
    tp = _planned_tp(spec)
    if tp is None:
        return True
    if par.expert_parallel_size is not None:
        # Both set: ParallelismSpec's backend rule.
        return par.tensor_parallel_size is not None or par.expert_parallel_size == tp
    if par.shape == "Compact":
        return tp == 1  # the planner keeps experts tensor-parallel: ep 1
    experts = EXPERTS.get(spec.model.profile)
    return experts is None or experts % tp == 0


PP_RULE = CelRule(
    rule=(
        f"{PAR}.shape == 'Compact' || !has({PAR}.pipelineParallelSize) || "
        f"({NODES} * self.gpu.gpusPerNode) % {PAR}.pipelineParallelSize == 0"
    ),
    message=(
        "parallelism.pipelineParallelSize must divide the group's GPUs (nodesPerReplica x "
        "gpu.gpusPerNode): every GPU runs one rank"
    ),
    field_path=".parallelism.pipelineParallelSize",
    check=_pp_divides_gpus,
)

ADP_RULE = CelRule(
    rule=(
        f"{HAS_TP} || !has({PAR}.attentionDataParallelSize) || {UNPLANNED} || "
        f"{TP} % {PAR}.attentionDataParallelSize == 0"
    ),
    message=(
        "parallelism.attentionDataParallelSize must divide tensorParallelSize, which is "
        "the group's GPUs / pipelineParallelSize when unset (SGLang requires "
        "tp_size % attn_dp_size == 0)"
    ),
    field_path=".parallelism.attentionDataParallelSize",
    check=_adp_divides_planned_tp,
)

EP_TP_RULE = CelRule(
    rule=(
        f"!({IS_MOE}) || {HAS_TP} || !has({PAR}.expertParallelSize) || {UNPLANNED} || "
        f"{TP} % {PAR}.expertParallelSize == 0"
    ),
    message=(
        "parallelism.expertParallelSize must divide tensorParallelSize, which is the "
        "group's GPUs / pipelineParallelSize when unset (SGLang splits each expert across "
        "tp_size / ep_size GPUs)"
    ),
    field_path=".parallelism.expertParallelSize",
    check=_ep_divides_planned_tp,
)

EXPERTS_RULE = CelRule(
    rule=(
        f"!has({PAR}.expertParallelSize) || !(self.model.profile in {_EXPERTS_CEL}) || "
        f"{_EXPERTS_CEL}[self.model.profile] % {PAR}.expertParallelSize == 0"
    ),
    message=(
        f"parallelism.expertParallelSize must divide the model's experts: {_experts_in_words()}"
    ),
    field_path=".parallelism.expertParallelSize",
    check=_ep_divides_experts,
)

BACKEND_RULE = CelRule(
    rule=(
        f"!({IS_MOE}) || {_NO_BACKEND} || {UNPLANNED} || "
        f"(has({PAR}.expertParallelSize) ? "
        f"({HAS_TP} || {PAR}.expertParallelSize == {TP}) : "
        f"({PAR}.shape == 'Compact' ? {TP} == 1 : "
        f"(!(self.model.profile in {_EXPERTS_CEL}) || "
        f"{_EXPERTS_CEL}[self.model.profile] % {TP} == 0)))"
    ),
    message=(
        "with a moeA2ABackend other than none, parallelism.expertParallelSize must equal "
        "tensorParallelSize (SGLang forces ep_size = tp_size); unset, it is planned as 1 "
        "for shape Compact and as tensorParallelSize only where that divides the model's "
        "experts: set moeA2ABackend none, or sizes that are equal"
    ),
    field_path=".parallelism.expertParallelSize",
    check=_backend_has_ep_equal_tp,
)

SHAPE_RULES = (PP_RULE, ADP_RULE, EP_TP_RULE, EXPERTS_RULE, BACKEND_RULE)
