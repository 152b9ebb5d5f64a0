"""Fuzzed specs never crash the planner and never touch another model's pods (issue 13).

Specs come from the CRD schema and from mutations of the examples
(tests.support.spec_strategies). Each is validated with the operator's own model, then
planned twice, whatever the verdict: as a new model on a cold cluster (fill Jobs), and as an
edit of a model that serves 2 groups (pods, a rollout), with the spec as the API server
stores it (schema defaults filled in). Another model, the bystander, runs 2 groups on the
same nodes, with its own weight cache on them: its pods are in the snapshot where the shell
puts them, among the GPU holders of the inventory (the shell's own pods of a model are
those with its model label, so a stranger's never reach `Observed.pods`).

For every plan: nothing escapes the planner; a spec the model refuses is reported as
InvalidSpec and creates or deletes nothing; every object written belongs to this model
(its name, its label, its owner reference, its namespace); every pod labelled or deleted,
and every Job or ControllerRevision deleted, is this model's; node labels name only this
model's cache key; the bystander's pods are never written to, and the snapshot's objects
are left as they were.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.invalid_spec import INVALID
from mistral_operator.core.inventory import GpuNode
from mistral_operator.core.reconcile import Observed, Plan, plan_reconcile
from mistral_operator.core.render import ModelRef
from tests.support.spec_strategies import crd_schema, crd_specs, mutated_examples
from tests.unit.cel_subset import with_defaults
from tests.unit.reconcile_fixtures import (
    as_running,
    cache_key_of,
    example,
    inventory,
    kept_revisions,
    observed,
    pods_of,
    warm_claims,
    warmed,
)

pytestmark = pytest.mark.unit

# observed() plans for this model; the bystander shares its namespace and nodes.
MODEL = ModelRef("mistral-small-4", "serving", "0000-uid")
BYSTANDER = ModelRef("bystander", "serving", "bystander-uid")
# The bystander pins a commit: its cache key is its own (a fuzzed spec hardly ever pins it).
BYSTANDER_REVISION = "0123456789abcdef0123456789abcdef01234567"
# Sized so that the file runs in well under 30 s. No example database: both tests run the
# one inner test of fuzz(), whose saved examples would cross over; a failure prints its
# minimal spec and the blob that replays it (@reproduce_failure).
EXAMPLES = 250
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@cache
def _state(ref: ModelRef, spec_json: str, holders_json: str) -> tuple[str, str, str]:
    """A model converged (pods running, status stored) beside ``holders``' pods, as JSON."""
    spec = json.loads(spec_json)
    holders = json.loads(holders_json)
    pods: list[dict[str, Any]] = []
    status: dict[str, Any] = {}
    revisions: list[dict[str, Any]] = []
    for _ in range(4):
        inv = warmed(inventory("h200", [*holders, *pods]), spec)
        obs = replace(
            observed(spec, pods=pods, status=status, inv=inv, revisions=revisions), model=ref
        )
        plan = plan_reconcile(obs)
        deleted = {d.name for d in plan.delete}
        pods = [p for p in pods if p["metadata"]["name"] not in deleted]
        pods += [as_running(p) for p in pods_of(plan)]
        for name, labels in plan.label:
            pod = next(p for p in pods if p["metadata"]["name"] == name)
            merged = pod["metadata"]["labels"] | labels
            pod["metadata"]["labels"] = {k: v for k, v in merged.items() if v is not None}
        revisions = kept_revisions(revisions, plan)
        status = plan.status
    return json.dumps(pods), json.dumps(status), json.dumps(revisions)


def quickstart(replicas: int, revision: str = "main") -> dict[str, Any]:
    spec: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    spec["replicas"] = replicas
    spec["model"]["revision"] = revision
    return spec


def bystander_spec() -> dict[str, Any]:
    return quickstart(2, BYSTANDER_REVISION)


def bystander_pods() -> list[dict[str, Any]]:
    pods, _, _ = _state(BYSTANDER, json.dumps(bystander_spec()), "[]")
    loaded: list[dict[str, Any]] = json.loads(pods)
    return loaded


def serving_model() -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """This model serving 2 groups of the quick start, beside the bystander."""
    pods, status, revisions = _state(MODEL, json.dumps(quickstart(2)), json.dumps(bystander_pods()))
    return json.loads(pods), json.loads(status), json.loads(revisions)


def with_bystander_cache(inv: Mapping[str, GpuNode]) -> dict[str, GpuNode]:
    """Every node also holds the bystander's weights, Ready (its label is the bystander's)."""
    key = cache_key_of(bystander_spec())
    assert key is not None
    label = {L.node_cache_label(key): "Ready"}
    return {n: replace(node, labels={**node.labels, **label}) for n, node in inv.items()}


def new_model(spec: Any) -> Observed:
    """A model just created with ``spec`` on a cluster whose nodes hold none of its weights."""
    inv = with_bystander_cache(inventory("h200", bystander_pods()))
    return observed(spec, inv=inv, warm=False)


def edited_model(spec: Any) -> Observed:
    """The serving model's spec replaced by ``spec`` (generation 2), its weights on every node."""
    pods, status, revisions = serving_model()
    inv = with_bystander_cache(inventory("h200", [*bystander_pods(), *pods]))
    obs = observed(
        spec, pods=pods, status=status, inv=warmed(inv, spec), revisions=revisions, warm=False
    )
    # A SharedPVC spec's claim holds its weights too (warm_claims reads only valid specs).
    return replace(obs, generation=2, claims=warm_claims(spec) if accepted(spec) else {})


def accepted(spec: Any) -> bool:
    try:
        MistralModelSpec.model_validate(spec)
    except ValidationError:
        return False
    return True


def condition(plan: Plan, type_: str) -> dict[str, Any]:
    return next(c for c in plan.status.get("conditions") or [] if c["type"] == type_)


def assert_owns_only(obs: Observed, spec: Any, plan: Plan) -> None:
    """Everything ``plan`` writes is this model's; nothing of the bystander's is named."""
    name, uid = obs.model.name, obs.model.uid
    pods = {p["metadata"]["name"]: p["metadata"]["uid"] for p in obs.pods}
    jobs = {j["metadata"]["name"]: j["metadata"].get("uid") for j in obs.fill_jobs}
    revisions = {r["metadata"]["name"]: r["metadata"].get("uid") for r in obs.revisions}
    strangers = {p["metadata"]["name"] for p in bystander_pods()}
    stranger_uids = {p["metadata"]["uid"] for p in bystander_pods()}
    for obj in plan.apply:
        meta = obj["metadata"]
        what = f"{obj['kind']} {meta['name']}"
        assert meta["namespace"] == obs.model.namespace, what
        assert meta["name"] == name or meta["name"].startswith(f"{name[:38]}-"), what
        assert meta["name"] not in strangers, what
        assert (meta.get("labels") or {}).get(L.MODEL) == name, what
        assert [o["uid"] for o in meta.get("ownerReferences") or []] == [uid], what
    for pod_name, _ in plan.label:
        assert pod_name in pods, f"labels a pod that is not this model's: {pod_name}"
    for gone in plan.delete:
        assert gone.uid not in stranger_uids, gone
        mine = {"Pod": pods, "Job": jobs, "ControllerRevision": revisions}.get(gone.kind, {})
        assert mine.get(gone.name) == gone.uid, f"deletes what is not this model's: {gone}"
    key = cache_key_of(spec)
    for node, labels in plan.node_labels:
        assert node in obs.inventory, node
        assert set(labels) == {L.node_cache_label(key or "")}, (node, labels)
    for node, notes in plan.node_annotations:
        assert set(notes) <= {L.node_cache_label(key or ""), L.NODE_CACHE_DISK}, (node, notes)
    for claim, _ in [*plan.claim_labels, *plan.claim_annotations]:
        assert claim == claim_of(spec), claim


def claim_of(spec: Any) -> str | None:
    """The SharedPVC claim of a spec the operator accepts."""
    try:
        pvc = MistralModelSpec.model_validate(spec).cache.pvc
    except ValidationError:
        return None
    return pvc.claim_name if pvc is not None else None


def check(obs: Observed, spec: Any) -> str:
    """Plan ``obs`` and check the plan; returns what became of the spec."""
    before = json.dumps([obs.pods, obs.status, obs.revisions, bystander_pods()], sort_keys=True)
    plan = plan_reconcile(obs)  # nothing may escape: a crash fails the test
    json.dumps([plan.apply, plan.status, [e.message for e in plan.events]])  # all writable
    assert plan.status.get("observedGeneration") == obs.generation
    after = json.dumps([obs.pods, obs.status, obs.revisions, bystander_pods()], sort_keys=True)
    assert before == after, "the planner changed its snapshot"
    assert_owns_only(obs, spec, plan)
    invalid = condition(plan, "Degraded")["reason"] == INVALID
    if not accepted(obs.spec):
        assert invalid, f"a refused spec must be reported as {INVALID}: {plan.status}"
        assert not plan.delete, "a refused spec deletes nothing"
        assert not [o for o in plan.apply if o["kind"] in ("Pod", "Job")], "nor creates"
        return "refused"
    if invalid:
        assert not plan.delete, "a spec that does not render deletes nothing"
        return "accepted, InvalidSpec"
    return "accepted, planned"


def fuzz(strategy: st.SearchStrategy[Any]) -> Counter[str]:
    """Check ``strategy``'s specs as a new model and as an edit; what became of them."""
    tally: Counter[str] = Counter()

    @FUZZ
    @given(spec=strategy)
    def run(spec: Any) -> None:
        raw = copy.deepcopy(spec)
        tally["new: " + check(new_model(spec), spec)] += 1
        assert spec == raw, "the planner changed the spec it was given"
        stored = with_defaults(crd_schema(), spec)  # the API server fills in defaults
        tally["edit: " + check(edited_model(stored), stored)] += 1

    run()
    print(dict(tally))
    return tally


def test_the_fixture_serves_two_models_side_by_side() -> None:
    pods, status, _ = serving_model()
    assert status["readyReplicas"] == 2
    assert len(pods) == 2
    assert len(bystander_pods()) == 2
    assert {p["metadata"]["labels"][L.MODEL] for p in bystander_pods()} == {BYSTANDER.name}
    key = cache_key_of(quickstart(2))
    assert key is not None
    assert key != cache_key_of(bystander_spec()), "the two models' caches are distinct"


def test_specs_from_the_crd_schema_never_crash_the_planner_nor_touch_a_bystander() -> None:
    tally = fuzz(crd_specs())
    # Both sides were reached: specs refused, and specs planned into pods or fill Jobs.
    assert tally["new: refused"] > 0
    assert tally["new: accepted, planned"] > 0
    assert tally["edit: accepted, planned"] > 0


def test_mutated_examples_never_crash_the_planner_nor_touch_a_bystander() -> None:
    tally = fuzz(mutated_examples())
    assert tally["new: refused"] > 0
    assert tally["new: accepted, planned"] > 0
    assert tally["edit: accepted, planned"] > 0
