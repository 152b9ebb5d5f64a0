"""One reconcile's input and output: the observed snapshot, the plan, and the running tally."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core import conditions as C  # noqa: N812 - short, read everywhere here
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.fill_jobs import CacheView, FillSettings
from mistral_operator.core.groups import HealthRules, ObservedGroup, node_lost
from mistral_operator.core.inventory import GpuNode
from mistral_operator.core.parallelism import ReplicaShape
from mistral_operator.core.placement import PlacementResult
from mistral_operator.core.render import ModelRef, RenderInput
from mistral_operator.core.rollout import RolloutStep
from mistral_operator.core.sglang_metrics import GroupSample


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile reads, taken before it decides anything."""

    model: ModelRef
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    pods: Sequence[Mapping[str, Any]]
    services: Sequence[Mapping[str, Any]]
    inventory: Mapping[str, GpuNode]
    now: datetime
    node_grace: timedelta = timedelta(seconds=40)
    # Groups whose last pod create the API server refused, with its message (a quota,
    # an admission webhook): a rank that is missing for that reason was never created.
    create_errors: Mapping[str, str] = field(default_factory=dict)
    # This model's cache-fill Jobs and their pods, and the last progress line each
    # running fill pod logged (by pod name).
    fill_jobs: Sequence[Mapping[str, Any]] = ()
    fill_pods: Sequence[Mapping[str, Any]] = ()
    fill_progress: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fill_settings: FillSettings = field(default_factory=FillSettings)
    # This model's ControllerRevisions (the spec of each pod revision, for rollbacks).
    revisions: Sequence[Mapping[str, Any]] = ()
    # SGLang's queue gauges of serving and draining groups (by group name), summed over
    # each group's pods, as last read.
    samples: Mapping[str, GroupSample] = field(default_factory=dict)
    # metadata.managedFields of the model: who wrote spec.replicas, and through what.
    managed_fields: Sequence[Mapping[str, Any]] = ()
    # PersistentVolumeClaims of the model's namespace by name (labels, annotations, phase):
    # a SharedPVC claim keeps the state of its fills in its labels, as nodes do.
    claims: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Deletion:
    kind: str
    name: str
    uid: str
    reason: str
    # Without a grace period: for pods of a node that is gone, whose kubelet will
    # never confirm the end (what the pod garbage collector would do, minus its wait).
    force: bool = False
    api_version: str = "v1"


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Plan:
    """What the shell executes: writes in order, then status, then events."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    label: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    # Node labels: the weight cache's state per node (written before anything else).
    node_labels: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    node_annotations: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    # The same for a SharedPVC claim in the model's namespace (by claim name).
    claim_labels: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    claim_annotations: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    delete: list[Deletion] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # False when the status equals what is stored: no write at all.
    write_status: bool = True
    # The next moment time alone changes a decision (a backoff or grace period ends).
    wake_at: datetime | None = None

    def wake(self, at: datetime | None) -> None:
        if at is not None and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at

    @property
    def pod_writes(self) -> int:
        pods = sum(1 for o in self.apply if o["kind"] == "Pod")
        return pods + len(self.label) + sum(1 for d in self.delete if d.kind == "Pod")


@dataclass
class Tally:
    """The running tally of one reconcile."""

    observed: Observed
    spec: MistralModelSpec
    shape: ReplicaShape
    inp: RenderInput
    plan: Plan = field(default_factory=Plan)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    placement: PlacementResult | None = None
    waiting_backoff: list[str] = field(default_factory=list)
    cache: CacheView | None = None
    # Groups that could not be placed on Ready caches, and the nodes they wait for.
    cache_waits: tuple[tuple[str, ...], ...] = ()
    cache_status: dict[str, Any] = field(default_factory=dict)
    # The spec's own revision; ``inp.revision`` differs from it after a rollback.
    update_revision: str = ""
    rolled_back: bool = False
    # The rollout's step this reconcile, surge that found no room, and failures of
    # groups of the update revision seen this reconcile.
    rollout_step: RolloutStep | None = None
    # Groups to converge to (spec.replicas, or the autoscaler's decision), and what the
    # autoscaler decided and reports.
    desired: int = 0
    autoscaling_status: dict[str, Any] | None = None
    scaling_conditions: list[C.ConditionSpec] = field(default_factory=list)
    surge_blocked_since: datetime | None = None
    new_failures: int = 0
    # Groups this plan creates (their pods are in ``plan.apply``): the status counts them
    # as they will be once the plan is written, so their pods showing up in the caches
    # asks for no second status write.
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.update_revision:
            self.update_revision = self.inp.revision

    @property
    def draining(self) -> set[str]:
        """Groups being drained: unrouted, their leaders finishing in-flight requests."""
        return {n for n, r in self.records.items() if r.get("state") == "Draining"}

    @property
    def rules(self) -> HealthRules:
        return HealthRules(
            now=self.observed.now,
            grace=self.observed.node_grace,
            start_timeout=timedelta(seconds=self.spec.runtime.startup_timeout_seconds),
        )

    def delete_group(self, group: ObservedGroup, reason: str, *, lost_only: bool = False) -> None:
        """Delete a group's pods, unrouting its leader first.

        Pods on a node no kubelet answers for (gone, or NotReady past the grace period)
        go without a grace period, also when someone else already deleted them
        gracefully: nothing would ever confirm that deletion.
        """
        rules = self.rules
        leader = group.leader
        if leader is not None and leader.serving and not lost_only:
            self.plan.label.append((leader.name, {L.SERVING: None}))
        for pod in group.pods.values():
            lost = bool(pod.node) and node_lost(self.observed.inventory.get(pod.node or ""), rules)
            if lost:
                self.plan.delete.append(Deletion("Pod", pod.name, pod.uid, reason, force=True))
            elif not pod.deleting and not lost_only:
                self.plan.delete.append(Deletion("Pod", pod.name, pod.uid, reason))
            elif lost_only:
                # A deletion waiting on a NotReady node: look again when its grace ends.
                node = self.observed.inventory.get(pod.node or "")
                if node is not None and node.not_ready_since is not None:
                    self.plan.wake(node.not_ready_since + rules.grace)


def group_records(observed: Observed) -> dict[str, Mapping[str, Any]]:
    return {g["name"]: g for g in observed.status.get("groups") or [] if "name" in g}


def previous_conditions(observed: Observed) -> list[Mapping[str, Any]]:
    return list(observed.status.get("conditions") or [])


def condition_changed(observed: Observed, type_: str, status: bool, reason: str) -> bool:
    prior = C.find(previous_conditions(observed), type_)
    want = "True" if status else "False"
    return prior is None or prior.get("status") != want or prior.get("reason") != reason


def message_changed(observed: Observed, type_: str, message: str) -> bool:
    prior = C.find(previous_conditions(observed), type_)
    return prior is None or prior.get("message") != message
