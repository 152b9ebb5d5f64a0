"""Recovery decisions: dead nodes, foreign deletions, stuck containers, routing and deadlines."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.reconcile import plan_reconcile
from mistral_operator.core.timestamps import format_time
from tests.unit.reconcile_fixtures import (
    BLOCK,
    NOW,
    cond,
    converge,
    inventory,
    multinode_spec,
    observed,
    pods_of,
)

G0 = ["mistral-small-4-g0-0", "mistral-small-4-g0-1"]


def spec(replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return multinode_spec(replicas, **extra)


def rank(pods: list[dict[str, Any]], group: str, r: int) -> dict[str, Any]:
    return next(
        p
        for p in pods
        if p["metadata"]["labels"][L.GROUP] == group and p["metadata"]["labels"][L.RANK] == str(r)
    )


def not_ready(inv: dict[str, Any], node: str, since: timedelta) -> dict[str, Any]:
    """The inventory with ``node`` NotReady since ``since`` before NOW."""
    out = dict(inv)
    out[node] = replace(inv[node], ready=False, not_ready_since=NOW - since)
    return out


def test_a_dead_nodes_pods_go_without_grace_once_the_node_grace_has_passed() -> None:
    pods, status = converge(spec())
    worker = rank(pods, "g0", 1)
    node = worker["spec"]["nodeName"]
    inv = not_ready(inventory(pods=pods), node, timedelta(seconds=41))
    plan = plan_reconcile(observed(spec(), pods=pods, status=status, inv=inv))
    assert {d.name: d.force for d in plan.delete} == {G0[0]: False, G0[1]: True}
    assert plan.status["groups"][0]["lastFailure"]["reason"] == "NodeNotReady"
    # The worker stays Terminating (no kubelet confirms): it is forced again, and the
    # group comes back under its name once its pods are gone and the backoff ends.
    for pod in pods:
        pod["metadata"]["deletionTimestamp"] = format_time(NOW)
    again = plan_reconcile(observed(spec(), pods=pods, status=plan.status, inv=inv))
    assert [(d.name, d.force) for d in again.delete] == [(G0[1], True)]
    assert again.events == []


def test_inside_the_node_grace_nothing_is_deleted_and_the_grace_end_is_a_wake_up() -> None:
    pods, status = converge(spec())
    node = rank(pods, "g0", 1)["spec"]["nodeName"]
    inv = not_ready(inventory(pods=pods), node, timedelta(seconds=10))
    plan = plan_reconcile(observed(spec(), pods=pods, status=status, inv=inv))
    assert plan.delete == []
    assert plan.wake_at == NOW + timedelta(seconds=30)


def test_an_eviction_fails_the_group_with_a_record_and_backoff_instead_of_a_new_group() -> None:
    pods, status = converge(spec())
    worker = rank(pods, "g0", 1)
    worker["metadata"]["deletionTimestamp"] = format_time(NOW)
    worker["status"]["conditions"].append(
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    )
    plan = plan_reconcile(observed(spec(), pods=pods, status=status))
    record = plan.status["groups"][0]
    assert record["state"] == "Failed"
    assert record["lastFailure"]["reason"] == "EvictionByEvictionAPI"
    assert record["recreations"] == 1
    assert pods_of(plan) == [], "no second group while the first one's pods go away"
    # The surviving leader goes too, unrouted before it is deleted.
    assert [d.name for d in plan.delete] == [G0[0]]
    assert plan.label == [(G0[0], {L.SERVING: None})]
    assert [e.reason for e in plan.events] == ["GroupFailed"]


def test_held_groups_take_no_traffic() -> None:
    s = spec(groupFailurePolicy={"action": "Hold"})
    pods, status = converge(s)
    rank(pods, "g0", 1)["status"]["phase"] = "Failed"
    plan = plan_reconcile(observed(s, pods=pods, status=status))
    assert plan.delete == []
    assert plan.label == [(G0[0], {L.SERVING: None})]
    assert plan.status["groups"][0]["state"] == "Held"


def test_a_rollout_retires_an_old_group_only_after_the_new_leader_is_routed() -> None:
    pods, status = converge(spec())
    changed = spec(runtime={"extraArgs": ["--mem-fraction-static", "0.85"]})
    surge = plan_reconcile(observed(changed, pods=pods, status=status))
    new = [p | {"metadata": p["metadata"] | {"uid": p["metadata"]["name"]}} for p in pods_of(surge)]
    for pod in new:
        pod["spec"] = pod["spec"] | {"nodeName": pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
            "matchExpressions"][0]["values"][0]}  # fmt: skip
        pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    both = pods + new
    ready = plan_reconcile(observed(changed, pods=both, status=surge.status))
    # The new leader is routed; the old group stays until that label is observed.
    assert ready.label == [("mistral-small-4-g1-0", {L.SERVING: "true"})]
    assert ready.delete == []
    rank(new, "g1", 0)["metadata"]["labels"][L.SERVING] = "true"
    drain = plan_reconcile(observed(changed, pods=both, status=ready.status))
    assert drain.delete == []
    assert drain.label == [(G0[0], {L.SERVING: None})]
    rank(pods, "g0", 0)["metadata"]["labels"].pop(L.SERVING)
    retire = plan_reconcile(observed(changed, pods=both, status=drain.status, drain_load={"g0": 0}))
    assert sorted(d.name for d in retire.delete) == G0


def test_surge_zero_with_a_percentage_that_rounds_to_zero_still_rolls() -> None:
    pods, status = converge(spec(2))
    changed = spec(
        2,
        rollout={"maxSurge": 0, "maxUnavailable": "10%"},
        runtime={"extraArgs": ["--mem-fraction-static", "0.85"]},
    )
    plan = plan_reconcile(observed(changed, pods=pods, status=status))
    assert len(plan.label) == 1, "one group at a time"
    assert [g["state"] for g in plan.status["groups"]].count("Draining") == 1


def test_revision_follows_the_rendered_pods_not_the_spec_text() -> None:
    base = plan_reconcile(observed(spec())).status["updateRevision"]
    same = [
        spec(replicas=3),
        spec(rollout={"maxSurge": 2}),
        spec(groupFailurePolicy={"initialBackoffSeconds": 5}),
        spec(runtime={"startupTimeoutSeconds": 3600}),  # a default spelled out
    ]
    for s in same:
        assert plan_reconcile(observed(s)).status["updateRevision"] == base, s
    other = plan_reconcile(observed(spec(runtime={"image": "lmsysorg/sglang:other"})))
    assert other.status["updateRevision"] != base


def test_the_progress_deadline_restarts_when_the_spec_changes_mid_rollout() -> None:
    pods, status = converge(spec(3))  # the third group never fits: Progressing stays True
    later = NOW + timedelta(seconds=3000)
    changed = spec(
        3,
        runtime={"extraArgs": ["--mem-fraction-static", "0.85"]},
        rollout={"surgeFallbackSeconds": 86400},  # only the deadline wakes the loop
    )
    plan = plan_reconcile(observed(changed, pods=pods, status=status, now=later))
    progressing = cond(plan, "Progressing")
    assert progressing["lastTransitionTime"] == format_time(later)
    # 3601 s after the first change, but only 601 s after the second: not stalled.
    still = plan_reconcile(
        observed(changed, pods=pods, status=plan.status, now=NOW + timedelta(seconds=3601))
    )
    assert cond(still, "Progressing")["status"] == "True"
    assert still.wake_at == later + timedelta(seconds=3600)


def test_a_render_error_is_reported_not_raised() -> None:
    s = spec(placement={"topologyKey": BLOCK, "hostNetwork": True})
    inv = {
        name: replace(node, internal_ip=None) if node.product else node
        for name, node in inventory().items()
    }
    plan = plan_reconcile(observed(s, inv=inv))
    assert pods_of(plan) == []
    assert cond(plan, "Schedulable")["status"] == "False"


def test_an_invalid_spec_keeps_serving_groups_and_unroutes_a_broken_one() -> None:
    pods, status = converge(spec(2))
    rank(pods, "g1", 1)["status"]["phase"] = "Failed"
    bad = spec(2, cache={"mode": "None"}, model={"source": "s3://bucket/weights"})
    plan = plan_reconcile(observed(bad, pods=pods, status=status))
    assert plan.delete == []
    assert plan.apply == []
    assert plan.label == [("mistral-small-4-g1-0", {L.SERVING: None})]
    ready = cond(plan, "Ready")
    assert ready["status"] == "False"
    assert ready["message"].startswith("1/2 replica groups")
    records = {g["name"]: g for g in plan.status["groups"]}
    assert records["g1"]["state"] == "Failed"
    assert "GroupFailed" in [e.reason for e in plan.events]


def test_backoff_starts_over_after_a_group_served_for_max_backoff() -> None:
    s = spec(groupFailurePolicy={"initialBackoffSeconds": 30, "maxBackoffSeconds": 600})
    pods, status = converge(s)
    status["groups"][0] |= {"recreations": 4, "since": format_time(NOW - timedelta(seconds=601))}
    rank(pods, "g0", 1)["status"]["phase"] = "Failed"
    plan = plan_reconcile(observed(s, pods=pods, status=status))
    assert plan.status["groups"][0]["recreations"] == 1
    status["groups"][0]["since"] = format_time(NOW - timedelta(seconds=60))
    plan = plan_reconcile(observed(s, pods=pods, status=status))
    assert plan.status["groups"][0]["recreations"] == 5


def test_a_missing_rank_the_api_server_refused_is_a_create_failure() -> None:
    pods, status = converge(spec())
    leader_only = [rank(pods, "g0", 0)]
    inv = inventory(pods=leader_only)
    obs = observed(spec(), pods=leader_only, status=status, inv=inv)
    refused = replace(obs, create_errors={"g0": 'exceeded quota: "gpus"'})
    plan = plan_reconcile(refused)
    failure = plan.status["groups"][0]["lastFailure"]
    assert failure["reason"] == "CreateFailed"
    assert "exceeded quota" in failure["message"]


def test_a_group_whose_first_pod_was_refused_waits_out_a_backoff_under_its_name() -> None:
    first = plan_reconcile(observed(spec()))
    refused = replace(
        observed(spec(), status=first.status), create_errors={"g0": "forbidden: quota"}
    )
    plan = plan_reconcile(refused)
    assert pods_of(plan) == []
    record = plan.status["groups"][0]
    assert record["state"] == "Restarting"
    assert record["lastFailure"]["reason"] == "CreateFailed"
    assert plan.wake_at == NOW + timedelta(seconds=30)


def _waiting(pod: dict[str, Any], reason: str, age: timedelta) -> None:
    pod["metadata"]["creationTimestamp"] = format_time(NOW - age)
    pod["status"] = {
        "phase": "Pending",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {"restartCount": 0, "state": {"waiting": {"reason": reason, "message": "no such tag"}}}
        ],
    }


def test_an_image_that_cannot_be_pulled_fails_the_group_after_the_grace() -> None:
    pods, status = converge(spec())
    _waiting(rank(pods, "g0", 1), "ImagePullBackOff", timedelta(seconds=10))
    early = plan_reconcile(observed(spec(), pods=pods, status=status))
    assert early.delete == []
    assert early.wake_at == NOW + timedelta(seconds=30)
    _waiting(rank(pods, "g0", 1), "ImagePullBackOff", timedelta(seconds=41))
    late = plan_reconcile(observed(spec(), pods=pods, status=status))
    failure = late.status["groups"][0]["lastFailure"]
    assert (failure["reason"], failure["message"]) == ("ImagePullBackOff", "no such tag")


def test_a_container_that_never_gets_created_fails_after_the_startup_timeout() -> None:
    s = spec(runtime={"startupTimeoutSeconds": 600})
    pods, status = converge(s)
    _waiting(rank(pods, "g0", 1), "ContainerCreating", timedelta(seconds=599))
    assert plan_reconcile(observed(s, pods=pods, status=status)).delete == []
    _waiting(rank(pods, "g0", 1), "ContainerCreating", timedelta(seconds=601))
    plan = plan_reconcile(observed(s, pods=pods, status=status))
    assert plan.status["groups"][0]["lastFailure"]["reason"] == "StartTimeout"
