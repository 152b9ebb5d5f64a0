"""Cache-fill Jobs: what one looks like, and what its Job and pods say about one fill.

A fill writes into one target: the cache root (``cache.hostPath``) of one node, or a
shared PersistentVolumeClaim (``cache.pvc``, SharedPVC mode). Both run the same program
with the same Job settings; only where the Job runs and what it mounts differ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from mistral_operator.cachefill.result import FillResult, parse_result
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.inventory import HOSTNAME_LABEL
from mistral_operator.core.render import GPU_TOLERATION, RenderInput
from mistral_operator.core.revision import digest
from mistral_operator.core.timestamps import parse_time

CACHE_MOUNT = "/cache"
TERMINATION_LOG = "/dev/termination-log"
PROGRESS_PREFIX = "mistral-cachefill-progress "
# The Job retries a failed pod this many times by itself (10 s, 20 s, ... apart), then
# the operator starts a new Job after its own, longer backoff.
JOB_BACKOFF_LIMIT = 2
# Exit codes no retry inside the same Job can cure: usage, auth refused, disk full.
FAIL_JOB_EXIT_CODES = (2, 3, 5)


@dataclass(frozen=True)
class FillSettings:
    """How the operator runs fills: its own image, and how often a fill reports progress."""

    image: str = "mistral-operator:latest"
    progress_seconds: int = 10
    # A pod still ContainerCreating this long on a node whose cache is Ready gets that
    # cache checked again (see cache_plan._suspects).
    verify_after_seconds: int = 120


@dataclass(frozen=True)
class FillTarget:
    """Where a fill writes: one node's cache root, or a shared claim (not bound to a node)."""

    kind: Literal["node", "claim"]
    name: str
    # A claim's directory that holds the cache-key directories (cache.pvc.subPath).
    sub_path: str | None = None

    @classmethod
    def node(cls, name: str) -> FillTarget:
        return cls("node", name)

    @classmethod
    def claim(cls, name: str, sub_path: str | None = None) -> FillTarget:
        return cls("claim", name, (sub_path or "").strip("/") or None)

    @property
    def ident(self) -> str:
        """What names the target in a Job name (a node and a claim may share a name)."""
        return self.name if self.kind == "node" else f"pvc/{self.name}"

    @property
    def label(self) -> str:
        """The label of a fill Job (and its pods) that names its target."""
        return L.CACHE_NODE if self.kind == "node" else L.CACHE_CLAIM

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def fill_job_name(model: str, target: str, key: str) -> str:
    """One name per (model, target, cache key): a second create of it is the same Job.

    ``target``: a node's name, or ``FillTarget.ident``.
    """
    return f"{model[:38]}-fill-{digest([target, key], 10)}"


def render_fill_job(
    inp: RenderInput,
    target: FillTarget,
    settings: FillSettings,
    attempt: int,
    *,
    verify_checksums: bool = False,
) -> dict[str, Any]:
    """A Job that fills ``<key>`` under the target's cache root with the model's weights:
    ``<hostPath>/<key>`` on a node (pinned there), or ``<subPath>/<key>`` on a claim
    (wherever the scheduler puts it). ``verify_checksums``: a directory found ready is
    hashed file by file and what is damaged fetched again (a recheck)."""
    spec, key = inp.spec, inp.weights.key
    labels = {
        L.COMPONENT: L.CACHE_FILL,
        L.CACHE_KEY: key,
        target.label: target.name,
    }
    meta = inp.model.metadata(fill_job_name(inp.model.name, target.ident, key), labels)
    meta["annotations"] = {L.FILL_ATTEMPT: str(attempt)}
    container = cache_container(
        "fill",
        settings.image,
        ["mistral-operator", "cachefill"],
        [
            "--source",
            inp.weights.source,
            "--revision",
            inp.weights.revision,
            "--dest",
            f"{CACHE_MOUNT}/{key}",
            "--termination-log",
            TERMINATION_LOG,
            "--progress-interval",
            str(settings.progress_seconds),
            *(["--verify-checksums"] if verify_checksums else []),
        ],
        {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    )
    secret = spec.model.credentials_secret_ref
    if secret is not None:
        container["envFrom"] = [{"secretRef": {"name": secret.name}}]
    tolerations = [GPU_TOLERATION] + [
        t.model_dump(mode="json", by_alias=True, exclude_none=True)
        for t in spec.placement.tolerations
    ]
    if target.kind == "node":
        volume = {
            "name": "cache",
            "hostPath": {"path": spec.cache.host_path, "type": "DirectoryOrCreate"},
        }
    else:
        # Read-write, unlike the serving pods' mount; the kubelet makes a missing subPath.
        volume = {"name": "cache", "persistentVolumeClaim": {"claimName": target.name}}
        if target.sub_path:
            container["volumeMounts"][0]["subPath"] = target.sub_path
    job = cache_job(
        meta,
        labels | {L.FILL_FOR: inp.model.name},
        container,
        volume,
        node=target.name if target.kind == "node" else None,
        tolerations=tolerations,
        deadline_seconds=spec.cache.fill_timeout_seconds,
        backoff_limit=JOB_BACKOFF_LIMIT,
    )
    job["spec"]["podFailurePolicy"] = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": "fill",
                    "operator": "In",
                    "values": list(FAIL_JOB_EXIT_CODES),
                },
            }
        ]
    }
    return job


def cache_container(
    name: str, image: str, command: list[str], args: list[str], resources: dict[str, Any]
) -> dict[str, Any]:
    """The one container of a cache Job (fill or GC): the cache at CACHE_MOUNT, and its
    JSON result in the termination message."""
    return {
        "name": name,
        "image": image,
        "command": command,
        "args": args,
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_MOUNT}],
        "terminationMessagePath": TERMINATION_LOG,
        # The program writes its result there; a crash before that leaves the log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def cache_job(
    meta: dict[str, Any],
    template_labels: dict[str, str],
    container: dict[str, Any],
    volume: dict[str, Any],
    *,
    node: str | None,
    tolerations: list[dict[str, Any]],
    deadline_seconds: int,
    backoff_limit: int,
) -> dict[str, Any]:
    """A Job whose pods run ``container`` with ``volume`` (named ``cache``) at CACHE_MOUNT,
    pinned to ``node`` when one is given."""
    pod: dict[str, Any] = {"restartPolicy": "Never"}
    if node is not None:
        pod["nodeSelector"] = {HOSTNAME_LABEL: node}
    pod |= {
        "tolerations": tolerations,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [volume],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": deadline_seconds,
            "template": {"metadata": {"labels": template_labels}, "spec": pod},
        },
    }


@dataclass(frozen=True)
class FillAttempt:
    """One pod of a fill Job, as its container status tells it."""

    name: str
    running: bool
    exit_code: int | None
    started: datetime | None
    finished: datetime | None
    result: FillResult | None  # the fill's result, from its termination message
    message: str  # the raw termination message (a log tail when the fill crashed)


@dataclass(frozen=True)
class FillJob:
    """One fill Job of this model and what it and its pods say."""

    name: str
    uid: str
    node: str  # "" for a claim's fill
    key: str
    attempt: int
    complete: bool
    failed: bool
    failed_reason: str
    failed_at: datetime | None
    started: datetime | None
    finished: datetime | None
    deleting: bool
    pods: tuple[FillAttempt, ...]
    claim: str = ""  # the claim a SharedPVC fill writes into; "" for a node's

    @property
    def last_pod(self) -> FillAttempt | None:
        return self.pods[-1] if self.pods else None


@dataclass(frozen=True)
class CacheView:
    """What the reconcile knows of the current key's caches before placing groups."""

    node_local: bool
    key: str
    jobs: dict[str, FillJob]
    # Nodes whose cache of the key is Ready: only these may get a new group.
    ready: frozenset[str]
    # Nodes with a fill of the key under way, preferred when a group waits for weights.
    filling: frozenset[str]
    # SharedPVC: the claim the weights are filled into (None for NodeLocal and None).
    claim: str | None = None

    @property
    def limits_placement(self) -> bool:
        """Whether new groups go only to ``ready`` nodes (all of them once a shared claim is
        Ready, none before)."""
        return self.node_local or self.claim is not None


def observe_fill_jobs(
    jobs: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> dict[str, FillJob]:
    """This model's fill Jobs by name, each with its pods oldest first."""
    by_job: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                by_job.setdefault(ref.get("uid", ""), []).append(pod)
    out: dict[str, FillJob] = {}
    for job in jobs:
        meta, status = job["metadata"], job.get("status") or {}
        labels = meta.get("labels") or {}
        conds = {
            c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
        }
        failed = conds.get("Failed")
        attempts = sorted(
            by_job.get(meta.get("uid", ""), []),
            key=lambda p: str(p["metadata"].get("creationTimestamp") or ""),
        )
        out[meta["name"]] = FillJob(
            name=meta["name"],
            uid=meta.get("uid", ""),
            node=labels.get(L.CACHE_NODE, ""),
            key=labels.get(L.CACHE_KEY, ""),
            attempt=_int((meta.get("annotations") or {}).get(L.FILL_ATTEMPT), 1),
            complete="Complete" in conds,
            failed=failed is not None,
            failed_reason=str((failed or {}).get("reason") or ""),
            failed_at=parse_time((failed or {}).get("lastTransitionTime")),
            started=parse_time(status.get("startTime")),
            finished=parse_time(status.get("completionTime"))
            or parse_time((failed or {}).get("lastTransitionTime")),
            deleting=bool(meta.get("deletionTimestamp")),
            pods=tuple(_attempt(p) for p in attempts),
            claim=labels.get(L.CACHE_CLAIM, ""),
        )
    return out


def _attempt(pod: Mapping[str, Any]) -> FillAttempt:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    state = (statuses[0].get("state") or {}) if statuses else {}
    running, terminated = state.get("running"), state.get("terminated")
    message = str((terminated or {}).get("message") or "")
    return FillAttempt(
        name=pod["metadata"]["name"],
        running=running is not None,
        exit_code=None if terminated is None else _int(terminated.get("exitCode"), 1),
        started=parse_time((running or terminated or {}).get("startedAt")),
        finished=parse_time((terminated or {}).get("finishedAt")),
        result=parse_result(message),
        message=message,
    )


def parse_progress(log_tail: str) -> Mapping[str, Any] | None:
    """The last progress line of a fill's log (see docs/cache.md), or None."""
    for line in reversed(log_tail.splitlines()):
        if line.startswith(PROGRESS_PREFIX):
            try:
                value = json.loads(line[len(PROGRESS_PREFIX) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
