"""Admission parity (issue 14): the CRD's rules refuse what the planner and renderer refuse.

The planner (`plan_shape`) and the renderer (`resolve_weights`) refuse some specs with a
SpecError that names a field. Every such refusal that depends on the spec alone has a
CelRule, and the rules' Python twins are run here over a grid of specs: profiles x GPUs x
gpu.gpusPerNode x shapes x nodesPerReplica 1..8 x tensor, pipeline, expert and attention
sizes (unset or set) x moeA2ABackend x cache modes x sources. On every spec that no rule
stricter than the planner refuses (STRICTER, each with the reason it is stricter), the
twins refuse it exactly when the planner does, and one of the refusing rules names the
field the planner names. Every rule's CEL is evaluated too (tests/unit/cel_subset.py), on
a sample of the grid, and must agree with its twin.

Left to the admission webhook: a Compact replica with tensorParallelSize unset is sized by
the planner's floating-point memory search (core/sizing.py `compact_gpus`), and its
refusals that depend on the size found (no fit in one node; pipeline, attention or expert
sizes against it; a moeA2ABackend with the planned expert size 1) have no CEL rule. The
test counts those and checks that nothing else escapes the rules.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from unittest.mock import patch

import pytest
import yaml

from mistral_operator.api.base import CelRule
from mistral_operator.api.cache import CacheSpec
from mistral_operator.api.crd import openapi_schema
from mistral_operator.api.shape_rules import (
    ADP_RULE,
    BACKEND_RULE,
    EP_TP_RULE,
    EXPERTS,
    EXPERTS_RULE,
    PP_RULE,
    SHAPE_RULES,
)
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.topology import ParallelismSpec
from mistral_operator.catalogue.profiles import MODEL_PROFILES, moe_profiles
from mistral_operator.core.errors import SpecError
from mistral_operator.core.parallelism import plan_shape
from mistral_operator.core.render import resolve_weights
from tests.unit.cel_subset import Node, _evaluate, _Parser, with_defaults

pytestmark = pytest.mark.unit

SCHEMA = openapi_schema()["properties"]["spec"]
# Where each class's rules sit in the object, as the API server reports their fields.
RULED: tuple[tuple[type[Any], str], ...] = (
    (MistralModelSpec, "spec"),
    (ParallelismSpec, "spec.parallelism"),
    (CacheSpec, "spec.cache"),
)
# The rules as declared: the grid runs with them out of model validation.
RULES: dict[type[Any], tuple[CelRule, ...]] = {cls: cls.cel_rules for cls, _ in RULED}


def _rule(cls: type[Any], starts: str) -> CelRule:
    rules: tuple[CelRule, ...] = cls.cel_rules
    (found,) = (r for r in rules if r.message.startswith(starts))
    return found


# Rules that refuse specs the planner would plan, each for a reason of its own; specs one
# of them refuses are outside the parity domain (they are refused whatever the planner says).
STRICTER: dict[CelRule, str] = {
    _rule(ParallelismSpec, "nodesPerReplica above 1 needs shape MultiNode"): (
        "the planner ignores nodesPerReplica for Compact and Node; a value there is a mistake"
    ),
    _rule(MistralModelSpec, "parallelism.expertParallelSize > 1 and parallelism.moeA2A"): (
        "the planner ignores expert sizes and backends for dense profiles"
    ),
    _rule(MistralModelSpec, "with shape Compact, parallelism.tensorParallelSize x"): (
        "a Compact replica that does not divide a node's GPUs packs badly or never schedules"
    ),
    _rule(MistralModelSpec, "with cache.mode NodeLocal or SharedPVC, model.source must"): (
        "the fill Jobs, not the planner, read the source: they refuse s3:// and pvc://"
    ),
}
CACHE_NONE_RULE = _rule(MistralModelSpec, "cache.mode None serves only")

PROFILES = ("mistral-small-4-119b", "mixtral-8x7b", "mistral-large-2-123b", "mistral-7b-v0.3")
MOE_PROFILES = ("mistral-small-4-119b", "mixtral-8x7b", "mixtral-8x22b")
GPUS = ("H100", "H200", "B200")
GPUS_PER_NODE = (1, 2, 4, 8)
# (shape, nodesPerReplica); the other shapes with nodesPerReplica are in the cache grid.
SHAPES = (
    ("Compact", None),
    ("Node", None),
    ("Node", 1),
    ("MultiNode", None),
    *(("MultiNode", n) for n in range(2, 9)),
)
TP = (None, 1, 2, 4, 8, 16, 24, 40)
PP = (None, 1, 2, 3)
ADP = (None, 1, 2, 3, 8)
EP = (None, 1, 2, 3, 8, 16, 40)
BACKENDS = (None, "none", "deepep", "mooncake", "flashinfer")
CACHES: tuple[dict[str, Any], ...] = (
    {"mode": "None"},
    {"mode": "NodeLocal"},
    {"mode": "SharedPVC", "pvc": {"claimName": "weights"}},
)
SOURCES = (
    None,
    "hf://mistralai/weights",
    "pvc://weights/mistral",
    "s3://weights/mistral",
    "https://mirror.example/mistralai/weights",
    "http://mirror.example/hf/mistralai/weights",
)
# Every how many grid specs the CEL of every rule is evaluated as well.
CEL_SAMPLE = 97


def body(
    profile: str,
    gpu: str,
    gpus_per_node: int,
    shape: str,
    *,
    nodes: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    ep: int | None = None,
    adp: int | None = None,
    backend: str | None = None,
    cache: dict[str, Any] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """A spec as it is applied: only the fields given."""
    parallelism = {
        "shape": shape,
        "nodesPerReplica": nodes,
        "tensorParallelSize": tp,
        "pipelineParallelSize": pp,
        "expertParallelSize": ep,
        "attentionDataParallelSize": adp,
        "moeA2ABackend": backend,
    }
    model = {"profile": profile, "source": source}
    return {
        "gpu": {"product": gpu, "gpusPerNode": gpus_per_node},
        "model": {k: v for k, v in model.items() if v is not None},
        "parallelism": {k: v for k, v in parallelism.items() if v is not None},
        "cache": cache or {"mode": "NodeLocal"},
    }


def sizes_grid() -> Iterator[dict[str, Any]]:
    """Pipeline and attention sizes against the shapes and the planned tensor size."""
    for profile, gpu, per_node, (shape, nodes), tp, pp, adp in itertools.product(
        PROFILES, GPUS, GPUS_PER_NODE, SHAPES, TP, PP, ADP
    ):
        yield body(profile, gpu, per_node, shape, nodes=nodes, tp=tp, pp=pp, adp=adp)


def experts_grid() -> Iterator[dict[str, Any]]:
    """Expert sizes and all-to-all backends against the experts and the planned tensor size."""
    for profile, per_node, (shape, nodes), tp, pp, ep, backend in itertools.product(
        MOE_PROFILES, GPUS_PER_NODE, SHAPES, TP, (None, 2), EP, BACKENDS
    ):
        yield body(
            profile, "B200", per_node, shape, nodes=nodes, tp=tp, pp=pp, ep=ep, backend=backend
        )


def weights_grid() -> Iterator[dict[str, Any]]:
    """Cache modes and sources, the nodesPerReplica the other grids leave out, and expert
    sizes and backends on a dense profile (which the planner ignores)."""
    for profile, shape, cache, source in itertools.product(
        MODEL_PROFILES, ("Compact", "Node", "MultiNode"), CACHES, SOURCES
    ):
        yield body(profile, "H200", 8, shape, cache=cache, source=source)
    for profile, (shape, count), tp in itertools.product(
        PROFILES, (("Compact", 1), ("Compact", 2), ("Node", 2), ("MultiNode", 1)), (None, 8)
    ):
        yield body(profile, "H200", 8, shape, nodes=count, tp=tp)
    for (shape, nodes), ep, backend in itertools.product(SHAPES, EP, BACKENDS):
        yield body("mistral-7b-v0.3", "H200", 8, shape, nodes=nodes, ep=ep, backend=backend)


@dataclass
class Tally:
    """What the grid found, by class."""

    specs: int = 0
    both_refuse: int = 0
    both_accept: int = 0
    stricter_only: int = 0
    cel_checked: int = 0
    webhook: Counter[str] = field(default_factory=Counter)
    planner_fields: Counter[str] = field(default_factory=Counter)
    sole_refuser: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)
    cel_mismatches: list[str] = field(default_factory=list)


def _twin(check: Callable[[Any], bool], part: str) -> Callable[[MistralModelSpec], bool]:
    """A twin applied to a whole spec, whichever part of it the rule is declared on."""
    if part == "spec.parallelism":
        return lambda s: check(s.parallelism)
    if part == "spec.cache":
        return lambda s: check(s.cache)
    return check


def _twins() -> list[tuple[CelRule, str, Callable[[MistralModelSpec], bool]]]:
    """(rule, the field it names, its twin on a whole spec), for every rule."""
    found = []
    for cls, prefix in RULED:
        for rule in RULES[cls]:
            assert rule.check is not None
            found.append((rule, prefix + (rule.field_path or ""), _twin(rule.check, prefix)))
    return found


TWINS = _twins()


def refusals(spec: MistralModelSpec) -> list[tuple[CelRule, str]]:
    """Every rule whose twin refuses the spec, with the field it names."""
    return [(rule, name) for rule, name, check in TWINS if not check(spec)]


def planner_refusal(spec: MistralModelSpec) -> str | None:
    """The field the planner or the renderer refuses, or None when they plan the spec."""
    try:
        resolve_weights(spec, plan_shape(spec))
    except SpecError as err:
        return err.field
    return None


def left_to_the_webhook(spec: MistralModelSpec) -> bool:
    par = spec.parallelism
    return par.shape == "Compact" and par.tensor_parallel_size is None


class CelTrees:
    """Every rule's CEL, parsed once, and evaluated as the API server would."""

    def __init__(self) -> None:
        self.trees: dict[CelRule, Node] = {
            rule: _Parser(rule.rule).parse() for rules in RULES.values() for rule in rules
        }

    def disagreements(self, raw: dict[str, Any], spec: MistralModelSpec) -> list[str]:
        stored = with_defaults(SCHEMA, raw)
        values = {"spec": stored, "spec.parallelism": stored["parallelism"]}
        values["spec.cache"] = stored["cache"]
        targets = {"spec": spec, "spec.parallelism": spec.parallelism, "spec.cache": spec.cache}
        out = []
        for cls, prefix in RULED:
            for rule in RULES[cls]:
                assert rule.check is not None
                cel = _evaluate(self.trees[rule], {"self": values[prefix]})
                if cel is not rule.check(targets[prefix]):
                    out.append(f"CEL {cel} != twin for {rule.message[:60]!r} on {raw}")
        return out


class Parser:
    """Specs of the grid, parsed with the rules out of model validation; each distinct
    spec.parallelism (plain sizes) and each distinct rest of a spec is parsed once."""

    _NAMES: ClassVar[dict[str, str]] = {
        info.alias or name: name for name, info in ParallelismSpec.model_fields.items()
    }

    def __init__(self) -> None:
        self.bases: dict[str, MistralModelSpec] = {}
        self.parallelisms: dict[tuple[tuple[str, Any], ...], ParallelismSpec] = {}

    def __call__(self, raw: dict[str, Any]) -> MistralModelSpec:
        rest = {k: v for k, v in raw.items() if k != "parallelism"}
        base = self.bases.get(key := repr(rest))
        if base is None:
            base = self.bases[key] = MistralModelSpec.model_validate(rest)
        sizes = tuple(raw["parallelism"].items())
        parallelism = self.parallelisms.get(sizes)
        if parallelism is None:
            fields = {self._NAMES[k]: v for k, v in sizes}
            parallelism = ParallelismSpec.model_construct(set(fields), **fields)
            self.parallelisms[sizes] = parallelism
        return base.model_copy(update={"parallelism": parallelism})


def judge(raw: dict[str, Any], spec: MistralModelSpec, tally: Tally, cel: CelTrees | None) -> None:
    refused = refusals(spec)
    planner = planner_refusal(spec)
    tally.specs += 1
    if cel is not None:
        tally.cel_checked += 1
        tally.cel_mismatches.extend(cel.disagreements(raw, spec))
    if planner is not None:
        tally.planner_fields[planner] += 1
    if any(rule in STRICTER for rule, _ in refused):
        tally.stricter_only += planner is None
        tally.both_refuse += planner is not None
        return
    if len(refused) == 1:
        tally.sole_refuser[refused[0][0].message] += 1
    if planner is None and not refused:
        tally.both_accept += 1
    elif planner is None:
        tally.mismatches.append(f"refused, the planner plans it: {refused[0][1]} on {raw}")
    elif not refused and left_to_the_webhook(spec):
        tally.webhook[planner] += 1
    elif not refused:
        tally.mismatches.append(f"accepted, the planner refuses {planner}: {raw}")
    elif planner not in {f for _, f in refused} and not left_to_the_webhook(spec):
        fields = sorted({f for _, f in refused})
        tally.mismatches.append(f"the planner names {planner}, the rules {fields}: {raw}")
    else:
        tally.both_refuse += 1


@pytest.fixture(scope="module")
def tally() -> Tally:
    """The whole grid, judged once with the rules out of model validation (so that every
    refusing rule is seen, not only the first)."""
    found = Tally()
    cel = CelTrees()
    with ExitStack() as stack:
        for cls, _ in RULED:
            stack.enter_context(patch.object(cls, "cel_rules", ()))
        parse = Parser()
        grids = itertools.chain(sizes_grid(), experts_grid(), weights_grid())
        for index, raw in enumerate(grids):
            spec = parse(raw)
            if index % CEL_SAMPLE == 0:  # the parser's spec is the validator's
                assert spec == MistralModelSpec.model_validate(raw)
                judge(raw, spec, found, cel)
            else:
                judge(raw, spec, found, None)
    return found


def shown(found: list[str]) -> str:
    return f"{len(found)} found, the first:\n" + "\n".join(found[:10])


def test_the_twins_refuse_exactly_what_the_planner_refuses(tally: Tally) -> None:
    print(
        f"{tally.specs} specs: {tally.both_refuse} refused by both, {tally.both_accept} "
        f"accepted by both, {tally.stricter_only} refused by a stricter rule only, "
        f"{sum(tally.webhook.values())} left to the webhook {dict(tally.webhook)}"
    )
    assert tally.specs > 100_000
    assert not tally.mismatches, shown(tally.mismatches)


def test_the_cel_agrees_with_the_twins_on_the_grid(tally: Tally) -> None:
    assert tally.cel_checked > 1_000
    assert not tally.cel_mismatches, shown(tally.cel_mismatches)


@pytest.mark.parametrize("rule", SHAPE_RULES, ids=lambda r: r.message[:40])
def test_every_new_rule_is_the_only_one_to_refuse_some_spec(tally: Tally, rule: CelRule) -> None:
    """No rule is redundant: each catches planner refusals that nothing else catches."""
    assert tally.sole_refuser[rule.message] > 0


def test_the_grid_reaches_every_class_of_refusal(tally: Tally) -> None:
    for name in (
        "pipelineParallelSize",
        "attentionDataParallelSize",
        "expertParallelSize",
        "tensorParallelSize",
    ):
        assert tally.planner_fields[f"spec.parallelism.{name}"] > 0, name
    assert tally.planner_fields["spec.parallelism"] > 0  # memory
    assert tally.planner_fields["spec.cache.mode"] > 0
    # What only the webhook refuses: the Compact memory search and the sizes against it.
    assert set(tally.webhook) <= {
        "spec.parallelism.shape",
        "spec.parallelism.pipelineParallelSize",
        "spec.parallelism.attentionDataParallelSize",
        "spec.parallelism.expertParallelSize",
        "spec.parallelism",
    }


def planned_without_rules(raw: dict[str, Any]) -> str | None:
    """The planner's verdict on a spec, whatever the rules say of it."""
    with ExitStack() as stack:
        for cls, _ in RULED:
            stack.enter_context(patch.object(cls, "cel_rules", ()))
        spec = MistralModelSpec.model_validate(raw)
    return planner_refusal(spec)


@pytest.mark.parametrize("profile", moe_profiles())
@pytest.mark.parametrize("backend", [None, "none"])
def test_an_expert_size_the_planner_picks_is_never_refused(
    profile: str, backend: str | None
) -> None:
    """With expertParallelSize unset the planner takes the tensor size where it divides the
    experts and their gcd otherwise, and picks a backend only when the two are equal: no
    nodesPerReplica (up to the schema's 64) gives an expert size it refuses, so no rule is
    needed for it."""
    fields = {
        planned_without_rules(body(profile, "B200", per_node, shape, nodes=nodes, backend=backend))
        for nodes, per_node, shape in itertools.product(
            range(1, 65), GPUS_PER_NODE, ("Node", "MultiNode")
        )
        if (shape == "MultiNode") == (nodes > 1)
    }
    assert "spec.parallelism.expertParallelSize" not in fields


def test_five_nodes_with_deepep_is_refused_by_the_backend_rule() -> None:
    """tp 40 does not divide Mistral Small 4's 128 experts: the planned expert size is
    gcd(40, 128) = 8, and deepep needs it equal to the tensor size."""
    raw = body("mistral-small-4-119b", "H200", 8, "MultiNode", nodes=5)
    assert plan_shape(MistralModelSpec.model_validate(raw)).expert_parallel == 8
    refused = {**raw, "parallelism": {**raw["parallelism"], "moeA2ABackend": "deepep"}}
    with pytest.raises(ValueError, match="with a moeA2ABackend other than none"):
        MistralModelSpec.model_validate(refused)


def test_the_expert_counts_come_from_the_catalogue() -> None:
    catalogue = {name: MODEL_PROFILES[name].experts for name in moe_profiles()}  # type: ignore[index]
    assert catalogue == EXPERTS
    for rule in (EXPERTS_RULE, BACKEND_RULE):
        for name, count in EXPERTS.items():
            assert f"'{name}': {count}" in rule.rule
    assert "128 for mistral-small-4-119b" in EXPERTS_RULE.message


@pytest.mark.parametrize(
    ("rule", "field_path"),
    [
        (PP_RULE, ".parallelism.pipelineParallelSize"),
        (ADP_RULE, ".parallelism.attentionDataParallelSize"),
        (EP_TP_RULE, ".parallelism.expertParallelSize"),
        (EXPERTS_RULE, ".parallelism.expertParallelSize"),
        (BACKEND_RULE, ".parallelism.expertParallelSize"),
    ],
)
def test_each_rule_names_the_field_the_planner_names(rule: CelRule, field_path: str) -> None:
    assert rule.field_path == field_path
    assert rule.message.startswith(("parallelism.", "with a moeA2ABackend"))
    assert "\n" not in rule.message


INVALID = Path(__file__).resolve().parents[1] / "integration" / "testdata" / "invalid"
MANIFESTS = {
    "ep-not-dividing-experts": EXPERTS_RULE,
    "ep-not-dividing-planned-tp": EP_TP_RULE,
    "attn-dp-not-dividing-planned-tp": ADP_RULE,
    "pp-not-dividing-gpus": PP_RULE,
    "deepep-planned-ep-not-tp": BACKEND_RULE,
    "deepep-ep-not-planned-tp": BACKEND_RULE,
    "compact-backend-without-ep": BACKEND_RULE,
    "cache-none-s3-source": CACHE_NONE_RULE,
    "cache-none-https-source": CACHE_NONE_RULE,
}


@pytest.mark.parametrize(("name", "rule"), MANIFESTS.items(), ids=list(MANIFESTS))
def test_each_class_has_a_manifest_only_its_rule_and_the_planner_refuse(
    name: str, rule: CelRule
) -> None:
    """tests/integration/test_api_crd.py applies them to the API server."""
    raw = yaml.safe_load((INVALID / f"{name}.yaml").read_text())["spec"]
    with ExitStack() as stack:
        for cls, _ in RULED:
            stack.enter_context(patch.object(cls, "cel_rules", ()))
        spec = MistralModelSpec.model_validate(raw)
    ((refusing, field_name),) = refusals(spec)
    assert refusing is rule
    assert planner_refusal(spec) == field_name
