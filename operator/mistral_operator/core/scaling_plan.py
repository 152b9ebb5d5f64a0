"""How many groups to run: spec.replicas, or the built-in autoscaler's decision.

The decision is taken in the reconcile itself, from the queue gauges read just before,
and kept in ``status.autoscaling`` (with the recommendation history its windows need),
so a restarted operator starts from it. The spec is never written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from mistral_operator.api.scaling import AutoscalingSpec
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core import conditions as C  # noqa: N812 - short, read everywhere here
from mistral_operator.core.autoscaler import GroupLoad, ScaleInput, decide, history_from_status
from mistral_operator.core.groups import ObservedGroup
from mistral_operator.core.lifecycle import placement_request
from mistral_operator.core.placement import plan_new_groups
from mistral_operator.core.snapshot import Event, Tally, condition_changed
from mistral_operator.core.timestamps import format_time, parse_time

# A group's gauges read longer ago than this many intervals count as missing.
STALE_INTERVALS = 3
SCALE_SUBRESOURCE = "scale"


def bounded_replicas(spec: MistralModelSpec) -> int:
    scaling = spec.autoscaling
    if scaling is None or not scaling.enabled:
        return spec.replicas
    return min(max(spec.replicas, scaling.min_replicas), scaling.max_replicas)


def plan_scale(work: Tally, groups: Mapping[str, ObservedGroup]) -> None:
    """Set ``work.desired`` (and, with the autoscaler, its status, events and wake-up)."""
    spec = work.spec
    scaling = spec.autoscaling
    if scaling is None or not scaling.enabled:
        work.desired = spec.replicas
        return
    observed = work.observed
    prior = observed.status.get("autoscaling") or {}
    known = prior.get("desiredReplicas")
    current = known if isinstance(known, int) else bounded_replicas(spec)
    current = min(max(current, scaling.min_replicas), scaling.max_replicas)
    draining = work.draining | {
        n for n, r in _previous_records(work).items() if r.get("state") == "Draining"
    }
    serving = sorted(n for n, g in groups.items() if g.serving and g.ready and n not in draining)
    starting = sum(
        1
        for n, g in groups.items()
        if n not in draining and not g.deleting and not (g.serving and g.ready)
    )
    stale_before = observed.now - timedelta(seconds=scaling.interval_seconds * STALE_INTERVALS)
    loads = {}
    for name in serving:
        sample = observed.samples.get(name)
        if sample is not None and sample.at >= stale_before:
            loads[name] = GroupLoad(sample.queued, sample.running, sample.error)
    decision = decide(
        ScaleInput(
            spec=scaling,
            now=observed.now,
            current=current,
            serving=serving,
            starting=starting,
            loads=loads,
            history=history_from_status(observed.status),
            placeable=_placeable(work, scaling, current),
        )
    )
    work.desired = decision.desired
    status: dict[str, Any] = {
        "desiredReplicas": decision.desired,
        "currentReplicas": len(serving) + starting,
        "recommendedReplicas": decision.recommendation,
        "message": decision.reason,
        "recommendations": [r.as_status() for r in decision.history],
    }
    if decision.queue is not None:
        status["queue"] = decision.queue
    if decision.desired != current:
        direction = "up" if decision.desired > current else "down"
        status["lastScaleTime"] = format_time(observed.now)
        status["lastScaleReason"] = f"{current} -> {decision.desired}: {decision.reason}"
        work.plan.events.append(
            Event(
                "Normal",
                "ScaledUp" if direction == "up" else "ScaledDown",
                f"{current} -> {decision.desired} groups: {decision.reason}",
            )
        )
    else:
        for key in ("lastScaleTime", "lastScaleReason"):
            if key in prior:
                status[key] = prior[key]
    work.autoscaling_status = status
    # A group that began serving within the staleness window may not have been read
    # yet: it blocks a scale-down like any group without data, but is no alarm.
    records = _previous_records(work)
    new = {
        g
        for g in decision.unreadable
        if g not in observed.samples
        and (since := parse_time((records.get(g) or {}).get("since"))) is not None
        and since >= stale_before
        and (records.get(g) or {}).get("state") == "Serving"
    }
    unreadable = tuple(g for g in decision.unreadable if g not in new)
    work.scaling_conditions = [
        _metrics_condition(work, unreadable, loads, serving),
        *_external_condition(work, decision.desired),
    ]
    work.plan.wake(observed.now + timedelta(seconds=scaling.interval_seconds))


def _previous_records(work: Tally) -> dict[str, Mapping[str, Any]]:
    return {g["name"]: g for g in work.observed.status.get("groups") or [] if "name" in g}


def _placeable(work: Tally, scaling: AutoscalingSpec, current: int) -> int | None:
    """How many more groups the nodes can take now (warm or not): a scale-up past that
    would only wait as Unschedulable."""
    wanted = scaling.max_replicas - current
    if wanted <= 0:
        return 0
    request = placement_request(work.spec, work.shape)
    return len(plan_new_groups(work.observed.inventory, request, wanted).groups)


def _metrics_condition(
    work: Tally, unreadable: tuple[str, ...], loads: Mapping[str, GroupLoad], serving: list[str]
) -> C.ConditionSpec:
    if unreadable:
        why = [
            f"{g}: {loads[g].error}" if g in loads and loads[g].error else f"{g}: no recent data"
            for g in unreadable
        ]
        message = (
            f"queue metrics unavailable from {len(unreadable)} of {len(serving)} serving "
            f"group(s) ({'; '.join(why)}); no scale-down until they are back"
        )
        if condition_changed(work.observed, C.SCALING_ACTIVE, False, "MetricsUnavailable"):
            work.plan.events.append(Event("Warning", "MetricsUnavailable", message))
        return C.ConditionSpec(C.SCALING_ACTIVE, False, "MetricsUnavailable", message)
    return C.ConditionSpec(
        C.SCALING_ACTIVE,
        True,
        "ValidMetrics",
        f"queue metrics read from all {len(serving)} serving group(s)",
    )


def _external_condition(work: Tally, desired: int) -> list[C.ConditionSpec]:
    """Someone else (kubectl scale, an HPA, KEDA) sets spec.replicas through the scale
    subresource while the built-in autoscaler decides: it wins, and says so."""
    observed = work.observed
    scaled = [
        f.get("manager", "?")
        for f in observed.managed_fields
        if f.get("subresource") == SCALE_SUBRESOURCE
    ]
    replicas = work.spec.replicas
    if scaled and replicas != desired:
        message = (
            f"spec.replicas is {replicas}, set through the scale subresource by "
            f"{', '.join(sorted(set(scaled)))}, but autoscaling.enabled is true: the built-in "
            f"autoscaler decides ({desired} groups). Set autoscaling.enabled to false to let "
            "spec.replicas (an HPA, KEDA or kubectl scale) decide"
        )
        return [C.ConditionSpec(C.EXTERNAL_SCALER, True, "BuiltInAutoscalerWins", message)]
    if C.find(observed.status.get("conditions") or [], C.EXTERNAL_SCALER) is None:
        return []
    return [C.ConditionSpec(C.EXTERNAL_SCALER, False, "NoConflict", "")]
