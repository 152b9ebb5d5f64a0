"""The node-local weight cache in the pure core: fills per node, their states, placement on
Ready nodes only, spares, retries, and what status, labels and events say."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from mistral_operator.cachefill.codes import ExitCode
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.cache_plan import retry_backoff
from mistral_operator.core.fill_jobs import (
    FAIL_JOB_EXIT_CODES,
    FillSettings,
    fill_job_name,
    parse_progress,
)
from mistral_operator.core.inventory import GpuNode, pinned_node
from mistral_operator.core.reconcile import Observed, Plan, plan_reconcile
from mistral_operator.core.timestamps import format_time
from tests.unit.reconcile_fixtures import (
    NOW,
    as_job,
    cache_key_of,
    claim_object,
    cond,
    example,
    failed_result,
    inventory,
    job_pod,
    jobs_of,
    multinode_spec,
    observed,
    pods_of,
    ready_result,
)

MODEL = "mistral-small-4"


def quickstart(**extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    s.update(extra)
    return s


def cold(spec: dict[str, Any], **kw: Any) -> Observed:
    """A snapshot of a cluster whose nodes hold no weights yet."""
    return observed(spec, warm=False, **kw)


def key_of(spec: dict[str, Any]) -> str:
    key = cache_key_of(spec)
    assert key is not None
    return key


def ready_on(inv: dict[str, GpuNode], key: str, nodes: list[str]) -> dict[str, GpuNode]:
    label = L.node_cache_label(key)
    return {
        n: replace(node, labels={**node.labels, label: "Ready"}) if n in nodes else node
        for n, node in inv.items()
    }


def with_fills(
    obs: Observed, jobs: list[dict[str, Any]], pods: list[dict[str, Any]], **kw: Any
) -> Observed:
    return replace(obs, fill_jobs=jobs, fill_pods=pods, **kw)


def node_status(plan: Plan, node: str) -> dict[str, Any]:
    return next(n for n in plan.status["cache"]["nodes"] if n["node"] == node)


def test_a_cold_cluster_fills_the_node_a_group_needs_and_places_nothing_yet() -> None:
    plan = plan_reconcile(cold(quickstart()))
    assert pods_of(plan) == []
    (job,) = jobs_of(plan)
    node = job["metadata"]["labels"][L.CACHE_NODE]
    key = key_of(quickstart())
    assert job["metadata"]["name"] == fill_job_name(MODEL, node, key)
    assert plan.node_labels == [(node, {L.node_cache_label(key): "Pending"})]
    cache = plan.status["cache"]
    assert (cache["state"], cache["pendingNodes"], cache["readyNodes"]) == ("Filling", 1, 0)
    assert cache["message"].startswith(f"1 group(s) wait for weights on {node}")
    assert node_status(plan, node) == {
        "node": node,
        "state": "Pending",
        "job": job["metadata"]["name"],
        "attempts": 1,
    }
    assert_waiting_for_weights(plan)


def assert_waiting_for_weights(plan: Plan) -> None:
    """Groups wait for a fill: CacheReady False, Progressing FillingCache, and (waiting
    for weights is not a shortage of GPUs) still Schedulable."""
    assert (cond(plan, "CacheReady")["status"], cond(plan, "CacheReady")["reason"]) == (
        "False",
        "Filling",
    )
    assert cond(plan, "Progressing")["reason"] == "FillingCache"
    assert cond(plan, "Schedulable")["status"] == "True"


def test_a_job_not_yet_in_the_cache_is_applied_again_but_counts_once() -> None:
    first = plan_reconcile(cold(quickstart()))
    again = plan_reconcile(cold(quickstart(), status=first.status))
    assert [j["metadata"]["name"] for j in jobs_of(again)] == [
        j["metadata"]["name"] for j in jobs_of(first)
    ]
    assert [n["attempts"] for n in again.status["cache"]["nodes"]] == [1]
    assert jobs_of(again)[0]["metadata"]["annotations"][L.FILL_ATTEMPT] == "1"


def test_the_fill_job_runs_the_fill_program_on_its_node_only() -> None:
    s = quickstart(
        model={"revision": "0123456789abcdef0123456789abcdef01234567"},
        cache={"hostPath": "/data/models", "fillTimeoutSeconds": 3600},
        placement={"tolerations": [{"key": "dedicated", "operator": "Exists"}]},
    )
    s["model"]["credentialsSecretRef"] = {"name": "hf-token"}
    settings = FillSettings(image="registry.example.com/mistral-operator:1.2.3", progress_seconds=7)
    (job,) = jobs_of(plan_reconcile(replace(cold(s), fill_settings=settings)))
    key = key_of(s)
    node = job["metadata"]["labels"][L.CACHE_NODE]
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/mistral-operator:1.2.3"
    assert container["command"] == ["mistral-operator", "cachefill"]
    assert container["args"] == [
        "--source",
        "hf://mistralai/Mistral-Small-4-119B-2603",
        "--revision",
        "0123456789abcdef0123456789abcdef01234567",
        "--dest",
        f"/cache/{key}",
        "--termination-log",
        "/dev/termination-log",
        "--progress-interval",
        "7",
    ]
    assert container["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": node}
    assert {"key": "dedicated", "operator": "Exists"} in pod["tolerations"]
    assert pod["volumes"] == [
        {"name": "cache", "hostPath": {"path": "/data/models", "type": "DirectoryOrCreate"}}
    ]
    assert pod["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["backoffLimit"] == 2
    (rule,) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["values"] == list(FAIL_JOB_EXIT_CODES)
    # Its pods are nobody's group: they carry the model under another label.
    labels = spec["template"]["metadata"]["labels"]
    assert L.MODEL not in labels
    assert labels[L.FILL_FOR] == MODEL
    assert job["metadata"]["ownerReferences"][0]["name"] == MODEL


def test_a_running_fill_reports_its_progress_and_wakes_to_read_it_again() -> None:
    s = quickstart()
    first = plan_reconcile(cold(s))
    job = as_job(jobs_of(first)[0], active=1, startTime="2026-06-01T11:55:00Z")
    node = job["metadata"]["labels"][L.CACHE_NODE]
    pod = job_pod(job, 1, {"running": {"startedAt": "2026-06-01T11:56:00Z"}})
    progress = {"doneBytes": 40, "totalBytes": 100, "bytesPerSecond": 5.0}
    obs = with_fills(
        cold(s, status=first.status),
        [job],
        [pod],
        fill_progress={pod["metadata"]["name"]: progress},
    )
    plan = plan_reconcile(obs)
    assert jobs_of(plan) == []
    key = key_of(s)
    assert plan.node_labels == [(node, {L.node_cache_label(key): "Filling"})]
    entry = node_status(plan, node)
    assert (entry["state"], entry["bytesDone"], entry["bytesTotal"]) == ("Filling", 40, 100)
    assert entry["startTime"] == "2026-06-01T11:56:00Z"
    cache = plan.status["cache"]
    assert (cache["bytesDone"], cache["bytesTotal"], cache["bytesPerSecond"]) == (40, 100, 5.0)
    assert plan.wake_at == NOW + timedelta(seconds=FillSettings().progress_seconds)
    assert [e.reason for e in plan.events] == ["CacheFilling"]


def test_a_finished_fill_makes_the_node_ready_and_the_group_starts_there() -> None:
    s = quickstart()
    first = plan_reconcile(cold(s))
    key = key_of(s)
    job = as_job(
        jobs_of(first)[0],
        succeeded=1,
        startTime="2026-06-01T11:55:00Z",
        completionTime="2026-06-01T11:57:00Z",
        conditions=[{"type": "Complete", "status": "True"}],
    )
    node = job["metadata"]["labels"][L.CACHE_NODE]
    pod = job_pod(job, 1, {"terminated": {"exitCode": 0, "message": ready_result(100, 2.0)}})
    plan = plan_reconcile(with_fills(cold(s, status=first.status), [job], [pod]))
    (group_pod,) = pods_of(plan)
    assert pinned_node(group_pod) == node
    assert plan.node_labels == [(node, {L.node_cache_label(key): "Ready"})]
    # What the directory holds and the disk it is on, for garbage collection.
    ((annotated, notes),) = plan.node_annotations
    assert annotated == node
    assert json.loads(notes[L.node_cache_label(key)] or "") == {
        "root": "/var/lib/mistral-operator/models",
        "source": "hf://mistralai/Mistral-Small-4-119B-2603",
        "revision": "main",
        "commit": "c" * 40,
        "bytes": 100,
        "readyAt": "2026-06-01T11:57:00Z",
    }
    assert json.loads(notes[L.NODE_CACHE_DISK] or "") == {
        "root": "/var/lib/mistral-operator/models",
        "freeBytes": 10**12,
        "totalBytes": 2 * 10**12,
        "at": "2026-06-01T11:57:00Z",
    }
    assert [e.reason for e in plan.events if e.reason.startswith("Cache")] == ["CacheReady"]
    entry = node_status(plan, node)
    assert (entry["state"], entry["bytesDone"], entry["bytesPerSecond"]) == ("Ready", 100, 50.0)
    assert entry["completionTime"] == "2026-06-01T11:57:00Z"
    assert plan.delete == []  # the Job goes once the label says Ready
    assert cond(plan, "CacheReady")["status"] == "True"

    inv = ready_on(inventory("h200"), key, [node])
    later = plan_reconcile(
        with_fills(observed(s, inv=inv, status=plan.status, warm=False), [job], [pod])
    )
    assert [(d.kind, d.name, d.api_version) for d in later.delete] == [
        ("Job", job["metadata"]["name"], "batch/v1")
    ]
    assert later.node_labels == []
    assert later.node_annotations == []
    assert node_status(later, node)["bytesDone"] == 100  # remembered after the Job went


def test_a_corrupt_shard_fails_the_node_at_once_naming_the_file_and_places_nothing() -> None:
    s = quickstart()
    first = plan_reconcile(cold(s))
    key = key_of(s)
    job = as_job(jobs_of(first)[0], active=0, failed=1, startTime="2026-06-01T11:55:00Z")
    node = job["metadata"]["labels"][L.CACHE_NODE]
    message = failed_result(
        ExitCode.CHECKSUM_MISMATCH,
        "checksum mismatch in consolidated-00003.safetensors",
        "consolidated-00003.safetensors",
    )
    pod = job_pod(
        job,
        1,
        {"terminated": {"exitCode": 6, "message": message, "finishedAt": "2026-06-01T11:58:00Z"}},
    )
    plan = plan_reconcile(with_fills(cold(s, status=first.status), [job], [pod]))
    assert pods_of(plan) == []
    assert plan.node_labels == [(node, {L.node_cache_label(key): "Failed"})]
    entry = node_status(plan, node)
    assert entry["reason"] == "ChecksumMismatch"
    assert entry["file"] == "consolidated-00003.safetensors"
    assert entry["exitCode"] == 6
    assert "retryAt" not in entry  # the Job itself runs the next pod
    assert plan.delete == []
    cache_ready = cond(plan, "CacheReady")
    assert (cache_ready["status"], cache_ready["reason"]) == ("False", "FillFailed")
    assert "consolidated-00003.safetensors" in cache_ready["message"]
    assert (cond(plan, "Degraded")["status"], cond(plan, "Degraded")["reason"]) == (
        "True",
        "CacheFillFailed",
    )
    (event,) = [e for e in plan.events if e.reason == "CacheFillFailed"]
    assert event.type == "Warning"
    assert "ChecksumMismatch in consolidated-00003.safetensors" in event.message


def test_a_failed_job_is_replaced_after_its_backoff_with_the_next_attempt() -> None:
    s = quickstart()
    first = plan_reconcile(cold(s))
    failed_at = NOW - timedelta(seconds=10)
    job = as_job(
        jobs_of(first)[0],
        failed=3,
        startTime="2026-06-01T11:50:00Z",
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "lastTransitionTime": format_time(failed_at),
            }
        ],
    )
    node = job["metadata"]["labels"][L.CACHE_NODE]
    message = failed_result(ExitCode.AUTH_REFUSED, "auth refused: 401 from the hub")
    pod = job_pod(job, 1, {"terminated": {"exitCode": 3, "message": message}})

    waiting = plan_reconcile(with_fills(cold(s, status=first.status), [job], [pod]))
    retry_at = failed_at + retry_backoff(1)
    assert node_status(waiting, node)["retryAt"] == format_time(retry_at)
    assert node_status(waiting, node)["reason"] == "AuthRefused"
    assert waiting.delete == []
    assert waiting.wake_at == retry_at

    due = plan_reconcile(with_fills(cold(s, status=waiting.status, now=retry_at), [job], [pod]))
    assert [d.name for d in due.delete] == [job["metadata"]["name"]]
    again = plan_reconcile(cold(s, status=due.status, now=retry_at))
    (new_job,) = jobs_of(again)
    assert new_job["metadata"]["annotations"][L.FILL_ATTEMPT] == "2"
    assert node_status(again, node)["attempts"] == 2


def test_retries_back_off_doubling_up_to_ten_minutes() -> None:
    assert [retry_backoff(n).total_seconds() for n in (1, 2, 3, 4, 5, 6, 30)] == [
        30,
        60,
        120,
        240,
        480,
        600,
        600,
    ]


def test_a_job_past_its_deadline_reads_as_deadline_exceeded() -> None:
    s = quickstart()
    first = plan_reconcile(cold(s))
    job = as_job(
        jobs_of(first)[0],
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "lastTransitionTime": format_time(NOW),
            }
        ],
    )
    node = job["metadata"]["labels"][L.CACHE_NODE]
    plan = plan_reconcile(with_fills(cold(s, status=first.status), [job], []))
    entry = node_status(plan, node)
    assert entry["reason"] == "DeadlineExceeded"
    assert entry["message"] == "the fill ran past cache.fillTimeoutSeconds"


def test_groups_land_only_on_ready_nodes() -> None:
    """8 nodes, 5 Ready for the revision: a 2-node group goes to Ready nodes only."""
    s = multinode_spec(1, gpu={"product": "H100"})
    s["placement"] = {}
    key = key_of(s)
    ready = ["h100-1", "h100-3", "h100-4", "h100-6", "h100-7"]
    inv = ready_on(inventory("h100"), key, ready)
    plan = plan_reconcile(observed(s, inv=inv, warm=False))
    nodes = {pinned_node(p) for p in pods_of(plan)}
    assert len(nodes) == 2
    assert nodes <= set(ready)
    assert jobs_of(plan) == []  # nothing to fill: the group's nodes are warm


def test_spare_nodes_are_kept_warm_preferring_those_already_ready() -> None:
    s = quickstart(cache={"prewarmSpareNodes": 2})
    key = key_of(s)
    inv = ready_on(inventory("h200"), key, ["h200-0", "h200-2"])
    plan = plan_reconcile(observed(s, inv=inv, warm=False))
    (group_pod,) = pods_of(plan)
    assert pinned_node(group_pod) in {"h200-0", "h200-2"}
    # One spare is the other Ready node; the second gets a fill (never the CPU node).
    filled = {j["metadata"]["labels"][L.CACHE_NODE] for j in jobs_of(plan)}
    assert len(filled) == 1
    assert filled <= {"h200-1", "h200-3"}
    cache = plan.status["cache"]
    assert (cache["readyNodes"], cache["pendingNodes"]) == (2, 1)
    assert cond(plan, "CacheReady")["status"] == "True"  # no group waits


def test_a_new_revision_is_staged_beside_the_running_groups_and_old_fills_stop() -> None:
    s = quickstart()
    key = key_of(s)
    first = plan_reconcile(observed(s))
    running = [
        {
            **p,
            "metadata": {**p["metadata"], "uid": "u"},
            "spec": {**p["spec"], "nodeName": "h200-0"},
            "status": {"phase": "Running"},
        }
        for p in pods_of(first)
    ]
    # A fill of the old key still running elsewhere (say, a spare).
    old_job = as_job(jobs_of(plan_reconcile(cold(s)))[0], active=1)
    old_job["metadata"]["labels"][L.CACHE_NODE] = "h200-3"
    new = quickstart(model={"revision": "v2"})
    inv = ready_on(inventory("h200", running), key, ["h200-0", "h200-3"])
    inv = {
        n: replace(node, labels={**node.labels, L.node_cache_label(key): "Filling"})
        if n == "h200-3"
        else node
        for n, node in inv.items()
    }
    plan = plan_reconcile(
        with_fills(
            observed(new, pods=running, inv=inv, status=first.status, warm=False), [old_job], []
        )
    )
    assert [d.name for d in plan.delete if d.kind == "Job"] == [old_job["metadata"]["name"]]
    assert ("h200-3", {L.node_cache_label(key): None}) in plan.node_labels
    staged = {j["metadata"]["labels"][L.CACHE_NODE] for j in jobs_of(plan)}
    assert "h200-0" in staged  # the new revision is fetched where the old group runs


def test_a_ready_label_of_another_model_stands_while_this_models_fill_still_runs() -> None:
    s = quickstart()
    key = key_of(s)
    first = plan_reconcile(cold(s))
    job = as_job(jobs_of(first)[0], active=1)
    node = job["metadata"]["labels"][L.CACHE_NODE]
    pod = job_pod(job, 1, {"running": {}})
    inv = ready_on(inventory("h200"), key, [node])
    plan = plan_reconcile(
        with_fills(observed(s, inv=inv, status=first.status, warm=False), [job], [pod])
    )
    assert plan.node_labels == []
    assert node_status(plan, node)["state"] == "Ready"
    assert len(pods_of(plan)) == 1


def test_without_a_cache_nothing_is_filled_and_status_says_pods_download() -> None:
    s = quickstart(cache={"mode": "None"})
    cached = quickstart()
    stale = as_job(jobs_of(plan_reconcile(cold(cached)))[0], active=1)
    plan = plan_reconcile(with_fills(cold(s), [stale], []))
    assert jobs_of(plan) == []
    assert [d.name for d in plan.delete] == [stale["metadata"]["name"]]
    assert len(pods_of(plan)) == 1  # placed without waiting for any cache
    cache = plan.status["cache"]
    assert cache["state"] == "NotCached"
    assert "each pod downloads hf://mistralai/Mistral-Small-4-119B-2603" in cache["message"]
    assert (cond(plan, "CacheReady")["status"], cond(plan, "CacheReady")["reason"]) == (
        "True",
        "NotCached",
    )


CLAIM = "weights"


def shared(**cache: Any) -> dict[str, Any]:
    """The quick start reading its weights from the claim ``weights`` (SharedPVC)."""
    return quickstart(cache={"mode": "SharedPVC", "pvc": {"claimName": CLAIM, **cache}})


def with_claim(obs: Observed, labels: dict[str, str] | None = None, **claim: Any) -> Observed:
    pvc = claim_object(CLAIM, labels)
    pvc["status"] |= claim
    return replace(obs, claims={CLAIM: pvc})


def claim_status(plan: Plan) -> dict[str, Any]:
    return dict(plan.status["cache"]["claim"])


def test_a_shared_claim_gets_one_fill_and_no_group_is_created_meanwhile() -> None:
    s = shared(subPath="mistral")
    key = key_of(s)
    plan = plan_reconcile(with_claim(cold(s)))
    assert pods_of(plan) == []
    (job,) = jobs_of(plan)
    assert job["metadata"]["name"] == fill_job_name(MODEL, f"pvc/{CLAIM}", key)
    assert job["metadata"]["labels"][L.CACHE_CLAIM] == CLAIM
    assert L.CACHE_NODE not in job["metadata"]["labels"]
    # The state lives on the claim, not on any node.
    assert plan.claim_labels == [(CLAIM, {L.node_cache_label(key): "Pending"})]
    assert plan.node_labels == []
    cache = plan.status["cache"]
    assert cache["state"] == "Filling"
    assert not cache.get("nodes")
    assert cache["message"].startswith(f"1 group(s) wait for weights on claim {CLAIM}")
    assert claim_status(plan) == {
        "name": CLAIM,
        "state": "Pending",
        "job": job["metadata"]["name"],
        "attempts": 1,
    }
    assert_waiting_for_weights(plan)


def test_the_claims_fill_job_runs_the_same_program_unpinned_with_the_claim_read_write() -> None:
    s = shared(subPath="mistral")
    s["model"]["credentialsSecretRef"] = {"name": "hf-token"}
    s["cache"]["fillTimeoutSeconds"] = 3600
    settings = FillSettings(image="registry.example.com/mistral-operator:1.2.3", progress_seconds=7)
    node_job = jobs_of(plan_reconcile(replace(cold(quickstart()), fill_settings=settings)))[0]
    (job,) = jobs_of(plan_reconcile(replace(with_claim(cold(s)), fill_settings=settings)))
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    key = key_of(s)
    assert container["command"] == ["mistral-operator", "cachefill"]
    assert container["args"][container["args"].index("--dest") + 1] == f"/cache/{key}"
    assert container["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    # The kubelet makes <subPath> in the volume if it is missing; the fill writes its key there.
    assert container["volumeMounts"] == [
        {"name": "cache", "mountPath": "/cache", "subPath": "mistral"}
    ]
    assert pod["volumes"] == [{"name": "cache", "persistentVolumeClaim": {"claimName": CLAIM}}]
    assert "nodeSelector" not in pod
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    # Everything else is a node fill's: retries, podFailurePolicy, termination log, labels.
    for field in ("backoffLimit", "podFailurePolicy"):
        assert job["spec"][field] == node_job["spec"][field]
    node_container = node_job["spec"]["template"]["spec"]["containers"][0]
    for field in ("image", "terminationMessagePath", "terminationMessagePolicy", "resources"):
        assert container[field] == node_container[field]
    assert pod["tolerations"] == node_job["spec"]["template"]["spec"]["tolerations"]
    assert job["spec"]["template"]["metadata"]["labels"][L.FILL_FOR] == MODEL
    assert job["metadata"]["ownerReferences"][0]["name"] == MODEL


def _claim_job(s: dict[str, Any], **status: Any) -> tuple[Observed, dict[str, Any]]:
    first = plan_reconcile(with_claim(cold(s)))
    job = as_job(jobs_of(first)[0], **status)
    return with_claim(cold(s, status=first.status)), job


def test_a_running_claim_fill_reports_progress_on_the_claim() -> None:
    s = shared()
    obs, job = _claim_job(s, active=1, startTime="2026-06-01T11:55:00Z")
    pod = job_pod(job, 1, {"running": {"startedAt": "2026-06-01T11:56:00Z"}})
    progress = {"doneBytes": 40, "totalBytes": 100, "bytesPerSecond": 5.0}
    plan = plan_reconcile(
        with_fills(obs, [job], [pod], fill_progress={pod["metadata"]["name"]: progress})
    )
    assert jobs_of(plan) == []
    assert plan.claim_labels == [(CLAIM, {L.node_cache_label(key_of(s)): "Filling"})]
    entry = claim_status(plan)
    assert (entry["state"], entry["bytesDone"], entry["bytesTotal"]) == ("Filling", 40, 100)
    cache = plan.status["cache"]
    assert (cache["bytesDone"], cache["bytesTotal"], cache["bytesPerSecond"]) == (40, 100, 5.0)
    (event,) = [e for e in plan.events if e.reason == "CacheFilling"]
    assert event.message.startswith(f"claim {CLAIM}: filling hf://")


def test_a_finished_claim_fill_makes_the_claim_ready_and_groups_start_on_any_node() -> None:
    s = shared(subPath="mistral")
    key = key_of(s)
    obs, job = _claim_job(
        s,
        succeeded=1,
        startTime="2026-06-01T11:55:00Z",
        completionTime="2026-06-01T11:57:00Z",
        conditions=[{"type": "Complete", "status": "True"}],
    )
    pod = job_pod(job, 1, {"terminated": {"exitCode": 0, "message": ready_result(100, 2.0)}})
    plan = plan_reconcile(with_fills(obs, [job], [pod]))
    assert len(pods_of(plan)) == 1
    assert plan.claim_labels == [(CLAIM, {L.node_cache_label(key): "Ready"})]
    ((annotated, notes),) = plan.claim_annotations
    assert annotated == CLAIM
    assert json.loads(notes[L.node_cache_label(key)] or "") == {
        "root": "/mistral",
        "source": "hf://mistralai/Mistral-Small-4-119B-2603",
        "revision": "main",
        "commit": "c" * 40,
        "bytes": 100,
        "readyAt": "2026-06-01T11:57:00Z",
    }
    assert json.loads(notes[L.NODE_CACHE_DISK] or "")["totalBytes"] == 2 * 10**12
    assert [e.message for e in plan.events if e.reason == "CacheReady"] == [
        f"claim {CLAIM}: weights ready (0.00 GiB at 0.0 MiB/s)"
    ]
    assert claim_status(plan)["state"] == "Ready"
    assert plan.status["cache"]["state"] == "Ready"
    assert cond(plan, "CacheReady")["status"] == "True"

    # Once the claim's label says Ready the Job goes, and nothing is written again.
    later = plan_reconcile(
        with_fills(
            with_claim(cold(s, status=plan.status), {L.node_cache_label(key): "Ready"}),
            [job],
            [pod],
        )
    )
    assert [d.name for d in later.delete] == [job["metadata"]["name"]]
    assert (later.claim_labels, later.claim_annotations) == ([], [])
    assert claim_status(later)["bytesDone"] == 100


def test_a_claim_already_ready_is_not_filled_again() -> None:
    """A second model reading the claim, or the operator after a restart (no status)."""
    s = shared()
    plan = plan_reconcile(with_claim(cold(s), {L.node_cache_label(key_of(s)): "Ready"}))
    assert jobs_of(plan) == []
    assert len(pods_of(plan)) == 1
    assert (plan.claim_labels, plan.events[0].reason) == ([], "GroupCreated")
    assert claim_status(plan) == {"name": CLAIM, "state": "Ready"}
    assert cond(plan, "CacheReady")["reason"] == "Ready"


def test_a_corrupt_shard_fails_the_claim_naming_the_file_and_its_job_is_retried() -> None:
    s = shared()
    failed_at = NOW - timedelta(seconds=10)
    obs, job = _claim_job(
        s,
        failed=3,
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "lastTransitionTime": format_time(failed_at),
            }
        ],
    )
    bad = "consolidated-00003.safetensors"
    message = failed_result(ExitCode.CHECKSUM_MISMATCH, f"checksum mismatch in {bad}", bad)
    pod = job_pod(job, 3, {"terminated": {"exitCode": 6, "message": message}})
    plan = plan_reconcile(with_fills(obs, [job], [pod]))
    assert pods_of(plan) == []
    assert plan.claim_labels == [(CLAIM, {L.node_cache_label(key_of(s)): "Failed"})]
    entry = claim_status(plan)
    assert (entry["reason"], entry["file"], entry["exitCode"]) == ("ChecksumMismatch", bad, 6)
    assert entry["retryAt"] == format_time(failed_at + retry_backoff(1))
    assert plan.status["cache"]["state"] == "Failed"
    assert cond(plan, "CacheReady")["reason"] == "FillFailed"
    assert bad in cond(plan, "CacheReady")["message"]
    assert cond(plan, "Degraded")["reason"] == "CacheFillFailed"
    (event,) = [e for e in plan.events if e.reason == "CacheFillFailed"]
    assert event.message.startswith(f"claim {CLAIM}: ChecksumMismatch in {bad}")

    due = failed_at + retry_backoff(1)
    retried = plan_reconcile(with_fills(replace(obs, status=plan.status, now=due), [job], [pod]))
    assert [d.name for d in retried.delete] == [job["metadata"]["name"]]


def test_a_missing_claim_starts_no_fill_and_says_so() -> None:
    s = shared()
    plan = plan_reconcile(cold(s))
    assert (jobs_of(plan), pods_of(plan), plan.claim_labels) == ([], [], [])
    assert claim_status(plan) == {
        "name": CLAIM,
        "state": "Pending",
        "message": f"PersistentVolumeClaim {CLAIM} not found in namespace serving: the "
        "weights are filled into it once it exists",
    }
    cache_ready = cond(plan, "CacheReady")
    assert (cache_ready["status"], cache_ready["reason"]) == ("False", "ClaimNotFound")
    assert cond(plan, "Progressing")["reason"] == "FillingCache"


def test_an_unbound_claim_gets_its_fill_and_status_says_it_waits_for_a_volume() -> None:
    s = shared()
    plan = plan_reconcile(with_claim(cold(s), phase="Pending"))
    assert len(jobs_of(plan)) == 1  # a WaitForFirstConsumer claim binds for the fill's pod
    assert "the claim is Pending: not bound to a volume yet" in plan.status["cache"]["message"]


def test_changing_the_cache_mode_drops_the_other_modes_fills() -> None:
    node_job = as_job(jobs_of(plan_reconcile(cold(quickstart())))[0], active=1)
    claim_job = as_job(jobs_of(plan_reconcile(with_claim(cold(shared()))))[0], active=1)
    to_shared = plan_reconcile(with_fills(with_claim(cold(shared())), [node_job], []))
    assert node_job["metadata"]["name"] in [d.name for d in to_shared.delete]
    to_nodes = plan_reconcile(with_fills(with_claim(cold(quickstart())), [claim_job], []))
    assert claim_job["metadata"]["name"] in [d.name for d in to_nodes.delete]
    assert to_nodes.claim_labels == []  # the claim's label says nothing of this Job


def test_a_claim_fill_for_an_old_revision_stops_and_leaves_no_promise_on_the_claim() -> None:
    old = shared()
    job = as_job(jobs_of(plan_reconcile(with_claim(cold(old))))[0], active=1)
    new = shared()
    new["model"]["revision"] = "v2"
    pending = {L.node_cache_label(key_of(old)): "Filling"}
    plan = plan_reconcile(with_fills(with_claim(cold(new), pending), [job], []))
    assert job["metadata"]["name"] in [d.name for d in plan.delete]
    assert (CLAIM, {L.node_cache_label(key_of(old)): None}) in plan.claim_labels
    assert (CLAIM, {L.node_cache_label(key_of(new)): "Pending"}) in plan.claim_labels


def test_a_fill_on_a_node_that_went_away_is_dropped() -> None:
    s = quickstart()
    first = plan_reconcile(cold(s))
    job = as_job(jobs_of(first)[0], active=1)
    node = job["metadata"]["labels"][L.CACHE_NODE]
    inv = {n: v for n, v in inventory("h200").items() if n != node}
    plan = plan_reconcile(with_fills(observed(s, inv=inv, warm=False), [job], []))
    assert job["metadata"]["name"] in [d.name for d in plan.delete]
    assert node not in [j["metadata"]["labels"][L.CACHE_NODE] for j in jobs_of(plan)]


def test_progress_lines_are_read_from_the_end_of_a_log() -> None:
    tail = (
        'mistral-cachefill-progress {"doneBytes": 1, "totalBytes": 4}\n'
        "cachefill: 2 B / 4 B (50%)\n"
        'mistral-cachefill-progress {"doneBytes": 2, "totalBytes": 4}\n'
        "cachefill: something else\n"
    )
    assert parse_progress(tail) == {"doneBytes": 2, "totalBytes": 4}
    assert parse_progress("no progress yet\n") is None
    assert parse_progress("mistral-cachefill-progress {broken\n") is None


def _creating(
    s: dict[str, Any], created: str, first: Plan | None = None, reason: str = "ContainerCreating"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The quick start's pod, placed on a warm node and still ContainerCreating (or
    waiting for another ``reason``); ``first``: the plan that made it."""
    first = first if first is not None else plan_reconcile(observed(s))
    (pod,) = pods_of(first)
    node = pinned_node(pod)
    pod = copy.deepcopy(pod)
    pod["metadata"] |= {"uid": "uid-1", "creationTimestamp": created}
    pod["spec"]["nodeName"] = node
    pod["status"] = {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "sglang",
                "restartCount": 0,
                "state": {"waiting": {"reason": reason}},
            }
        ],
    }
    return [pod], first.status


def test_a_pod_kept_waiting_on_a_ready_cache_gets_the_cache_filled_again_once() -> None:
    """A Ready label for a directory that is gone (a wiped disk) must not hold a pod forever."""
    s = quickstart()
    key = key_of(s)
    created = NOW - timedelta(seconds=FillSettings().verify_after_seconds + 5)
    pods, status = _creating(s, format_time(created))
    node = pinned_node(pods[0])
    plan = plan_reconcile(observed(s, pods=pods, status=status))
    (job,) = jobs_of(plan)
    assert job["metadata"]["labels"][L.CACHE_NODE] == node
    assert "--verify-checksums" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (node, {L.node_cache_label(key): "Pending"}) in plan.node_labels
    (event,) = [e for e in plan.events if e.reason == "CacheRecheck"]
    assert f"pod {pods[0]['metadata']['name']} waits in ContainerCreating" in event.message

    # Once a fill has finished there after the pod was made, the node is not checked again.
    done = dict(status)
    done["cache"] = dict(status["cache"]) | {
        "nodes": [{"node": node, "state": "Ready", "completionTime": format_time(NOW)}]
    }
    again = plan_reconcile(observed(s, pods=pods, status=done))
    assert jobs_of(again) == []
    assert again.node_labels == []


def test_a_pod_only_just_created_is_given_time_before_its_cache_is_doubted() -> None:
    s = quickstart()
    pods, status = _creating(s, format_time(NOW - timedelta(seconds=5)))
    plan = plan_reconcile(observed(s, pods=pods, status=status))
    assert jobs_of(plan) == []
    assert plan.wake_at == NOW + timedelta(seconds=FillSettings().verify_after_seconds - 5)


def test_a_pod_crash_looping_on_a_ready_node_cache_gets_its_checksums_verified() -> None:
    """A file removed or cut short under a Ready label: the server exits at load time."""
    s = quickstart()
    created = NOW - timedelta(seconds=FillSettings().verify_after_seconds + 5)
    pods, status = _creating(s, format_time(created), reason="CrashLoopBackOff")
    node = pinned_node(pods[0])
    plan = plan_reconcile(observed(s, pods=pods, status=status))
    (job,) = jobs_of(plan)
    assert job["metadata"]["labels"][L.CACHE_NODE] == node
    assert "--verify-checksums" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    (event,) = [e for e in plan.events if e.reason == "CacheRecheck"]
    assert "crash-loops although the cache is Ready" in event.message


def test_a_pod_crash_looping_on_a_ready_claim_gets_the_claim_verified_once() -> None:
    """A shared claim wiped under its Ready label: the claim is checked, not a node."""
    s = shared()
    ready = {L.node_cache_label(key_of(s)): "Ready"}
    created = NOW - timedelta(seconds=FillSettings().verify_after_seconds + 5)
    first = plan_reconcile(with_claim(cold(s), ready))
    pods, status = _creating(s, format_time(created), first, reason="CrashLoopBackOff")
    plan = plan_reconcile(with_claim(observed(s, pods=pods, status=status), ready))
    (job,) = jobs_of(plan)
    assert job["metadata"]["labels"][L.CACHE_CLAIM] == CLAIM
    assert "--verify-checksums" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (CLAIM, {L.node_cache_label(key_of(s)): "Pending"}) in plan.claim_labels
    assert claim_status(plan)["state"] == "Pending"

    # A fill that finished after the pod was made clears the doubt: no second check.
    done = dict(status)
    done["cache"] = dict(status["cache"]) | {
        "claim": {"name": CLAIM, "state": "Ready", "completionTime": format_time(NOW)}
    }
    again = plan_reconcile(with_claim(observed(s, pods=pods, status=done), ready))
    assert jobs_of(again) == []
    assert again.claim_labels == []


def test_a_crash_soon_after_a_check_does_not_check_again() -> None:
    """A server that crashes for another reason (its arguments, say) costs one check per
    --cache-verify-after-seconds, not one per crash; a crash is doubted at once."""
    s = shared()
    ready = {L.node_cache_label(key_of(s)): "Ready"}
    first = plan_reconcile(with_claim(cold(s), ready))
    after = timedelta(seconds=FillSettings().verify_after_seconds)
    pods, status = _creating(s, format_time(NOW), first, reason="CrashLoopBackOff")
    checked = dict(status)
    checked["cache"] = dict(status["cache"]) | {
        "claim": {"name": CLAIM, "state": "Ready", "completionTime": format_time(NOW - after / 2)}
    }
    plan = plan_reconcile(with_claim(observed(s, pods=pods, status=checked), ready))
    assert jobs_of(plan) == []
    long_ago = dict(status)
    long_ago["cache"] = dict(status["cache"]) | {
        "claim": {
            "name": CLAIM,
            "state": "Ready",
            "completionTime": format_time(NOW - after - timedelta(seconds=1)),
        }
    }
    plan = plan_reconcile(with_claim(observed(s, pods=pods, status=long_ago), ready))
    assert len(jobs_of(plan)) == 1


def test_a_restarted_pod_whose_group_fails_gets_its_node_checked() -> None:
    """A restart fails the group at once (ContainerRestarted): the doubt must not wait for
    a pod that is gone by the next reconcile."""
    s = quickstart()
    pods, status = _creating(s, format_time(NOW - timedelta(seconds=2)), reason="Error")
    pods[0]["status"]["containerStatuses"][0]["restartCount"] = 1
    plan = plan_reconcile(observed(s, pods=pods, status=status))
    assert pods[0]["metadata"]["name"] in [d.name for d in plan.delete]  # the group goes
    (job,) = jobs_of(plan)
    assert job["metadata"]["labels"][L.CACHE_NODE] == pinned_node(pods[0])
    assert "--verify-checksums" in job["spec"]["template"]["spec"]["containers"][0]["args"]
