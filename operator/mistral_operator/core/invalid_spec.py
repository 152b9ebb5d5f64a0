"""A spec the operator cannot act on: say why, keep what runs, take broken groups out of traffic.

Nothing is created or deleted from a spec that does not plan or render: the groups of the
last good spec keep serving. A group that fails meanwhile is recorded and unrouted, and
kept until the spec is fixed (no pod can be rendered to replace it); Ready says how many
groups still serve.
"""

from __future__ import annotations

from mistral_operator.core import conditions as C  # noqa: N812 - short, read everywhere here
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.groups import HealthRules, find_failure, observe_groups
from mistral_operator.core.lifecycle import note_failure
from mistral_operator.core.snapshot import (
    Event,
    Observed,
    Plan,
    condition_changed,
    group_records,
    message_changed,
    previous_conditions,
)

INVALID = "InvalidSpec"


def plan_invalid_spec(observed: Observed, field_name: str, message: str) -> Plan:
    plan = Plan()
    text = f"{field_name}: {message}" if field_name else message
    rules = HealthRules(now=observed.now, grace=observed.node_grace)
    records = {name: dict(r) for name, r in group_records(observed).items()}
    ready = 0
    broken: list[str] = []
    for name, group in sorted(observe_groups(observed.pods).items()):
        record = records.setdefault(name, {"name": name, "revision": group.revision})
        planned = {m["rank"]: m["node"] for m in record.get("members") or [] if "node" in m}
        failure = (
            None if group.deleting else find_failure(group, observed.inventory, rules, planned)
        )
        if failure is None:
            if group.ready:
                ready += 1
                if group.leader is not None and not group.leader.serving:
                    plan.label.append((group.leader.name, {L.SERVING: "true"}))
            continue
        broken.append(name)
        count = int(record.get("recreations") or 0)
        event = note_failure(
            record, failure, observed.now, count, "it is recreated once the spec is valid"
        )
        if event is not None:
            plan.events.append(event)
        record["state"] = "Failed"
        leader = group.leader
        if leader is not None and leader.serving:
            plan.label.append((leader.name, {L.SERVING: None}))
    desired = int(observed.status.get("desiredReplicas") or 0)
    degraded = text + "".join(f"; group {n} failed" for n in broken)
    decided = [
        C.ConditionSpec(
            C.READY,
            desired > 0 and ready >= desired,
            INVALID,
            f"{ready}/{desired} replica groups of the last valid spec serve; {text}",
        ),
        C.ConditionSpec(C.PROGRESSING, False, INVALID, text),
        C.ConditionSpec(C.DEGRADED, True, INVALID, degraded),
    ]
    status = dict(observed.status)
    status.update(
        observedGeneration=observed.generation,
        phase="Failed" if ready == 0 else "Degraded",
        readyReplicas=ready,
        conditions=C.render_conditions(
            decided, previous_conditions(observed), observed.generation, observed.now
        ),
    )
    if records:
        status["groups"] = sorted(records.values(), key=lambda r: L.group_index(r["name"]) or 0)
    plan.status = status
    if condition_changed(observed, C.DEGRADED, True, INVALID) or message_changed(
        observed, C.DEGRADED, degraded
    ):
        plan.events.append(Event("Warning", INVALID, text))
    return plan
