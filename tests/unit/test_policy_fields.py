"""Spec fields that steer the groups' life: count bounds, rollout budget and deadline, failures."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.reconcile import Plan, plan_reconcile
from tests.unit.reconcile_fixtures import (
    NOW,
    cond,
    converge,
    multinode_spec,
    observed,
    pods_of,
)


def spec(replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return multinode_spec(replicas, **extra)


def groups_created(plan: Plan) -> set[str]:
    return {p["metadata"]["labels"][L.GROUP] for p in pods_of(plan)}


def failed_worker(s: dict[str, Any]) -> tuple[list[dict[str, Any]], Plan]:
    """A converged single group whose worker then exited with an error, and the plan for it."""
    pods, status = converge(s)
    worker = next(p for p in pods if p["metadata"]["labels"][L.RANK] == "1")
    worker["status"] = {
        "phase": "Failed",
        "containerStatuses": [
            {"restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
        ],
    }
    return pods, plan_reconcile(observed(s, pods=pods, status=status))


def test_min_replicas_raises_the_group_count_while_autoscaling() -> None:
    bounded = spec(0, autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 2})
    plan = plan_reconcile(observed(bounded))
    assert plan.status["desiredReplicas"] == 1
    assert groups_created(plan) == {"g0"}
    off = spec(0, autoscaling={"enabled": False, "minReplicas": 1, "maxReplicas": 2})
    assert plan_reconcile(observed(off)).status["desiredReplicas"] == 0


def test_max_unavailable_lets_an_old_group_go_before_its_replacement_serves() -> None:
    pods, status = converge(spec(1))
    changed = spec(
        1,
        runtime={"extraArgs": ["--mem-fraction-static", "0.85"]},
        rollout={"maxSurge": 0, "maxUnavailable": 1},
    )
    plan = plan_reconcile(observed(changed, pods=pods, status=status))
    assert plan.label == [("mistral-small-4-g0-0", {L.SERVING: None})]  # drained first
    assert plan.status["groups"][0]["state"] == "Draining"
    # With the default budget (maxSurge 1, maxUnavailable 0) the old group stays instead.
    kept = spec(1, runtime={"extraArgs": ["--mem-fraction-static", "0.85"]})
    stays = plan_reconcile(observed(kept, pods=pods, status=status))
    assert (stays.delete, stays.label) == ([], [])


def test_progress_deadline_is_the_specs_number_of_seconds() -> None:
    s = spec(3, rollout={"progressDeadlineSeconds": 600})  # the third group never fits
    pods, status = converge(s)
    before = plan_reconcile(observed(s, pods=pods, status=status, now=NOW + timedelta(seconds=599)))
    assert cond(before, "Progressing")["status"] == "True"
    after = plan_reconcile(observed(s, pods=pods, status=status, now=NOW + timedelta(seconds=601)))
    assert cond(after, "Progressing")["reason"] == "ProgressDeadlineExceeded"
    assert "became ready for 600s" in cond(after, "Progressing")["message"]


def test_hold_keeps_a_failed_groups_pods_for_inspection() -> None:
    _, plan = failed_worker(spec(1, groupFailurePolicy={"action": "Hold"}))
    assert plan.delete == []
    record = plan.status["groups"][0]
    assert record["state"] == "Held"
    assert record["serving"] is False
    assert record["lastFailure"]["reason"] == "Error"
    assert cond(plan, "Degraded")["status"] == "True"
    assert "holding its pods for inspection" in plan.events[0].message


def test_initial_backoff_is_the_wait_before_the_first_recreation() -> None:
    s = spec(1, groupFailurePolicy={"initialBackoffSeconds": 5})
    _, failed = failed_worker(s)
    assert failed.status["groups"][0]["recreations"] == 1
    waiting = plan_reconcile(observed(s, status=failed.status, now=NOW + timedelta(seconds=4)))
    assert pods_of(waiting) == []
    back = plan_reconcile(observed(s, status=waiting.status, now=NOW + timedelta(seconds=6)))
    assert groups_created(back) == {"g0"}


def test_max_backoff_caps_the_doubling_wait() -> None:
    s = spec(1, groupFailurePolicy={"initialBackoffSeconds": 30, "maxBackoffSeconds": 60})
    _, failed = failed_worker(s)
    status = copy.deepcopy(failed.status)
    # A fifth failure would wait 30 s x 2^4 = 480 s without the cap.
    status["groups"][0]["recreations"] = 5
    waiting = plan_reconcile(observed(s, status=status, now=NOW + timedelta(seconds=59)))
    assert pods_of(waiting) == []
    back = plan_reconcile(observed(s, status=waiting.status, now=NOW + timedelta(seconds=61)))
    assert groups_created(back) == {"g0"}
