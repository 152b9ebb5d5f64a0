"""Kopf handlers: create, update, resume and a drift timer share one idempotent reconcile."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import kopf

from mistral_operator.api import names
from mistral_operator.api.status import GroupState
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.inventory import build_inventory, gpu_node_of
from mistral_operator.core.reconcile import Observed, Plan, plan_reconcile
from mistral_operator.core.render import ModelRef
from mistral_operator.shell import metrics
from mistral_operator.shell.kubeapi import KubeApi
from mistral_operator.shell.recent_writes import RecentWrites
from mistral_operator.shell.settings import RuntimeOptions, apply_settings

RESOURCE = (names.GROUP, names.VERSION, names.PLURAL)
DRIFT_INTERVAL_SECONDS = 5.0
# A failed reconcile (an API error past its retries) is tried again this soon.
RETRY_SECONDS = 5.0

# One reconcile at a time: placement decisions of different models must not race for
# the same free nodes. A reconcile is a few milliseconds of planning plus its writes.
_reconcile_lock = threading.Lock()
_recent = RecentWrites()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options: RuntimeOptions = memo.get("options") or RuntimeOptions()
    apply_settings(settings, options)
    memo["api"] = KubeApi()
    memo["options"] = options
    if options.metrics_port:
        metrics.serve(options.metrics_port)


# Indexes: the operator reads pods, Services and nodes from its watch caches, not by listing.
@kopf.index("pods", labels={L.MODEL: kopf.PRESENT})
def owned_pods(
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


def _holds_gpus(*, body: kopf.Body, **_: Any) -> bool:
    return gpu_node_of(body) is not None


@kopf.index("pods", when=_holds_gpus)
def gpu_pods(*, name: str, namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    """Every unfinished pod holding (or pinned to take) GPUs, keyed by its node."""
    node = gpu_node_of(body)
    return {
        node: {
            "metadata": {"namespace": namespace, "name": name},
            "spec": {"nodeName": node, "containers": list(body.spec.get("containers") or [])},
            "status": {"phase": body.status.get("phase")},
        }
    }


@kopf.index(*RESOURCE)
def models(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): body}


@kopf.on.event("pods", labels={L.MODEL: kopf.PRESENT})
def pod_changed(
    *, namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **indexes: Any
) -> None:
    """A pod of a model changed: reconcile that model now rather than at its next timer."""
    for body in indexes["models"].get((namespace, labels[L.MODEL]), []):
        reconcile(body=body, memo=memo, **indexes)


@kopf.on.event("nodes")
def node_changed(
    *,
    type: str | None,  # Kopf's name for the watch event type (ADDED, MODIFIED, DELETED)
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: kopf.Memo,
    **indexes: Any,
) -> None:
    """A node came, went, or changed health, cordon, taints or GPUs: models may need to act."""
    ready = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    fingerprint = repr(
        (
            type == "DELETED",
            ready,
            spec.get("unschedulable"),
            spec.get("taints"),
            status.get("allocatable"),
        )
    )
    seen: dict[str, str] = memo.setdefault("node_fingerprints", {})
    if seen.get(name) == fingerprint:
        return  # a heartbeat: nothing placement reads has changed
    seen[name] = fingerprint
    for bodies in indexes["models"].values():
        for body in bodies:
            reconcile(body=body, memo=memo, **indexes)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _values(index: kopf.Index[Any, Any], key: Any) -> list[dict[str, Any]]:
    return list(index.get(key, []))


@kopf.on.create(*RESOURCE, backoff=RETRY_SECONDS)
@kopf.on.resume(*RESOURCE, backoff=RETRY_SECONDS)
@kopf.on.update(*RESOURCE, field="spec", backoff=RETRY_SECONDS)
@kopf.timer(*RESOURCE, interval=DRIFT_INTERVAL_SECONDS, sharp=False, backoff=RETRY_SECONDS)
def reconcile(*, body: kopf.Body, memo: kopf.Memo, **indexes: Any) -> None:
    """Observe, decide in the pure core, execute; safe to run at any time, any number of times.

    Kopf passes the indexes above by their names among the other keyword arguments.
    """
    with _reconcile_lock:
        _reconcile(body, memo, indexes)


def _reconcile(body: kopf.Body, memo: kopf.Memo, indexes: Mapping[str, Any]) -> None:
    api: KubeApi = memo["api"]
    options: RuntimeOptions = memo["options"]
    meta = body.metadata
    name, namespace = meta["name"], meta["namespace"]
    uid = meta["uid"]
    pods = _values(indexes["owned_pods"], (namespace, name))
    if not _recent.caught_up(uid, (_key(p) for p in pods)):
        return  # our own pods are not in the cache yet; an event or the timer comes back
    started = time.monotonic()
    try:
        nodes = [n for ns in indexes["cluster_nodes"].values() for n in ns]
        gpu_holders = [p for ps in indexes["gpu_pods"].values() for p in ps]
        gpu_holders += _recent.unseen_gpu_pods(_key(p) for p in gpu_holders)
        observed = Observed(
            model=ModelRef(name=name, namespace=namespace, uid=uid),
            generation=int(meta.get("generation") or 0),
            spec=dict(body.spec),
            status=_recent.status(uid, body.status),
            pods=pods,
            services=_values(indexes["owned_services"], (namespace, name)),
            inventory=build_inventory(nodes, gpu_holders),
            now=datetime.now(UTC),
            node_grace=timedelta(seconds=options.node_grace_seconds),
        )
        plan = plan_reconcile(observed)
        execute(api, body, observed, plan)
        _record_groups(namespace, name, plan)
        metrics.RECONCILES.labels(result="success").inc()
    except Exception:
        metrics.RECONCILES.labels(result="error").inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


def execute(api: KubeApi, body: kopf.Body, observed: Observed, plan: Plan) -> None:
    """Carry out a plan: deletions first (they free nodes), then applies, labels, status, events."""
    ns = observed.model.namespace
    for deletion in plan.delete:
        api.delete("v1", deletion.kind, ns, deletion.name, uid=deletion.uid, force=deletion.force)
    for obj in plan.apply:
        api.apply(obj)
        if obj["kind"] == "Pod":
            _recent.created(observed.model.uid, [obj])
    for pod_name, labels in plan.label:
        api.patch_labels("v1", "Pod", ns, pod_name, labels)
    if plan.write_status:
        api.apply_status(names.API_VERSION, names.KIND, ns, observed.model.name, plan.status)
        _recent.wrote_status(observed.model.uid, plan.status)
    for event in plan.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _record_groups(namespace: str, name: str, plan: Plan) -> None:
    states: dict[str, int] = {}
    for group in plan.status.get("groups") or []:
        state = group.get("state", "Unknown")
        states[state] = states.get(state, 0) + 1
    for state in get_args(GroupState):
        metrics.GROUPS.labels(namespace=namespace, model=name, state=state).set(
            states.get(state, 0)
        )
