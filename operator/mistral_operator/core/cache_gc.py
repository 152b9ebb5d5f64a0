"""Garbage collection of weight caches: which keys leave which nodes and claims, and when.

Keys are kept by *holders*: a node (under its cache root, ``cache.hostPath``) or a
SharedPVC PersistentVolumeClaim (under the directory ``/<subPath>`` of its volume). Both
carry the same marks, read alike: a label ``cache.mistral-operator.dev/<key>``, an
annotation of the same name, a GC annotation of its own, and the disk annotation. A key
on a holder is *protected* while any of these holds:

- a MistralModel's ``status.cache.key`` or ``status.cache.lastGoodKey`` names it;
- an unfinished pod reading it from the holder carries it in its
  ``mistral-operator.dev/cache-key`` label: on a node, a pod bound there or pinned to it;
  on a claim, a pod of the claim's namespace that mounts the claim;
- a fill Job of the key exists for the holder (a claim's, in the claim's namespace). A
  ``Pending`` or ``Filling`` label alone does not keep it: a model deleted while it
  filled leaves that label behind, its Job gone with it (the reconciler writes the label
  before the Job, but a model that wants the key references it, or lags its generation,
  until the Job exists).

An unprotected key gets the annotation ``gc.cache.mistral-operator.dev/<key>`` on its
holder (when it was first seen unprotected); protection removes it again. A key
unprotected for the retention period is removed; when the holder's disk annotation says
more than the watermark of the disk is used, unprotected keys on that disk are removed
oldest first (by unused-since, then readyAt) until the bytes they hold bring it under
the watermark, before their retention ends. A key is removed only once it was seen
unprotected in an earlier round, never in the round that first sees it so.

A removal is a Job (one per holder at a time, all its keys under one root) running
``mistral-operator cacheclean``: a node's is pinned there with the root as a hostPath,
in the GC namespace; a claim's runs wherever the scheduler puts it, in the claim's
namespace, with the root as the claim mount's ``subPath``. A node that is not Ready, a
claim that is not Bound, or either being deleted, gets none. The keys' labels are
dropped as the Job is created, so placement stops counting the holder Ready for them.
When it has finished, its result (``cachefill.result.parse_clean_result``) says which
keys went: their label and annotations are dropped, the disk annotation is updated and
the Job is deleted. Keys it skipped, and every key of a Job that left no result, stay
for the next round. A GC Job whose holder is gone is deleted.

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
from typing import Any, Literal

from mistral_operator.cachefill.result import CleanResult, parse_clean_result
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.fill_jobs import (
    CACHE_MOUNT,
    TERMINATION_LOG,
    FillJob,
    cache_container,
    cache_job,
    observe_fill_jobs,
)
from mistral_operator.core.inventory import node_is_ready, pinned_node
from mistral_operator.core.render import GPU_TOLERATION
from mistral_operator.core.revision import digest
from mistral_operator.core.timestamps import format_time, parse_time

CACHE_GC = "cache-gc"  # the mistral-operator.dev/component of GC Jobs and their pods
# On a node or claim: since when a key has been unprotected (RFC 3339).
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
    namespace: str = "default"  # where nodes' GC Jobs run (a claim's run in its namespace)
    image: str = "mistral-operator:latest"  # the operator's own image (cacheclean)
    interval_seconds: float = 60.0


@dataclass(frozen=True)
class GcInput:
    """One round's view of the cluster, listed fresh, and the loop's memory."""

    nodes: Sequence[Mapping[str, Any]]
    # PersistentVolumeClaims of every namespace (those without cache marks hold nothing).
    claims: Sequence[Mapping[str, Any]]
    models: Sequence[Mapping[str, Any]]  # MistralModels of every namespace
    pods: Sequence[Mapping[str, Any]]  # pods with a mistral-operator.dev/model label
    fill_jobs: Sequence[Mapping[str, Any]]  # cache-fill Jobs of every namespace
    gc_jobs: Sequence[Mapping[str, Any]]  # cache-gc Jobs of every namespace
    gc_pods: Sequence[Mapping[str, Any]]  # their pods
    now: datetime
    settings: GcSettings = field(default_factory=GcSettings)
    # Model uid -> when this loop first saw its status lag its generation.
    unsettled_since: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, order=True)
class Holder:
    """What keeps cache keys: a node (cluster-scoped), or a SharedPVC claim in its namespace."""

    kind: Literal["node", "claim"]
    name: str
    namespace: str = ""  # a claim's; a node has none

    @classmethod
    def node(cls, name: str) -> Holder:
        return cls("node", name)

    @classmethod
    def claim(cls, namespace: str, name: str) -> Holder:
        return cls("claim", name, namespace)

    @property
    def ident(self) -> str:
        """What names the holder in its GC Job's name (no node's name holds a slash)."""
        return self.name if self.kind == "node" else f"{self.namespace}/{self.name}"

    @property
    def api_kind(self) -> str:
        """The kind of the object the holder's marks are written on."""
        return "Node" if self.kind == "node" else "PersistentVolumeClaim"

    @property
    def job_label(self) -> str:
        """The label of a cache Job (fill or GC) that names its holder."""
        return L.CACHE_NODE if self.kind == "node" else L.CACHE_CLAIM

    def __str__(self) -> str:
        return f"{self.kind} {self.ident}"


@dataclass(frozen=True)
class JobDeletion:
    namespace: str
    name: str
    uid: str
    reason: str


@dataclass(frozen=True)
class GcEvent:
    """An event about a holder: its object is the Node or the PersistentVolumeClaim."""

    holder: Holder
    uid: str
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class GcPlan:
    """What the shell executes, in this order: deletes, annotations, labels, creates;
    then events. Labels go before a create so no model reads a Ready label of a key whose
    removal has started. Annotations and labels are by holder: the shell patches that
    Node or PersistentVolumeClaim."""

    delete: list[JobDeletion] = field(default_factory=list)
    annotations: dict[Holder, dict[str, str | None]] = field(default_factory=dict)
    labels: dict[Holder, dict[str, str | None]] = field(default_factory=dict)
    create: list[dict[str, Any]] = field(default_factory=list)
    events: list[GcEvent] = field(default_factory=list)
    log: list[tuple[int, str]] = field(default_factory=list)  # (logging level, line)
    unsettled_since: dict[str, datetime] = field(default_factory=dict)

    def annotate(self, holder: Holder, key: str, value: str | None) -> None:
        self.annotations.setdefault(holder, {})[key] = value

    def label(self, holder: Holder, key: str, value: str | None) -> None:
        self.labels.setdefault(holder, {})[key] = value


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
    """One key on one holder, as its label and annotations tell it."""

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
class HeldCaches:
    """The keys one holder keeps, and whether a GC pod can reach them."""

    holder: Holder
    uid: str
    # A GC pod can run there: a Ready node, a Bound claim; neither being deleted.
    usable: bool
    taints: tuple[Mapping[str, Any], ...]  # a node's, which its GC Job tolerates
    keys: dict[str, CachedKey]
    disk: Disk | None


@dataclass(frozen=True)
class GcJob:
    job: FillJob  # the Job and its pods, read as fill Jobs are
    holder: Holder
    namespace: str
    root: str
    keys: tuple[str, ...]


# (holder, key) -> the fill Jobs for it, each with its namespace.
Fills = Mapping[tuple[Holder, str], list[tuple[str, FillJob]]]


def gc_job_name(holder: str) -> str:
    """One name per holder (``Holder.ident``): a second GC Job for it cannot exist beside
    the first."""
    return f"cache-gc-{digest([holder], 10)}"


def plan_gc(inp: GcInput) -> GcPlan:
    plan = GcPlan()
    referenced = _referenced(inp.models)
    lagging = _lagging(inp, plan)
    in_use = _in_use(inp.pods)
    fills = _fill_jobs(inp.fill_jobs)
    gc_jobs = _gc_jobs(inp.gc_jobs, inp.gc_pods)
    holdings = [_node_caches(n) for n in inp.nodes] + [_claim_caches(c) for c in inp.claims]
    _delete_orphans(plan, gc_jobs, {h.holder for h in holdings})
    deferred: list[str] = []
    for held in holdings:
        holder = held.holder
        jobs = gc_jobs.get(holder, [])
        gone: set[str] = set()
        for job in jobs:
            gone |= _finish(plan, inp, held, job, fills)
        protected = referenced | in_use.get(holder, set()) | {k for (h, k) in fills if h == holder}
        _track(plan, inp.now, held, protected, gone)
        if jobs:
            continue  # one GC Job per holder at a time
        chosen = _choose(plan, inp, held, protected)
        if not chosen:
            continue
        if lagging:
            deferred.append(str(holder))
            continue
        _start(plan, inp, held, chosen)
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


def _in_use(pods: Iterable[Mapping[str, Any]]) -> dict[Holder, set[str]]:
    """Holder -> the keys its unfinished pods read."""
    out: dict[Holder, set[str]] = {}
    for pod in pods:
        key = (pod.get("metadata", {}).get("labels") or {}).get(L.CACHE_KEY)
        if not key or (pod.get("status") or {}).get("phase") in _TERMINAL_PHASES:
            continue
        for holder in _read_from(pod):
            out.setdefault(holder, set()).add(key)
    return out


def _read_from(pod: Mapping[str, Any]) -> list[Holder]:
    """Where a pod may read its cache key from: the node it is bound (or pinned) to, and
    every claim it mounts (a SharedPVC pod reads the claim, whichever node it is on)."""
    spec = pod.get("spec") or {}
    namespace = str(pod.get("metadata", {}).get("namespace") or "")
    node = spec.get("nodeName") or pinned_node(pod)
    holders = [Holder.node(node)] if node else []
    for volume in spec.get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            holders.append(Holder.claim(namespace, str(claim)))
    return holders


def _job_holder(namespace: str, job: FillJob) -> Holder:
    """What a cache Job (fill or GC) works on: a claim of its namespace, else its node."""
    return Holder.claim(namespace, job.claim) if job.claim else Holder.node(job.node)


def _fill_jobs(jobs: Iterable[Mapping[str, Any]]) -> Fills:
    """(holder, key) -> the fill Jobs for it, each with its namespace."""
    out: dict[tuple[Holder, str], list[tuple[str, FillJob]]] = {}
    for raw in jobs:
        namespace = str(raw["metadata"].get("namespace") or "")
        for job in observe_fill_jobs([raw], []).values():
            out.setdefault((_job_holder(namespace, job), job.key), []).append((namespace, job))
    return out


def _gc_jobs(
    jobs: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> dict[Holder, list[GcJob]]:
    out: dict[Holder, list[GcJob]] = {}
    for raw in jobs:
        meta = raw["metadata"]
        asked = _json((meta.get("annotations") or {}).get(GC_JOB_ANNOTATION))
        keys = asked.get("keys")
        namespace = str(meta.get("namespace") or "")
        # Read one by one: observe_fill_jobs keys Jobs by name, and two namespaces may
        # each hold a GC Job of one name (a node's, left in a former GC namespace).
        job = observe_fill_jobs([raw], pods)[meta["name"]]
        gc_job = GcJob(
            job=job,
            holder=_job_holder(namespace, job),
            namespace=namespace,
            root=str(asked.get("root") or ""),
            keys=tuple(str(k) for k in keys) if isinstance(keys, list) else (),
        )
        out.setdefault(gc_job.holder, []).append(gc_job)
    return out


def _delete_orphans(
    plan: GcPlan, gc_jobs: Mapping[Holder, list[GcJob]], holders: set[Holder]
) -> None:
    """GC Jobs of a node or claim that is gone have nothing left to clean."""
    for holder, jobs in sorted(gc_jobs.items()):
        if holder in holders:
            continue
        for job in jobs:
            if not job.job.deleting:
                plan.delete.append(_deletion(job, f"{holder} is gone"))


def _node_caches(node: Mapping[str, Any]) -> HeldCaches:
    meta = node.get("metadata") or {}
    return _held_caches(
        Holder.node(str(meta.get("name") or "")),
        node,
        usable=node_is_ready(node) and not meta.get("deletionTimestamp"),
        taints=tuple((node.get("spec") or {}).get("taints") or ()),
    )


def _claim_caches(claim: Mapping[str, Any]) -> HeldCaches:
    # An unbound claim has no volume to clean yet; a GC pod mounting it would bind it.
    meta = claim.get("metadata") or {}
    bound = (claim.get("status") or {}).get("phase") == "Bound"
    return _held_caches(
        Holder.claim(str(meta.get("namespace") or ""), str(meta.get("name") or "")),
        claim,
        usable=bound and not meta.get("deletionTimestamp"),
        taints=(),
    )


def _held_caches(
    holder: Holder,
    obj: Mapping[str, Any],
    *,
    usable: bool,
    taints: tuple[Mapping[str, Any], ...],
) -> HeldCaches:
    """The keys a Node's or a claim's labels and annotations name, as they tell them."""
    meta = obj.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    notes: Mapping[str, str] = meta.get("annotations") or {}
    prefix = L.NODE_CACHE_PREFIX
    keys = {k.removeprefix(prefix) for k in labels if k.startswith(prefix)}
    keys |= {k.removeprefix(prefix) for k in notes if k.startswith(prefix)}
    keys |= {k.removeprefix(GC_PREFIX) for k in notes if k.startswith(GC_PREFIX)}
    keys.discard(L.NODE_CACHE_DISK.removeprefix(prefix))
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
    return HeldCaches(
        holder=holder,
        uid=str(meta.get("uid") or ""),
        usable=usable,
        taints=taints,
        keys=cached,
        disk=_disk(notes.get(L.NODE_CACHE_DISK)),
    )


def _disk(note: str | None) -> Disk | None:
    disk = _json(note)
    free, total = _int(disk.get("freeBytes")), _int(disk.get("totalBytes"))
    root = _root(disk.get("root"))
    if root and free is not None and total is not None and total > 0:
        return Disk(root, free, total)
    return None


# -- a finished GC Job ------------------------------------------------------------------


def _finish(plan: GcPlan, inp: GcInput, held: HeldCaches, job: GcJob, fills: Fills) -> set[str]:
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
            held,
            "Warning",
            "CacheGcFailed",
            f"GC Job {job.job.name} ended without a result ({why or 'no pod'}); "
            f"{', '.join(job.keys)} stay and are tried again",
        )
        return set()
    finished = (pod.finished if pod is not None else None) or job.job.finished or inp.now
    gone = set(result.removed) | set(result.absent)
    for key in sorted(gone):
        _forget(plan, held, key, fills.get((held.holder, key), []), finished)
    _report(plan, held, job, result)
    if result.disk_total_bytes:
        disk = {
            "root": job.root,
            "freeBytes": result.disk_free_bytes,
            "totalBytes": result.disk_total_bytes,
            "at": format_time(finished),
        }
        plan.annotate(held.holder, L.NODE_CACHE_DISK, json.dumps(disk, sort_keys=True))
    return gone


def _forget(
    plan: GcPlan,
    held: HeldCaches,
    key: str,
    fills: list[tuple[str, FillJob]],
    gc_finished: datetime,
) -> None:
    """A key's directory is gone: drop what says it is there.

    A fill Job started before the clean ended may have found the directory ready a moment
    before it went: if it completed, it is deleted (its model starts a new fill) and the
    label dropped. Other fill Jobs are their model's to report: only our note goes.
    """
    holder, cached = held.holder, held.keys.get(key)
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
        plan.annotate(holder, f"{GC_PREFIX}{key}", None)
    if honest:
        return
    if cached is not None and cached.state is not None:
        plan.label(holder, L.node_cache_label(key), None)
    if cached is not None and cached.contents:
        plan.annotate(holder, L.node_cache_label(key), None)


def _report(plan: GcPlan, held: HeldCaches, job: GcJob, result: CleanResult) -> None:
    if result.removed:
        gib = result.freed_bytes / 2**30
        names = ", ".join(_what(held, k) for k in result.removed)
        _event(plan, held, "Normal", "CacheRemoved", f"removed {names} ({gib:.2f} GiB freed)")
    if result.absent:
        plan.log.append(
            (
                logging.INFO,
                f"cache GC: {held.holder}: {', '.join(result.absent)} already gone "
                f"under {job.root}",
            )
        )
    locked = [s.key for s in result.skipped if s.reason == "locked"]
    if locked:
        plan.log.append(
            (
                logging.INFO,
                f"cache GC: {held.holder}: {', '.join(locked)} kept: a fill holds its lock",
            )
        )
    for skipped in result.skipped:
        if skipped.reason != "locked":
            _event(
                plan,
                held,
                "Warning",
                "CacheGcFailed",
                f"could not remove {_what(held, skipped.key)}: {skipped.reason}"
                + (f": {skipped.message}" if skipped.message else "")
                + "; tried again next round",
            )


# -- unused-since notes, and what to remove ---------------------------------------------


def _track(
    plan: GcPlan, now: datetime, held: HeldCaches, protected: set[str], gone: set[str]
) -> None:
    for key, cached in held.keys.items():
        if key in gone:
            continue
        note = f"{GC_PREFIX}{key}"
        if key in protected:
            if cached.gc_annotated:
                plan.annotate(held.holder, note, None)
                plan.log.append((logging.INFO, f"cache GC: {held.holder}: {key} is in use again"))
        elif cached.unused_since is None:
            plan.annotate(held.holder, note, format_time(now))


def _choose(
    plan: GcPlan, inp: GcInput, held: HeldCaches, protected: set[str]
) -> dict[str, tuple[str, str]]:
    """Key -> (root, why) of the keys to remove from this holder now."""
    if not held.usable:
        return {}
    settings = inp.settings
    candidates = [
        c for k, c in held.keys.items() if k not in protected and c.unused_since is not None
    ]
    chosen: dict[str, tuple[str, str]] = {}
    for c in candidates:
        assert c.unused_since is not None
        if inp.now - c.unused_since >= settings.retention:
            chosen[c.key] = (c.root or "", f"unused since {format_time(c.unused_since)}")
    disk = held.disk
    if disk is not None and disk.used_fraction > settings.watermark:
        need = (disk.total - disk.free) - settings.watermark * disk.total
        on_disk = [c for c in candidates if _frees(held, c, disk)]
        freed = sum(c.bytes or 0 for c in on_disk if c.key in chosen)
        why = f"disk {disk.used_fraction:.0%} used, over the {settings.watermark:.0%} watermark"
        oldest = sorted(
            (c for c in on_disk if c.key not in chosen),
            key=lambda c: (c.unused_since, c.ready_at or c.unused_since, c.key),
        )
        for c in oldest:
            if freed >= need:
                break
            chosen[c.key] = (c.root or disk.root, why)
            freed += c.bytes or 0
    out: dict[str, tuple[str, str]] = {}
    for key, (root, why) in chosen.items():
        where = root or (disk.root if disk is not None else "")
        if not where:
            plan.log.append(
                (
                    logging.DEBUG,
                    f"cache GC: {held.holder}: {key} would go but no annotation names its root",
                )
            )
            continue
        out[key] = (where, why)
    return out


def _frees(held: HeldCaches, cached: CachedKey, disk: Disk) -> bool:
    """Whether removing a key frees space on the disk its holder's disk annotation
    describes. A node may have a disk per cache root: a key counts under that root (or
    with no root of its own). A claim is one volume, whatever directory a key is in."""
    return held.holder.kind == "claim" or (cached.root or disk.root) == disk.root


def _start(
    plan: GcPlan, inp: GcInput, held: HeldCaches, chosen: dict[str, tuple[str, str]]
) -> None:
    """One GC Job for the root whose key has waited longest; other roots come next."""
    by_root: dict[str, list[str]] = {}
    for key, (root, _why) in chosen.items():
        by_root.setdefault(root, []).append(key)

    def waited(root: str) -> datetime:
        return min(held.keys[k].unused_since or inp.now for k in by_root[root])

    root = min(by_root, key=lambda r: (waited(r), r))
    keys = sorted(by_root[root])
    for key in keys:
        if held.keys[key].state is not None:
            plan.label(held.holder, L.node_cache_label(key), None)
    plan.create.append(render_gc_job(held, root, keys, inp.settings))
    reasons = "; ".join(f"{_what(held, k)}: {chosen[k][1]}" for k in keys)
    _event(plan, held, "Normal", "CacheRemoving", f"removing under {root}: {reasons}")


def render_gc_job(
    held: HeldCaches, root: str, keys: Sequence[str], settings: GcSettings
) -> dict[str, Any]:
    """A Job that runs cacheclean for ``keys`` under ``root`` of the holder: a node's
    hostPath, or the directory of a claim's volume.

    A node's Job runs there alone, in the GC namespace; a claim's, in the claim's
    namespace (a pod mounts claims of its own namespace only), wherever the scheduler
    puts it, as the claim's fills do.
    """
    holder = held.holder
    labels = {L.COMPONENT: CACHE_GC, holder.job_label: holder.name}
    meta = {
        "name": gc_job_name(holder.ident),
        "namespace": holder.namespace or settings.namespace,
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
    if holder.kind == "claim":
        node, tolerations = None, [GPU_TOLERATION]
        volume = _claim_volume(container, holder.name, root)
    else:
        node, tolerations = holder.name, _node_tolerations(held.taints)
        volume = {"name": "cache", "hostPath": {"path": root, "type": "Directory"}}
    return cache_job(
        meta,
        labels,
        container,
        volume,
        node=node,
        tolerations=tolerations,
        deadline_seconds=GC_DEADLINE_SECONDS,
        backoff_limit=0,
    )


def _node_tolerations(taints: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The GPU taint and every taint the node has now: the Job must run on that node,
    whatever keeps other pods off it."""
    tolerations: list[dict[str, Any]] = [GPU_TOLERATION]
    for taint in taints:
        toleration = {"key": taint.get("key"), "operator": "Exists", "effect": taint.get("effect")}
        if taint.get("key") and toleration not in tolerations:
            tolerations.append(toleration)
    return tolerations


def _claim_volume(container: dict[str, Any], claim: str, root: str) -> dict[str, Any]:
    """The claim, read-write, with the directory that holds the keys (``/<subPath>``) as
    the mount's subPath: the clean sees the keys at CACHE_MOUNT, as a node's does."""
    sub_path = root.strip("/")
    if sub_path:
        container["volumeMounts"][0]["subPath"] = sub_path
    return {"name": "cache", "persistentVolumeClaim": {"claimName": claim}}


def render_event(event: GcEvent, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about a node or claim (shown by `kubectl describe`).

    A claim's is in the claim's namespace. A node's lives in ``default``, as the
    kubelet's node events do: the API server refuses an event about a cluster-scoped
    object in any other namespace (involvedObject.namespace, empty, must match it), such
    as the GC Jobs' own.
    """
    holder, stamp = event.holder, format_time(now)
    involved = {"apiVersion": "v1", "kind": holder.api_kind, "name": holder.name}
    if holder.namespace:
        involved["namespace"] = holder.namespace
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{holder.name[:200]}.",
            "namespace": holder.namespace or NODE_EVENT_NAMESPACE,
        },
        "involvedObject": involved | {"uid": event.uid},
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


def _event(plan: GcPlan, held: HeldCaches, kind: str, reason: str, message: str) -> None:
    plan.events.append(GcEvent(held.holder, held.uid, kind, reason, message))
    level = logging.WARNING if kind == "Warning" else logging.INFO
    plan.log.append((level, f"cache GC: {held.holder}: {message}"))


def _what(held: HeldCaches, key: str) -> str:
    cached = held.keys.get(key)
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
