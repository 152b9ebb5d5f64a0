"""Weight caches: which nodes (or which claim) get a fill, what each fill's state is, what to write.

NodeLocal: per node and cache key the state lives in a node label
(`cache.mistral-operator.dev/<key>`: Pending, Filling, Ready or Failed); a fill is a Job
of the model pinned to the node. The label is the memory of a finished fill (the Job is
deleted once the label says Ready); the Job is the truth while a fill runs or has failed.
Groups are placed only on nodes Ready for their key (see lifecycle.converge_groups), so
nodes get fills when:

- a group runs there (also of an older revision: the new one is staged beside it),
- a group must be created and no Ready node has room: the nodes placement would choose
  without the cache (``Tally.cache_waits``),
- ``cache.prewarmSpareNodes`` asks for N more eligible nodes kept Ready.

A failed fill is retried by its Job (two more pods, 10 s and 20 s apart); once the Job
itself has failed, the operator deletes it after a backoff and starts a new one.

SharedPVC: the same, with the claim in place of a node: one fill Job per (claim, key),
not pinned to a node, its state in the same label on the PersistentVolumeClaim (shared by
every model that reads the claim, and kept across operator restarts). No group is created
until the claim is Ready for the key; then any node will do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mistral_operator.cachefill.result import FillResult
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.fill_jobs import (
    CacheView,
    FillJob,
    FillTarget,
    fill_job_name,
    observe_fill_jobs,
    render_fill_job,
)
from mistral_operator.core.groups import ObservedGroup
from mistral_operator.core.placement import PlacementRequest, eligible
from mistral_operator.core.snapshot import Deletion, Event, Tally
from mistral_operator.core.timestamps import format_time, parse_time

PENDING, FILLING, READY, FAILED = "Pending", "Filling", "Ready", "Failed"
RETRY_FIRST = timedelta(seconds=30)
RETRY_MAX = timedelta(minutes=10)
# Job failure reasons of the Job controller, named for status.
_JOB_REASONS = {"DeadlineExceeded": "DeadlineExceeded", "BackoffLimitExceeded": "Unexpected"}


def retry_backoff(attempts: int) -> timedelta:
    """How long a failed fill Job stays before the next one: 30 s, doubling, at most 10 min."""
    doubled: timedelta = RETRY_FIRST * (2 ** min(max(0, attempts - 1), 10))
    return min(doubled, RETRY_MAX)


@dataclass(frozen=True)
class Fill:
    """The decided state of the current key's cache on one node, or on the shared claim."""

    target: FillTarget
    state: str
    job: str | None = None
    attempts: int = 0
    start: datetime | None = None
    completion: datetime | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    bytes_per_second: float | None = None
    reason: str | None = None
    file: str | None = None
    exit_code: int | None = None
    message: str | None = None
    retry_at: datetime | None = None
    repaired: tuple[str, ...] = ()  # files a recheck found damaged and fetched again

    def status(self) -> dict[str, Any]:
        """An entry of status.cache.nodes, or status.cache.claim."""
        out: dict[str, Any] = {
            "node" if self.target.kind == "node" else "name": self.target.name,
            "state": self.state,
            "job": self.job,
            "attempts": self.attempts or None,
            "startTime": _time(self.start),
            "completionTime": _time(self.completion),
            "bytesDone": self.bytes_done,
            "bytesTotal": self.bytes_total,
            "bytesPerSecond": self.bytes_per_second,
            "reason": self.reason,
            "file": self.file,
            "exitCode": self.exit_code,
            "message": self.message,
            "retryAt": _time(self.retry_at),
        }
        return {k: v for k, v in out.items() if v is not None}


def observe_cache(work: Tally) -> CacheView:
    observed, key = work.observed, work.inp.weights.key
    jobs = observe_fill_jobs(observed.fill_jobs, observed.fill_pods)
    label = L.node_cache_label(key)
    pvc = work.spec.cache.pvc
    if work.spec.cache.mode == "SharedPVC" and pvc is not None:
        claim = observed.claims.get(pvc.claim_name)
        job = _claim_job(jobs, pvc.claim_name, key)
        claim_ready = claim is not None and (
            (job is not None and job.complete)
            or (_labels(claim).get(label) == READY and not (job is not None and job.failed))
        )
        return CacheView(
            node_local=False,
            key=key,
            jobs=jobs,
            # Every node reads a Ready claim alike; none may get a group before.
            ready=frozenset(observed.inventory) if claim_ready else frozenset(),
            filling=frozenset(),
            claim=pvc.claim_name,
        )
    current = {j.node: j for j in jobs.values() if j.key == key and not j.claim and not j.deleting}
    ready = {
        name
        for name, node in observed.inventory.items()
        if (name in current and current[name].complete)
        or (node.labels.get(label) == READY and not (name in current and current[name].failed))
    }
    filling = {n for n, j in current.items() if not j.complete and not j.failed} - ready
    return CacheView(
        node_local=work.spec.cache.mode == "NodeLocal",
        key=key,
        jobs=jobs,
        ready=frozenset(ready),
        filling=frozenset(filling),
    )


def plan_fills(
    work: Tally,
    request: PlacementRequest,
    live: Mapping[str, ObservedGroup],
    groups: Mapping[str, ObservedGroup],
) -> None:
    """Fill Jobs to start, retry or drop; node labels; ``status.cache`` and its events.

    ``live``: the running groups (any revision); with the groups created in this plan,
    their nodes need the current key. ``groups``: every group observed, failed ones
    too (their pods may say a cache is not what its label says).
    """
    view = work.cache
    assert view is not None  # observe_cache runs first
    if view.claim is not None:
        _plan_claim_fill(work, view.claim, live, groups)
        return
    if not view.node_local:
        for job in view.jobs.values():
            _drop_job(work, job, "cache.mode is no longer NodeLocal")
        work.cache_status = _uncached_status(work)
        return
    inventory = work.observed.inventory
    group_nodes = [p.node for g in live.values() for p in g.pods.values() if p.node]
    if work.placement is not None:
        group_nodes += [n for group in work.placement.groups for n in group]
    wanted = list(dict.fromkeys([*group_nodes, *(n for g in work.cache_waits for n in g)]))
    wanted += _spares(work, request, set(wanted))
    mine = {
        j.node: j
        for j in view.jobs.values()
        if j.key == view.key and not j.claim and not j.deleting
    }
    for job in view.jobs.values():
        node = inventory.get(job.node)
        if job.deleting:
            continue
        if job.claim:
            _drop_job(work, job, "cache.mode is no longer SharedPVC")
        elif job.key != view.key:
            _drop_job(work, job, f"cache key {job.key} is no longer the model's")
        elif node is None or not node.healthy:
            _drop_job(work, job, f"node {job.node} cannot run it")
            mine.pop(job.node, None)
    suspects = _suspects(work, groups)
    fills = []
    # A node a failed group left is no longer wanted, but its Ready cache is in doubt.
    doubted = [n for n in sorted(suspects) if n in inventory and _ready_label(work, n)]
    for name in dict.fromkeys([*wanted, *sorted(mine), *doubted]):
        node = inventory.get(name)
        if node is None or not node.healthy:
            continue
        fills.append(
            _decide(
                work,
                FillTarget.node(name),
                node.labels,
                mine.get(name),
                name in wanted,
                suspect=suspects.get(name),
            )
        )
    work.cache_status = _status(work, fills)


def _plan_claim_fill(
    work: Tally,
    claim: str,
    live: Mapping[str, ObservedGroup],
    groups: Mapping[str, ObservedGroup],
) -> None:
    """SharedPVC: one fill of the claim for the current key, decided as a node's is."""
    view, pvc = work.cache, work.spec.cache.pvc
    assert view is not None
    assert pvc is not None
    target = FillTarget.claim(claim, pvc.sub_path)
    found = work.observed.claims.get(claim)
    mine = None
    for job in view.jobs.values():
        if job.deleting:
            continue
        if not job.claim:
            _drop_job(work, job, "cache.mode is no longer NodeLocal")
        elif job.claim != claim or job.key != view.key:
            _drop_job(work, job, f"claim {job.claim}, cache key {job.key}: no longer the model's")
        elif found is None:
            _drop_job(work, job, f"claim {claim} is gone")
        else:
            mine = job
    if found is None:
        # Nothing to fill into, nor to keep the state on: wait for the claim to appear.
        work.cache_status = _claim_status(work, Fill(target, PENDING), None)
        return
    wanted = bool(live) or bool(work.cache_waits) or work.spec.replicas > 0
    suspect = _suspects(work, groups).get("")
    fill = _decide(work, target, _labels(found), mine, wanted, suspect=suspect)
    work.cache_status = _claim_status(work, fill, found)


def _claim_job(jobs: Mapping[str, FillJob], claim: str, key: str) -> FillJob | None:
    return next(
        (j for j in jobs.values() if j.claim == claim and j.key == key and not j.deleting), None
    )


def _ready_label(work: Tally, node: str) -> bool:
    assert work.cache is not None
    return work.observed.inventory[node].labels.get(L.node_cache_label(work.cache.key)) == READY


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


@dataclass(frozen=True)
class Suspect:
    """A pod of the current revision that could not use a cache said to be Ready."""

    pod: str
    symptom: str  # what the pod shows, for the event
    # A check of the cache that finished before this does not clear the doubt.
    stale_before: datetime


def _suspects(work: Tally, groups: Mapping[str, ObservedGroup]) -> dict[str, Suspect]:
    """Nodes (or, for a shared claim, the claim: key ``""``) whose Ready cache a pod of
    the current revision could not use.

    - A pod still ``ContainerCreating`` ``--cache-verify-after-seconds`` after it was
      made: its node cannot mount the cache directory (a label that says Ready for a
      directory that is gone: a wiped or replaced disk). A check that finished after the
      pod was made clears it: the pod is checked for once.
    - A pod not Ready whose server exited (restarted, or waiting in
      ``CrashLoopBackOff``): it may not load what is there (files removed or cut short,
      a wiped claim); the pod cannot say whether it ever loaded, so a crash while
      serving is doubted too. Its group is recreated at once, so it is doubted at once; a check
      that finished less than ``--cache-verify-after-seconds`` before the pod was made
      clears it, so a server that crashes for another reason costs one check per that
      period, not one per crash.

    Such a cache is checked again with a fill that verifies every file's checksum: it
    finds the directory intact, or fetches what is missing or damaged.
    """
    observed = work.observed
    after = timedelta(seconds=observed.fill_settings.verify_after_seconds)
    shared = work.cache is not None and work.cache.claim is not None
    out: dict[str, Suspect] = {}
    for group in groups.values():
        if group.revision != work.inp.revision:
            continue
        for pod in group.pods.values():
            if pod.created is None or not pod.node or pod.ready:
                continue
            target = "" if shared else pod.node
            if pod.restarts > 0 or pod.waiting_reason == "CrashLoopBackOff":
                out.setdefault(target, Suspect(pod.name, "crash-loops", pod.created - after))
            elif pod.waiting_reason == "ContainerCreating":
                if observed.now >= pod.created + after:
                    symptom = "waits in ContainerCreating"
                    out.setdefault(target, Suspect(pod.name, symptom, pod.created))
                else:
                    work.plan.wake(pod.created + after)
    return out


def _spares(work: Tally, request: PlacementRequest, used: set[str]) -> list[str]:
    """``prewarmSpareNodes`` more eligible nodes: Ready ones first, then those filling."""
    view = work.cache
    assert view is not None
    count = work.spec.cache.prewarm_spare_nodes
    if count == 0:
        return []
    candidates = [
        n
        for n in work.observed.inventory.values()
        if n.name not in used and eligible(n, replace(request, allowed_nodes=None))
    ]
    candidates.sort(
        key=lambda n: (n.name not in view.ready, n.name not in view.filling, -n.gpus_free, n.name)
    )
    return [n.name for n in candidates[:count]]


def _decide(
    work: Tally,
    target: FillTarget,
    labels: Mapping[str, str],
    job: FillJob | None,
    wanted: bool,
    *,
    suspect: Suspect | None = None,
) -> Fill:
    """One target's fill: from its label (``labels``, the node's or the claim's), this
    model's Job for it and the last status; starts, retries and records as needed."""
    view, observed = work.cache, work.observed
    assert view is not None
    label_key = L.node_cache_label(view.key)
    label = labels.get(label_key)
    prior = _prior(work, target)
    attempts = int(prior.get("attempts") or 0)
    if job is not None:
        attempts = max(attempts, job.attempt)
    # A Ready label (another model's fill, or ours before the Job went) stands unless this
    # model's Job says otherwise: one still running will find the directory ready.
    decisive = job is not None and (job.complete or job.failed or label != READY)
    fill = _from_job(work, target, job, attempts) if job is not None and decisive else None

    if fill is None and label == READY and suspect is not None:
        filled = parse_time(prior.get("completionTime"))
        if filled is None or filled < suspect.stale_before:
            attempts += 1
            work.plan.apply.append(
                render_fill_job(
                    work.inp, target, observed.fill_settings, attempts, verify_checksums=True
                )
            )
            _set_labels(work, target, {label_key: PENDING})
            work.plan.events.append(
                Event(
                    "Warning",
                    "CacheRecheck",
                    f"{target}: pod {suspect.pod} {suspect.symptom} although the cache is "
                    "Ready; verifying every file's checksum and fetching what is missing "
                    "or damaged",
                )
            )
            return Fill(target, PENDING, job=_job_name(work, target), attempts=attempts)
    if fill is None and label == READY:
        fill = Fill(
            target,
            READY,
            attempts=attempts,
            start=parse_time(prior.get("startTime")),
            completion=parse_time(prior.get("completionTime")),
            bytes_done=prior.get("bytesDone"),
            bytes_total=prior.get("bytesTotal"),
            bytes_per_second=prior.get("bytesPerSecond"),
        )
    elif fill is None and wanted:
        # A Job created a moment ago may not be in the watch cache yet: the apply that
        # follows is the same Job, not another attempt.
        if not (prior.get("state") == PENDING and prior.get("job") == _job_name(work, target)):
            attempts += 1
        work.plan.apply.append(render_fill_job(work.inp, target, observed.fill_settings, attempts))
        fill = Fill(target, PENDING, job=_job_name(work, target), attempts=attempts)
    if fill is None:
        return Fill(target, label or PENDING, attempts=attempts)

    if job is not None and label == READY and fill.state == READY and job.complete:
        # The label remembers it now: the Job (and its pod) can go.
        work.plan.delete.append(
            Deletion("Job", job.name, job.uid, "fill done", api_version="batch/v1")
        )
        fill = replace(fill, job=None)
    if label != fill.state and not (label == READY and fill.state != FAILED):
        _set_labels(work, target, {label_key: fill.state})
        if fill.state == READY and job is not None:
            _record_contents(work, target, job)
    _announce(work, fill, prior)
    return fill


def _set_labels(work: Tally, target: FillTarget, labels: dict[str, str | None]) -> None:
    writes = work.plan.node_labels if target.kind == "node" else work.plan.claim_labels
    writes.append((target.name, labels))


def _cache_root(work: Tally, target: FillTarget) -> str:
    """Where the key directories are: the node's cache.hostPath, or the directory in the
    claim's volume (``/<subPath>``)."""
    if target.kind == "node":
        return work.spec.cache.host_path
    return f"/{target.sub_path or ''}"


def _record_contents(work: Tally, target: FillTarget, job: FillJob) -> None:
    """What a finished fill left on the node (or claim), for garbage collection: where,
    what, how big."""
    pod, weights = job.last_pod, work.inp.weights
    result = pod.result if pod is not None else None
    root = _cache_root(work, target)
    contents = {
        "root": root,
        "source": weights.source,
        "revision": weights.revision,
        "commit": result.commit if result else None,
        "bytes": result.total_bytes if result else None,
        "readyAt": _time(job.finished or work.observed.now),
    }
    notes: dict[str, str | None] = {
        L.node_cache_label(weights.key): json.dumps(contents, sort_keys=True)
    }
    if result is not None and result.disk_total_bytes:
        disk = {
            "root": root,
            "freeBytes": result.disk_free_bytes,
            "totalBytes": result.disk_total_bytes,
            "at": _time(job.finished or work.observed.now),
        }
        notes[L.NODE_CACHE_DISK] = json.dumps(disk, sort_keys=True)
    writes = work.plan.node_annotations if target.kind == "node" else work.plan.claim_annotations
    writes.append((target.name, notes))


def _from_job(work: Tally, target: FillTarget, job: FillJob, attempts: int) -> Fill:
    """What one fill Job and its newest pod say; a failed Job is retried after its backoff."""
    observed = work.observed
    pod = job.last_pod
    result = pod.result if pod is not None else None
    base = Fill(target, PENDING, job=job.name, attempts=attempts, start=job.started)
    if job.complete:
        return replace(
            base,
            state=READY,
            completion=job.finished,
            bytes_done=result.total_bytes if result else None,
            bytes_total=result.total_bytes if result else None,
            bytes_per_second=result.bytes_per_second if result else None,
            repaired=result.repaired if result else (),
        )
    failed_pod = pod is not None and pod.exit_code not in (None, 0) and not pod.running
    if job.failed or failed_pod:
        failure = result if result is not None and not result.ready else None
        fill = replace(
            base,
            state=FAILED,
            completion=(pod.finished if pod is not None else None) or job.finished,
            bytes_done=failure.done_bytes if failure else None,
            bytes_total=failure.total_bytes if failure else None,
            reason=failure.reason if failure else _JOB_REASONS.get(job.failed_reason, "Unexpected"),
            file=failure.file if failure else None,
            exit_code=pod.exit_code if pod is not None else None,
            message=_failure_message(job, pod.message if pod is not None else "", failure),
        )
        if job.failed:
            retry_at = (job.failed_at or observed.now) + retry_backoff(attempts)
            if observed.now >= retry_at:
                work.plan.delete.append(
                    Deletion("Job", job.name, job.uid, "retry the fill", api_version="batch/v1")
                )
            else:
                work.plan.wake(retry_at)
            fill = replace(fill, retry_at=retry_at)
        return fill
    if pod is not None and pod.running:
        progress = observed.fill_progress.get(pod.name) or {}
        work.plan.wake(observed.now + timedelta(seconds=observed.fill_settings.progress_seconds))
        return replace(
            base,
            state=FILLING,
            start=pod.started or job.started,
            bytes_done=_num(progress.get("doneBytes")),
            bytes_total=_num(progress.get("totalBytes")),
            bytes_per_second=_rate(progress.get("bytesPerSecond")),
        )
    return base


def _failure_message(job: FillJob, raw: str, result: FillResult | None) -> str:
    if result is not None and result.message:
        return result.message
    if job.failed_reason == "DeadlineExceeded":
        return "the fill ran past cache.fillTimeoutSeconds"
    lines = [line for line in raw.strip().splitlines() if line.strip()]
    return lines[-1][:512] if lines else f"the fill Job failed ({job.failed_reason or 'no reason'})"


def _drop_job(work: Tally, job: FillJob, reason: str) -> None:
    work.plan.delete.append(Deletion("Job", job.name, job.uid, reason, api_version="batch/v1"))
    label = L.node_cache_label(job.key)
    if job.claim:
        claim = work.observed.claims.get(job.claim)
        target, labels = FillTarget.claim(job.claim), _labels(claim) if claim else None
    else:
        node = work.observed.inventory.get(job.node)
        target, labels = FillTarget.node(job.node), node.labels if node else None
    if labels is not None and not job.complete and labels.get(label) in (PENDING, FILLING):
        # A fill cut short leaves no cache: its label must not say one is coming.
        _set_labels(work, target, {label: None})


def _announce(work: Tally, fill: Fill, prior: Mapping[str, Any]) -> None:
    before = prior.get("state")
    events = work.plan.events
    if fill.state == FILLING and before != FILLING:
        events.append(
            Event(
                "Normal",
                "CacheFilling",
                f"{fill.target}: filling {work.inp.weights.source}@{work.inp.weights.revision} "
                f"(attempt {fill.attempts})",
            )
        )
    elif fill.state == READY and before not in (None, READY):
        events.append(Event("Normal", "CacheReady", f"{fill.target}: {_done_words(fill)}"))
        if fill.repaired:
            events.append(
                Event(
                    "Warning",
                    "CacheRepaired",
                    f"{fill.target}: {len(fill.repaired)} file(s) were missing or damaged "
                    f"and were fetched again: {', '.join(fill.repaired)}",
                )
            )
    elif fill.state == FAILED and (before != FAILED or prior.get("message") != fill.message):
        events.append(Event("Warning", "CacheFillFailed", f"{fill.target}: {_failure(fill)}"))


def _failure(fill: Fill) -> str:
    where = f" in {fill.file}" if fill.file else ""
    return f"{fill.reason}{where}: {fill.message}"


def _done_words(fill: Fill) -> str:
    words = "weights ready"
    if fill.bytes_done:
        words += f" ({fill.bytes_done / 2**30:.2f} GiB"
        if fill.bytes_per_second:
            words += f" at {fill.bytes_per_second / 2**20:.1f} MiB/s"
        words += ")"
    return words


def _status(work: Tally, fills: list[Fill]) -> dict[str, Any]:
    counts = {s: sum(1 for f in fills if f.state == s) for s in (PENDING, FILLING, READY, FAILED)}
    waits = sorted({n for g in work.cache_waits for n in g})
    failed = [f for f in fills if f.state == FAILED]
    if failed:
        state = FAILED
        message = "; ".join(f"{f.target.name}: {_failure(f)}" for f in failed)
    elif counts[PENDING] or counts[FILLING]:
        state = FILLING
        message = f"{counts[READY]}/{len(fills)} nodes ready, {counts[FILLING]} filling"
    else:
        state = READY
        message = f"{counts[READY]}/{len(fills)} nodes ready"
    if waits:
        message = f"{len(work.cache_waits)} group(s) wait for weights on {', '.join(waits)}; " + (
            message
        )
    done = [f.bytes_done for f in fills if f.bytes_done is not None]
    total = [f.bytes_total for f in fills if f.bytes_total is not None]
    rates = [f.bytes_per_second for f in fills if f.state == FILLING and f.bytes_per_second]
    return {
        "state": state,
        "message": message,
        "readyNodes": counts[READY],
        "fillingNodes": counts[FILLING],
        "pendingNodes": counts[PENDING],
        "failedNodes": counts[FAILED],
        "bytesDone": sum(done) if done else None,
        "bytesTotal": sum(total) if total else None,
        "bytesPerSecond": sum(rates) if rates else None,
        "nodes": [f.status() for f in sorted(fills, key=lambda f: f.target.name)],
    }


def _claim_status(work: Tally, fill: Fill, claim: Mapping[str, Any] | None) -> dict[str, Any]:
    """status.cache of a SharedPVC model: the claim's fill, and why groups wait if they do."""
    name, weights = fill.target.name, work.inp.weights
    phase = str(((claim or {}).get("status") or {}).get("phase") or "Pending")
    if claim is None:
        state = FILLING
        message = (
            f"PersistentVolumeClaim {name} not found in namespace "
            f"{work.observed.model.namespace}: the weights are filled into it once it exists"
        )
        fill = replace(fill, message=message)
    elif fill.state == FAILED:
        state, message = FAILED, f"claim {name}: {_failure(fill)}"
    elif fill.state == READY:
        state, message = READY, f"claim {name} holds the weights; pods read {weights.model_path}"
    else:
        doing = "filling" if fill.state == FILLING else "fill pending"
        state, message = FILLING, f"claim {name}: {doing}"
        if phase != "Bound":
            message += f" (the claim is {phase}: not bound to a volume yet)"
    if work.cache_waits:
        message = f"{len(work.cache_waits)} group(s) wait for weights on claim {name}; {message}"
    return {
        "state": state,
        "message": message,
        "bytesDone": fill.bytes_done,
        "bytesTotal": fill.bytes_total,
        "bytesPerSecond": fill.bytes_per_second if fill.state == FILLING else None,
        "claim": fill.status(),
    }


def _uncached_status(work: Tally) -> dict[str, Any]:
    weights = work.inp.weights
    return {
        "state": "NotCached",
        "message": f"cache.mode None: each pod downloads {weights.source} at revision "
        f"{weights.revision} when it starts; nothing is kept on the nodes",
    }


def _prior(work: Tally, target: FillTarget) -> Mapping[str, Any]:
    """The target's record in the last status, when it spoke of the same key."""
    cache = work.observed.status.get("cache") or {}
    if cache.get("key") != work.inp.weights.key:
        return {}
    if target.kind == "claim":
        entry = cache.get("claim") or {}
        return entry if entry.get("name") == target.name else {}
    return next((n for n in cache.get("nodes") or [] if n.get("node") == target.name), {})


def _job_name(work: Tally, target: FillTarget) -> str:
    return fill_job_name(work.observed.model.name, target.ident, work.inp.weights.key)


def _time(t: datetime | None) -> str | None:
    return format_time(t) if t is not None else None


def _num(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _rate(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
