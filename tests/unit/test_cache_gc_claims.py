"""Garbage collection of the keys SharedPVC claims hold: the same decisions as for nodes
(test_cache_gc.py, whose fixtures these tests use), with what differs for a claim: which
pods and fill Jobs keep its keys, its Job (in the claim's namespace, not pinned, the
claim mounted at the keys' directory), its marks and its events."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from mistral_operator.cachefill.result import CleanResult
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.cache_gc import (
    CACHE_GC,
    GC_JOB_ANNOTATION,
    GC_PREFIX,
    GcEvent,
    GcPlan,
    Holder,
    gc_job_name,
    plan_gc,
    render_event,
)
from mistral_operator.core.fill_jobs import CACHE_MOUNT
from mistral_operator.core.render import GPU_TOLERATION
from mistral_operator.core.timestamps import format_time
from mistral_operator.shell import cache_gc as shell_gc
from tests.unit.test_cache_gc import (
    DAY,
    GIB,
    NOW,
    SETTINGS,
    A,
    B,
    C,
    FakeApi,
    ago,
    cached,
    execute,
    fill_job,
    finished,
    gc_input,
    marks,
    model,
    node_with,
    removes,
    serving_pod,
)

NS = "serving"  # the namespace of test_cache_gc's models and pods
CLAIM = "weights"
HOLDER = Holder.claim(NS, CLAIM)
SUB = "/mistral"  # the root a fill with cache.pvc.subPath "mistral" records


# -- fixtures ------------------------------------------------------------------------


def claim_with(
    *keys: tuple[dict[str, str], dict[str, str]],
    name: str = CLAIM,
    namespace: str = NS,
    phase: str = "Bound",
    disk: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A PersistentVolumeClaim with the marks fills and earlier rounds left on it."""
    labels, notes = marks(*keys, disk=disk, disk_root=SUB)
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "labels": labels,
            "annotations": notes,
        },
        "spec": {"accessModes": ["ReadWriteMany"], "volumeName": f"pv-{name}"},
        "status": {"phase": phase},
    }


def on_claim(key: str, **kw: Any) -> tuple[dict[str, str], dict[str, str]]:
    """A key filled into the claim's ``/mistral`` directory."""
    return cached(key, root=kw.pop("root", SUB), **kw)


def claim_pod(
    key: str, claim: str = CLAIM, *, namespace: str = NS, phase: str = "Running"
) -> dict[str, Any]:
    """A SharedPVC serving pod: it reads ``key`` from the claim it mounts read-only."""
    pod = serving_pod(key, "n9", phase=phase)
    pod["metadata"]["namespace"] = namespace
    pod["spec"]["volumes"] = [
        {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    ]
    return pod


def claim_fill(
    key: str,
    claim: str = CLAIM,
    *,
    namespace: str = NS,
    complete: bool = False,
    started: str | None = None,
) -> dict[str, Any]:
    """A SharedPVC fill Job: labelled with its claim, pinned to no node."""
    job = fill_job(key, complete=complete, started=started)
    labels = job["metadata"]["labels"]
    del labels[L.CACHE_NODE]
    labels[L.CACHE_CLAIM] = claim
    job["metadata"]["namespace"] = namespace
    return job


def notes_of(plan: GcPlan, holder: Holder = HOLDER) -> dict[str, str | None]:
    return plan.annotations.get(holder, {})


def labels_of(plan: GcPlan, holder: Holder = HOLDER) -> dict[str, str | None]:
    return plan.labels.get(holder, {})


def claim_plan(*claims: dict[str, Any], **kw: Any) -> GcPlan:
    return plan_gc(gc_input(kw.pop("nodes", []), kw.pop("models", None), claims=list(claims), **kw))


def claim_gc_job(*keys: tuple[dict[str, str], dict[str, str]]) -> dict[str, Any]:
    """The GC Job a round starts for the claim's ``keys``."""
    (job,) = claim_plan(claim_with(*keys)).create
    return job


# -- what keeps a claim's key ----------------------------------------------------------


def test_a_claim_s_unreferenced_key_is_noted_unused_on_the_claim_not_removed_that_round() -> None:
    plan = claim_plan(claim_with(on_claim(A)), models=[model(B)])
    assert plan.annotations == {HOLDER: {f"{GC_PREFIX}{A}": format_time(NOW)}}
    assert plan.create == []


def test_a_claim_key_named_by_a_model_s_key_or_last_good_key_is_kept() -> None:
    claim = claim_with(on_claim(A, unused=2 * DAY), on_claim(B, unused=2 * DAY), on_claim(C))
    plan = claim_plan(claim, models=[model(A, name="x"), model(None, B, name="y")])
    assert notes_of(plan) == {
        f"{GC_PREFIX}{A}": None,
        f"{GC_PREFIX}{B}": None,
        f"{GC_PREFIX}{C}": format_time(NOW),
    }
    assert plan.create == []


@pytest.mark.parametrize("phase", ["Running", "Pending"])
def test_a_key_an_unfinished_pod_mounting_the_claim_reads_is_kept(phase: str) -> None:
    plan = claim_plan(claim_with(on_claim(A, unused=2 * DAY)), pods=[claim_pod(A, phase=phase)])
    assert notes_of(plan) == {f"{GC_PREFIX}{A}": None}
    assert plan.create == []


@pytest.mark.parametrize(
    "pod",
    [
        claim_pod(A, "other"),
        claim_pod(A, namespace="elsewhere"),
        claim_pod(A, phase="Succeeded"),
        serving_pod(A, "n9"),
    ],
    ids=["other-claim", "same-name-other-namespace", "finished", "mounts-no-claim"],
)
def test_pods_that_do_not_read_the_claim_do_not_keep_its_key(pod: dict[str, Any]) -> None:
    plan = claim_plan(claim_with(on_claim(A, unused=2 * DAY)), pods=[pod])
    (job,) = plan.create
    assert removes(job) == [A]


def test_a_fill_job_for_the_claim_and_key_keeps_it() -> None:
    claim = claim_with(on_claim(A, state="Filling", unused=2 * DAY))
    plan = claim_plan(claim, fill_jobs=[claim_fill(A)])
    assert notes_of(plan) == {f"{GC_PREFIX}{A}": None}
    assert plan.create == []


@pytest.mark.parametrize(
    "job",
    [claim_fill(A, "other"), claim_fill(A, namespace="elsewhere"), fill_job(A, "n9")],
    ids=["other-claim", "same-name-other-namespace", "a-node-s-fill"],
)
def test_fill_jobs_of_other_targets_do_not_keep_the_claim_s_key(job: dict[str, Any]) -> None:
    plan = claim_plan(claim_with(on_claim(A, state="Filling", unused=2 * DAY)), fill_jobs=[job])
    (gc_job,) = plan.create
    assert removes(gc_job) == [A]


# -- retention and the claim's Job -------------------------------------------------------


def test_a_claim_key_is_noted_then_removed_after_the_retention_by_a_job_in_its_namespace() -> None:
    claim = claim_with(on_claim(A))
    first = claim_plan(claim)
    execute([claim], first)
    for hours in (1, 23):
        later = claim_plan(claim, now=NOW + timedelta(hours=hours))
        assert (later.create, later.annotations) == ([], {})
    plan = claim_plan(claim, nodes=[node_with()], now=NOW + DAY)
    (job,) = plan.create
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == gc_job_name(f"{NS}/{CLAIM}")
    assert meta["name"] != gc_job_name(CLAIM)  # a node of the same name has its own
    assert meta["namespace"] == NS  # a pod mounts claims of its own namespace only
    labels = {L.COMPONENT: CACHE_GC, L.CACHE_CLAIM: CLAIM}
    assert meta["labels"] == labels | {L.MANAGED_BY: "mistral-operator"}
    assert spec["template"]["metadata"]["labels"] == labels
    assert json.loads(meta["annotations"][GC_JOB_ANNOTATION]) == {"root": SUB, "keys": [A]}
    pod = spec["template"]["spec"]
    assert "nodeSelector" not in pod  # any node reaches the claim
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert pod["volumes"] == [{"name": "cache", "persistentVolumeClaim": {"claimName": CLAIM}}]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [
        {"name": "cache", "mountPath": CACHE_MOUNT, "subPath": "mistral"}
    ]
    assert container["command"] == ["mistral-operator", "cacheclean"]
    assert container["args"] == [
        "--root", CACHE_MOUNT, "--remove", A, "--termination-log", "/dev/termination-log",
    ]  # fmt: skip
    # The claim's label goes as the Job is made; the node's marks are not touched.
    assert plan.labels == {HOLDER: {L.node_cache_label(A): None}}
    assert [(e.holder, e.uid, e.reason) for e in plan.events] == [
        (HOLDER, f"uid-{NS}-{CLAIM}", "CacheRemoving")
    ]


def test_keys_at_the_root_of_the_volume_are_cleaned_without_a_sub_path() -> None:
    job = claim_gc_job(on_claim(A, unused=2 * DAY, root="/"))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["volumeMounts"] == [{"name": "cache", "mountPath": CACHE_MOUNT}]


def test_claims_of_the_same_name_in_two_namespaces_get_a_job_each_in_their_own() -> None:
    plan = claim_plan(
        claim_with(on_claim(A, unused=2 * DAY)),
        claim_with(on_claim(A, unused=2 * DAY), namespace="elsewhere"),
        pods=[claim_pod(A, namespace="elsewhere")],
        models=[model(B)],
    )
    assert notes_of(plan, Holder.claim("elsewhere", CLAIM)) == {f"{GC_PREFIX}{A}": None}
    (job,) = plan.create
    assert (job["metadata"]["namespace"], removes(job)) == (NS, [A])


@pytest.mark.parametrize("phase", ["Pending", "Lost"])
def test_a_claim_that_is_not_bound_gets_no_removal_but_its_notes(phase: str) -> None:
    plan = claim_plan(claim_with(on_claim(A, unused=2 * DAY), on_claim(B), phase=phase))
    assert plan.create == []
    assert notes_of(plan) == {f"{GC_PREFIX}{B}": format_time(NOW)}


def test_a_claim_being_deleted_gets_no_removal() -> None:
    claim = claim_with(on_claim(A, unused=2 * DAY))
    claim["metadata"]["deletionTimestamp"] = ago(timedelta(0))
    assert claim_plan(claim).create == []


def test_a_model_not_yet_reconciled_defers_a_claim_s_removals_too() -> None:
    plan = claim_plan(
        claim_with(on_claim(A, unused=2 * DAY)), models=[model(name="new", observed=None)]
    )
    assert plan.create == []
    assert any(f"removals on claim {NS}/{CLAIM} wait" in line for _level, line in plan.log)


def test_a_running_gc_job_of_the_claim_blocks_a_second_one_not_a_node_s() -> None:
    running = claim_gc_job(on_claim(A, unused=2 * DAY)) | {"status": {}}
    running["metadata"]["uid"] = "uid-gc"
    claim = claim_with(on_claim(A, state=None, unused=2 * DAY), on_claim(B, unused=2 * DAY))
    plan = claim_plan(claim, nodes=[node_with(cached(C, unused=2 * DAY))], gc_jobs=[running])
    (job,) = plan.create
    assert (job["metadata"]["labels"].get(L.CACHE_NODE), removes(job)) == ("n1", [C])
    assert plan.delete == []


# -- the disk watermark -------------------------------------------------------------------


def test_over_the_watermark_every_directory_of_the_claim_counts_on_its_one_volume() -> None:
    # 950 of 1000 GiB used: 100 GiB must go. A node's disk is per root; a claim's keys
    # share one volume, whichever subPath they were filled under.
    claim = claim_with(
        on_claim(A, unused=timedelta(hours=1), size=60 * GIB),
        on_claim(B, unused=timedelta(hours=3), size=60 * GIB, root="/other"),
        on_claim(C, unused=timedelta(hours=2), size=60 * GIB),
        disk=(50 * GIB, 1000 * GIB),
    )
    plan = claim_plan(claim)
    (job,) = plan.create  # one root at a time: the one waiting longest first
    assert removes(job) == [B]
    assert job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["subPath"] == (
        "other"
    )
    assert "over the 85% watermark" in plan.events[0].message
    assert "hf://mistralai/m@r1" in plan.events[0].message
    # C, chosen too, keeps its label until its own Job.
    assert labels_of(plan) == {L.node_cache_label(B): None}


# -- a finished Job ---------------------------------------------------------------------


def test_a_finished_job_clears_the_claim_s_marks_updates_its_disk_and_is_deleted() -> None:
    job = claim_gc_job(on_claim(A, unused=2 * DAY), on_claim(B, unused=2 * DAY))
    result = CleanResult(
        removed=(A,), absent=(B,), skipped=(), freed_bytes=100 * GIB,
        disk_free_bytes=600 * GIB, disk_total_bytes=1000 * GIB,
    )  # fmt: skip
    gc_job, gc_pod = finished(job, result, at=ago(timedelta(minutes=3)))
    after = claim_with(
        on_claim(A, state=None, unused=2 * DAY),
        on_claim(B, state=None, unused=2 * DAY),
        disk=(500 * GIB, 1000 * GIB),
    )
    plan = claim_plan(after, gc_jobs=[gc_job], gc_pods=[gc_pod])
    assert [(d.namespace, d.name, d.uid) for d in plan.delete] == [
        (NS, gc_job_name(f"{NS}/{CLAIM}"), "uid-gc")
    ]
    notes = notes_of(plan)
    assert json.loads(notes.pop(L.NODE_CACHE_DISK) or "") == {
        "root": SUB,
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
    assert plan.create == []
    assert [(e.holder, e.reason) for e in plan.events] == [(HOLDER, "CacheRemoved")]


def test_a_completed_fill_of_the_claim_that_raced_the_clean_is_deleted() -> None:
    job = claim_gc_job(on_claim(A, unused=2 * DAY))
    result = CleanResult(removed=(A,), absent=(), skipped=(), freed_bytes=1)
    gc_job, gc_pod = finished(job, result, at=ago(timedelta(minutes=3)))
    doubtful = claim_fill(A, complete=True, started=ago(timedelta(minutes=4)))
    after = claim_with(on_claim(A, state="Ready", unused=2 * DAY))
    plan = claim_plan(
        after, models=[model(A)], gc_jobs=[gc_job], gc_pods=[gc_pod], fill_jobs=[doubtful]
    )
    assert sorted((d.namespace, d.name) for d in plan.delete) == [
        (NS, gc_job_name(f"{NS}/{CLAIM}")),
        (NS, doubtful["metadata"]["name"]),
    ]
    assert labels_of(plan) == {L.node_cache_label(A): None}


def test_a_gc_job_whose_claim_is_gone_is_deleted() -> None:
    job = claim_gc_job(on_claim(A, unused=2 * DAY)) | {"status": {}}
    job["metadata"]["uid"] = "uid-gc"
    plan = claim_plan(claim_with(name="another"), gc_jobs=[job])
    assert [(d.namespace, d.name, d.uid, d.reason) for d in plan.delete] == [
        (NS, gc_job_name(f"{NS}/{CLAIM}"), "uid-gc", f"claim {NS}/{CLAIM} is gone")
    ]


def test_a_deleted_model_s_key_leaves_the_claim_without_a_trace() -> None:
    claims = [claim_with(on_claim(A), disk=(500 * GIB, 1000 * GIB))]
    execute(claims, claim_plan(*claims))  # no model: noted unused
    plan = claim_plan(*claims, now=NOW + DAY)
    execute(claims, plan)
    (job,) = plan.create
    result = CleanResult(
        removed=(A,), absent=(), skipped=(), freed_bytes=100 * GIB,
        disk_free_bytes=600 * GIB, disk_total_bytes=1000 * GIB,
    )  # fmt: skip
    gc_job, gc_pod = finished(job, result)
    execute(claims, claim_plan(*claims, gc_jobs=[gc_job], gc_pods=[gc_pod], now=NOW + DAY))
    meta = claims[0]["metadata"]
    assert meta["labels"] == {}
    assert list(meta["annotations"]) == [L.NODE_CACHE_DISK]
    assert claim_plan(*claims, now=NOW + 2 * DAY) == GcPlan()


# -- events -------------------------------------------------------------------------------


def test_an_event_about_a_claim_is_in_the_claim_s_namespace_and_names_it() -> None:
    event = render_event(GcEvent(HOLDER, "uid-c", "Warning", "CacheGcFailed", "boom"), NOW)
    assert event["metadata"] == {"generateName": f"{CLAIM}.", "namespace": NS}
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "name": CLAIM,
        "namespace": NS,
        "uid": "uid-c",
    }
    assert (event["type"], event["reason"], event["message"]) == (
        "Warning",
        "CacheGcFailed",
        "boom",
    )


# -- the shell ----------------------------------------------------------------------------


def claim_api(claim: dict[str, Any]) -> FakeApi:
    return FakeApi({("PersistentVolumeClaim", None, ""): [claim]})


def test_a_round_patches_the_claim_and_makes_its_job_and_events_in_its_namespace() -> None:
    api = claim_api(claim_with(on_claim(A, unused=2 * DAY), on_claim(B)))
    shell_gc.CacheGc(api, SETTINGS).run_once()  # type: ignore[arg-type]
    writes = [c for c in api.calls if c[0] != "list"]
    claim_at = ("v1", "PersistentVolumeClaim", NS, CLAIM)
    (annotate, *rest) = writes
    assert annotate[:5] == ("annotate", *claim_at)
    assert list(annotate[5]) == [f"{GC_PREFIX}{B}"]  # noted unused, now
    assert rest == [
        ("label", *claim_at, {L.node_cache_label(A): None}),
        ("ensure", "Job", gc_job_name(f"{NS}/{CLAIM}"), NS),
        ("ensure", "Event", None, NS),
    ]


class RefusingApi(FakeApi):
    """Answers writes as the API server does once a claim, or its namespace, goes."""

    def __init__(self, claim: dict[str, Any], *, patch: int = 0, create: str = "") -> None:
        super().__init__({("PersistentVolumeClaim", None, ""): [claim]})
        self.patch_status, self.create_body = patch, create

    def patch_annotations(self, *args: Any) -> None:
        if self.patch_status:
            raise ApiException(status=self.patch_status)
        super().patch_annotations(*args)

    def patch_labels(self, *args: Any) -> None:
        if self.patch_status:
            raise ApiException(status=self.patch_status)
        super().patch_labels(*args)

    def ensure(self, obj: dict[str, Any]) -> bool:
        if self.create_body:
            error = ApiException(status=403)
            error.body = self.create_body
            raise error
        return super().ensure(obj)


TERMINATING = json.dumps(
    {
        "code": 403,
        "reason": "Forbidden",
        "details": {"causes": [{"reason": "NamespaceTerminating"}]},
    }
)


def test_a_claim_deleted_before_its_patch_or_a_namespace_being_deleted_is_passed_over() -> None:
    claim = claim_with(on_claim(A, unused=2 * DAY), on_claim(B))
    gone = RefusingApi(claim, patch=404)
    shell_gc.CacheGc(gone, SETTINGS).run_once()  # type: ignore[arg-type]
    assert [c[0] for c in gone.calls if c[0] != "list"] == ["ensure", "ensure"]
    closing = RefusingApi(claim, create=TERMINATING)
    shell_gc.CacheGc(closing, SETTINGS).run_once()  # type: ignore[arg-type]
    assert [c[0] for c in closing.calls if c[0] != "list"] == ["annotate", "label"]


@pytest.mark.parametrize(
    ("patch", "create"), [(403, ""), (0, json.dumps({"code": 403, "reason": "Forbidden"}))]
)
def test_other_refusals_still_fail_the_round(patch: int, create: str) -> None:
    api = RefusingApi(claim_with(on_claim(A, unused=2 * DAY)), patch=patch, create=create)
    with pytest.raises(ApiException):
        shell_gc.CacheGc(api, SETTINGS).run_once()  # type: ignore[arg-type]
