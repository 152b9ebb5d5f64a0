"""The reconcile decision: from an observed snapshot to the objects, status and events to write."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.status import MistralModelStatus
from mistral_operator.core.admission import Refusal, check_spec
from mistral_operator.core.cache_plan import observe_cache, plan_fills
from mistral_operator.core.errors import SpecError
from mistral_operator.core.groups import observe_groups
from mistral_operator.core.invalid_spec import plan_invalid_spec
from mistral_operator.core.lifecycle import (
    carry_pending_restarts,
    converge_groups,
    handle_failures,
    mark_serving,
    placement_request,
    plan_services,
)
from mistral_operator.core.parallelism import ReplicaShape
from mistral_operator.core.render import RenderInput, with_template_revision
from mistral_operator.core.report import build_status
from mistral_operator.core.revision_history import plan_history
from mistral_operator.core.rollback import rollback_spec
from mistral_operator.core.scaling_plan import plan_scale
from mistral_operator.core.snapshot import (
    Observed,
    Plan,
    Tally,
    group_records,
)

__all__ = ["Observed", "Plan", "conform_status", "plan_reconcile"]


def plan_reconcile(observed: Observed) -> Plan:
    """Decide everything for one MistralModel from one snapshot; no I/O, no clock."""
    parsed = _parse(observed, observed.spec)
    if isinstance(parsed, Plan):
        return parsed
    try:
        return _plan(observed, *parsed)
    except SpecError as exc:  # a rule only rendering can check, such as a leader's address
        return _invalid(observed, exc.field, exc.reason)


def _invalid(observed: Observed, field_name: str, message: str) -> Plan:
    plan = plan_invalid_spec(observed, field_name, message)
    plan.status = conform_status(plan.status)
    plan.write_status = plan.status != dict(observed.status)
    return plan


def _plan(
    observed: Observed, spec: MistralModelSpec, shape: ReplicaShape, inp: RenderInput
) -> Plan:
    update_revision = inp.revision
    restored = rollback_spec(observed, update_revision)
    rolled_back = False
    if restored is not None:
        again = _parse(observed, restored)
        if not isinstance(again, Plan):  # a stored spec this version no longer reads: stay
            spec, shape, inp = again
            rolled_back = True
    work = Tally(
        observed, spec, shape, inp, update_revision=update_revision, rolled_back=rolled_back
    )
    groups = observe_groups(observed.pods)
    previous = group_records(observed)

    live = handle_failures(work, groups, previous)
    carry_pending_restarts(work, groups, previous)
    plan_scale(work, groups)
    work.cache = observe_cache(work)
    converge_groups(work, groups, live)
    plan_fills(work, placement_request(spec, shape), live, groups)
    mark_serving(work, groups, live)
    plan_services(work)
    build_status(work, groups, live)
    plan_history(
        work.plan,
        observed.model,
        observed.revisions,
        (update_revision, observed.spec),
        work.plan.status.get("currentRevision"),
    )
    work.plan.status = conform_status(work.plan.status)
    work.plan.write_status = work.plan.status != dict(observed.status)
    return work.plan


def conform_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status as the CRD schema stores it: validated, unset fields left out."""
    model = MistralModelStatus.model_validate(dict(status))
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _parse(
    observed: Observed, raw: Mapping[str, Any]
) -> tuple[MistralModelSpec, ReplicaShape, RenderInput] | Plan:
    checked = check_spec(raw)
    if isinstance(checked, Refusal):
        return _invalid(observed, checked.field, checked.reason)
    inp = with_template_revision(
        RenderInput(
            model=observed.model,
            spec=checked.spec,
            shape=checked.shape,
            revision="",
            weights=checked.weights,
        )
    )
    return checked.spec, checked.shape, inp
