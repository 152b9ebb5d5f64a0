"""One reconcile of one model: observe the caches, decide in the pure core, execute the plan."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast, get_args

import kopf
from kubernetes.client.exceptions import ApiException

from mistral_operator.api import names
from mistral_operator.api.status import GroupState
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.fill_jobs import FillSettings, parse_progress
from mistral_operator.core.inventory import build_inventory
from mistral_operator.core.reconcile import Observed, Plan, plan_reconcile
from mistral_operator.core.render import ModelRef
from mistral_operator.core.sglang_metrics import GroupSample
from mistral_operator.shell import metrics
from mistral_operator.shell.kubeapi import KubeApi, is_transient
from mistral_operator.shell.recent_writes import RecentWrites

log = logging.getLogger(__name__)
CACHE_RECHECK = timedelta(seconds=1)
PROGRESS_LINES = 5  # a fill's progress line is among its last few log lines


@dataclass(frozen=True)
class Snapshot:
    """What the caches show for one model, copied out of them before deciding."""

    body: Mapping[str, Any]
    pods: Sequence[Mapping[str, Any]]
    services: Sequence[Mapping[str, Any]]
    nodes: Sequence[Mapping[str, Any]]
    gpu_pods: Sequence[Mapping[str, Any]]
    fill_jobs: Sequence[Mapping[str, Any]] = ()
    fill_pods: Sequence[Mapping[str, Any]] = ()
    revisions: Sequence[Mapping[str, Any]] = ()
    # SGLang's queue gauges of the serving and draining groups, read just before.
    samples: Mapping[str, GroupSample] = field(default_factory=dict)
    # The PersistentVolumeClaims of the model's namespace (SharedPVC fills' state).
    claims: Sequence[Mapping[str, Any]] = ()


@dataclass
class Reconciler:
    """The shell's state across reconciles: its API door and its memory of its own writes."""

    api: KubeApi
    node_grace: timedelta
    fill_settings: FillSettings = field(default_factory=FillSettings)
    recent: RecentWrites = field(default_factory=RecentWrites)
    # The API server's refusal of the last pod create, per (model uid, group).
    create_errors: dict[tuple[str, str], str] = field(default_factory=dict)

    def reconcile(self, snap: Snapshot) -> datetime | None:
        """Observe, decide, execute; returns when time alone next changes a decision."""
        meta = snap.body["metadata"]
        uid = meta["uid"]
        keys = [_key(p) for p in snap.pods]
        if not self.recent.caught_up(uid, keys):
            # Our own pods are not in the cache yet: their events wake the loop, and if
            # they never come (deleted at once), the memory of them expires.
            return datetime.now(UTC) + CACHE_RECHECK
        started = time.monotonic()
        try:
            observed = self.observe(snap)
            plan = plan_reconcile(observed)
            self.execute(snap.body, observed, plan)
            _record_groups(meta["namespace"], meta["name"], plan)
            _record_scaling(meta["namespace"], meta["name"], plan)
            metrics.RECONCILES.labels(result="success").inc()
            return plan.wake_at
        except Exception:
            metrics.RECONCILES.labels(result="error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    def observe(self, snap: Snapshot) -> Observed:
        meta = snap.body["metadata"]
        uid = meta["uid"]
        gpu_holders = list(snap.gpu_pods)
        gpu_holders += self.recent.unseen_gpu_pods(_key(p) for p in gpu_holders)
        return Observed(
            model=ModelRef(name=meta["name"], namespace=meta["namespace"], uid=uid),
            generation=int(meta.get("generation") or 0),
            spec=dict(snap.body.get("spec") or {}),
            status=self.recent.status(uid, snap.body.get("status") or {}),
            pods=snap.pods,
            services=snap.services,
            inventory=build_inventory(snap.nodes, gpu_holders),
            now=datetime.now(UTC),
            node_grace=self.node_grace,
            create_errors={g: m for (u, g), m in self.create_errors.items() if u == uid},
            fill_jobs=snap.fill_jobs,
            fill_pods=snap.fill_pods,
            fill_progress=self._fill_progress(snap.fill_pods),
            fill_settings=self.fill_settings,
            revisions=snap.revisions,
            samples=snap.samples,
            managed_fields=list(meta.get("managedFields") or []),
            claims={c["metadata"]["name"]: c for c in snap.claims},
        )

    def _fill_progress(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
        """The last progress line of each running fill, read from its log.

        A log that cannot be read (a kubelet that does not answer) leaves that fill's
        progress out; its result still comes with its termination message.
        """
        out: dict[str, Mapping[str, Any]] = {}
        for pod in pods:
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            if not statuses or "running" not in (statuses[0].get("state") or {}):
                continue
            meta = pod["metadata"]
            tail = self.api.log_tail(meta["namespace"], meta["name"], lines=PROGRESS_LINES)
            progress = parse_progress(tail or "")
            if progress is not None:
                out[meta["name"]] = progress
        return out

    def execute(self, body: Mapping[str, Any], observed: Observed, plan: Plan) -> None:
        """Route before unrouting, both before deleting; then creates, status and events.

        So a failed write leaves at least as many groups serving as before it.
        """
        ns, uid = observed.model.namespace, observed.model.uid
        target = kopf.Body(cast(kopf.RawBody, dict(body)))  # what events are about
        self._mark_caches(ns, plan)
        for pod_name, labels in plan.label:
            self._label_pod(ns, pod_name, labels)
        for deletion in plan.delete:
            self.api.delete(
                deletion.api_version,
                deletion.kind,
                ns,
                deletion.name,
                uid=deletion.uid,
                force=deletion.force,
            )
        refused: set[str] = set()
        for obj in plan.apply:
            group = obj["metadata"].get("labels", {}).get(L.GROUP)
            if obj["kind"] != "Pod":
                self.api.apply(obj)
                continue
            if group in refused:
                continue  # a group is created whole or not at all
            try:
                self.api.apply(obj)
            except ApiException as exc:
                if is_transient(exc):
                    raise
                refused.add(group)
                message = _api_message(exc)
                self.create_errors[(uid, group)] = message
                kopf.event(
                    target,
                    type="Warning",
                    reason="CreateFailed",
                    message=f"group {group}: the API server refused {obj['metadata']['name']}: "
                    f"{message}",
                )
                continue
            self.create_errors.pop((uid, group), None)
            self.recent.created(uid, [obj])
        if plan.write_status:
            self.api.apply_status(
                names.API_VERSION, names.KIND, ns, observed.model.name, plan.status
            )
            self.recent.wrote_status(uid, plan.status)
        for event in plan.events:
            kopf.event(target, type=event.type, reason=event.reason, message=event.message)

    def _mark_caches(self, namespace: str, plan: Plan) -> None:
        """The weight caches' state on nodes and claims: contents first, then the label."""
        for node, notes in plan.node_annotations:
            self.api.patch_annotations("v1", "Node", None, node, notes)
        for node, node_labels in plan.node_labels:
            self.api.patch_labels("v1", "Node", None, node, node_labels)
        for claim, notes in plan.claim_annotations:
            self._patch_claim(namespace, claim, annotations=notes)
        for claim, claim_labels in plan.claim_labels:
            self._patch_claim(namespace, claim, labels=claim_labels)

    def _patch_claim(
        self,
        namespace: str,
        claim: str,
        *,
        labels: Mapping[str, str | None] | None = None,
        annotations: Mapping[str, str | None] | None = None,
    ) -> None:
        """Mark a SharedPVC claim; a claim deleted meanwhile is left alone (its watch event
        brings the next reconcile, which sees it gone)."""
        try:
            if labels is not None:
                self.api.patch_labels("v1", "PersistentVolumeClaim", namespace, claim, labels)
            if annotations is not None:
                self.api.patch_annotations(
                    "v1", "PersistentVolumeClaim", namespace, claim, annotations
                )
        except ApiException as exc:
            if exc.status != 404:
                raise
            log.info("claim %s/%s is gone; not marked", namespace, claim)

    def _label_pod(self, namespace: str, pod: str, labels: Mapping[str, str | None]) -> None:
        """Route or unroute a leader; one deleted since the watch cache showed it is left
        alone (its deletion event brings the next reconcile, which sees it gone)."""
        try:
            self.api.patch_labels("v1", "Pod", namespace, pod, labels)
        except ApiException as exc:
            if exc.status != 404:
                raise
            log.info("pod %s/%s is gone; not labelled", namespace, pod)

    def forget(self, uid: str) -> None:
        """A model is gone: drop what was kept for it."""
        for key in [k for k in self.create_errors if k[0] == uid]:
            del self.create_errors[key]


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _record_scaling(namespace: str, name: str, plan: Plan) -> None:
    """The autoscaler's view on /metrics: queue, desired and current groups, scale events."""
    labels = {"namespace": namespace, "model": name}
    status = plan.status
    metrics.DESIRED_GROUPS.labels(**labels).set(status.get("desiredReplicas") or 0)
    metrics.CURRENT_GROUPS.labels(**labels).set(status.get("replicas") or 0)
    scaling = status.get("autoscaling") or {}
    if "queue" in scaling:
        metrics.QUEUE_DEPTH.labels(**labels).set(scaling["queue"])
    for event in plan.events:
        if event.reason in {"ScaledUp", "ScaledDown"}:
            direction = "up" if event.reason == "ScaledUp" else "down"
            metrics.SCALE_EVENTS.labels(**labels, direction=direction).inc()


def _record_groups(namespace: str, name: str, plan: Plan) -> None:
    states: dict[str, int] = {}
    for group in plan.status.get("groups") or []:
        state = group.get("state", "Unknown")
        states[state] = states.get(state, 0) + 1
    for state in get_args(GroupState):
        metrics.GROUPS.labels(namespace=namespace, model=name, state=state).set(
            states.get(state, 0)
        )
