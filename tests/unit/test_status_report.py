"""Status as the reconcile writes it: every declared field filled, the printer columns' included."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from mistral_operator.api.crd import openapi_schema
from mistral_operator.cachefill.codes import ExitCode
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core import reconcile
from mistral_operator.core.reconcile import plan_reconcile
from tests.unit.reconcile_fixtures import (
    BLOCK,
    MULTI_NODE,
    Cluster,
    as_job,
    claim_object,
    converge,
    example,
    failed_result,
    job_pod,
    jobs_of,
    multinode_spec,
    observed,
    ready_result,
    sample,
)


def spec(replicas: int, **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    s["replicas"] = replicas
    s["placement"] = {"topologyKey": BLOCK}
    s.update(extra)
    return s


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def schema_leaves(node: dict[str, Any], path: str) -> Iterator[str]:
    if "properties" in node:
        for name, child in node["properties"].items():
            yield from schema_leaves(child, f"{path}.{name}")
    elif "properties" in node.get("items", {}):
        yield from schema_leaves(node["items"], f"{path}[]")
    else:
        yield path


def written_leaves(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        for name, child in value.items():
            yield from written_leaves(child, f"{path}.{name}")
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for item in value:
            yield from written_leaves(item, f"{path}[]")
    elif value is not None:
        yield path


def test_status_fields_behind_the_printer_columns_are_filled() -> None:
    first = plan_reconcile(observed(spec(2))).status
    assert (first["readyReplicas"], first["desiredReplicas"], first["phase"]) == (0, 2, "Starting")
    assert "currentRevision" not in first, "no rollout has completed yet"
    _, status = converge(spec(2))
    assert status["readyReplicas"] == 2
    assert status["desiredReplicas"] == 2
    # The quick start is Compact: one pod on 2 H200 GPUs per replica.
    assert status["topology"]["nodesPerReplica"] == 1
    assert status["topology"]["gpusPerReplica"] == 2
    assert status["phase"] == "Ready"
    assert status["currentRevision"] == status["updateRevision"]
    assert status["endpoint"]["url"] == "http://mistral-small-4.serving.svc:30000/v1"
    _, spread = converge(spec(2, parallelism=dict(MULTI_NODE)))
    assert spread["readyReplicas"] == 2
    assert spread["topology"]["nodesPerReplica"] == 2
    assert spread["topology"]["gpusPerReplica"] == 16


def test_ready_condition_follows_the_groups() -> None:
    first = cond(plan_reconcile(observed(spec(2))).status, "Ready")
    assert (first["status"], first["reason"]) == ("False", "GroupsNotReady")
    _, status = converge(spec(2))
    ready = cond(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "AllGroupsReady")
    assert ready["message"] == "2/2 replica groups ready"


def _filling() -> dict[str, Any]:
    """Status while fills run on three nodes: one done, one downloading, one failed for good."""
    s = spec(1, cache={"prewarmSpareNodes": 2})
    first = plan_reconcile(observed(s, warm=False))
    rendered = {j["metadata"]["labels"][L.CACHE_NODE]: j for j in jobs_of(first)}
    assert len(rendered) == 3
    done_job, running_job, failed_job = (rendered[n] for n in sorted(rendered))
    done = as_job(
        done_job,
        startTime="2026-06-01T11:50:00Z",
        completionTime="2026-06-01T11:55:00Z",
        conditions=[{"type": "Complete", "status": "True"}],
    )
    running = as_job(running_job, active=1, startTime="2026-06-01T11:50:00Z")
    failed = as_job(
        failed_job,
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "lastTransitionTime": "2026-06-01T11:59:00Z",
            }
        ],
    )
    result = ready_result(100, 5.0)
    running_pod = job_pod(running, 1, {"running": {"startedAt": "2026-06-01T11:51:00Z"}})
    pods = [
        job_pod(done, 1, {"terminated": {"exitCode": 0, "message": result}}),
        running_pod,
        job_pod(
            failed,
            1,
            {
                "terminated": {
                    "exitCode": 5,
                    "message": failed_result(ExitCode.DISK_FULL, "disk full", "a.safetensors"),
                    "finishedAt": "2026-06-01T11:58:00Z",
                }
            },
        ),
    ]
    progress = {"doneBytes": 5, "totalBytes": 100, "bytesPerSecond": 10.0}
    obs = replace(
        observed(s, warm=False, status=first.status),
        fill_jobs=[done, running, failed],
        fill_pods=pods,
        fill_progress={running_pod["metadata"]["name"]: progress},
    )
    return plan_reconcile(obs).status


def _claim_fills() -> list[dict[str, Any]]:
    """Status of a SharedPVC model: its claim's fill failed (retried later), then done."""
    s = spec(1, cache={"mode": "SharedPVC", "pvc": {"claimName": "weights"}})
    claim = {"weights": claim_object("weights")}
    first = plan_reconcile(replace(observed(s, warm=False), claims=claim))
    (job,) = jobs_of(first)
    failed = as_job(
        job,
        startTime="2026-06-01T11:50:00Z",
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "lastTransitionTime": "2026-06-01T11:59:00Z",
            }
        ],
    )
    message = failed_result(ExitCode.CHECKSUM_MISMATCH, "checksum mismatch in a", "a")
    failed_pod = job_pod(
        failed,
        1,
        {"terminated": {"exitCode": 6, "message": message, "finishedAt": "2026-06-01T11:58:00Z"}},
    )
    done = as_job(
        job,
        startTime="2026-06-01T11:50:00Z",
        completionTime="2026-06-01T11:55:00Z",
        conditions=[{"type": "Complete", "status": "True"}],
    )
    done_pod = job_pod(done, 1, {"terminated": {"exitCode": 0, "message": ready_result(100, 5.0)}})
    return [
        plan_reconcile(
            replace(
                observed(s, warm=False, status=first.status),
                claims=claim,
                fill_jobs=[j],
                fill_pods=[p],
            )
        ).status
        for j, p in ((failed, failed_pod), (done, done_pod))
    ]


def _rolling() -> list[dict[str, Any]]:
    """Statuses of rollouts: surge with no room, a drain, a failed and rolled-back one."""
    c = Cluster(multinode_spec(2))
    c.settle()
    c.spec = multinode_spec(2, runtime={"image": "lmsysorg/sglang:v0.5.24"})
    blocked = copy.deepcopy(c.step())
    draining = copy.deepcopy(c.step(now=c.now + timedelta(seconds=121)))
    c.step(load=c.idle(), new_pods_ready=False)
    failed = c.step(now=c.now + timedelta(seconds=3700))
    return [blocked.status, draining.status, failed.status]


def _scaling() -> dict[str, Any]:
    """Status right after the built-in autoscaler scaled up from a queue it read."""
    s = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    s["autoscaling"] = {"maxReplicas": 4, "targetQueuePerReplica": 10}
    c = Cluster(s)
    c.settle()
    c.samples = {"g0": sample(0, c.now, queued=40)}
    return c.step().status


def test_status_has_exactly_the_fields_a_reconcile_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A field nothing fills would read as a fact (a count of 0, a phase) that is not one.

    Status is looked at as the reconcile builds it, before the schema's defaults fill in
    what was never decided.
    """
    monkeypatch.setattr(reconcile, "conform_status", dict)
    bounded = spec(2, autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 2})
    pods, status = converge(bounded)
    leader = next(p for p in pods if p["metadata"]["labels"][L.RANK] == "0")
    leader["status"] = {
        "phase": "Failed",
        "containerStatuses": [
            {"restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
        ],
    }
    failed = plan_reconcile(observed(bounded, pods=pods, status=status)).status
    written = {
        *written_leaves(status, "status"),
        *written_leaves(failed, "status"),
        *written_leaves(_filling(), "status"),
        *(
            leaf
            for claim in _claim_fills()
            for leaf in written_leaves(claim["cache"], "status.cache")
        ),
        *(leaf for rolling in _rolling() for leaf in written_leaves(rolling, "status")),
        *written_leaves(_scaling(), "status"),
    }
    declared = set(schema_leaves(openapi_schema()["properties"]["status"], "status"))
    assert sorted(declared - written) == [], "declared in status.py, never written"
    assert sorted(written - declared) == [], "written by the core, not declared in status.py"
