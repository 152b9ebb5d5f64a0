"""Kopf handlers: one reconcile loop per model, woken by events and by its own deadlines.

Each MistralModel has a daemon that reconciles it, then sleeps until the earliest of:
an event about the model, its pods or the nodes (they only wake the loop), the next
moment the core said time alone changes a decision (a backoff or grace period ends),
or the drift interval. Reconciles of all models run one at a time, so two models never
plan onto the same free nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mistral_operator.api import names
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core import node_interest
from mistral_operator.shell import cache_gc, group_metrics, metrics
from mistral_operator.shell.gpu_pods import GpuPods
from mistral_operator.shell.kubeapi import KubeApi, is_transient, load_config, refusal
from mistral_operator.shell.reconciler import Reconciler, Snapshot
from mistral_operator.shell.settings import RuntimeOptions, apply_settings
from mistral_operator.shell.stall import StaleViewError, StallFence

RESOURCE = (names.GROUP, names.VERSION, names.PLURAL)
# A reconcile that failed (an API error past its retries) is tried again this soon.
RETRY_SECONDS = 5.0
# A replica that did not run for this long (or a third of the peering lifetime, if
# longer) acts on nothing it saw before, and observes again after SETTLE_SECONDS.
STALL_SECONDS = 5.0
SETTLE_SECONDS = 5.0
# A deadline is acted on this long after it passes, so the core sees it passed.
DEADLINE_SLACK_SECONDS = 0.1

log = logging.getLogger(__name__)
_wakeups: dict[str, asyncio.Event] = {}
_generations: dict[str, int] = {}
# What node and GPU changes need of each model (by uid): its key and its ModelView.
_views: dict[str, tuple[tuple[str | None, str], node_interest.ModelView]] = {}
_node_fingerprints: dict[str, str] = {}
_claim_fingerprints: dict[tuple[str | None, str], str] = {}
_one_at_a_time = asyncio.Lock()


def poke(uid: str) -> None:
    """Wake one model's loop now (from the event loop's thread)."""
    wake = _wakeups.get(uid)
    if wake is not None:
        wake.set()


def poke_wanting_nodes() -> None:
    """Wake the models that could use GPUs anywhere (and those not seen yet)."""
    for uid in list(_wakeups):
        if node_interest.wants_gpus(_views.get(uid, (None, None))[1]):
            poke(uid)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options: RuntimeOptions = memo.get("options") or RuntimeOptions()
    apply_settings(settings, options)
    api_client = load_config()
    memo["options"] = options
    # A stall of a third of the peering lifetime may let a standby take over: after one,
    # nothing planned before is written (shell/stall.py).
    fence = StallFence(
        limit=max(STALL_SECONDS, options.peering_lifetime_seconds / 3), settle=SETTLE_SECONDS
    )
    memo["reconciler"] = Reconciler(
        KubeApi(api_client),
        node_grace=timedelta(seconds=options.node_grace_seconds),
        fill_settings=options.fill,
        fence=fence,
    )
    memo["stall_watch"] = asyncio.create_task(fence.watch(), name="stall watch")
    loop = asyncio.get_running_loop()

    def gpus_moved() -> None:  # called from the watch thread
        loop.call_soon_threadsafe(poke_wanting_nodes)

    gpu_pods = GpuPods(client.CoreV1Api(api_client), gpus_moved)
    await asyncio.to_thread(gpu_pods.start)
    memo["gpu_pods"] = gpu_pods
    memo["cache_gc"] = cache_gc.start(cache_gc.CacheGc(KubeApi(api_client), options.cache_gc))
    if options.metrics_port:
        metrics.serve(options.metrics_port)


@kopf.on.cleanup()
async def stop_watching(memo: kopf.Memo, **_: Any) -> None:
    gpu_pods: GpuPods | None = memo.get("gpu_pods")
    if gpu_pods is not None:
        gpu_pods.stop()
    await cache_gc.stop(memo.get("cache_gc"))
    watch: asyncio.Task[None] | None = memo.get("stall_watch")
    if watch is not None:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


# Indexes: the operator reads pods, Services and nodes from its watch caches, not by listing.
@kopf.index("pods", labels={L.MODEL: kopf.PRESENT})
def owned_pods(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> Any:
    return {(namespace, labels[L.MODEL]): dict(body)}


@kopf.index("batch", "v1", "jobs", labels={L.MODEL: kopf.PRESENT, L.COMPONENT: L.CACHE_FILL})
def fill_jobs(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> Any:
    return {(namespace, labels[L.MODEL]): dict(body)}


@kopf.index("pods", labels={L.FILL_FOR: kopf.PRESENT})
def fill_pods(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> Any:
    return {(namespace, labels[L.FILL_FOR]): dict(body)}


@kopf.index("apps", "v1", "controllerrevisions", labels={L.MODEL: kopf.PRESENT})
def owned_revisions(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> Any:
    return {(namespace, labels[L.MODEL]): dict(body)}


@kopf.index("services", labels={L.MODEL: kopf.PRESENT})
def owned_services(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> Any:
    return {(namespace, labels[L.MODEL]): dict(body)}


@kopf.index("nodes")
def cluster_nodes(
    *, name: str, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> Any:
    """Only what placement reads of each node (not its images or volumes)."""
    return {
        name: {
            "metadata": {
                "name": name,
                "labels": dict(meta.labels),
                "deletionTimestamp": meta.get("deletionTimestamp"),
                "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": {"taints": spec.get("taints"), "unschedulable": spec.get("unschedulable")},
            "status": {
                "allocatable": status.get("allocatable"),
                "conditions": [
                    c for c in status.get("conditions") or [] if c.get("type") == "Ready"
                ],
                "addresses": status.get("addresses"),
            },
        }
    }


@kopf.index("persistentvolumeclaims")
def namespace_claims(
    *, namespace: str | None, name: str, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> Any:
    """What a SharedPVC fill reads of each claim: its cache labels and annotations, its phase."""
    return {
        namespace: {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(meta.labels),
                "annotations": {
                    k: v for k, v in meta.annotations.items() if k.startswith(L.NODE_CACHE_PREFIX)
                },
            },
            "status": {"phase": status.get("phase")},
        }
    }


@kopf.index(*RESOURCE)
def model_uids(*, namespace: str | None, name: str, uid: str, **_: Any) -> Any:
    return {(namespace, name): uid}


@kopf.on.event(*RESOURCE)
async def model_changed(
    *,
    type: str | None,  # Kopf's name for the watch event type
    namespace: str | None,
    name: str,
    uid: str,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> None:
    """A spec change (or a scale) bumps the generation: reconcile now, not at the drift.
    Every event also renews what node and GPU changes need to know of the model."""
    generation = int(meta.get("generation") or 0)
    if type == "DELETED":
        _views.pop(uid, None)
    else:
        _views[uid] = ((namespace, name), node_interest.model_view(generation, spec, status))
    if _generations.get(uid) != generation:
        _generations[uid] = generation
        poke(uid)


@kopf.on.event("pods", labels={L.MODEL: kopf.PRESENT})
async def pod_changed(*, namespace: str | None, labels: Mapping[str, str], **indexes: Any) -> None:
    """A pod of a model changed: wake that model (Kopf passes indexes by their names)."""
    for uid in indexes["model_uids"].get((namespace, labels[L.MODEL]), []):
        poke(uid)


@kopf.on.event("batch", "v1", "jobs", labels={L.MODEL: kopf.PRESENT, L.COMPONENT: L.CACHE_FILL})
async def fill_job_changed(
    *, namespace: str | None, labels: Mapping[str, str], **indexes: Any
) -> None:
    for uid in indexes["model_uids"].get((namespace, labels[L.MODEL]), []):
        poke(uid)


@kopf.on.event("pods", labels={L.FILL_FOR: kopf.PRESENT})
async def fill_pod_changed(
    *, namespace: str | None, labels: Mapping[str, str], **indexes: Any
) -> None:
    for uid in indexes["model_uids"].get((namespace, labels[L.FILL_FOR]), []):
        poke(uid)


@kopf.on.event("nodes")
async def node_changed(
    *,
    type: str | None,  # Kopf's name for the watch event type (ADDED, MODIFIED, DELETED)
    name: str,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **indexes: Any,
) -> None:
    """A node came, went, or changed health, cordon, taints, GPUs or weight caches: the
    models it concerns act (core/node_interest.py)."""
    ready = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    fingerprint = repr(
        (
            type == "DELETED",
            ready,
            spec.get("unschedulable"),
            spec.get("taints"),
            status.get("allocatable"),
            sorted((k, v) for k, v in meta.labels.items() if k.startswith(L.NODE_CACHE_PREFIX)),
        )
    )
    if _node_fingerprints.get(name) == fingerprint:
        return  # a heartbeat: nothing placement reads has changed
    if type == "DELETED":
        _node_fingerprints.pop(name, None)  # a node of that name later is a new one
    else:
        _node_fingerprints[name] = fingerprint
    pods, jobs, job_pods = indexes["owned_pods"], indexes["fill_jobs"], indexes["fill_pods"]
    for uid in list(_wakeups):
        key, view = _views.get(uid, (None, None))
        if node_interest.concerned(
            name, view, pods.get(key, []), jobs.get(key, []), job_pods.get(key, [])
        ):
            poke(uid)


@kopf.on.event("persistentvolumeclaims")
async def claim_changed(
    *,
    type: str | None,  # Kopf's name for the watch event type
    namespace: str | None,
    name: str,
    meta: kopf.Meta,
    status: kopf.Status,
    **indexes: Any,
) -> None:
    """A claim came, went, got bound or changed its cache labels: the models of its
    namespace may act (one of them may read it in SharedPVC mode)."""
    key = (namespace, name)
    if type == "DELETED":
        _claim_fingerprints.pop(key, None)
    else:
        fingerprint = repr(
            (
                status.get("phase"),
                sorted((k, v) for k, v in meta.labels.items() if k.startswith(L.NODE_CACHE_PREFIX)),
            )
        )
        if _claim_fingerprints.get(key) == fingerprint:
            return
        _claim_fingerprints[key] = fingerprint
    for (model_namespace, _model), uids in indexes["model_uids"].items():
        if model_namespace == namespace:
            for uid in uids:
                poke(uid)


@kopf.daemon(*RESOURCE, cancellation_timeout=60)
async def model_loop(
    *,
    stopped: kopf.DaemonStopped,
    uid: str,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **indexes: Any,
) -> None:
    """Reconcile this model whenever something wakes it, until the model is deleted.

    Kopf starts it for every model it sees (created, or found at the operator's start)
    and stops it when the model is being deleted.
    """
    wake = _wakeups.setdefault(uid, asyncio.Event())
    reconciler: Reconciler = memo["reconciler"]
    options: RuntimeOptions = memo["options"]
    gpu_pods: GpuPods = memo["gpu_pods"]
    owned_pods, owned_services = indexes["owned_pods"], indexes["owned_services"]
    jobs, job_pods = indexes["fill_jobs"], indexes["fill_pods"]
    revisions = indexes["owned_revisions"]
    cluster_nodes, claims = indexes["cluster_nodes"], indexes["namespace_claims"]
    try:
        while not stopped:
            hold = reconciler.fence.hold_seconds() if reconciler.fence else 0.0
            if hold > 0:  # after a stall: let the caches and the peering catch up first
                await _sleep(stopped, asyncio.Event(), hold)
                continue
            wake.clear()
            try:
                key = (body.metadata.namespace, body.metadata.name)
                # Read the groups' queues before queueing for the reconcile: the reads of
                # all models run at once, each with its timeout.
                pods = copy.deepcopy(list(owned_pods.get(key, [])))
                wanted = group_metrics.groups_to_read(body, pods)
                samples = (
                    await group_metrics.scrape_groups(key[0] or "", key[1], pods, wanted)
                    if wanted
                    else {}
                )
                async with _one_at_a_time:
                    snap = Snapshot(
                        body=copy.deepcopy(dict(body)),
                        pods=copy.deepcopy(list(owned_pods.get(key, []))),
                        services=copy.deepcopy(list(owned_services.get(key, []))),
                        nodes=[n for ns in cluster_nodes.values() for n in ns],
                        gpu_pods=gpu_pods.snapshot(),
                        fill_jobs=copy.deepcopy(list(jobs.get(key, []))),
                        fill_pods=copy.deepcopy(list(job_pods.get(key, []))),
                        revisions=copy.deepcopy(list(revisions.get(key, []))),
                        samples=samples,
                        claims=copy.deepcopy(list(claims.get(body.metadata.namespace, []))),
                    )
                    wake_at = await asyncio.to_thread(reconciler.reconcile, snap)
                delay = _seconds_until(wake_at, options.drift_interval_seconds)
            except StaleViewError as exc:
                logger.info(f"reconcile stopped before its writes: {exc}")
                delay = DEADLINE_SLACK_SECONDS  # the hold, then a fresh view
            except Exception as exc:
                if is_transient(exc):
                    logger.warning(f"reconcile failed, retrying in {RETRY_SECONDS:.0f}s: {exc}")
                elif isinstance(exc, ApiException):
                    # An answer, not a bug of ours: a 403 from an API server whose RBAC
                    # caches are still filling after a restart, a 422 from a webhook.
                    logger.error(
                        f"reconcile failed, retrying in {RETRY_SECONDS:.0f}s: the API server "
                        f"refused a request: {refusal(exc)}"
                    )
                else:
                    logger.exception(f"reconcile failed, retrying in {RETRY_SECONDS:.0f}s")
                delay = RETRY_SECONDS
            await _sleep(stopped, wake, delay)
    finally:
        _wakeups.pop(uid, None)
        _generations.pop(uid, None)
        _views.pop(uid, None)
        reconciler.forget(uid)


def _seconds_until(wake_at: datetime | None, drift: float) -> float:
    if wake_at is None:
        return drift
    left = (wake_at - datetime.now(UTC)).total_seconds() + DEADLINE_SLACK_SECONDS
    return min(max(left, DEADLINE_SLACK_SECONDS), drift)


async def _sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float) -> None:
    """Sleep until woken, stopped, or ``seconds`` pass."""
    waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
