"""One reconcile of one model: observe the caches, decide in the pure core, execute the plan."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
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
from mistral_operator.core.snapshot import Event
from mistral_operator.core.write_refusals import (
    Refusal,
    Refused,
    due,
    refusal_text,
    remember,
    report_refusals,
)
from mistral_operator.shell import metrics
from mistral_operator.shell.kubeapi import (
    KubeApi,
    is_refusal,
    is_transient,
    server_message,
    server_reason,
)
from mistral_operator.shell.recent_writes import RecentWrites
from mistral_operator.shell.stall import StallFence

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
    # Other writes the API server refused, until written or no longer planned
    # (core/write_refusals.py): reported on the model, tried again after a backoff.
    refused: dict[_RefusedKey, Refused] = field(default_factory=dict)
    # Holds back a plan whose view went stale while this replica was frozen (stall.py).
    fence: StallFence | None = None

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
        view = self.fence.view() if self.fence is not None else None  # before observing
        try:
            observed = self.observe(snap)
            plan = plan_reconcile(observed)
            self.execute(snap.body, observed, plan, view=view)
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

    def execute(
        self, body: Mapping[str, Any], observed: Observed, plan: Plan, *, view: float | None = None
    ) -> None:
        """Route before unrouting, both before deleting; then creates, status and events.

        So a failed write leaves at least as many groups serving as before it.

        A write the API server refuses for what it is (``kubeapi.is_refusal``) does not
        fail the reconcile: it is reported on the model (core/write_refusals.py) and
        tried again after a backoff. A refused cache mark, label or deletion stops the
        writes after it (each may count on the one before), and the stored status is
        kept, with the refusal added. A refused Job, Service or ControllerRevision stops
        nothing: the other objects and the decided status are written.

        ``view`` is when the snapshot the plan was made from was taken: no write is made
        once the fence saw this replica stall since (shell/stall.py).
        """
        ns, uid = observed.model.namespace, observed.model.uid
        target = kopf.Body(cast(kopf.RawBody, dict(body)))  # what events are about
        ordered = list(self._ordered_writes(ns, plan))
        writes = _Writes(
            uid, observed.generation, observed.now, _planned_keys(uid, ordered, plan), view
        )
        # Cache marks (contents first, then the label), routing labels, deletions; ``all``
        # stops at the first refusal.
        stopped = not all(self._try(writes, write) for write in ordered)
        if not stopped:
            self._apply(target, observed, plan, writes)
        self._forget_unplanned(uid, writes.planned)
        status, events = plan.status, list(plan.events)
        write_status = plan.write_status
        if writes.refusals:
            base = dict(observed.status) if stopped else plan.status
            status, refusal_events = report_refusals(
                base, observed.status, writes.refusals, observed.generation, observed.now
            )
            # Events of a plan not carried out would be posted again by the next one.
            events = [*([] if stopped else events), *refusal_events]
            write_status = status != dict(observed.status)
            for entry in writes.remembered:
                plan.wake(entry.retry_at)  # the next try (a reconcile before it holds the write)
            self._log_refusals(observed, refusal_events, writes)
        if write_status:
            self._fresh(writes)
            self.api.apply_status(names.API_VERSION, names.KIND, ns, observed.model.name, status)
            self.recent.wrote_status(uid, status)
        for event in events:
            kopf.event(target, type=event.type, reason=event.reason, message=event.message)

    def _ordered_writes(self, ns: str, plan: Plan) -> Iterator[_Write]:
        """The writes before the applies, in the order the plan counts on: a cache's
        contents before its label, routing before unrouting, both before deletions."""
        api, pvc = self.api, "PersistentVolumeClaim"
        call: Callable[[], object]
        for node, notes in plan.node_annotations:
            call = partial(api.patch_annotations, "v1", "Node", None, node, notes)
            yield _Write("annotate", "Node", None, node, call)
        for node, values in plan.node_labels:
            call = partial(api.patch_labels, "v1", "Node", None, node, values)
            yield _Write("label", "Node", None, node, call)
        for claim, notes in plan.claim_annotations:
            call = partial(self._patch_claim, ns, claim, annotations=notes)
            yield _Write("annotate", pvc, ns, claim, call)
        for claim, values in plan.claim_labels:
            call = partial(self._patch_claim, ns, claim, labels=values)
            yield _Write("label", pvc, ns, claim, call)
        for pod, values in plan.label:
            yield _Write("label", "Pod", ns, pod, partial(self._label_pod, ns, pod, values))
        for d in plan.delete:
            call = partial(api.delete, d.api_version, d.kind, ns, d.name, uid=d.uid, force=d.force)
            yield _Write("delete", d.kind, ns, d.name, call)

    def _apply(self, target: kopf.Body, observed: Observed, plan: Plan, writes: _Writes) -> None:
        """The plan's objects: groups' pods whole or not at all, each other object alone."""
        uid = observed.model.uid
        refused: set[str] = set()
        for obj in plan.apply:
            group = obj["metadata"].get("labels", {}).get(L.GROUP)
            if obj["kind"] != "Pod":
                meta = obj["metadata"]
                call = partial(self.api.apply, obj)
                self._try(
                    writes, _Write("apply", obj["kind"], meta.get("namespace"), meta["name"], call)
                )
                continue
            if group in refused:
                continue  # a group is created whole or not at all
            self._fresh(writes)
            try:
                self.api.apply(obj)
            except ApiException as exc:
                if is_transient(exc):
                    raise
                refused.add(group)
                message = _api_message(exc)
                self.create_errors[(uid, group)] = message
                # The status just written counts the group as created: the next
                # reconcile, at once, reports the refusal and backs off instead.
                plan.wake(observed.now)
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

    def _try(self, writes: _Writes, write: _Write) -> bool:
        """One write, unless it was refused and its backoff is not over; True if written.

        A refusal is remembered (``self.refused``) and added to ``writes``; anything
        else the API server or the network says goes up, as before.
        """
        key = _refused_key(writes.uid, write)
        prior = self.refused.get(key)
        if prior is not None and not due(prior, writes.generation, writes.now):
            writes.add(prior)  # still in its backoff: reported as refused, not tried
            return False
        self._fresh(writes)
        try:
            write.call()
        except ApiException as exc:
            if not is_refusal(exc):
                raise
            refusal = Refusal(
                write.verb,
                write.kind,
                write.name,
                exc.status,
                server_reason(exc),
                _api_message(exc),
            )
            entry = remember(prior, refusal, writes.generation, writes.now)
            self.refused[key] = entry
            writes.add(entry)
            writes.answered.append(entry)
            return False
        self.refused.pop(key, None)
        return True

    def _fresh(self, writes: _Writes) -> None:
        """Before each write: the plan's view is still one to act on (stall.py)."""
        if self.fence is not None and writes.view is not None:
            self.fence.check(writes.view)

    def _forget_unplanned(self, uid: str, planned: set[_RefusedKey]) -> None:
        """Refusals of objects this plan no longer writes (a new spec renders others)."""
        for key in list(self.refused):
            if key[0] == uid and key not in planned:
                self.refused.pop(key, None)

    @staticmethod
    def _log_refusals(observed: Observed, new_events: Sequence[Event], writes: _Writes) -> None:
        """A warning when what is refused changes (with its event), an info line when the
        API server refused a retry, nothing while a refusal waits out its backoff: the
        condition, not the log, is where a refusal is reported."""
        model = f"{observed.model.namespace}/{observed.model.name}"
        if not writes.answered:
            return
        wait = min(e.retry_at for e in writes.answered) - observed.now
        attempts = max(e.attempts for e in writes.answered)
        if new_events:
            log.warning(
                "%s: %s (next try in %.0fs)", model, new_events[0].message, wait.total_seconds()
            )
        else:
            log.info(
                "%s: refused again (attempt %d, next try in %.0fs): %s",
                model,
                attempts,
                wait.total_seconds(),
                refusal_text(writes.refusals),
            )

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
        for key in [k for k in list(self.create_errors) if k[0] == uid]:
            self.create_errors.pop(key, None)
        for refused_key in [k for k in list(self.refused) if k[0] == uid]:
            self.refused.pop(refused_key, None)


# A refused write: (model uid, verb, kind, namespace or "" for a Node, name). The verb
# tells a node's annotation from its label: one going through must not reset the
# backoff of the other.
_RefusedKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class _Write:
    """One write a refusal can be remembered for: what it is, and the call that makes it."""

    verb: str  # as the report says it: apply, label, annotate, delete
    kind: str
    namespace: str | None
    name: str
    call: Callable[[], object]


@dataclass
class _Writes:
    """One execute: its plan's view (stall.py), and its refusals: those answered now and
    those still in their backoff."""

    uid: str
    generation: int
    now: datetime
    planned: set[_RefusedKey]
    view: float | None = None
    refusals: list[Refusal] = field(default_factory=list)
    remembered: list[Refused] = field(default_factory=list)
    # Those the API server answered in this execute (not held back by their backoff).
    answered: list[Refused] = field(default_factory=list)

    def add(self, entry: Refused) -> None:
        self.refusals.append(entry.refusal)
        self.remembered.append(entry)


def _planned_keys(uid: str, ordered: Sequence[_Write], plan: Plan) -> set[_RefusedKey]:
    """Every write of the plan that a refusal can be remembered for."""
    keys = {_refused_key(uid, w) for w in ordered}
    for obj in plan.apply:
        if obj["kind"] != "Pod":
            meta = obj["metadata"]
            keys.add(
                (uid, "apply", str(obj["kind"]), str(meta.get("namespace") or ""), meta["name"])
            )
    return keys


def _refused_key(uid: str, write: _Write) -> _RefusedKey:
    return (uid, write.verb, write.kind, write.namespace or "", write.name)


def _api_message(exc: ApiException) -> str:
    return server_message(exc) or str(exc.reason)


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
