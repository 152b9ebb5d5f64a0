"""Garbage collection of node-local weight caches: which keys leave which nodes, and when.

A cache key on a node (a label `cache.mistral-operator.dev/<key>`, an annotation of the
same name, or a GC annotation of its own) is *protected* while any of these holds:

- a MistralModel's ``status.cache.key`` or ``status.cache.lastGoodKey`` names it;
- an unfinished pod on the node (bound there, or pinned to it) carries it in its
  ``mistral-operator.dev/cache-key`` label;
- a fill Job of the key exists for the node. A ``Pending`` or ``Filling`` label alone
  does not keep it: a model deleted while it filled leaves that label behind, its Job
  gone with it (the reconciler writes the label before the Job, but a model that wants
  the key references it, or lags its generation, until the Job exists).

An unprotected key gets the node annotation ``gc.cache.mistral-operator.dev/<key>`` (when
it was first seen unprotected); protection removes it again. A key unprotected for the
retention period is removed; when the node's disk annotation says more than the
watermark of the disk is used, unprotected keys under that disk's root are removed
oldest first (by unused-since, then readyAt) until the bytes they hold bring it under
the watermark, before their retention ends. A key is removed only once it was seen
unprotected in an earlier round, never in the round that first sees it so.

A removal is a Job (one per node at a time, all its keys under one root) running
``mistral-operator cacheclean``; the keys' labels are dropped as it is created, so
placement stops counting the node Ready for them. When it has finished, its result
(``cachefill.result.parse_clean_result``) says which keys went: their label and
annotations are dropped, the disk annotation is updated and the Job is deleted. Keys
it skipped, and every key of a Job that left no result, stay for the next round.

A model whose status does not yet reflect its spec (``observedGeneration`` behind
``generation``: new, or just edited) may be about to name any key, so no removal is
decided while one lags, for at most ``UNSETTLED_GRACE`` after this loop first saw it lag.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mistral_operator.cachefill.result import CleanResult, parse_clean_result
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.fill_jobs import (
    CACHE_MOUNT,
    TERMINATION_LOG,
    FillJob,
    cache_container,
    observe_fill_jobs,
    pinned_job,
)
from mistral_operator.core.inventory import node_is_ready, pinned_node
from mistral_operator.core.render import GPU_TOLERATION
from mistral_operator.core.revision import digest
from mistral_operator.core.timestamps import format_time, parse_time

CACHE_GC = "cache-gc"  # the mistral-operator.dev/component of GC Jobs and their pods
# On a node: since when a key has been unprotected (RFC 3339).
GC_PREFIX = f"gc.{L.NODE_CACHE_PREFIX}"
# On a GC Job: what it was asked to remove (JSON: root, keys).
GC_JOB_ANNOTATION = f"{L.PREFIX}/cache-gc"
GC_DEADLINE_SECONDS = 600
UNSETTLED_GRACE = timedelta(minutes=10)
EVENT_MESSAGE_MAX = 1024
# Events about nodes (cluster-scoped) must be in this namespace (see render_event).
NODE_EVENT_NAMESPACE = "default"
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class GcSettings:
    """How the operator collects caches (the `run` options of the same names)."""

    retention: timedelta = timedelta(days=1)
    watermark: float = 0.85  # fraction of the disk used above which LRU removal starts
    namespace: str = "default"  # where GC Jobs run
    image: str = "mistral-operator:latest"  # the operator's own image (cacheclean)
    interval_seconds: float = 60.0


@dataclass(frozen=True)
class GcInput:
    """One round's view of the cluster, listed fresh, and the loop's memory."""

    nodes: Sequence[Mapping[str, Any]]
    models: Sequence[Mapping[str, Any]]  # MistralModels of every namespace
    pods: Sequence[Mapping[str, Any]]  # pods with a mistral-operator.dev/model label
    fill_jobs: Sequence[Mapping[str, Any]]  # cache-fill Jobs of every namespace
    gc_jobs: Sequence[Mapping[str, Any]]  # cache-gc Jobs in the GC namespace
    gc_pods: Sequence[Mapping[str, Any]]  # their pods
    now: datetime
    settings: GcSettings = field(default_factory=GcSettings)
    # Model uid -> when this loop first saw its status lag its generation.
    unsettled_since: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class JobDeletion:
    namespace: str
    name: str
    uid: str
    reason: str


@dataclass(frozen=True)
class NodeEvent:
    node: str
    uid: str
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class GcPlan:
    """What the shell executes, in this order: deletes, node annotations, node labels,
    creates; then events. Labels go before a create so no model reads a Ready label of a
    key whose removal has started."""

    delete: list[JobDeletion] = field(default_factory=list)
    node_annotations: dict[str, dict[str, str | None]] = field(default_factory=dict)
    node_labels: dict[str, dict[str, str | None]] = field(default_factory=dict)
    create: list[dict[str, Any]] = field(default_factory=list)
    events: list[NodeEvent] = field(default_factory=list)
    log: list[tuple[int, str]] = field(default_factory=list)  # (logging level, line)
    unsettled_since: dict[str, datetime] = field(default_factory=dict)

    def annotate(self, node: str, key: str, value: str | None) -> None:
        self.node_annotations.setdefault(node, {})[key] = value

    def label(self, node: str, key: str, value: str | None) -> None:
        self.node_labels.setdefault(node, {})[key] = value


@dataclass(frozen=True)
class Disk:
    root: str
    free: int
    total: int

    @property
    def used_fraction(self) -> float:
        return (self.total - self.free) / self.total


@dataclass(frozen=True)
class CachedKey:
    """One key on one node, as its label and annotations tell it."""

    key: str
    state: str | None  # the label's value; None without one
    contents: bool  # the key annotation is there
    root: str | None
    bytes: int | None
    ready_at: datetime | None
    unused_since: datetime | None  # from the GC annotation, as it was before this round
    gc_annotated: bool
    what: str  # source@revision, for messages


@dataclass(frozen=True)
class NodeCaches:
    name: str
    uid: str
    usable: bool  # Ready and not being deleted: a GC pod can run there
    taints: tuple[Mapping[str, Any], ...]
    keys: dict[str, CachedKey]
    disk: Disk | None


@dataclass(frozen=True)
class GcJob:
    job: FillJob  # the Job and its pods, read as fill Jobs are
    namespace: str
    root: str
    keys: tuple[str, ...]


def gc_job_name(node: str) -> str:
    """One name per node: a second GC Job for a node cannot exist beside the first."""
    return f"cache-gc-{digest([node], 10)}"


def plan_gc(inp: GcInput) -> GcPlan:
    plan = GcPlan()
    referenced = _referenced(inp.models)
    lagging = _lagging(inp, plan)
    in_use = _in_use(inp.pods)
    fills = _fill_jobs(inp.fill_jobs)
    gc_jobs = _gc_jobs(inp.gc_jobs, inp.gc_pods)
    nodes = [_node_caches(n) for n in inp.nodes]
    names = {n.name for n in nodes}
    for node_name, jobs in sorted(gc_jobs.items()):
        if node_name not in names:
            for job in jobs:
                if not job.job.deleting:
                    plan.delete.append(_deletion(job, f"node {node_name} is gone"))
    deferred: list[str] = []
    for node in nodes:
        jobs = gc_jobs.get(node.name, [])
        gone: set[str] = set()
        for job in jobs:
            gone |= _finish(plan, inp, node, job, fills)
        protected = (
            referenced | in_use.get(node.name, set()) | {k for (n, k) in fills if n == node.name}
        )
        _track(plan, inp.now, node, protected, gone)
        if jobs:
            continue  # one GC Job per node at a time
        chosen = _choose(plan, inp, node, protected)
        if not chosen:
            continue
        if lagging:
            deferred.append(node.name)
            continue
        _start(plan, inp, node, chosen)
    if deferred:
        plan.log.append(
            (
                logging.INFO,
                f"cache GC: removals on {', '.join(deferred)} wait: "
                f"{', '.join(lagging)} not reconciled yet (its next key is not known)",
            )
        )
    return plan


# -- what the cluster says ------------------------------------------------------------


def _referenced(models: Iterable[Mapping[str, Any]]) -> set[str]:
    keys: set[str] = set()
    for model in models:
        cache = (model.get("status") or {}).get("cache") or {}
        keys |= {k for k in (cache.get("key"), cache.get("lastGoodKey")) if isinstance(k, str)}
    return keys


def _lagging(inp: GcInput, plan: GcPlan) -> list[str]:
    """Models whose status lags their spec, first seen so within UNSETTLED_GRACE."""
    out = []
    for model in inp.models:
        meta = model.get("metadata") or {}
        status = model.get("status") or {}
        uid = str(meta.get("uid") or "")
        if meta.get("deletionTimestamp") or status.get("observedGeneration") == meta.get(
            "generation"
        ):
            continue
        since = inp.unsettled_since.get(uid, inp.now)
        plan.unsettled_since[uid] = since
        name = f"{meta.get('namespace')}/{meta.get('name')}"
        if inp.now - since < UNSETTLED_GRACE:
            out.append(name)
        else:
            plan.log.append(
                (
                    logging.DEBUG,
                    f"cache GC: {name} has lagged its generation since {format_time(since)}; "
                    "not waiting for it",
                )
            )
    return sorted(out)


def _in_use(pods: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Node -> the keys its unfinished pods read."""
    out: dict[str, set[str]] = {}
    for pod in pods:
        key = (pod.get("metadata", {}).get("labels") or {}).get(L.CACHE_KEY)
        if not key or (pod.get("status") or {}).get("phase") in _TERMINAL_PHASES:
            continue
        node = (pod.get("spec") or {}).get("nodeName") or pinned_node(pod)
        if node:
            out.setdefault(node, set()).add(key)
    return out


def _fill_jobs(
    jobs: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str], list[tuple[str, FillJob]]]:
    """(node, key) -> the fill Jobs for it, each with its namespace."""
    out: dict[tuple[str, str], list[tuple[str, FillJob]]] = {}
    for raw in jobs:
        for job in observe_fill_jobs([raw], []).values():
            namespace = str(raw["metadata"].get("namespace") or "")
            out.setdefault((job.node, job.key), []).append((namespace, job))
    return out


def _gc_jobs(
    jobs: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> dict[str, list[GcJob]]:
    seen = observe_fill_jobs(jobs, pods)
    out: dict[str, list[GcJob]] = {}
    for raw in jobs:
        meta = raw["metadata"]
        asked = _json((meta.get("annotations") or {}).get(GC_JOB_ANNOTATION))
        keys = asked.get("keys")
        job = GcJob(
            job=seen[meta["name"]],
            namespace=str(meta.get("namespace") or ""),
            root=str(asked.get("root") or ""),
            keys=tuple(str(k) for k in keys) if isinstance(keys, list) else (),
        )
        out.setdefault(job.job.node, []).append(job)
    return out


def _node_caches(node: Mapping[str, Any]) -> NodeCaches:
    meta = node.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    notes: Mapping[str, str] = meta.get("annotations") or {}
    prefix = L.NODE_CACHE_PREFIX
    keys = {k.removeprefix(prefix) for k in labels if k.startswith(prefix)}
    keys |= {k.removeprefix(prefix) for k in notes if k.startswith(prefix)}
    keys |= {k.removeprefix(GC_PREFIX) for k in notes if k.startswith(GC_PREFIX)}
    keys.discard(L.NODE_CACHE_DISK.removeprefix(prefix))
    disk_note = _json(notes.get(L.NODE_CACHE_DISK))
    free, total = _int(disk_note.get("freeBytes")), _int(disk_note.get("totalBytes"))
    disk_root = _root(disk_note.get("root"))
    disk = (
        Disk(disk_root, free, total)
        if disk_root and free is not None and total is not None and total > 0
        else None
    )
    cached = {}
    for key in keys:
        contents = _json(notes.get(L.node_cache_label(key)))
        gc_note = notes.get(f"{GC_PREFIX}{key}")
        cached[key] = CachedKey(
            key=key,
            state=labels.get(L.node_cache_label(key)),
            contents=L.node_cache_label(key) in notes,
            root=_root(contents.get("root")),
            bytes=_int(contents.get("bytes")),
            ready_at=_time(contents.get("readyAt")),
            unused_since=_time(gc_note),
            gc_annotated=gc_note is not None,
            what=f"{contents.get('source')}@{contents.get('revision')}"
            if contents.get("source")
            else key,
        )
    return NodeCaches(
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        usable=node_is_ready(node) and not meta.get("deletionTimestamp"),
        taints=tuple((node.get("spec") or {}).get("taints") or ()),
        keys=cached,
        disk=disk,
    )


# -- a finished GC Job ------------------------------------------------------------------


def _finish(
    plan: GcPlan,
    inp: GcInput,
    node: NodeCaches,
    job: GcJob,
    fills: Mapping[tuple[str, str], list[tuple[str, FillJob]]],
) -> set[str]:
    """Record what a finished GC Job did and delete it; the keys it removed."""
    if job.job.deleting or not (job.job.complete or job.job.failed):
        return set()
    plan.delete.append(_deletion(job, "GC done"))
    pod = job.job.last_pod
    result = parse_clean_result(pod.message) if pod is not None else None
    if result is None:
        lines = pod.message.strip().splitlines() if pod is not None else []
        why = job.job.failed_reason or (lines[-1][:300] if lines else "")
        _event(
            plan,
            node,
            "Warning",
            "CacheGcFailed",
            f"GC Job {job.job.name} ended without a result ({why or 'no pod'}); "
            f"{', '.join(job.keys)} stay and are tried again",
        )
        return set()
    finished = (pod.finished if pod is not None else None) or job.job.finished or inp.now
    gone = set(result.removed) | set(result.absent)
    for key in sorted(gone):
        _forget(plan, node, key, fills.get((node.name, key), []), finished)
    _report(plan, node, job, result)
    if result.disk_total_bytes:
        disk = {
            "root": job.root,
            "freeBytes": result.disk_free_bytes,
            "totalBytes": result.disk_total_bytes,
            "at": format_time(finished),
        }
        plan.annotate(node.name, L.NODE_CACHE_DISK, json.dumps(disk, sort_keys=True))
    return gone


def _forget(
    plan: GcPlan,
    node: NodeCaches,
    key: str,
    fills: list[tuple[str, FillJob]],
    gc_finished: datetime,
) -> None:
    """A key's directory is gone: drop what says it is there.

    A fill Job started before the clean ended may have found the directory ready a moment
    before it went: if it completed, it is deleted (its model starts a new fill) and the
    label dropped. Other fill Jobs are their model's to report: only our note goes.
    """
    cached = node.keys.get(key)
    doubtful = [
        (ns, f)
        for ns, f in fills
        if f.complete and not f.deleting and (f.started is None or f.started <= gc_finished)
    ]
    honest = [f for _ns, f in fills if (_ns, f) not in doubtful and not f.deleting]
    for namespace, fill in doubtful:
        plan.delete.append(
            JobDeletion(namespace, fill.name, fill.uid, "its directory was removed by a cache GC")
        )
    if cached is not None and cached.gc_annotated:
        plan.annotate(node.name, f"{GC_PREFIX}{key}", None)
    if honest:
        return
    if cached is not None and cached.state is not None:
        plan.label(node.name, L.node_cache_label(key), None)
    if cached is not None and cached.contents:
        plan.annotate(node.name, L.node_cache_label(key), None)


def _report(plan: GcPlan, node: NodeCaches, job: GcJob, result: CleanResult) -> None:
    if result.removed:
        gib = result.freed_bytes / 2**30
        names = ", ".join(_what(node, k) for k in result.removed)
        _event(plan, node, "Normal", "CacheRemoved", f"removed {names} ({gib:.2f} GiB freed)")
    if result.absent:
        plan.log.append(
            (
                logging.INFO,
                f"cache GC: node {node.name}: {', '.join(result.absent)} already gone "
                f"under {job.root}",
            )
        )
    locked = [s.key for s in result.skipped if s.reason == "locked"]
    if locked:
        plan.log.append(
            (
                logging.INFO,
                f"cache GC: node {node.name}: {', '.join(locked)} kept: a fill holds its lock",
            )
        )
    for skipped in result.skipped:
        if skipped.reason != "locked":
            _event(
                plan,
                node,
                "Warning",
                "CacheGcFailed",
                f"could not remove {_what(node, skipped.key)}: {skipped.reason}"
                + (f": {skipped.message}" if skipped.message else "")
                + "; tried again next round",
            )


# -- unused-since notes, and what to remove ---------------------------------------------


def _track(
    plan: GcPlan, now: datetime, node: NodeCaches, protected: set[str], gone: set[str]
) -> None:
    for key, cached in node.keys.items():
        if key in gone:
            continue
        note = f"{GC_PREFIX}{key}"
        if key in protected:
            if cached.gc_annotated:
                plan.annotate(node.name, note, None)
                plan.log.append(
                    (logging.INFO, f"cache GC: node {node.name}: {key} is in use again")
                )
        elif cached.unused_since is None:
            plan.annotate(node.name, note, format_time(now))


def _choose(
    plan: GcPlan, inp: GcInput, node: NodeCaches, protected: set[str]
) -> dict[str, tuple[str, str]]:
    """Key -> (root, why) of the keys to remove from this node now."""
    if not node.usable:
        return {}
    settings = inp.settings
    candidates = [
        c for k, c in node.keys.items() if k not in protected and c.unused_since is not None
    ]
    chosen: dict[str, tuple[str, str]] = {}
    for c in candidates:
        assert c.unused_since is not None
        if inp.now - c.unused_since >= settings.retention:
            chosen[c.key] = (c.root or "", f"unused since {format_time(c.unused_since)}")
    disk = node.disk
    if disk is not None and disk.used_fraction > settings.watermark:
        need = (disk.total - disk.free) - settings.watermark * disk.total
        freed = sum(c.bytes or 0 for c in candidates if c.key in chosen and c.root == disk.root)
        why = f"disk {disk.used_fraction:.0%} used, over the {settings.watermark:.0%} watermark"
        oldest = sorted(
            (c for c in candidates if c.key not in chosen and (c.root or disk.root) == disk.root),
            key=lambda c: (c.unused_since, c.ready_at or c.unused_since, c.key),
        )
        for c in oldest:
            if freed >= need:
                break
            chosen[c.key] = (disk.root, why)
            freed += c.bytes or 0
    out: dict[str, tuple[str, str]] = {}
    for key, (root, why) in chosen.items():
        where = root or (disk.root if disk is not None else "")
        if not where:
            plan.log.append(
                (
                    logging.DEBUG,
                    f"cache GC: node {node.name}: {key} would go but no annotation names its root",
                )
            )
            continue
        out[key] = (where, why)
    return out


def _start(
    plan: GcPlan, inp: GcInput, node: NodeCaches, chosen: dict[str, tuple[str, str]]
) -> None:
    """One GC Job for the root whose key has waited longest; other roots come next."""
    by_root: dict[str, list[str]] = {}
    for key, (root, _why) in chosen.items():
        by_root.setdefault(root, []).append(key)

    def waited(root: str) -> datetime:
        return min(node.keys[k].unused_since or inp.now for k in by_root[root])

    root = min(by_root, key=lambda r: (waited(r), r))
    keys = sorted(by_root[root])
    for key in keys:
        if node.keys[key].state is not None:
            plan.label(node.name, L.node_cache_label(key), None)
    plan.create.append(render_gc_job(node.name, node.taints, root, keys, inp.settings))
    reasons = "; ".join(f"{_what(node, k)}: {chosen[k][1]}" for k in keys)
    _event(plan, node, "Normal", "CacheRemoving", f"removing under {root}: {reasons}")


def render_gc_job(
    node: str,
    taints: Sequence[Mapping[str, Any]],
    root: str,
    keys: Sequence[str],
    settings: GcSettings,
) -> dict[str, Any]:
    """A Job that runs cacheclean for ``keys`` under the hostPath ``root`` of ``node``.

    It tolerates the GPU taint and every taint the node has now: it must run on that
    node, whatever keeps other pods off it.
    """
    labels = {L.COMPONENT: CACHE_GC, L.CACHE_NODE: node}
    meta = {
        "name": gc_job_name(node),
        "namespace": settings.namespace,
        "labels": labels | {L.MANAGED_BY: "mistral-operator"},
        "annotations": {
            GC_JOB_ANNOTATION: json.dumps({"root": root, "keys": list(keys)}, sort_keys=True)
        },
    }
    args = ["--root", CACHE_MOUNT]
    for key in keys:
        args += ["--remove", key]
    args += ["--termination-log", TERMINATION_LOG]
    container = cache_container(
        "clean",
        settings.image,
        ["mistral-operator", "cacheclean"],
        args,
        {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    )
    tolerations: list[dict[str, Any]] = [GPU_TOLERATION]
    for taint in taints:
        toleration = {"key": taint.get("key"), "operator": "Exists", "effect": taint.get("effect")}
        if taint.get("key") and toleration not in tolerations:
            tolerations.append(toleration)
    return pinned_job(
        meta,
        labels,
        node,
        container,
        root,
        host_path_type="Directory",
        tolerations=tolerations,
        deadline_seconds=GC_DEADLINE_SECONDS,
        backoff_limit=0,
    )


def render_event(event: NodeEvent, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about a node (shown by `kubectl describe node`).

    It lives in ``default``, as the kubelet's node events do: the API server refuses an
    event about a cluster-scoped object in any other namespace (involvedObject.namespace,
    empty, must match it), such as the GC Jobs' own.
    """
    stamp = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{event.node[:200]}.", "namespace": NODE_EVENT_NAMESPACE},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Node",
            "name": event.node,
            "uid": event.uid,
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:EVENT_MESSAGE_MAX],
        "source": {"component": "mistral-operator"},
        "reportingComponent": "mistral-operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


# -- small helpers ----------------------------------------------------------------------


def _deletion(job: GcJob, reason: str) -> JobDeletion:
    return JobDeletion(job.namespace, job.job.name, job.job.uid, reason)


def _event(plan: GcPlan, node: NodeCaches, kind: str, reason: str, message: str) -> None:
    plan.events.append(NodeEvent(node.name, node.uid, kind, reason, message))
    level = logging.WARNING if kind == "Warning" else logging.INFO
    plan.log.append((level, f"cache GC: node {node.name}: {message}"))


def _what(node: NodeCaches, key: str) -> str:
    cached = node.keys.get(key)
    if cached is None or cached.what == key:
        return key
    return f"{key} ({cached.what})"


def _json(text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _root(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith("/"):
        return None
    return value.rstrip("/") or "/"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    try:
        return parse_time(value)
    except ValueError:
        return None
