"""The reconcile decision: from an observed snapshot to the objects, status and events to write."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.status import MistralModelStatus
from mistral_operator.core import conditions as C  # noqa: N812 - short, read everywhere here
from mistral_operator.core.errors import SpecError
from mistral_operator.core.groups import observe_groups
from mistral_operator.core.lifecycle import (
    carry_pending_restarts,
    converge_groups,
    handle_failures,
    mark_serving,
    plan_services,
)
from mistral_operator.core.parallelism import ReplicaShape, plan_shape
from mistral_operator.core.render import RenderInput, resolve_weights
from mistral_operator.core.report import build_status
from mistral_operator.core.revision import pod_revision
from mistral_operator.core.snapshot import (
    Event,
    Observed,
    Plan,
    Tally,
    condition_changed,
    group_records,
    message_changed,
    previous_conditions,
    was_ready,
)

__all__ = ["Observed", "Plan", "conform_status", "plan_reconcile"]


def plan_reconcile(observed: Observed) -> Plan:
    """Decide everything for one MistralModel from one snapshot; no I/O, no clock."""
    parsed = _parse(observed)
    if isinstance(parsed, Plan):
        return parsed
    spec, shape, inp = parsed
    work = Tally(observed, spec, shape, inp)
    groups = observe_groups(observed.pods)
    previous = group_records(observed)

    live = handle_failures(work, groups, previous)
    carry_pending_restarts(work, groups, previous)
    converge_groups(work, groups, live)
    mark_serving(work, live)
    plan_services(work)
    build_status(work, groups, live)
    work.plan.status = conform_status(work.plan.status)
    work.plan.write_status = work.plan.status != dict(observed.status)
    return work.plan


def conform_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status as the CRD schema stores it: validated, unset fields left out."""
    model = MistralModelStatus.model_validate(dict(status))
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _parse(observed: Observed) -> tuple[MistralModelSpec, ReplicaShape, RenderInput] | Plan:
    try:
        spec = MistralModelSpec.model_validate(dict(observed.spec))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"]) if first["loc"] else "spec"
        return _invalid(observed, where, first["msg"])
    try:
        shape = plan_shape(spec)
        weights = resolve_weights(spec, shape)
    except SpecError as exc:
        return _invalid(observed, exc.field, exc.reason)
    inp = RenderInput(
        model=observed.model,
        spec=spec,
        shape=shape,
        revision=pod_revision(spec),
        weights=weights,
    )
    return spec, shape, inp


def _invalid(observed: Observed, field_name: str, message: str) -> Plan:
    """A spec the operator cannot act on: report it, touch nothing that runs."""
    plan = Plan()
    text = f"{field_name}: {message}" if field_name else message
    decided = [
        C.ConditionSpec(C.READY, was_ready(observed), "InvalidSpec", text),
        C.ConditionSpec(C.PROGRESSING, False, "InvalidSpec", text),
        C.ConditionSpec(C.DEGRADED, True, "InvalidSpec", text),
    ]
    status = dict(observed.status)
    status.update(
        observedGeneration=observed.generation,
        phase="Failed" if not observed.pods else "Degraded",
        conditions=C.render_conditions(
            decided, previous_conditions(observed), observed.generation, observed.now
        ),
    )
    plan.status = conform_status(status)
    plan.write_status = plan.status != dict(observed.status)
    if condition_changed(observed, C.DEGRADED, True, "InvalidSpec") or message_changed(
        observed, C.DEGRADED, text
    ):
        plan.events.append(Event("Warning", "InvalidSpec", text))
    return plan
