"""The built-in autoscaler through the whole reconcile: decisions in status (never in the
spec), groups created in one step, drains on the way down, restarts, conflicts."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.reconcile import plan_reconcile
from tests.unit.reconcile_fixtures import NOW, Cluster, cond, example, observed, pods_of, sample

AUTOSCALING = {
    "minReplicas": 1,
    "maxReplicas": 4,
    "targetQueuePerReplica": 10,
    "intervalSeconds": 5,
    "scaleDown": {"stabilizationWindowSeconds": 60},
}


def scaled(replicas: int = 1, **autoscaling: Any) -> dict[str, Any]:
    """The quick start (one-node groups) with the built-in autoscaler."""
    s: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    return s | {"replicas": replicas, "autoscaling": AUTOSCALING | autoscaling}


def queues(c: Cluster, **per_group: int | None) -> None:
    """What the next reconcile reads at each serving group (queued requests)."""
    c.samples = {
        g: sample(None, c.now) if q is None else sample(0, c.now, queued=q)
        for g, q in per_group.items()
    }


def cond_of(c: Cluster, type_: str) -> dict[str, Any]:
    return next(x for x in c.status["conditions"] if x["type"] == type_)


def reasons(plan: Any) -> list[str]:
    return [e.reason for e in plan.events]


def test_a_queue_at_four_times_the_target_creates_every_group_in_one_reconcile() -> None:
    c = Cluster(scaled())
    c.settle()
    assert c.status["autoscaling"]["desiredReplicas"] == 1
    queues(c, g0=40)
    plan = c.step()
    assert len({p["metadata"]["labels"][L.GROUP] for p in pods_of(plan)}) == 3
    auto = c.status["autoscaling"]
    assert (auto["desiredReplicas"], auto["queue"], auto["currentReplicas"]) == (4, 40, 1)
    assert auto["lastScaleTime"] == "2026-06-01T12:00:00Z"
    assert auto["lastScaleReason"].startswith("1 -> 4: queue 40")
    assert c.status["desiredReplicas"] == 4
    assert c.spec["replicas"] == 1, "the spec is never written"
    assert "ScaledUp" in reasons(plan)
    assert plan.wake_at is not None
    assert plan.wake_at <= c.now + timedelta(seconds=5)
    # While they boot the same queue asks for nothing more.
    queues(c, g0=40)
    again = c.step(new_pods_ready=False)
    assert pods_of(again) == []
    assert c.status["autoscaling"]["desiredReplicas"] == 4


def test_a_lull_scales_down_after_its_window_draining_the_least_loaded_group() -> None:
    c = Cluster(scaled(3))
    c.settle()
    assert c.status["autoscaling"]["desiredReplicas"] == 3
    queues(c, g0=8, g1=0, g2=5)
    quiet = c.step()
    assert c.status["autoscaling"]["desiredReplicas"] == 3, "the window holds"
    assert quiet.label == []
    c.now += timedelta(seconds=61)
    queues(c, g0=8, g1=0, g2=5)
    down = c.step()
    assert c.status["autoscaling"]["desiredReplicas"] == 2
    assert down.label == [("mistral-small-4-g1-0", {L.SERVING: None})], "least loaded first"
    assert "ScaledDown" in reasons(down)
    assert c.groups()["g1"] == "Draining"


def test_unreadable_metrics_block_scale_down_and_say_which_group() -> None:
    c = Cluster(scaled(2, scaleDown={"stabilizationWindowSeconds": 0}))
    queues(c, g0=10, g1=10)
    c.settle()
    assert cond_of(c, "ScalingActive")["status"] == "True"
    queues(c, g0=0, g1=None)
    plan = c.step()
    assert c.status["autoscaling"]["desiredReplicas"] == 2
    active = cond(plan, "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "MetricsUnavailable")
    assert "g1" in active["message"]
    assert "MetricsUnavailable" in reasons(plan)
    queues(c, g0=0, g1=0)
    back = c.step()
    assert cond(back, "ScalingActive")["status"] == "True"
    assert c.status["autoscaling"]["desiredReplicas"] == 1


def test_stale_metrics_count_as_missing() -> None:
    c = Cluster(scaled(2, scaleDown={"stabilizationWindowSeconds": 0}))
    c.settle()
    queues(c, g0=0, g1=0)
    c.now += timedelta(seconds=16)  # three 5 s intervals after the read
    c.step()
    assert c.status["autoscaling"]["desiredReplicas"] == 2


def test_a_restarted_operator_reads_its_decision_and_window_back_and_changes_nothing() -> None:
    c = Cluster(scaled())
    c.settle()
    queues(c, g0=40)
    c.settle()
    assert c.status["autoscaling"]["desiredReplicas"] == 4
    c.now += timedelta(seconds=30)
    c.samples = {}  # a new operator that has read nothing yet
    restarted = c.step()
    assert (restarted.delete, restarted.label, pods_of(restarted)) == ([], [], [])
    assert not {"ScaledUp", "ScaledDown"} & set(reasons(restarted))
    # Mid-window, the lull it now reads does not scale down either.
    queues(c, g0=0, g1=0, g2=0, g3=0)
    mid = c.step()
    assert c.status["autoscaling"]["desiredReplicas"] == 4
    assert "ScaledDown" not in reasons(mid)


def test_spec_replicas_set_through_the_scale_subresource_is_reported_not_followed() -> None:
    c = Cluster(scaled(3))
    c.settle()
    c.managed_fields = [
        {"manager": "kube-controller-manager", "subresource": "scale", "operation": "Update"}
    ]
    queues(c, g0=10, g1=10, g2=10)
    c.spec = scaled(1)
    plan = c.step()
    conflict = cond(plan, "ExternalScaler")
    assert (conflict["status"], conflict["reason"]) == ("True", "BuiltInAutoscalerWins")
    assert "kube-controller-manager" in conflict["message"]
    assert c.status["autoscaling"]["desiredReplicas"] == 3


def test_with_autoscaling_off_spec_replicas_rules_and_no_decision_is_written() -> None:
    off = scaled(3, enabled=False)
    plan = plan_reconcile(observed(off, now=NOW))
    assert plan.status["desiredReplicas"] == 3
    assert "autoscaling" not in plan.status
    assert not any(c["type"] == "ScalingActive" for c in plan.status["conditions"])
