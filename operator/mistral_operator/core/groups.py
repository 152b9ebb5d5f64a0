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


def find_failure(
    group: ObservedGroup,
    inventory: Mapping[str, GpuNode],
    now: datetime,
    node_grace: timedelta,
    planned_nodes: Mapping[int, str] | None = None,
) -> Failure | None:
    """The first reason a group can no longer serve (or start); SGLang cannot lose a rank.

    A rank its node cannot take (another workload got there first) counts as failed
    after the same grace as a NotReady node, so the group is placed again elsewhere.
    """
    for rank in range(group.size):
        pod = group.pods.get(rank)
        if pod is None:
            planned = (planned_nodes or {}).get(rank, "")
            return Failure(rank, planned, "PodDeleted", message="the pod of this rank is gone")
        failure = (
            pod_failure(pod)
            or node_failure(pod, inventory, now, node_grace)
            or schedule_failure(pod, now, node_grace)
        )
        if failure is not None:
            return failure
    return None


def pod_failure(pod: PodView) -> Failure | None:
    """A rank whose process ended, restarted or is being removed."""
    where = pod.node or ""
    if pod.phase == "Failed":
        return Failure(pod.rank, where, pod.reason or "Failed", pod.exit_code, pod.message)
    if pod.phase == "Succeeded":
        return Failure(pod.rank, where, "Exited", pod.exit_code, "the server exited")
    if pod.restarts > 0:
        message = f"restarted {pod.restarts} time(s); last exit: {pod.reason or 'unknown'}"
        return Failure(pod.rank, where, "ContainerRestarted", pod.exit_code, message)
    return None


def node_failure(
    pod: PodView, inventory: Mapping[str, GpuNode], now: datetime, node_grace: timedelta
) -> Failure | None:
    """A rank whose node is gone, or not ready for longer than the grace period."""
    if not pod.node:
        return None
    node = inventory.get(pod.node)
    if node is None or node.deleting:
        return Failure(pod.rank, pod.node, "NodeLost", message=f"node {pod.node} is gone")
    since = node.not_ready_since
    if since is not None and now - since >= node_grace:
        message = f"node {pod.node} not ready since {since.isoformat()}"
        return Failure(pod.rank, pod.node, "NodeNotReady", message=message)
    return None


def schedule_failure(pod: PodView, now: datetime, grace: timedelta) -> Failure | None:
    """A rank the scheduler could not bind to its pinned node for longer than ``grace``."""
    since = pod.unschedulable_since
    if since is None or now - since < grace:
        return None
    return Failure(pod.rank, pod.node or "", "Unschedulable", message=pod.message)
