"""The pure reconcile decision, step by step through a model's life."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.inventory import pinned_node
from mistral_operator.core.reconcile import plan_reconcile
from tests.unit.reconcile_fixtures import (
    BLOCK,
    MULTI_NODE,
    NOW,
    as_running,
    cond,
    converge,
    inventory,
    multinode_spec,
    observed,
    pods_of,
)


def spec(replicas: int = 2, **extra: Any) -> dict[str, Any]:
    return multinode_spec(replicas, **extra)


def test_two_groups_of_two_pods_each_inside_one_block() -> None:
    plan = plan_reconcile(observed(spec(2)))
    pods = pods_of(plan)
    assert len(pods) == 4
    inv = inventory()
    blocks: dict[str, set[str]] = {}
    for pod in pods:
        node = pinned_node(pod)
        assert node is not None
        blocks.setdefault(pod["metadata"]["labels"][L.GROUP], set()).add(inv[node].labels[BLOCK])
    assert all(len(b) == 1 for b in blocks.values())
    assert cond(plan, "Progressing")["status"] == "True"
    assert [e.reason for e in plan.events] == ["GroupCreated"]  # one for both groups


def test_converged_model_is_ready_and_a_further_reconcile_writes_nothing() -> None:
    pods, status = converge(spec(2))
    assert status["readyReplicas"] == 2
    assert status["phase"] == "Ready"
    assert {g["state"] for g in status["groups"]} == {"Serving"}
    plan = plan_reconcile(observed(spec(2), pods=pods, status=status))
    assert plan.pod_writes == 0
    assert plan.status == status
    assert not plan.write_status
    assert plan.events == []


def test_the_reconcile_that_routes_the_groups_writes_the_final_status() -> None:
    # Round 1 creates the groups, round 2 sees them ready and routes them: its status
    # is already the converged one, so the routes landing ask for no further write.
    pods, status = converge(spec(2), rounds=2)
    assert status["rollout"]["step"] == "Complete"
    assert all(p["metadata"]["labels"].get(L.SERVING) == "true" for p in pods if
               p["metadata"]["labels"][L.ROLE] == L.LEADER)  # fmt: skip
    plan = plan_reconcile(observed(spec(2), pods=pods, status=status))
    assert (plan.write_status, plan.pod_writes, plan.events) == (False, 0, [])


def test_the_status_written_with_the_creates_already_counts_the_new_groups() -> None:
    # Real pods take minutes to turn Ready: the reconcile that sees them created but
    # not ready finds the status it would write already written.
    created = plan_reconcile(observed(spec(2)))
    status = created.status
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"]) == (2, 2, 0)
    assert status["rollout"]["step"] == "WaitingForReadiness"
    assert status["rollout"]["message"] == "waiting for g0, g1 to become ready"
    assert cond(created, "Progressing")["message"].startswith("2/2 groups at revision ")
    pods = [as_running(p, ready=False) for p in pods_of(created)]
    seen = plan_reconcile(observed(spec(2), pods=pods, status=status))
    assert (seen.write_status, seen.pod_writes, seen.events) == (False, 0, [])


def test_unplaceable_third_group_is_reported_once_without_pod_writes() -> None:
    pods, status = converge(spec(3))
    assert status["readyReplicas"] == 2
    schedulable = next(c for c in status["conditions"] if c["type"] == "Schedulable")
    assert schedulable["status"] == "False"
    assert "each needs 2 nodes x 8 GPUs" in schedulable["message"]
    again = plan_reconcile(
        observed(spec(3), pods=pods, status=status, now=NOW + timedelta(minutes=5))
    )
    assert again.pod_writes == 0
    assert [e.reason for e in again.events] == []


def test_failed_rank_tears_down_the_group_and_recreates_it_after_backoff() -> None:
    pods, status = converge(spec(1))
    worker = next(p for p in pods if p["metadata"]["labels"][L.RANK] == "1")
    worker["status"] = {
        "phase": "Failed",
        "containerStatuses": [
            {"restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
        ],
    }
    plan = plan_reconcile(observed(spec(1), pods=pods, status=status))
    assert sorted(d.name for d in plan.delete) == ["mistral-small-4-g0-0", "mistral-small-4-g0-1"]
    record = plan.status["groups"][0]
    assert record["state"] == "Failed"
    assert record["lastFailure"]["reason"] == "OOMKilled"
    assert record["lastFailure"]["exitCode"] == 137
    assert record["recreations"] == 1
    assert [e.reason for e in plan.events] == ["GroupFailed"]

    # Pods gone, still inside the 30 s backoff: nothing is created yet.
    waiting = plan_reconcile(observed(spec(1), status=plan.status, now=NOW + timedelta(seconds=10)))
    assert pods_of(waiting) == []
    assert waiting.status["groups"][0]["state"] == "Restarting"
    # After the backoff the group comes back under its own name.
    back = plan_reconcile(observed(spec(1), status=waiting.status, now=NOW + timedelta(seconds=31)))
    assert sorted(p["metadata"]["name"] for p in pods_of(back)) == [
        "mistral-small-4-g0-0",
        "mistral-small-4-g0-1",
    ]
    assert back.status["groups"][0]["recreations"] == 1


def test_invalid_shape_touches_nothing_and_names_the_field() -> None:
    pods, status = converge(spec(1))
    bad = spec(1, parallelism={**MULTI_NODE, "attentionDataParallelSize": 3})
    plan = plan_reconcile(observed(bad, pods=pods, status=status))
    assert plan.apply == []
    assert plan.delete == []
    degraded = cond(plan, "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "spec.parallelism.attentionDataParallelSize" in degraded["message"]
    assert [e.reason for e in plan.events] == ["InvalidSpec"]


def test_scale_down_drains_the_newest_group_then_removes_it() -> None:
    pods, status = converge(spec(2))
    drain = plan_reconcile(observed(spec(1), pods=pods, status=status))
    assert drain.delete == []
    assert drain.label == [("mistral-small-4-g1-0", {L.SERVING: None})]
    assert [g["state"] for g in drain.status["groups"]] == ["Serving", "Draining"]
    assert "GroupDraining" in [e.reason for e in drain.events]
    busy = plan_reconcile(observed(spec(1), pods=pods, status=drain.status, drain_load={"g1": 3}))
    assert busy.delete == []
    assert busy.status["rollout"]["step"] == "Draining"
    idle = plan_reconcile(observed(spec(1), pods=pods, status=drain.status, drain_load={"g1": 0}))
    assert sorted(d.name for d in idle.delete) == ["mistral-small-4-g1-0", "mistral-small-4-g1-1"]
    assert pods_of(idle) == []


def test_spec_change_surges_a_new_group_before_removing_the_old() -> None:
    pods, status = converge(spec(1))
    changed = spec(1)
    changed["runtime"] = {"extraArgs": ["--mem-fraction-static", "0.85"]}
    plan = plan_reconcile(observed(changed, pods=pods, status=status))
    assert plan.delete == [], "the only serving group stays until its replacement serves"
    new = pods_of(plan)
    assert len(new) == 2
    assert {p["metadata"]["labels"][L.GROUP] for p in new} == {"g1"}
    assert cond(plan, "Progressing")["reason"] == "RollingGroups"


def test_a_restarting_group_is_forgotten_when_scaled_away() -> None:
    pods, status = converge(spec(2))
    for pod in pods:
        if pod["metadata"]["labels"][L.GROUP] == "g1":
            pod["status"]["phase"] = "Failed"
    failed = plan_reconcile(observed(spec(2), pods=pods, status=status))
    survivors = [p for p in pods if p["metadata"]["labels"][L.GROUP] == "g0"]
    waiting = plan_reconcile(observed(spec(2), pods=survivors, status=failed.status))
    assert [g["state"] for g in waiting.status["groups"]] == ["Serving", "Restarting"]
    scaled = plan_reconcile(observed(spec(1), pods=survivors, status=waiting.status))
    assert [g["name"] for g in scaled.status["groups"]] == ["g0"]
    assert cond(scaled, "Degraded")["status"] == "False"
    assert scaled.status["phase"] == "Ready"


def test_pods_of_a_vanished_node_are_deleted_without_a_grace_period() -> None:
    pods, status = converge(spec(1))
    lost = next(p for p in pods if p["metadata"]["labels"][L.RANK] == "1")["spec"]["nodeName"]
    inv = {name: node for name, node in inventory(pods=pods).items() if name != lost}
    plan = plan_reconcile(observed(spec(1), pods=pods, status=status, inv=inv))
    forced = {d.name: d.force for d in plan.delete}
    assert forced == {"mistral-small-4-g0-0": False, "mistral-small-4-g0-1": True}
    assert plan.status["groups"][0]["lastFailure"]["reason"] == "NodeLost"


def test_a_rank_gone_with_its_node_is_a_lost_node_not_a_deleted_pod() -> None:
    """The pod GC may remove a deleted node's pods before the operator reads the node's
    deletion: the rank is missing, and its planned node is gone too."""
    pods, status = converge(spec(1))
    lost = next(p for p in pods if p["metadata"]["labels"][L.RANK] == "1")
    inv = {n: node for n, node in inventory(pods=pods).items() if n != lost["spec"]["nodeName"]}
    remaining = [p for p in pods if p is not lost]
    plan = plan_reconcile(observed(spec(1), pods=remaining, status=status, inv=inv))
    failure = plan.status["groups"][0]["lastFailure"]
    assert failure["reason"] == "NodeLost"
    assert failure["node"] == lost["spec"]["nodeName"]
    # A rank missing while its node is still there was deleted by someone.
    kept = plan_reconcile(observed(spec(1), pods=remaining, status=status))
    assert kept.status["groups"][0]["lastFailure"]["reason"] == "PodDeleted"


def test_autoscaling_starts_within_bounds() -> None:
    s = spec(5, autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 2})
    plan = plan_reconcile(observed(s))
    assert plan.status["desiredReplicas"] == 2
    assert plan.status["autoscaling"]["desiredReplicas"] == 2
    assert len({p["metadata"]["labels"][L.GROUP] for p in pods_of(plan)}) == 2
    assert "no group serves yet" in plan.status["autoscaling"]["message"]
    off = spec(3, autoscaling={"enabled": False, "minReplicas": 1, "maxReplicas": 2})
    assert plan_reconcile(observed(off)).status["desiredReplicas"] == 3


def test_a_change_that_makes_no_progress_passes_its_deadline_once() -> None:
    pods, status = converge(spec(3))  # the third group never fits
    assert cond_of(status, "Progressing")["status"] == "True"
    late = NOW + timedelta(seconds=3601)
    stalled = plan_reconcile(observed(spec(3), pods=pods, status=status, now=late))
    progressing = cond(stalled, "Progressing")
    assert progressing["status"] == "False"
    assert progressing["reason"] == "ProgressDeadlineExceeded"
    assert "no earlier revision to roll back to" in progressing["message"]
    assert cond(stalled, "Degraded")["status"] == "True"
    assert "ProgressDeadlineExceeded" in [e.reason for e in stalled.events]
    later = plan_reconcile(
        observed(spec(3), pods=pods, status=stalled.status, now=late + timedelta(minutes=5))
    )
    assert cond(later, "Progressing")["reason"] == "ProgressDeadlineExceeded"
    assert "ProgressDeadlineExceeded" not in [e.reason for e in later.events]
    # Fixing the spec ends it.
    fixed = plan_reconcile(
        observed(spec(2), pods=pods, status=later.status, now=late + timedelta(minutes=6))
    )
    assert cond(fixed, "Progressing")["reason"] == "Stable"


def cond_of(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)
