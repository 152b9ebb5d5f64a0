"""Status from decisions: group records, conditions, phase and the printer-column fields."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from mistral_operator.core import conditions as C  # noqa: N812 - short, read everywhere here
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.group_events import Placed, groups_serving
from mistral_operator.core.groups import ObservedGroup
from mistral_operator.core.render import endpoint_url
from mistral_operator.core.rollout_status import (
    DEADLINE_EXCEEDED,
    ROLLED_BACK,
    rolled_back_condition,
    rollout_status,
)
from mistral_operator.core.snapshot import (
    Event,
    Observed,
    Tally,
    condition_changed,
    group_records,
    message_changed,
    previous_conditions,
)
from mistral_operator.core.timestamps import format_time, parse_time


def _phase(
    *,
    desired: int,
    ready: int,
    live: int,
    updated: int,
    failed: bool,
    short: bool,
    progressing: bool,
) -> str:
    """The one-word summary `kubectl get mm` shows."""
    if desired == 0 or (ready >= desired and not progressing):
        return "Ready"
    if short:
        return "Unschedulable" if live == 0 else "Degraded"
    if failed:
        return "Degraded"
    if updated < live:
        return "Progressing"
    return "Starting"


def _group_state(group: ObservedGroup) -> str:
    # A ready group serves: the same plan marks its leader for the client Service.
    return "Serving" if group.ready else "Starting"


def record_live_groups(work: Tally, live: Mapping[str, ObservedGroup]) -> None:
    """Status records of running groups, with one event for those that start serving."""
    observed = work.observed
    previous = group_records(observed)
    started: list[Placed] = []
    for name, group in live.items():
        if (work.records.get(name) or {}).get("state") in {"Draining", "Failed", "Held"}:
            continue  # the operator's own state for it stands
        record = dict(previous.get(name) or {"name": name})
        state = _group_state(group)
        if record.get("state") != state:
            record["since"] = format_time(observed.now)
            if state == "Serving":
                started.append((name, group.nodes))
        record.update(
            name=name,
            revision=group.revision,
            state=state,
            serving=state == "Serving",
            members=[
                {
                    "rank": r,
                    "node": p.node or "",
                    "pod": p.name,
                    "ready": p.ready,
                    "restarts": p.restarts,
                }
                for r, p in sorted(group.pods.items())
            ],
        )
        work.records[name] = record
    if started:
        work.plan.events.append(
            groups_serving(sorted(started, key=lambda g: L.group_index(g[0]) or 0))
        )


def _progress(
    work: Tally, records: list[dict[str, Any]], wanted: C.ConditionSpec
) -> C.ConditionSpec:
    """Progressing, turned False once no new group got ready within the progress deadline,
    and while a failed revision is rolled back or waits for a new spec.

    Progress is the start of the change (when Progressing turned True) or the latest
    time a group of the update revision started serving, whichever is later.
    """
    observed, spec, update = work.observed, work.spec, work.update_revision
    prior = C.find(previous_conditions(observed), C.PROGRESSING)
    if not wanted.status or prior is None:
        return wanted
    failed = observed.status.get("rollout") or {}
    if failed.get("failedRevision") == update and failed.get("failureReason"):
        return C.ConditionSpec(
            C.PROGRESSING, False, str(failed["failureReason"]), str(failed.get("failureMessage"))
        )
    same_revision = observed.status.get("updateRevision") == update
    if prior.get("reason") == DEADLINE_EXCEEDED and same_revision:
        return C.ConditionSpec(
            C.PROGRESSING, False, DEADLINE_EXCEEDED, str(prior.get("message", ""))
        )
    started = parse_time(prior.get("lastTransitionTime")) if prior.get("status") == "True" else None
    if started is None or not same_revision:
        return wanted
    served = [
        parse_time(r.get("since"))
        for r in records
        if r.get("revision") == update and r.get("state") == "Serving"
    ]
    last = max([started, *(t for t in served if t is not None)])
    deadline = timedelta(seconds=spec.rollout.progress_deadline_seconds)
    if observed.now - last < deadline:
        work.plan.wake(last + deadline)
        return wanted
    message = (
        f"no group of revision {update} became ready for "
        f"{spec.rollout.progress_deadline_seconds}s ({wanted.message})"
    )
    if observed.status.get("currentRevision") is None:
        message += "; there is no earlier revision to roll back to"
    work.plan.events.append(Event("Warning", DEADLINE_EXCEEDED, message))
    return C.ConditionSpec(C.PROGRESSING, False, DEADLINE_EXCEEDED, message)


def _cache_condition(work: Tally) -> C.ConditionSpec:
    """CacheReady: no group waits for weights and no fill the model needs has failed."""
    state = work.cache_status.get("state")
    message = str(work.cache_status.get("message") or "")
    if state == "Failed":
        return C.ConditionSpec(C.CACHE_READY, False, "FillFailed", message)
    pvc = work.spec.cache.pvc
    if work.spec.cache.mode == "SharedPVC" and pvc and pvc.claim_name not in work.observed.claims:
        return C.ConditionSpec(C.CACHE_READY, False, "ClaimNotFound", message)
    if work.cache_waits:
        return C.ConditionSpec(C.CACHE_READY, False, "Filling", message)
    if state == "NotCached":
        return C.ConditionSpec(C.CACHE_READY, True, "NotCached", message)
    return C.ConditionSpec(C.CACHE_READY, True, "Ready", message)


def _revision_changed(observed: Observed, revision: str) -> bool:
    before = observed.status.get("updateRevision")
    return before is not None and before != revision


def build_status(
    work: Tally, groups: Mapping[str, ObservedGroup], live: Mapping[str, ObservedGroup]
) -> None:
    observed, spec, shape, inp = work.observed, work.spec, work.shape, work.inp
    record_live_groups(work, live)
    records = sorted(work.records.values(), key=lambda r: L.group_index(r["name"]) or 0)
    desired = work.desired
    # Counted as they stand once the plan is written: with the groups it creates.
    created = len(work.created)
    total = len(live) + created
    ready = sum(1 for g in live.values() if g.ready)
    updated = sum(1 for g in live.values() if g.revision == inp.revision) + created
    at_update = sum(1 for g in live.values() if g.revision == work.update_revision) + (
        created if inp.revision == work.update_revision else 0
    )
    failed = [r for r in records if r.get("state") in {"Failed", "Held", "Restarting"}]
    previous_schedulable = C.find(previous_conditions(observed), C.SCHEDULABLE)
    # A surge group with no room while every group still runs is the rollout's wait (it
    # falls back to drain-then-replace), not a shortage of GPUs.
    surge_only = work.surge_blocked_since is not None and len(live) >= desired
    if work.placement is not None and not surge_only:
        short = work.placement.short
        shortage = work.placement.shortage_message() if short else ""
    else:
        # No placement was tried this time (a failed group waits out its backoff):
        # what the last attempt found still stands while groups are missing.
        short = (
            not surge_only
            and updated < desired
            and previous_schedulable is not None
            and previous_schedulable.get("status") == "False"
        )
        shortage = str(previous_schedulable.get("message", "")) if previous_schedulable else ""
    all_current = updated == total and total == desired
    progressing = not (all_current and ready == desired)
    if not progressing:
        reason = "Stable"
    elif short:
        reason = "Unschedulable"
    elif work.cache_waits:
        reason = "FillingCache"
    else:
        reason = "RollingGroups" if updated < total else "CreatingGroups"
    progress = (
        C.ConditionSpec(
            C.PROGRESSING,
            False,
            ROLLED_BACK,
            f"revision {work.update_revision} failed; serving the last good revision "
            f"{inp.revision}",
        )
        if work.rolled_back
        else _progress(
            work,
            records,
            C.ConditionSpec(
                C.PROGRESSING,
                progressing,
                reason,
                f"{updated}/{desired} groups at revision {inp.revision}, {ready} ready",
            ),
        )
    )
    stalled = progress.reason in {DEADLINE_EXCEEDED, ROLLED_BACK}
    update_serves = any(g.ready and g.revision == work.update_revision for g in live.values())
    rollout = rollout_status(work, progress, update_serves)
    rolled_back = rolled_back_condition(work, rollout)
    fill_failed = work.cache_status.get("state") == "Failed"

    conds = [
        C.ConditionSpec(
            C.READY,
            ready >= desired,
            "ScaledToZero"
            if desired == 0
            else ("AllGroupsReady" if ready >= desired else "GroupsNotReady"),
            f"{ready}/{desired} replica groups ready",
        ),
        progress,
        C.ConditionSpec(
            C.DEGRADED,
            bool(failed) or short or stalled or fill_failed,
            "GroupFailed"
            if failed
            else (
                "InsufficientGPUs"
                if short
                else progress.reason
                if stalled
                else "CacheFillFailed"
                if fill_failed
                else "AsExpected"
            ),
            "; ".join(f"group {r['name']} {r['state'].lower()}" for r in failed)
            or (
                "not every group can be placed"
                if short
                else progress.message
                if stalled
                else "a weight cache fill failed: see status.cache"
                if fill_failed
                else ""
            ),
        ),
        C.ConditionSpec(
            C.SCHEDULABLE,
            not short,
            "InsufficientGPUs" if short else "Placed",
            shortage if short else "every group has nodes",
        ),
        _cache_condition(work),
        *([rolled_back] if rolled_back is not None else []),
        *work.scaling_conditions,
    ]
    if short and (
        condition_changed(observed, C.SCHEDULABLE, False, "InsufficientGPUs")
        or message_changed(observed, C.SCHEDULABLE, shortage)
    ):
        work.plan.events.append(Event("Warning", "Unschedulable", shortage))

    phase = _phase(
        desired=desired,
        ready=ready,
        live=total,
        updated=updated,
        failed=bool(failed) or stalled,
        short=short,
        progressing=progressing,
    )

    status: dict[str, Any] = {
        "observedGeneration": observed.generation,
        "phase": phase,
        "conditions": C.render_conditions(
            conds,
            previous_conditions(observed),
            observed.generation,
            observed.now,
            # A new update revision is a new rollout: its progress deadline starts now.
            restarted=[C.PROGRESSING] if _revision_changed(observed, work.update_revision) else [],
        ),
        "replicas": total,
        "readyReplicas": ready,
        "updatedReplicas": at_update,
        "desiredReplicas": desired,
        "selector": L.selector_string({**L.model_selector(observed.model.name), L.ROLE: L.LEADER}),
        "topology": {
            "shape": shape.shape,
            "gpuProduct": shape.gpu.name,
            "gpusPerNode": shape.gpus_per_node,
            "replicasPerNode": shape.replicas_per_node,
            "nodesPerReplica": shape.nodes,
            "gpusPerReplica": shape.gpus,
            "tensorParallelSize": shape.tensor_parallel,
            "pipelineParallelSize": shape.pipeline_parallel,
            "expertParallelSize": shape.expert_parallel,
            "attentionDataParallelSize": shape.attention_data_parallel,
            "moeA2ABackend": shape.moe_a2a_backend or "none",
            "contextLength": shape.context_length,
            "memory": shape.memory.summary(),
        },
        "groups": records,
        "cache": {
            "mode": spec.cache.mode,
            "key": inp.weights.key,
            "source": inp.weights.source,
            "revision": inp.weights.revision,
        }
        | work.cache_status,
        "endpoint": {
            "service": L.client_service_name(observed.model.name),
            "url": endpoint_url(observed.model),
            "servedName": inp.served_name,
        },
        "updateRevision": work.update_revision,
        "rollout": rollout,
    }
    if work.autoscaling_status is not None:
        status["autoscaling"] = work.autoscaling_status
    current_revision = (
        inp.revision
        if (updated == total and ready == desired)
        else observed.status.get("currentRevision")
    )
    if current_revision:
        status["currentRevision"] = current_revision
    last_good = (
        inp.weights.key
        if updated == total and ready == desired and desired > 0
        else (observed.status.get("cache") or {}).get("lastGoodKey")
    )
    if last_good:
        status["cache"]["lastGoodKey"] = last_good
    work.plan.status = status
