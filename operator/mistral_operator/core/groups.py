"""Replica groups as observed from their pods, and whether each one is healthy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.inventory import GpuNode
from mistral_operator.core.timestamps import parse_time

Health = Literal["Starting", "Ready", "Failed", "Deleting"]


@dataclass(frozen=True)
class PodView:
    """The parts of one pod that group decisions read."""

    name: str
    uid: str
    group: str
    rank: int
    group_size: int
    revision: str
    node: str | None
    phase: str
    ready: bool
    restarts: int
    deleting: bool
    serving: bool
    exit_code: int | None = None
    reason: str | None = None
    message: str = ""
    # When the scheduler last found no node for it (None once scheduled).
    unschedulable_since: datetime | None = None
    created: datetime | None = None
    # Why a container has not started (ImagePullBackOff, ContainerCreating, ...).
    waiting_reason: str | None = None
    waiting_message: str = ""
    # Who asked for the deletion (the DisruptionTarget condition's reason), if anyone said.
    disruption: str | None = None


@dataclass(frozen=True)
class Failure:
    """Why a group cannot go on: the first broken rank."""

    rank: int
    node: str
    reason: str
    exit_code: int | None = None
    message: str = ""


@dataclass(frozen=True)
class ObservedGroup:
    name: str
    revision: str
    size: int
    pods: Mapping[int, PodView] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        return [p.node for _, p in sorted(self.pods.items()) if p.node]

    @property
    def leader(self) -> PodView | None:
        return self.pods.get(0)

    @property
    def deleting(self) -> bool:
        return any(p.deleting for p in self.pods.values())

    @property
    def ready(self) -> bool:
        return len(self.pods) == self.size and all(
            p.ready and p.phase == "Running" and not p.deleting for p in self.pods.values()
        )

    @property
    def serving(self) -> bool:
        leader = self.leader
        return leader is not None and leader.serving

    @property
    def index(self) -> int:
        return L.group_index(self.name) or 0


def _terminated(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("terminated"):
            return state["terminated"]  # type: ignore[no-any-return]
        last = cs.get("lastState") or {}
        if last.get("terminated"):
            return last["terminated"]  # type: ignore[no-any-return]
    return None


def _waiting(status: Mapping[str, Any]) -> tuple[str | None, str]:
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason"), waiting.get("message", "")
    return None, ""


def _disruption(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return str(condition.get("reason") or "DisruptionTarget")
    return None


def _unschedulable_since(status: Mapping[str, Any]) -> tuple[datetime | None, str]:
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return parse_time(condition.get("lastTransitionTime")), condition.get("message", "")
    return None, ""


def view_pod(pod: Mapping[str, Any]) -> PodView | None:
    """A pod of ours, parsed; None when it lacks the labels every group pod carries."""
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    try:
        rank = int(labels[L.RANK])
        size = int(labels.get(L.GROUP_SIZE, rank + 1))
        group = labels[L.GROUP]
    except (KeyError, ValueError):
        return None
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    restarts = sum(int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or [])
    terminated = _terminated(status)
    unschedulable_since, unschedulable_message = _unschedulable_since(status)
    waiting_reason, waiting_message = _waiting(status)
    return PodView(
        name=meta["name"],
        uid=meta.get("uid", ""),
        group=group,
        rank=rank,
        group_size=size,
        revision=labels.get(L.REVISION, ""),
        node=(pod.get("spec") or {}).get("nodeName"),
        phase=status.get("phase") or "Pending",
        ready=ready,
        restarts=restarts,
        deleting=bool(meta.get("deletionTimestamp")),
        serving=labels.get(L.SERVING) == "true",
        exit_code=terminated.get("exitCode") if terminated else None,
        reason=status.get("reason") or (terminated.get("reason") if terminated else None),
        message=status.get("message")
        or (terminated.get("message", "") if terminated else unschedulable_message),
        unschedulable_since=unschedulable_since,
        created=parse_time(meta.get("creationTimestamp")),
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        disruption=_disruption(status),
    )


def observe_groups(pods: Iterable[Mapping[str, Any]]) -> dict[str, ObservedGroup]:
    """Pods grouped by their group label, keyed by group name."""
    by_group: dict[str, dict[int, PodView]] = {}
    for pod in pods:
        view = view_pod(pod)
        if view is not None:
            by_group.setdefault(view.group, {})[view.rank] = view
    groups = {}
    for name, members in by_group.items():
        first = members[min(members)]
        groups[name] = ObservedGroup(
            name=name, revision=first.revision, size=first.group_size, pods=members
        )
    return groups


# Container waits a kubelet does not get out of by itself: the image or the container
# config is wrong. A short grace lets a registry hiccup pass.
STUCK_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class HealthRules:
    """How long a rank may look unhealthy before its group counts as failed."""

    now: datetime
    # A node NotReady this long, or a pod its pinned node cannot take, or a container
    # stuck in STUCK_WAITING this long, fails the group.
    grace: timedelta
    # A pod not started (Pending, ContainerCreating) this long after it was created.
    start_timeout: timedelta = timedelta(hours=1)


def find_failure(
    group: ObservedGroup,
    inventory: Mapping[str, GpuNode],
    rules: HealthRules,
    planned_nodes: Mapping[int, str] | None = None,
    create_error: str | None = None,
) -> Failure | None:
    """The first reason a group can no longer serve (or start); SGLang cannot lose a rank.

    A rank its node cannot take (another workload got there first) counts as failed
    after the same grace as a NotReady node, so the group is placed again elsewhere.
    """
    for rank in range(group.size):
        pod = group.pods.get(rank)
        if pod is None:
            planned = (planned_nodes or {}).get(rank, "")
            if create_error:
                return Failure(rank, planned, "CreateFailed", message=create_error)
            if planned and planned not in inventory:
                # The node went, and the pod with it (the pod GC removes the pods of a
                # deleted node, sometimes before the node's own event is read).
                return Failure(rank, planned, "NodeLost", message=f"node {planned} is gone")
            return Failure(rank, planned, "PodDeleted", message="the pod of this rank is gone")
        failure = (
            pod_failure(pod)
            or node_failure(pod, inventory, rules)
            or deletion_failure(pod)
            or start_failure(pod, rules)
            or schedule_failure(pod, rules)
        )
        if failure is not None:
            return failure
    return None


def pod_failure(pod: PodView) -> Failure | None:
    """A rank whose process ended or restarted."""
    where = pod.node or ""
    if pod.phase == "Failed":
        return Failure(pod.rank, where, pod.reason or "Failed", pod.exit_code, pod.message)
    if pod.phase == "Succeeded":
        return Failure(pod.rank, where, "Exited", pod.exit_code, "the server exited")
    if pod.restarts > 0:
        message = f"restarted {pod.restarts} time(s); last exit: {pod.reason or 'unknown'}"
        return Failure(pod.rank, where, "ContainerRestarted", pod.exit_code, message)
    return None


def node_lost(node: GpuNode | None, rules: HealthRules) -> bool:
    """A node no kubelet answers for: gone, going, or NotReady past the grace period.

    Pods there never confirm a graceful deletion, so they are deleted without one.
    """
    if node is None or node.deleting:
        return True
    since = node.not_ready_since
    return since is not None and rules.now - since >= rules.grace


def node_failure(
    pod: PodView, inventory: Mapping[str, GpuNode], rules: HealthRules
) -> Failure | None:
    """A rank whose node is gone, or not ready for longer than the grace period."""
    if not pod.node:
        return None
    node = inventory.get(pod.node)
    if not node_lost(node, rules):
        return None
    if node is None or node.deleting:
        return Failure(pod.rank, pod.node, "NodeLost", message=f"node {pod.node} is gone")
    since = node.not_ready_since
    assert since is not None
    message = f"node {pod.node} not ready since {since.isoformat()}"
    return Failure(pod.rank, pod.node, "NodeNotReady", message=message)


def deletion_failure(pod: PodView) -> Failure | None:
    """A rank someone else deleted or evicted (the operator's own deletions are known)."""
    if not pod.deleting:
        return None
    reason = pod.disruption or "PodDeleted"
    by = f" ({pod.disruption})" if pod.disruption else ""
    return Failure(pod.rank, pod.node or "", reason, message=f"the pod was deleted{by}")


def start_failure(pod: PodView, rules: HealthRules) -> Failure | None:
    """A rank whose container cannot start: a bad image or config, or no start in time."""
    if pod.phase not in {"Pending", "Running"} or pod.created is None or pod.ready:
        return None
    age = rules.now - pod.created
    reason = pod.waiting_reason
    if reason in STUCK_WAITING and age >= rules.grace:
        return Failure(pod.rank, pod.node or "", reason, message=pod.waiting_message)
    if (pod.phase == "Pending" or reason == "ContainerCreating") and age >= rules.start_timeout:
        seconds = int(rules.start_timeout.total_seconds())
        message = f"not started within {seconds}s ({reason or pod.phase})"
        return Failure(pod.rank, pod.node or "", "StartTimeout", message=message)
    return None


def schedule_failure(pod: PodView, rules: HealthRules) -> Failure | None:
    """A rank the scheduler could not bind to its pinned node for longer than the grace."""
    since = pod.unschedulable_since
    if since is None or rules.now - since < rules.grace:
        return None
    return Failure(pod.rank, pod.node or "", "Unschedulable", message=pod.message)


def next_health_deadline(
    group: ObservedGroup, inventory: Mapping[str, GpuNode], rules: HealthRules
) -> datetime | None:
    """The next moment the passing of time alone may fail this group, if any."""
    moments: list[datetime] = []
    for pod in group.pods.values():
        node = inventory.get(pod.node) if pod.node else None
        if node is not None and node.not_ready_since is not None:
            moments.append(node.not_ready_since + rules.grace)
        if pod.unschedulable_since is not None:
            moments.append(pod.unschedulable_since + rules.grace)
        if pod.created is not None and not pod.ready:
            if pod.waiting_reason in STUCK_WAITING:
                moments.append(pod.created + rules.grace)
            if pod.phase == "Pending" or pod.waiting_reason == "ContainerCreating":
                moments.append(pod.created + rules.start_timeout)
    future = [m for m in moments if m > rules.now]
    return min(future) if future else None
