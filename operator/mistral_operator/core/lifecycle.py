"""Group lifecycle decisions: failed groups torn down and brought back, scaling, replacement."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.groups import Failure, ObservedGroup, find_failure
from mistral_operator.core.inventory import Toleration
from mistral_operator.core.parallelism import ReplicaShape
from mistral_operator.core.placement import PlacementRequest, plan_new_groups
from mistral_operator.core.render import (
    GPU_TOLERATION,
    render_client_service,
    render_headless_service,
    render_pod,
)
from mistral_operator.core.snapshot import Event, Tally
from mistral_operator.core.timestamps import format_time, parse_time

AUTOSCALER_PENDING = (
    "queue-depth autoscaling is not built into this version yet: serving spec.replicas "
    "within autoscaling.minReplicas..maxReplicas; an HPA or KEDA can drive spec.replicas "
    "through the scale subresource"
)


def desired_groups(spec: MistralModelSpec) -> int:
    """Groups to run: spec.replicas, kept inside the autoscaling bounds when those are set."""
    scaling = spec.autoscaling
    if scaling is None or not scaling.enabled:
        return spec.replicas
    return min(max(spec.replicas, scaling.min_replicas), scaling.max_replicas)


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


def handle_failures(
    work: Tally, groups: Mapping[str, ObservedGroup], previous: Mapping[str, Mapping[str, Any]]
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
            work.delete_group(group, f"group {name} is going away", lost_only=True)
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
                "time": format_time(observed.now),
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
            since=record.get("since") if already else format_time(observed.now),
        )
        work.records[name] = record
        if not held:
            work.delete_group(group, f"group {name} failed: {failure.reason}")
    return live


def _same_failure(record: Mapping[str, Any], failure: Failure) -> bool:
    last = record.get("lastFailure") or {}
    return bool(last.get("rank") == failure.rank and last.get("reason") == failure.reason)


def carry_pending_restarts(
    work: Tally, groups: Mapping[str, ObservedGroup], previous: Mapping[str, Mapping[str, Any]]
) -> None:
    """Failed groups whose pods are gone wait out their backoff under the same name."""
    for name, record in previous.items():
        if name in groups or name in work.records:
            continue
        if record.get("state") in {"Failed", "Restarting"}:
            work.records[name] = dict(record) | {"state": "Restarting"}


def converge_groups(
    work: Tally, groups: Mapping[str, ObservedGroup], live: dict[str, ObservedGroup]
) -> None:
    """Create, replace and remove whole groups toward the desired count and revision."""
    observed, spec, inp = work.observed, work.spec, work.inp
    desired = desired_groups(spec)
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
    _forget_unneeded_restarts(work, groups, max(0, missing))
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
            "since": format_time(observed.now),
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


def _forget_unneeded_restarts(
    work: Tally, groups: Mapping[str, ObservedGroup], needed: int
) -> None:
    """Failed groups whose pods are gone come back only while the count still needs them."""
    waiting = sorted(
        (n for n, r in work.records.items() if r.get("state") == "Restarting" and n not in groups),
        key=lambda n: L.group_index(n) or 0,
    )
    for name in waiting[needed:]:
        del work.records[name]


def _names_for_new_groups(
    work: Tally, groups: Mapping[str, ObservedGroup], count: int
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
        failed_at = parse_time((record.get("lastFailure") or {}).get("time"))
        wait = _backoff(work.spec, int(record.get("recreations") or 1))
        if failed_at is not None and observed.now < failed_at + wait:
            work.waiting_backoff.append(name)
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


def mark_serving(work: Tally, live: Mapping[str, ObservedGroup]) -> None:
    """Leaders of ready groups get the serving label the client Service selects on."""
    for group in live.values():
        leader = group.leader
        if leader is None:
            continue
        if group.ready and not leader.serving:
            work.plan.label.append((leader.name, {L.SERVING: "true"}))
        elif not group.ready and leader.serving:
            work.plan.label.append((leader.name, {L.SERVING: None}))


def plan_services(work: Tally) -> None:
    existing = {
        s["metadata"]["name"]: (s["metadata"].get("annotations") or {}).get(L.SPEC_HASH)
        for s in work.observed.services
    }
    for svc in (render_headless_service(work.inp), render_client_service(work.inp)):
        if existing.get(svc["metadata"]["name"]) != svc["metadata"]["annotations"][L.SPEC_HASH]:
            work.plan.apply.append(svc)
