"""Group lifecycle decisions: failed groups torn down and brought back, scaling, replacement."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.group_events import Placed, groups_created
from mistral_operator.core.groups import (
    Failure,
    ObservedGroup,
    find_failure,
    next_health_deadline,
)
from mistral_operator.core.inventory import Toleration
from mistral_operator.core.parallelism import ReplicaShape
from mistral_operator.core.placement import PlacementRequest, PlacementResult, plan_new_groups
from mistral_operator.core.render import (
    GPU_TOLERATION,
    render_client_service,
    render_headless_service,
    render_pod,
)
from mistral_operator.core.rollout import (
    STEP_CREATING,
    STEP_WAITING_READY,
    STEP_WAITING_ROOM,
    RolloutGroup,
    RolloutInput,
    plan_rollout,
    waiting_for_readiness,
)
from mistral_operator.core.rollout_budget import resolve_surge_and_unavailable
from mistral_operator.core.snapshot import Event, Tally, group_records
from mistral_operator.core.timestamps import format_time, parse_time


def placement_request(spec: MistralModelSpec, shape: ReplicaShape) -> PlacementRequest:
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
        needs_internal_ip=spec.placement.host_network,
    )


def _backoff(spec: MistralModelSpec, recreations: int) -> timedelta:
    policy = spec.group_failure_policy
    seconds = policy.initial_backoff_seconds * (2 ** max(0, recreations - 1))
    return timedelta(seconds=min(seconds, policy.max_backoff_seconds))


# States the operator itself puts a group in before deleting (or keeping) its pods.
_OURS = frozenset({"Draining", "Failed", "Held", "Restarting"})


def _recreations_so_far(spec: MistralModelSpec, record: Mapping[str, Any], now: datetime) -> int:
    """Recreations that still count toward the backoff: a group that then served for
    maxBackoffSeconds starts again from the initial backoff (as a kubelet resets a
    crash loop after a healthy run)."""
    count = int(record.get("recreations") or 0)
    since = parse_time(record.get("since"))
    healthy = timedelta(seconds=spec.group_failure_policy.max_backoff_seconds)
    if record.get("state") == "Serving" and since is not None and now - since >= healthy:
        return 0
    return count


def handle_failures(
    work: Tally, groups: Mapping[str, ObservedGroup], previous: Mapping[str, Mapping[str, Any]]
) -> dict[str, ObservedGroup]:
    """Broken groups are torn down whole (or held); the rest are live."""
    observed, spec, rules = work.observed, work.spec, work.rules
    live: dict[str, ObservedGroup] = {}
    for name, group in sorted(groups.items()):
        record = dict(previous.get(name) or {"name": name})
        planned = {m["rank"]: m["node"] for m in record.get("members") or [] if "node" in m}
        if group.deleting and record.get("state") in _OURS:
            # Pods the operator is removing: wait until they are gone (those on nodes
            # no kubelet answers for go without a grace period).
            work.records[name] = record | {"name": name, "serving": False}
            work.delete_group(group, f"group {name} is going away", lost_only=True)
            continue
        failure = find_failure(
            group, observed.inventory, rules, planned, observed.create_errors.get(name)
        )
        if failure is None:
            live[name] = group
            work.plan.wake(next_health_deadline(group, observed.inventory, rules))
            continue
        held = spec.group_failure_policy.action == "Hold"
        record.update(name=name, revision=group.revision)
        counted = _recreations_so_far(spec, record, observed.now) + (0 if held else 1)
        outcome = "holding its pods for inspection" if held else "recreating the group"
        event = note_failure(record, failure, observed.now, counted, outcome)
        if event is not None:
            work.plan.events.append(event)
            if group.revision == work.update_revision != observed.status.get("currentRevision"):
                work.new_failures += 1  # counts toward failing the rollout
        record["state"] = "Held" if held else "Failed"
        work.records[name] = record
        if held:
            leader = group.leader
            if leader is not None and leader.serving:
                work.plan.label.append((leader.name, {L.SERVING: None}))
        else:
            work.delete_group(group, f"group {name} failed: {failure.reason}")
    return live


def note_failure(
    record: dict[str, Any], failure: Failure, now: datetime, recreations: int, outcome: str
) -> Event | None:
    """Record a group's failure in its status record; the event to emit if it is news.

    A failure already recorded (the same rank and reason, still Failed or Held) keeps
    its time and count, so a reconcile that sees it again changes nothing.
    """
    already = record.get("state") in {"Failed", "Held"} and _same_failure(record, failure)
    record["serving"] = False
    if already:
        return None
    name = record["name"]
    record["recreations"] = recreations
    record["since"] = format_time(now)
    record["lastFailure"] = {
        "rank": failure.rank,
        "node": failure.node,
        "reason": failure.reason,
        "exitCode": failure.exit_code,
        "message": failure.message,
        "time": format_time(now),
    }
    code = f" (exit code {failure.exit_code})" if failure.exit_code is not None else ""
    return Event(
        "Warning",
        "GroupFailed",
        f"group {name} rank {failure.rank} on node {failure.node or '?'} failed: "
        f"{failure.reason}{code}; {outcome}",
    )


def _same_failure(record: Mapping[str, Any], failure: Failure) -> bool:
    last = record.get("lastFailure") or {}
    return bool(last.get("rank") == failure.rank and last.get("reason") == failure.reason)


def carry_pending_restarts(
    work: Tally, groups: Mapping[str, ObservedGroup], previous: Mapping[str, Mapping[str, Any]]
) -> None:
    """Failed groups whose pods are gone wait out their backoff under the same name; so
    does a group whose first pod the API server refused (a quota, an admission rule)."""
    for name, record in previous.items():
        if name in groups or name in work.records:
            continue
        refused = work.observed.create_errors.get(name)
        if record.get("state") == "Starting" and refused:
            failed = dict(record)
            failure = Failure(0, "", "CreateFailed", message=refused)
            count = _recreations_so_far(work.spec, failed, work.observed.now) + 1
            event = note_failure(failed, failure, work.observed.now, count, "retrying")
            if event is not None:
                work.plan.events.append(event)
            work.records[name] = failed | {"state": "Restarting"}
        elif record.get("state") in {"Failed", "Restarting"}:
            work.records[name] = dict(record) | {"state": "Restarting"}


def converge_groups(
    work: Tally, groups: Mapping[str, ObservedGroup], live: dict[str, ObservedGroup]
) -> None:
    """Create, drain and remove whole groups toward the desired count and revision."""
    observed, spec, inp = work.observed, work.spec, work.inp
    desired = work.desired
    surge, unavailable = resolve_surge_and_unavailable(spec, desired)
    previous = group_records(observed)
    views = tuple(_rollout_view(work, g, previous.get(n) or {}) for n, g in sorted(live.items()))
    blocked_since = parse_time((observed.status.get("rollout") or {}).get("surgeBlockedSince"))
    fallback_after = timedelta(seconds=spec.rollout.surge_fallback_seconds)
    fallback = blocked_since is not None and observed.now >= blocked_since + fallback_after
    step = plan_rollout(
        RolloutInput(inp.revision, desired, surge, unavailable, views, fallback=fallback)
    )
    work.rollout_step = step
    for name in step.drain:
        _start_drain(work, live[name], scaled_down=name in step.scaled_down)
    for name in step.delete:
        _retire(work, live.pop(name), scaled_down=name in step.scaled_down)
    current = {n: g for n, g in live.items() if g.revision == inp.revision}
    outdated = [g for g in live.values() if g.revision != inp.revision]
    missing = desired - len([n for n in current if n not in work.draining])
    _forget_unneeded_restarts(work, groups, max(0, missing))
    if not step.create:
        if outdated and blocked_since is not None:
            work.surge_blocked_since = blocked_since  # no surge tried now: the wait stands
        return
    result = _create_groups(work, groups, step.create)
    whole = result is not None and not result.short and len(work.created) == step.create
    if step.reason == STEP_CREATING and whole:
        # Every group asked for is created by this plan: once it is written, the step
        # is the wait for them (and the not-ready groups before them) to become ready.
        starting = [n for n, g in current.items() if n not in work.draining and not g.ready]
        work.rollout_step = replace(
            step,
            reason=STEP_WAITING_READY,
            message=waiting_for_readiness([*starting, *work.created]),
        )
    if outdated and result is not None and result.unplaced:
        since = work.surge_blocked_since = blocked_since or observed.now
        work.plan.wake(since + fallback_after)
        if not fallback:
            work.rollout_step = replace(
                step,
                reason=STEP_WAITING_ROOM,
                message=f"no free nodes for a new group since {format_time(since)}: "
                f"replacing groups one at a time from {format_time(since + fallback_after)}",
            )


DRAIN_POLL = timedelta(seconds=2)


def _rollout_view(work: Tally, group: ObservedGroup, record: Mapping[str, Any]) -> RolloutGroup:
    """A live group as the rollout planner sees it, with its drain's progress."""
    observed = work.observed
    sample = observed.samples.get(group.name)
    draining = record.get("state") == "Draining" and "drainStarted" in record
    drained = False
    if draining:
        work.records[group.name] = dict(record)
        started = parse_time(record.get("drainStarted")) or observed.now
        timeout = started + timedelta(seconds=work.spec.rollout.drain_timeout_seconds)
        idle = sample is not None and sample.at >= started and sample.in_flight == 0
        drained = idle or observed.now >= timeout
        if not drained:
            work.plan.wake(min(observed.now + DRAIN_POLL, timeout))
    view = work.cache
    staged = True
    if view is not None and view.limits_placement and group.revision != work.inp.revision:
        staged = all(n in view.ready for n in group.nodes)
    return RolloutGroup(
        name=group.name,
        index=group.index,
        revision=group.revision,
        ready=group.ready,
        routed=group.serving,
        draining=draining,
        drained=drained,
        staged=staged,
        load=(sample.total or 0) if sample is not None else 0,
    )


def _start_drain(work: Tally, group: ObservedGroup, *, scaled_down: bool) -> None:
    """Take a group out of the client Service; it is deleted once its leader is idle."""
    observed, inp = work.observed, work.inp
    leader = group.leader
    if leader is not None and leader.serving:
        work.plan.label.append((leader.name, {L.SERVING: None}))
    previous = group_records(observed).get(group.name) or {"name": group.name}
    work.records[group.name] = dict(previous) | {
        "name": group.name,
        "revision": group.revision,
        "state": "Draining",
        "serving": False,
        "since": format_time(observed.now),
        "drainStarted": format_time(observed.now),
    }
    why = (
        f"scale down to {work.desired} groups"
        if scaled_down
        else f"replaced by revision {inp.revision}"
    )
    timeout = work.spec.rollout.drain_timeout_seconds
    work.plan.events.append(
        Event(
            "Normal",
            "GroupDraining",
            f"group {group.name} (revision {group.revision}) stopped taking requests and "
            f"is removed once idle or after {timeout}s: {why}",
        )
    )
    work.plan.wake(observed.now)  # read its load at once


def _retire(work: Tally, group: ObservedGroup, *, scaled_down: bool) -> None:
    """Delete a drained group, or one that served nothing."""
    inp = work.inp
    if scaled_down:
        reason = f"scale down to {work.desired} groups"
        event = Event("Normal", "GroupDeleted", f"group {group.name} removed: {reason}")
    else:
        reason = f"replaced by revision {inp.revision}"
        event = Event(
            "Normal",
            "GroupReplaced",
            f"group {group.name} (revision {group.revision}) removed for revision {inp.revision}",
        )
    work.delete_group(group, reason)
    work.plan.events.append(event)
    record = work.records.get(group.name) or {}
    work.records[group.name] = dict(record) | {
        "name": group.name,
        "state": "Draining",
        "revision": group.revision,
        "serving": False,
    }


def _create_groups(
    work: Tally, groups: Mapping[str, ObservedGroup], count: int
) -> PlacementResult | None:
    """Place and render ``count`` new groups of the target revision; the placement tried."""
    observed, spec, inp = work.observed, work.spec, work.inp
    names = _names_for_new_groups(work, groups, count)
    if not names:
        return None
    request = placement_request(spec, work.shape)
    view = work.cache
    if view is not None and view.limits_placement:
        request = replace(request, allowed_nodes=view.ready)
    result = plan_new_groups(observed.inventory, request, len(names))
    if result.short and request.allowed_nodes is not None:
        result = _wait_for_caches(work, request, result)
    work.placement = result
    placed: dict[str, list[Placed]] = {}
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
        placed.setdefault(verb, []).append((name, nodes))
    work.created.extend(name for name, _ in zip(names, result.groups, strict=False))
    for verb, created in sorted(placed.items()):
        work.plan.events.append(groups_created(created, verb, inp.revision))
    return result


def _wait_for_caches(
    work: Tally, request: PlacementRequest, on_ready: PlacementResult
) -> PlacementResult:
    """Groups with no room on Ready caches: the nodes they would get without the cache
    wait for fills (``Tally.cache_waits``); only what fits nowhere is short of GPUs."""
    taken = Counter(n for group in on_ready.groups for n in group)
    inventory = {
        name: replace(
            node, gpus_requested=node.gpus_requested + taken[name] * request.gpus_per_node
        )
        for name, node in work.observed.inventory.items()
    }
    view = work.cache
    assert view is not None
    anywhere = replace(request, allowed_nodes=None, warm_nodes=view.filling)
    waiting = plan_new_groups(inventory, anywhere, on_ready.unplaced)
    work.cache_waits = waiting.groups
    return replace(on_ready, unplaced=waiting.unplaced, capacity=waiting.capacity)


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
            work.plan.wake(failed_at + wait)
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


def mark_serving(
    work: Tally, groups: Mapping[str, ObservedGroup], live: Mapping[str, ObservedGroup]
) -> None:
    """Leaders of ready groups get the serving label the client Service selects on; every
    other leader loses it (a held, failed, draining or not-ready group takes no traffic).

    Routing a new leader comes before unrouting an old one in the plan, and both before
    any deletion, so capacity never drops because a later write failed.
    """
    unrouted = {name for name, _ in work.plan.label}
    draining = work.draining
    route: list[tuple[str, dict[str, str | None]]] = []
    unroute: list[tuple[str, dict[str, str | None]]] = []
    for name, group in sorted(groups.items()):
        leader = group.leader
        if leader is None or leader.name in unrouted:
            continue
        wanted = name in live and group.ready and name not in draining
        if wanted and not leader.serving:
            route.append((leader.name, {L.SERVING: "true"}))
        elif not wanted and leader.serving:
            unroute.append((leader.name, {L.SERVING: None}))
    work.plan.label[:0] = route + unroute


def plan_services(work: Tally) -> None:
    existing = {
        s["metadata"]["name"]: (s["metadata"].get("annotations") or {}).get(L.SPEC_HASH)
        for s in work.observed.services
    }
    for svc in (render_headless_service(work.inp), render_client_service(work.inp)):
        if existing.get(svc["metadata"]["name"]) != svc["metadata"]["annotations"][L.SPEC_HASH]:
            work.plan.apply.append(svc)
