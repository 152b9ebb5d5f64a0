"""Rollouts through the whole reconcile: drain, surge fallback, staged weights, revision
history, deadline and automatic rollback."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.reconcile import Plan
from mistral_operator.core.render import ModelRef
from mistral_operator.core.revision_history import (
    HISTORY_LIMIT,
    LEGACY_LAST_GOOD,
    render_revision,
)
from tests.unit.reconcile_fixtures import (
    NOW,
    Cluster,
    cond,
    example,
    inventory,
    multinode_spec,
    pods_of,
    warmed,
)

NEW_IMAGE = {"image": "lmsysorg/sglang:v0.5.24"}


def spec(replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return multinode_spec(replicas, **extra)


def reasons(plan: Plan) -> list[str]:
    return [e.reason for e in plan.events]


def test_each_revision_is_kept_with_its_spec_and_written_once() -> None:
    c = Cluster(spec(1))
    writes: list[str] = []

    def settle() -> None:
        for _ in range(8):
            writes.extend(revision_writes(c.step(load=c.idle())))

    settle()
    first = c.status["currentRevision"]
    (stored,) = c.revisions
    assert stored["metadata"]["labels"][L.REVISION] == first
    assert LEGACY_LAST_GOOD not in stored["metadata"]["labels"]
    assert stored["data"]["spec"] == c.spec
    assert stored["revision"] == 1
    c.spec = spec(1, runtime=NEW_IMAGE)
    settle()
    second = c.status["currentRevision"]
    assert second != first
    assert sorted(r["revision"] for r in c.revisions) == [1, 2]
    # The last good revision is status.currentRevision; no revision is written twice.
    assert writes == [f"mistral-small-4-{first}", f"mistral-small-4-{second}"]


def test_a_revision_marked_last_good_by_an_earlier_version_loses_the_mark_once() -> None:
    c = Cluster(spec(1))
    c.settle()
    (stored,) = c.revisions
    stored["metadata"]["labels"][LEGACY_LAST_GOOD] = "true"
    plan = c.step()
    (rewritten,) = revision_writes(plan)
    assert rewritten == stored["metadata"]["name"]
    assert LEGACY_LAST_GOOD not in c.revisions[0]["metadata"]["labels"]
    assert c.revisions[0]["data"] == stored["data"]
    assert revision_writes(c.step()) == []


def revision_writes(plan: Plan) -> list[str]:
    return [o["metadata"]["name"] for o in plan.apply if o["kind"] == "ControllerRevision"]


def test_revision_history_is_trimmed_to_its_limit_but_keeps_the_last_good() -> None:
    model = ModelRef("mistral-small-4", "serving", "0000-uid")
    old = [render_revision(model, f"r{i}", i, {"spec": {}}) for i in range(1, 13)]
    c = Cluster(spec(1))
    c.settle()
    good = c.status["currentRevision"]
    c.revisions = [*old, *c.revisions]
    plan = c.step()
    gone = sorted(d.name for d in plan.delete if d.kind == "ControllerRevision")
    kept = {r["metadata"]["labels"][L.REVISION] for r in c.revisions}
    assert len(kept) == HISTORY_LIMIT
    assert good in kept
    assert gone == [f"mistral-small-4-r{i}" for i in (1, 2, 3)]


def compact(replicas: int, **extra: Any) -> dict[str, Any]:
    """The quick start's one-node groups: the H200 topology has room for a surge group."""
    s: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    return s | {"replicas": replicas} | extra


def test_a_replaced_group_drains_before_it_is_deleted_and_capacity_never_drops() -> None:
    c = Cluster(compact(2))
    c.settle()
    c.spec = compact(2, runtime=NEW_IMAGE)
    seen: list[int] = []
    for _ in range(20):
        plan = c.step(load=c.idle())
        seen.append(len(c.serving()))
        if plan.status["rollout"]["step"] == "Complete":
            break
    assert min(seen) >= 2
    assert plan.status["currentRevision"] == plan.status["updateRevision"]
    assert c.groups() == {"g2": "Serving", "g3": "Serving"}


def test_a_busy_leader_keeps_its_group_until_idle_or_the_drain_timeout() -> None:
    c = Cluster(spec(1, rollout={"drainTimeoutSeconds": 30}))
    c.settle()
    c.spec = spec(1, runtime=NEW_IMAGE, rollout={"drainTimeoutSeconds": 30})
    c.step()  # the surge group
    c.step()  # it is ready: routed
    drain = c.step()  # its route is observed: g0 is unrouted
    assert c.groups()["g0"] == "Draining"
    assert "GroupDraining" in reasons(drain)
    busy = c.step(load={"g0": 4})
    assert busy.delete == []
    assert busy.wake_at is not None
    assert busy.wake_at <= c.now + timedelta(seconds=2)
    unreadable = c.step(load={"g0": None}, now=NOW + timedelta(seconds=29))
    assert unreadable.delete == []
    late = c.step(now=NOW + timedelta(seconds=31))
    assert sorted(d.name for d in late.delete) == ["mistral-small-4-g0-0", "mistral-small-4-g0-1"]
    assert "GroupReplaced" in reasons(late)


def test_the_drain_timeout_is_the_pods_grace_period() -> None:
    c = Cluster(spec(1, rollout={"drainTimeoutSeconds": 900}))
    plan = c.step()
    assert {p["spec"]["terminationGracePeriodSeconds"] for p in pods_of(plan)} == {900}


def test_without_room_for_surge_groups_are_replaced_one_at_a_time_after_the_fallback() -> None:
    c = Cluster(spec(2))  # two groups fill the H200 topology
    c.settle()
    rolled = spec(2, runtime=NEW_IMAGE, rollout={"surgeFallbackSeconds": 60})
    blocked = c.step(spec=rolled)
    assert c.status["rollout"]["surgeBlockedSince"] == "2026-06-01T12:00:00Z"
    assert (blocked.delete, blocked.label) == ([], [])
    assert blocked.wake_at == NOW + timedelta(seconds=60)
    assert cond(blocked, "Schedulable")["status"] == "True", "only the surge waits for room"
    fallback = c.step(now=NOW + timedelta(seconds=61))
    assert len(fallback.label) == 1
    assert c.groups()["g0"] == "Draining"
    assert c.status["rollout"]["step"] == "Draining"
    seen = []
    for _ in range(20):
        plan = c.step(load=c.idle())
        seen.append(len(c.serving()))
        if plan.status["rollout"]["step"] == "Complete":
            break
    assert min(seen) >= 1, "never more than one group below the desired count"
    assert plan.status["currentRevision"] == plan.status["updateRevision"]
    assert "surgeBlockedSince" not in plan.status["rollout"]


def test_no_old_group_is_touched_before_the_new_weights_are_ready_on_its_nodes() -> None:
    base = spec(2, rollout={"maxSurge": 0, "maxUnavailable": 1})
    c = Cluster(base)
    c.settle()
    moved = spec(
        2,
        rollout={"maxSurge": 0, "maxUnavailable": 1},
        model={**base["model"], "revision": "0123456789abcdef0123456789abcdef01234567"},
    )
    c.inv = warmed(inventory(pods=c.pods), base)  # only the old weights are on the nodes
    waiting = c.step(spec=moved)
    assert (waiting.delete, waiting.label) == ([], [])
    assert c.status["rollout"]["step"] == "WaitingForWeights"
    assert any(o["kind"] == "Job" for o in waiting.apply), "the new weights are being fetched"
    c.inv = warmed(warmed(inventory(pods=c.pods), base), moved)
    staged = c.step()
    assert len(staged.label) == 1
    assert "Draining" in c.groups().values()


def fail_new_groups(c: Cluster, revision: str) -> None:
    for pod in c.pods:
        if pod["metadata"]["labels"][L.REVISION] == revision:
            pod["status"] = {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "sglang", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
                ],
            }


def rolled_out_then_broken(**rollout: Any) -> tuple[Cluster, str, str]:
    c = Cluster(spec(1, rollout=rollout))
    c.settle()
    good = c.status["currentRevision"]
    c.spec = spec(1, runtime=NEW_IMAGE, rollout={"progressDeadlineSeconds": 600, **rollout})
    c.step(new_pods_ready=False)
    bad = c.status["updateRevision"]
    return c, good, bad


def test_past_its_deadline_a_rollout_rolls_back_within_one_reconcile() -> None:
    c, good, bad = rolled_out_then_broken()
    old_pods = sorted(p["metadata"]["name"] for p in c.pods if "g0" in p["metadata"]["name"])
    failed = c.step(now=NOW + timedelta(seconds=601))
    assert cond(failed, "Progressing")["reason"] == "ProgressDeadlineExceeded"
    assert c.status["rollout"]["failedRevision"] == bad
    assert "RolloutFailed" in reasons(failed)
    assert failed.wake_at == c.now, "the rollback is the very next reconcile"
    back = c.step()
    assert sorted(d.name for d in back.delete) == ["mistral-small-4-g1-0", "mistral-small-4-g1-1"]
    assert back.label == []
    assert pods_of(back) == []
    assert not any(o["kind"] == "Job" for o in back.apply), "0 bytes fetched: old caches serve"
    rolled = cond(back, "RolledBack")
    assert (rolled["status"], rolled["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert "RolledBack" in reasons(back)
    assert (c.status["currentRevision"], c.status["updateRevision"]) == (good, bad)
    assert c.status["updatedReplicas"] == 0
    assert cond(back, "Ready")["status"] == "True"
    assert sorted(p["metadata"]["name"] for p in c.pods) == old_pods
    again = c.settle()
    assert (again.delete, pods_of(again), again.label) == ([], [], [])
    assert "RolledBack" not in reasons(again)
    assert c.status["rollout"]["step"] == "RolledBack"


def test_a_revision_whose_groups_fail_three_times_is_rolled_back() -> None:
    c, good, bad = rolled_out_then_broken()
    c.spec["groupFailurePolicy"] = {"initialBackoffSeconds": 1, "maxBackoffSeconds": 1}
    for attempt in range(1, 4):
        fail_new_groups(c, bad)
        c.step(now=c.now + timedelta(seconds=2))
        assert c.status["rollout"]["groupFailures"] == attempt
        c.step(now=c.now + timedelta(seconds=2))  # the failed group comes back
    assert c.status["rollout"]["failedRevision"] == bad
    assert c.status["rollout"]["failureReason"] == "GroupsFailed"
    c.settle()
    assert cond_of(c, "RolledBack")["reason"] == "GroupsFailed"
    assert {g["revision"] for g in c.status["groups"]} == {good}


def test_without_auto_rollback_the_failed_revision_stays_and_says_what_to_do() -> None:
    c, good, bad = rolled_out_then_broken(autoRollback=False)
    failed = c.step(now=NOW + timedelta(seconds=601))
    assert "restore revision" in next(
        e.message for e in failed.events if e.reason == "RolloutFailed"
    )
    c.settle()
    assert c.status["rollout"]["failedRevision"] == bad
    assert not any(c["type"] == "RolledBack" for c in c.status["conditions"])
    assert {g["revision"] for g in c.status["groups"]} == {good, bad}


def test_a_new_spec_after_a_rollback_rolls_out_again() -> None:
    c, good, bad = rolled_out_then_broken()
    c.step(now=NOW + timedelta(seconds=601))
    c.settle()
    c.spec = spec(1, runtime={"image": "lmsysorg/sglang:v0.5.25"})
    c.new_pods_ready = True
    plan = c.settle()
    assert c.status["currentRevision"] not in {good, bad}
    assert cond(plan, "RolledBack")["status"] == "False"
    assert "failedRevision" not in c.status["rollout"]


def test_pinning_a_revision_back_by_hand_is_writing_its_stored_spec() -> None:
    c, good, _ = rolled_out_then_broken(autoRollback=False)
    stored = next(r for r in c.revisions if r["metadata"]["labels"][L.REVISION] == good)
    c.spec = dict(stored["data"]["spec"])
    c.settle()
    assert c.status["updateRevision"] == c.status["currentRevision"] == good
    assert {g["revision"] for g in c.status["groups"]} == {good}


def cond_of(c: Cluster, type_: str) -> dict[str, Any]:
    return next(x for x in c.status["conditions"] if x["type"] == type_)


def test_a_deadline_passed_for_want_of_room_is_reported_but_not_rolled_back() -> None:
    c = Cluster(spec(1))
    c.settle()
    c.spec = spec(3, runtime=NEW_IMAGE, rollout={"progressDeadlineSeconds": 600})
    c.settle()  # a new group serves beside the old one; no room for more
    update = c.status["updateRevision"]
    assert update in {g["revision"] for g in c.status["groups"] if g["state"] == "Serving"}
    late = c.step(now=NOW + timedelta(seconds=700))
    assert cond(late, "Progressing")["reason"] == "ProgressDeadlineExceeded"
    assert "failedRevision" not in c.status["rollout"]
    assert "RolloutFailed" not in reasons(late)
    assert c.step().status["updateRevision"] == update
    assert not any(x["type"] == "RolledBack" for x in c.status["conditions"])
