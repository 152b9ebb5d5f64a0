"""Garbage collection of node caches: the pure core's decisions, round by round, and the
shell loop that lists, executes and survives a failed round. (Claims' keys, collected by
the same code: test_cache_gc_claims.py, which reads its fixtures from here.)"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3

from mistral_operator.cachefill.result import CleanResult, SkippedKey
from mistral_operator.cli import build_parser
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.cache_gc import (
    CACHE_GC,
    GC_DEADLINE_SECONDS,
    GC_JOB_ANNOTATION,
    GC_PREFIX,
    UNSETTLED_GRACE,
    GcEvent,
    GcInput,
    GcPlan,
    GcSettings,
    Holder,
    gc_job_name,
    plan_gc,
    render_event,
)
from mistral_operator.core.fill_jobs import CACHE_MOUNT
from mistral_operator.core.render import GPU_TOLERATION
from mistral_operator.core.timestamps import format_time
from mistral_operator.shell import cache_gc as shell_gc

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ROOT = "/var/lib/mistral-operator/cache"
SETTINGS = GcSettings(retention=DAY, watermark=0.85, namespace="ops", image="op:1")
GIB = 2**30
A, B, C, D = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc", "dddddddddddddddd"


# -- fixtures ------------------------------------------------------------------------


def ago(delta: timedelta) -> str:
    return format_time(NOW - delta)


def contents(root: str = ROOT, size: int | None = 100 * GIB, ready: str | None = None) -> str:
    return json.dumps(
        {
            "root": root,
            "source": "hf://mistralai/m",
            "revision": "r1",
            "commit": "c" * 40,
            "bytes": size,
            "readyAt": ready or ago(10 * DAY),
        }
    )


def node(
    name: str = "n1",
    *,
    labels: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
    ready: bool = True,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {"kubernetes.io/hostname": name} | (labels or {}),
            "annotations": notes or {},
        },
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def cached(
    key: str,
    *,
    state: str | None = "Ready",
    unused: timedelta | None = None,
    root: str = ROOT,
    size: int | None = 100 * GIB,
    ready: str | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """A key's label and annotations on a node: Ready, filled, maybe unused since a while."""
    labels = {L.node_cache_label(key): state} if state else {}
    notes = {L.node_cache_label(key): contents(root, size, ready)}
    if unused is not None:
        notes[f"{GC_PREFIX}{key}"] = ago(unused)
    return labels, notes


def marks(
    *keys: tuple[dict[str, str], dict[str, str]],
    disk: tuple[int, int] | None = None,
    disk_root: str = ROOT,
) -> tuple[dict[str, str], dict[str, str]]:
    """The labels and annotations ``keys`` (see ``cached``) and a disk leave on a node or
    a claim."""
    labels: dict[str, str] = {}
    notes: dict[str, str] = {}
    for key_labels, key_notes in keys:
        labels |= key_labels
        notes |= key_notes
    if disk is not None:
        free, total = disk
        notes[L.NODE_CACHE_DISK] = json.dumps(
            {"root": disk_root, "freeBytes": free, "totalBytes": total, "at": ago(DAY)}
        )
    return labels, notes


def node_with(
    *keys: tuple[dict[str, str], dict[str, str]],
    name: str = "n1",
    disk: tuple[int, int] | None = None,
    disk_root: str = ROOT,
    **kw: Any,
) -> dict[str, Any]:
    labels, notes = marks(*keys, disk=disk, disk_root=disk_root)
    return node(name, labels=labels, notes=notes, **kw)


def model(
    key: str | None = None,
    last_good: str | None = None,
    *,
    name: str = "m",
    generation: int = 1,
    observed: int | None = 1,
) -> dict[str, Any]:
    cache = {"key": key} if key else {}
    if last_good:
        cache["lastGoodKey"] = last_good
    status: dict[str, Any] = {"cache": cache}
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "metadata": {"name": name, "namespace": "serving", "uid": f"uid-{name}"}
        | {"generation": generation},
        "status": status,
    }


def serving_pod(
    key: str, node_name: str = "n1", *, pinned: bool = False, phase: str = "Running"
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if pinned:
        term = {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}
            ]
        }
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        }
    else:
        spec["nodeName"] = node_name
    return {
        "metadata": {"name": "p", "namespace": "serving", "labels": {L.CACHE_KEY: key}},
        "spec": spec,
        "status": {"phase": phase},
    }


def fill_job(
    key: str, node_name: str = "n1", *, complete: bool = False, started: str | None = None
) -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True"}] if complete else []
    return {
        "metadata": {
            "name": f"m-fill-{key[:4]}",
            "namespace": "serving",
            "uid": f"uid-fill-{key}",
            "labels": {L.COMPONENT: L.CACHE_FILL, L.CACHE_KEY: key, L.CACHE_NODE: node_name},
        },
        "status": {"conditions": conditions, "startTime": started or ago(timedelta(hours=1))},
    }


def finished(
    job: dict[str, Any],
    result: CleanResult | None,
    *,
    failed: bool = False,
    at: str | None = None,
    message: str | None = None,
    reason: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A rendered GC Job as the Job controller reports it done, and its one pod."""
    job = copy.deepcopy(job)
    job["metadata"]["uid"] = "uid-gc"
    cond = {"type": "Failed" if failed else "Complete", "status": "True", "reason": reason}
    job["status"] = {"conditions": [cond], "startTime": ago(timedelta(minutes=5))}
    text = message if message is not None else (result.render() if result else "")
    pod = {
        "metadata": {
            "name": f"{job['metadata']['name']}-x",
            "namespace": "ops",
            "labels": job["spec"]["template"]["metadata"]["labels"],
            "ownerReferences": [{"kind": "Job", "uid": "uid-gc"}],
        },
        "status": {
            "containerStatuses": [
                {
                    "name": "clean",
                    "state": {
                        "terminated": {
                            "exitCode": 1 if failed else 0,
                            "message": text,
                            "startedAt": ago(timedelta(minutes=4)),
                            "finishedAt": at or ago(timedelta(minutes=3)),
                        }
                    },
                }
            ]
        },
    }
    return job, pod


def gc_input(
    nodes: list[dict[str, Any]],
    models: list[dict[str, Any]] | None = None,
    *,
    claims: list[dict[str, Any]] | None = None,
    pods: list[dict[str, Any]] | None = None,
    fill_jobs: list[dict[str, Any]] | None = None,
    gc_jobs: list[dict[str, Any]] | None = None,
    gc_pods: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> GcInput:
    return GcInput(
        nodes=nodes,
        claims=claims or [],
        models=models or [],
        pods=pods or [],
        fill_jobs=fill_jobs or [],
        gc_jobs=gc_jobs or [],
        gc_pods=gc_pods or [],
        now=kw.pop("now", NOW),
        settings=kw.pop("settings", SETTINGS),
        **kw,
    )


def notes_of(plan: GcPlan, name: str = "n1") -> dict[str, str | None]:
    return plan.annotations.get(Holder.node(name), {})


def labels_of(plan: GcPlan, name: str = "n1") -> dict[str, str | None]:
    return plan.labels.get(Holder.node(name), {})


def removes(job: dict[str, Any]) -> list[str]:
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return [args[i + 1] for i, a in enumerate(args) if a == "--remove"]


def reasons(plan: GcPlan) -> list[str]:
    return [e.reason for e in plan.events]


# -- unused since ------------------------------------------------------------------


def test_a_key_no_model_references_is_noted_unused_but_not_removed_in_that_round() -> None:
    plan = plan_gc(gc_input([node_with(cached(A))], [model(B)]))
    assert notes_of(plan) == {f"{GC_PREFIX}{A}": format_time(NOW)}
    assert plan.create == []
    assert plan.delete == []


def test_the_current_and_last_good_keys_of_any_model_are_never_collected() -> None:
    keys = node_with(cached(A, unused=2 * DAY), cached(B), cached(C, unused=3 * DAY))
    plan = plan_gc(gc_input([keys], [model(A, name="x"), model(D, C, name="y")]))
    # A and C are referenced again: their notes go; B is noted unused from now on.
    assert notes_of(plan) == {
        f"{GC_PREFIX}{A}": None,
        f"{GC_PREFIX}{B}": format_time(NOW),
        f"{GC_PREFIX}{C}": None,
    }
    assert plan.create == []
    assert any("in use again" in line for _level, line in plan.log)


@pytest.mark.parametrize(
    "pod",
    [serving_pod(A), serving_pod(A, pinned=True), serving_pod(A, phase="Pending")],
    ids=["bound", "pinned", "pending"],
)
def test_a_key_a_pod_on_the_node_reads_is_kept(pod: dict[str, Any]) -> None:
    plan = plan_gc(gc_input([node_with(cached(A, unused=2 * DAY))], pods=[pod]))
    assert notes_of(plan) == {f"{GC_PREFIX}{A}": None}
    assert plan.create == []


@pytest.mark.parametrize(
    "pod",
    [serving_pod(A, "n2"), serving_pod(A, phase="Succeeded"), serving_pod(A, phase="Failed")],
    ids=["other-node", "succeeded", "failed"],
)
def test_pods_elsewhere_or_finished_do_not_keep_a_key(pod: dict[str, Any]) -> None:
    plan = plan_gc(gc_input([node_with(cached(A, unused=2 * DAY))], pods=[pod]))
    (job,) = plan.create
    assert removes(job) == [A]


@pytest.mark.parametrize("state", ["Pending", "Filling"])
def test_a_key_being_filled_is_kept(state: str) -> None:
    keys = node_with(cached(A, state=state, unused=2 * DAY))
    plan = plan_gc(gc_input([keys], fill_jobs=[fill_job(A, "n1")]))
    assert notes_of(plan) == {f"{GC_PREFIX}{A}": None}
    assert plan.create == []


@pytest.mark.parametrize("state", ["Pending", "Filling"])
def test_a_filling_label_its_fill_job_left_behind_keeps_nothing(state: str) -> None:
    # A model deleted while it filled: its Job went with it, the label stayed. It was
    # kept for ever (found by tests/integration/test_cache_gc.py); now it goes as any
    # unreferenced key, the label with it, in two rounds after the retention.
    first = plan_gc(gc_input([node_with(cached(A, state=state))]))
    assert notes_of(first) == {f"{GC_PREFIX}{A}": format_time(NOW)}
    assert first.create == []
    plan = plan_gc(gc_input([node_with(cached(A, state=state, unused=DAY))]))
    (job,) = plan.create
    assert removes(job) == [A]
    assert plan.labels == {Holder.node("n1"): {L.node_cache_label(A): None}}


def test_a_key_with_a_fill_job_on_the_node_is_kept_one_elsewhere_does_not_count() -> None:
    nodes = [node_with(cached(A, unused=2 * DAY)), node_with(cached(A, unused=2 * DAY), name="n2")]
    plan = plan_gc(gc_input(nodes, fill_jobs=[fill_job(A, "n1")]))
    assert notes_of(plan, "n1") == {f"{GC_PREFIX}{A}": None}
    (job,) = plan.create
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "n2"}


def test_a_failed_fill_of_an_unreferenced_key_is_collected_too() -> None:
    plan = plan_gc(gc_input([node_with(cached(A, state="Failed", unused=2 * DAY))]))
    (job,) = plan.create
    assert removes(job) == [A]


# -- retention and the Job -----------------------------------------------------------


def test_a_key_unused_for_less_than_the_retention_stays() -> None:
    plan = plan_gc(gc_input([node_with(cached(A, unused=DAY - timedelta(seconds=1)))]))
    assert plan.create == []
    assert notes_of(plan) == {}


def test_a_key_unused_for_the_retention_is_removed_by_a_job_pinned_to_its_node() -> None:
    taints = [
        {"key": "dedicated", "value": "llm", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
    ]
    n1 = node_with(cached(A, unused=DAY), cached(B, unused=3 * DAY), cached(C), taints=taints)
    plan = plan_gc(gc_input([n1], [model(C)]))
    (job,) = plan.create
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == gc_job_name("n1")
    assert meta["namespace"] == "ops"
    assert meta["labels"][L.COMPONENT] == CACHE_GC
    assert meta["labels"][L.CACHE_NODE] == "n1"
    assert json.loads(meta["annotations"][GC_JOB_ANNOTATION]) == {"root": ROOT, "keys": [A, B]}
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == GC_DEADLINE_SECONDS
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == {L.COMPONENT: CACHE_GC, L.CACHE_NODE: "n1"}
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "n1"}
    assert pod["tolerations"] == [
        GPU_TOLERATION,
        {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert pod["volumes"] == [{"name": "cache", "hostPath": {"path": ROOT, "type": "Directory"}}]
    (container,) = pod["containers"]
    assert container["image"] == "op:1"
    assert container["command"] == ["mistral-operator", "cacheclean"]
    assert container["args"] == [
        "--root", CACHE_MOUNT, "--remove", A, "--remove", B,
        "--termination-log", "/dev/termination-log",
    ]  # fmt: skip
    assert container["volumeMounts"] == [{"name": "cache", "mountPath": CACHE_MOUNT}]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    # The labels go as the Job is created: no model places a group on them meanwhile.
    assert labels_of(plan) == {L.node_cache_label(A): None, L.node_cache_label(B): None}
    assert reasons(plan) == ["CacheRemoving"]
    assert "unused since" in plan.events[0].message
    assert "hf://mistralai/m@r1" in plan.events[0].message


def test_retention_zero_still_waits_one_round_after_the_key_is_first_seen_unused() -> None:
    settings = replace(SETTINGS, retention=timedelta(0))
    first = plan_gc(gc_input([node_with(cached(A))], settings=settings))
    assert first.create == []
    assert f"{GC_PREFIX}{A}" in notes_of(first)
    second = plan_gc(gc_input([node_with(cached(A, unused=timedelta(0)))], settings=settings))
    assert [removes(j) for j in second.create] == [[A]]


def test_one_job_per_node_and_root_the_root_waiting_longest_goes_first() -> None:
    n1 = node_with(
        cached(A, unused=2 * DAY, root="/b"),
        cached(B, unused=5 * DAY, root="/a/"),
        cached(C, unused=3 * DAY, root="/b"),
    )
    plan = plan_gc(gc_input([n1]))
    (job,) = plan.create
    assert removes(job) == [B]
    assert job["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"] == "/a"
    # The others keep their labels until their own Job.
    assert labels_of(plan) == {L.node_cache_label(B): None}


def test_a_running_gc_job_blocks_a_second_one_on_its_node_but_not_the_notes() -> None:
    first = plan_gc(gc_input([node_with(cached(A, unused=2 * DAY))]))
    running = copy.deepcopy(first.create[0]) | {"status": {"startTime": ago(timedelta(0))}}
    running["metadata"]["uid"] = "uid-gc"
    n1 = node_with(cached(A, state=None, unused=2 * DAY), cached(B, unused=2 * DAY), cached(C))
    plan = plan_gc(gc_input([n1], gc_jobs=[running]))
    assert plan.create == []
    assert plan.delete == []
    assert notes_of(plan) == {f"{GC_PREFIX}{C}": format_time(NOW)}


def test_a_job_being_deleted_also_blocks_its_node() -> None:
    first = plan_gc(gc_input([node_with(cached(A, unused=2 * DAY))]))
    job, _pod = finished(first.create[0], None)
    job["metadata"]["deletionTimestamp"] = ago(timedelta(0))
    plan = plan_gc(gc_input([node_with(cached(A, unused=2 * DAY))], gc_jobs=[job]))
    assert plan.create == []
    assert plan.delete == []


def test_nodes_that_cannot_run_a_pod_get_no_job() -> None:
    plan = plan_gc(gc_input([node_with(cached(A, unused=2 * DAY), ready=False)]))
    assert plan.create == []
    deleting = node_with(cached(A, unused=2 * DAY))
    deleting["metadata"]["deletionTimestamp"] = ago(timedelta(0))
    assert plan_gc(gc_input([deleting])).create == []


def test_a_key_without_its_own_root_uses_the_disk_root_else_waits() -> None:
    labels = {L.node_cache_label(A): "Failed"}
    notes = {f"{GC_PREFIX}{A}": ago(2 * DAY)}
    bare = node(labels=labels, notes=notes)
    plan = plan_gc(gc_input([bare]))
    assert plan.create == []
    assert any(level == logging.DEBUG and "root" in line for level, line in plan.log)
    with_disk = node_with((labels, notes), disk=(900 * GIB, 1000 * GIB), disk_root="/d")
    (job,) = plan_gc(gc_input([with_disk])).create
    assert job["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"] == "/d"


def test_a_gc_job_whose_node_is_gone_is_deleted() -> None:
    first = plan_gc(gc_input([node_with(cached(A, unused=2 * DAY))]))
    job = copy.deepcopy(first.create[0]) | {"status": {}}
    job["metadata"]["uid"] = "uid-gc"
    plan = plan_gc(gc_input([], gc_jobs=[job]))
    assert [(d.namespace, d.name, d.uid) for d in plan.delete] == [
        ("ops", gc_job_name("n1"), "uid-gc")
    ]


# -- the disk watermark ----------------------------------------------------------------


def test_over_the_watermark_unused_keys_go_least_recently_used_first_until_under_it() -> None:
    # 950 of 1000 GiB used; the watermark 85% needs 100 GiB freed.
    n1 = node_with(
        cached(A, unused=timedelta(hours=1), size=60 * GIB),
        cached(B, unused=timedelta(hours=3), size=60 * GIB),
        cached(C, unused=timedelta(hours=2), size=60 * GIB),
        cached(D, unused=timedelta(hours=5), size=60 * GIB, root="/other"),
        disk=(50 * GIB, 1000 * GIB),
    )
    plan = plan_gc(gc_input([n1]))
    (job,) = plan.create
    assert removes(job) == [B, C]  # oldest unused first; /other is another disk
    assert "over the 85% watermark" in plan.events[0].message


def test_lru_ties_on_unused_since_fall_back_to_ready_at() -> None:
    since = timedelta(hours=1)
    n1 = node_with(
        cached(A, unused=since, size=200 * GIB, ready=ago(2 * DAY)),
        cached(B, unused=since, size=200 * GIB, ready=ago(9 * DAY)),
        disk=(50 * GIB, 1000 * GIB),
    )
    (job,) = plan_gc(gc_input([n1])).create
    assert removes(job) == [B]


def test_under_pressure_bytes_a_retention_removal_frees_count_first() -> None:
    n1 = node_with(
        cached(A, unused=2 * DAY, size=150 * GIB),
        cached(B, unused=timedelta(hours=1), size=60 * GIB),
        disk=(50 * GIB, 1000 * GIB),
    )
    (job,) = plan_gc(gc_input([n1])).create
    assert removes(job) == [A]


def test_keys_of_unknown_size_do_not_count_as_freed() -> None:
    n1 = node_with(
        cached(A, unused=timedelta(hours=2), size=None),
        cached(B, unused=timedelta(hours=1), size=200 * GIB),
        disk=(50 * GIB, 1000 * GIB),
    )
    (job,) = plan_gc(gc_input([n1])).create
    assert removes(job) == [A, B]


def test_pressure_never_takes_a_protected_key_or_one_first_seen_unused_now() -> None:
    n1 = node_with(
        cached(A, unused=timedelta(hours=1)),
        cached(B),  # seen unused for the first time in this round
        cached(C, unused=timedelta(hours=2)),
        disk=(10 * GIB, 1000 * GIB),
    )
    plan = plan_gc(gc_input([n1], [model(C)]))
    (job,) = plan.create
    assert removes(job) == [A]


def test_under_the_watermark_nothing_goes_before_its_retention() -> None:
    n1 = node_with(cached(A, unused=timedelta(hours=1)), disk=(200 * GIB, 1000 * GIB))
    assert plan_gc(gc_input([n1])).create == []
    settings = replace(SETTINGS, watermark=0.75)
    (job,) = plan_gc(gc_input([n1], settings=settings)).create
    assert removes(job) == [A]


# -- a finished Job ---------------------------------------------------------------------


def started_job(*keys: tuple[dict[str, str], dict[str, str]]) -> dict[str, Any]:
    plan = plan_gc(gc_input([node_with(*keys)]))
    (job,) = plan.create
    return job


def test_a_completed_job_drops_what_it_removed_updates_the_disk_and_is_deleted() -> None:
    job = started_job(cached(A, unused=2 * DAY), cached(B, unused=2 * DAY))
    result = CleanResult(
        removed=(A,), absent=(B,), skipped=(), freed_bytes=100 * GIB,
        disk_free_bytes=600 * GIB, disk_total_bytes=1000 * GIB,
    )  # fmt: skip
    gc_job, gc_pod = finished(job, result, at=ago(timedelta(minutes=3)))
    after = node_with(
        cached(A, state=None, unused=2 * DAY),
        cached(B, state=None, unused=2 * DAY),
        disk=(500 * GIB, 1000 * GIB),
    )
    plan = plan_gc(gc_input([after], gc_jobs=[gc_job], gc_pods=[gc_pod]))
    assert [(d.name, d.uid) for d in plan.delete] == [(gc_job_name("n1"), "uid-gc")]
    notes = notes_of(plan)
    assert json.loads(notes.pop(L.NODE_CACHE_DISK) or "") == {
        "root": ROOT,
        "freeBytes": 600 * GIB,
        "totalBytes": 1000 * GIB,
        "at": ago(timedelta(minutes=3)),
    }
    assert notes == {
        L.node_cache_label(A): None,
        f"{GC_PREFIX}{A}": None,
        L.node_cache_label(B): None,
        f"{GC_PREFIX}{B}": None,
    }
    assert labels_of(plan) == {}  # dropped when the Job started
    assert plan.create == []  # the node's next Job waits for this one to be gone
    assert reasons(plan) == ["CacheRemoved"]
    assert "100.00 GiB freed" in plan.events[0].message


def test_labels_still_there_when_the_job_ends_are_dropped_then() -> None:
    job = started_job(cached(A, unused=2 * DAY))
    result = CleanResult(removed=(A,), absent=(), skipped=(), freed_bytes=1)
    gc_job, gc_pod = finished(job, result)
    plan = plan_gc(
        gc_input([node_with(cached(A, unused=2 * DAY))], gc_jobs=[gc_job], gc_pods=[gc_pod])
    )
    assert labels_of(plan) == {L.node_cache_label(A): None}


def test_keys_a_job_skipped_stay_for_the_next_round() -> None:
    job = started_job(cached(A, unused=2 * DAY), cached(B, unused=2 * DAY))
    result = CleanResult(
        removed=(),
        absent=(),
        skipped=(SkippedKey(A, "locked"), SkippedKey(B, "error", "EIO")),
        freed_bytes=0,
    )
    gc_job, gc_pod = finished(job, result, failed=True)
    after = node_with(cached(A, state=None, unused=2 * DAY), cached(B, state=None, unused=2 * DAY))
    plan = plan_gc(gc_input([after], gc_jobs=[gc_job], gc_pods=[gc_pod]))
    assert [d.name for d in plan.delete] == [gc_job_name("n1")]
    assert notes_of(plan) == {}
    assert labels_of(plan) == {}
    assert reasons(plan) == ["CacheGcFailed"]
    assert "EIO" in plan.events[0].message
    assert any("kept: a fill holds its lock" in line for _level, line in plan.log)
    # Next round, with the Job gone, they are tried again.
    again = plan_gc(gc_input([after]))
    assert [removes(j) for j in again.create] == [[A, B]]


@pytest.mark.parametrize(
    ("message", "reason", "says"),
    [
        ("", "DeadlineExceeded", "DeadlineExceeded"),
        ("Traceback ...\nOSError: boom", "", "OSError: boom"),
        ('{"result":"Failed","exitCode":2,"reason":"UsageError"}', "BackoffLimitExceeded", "Back"),
    ],
    ids=["deadline", "crash", "usage-error"],
)
def test_a_job_without_a_clean_result_is_deleted_and_its_keys_stay(
    message: str, reason: str, says: str
) -> None:
    job = started_job(cached(A, unused=2 * DAY))
    gc_job, gc_pod = finished(job, None, failed=True, message=message, reason=reason)
    after = node_with(cached(A, state=None, unused=2 * DAY))
    plan = plan_gc(gc_input([after], gc_jobs=[gc_job], gc_pods=[gc_pod]))
    assert [d.name for d in plan.delete] == [gc_job_name("n1")]
    assert notes_of(plan) == {}
    assert reasons(plan) == ["CacheGcFailed"]
    assert says in plan.events[0].message
    assert A in plan.events[0].message


def test_a_job_whose_pod_is_gone_counts_as_without_result() -> None:
    job = started_job(cached(A, unused=2 * DAY))
    gc_job, _pod = finished(job, None, failed=True)
    plan = plan_gc(gc_input([node_with(cached(A, unused=2 * DAY))], gc_jobs=[gc_job]))
    assert [d.name for d in plan.delete] == [gc_job_name("n1")]
    assert "no pod" in plan.events[0].message


def test_a_fill_that_may_have_found_the_directory_before_it_went_is_redone() -> None:
    """A fill Job started while the clean ran may have exited 0 on the directory it saw."""
    job = started_job(cached(A, unused=2 * DAY))
    result = CleanResult(removed=(A,), absent=(), skipped=(), freed_bytes=1)
    gc_job, gc_pod = finished(job, result, at=ago(timedelta(minutes=3)))
    doubtful = fill_job(A, complete=True, started=ago(timedelta(minutes=4)))
    after = node_with(cached(A, state="Ready", unused=2 * DAY))
    plan = plan_gc(
        gc_input([after], [model(A)], gc_jobs=[gc_job], gc_pods=[gc_pod], fill_jobs=[doubtful])
    )
    assert sorted((d.namespace, d.name) for d in plan.delete) == [
        ("ops", gc_job_name("n1")),
        ("serving", doubtful["metadata"]["name"]),
    ]
    assert labels_of(plan) == {L.node_cache_label(A): None}
    assert notes_of(plan)[L.node_cache_label(A)] is None


def test_a_fill_that_started_after_the_clean_is_left_to_its_model() -> None:
    job = started_job(cached(A, unused=2 * DAY))
    result = CleanResult(removed=(A,), absent=(), skipped=(), freed_bytes=1)
    gc_job, gc_pod = finished(job, result, at=ago(timedelta(minutes=3)))
    later = fill_job(A, complete=True, started=ago(timedelta(minutes=1)))
    after = node_with(cached(A, state="Ready", unused=2 * DAY))
    plan = plan_gc(
        gc_input([after], [model(A)], gc_jobs=[gc_job], gc_pods=[gc_pod], fill_jobs=[later])
    )
    assert [d.name for d in plan.delete] == [gc_job_name("n1")]
    assert labels_of(plan) == {}
    assert notes_of(plan) == {f"{GC_PREFIX}{A}": None}


# -- models whose next key is not known yet --------------------------------------------


def test_a_model_not_yet_reconciled_defers_removals_for_a_while() -> None:
    n1 = node_with(cached(A, unused=2 * DAY))
    fresh = model(name="new", observed=None)
    edited = model(B, name="edited", generation=3, observed=2)
    plan = plan_gc(gc_input([n1], [fresh, edited]))
    assert plan.create == []
    assert plan.unsettled_since == {"uid-new": NOW, "uid-edited": NOW}
    assert any("serving/edited, serving/new not reconciled" in line for _l, line in plan.log)
    # Still lagging within the grace: still deferred, the first sighting kept.
    later = NOW + UNSETTLED_GRACE - timedelta(seconds=1)
    plan = plan_gc(gc_input([n1], [fresh], now=later, unsettled_since=plan.unsettled_since))
    assert plan.create == []
    assert plan.unsettled_since == {"uid-new": NOW}
    # Past the grace it no longer holds anything back.
    plan = plan_gc(
        gc_input([n1], [fresh], now=NOW + UNSETTLED_GRACE, unsettled_since=plan.unsettled_since)
    )
    assert [removes(j) for j in plan.create] == [[A]]


def test_settled_and_deleting_models_defer_nothing() -> None:
    deleting = model(name="gone", generation=2, observed=1)
    deleting["metadata"]["deletionTimestamp"] = ago(timedelta(0))
    plan = plan_gc(gc_input([node_with(cached(A, unused=2 * DAY))], [model(B), deleting]))
    assert [removes(j) for j in plan.create] == [[A]]
    assert plan.unsettled_since == {}


# -- rounds one after another ------------------------------------------------------------


def holder_of(obj: dict[str, Any]) -> Holder:
    """A node, or (with a namespace) a claim."""
    meta = obj["metadata"]
    if "namespace" in meta:
        return Holder.claim(meta["namespace"], meta["name"])
    return Holder.node(meta["name"])


def execute(holders: list[dict[str, Any]], plan: GcPlan) -> None:
    """What the shell's writes do to the nodes or claims."""
    for obj in holders:
        meta, holder = obj["metadata"], holder_of(obj)
        for field_name, patch in (
            ("annotations", plan.annotations.get(holder, {})),
            ("labels", plan.labels.get(holder, {})),
        ):
            for key, value in patch.items():
                if value is None:
                    meta[field_name].pop(key, None)
                else:
                    meta[field_name][key] = value


def test_a_deleted_model_s_cache_goes_after_the_retention_and_leaves_no_trace() -> None:
    nodes = [node_with(cached(A), disk=(500 * GIB, 1000 * GIB))]
    models = [model(A)]
    assert plan_gc(gc_input(nodes, models)).annotations == {}
    # The model is deleted: the key is noted, then kept for a day.
    plan = plan_gc(gc_input(nodes, []))
    execute(nodes, plan)
    for hours in (1, 23):
        plan = plan_gc(gc_input(nodes, [], now=NOW + timedelta(hours=hours)))
        assert plan.create == []
        assert plan.annotations == {}
    plan = plan_gc(gc_input(nodes, [], now=NOW + DAY))
    execute(nodes, plan)
    (job,) = plan.create
    result = CleanResult(
        removed=(A,), absent=(), skipped=(), freed_bytes=100 * GIB,
        disk_free_bytes=600 * GIB, disk_total_bytes=1000 * GIB,
    )  # fmt: skip
    gc_job, gc_pod = finished(job, result)
    plan = plan_gc(gc_input(nodes, [], gc_jobs=[gc_job], gc_pods=[gc_pod], now=NOW + DAY))
    execute(nodes, plan)
    meta = nodes[0]["metadata"]
    assert not [k for k in meta["labels"] if k.startswith(L.NODE_CACHE_PREFIX)]
    assert list(meta["annotations"]) == [L.NODE_CACHE_DISK]
    assert json.loads(meta["annotations"][L.NODE_CACHE_DISK])["freeBytes"] == 600 * GIB
    # With the Job gone nothing more happens.
    assert plan_gc(gc_input(nodes, [], now=NOW + 2 * DAY)) == GcPlan()


def test_malformed_annotations_are_read_as_absent() -> None:
    notes = {
        L.node_cache_label(A): "not json",
        f"{GC_PREFIX}{A}": "yesterday",
        L.NODE_CACHE_DISK: json.dumps({"root": "relative", "freeBytes": 1, "totalBytes": 2}),
    }
    plan = plan_gc(gc_input([node(labels={L.node_cache_label(A): "Ready"}, notes=notes)]))
    assert plan.create == []
    assert notes_of(plan) == {f"{GC_PREFIX}{A}": format_time(NOW)}


def test_render_event_is_a_core_event_about_the_node_in_the_default_namespace() -> None:
    # Not the GC namespace: the API server takes an event about a node (no namespace of
    # its own) only in `default` (found by tests/integration/test_cache_gc.py).
    event = render_event(
        GcEvent(Holder.node("n1"), "uid-n1", "Normal", "CacheRemoved", "x" * 2000), NOW
    )
    assert event["metadata"] == {"generateName": "n1.", "namespace": "default"}
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "n1",
        "uid": "uid-n1",
    }
    assert (event["type"], event["reason"], len(event["message"])) == (
        "Normal",
        "CacheRemoved",
        1024,
    )
    assert event["firstTimestamp"] == event["lastTimestamp"] == format_time(NOW)


# -- the shell --------------------------------------------------------------------------


class FakeApi:
    """Lists what it was given; records every write in order."""

    def __init__(self, objects: dict[tuple[str, str | None, str], list[dict[str, Any]]]) -> None:
        self.objects = objects
        self.calls: list[tuple[Any, ...]] = []
        self.fail: BaseException | None = None

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        if self.fail is not None:
            raise self.fail
        self.calls.append(("list", kind, namespace, label_selector))
        return copy.deepcopy(self.objects.get((kind, namespace, label_selector), []))

    def delete(
        self, api_version: str, kind: str, namespace: str | None, name: str, **kw: Any
    ) -> bool:
        self.calls.append(("delete", api_version, kind, namespace, name, kw.get("uid")))
        return True

    def patch_annotations(self, *args: Any) -> None:
        self.calls.append(("annotate", *args))

    def patch_labels(self, *args: Any) -> None:
        self.calls.append(("label", *args))

    def ensure(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        self.calls.append(("ensure", obj["kind"], meta.get("name"), meta.get("namespace")))
        return True


def test_a_round_lists_fresh_state_and_writes_in_a_safe_order() -> None:
    fill_sel = f"{L.COMPONENT}={L.CACHE_FILL}"
    gc_sel = f"{L.COMPONENT}={CACHE_GC}"
    first = plan_gc(gc_input([node_with(cached(B, unused=2 * DAY))]))
    result = CleanResult(removed=(B,), absent=(), skipped=(), freed_bytes=1)
    gc_job, gc_pod = finished(first.create[0], result)
    n1 = node_with(cached(A, unused=2 * DAY), cached(B, state=None, unused=2 * DAY))
    n2 = node_with(cached(A, unused=2 * DAY), name="n2")
    api = FakeApi(
        {
            ("Node", None, ""): [n1, n2],
            ("PersistentVolumeClaim", None, ""): [],
            ("MistralModel", None, ""): [model(C)],
            ("Pod", None, L.MODEL): [serving_pod(C)],
            ("Job", None, fill_sel): [],
            ("Job", None, gc_sel): [gc_job],
            ("Pod", None, gc_sel): [gc_pod],
        }
    )
    gc = shell_gc.CacheGc(api, SETTINGS)  # type: ignore[arg-type]
    plan = gc.run_once()
    lists = [c[1:] for c in api.calls if c[0] == "list"]
    assert lists == [
        ("Node", None, ""),
        ("PersistentVolumeClaim", None, ""),
        ("MistralModel", None, ""),
        ("Pod", None, L.MODEL),
        ("Job", None, fill_sel),
        ("Job", None, gc_sel),
        ("Pod", None, gc_sel),
    ]
    writes = [c[0] for c in api.calls if c[0] != "list"]
    # Deletes, then annotations, then labels, then the new Job, then events.
    assert writes == ["delete", "annotate", "label", "ensure", "ensure", "ensure"]
    assert ("label", "v1", "Node", None, "n2", {L.node_cache_label(A): None}) in api.calls
    # The Job in the GC namespace; events about nodes in `default`, the only namespace
    # the API server takes them in.
    assert [c[1:4] for c in api.calls if c[0] == "ensure"] == [
        ("Job", gc_job_name("n2"), "ops"),
        ("Event", None, "default"),
        ("Event", None, "default"),
    ]
    assert plan.unsettled_since == {}


def test_the_loop_remembers_lagging_models_between_rounds() -> None:
    api = FakeApi({("MistralModel", None, ""): [model(name="new", observed=None)]})
    gc = shell_gc.CacheGc(api, SETTINGS)  # type: ignore[arg-type]
    gc.run_once()
    first = gc.unsettled_since["uid-new"]
    gc.run_once()
    assert gc.unsettled_since == {"uid-new": first}


def test_a_failed_round_is_a_warning_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi({})
    gc = shell_gc.CacheGc(api, replace(SETTINGS, interval_seconds=0.01))  # type: ignore[arg-type]
    api.fail = urllib3.exceptions.ProtocolError("connection reset")

    async def main() -> None:
        task = shell_gc.start(gc)
        await asyncio.sleep(0.05)
        api.fail = ValueError("a bug")
        await asyncio.sleep(0.05)
        api.fail = None
        await asyncio.sleep(0.05)
        await shell_gc.stop(task)
        assert task.cancelled()

    with caplog.at_level(logging.WARNING, logger=shell_gc.log.name):
        asyncio.run(main())
    transient = [r for r in caplog.records if "connection reset" in r.getMessage()]
    assert transient
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in transient)
    bugs = [r for r in caplog.records if r.exc_info is not None]
    assert bugs
    assert all(r.levelno == logging.WARNING for r in bugs)
    assert any(c[0] == "list" for c in api.calls)  # rounds ran again after the failures


def test_stop_without_a_task_is_a_no_op() -> None:
    asyncio.run(shell_gc.stop(None))


# -- options ----------------------------------------------------------------------------


def test_run_options_and_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "mistral-system")
    args = build_parser().parse_args(["run"])
    assert args.cache_gc_retention_seconds == 86400
    assert args.cache_disk_watermark == 0.85
    assert args.cache_gc_namespace == "mistral-system"
    assert args.cache_gc_interval_seconds == 60
    monkeypatch.delenv("POD_NAMESPACE")
    args = build_parser().parse_args(
        ["run", "--cache-disk-watermark", "1", "--cache-gc-retention-seconds", "1e+06"]
    )
    assert args.cache_gc_namespace == "default"
    assert (args.cache_disk_watermark, args.cache_gc_retention_seconds) == (1.0, 1e6)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_a_watermark_outside_0_to_1_is_refused(value: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--cache-disk-watermark", value])
