"""The reconcile decision: from an observed snapshot to the objects, status and events to write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.status import MistralModelStatus
from mistral_operator.core import conditions as C  # noqa: N812 - short, read everywhere here
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.groups import Failure, ObservedGroup, find_failure, observe_groups
from mistral_operator.core.inventory import GpuNode, Toleration
from mistral_operator.core.parallelism import ReplicaShape, ShapeError, plan_shape
from mistral_operator.core.placement import PlacementRequest, PlacementResult, plan_new_groups
from mistral_operator.core.render import (
    GPU_TOLERATION,
    ModelRef,
    RenderError,
    RenderInput,
    endpoint_url,
    render_client_service,
    render_headless_service,
    render_pod,
    resolve_weights,
)
from mistral_operator.core.revision import pod_revision


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile reads, taken before it decides anything."""

    model: ModelRef
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    pods: Sequence[Mapping[str, Any]]
    services: Sequence[Mapping[str, Any]]
    inventory: Mapping[str, GpuNode]
    now: datetime
    node_grace: timedelta = timedelta(seconds=40)


@dataclass(frozen=True)
class Deletion:
    kind: str
    name: str
    uid: str
    reason: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Plan:
    """What the shell executes: writes in order, then status, then events."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    label: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    delete: list[Deletion] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    @property
    def pod_writes(self) -> int:
        pods = sum(1 for o in self.apply if o["kind"] == "Pod")
        return pods + len(self.label) + sum(1 for d in self.delete if d.kind == "Pod")


def _previous_conditions(observed: Observed) -> list[Mapping[str, Any]]:
    return list(observed.status.get("conditions") or [])


def _condition_changed(observed: Observed, type_: str, status: bool, reason: str) -> bool:
    prior = C.find(_previous_conditions(observed), type_)
    want = "True" if status else "False"
    return prior is None or prior.get("status") != want or prior.get("reason") != reason


def _invalid(observed: Observed, field_name: str, message: str) -> Plan:
    """A spec the operator cannot act on: report it, touch nothing that runs."""
    plan = Plan()
    text = f"{field_name}: {message}" if field_name else message
    decided = [
        C.ConditionSpec(C.READY, _was_ready(observed), "InvalidSpec", text),
        C.ConditionSpec(C.PROGRESSING, False, "InvalidSpec", text),
        C.ConditionSpec(C.DEGRADED, True, "InvalidSpec", text),
    ]
    status = dict(observed.status)
    status.update(
        observedGeneration=observed.generation,
        phase="Failed" if not observed.pods else "Degraded",
        conditions=C.render_conditions(
            decided, _previous_conditions(observed), observed.generation, observed.now
        ),
    )
    plan.status = conform_status(status)
    if _condition_changed(observed, C.DEGRADED, True, "InvalidSpec") or _message_changed(
        observed, C.DEGRADED, text
    ):
        plan.events.append(Event("Warning", "InvalidSpec", text))
    return plan


def _was_ready(observed: Observed) -> bool:
    prior = C.find(_previous_conditions(observed), C.READY)
    return prior is not None and prior.get("status") == "True"


def _message_changed(observed: Observed, type_: str, message: str) -> bool:
    prior = C.find(_previous_conditions(observed), type_)
    return prior is None or prior.get("message") != message


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
    except (ShapeError, RenderError) as exc:
        return _invalid(observed, exc.field, str(exc).split(": ", 1)[-1])
    inp = RenderInput(
        model=observed.model,
        spec=spec,
        shape=shape,
        revision=pod_revision(spec),
        weights=weights,
    )
    return spec, shape, inp


def _int_or_percent(value: int | str, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    scaled = total * percent
    return -(-scaled // 100) if round_up else scaled // 100


def _placement_request(spec: MistralModelSpec, shape: ReplicaShape) -> PlacementRequest:
    tolerations = [Toleration(**GPU_TOLERATION)] + [
        Toleration(
            key=t.key or "",
            operator=t.operator,
            value=t.value or "",
            effect=t.effect or "",
        )
        for t in spec.placement.tolerations
    ]
    return PlacementRequest(
        nodes_per_group=shape.nodes,
        gpus_per_node=shape.gpus_per_node,
        gpu_products=frozenset(shape.gpu.product_labels),
        node_selector=dict(spec.placement.node_selector),
        tolerations=tuple(tolerations),
        topology_key=spec.placement.topology_key,
    )


def _backoff(spec: MistralModelSpec, recreations: int) -> timedelta:
    policy = spec.group_failure_policy
    seconds = policy.initial_backoff_seconds * (2 ** max(0, recreations - 1))
    return timedelta(seconds=min(seconds, policy.max_backoff_seconds))


def _group_records(observed: Observed) -> dict[str, Mapping[str, Any]]:
    return {g["name"]: g for g in observed.status.get("groups") or [] if "name" in g}


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


@dataclass
class _Work:
    """The running tally of one reconcile."""

    observed: Observed
    spec: MistralModelSpec
    shape: ReplicaShape
    inp: RenderInput
    plan: Plan = field(default_factory=Plan)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    placement: PlacementResult | None = None
    waiting_backoff: list[str] = field(default_factory=list)

    def delete_group(self, group: ObservedGroup, reason: str) -> None:
        for pod in group.pods.values():
            if not pod.deleting:
                self.plan.delete.append(Deletion("Pod", pod.name, pod.uid, reason))


def plan_reconcile(observed: Observed) -> Plan:
    """Decide everything for one MistralModel from one snapshot; no I/O, no clock."""
    parsed = _parse(observed)
    if isinstance(parsed, Plan):
        return parsed
    spec, shape, inp = parsed
    work = _Work(observed, spec, shape, inp)
    groups = observe_groups(observed.pods)
    previous = _group_records(observed)

    live = _handle_failures(work, groups, previous)
    _carry_pending_restarts(work, groups, previous)
    _converge_groups(work, groups, live)
    _mark_serving(work, live)
    _services(work)
    _status(work, groups, live)
    work.plan.status = conform_status(work.plan.status)
    return work.plan


def conform_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status as the CRD schema stores it: validated, unset fields left out."""
    model = MistralModelStatus.model_validate(dict(status))
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _handle_failures(
    work: _Work, groups: Mapping[str, ObservedGroup], previous: Mapping[str, Mapping[str, Any]]
) -> dict[str, ObservedGroup]:
    """Broken groups are torn down whole (or held); the rest are live."""
    observed, spec = work.observed, work.spec
    live: dict[str, ObservedGroup] = {}
    for name, group in sorted(groups.items()):
        record = dict(previous.get(name) or {"name": name})
        planned = {m["rank"]: m["node"] for m in record.get("members") or [] if "node" in m}
        if group.deleting:
            # Pods on their way out (ours, or deleted by someone): wait until they are
            # gone; a rank that is then missing counts as a failure.
            if record.get("state") not in {"Failed", "Held", "Restarting"}:
                record["state"] = "Draining"
            work.records[name] = record | {"name": name}
            continue
        failure = find_failure(
            group, observed.inventory, observed.now, observed.node_grace, planned
        )
        if failure is None:
            live[name] = group
            continue
        held = spec.group_failure_policy.action == "Hold"
        already = record.get("state") in {"Failed", "Held"} and _same_failure(record, failure)
        if not already:
            record["recreations"] = int(record.get("recreations") or 0) + (0 if held else 1)
            record["lastFailure"] = {
                "rank": failure.rank,
                "node": failure.node,
                "reason": failure.reason,
                "exitCode": failure.exit_code,
                "message": failure.message,
                "time": _iso(observed.now),
            }
            work.plan.events.append(
                Event(
                    "Warning",
                    "GroupFailed",
                    f"group {name} rank {failure.rank} on node {failure.node or '?'} failed: "
                    f"{failure.reason}"
                    + (f" (exit code {failure.exit_code})" if failure.exit_code is not None else "")
                    + ("; holding its pods for inspection" if held else "; recreating the group"),
                )
            )
        record.update(
            name=name,
            revision=group.revision,
            state="Held" if held else "Failed",
            serving=False,
            since=record.get("since") if already else _iso(observed.now),
        )
        work.records[name] = record
        if not held:
            work.delete_group(group, f"group {name} failed: {failure.reason}")
    return live


def _same_failure(record: Mapping[str, Any], failure: Failure) -> bool:
    last = record.get("lastFailure") or {}
    return bool(last.get("rank") == failure.rank and last.get("reason") == failure.reason)


def _carry_pending_restarts(
    work: _Work, groups: Mapping[str, ObservedGroup], previous: Mapping[str, Mapping[str, Any]]
) -> None:
    """Failed groups whose pods are gone wait out their backoff under the same name."""
    for name, record in previous.items():
        if name in groups or name in work.records:
            continue
        if record.get("state") in {"Failed", "Restarting"}:
            work.records[name] = dict(record) | {"state": "Restarting"}


def _converge_groups(
    work: _Work, groups: Mapping[str, ObservedGroup], live: dict[str, ObservedGroup]
) -> None:
    """Create, replace and remove whole groups toward the desired count and revision."""
    observed, spec, inp = work.observed, work.spec, work.inp
    desired = spec.replicas
    current = {n: g for n, g in live.items() if g.revision == inp.revision}
    outdated = {n: g for n, g in live.items() if g.revision != inp.revision}
    surge = _int_or_percent(spec.rollout.max_surge, desired, round_up=True)
    unavailable = _int_or_percent(spec.rollout.max_unavailable, desired, round_up=False)

    # Scale down: surplus current groups go, those not ready first, then the newest.
    if len(current) > desired:
        surplus = sorted(current.values(), key=lambda g: (g.ready, -g.index))[
            : len(current) - desired
        ]
        for group in surplus:
            work.delete_group(group, f"scale down to {desired} groups")
            work.plan.events.append(
                Event("Normal", "GroupDeleted", f"group {group.name} removed: scaled to {desired}")
            )
            work.records[group.name] = {
                "name": group.name,
                "state": "Draining",
                "revision": group.revision,
            }
            del current[group.name]
            live.pop(group.name)

    # Outdated groups go once enough others serve (a whole-group rolling update).
    ready_total = sum(1 for g in live.values() if g.ready)
    for group in sorted(outdated.values(), key=lambda g: (g.ready, g.index)):
        if group.ready and ready_total - 1 < desired - unavailable:
            continue
        work.delete_group(group, f"replaced by revision {inp.revision}")
        work.plan.events.append(
            Event(
                "Normal",
                "GroupReplaced",
                f"group {group.name} (revision {group.revision}) removed "
                f"for revision {inp.revision}",
            )
        )
        work.records[group.name] = {
            "name": group.name,
            "state": "Draining",
            "revision": group.revision,
        }
        ready_total -= 1 if group.ready else 0
        del outdated[group.name]
        live.pop(group.name)

    missing = desired - len(current)
    room = desired + surge - len(live)
    to_create = max(0, min(missing, room))
    if to_create == 0:
        return

    names = _names_for_new_groups(work, groups, to_create)
    if not names:
        return
    taken = {p.node for g in groups.values() for p in g.pods.values() if p.node}
    request = _placement_request(spec, work.shape)
    result = plan_new_groups(observed.inventory, request, len(names), taken)
    work.placement = result if (result.short or missing > len(names)) else None
    if result.short:
        work.placement = result
    for name, nodes in zip(names, result.groups, strict=False):
        leader_ip = observed.inventory[nodes[0]].internal_ip
        for rank, node in enumerate(nodes):
            work.plan.apply.append(render_pod(inp, name, rank, node, leader_ip))
        record = work.records.get(name, {"name": name})
        work.records[name] = dict(record) | {
            "name": name,
            "revision": inp.revision,
            "state": "Starting",
            "serving": False,
            "since": _iso(observed.now),
            "members": [
                {
                    "rank": r,
                    "node": n,
                    "pod": L.pod_name(observed.model.name, name, r),
                    "ready": False,
                    "restarts": 0,
                }
                for r, n in enumerate(nodes)
            ],
        }
        verb = "recreated" if record.get("recreations") else "created"
        work.plan.events.append(
            Event(
                "Normal",
                "GroupCreated",
                f"group {name} {verb} on nodes {', '.join(nodes)} (revision {inp.revision})",
            )
        )


def _names_for_new_groups(
    work: _Work, groups: Mapping[str, ObservedGroup], count: int
) -> list[str]:
    """Failed groups come back under their own name after their backoff; then fresh names."""
    observed = work.observed
    names: list[str] = []
    for name, record in sorted(work.records.items(), key=lambda kv: L.group_index(kv[0]) or 0):
        if len(names) == count:
            break
        if record.get("state") not in {"Failed", "Restarting"}:
            continue
        if name in groups:  # its old pods are still going away: the slot waits for them
            work.waiting_backoff.append(name)
            continue
        failed_at = _parse_time((record.get("lastFailure") or {}).get("time"))
        wait = _backoff(work.spec, int(record.get("recreations") or 1))
        if failed_at is not None and observed.now < failed_at + wait:
            work.waiting_backoff.append(name)
            remaining = (failed_at + wait - observed.now).total_seconds()
            work.plan.requeue_after = min(work.plan.requeue_after or remaining, remaining)
            continue
        names.append(name)
    used = set(groups) | set(work.records)
    index = 0
    while len(names) + len(work.waiting_backoff) < count:
        candidate = L.group_name(index)
        if candidate not in used:
            names.append(candidate)
            used.add(candidate)
        index += 1
    return names


def _mark_serving(work: _Work, live: Mapping[str, ObservedGroup]) -> None:
    """Leaders of ready groups get the serving label the client Service selects on."""
    for group in live.values():
        leader = group.leader
        if leader is None:
            continue
        if group.ready and not leader.serving:
            work.plan.label.append((leader.name, {L.SERVING: "true"}))
        elif not group.ready and leader.serving:
            work.plan.label.append((leader.name, {L.SERVING: None}))


def _services(work: _Work) -> None:
    existing = {
        s["metadata"]["name"]: (s["metadata"].get("annotations") or {}).get(L.SPEC_HASH)
        for s in work.observed.services
    }
    for svc in (render_headless_service(work.inp), render_client_service(work.inp)):
        if existing.get(svc["metadata"]["name"]) != svc["metadata"]["annotations"][L.SPEC_HASH]:
            work.plan.apply.append(svc)


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


def _group_state(group: ObservedGroup, will_serve: bool) -> str:
    if group.ready:
        return "Serving" if (group.serving or will_serve) else "Ready"
    return "Starting"


def _record_live_groups(work: _Work, live: Mapping[str, ObservedGroup]) -> None:
    """Status records of running groups, with an event when one starts serving."""
    observed = work.observed
    previous = _group_records(observed)
    for name, group in live.items():
        record = dict(previous.get(name) or {"name": name})
        state = _group_state(group, will_serve=True)
        if record.get("state") != state:
            record["since"] = _iso(observed.now)
            if state == "Serving":
                work.plan.events.append(
                    Event(
                        "Normal",
                        "GroupServing",
                        f"group {name} is ready and serving on {', '.join(group.nodes)}",
                    )
                )
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
        work.records.setdefault(name, record)
        if work.records[name].get("state") not in {"Draining", "Failed", "Held"}:
            work.records[name] = record


def _status(
    work: _Work, groups: Mapping[str, ObservedGroup], live: Mapping[str, ObservedGroup]
) -> None:
    observed, spec, shape, inp = work.observed, work.spec, work.shape, work.inp
    _record_live_groups(work, live)
    records = sorted(work.records.values(), key=lambda r: L.group_index(r["name"]) or 0)
    desired = spec.replicas
    ready = sum(1 for g in live.values() if g.ready)
    updated = sum(1 for g in live.values() if g.revision == inp.revision)
    failed = [r for r in records if r.get("state") in {"Failed", "Held", "Restarting"}]
    short = work.placement is not None and work.placement.short
    all_current = updated == len(live) and len(live) == desired
    progressing = not (all_current and ready == desired)

    conds = [
        C.ConditionSpec(
            C.READY,
            ready >= desired,
            "ScaledToZero"
            if desired == 0
            else ("AllGroupsReady" if ready >= desired else "GroupsNotReady"),
            f"{ready}/{desired} replica groups ready",
        ),
        C.ConditionSpec(
            C.PROGRESSING,
            progressing,
            (
                "Unschedulable"
                if short
                else "RollingGroups"
                if updated < len(live)
                else "CreatingGroups"
            )
            if progressing
            else "Stable",
            f"{updated}/{desired} groups at revision {inp.revision}, {ready} ready",
        ),
        C.ConditionSpec(
            C.DEGRADED,
            bool(failed) or short,
            "GroupFailed" if failed else ("InsufficientGPUs" if short else "AsExpected"),
            "; ".join(f"group {r['name']} {r['state'].lower()}" for r in failed)
            or ("" if not short else "not every group can be placed"),
        ),
        C.ConditionSpec(
            C.SCHEDULABLE,
            not short,
            "InsufficientGPUs" if short else "Placed",
            work.placement.shortage_message()
            if short and work.placement
            else "every group has nodes",
        ),
    ]
    if short and work.placement is not None:
        message = work.placement.shortage_message()
        if _condition_changed(
            observed, C.SCHEDULABLE, False, "InsufficientGPUs"
        ) or _message_changed(observed, C.SCHEDULABLE, message):
            work.plan.events.append(Event("Warning", "Unschedulable", message))

    phase = _phase(
        desired=desired,
        ready=ready,
        live=len(live),
        updated=updated,
        failed=bool(failed),
        short=short,
        progressing=progressing,
    )

    status: dict[str, Any] = {
        "observedGeneration": observed.generation,
        "phase": phase,
        "conditions": C.render_conditions(
            conds, _previous_conditions(observed), observed.generation, observed.now
        ),
        "replicas": len(live),
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "desiredReplicas": desired,
        "selector": L.selector_string({**L.model_selector(observed.model.name), L.ROLE: L.LEADER}),
        "topology": {
            "gpuProduct": shape.gpu.name,
            "gpusPerNode": shape.gpus_per_node,
            "nodesPerReplica": shape.nodes,
            "gpusPerReplica": shape.gpus,
            "tensorParallelSize": shape.tensor_parallel,
            "pipelineParallelSize": shape.pipeline_parallel,
            "expertParallelSize": shape.expert_parallel,
            "attentionDataParallelSize": shape.attention_data_parallel,
            "moeA2ABackend": shape.moe_a2a_backend or "none",
            "contextLength": shape.context_length,
        },
        "groups": records,
        "cache": {
            "mode": spec.cache.mode,
            "key": inp.weights.key,
            "source": inp.weights.source,
            "revision": inp.weights.revision,
        },
        "endpoint": {
            "service": L.client_service_name(observed.model.name),
            "url": endpoint_url(observed.model),
            "servedName": inp.served_name,
        },
        "updateRevision": inp.revision,
    }
    current_revision = (
        inp.revision
        if (updated == len(live) and ready == desired)
        else observed.status.get("currentRevision")
    )
    if current_revision:
        status["currentRevision"] = current_revision
    work.plan.status = status
    if progressing and work.plan.requeue_after is None:
        work.plan.requeue_after = 5.0
