"""The queue-depth autoscaler's decision: how many replica groups, from SGLang's queues.

Pure. Each reconcile it gets the requests every serving group still has to serve
(``sglang:num_queue_reqs + sglang:num_running_reqs``, summed over the series each pod
of the group exports), and decides:

- the **recommendation**: ``ceil(total / targetQueuePerReplica)``, kept at the current
  count while the load per group is within ``tolerance`` of the target (as an HPA does);
  groups still starting count as capacity on the way, so a queue that stays while they
  boot asks for nothing more;
- **stabilization**: a scale-up takes the lowest recommendation of its window, a
  scale-down the highest of its (HPA's rule), so a short dip or spike moves nothing;
- **limits**: at most ``maxGroupsPerStep`` up or down at once, within
  ``minReplicas..maxReplicas``, and never more than can be placed;
- **no scale-down without data**: a serving group whose metrics could not be read, or
  were read too long ago, blocks any decrease; for an increase it counts as idle (as
  an HPA counts a pod without metrics on the way up), so nothing unmeasured adds groups.

The recommendation history the windows need is kept in ``status.autoscaling`` as runs
(a value and when it began), so an operator restarted mid-window decides the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mistral_operator.api.scaling import AutoscalingSpec
from mistral_operator.core.timestamps import format_time, parse_time


@dataclass(frozen=True)
class GroupLoad:
    """What one group's pods reported: None when a pod's metrics could not be read."""

    queued: int | None
    running: int | None
    error: str = ""  # why not, naming the pod

    @property
    def total(self) -> int | None:
        if self.queued is None or self.running is None:
            return None
        return self.queued + self.running


@dataclass(frozen=True)
class Run:
    """A recommendation and since when it has held."""

    since: datetime
    replicas: int

    def as_status(self) -> dict[str, Any]:
        return {"since": format_time(self.since), "replicas": self.replicas}


@dataclass(frozen=True)
class ScaleInput:
    spec: AutoscalingSpec
    now: datetime
    current: int  # the desired count in force (last decision, or the bounded spec.replicas)
    serving: Sequence[str]  # groups that take requests now
    starting: int  # groups created or recreated, not ready yet (capacity on the way)
    loads: Mapping[str, GroupLoad]  # by group, as last scraped
    history: Sequence[Run] = ()
    placeable: int | None = None  # most more groups the nodes can take; None: not known


@dataclass(frozen=True)
class ScaleDecision:
    desired: int
    recommendation: int
    queue: int | None  # requests waiting or running at the serving groups
    history: tuple[Run, ...]
    reason: str
    # Groups whose metrics are missing: no scale-down until they are back.
    unreadable: tuple[str, ...] = ()
    limited_by: str = ""  # "", "maxGroupsPerStep", "maxReplicas" or "capacity"


def recommend(inp: ScaleInput) -> tuple[int, int | None, tuple[str, ...]]:
    """The raw recommendation, the observed queue, and the groups without metrics."""
    spec = inp.spec
    unreadable = tuple(sorted(g for g in inp.serving if _total(inp.loads.get(g)) is None))
    totals = [t for g in inp.serving if (t := _total(inp.loads.get(g))) is not None]
    if not inp.serving:
        return inp.current, None, unreadable
    # A group without data counts as idle here, as an HPA counts a pod without metrics
    # on the way up: a scale-up never comes from what nobody measured. (Any decrease
    # waits for the data anyway: see ``decide``.)
    queue = sum(totals)
    capacity = len(inp.serving) + inp.starting
    ratio = queue / (spec.target_queue_per_replica * max(capacity, 1))
    if abs(ratio - 1.0) <= spec.tolerance:
        return capacity, queue, unreadable
    wanted = math.ceil(queue / spec.target_queue_per_replica)
    return wanted, queue, unreadable


def decide(inp: ScaleInput) -> ScaleDecision:
    spec = inp.spec
    raw, queue, unreadable = recommend(inp)
    bounded = min(max(raw, spec.min_replicas), spec.max_replicas)
    history = _record(inp.history, inp.now, bounded, _longest_window(spec))
    up_window = timedelta(seconds=spec.scale_up.stabilization_window_seconds)
    down_window = timedelta(seconds=spec.scale_down.stabilization_window_seconds)
    current = inp.current
    limited_by = ""
    if bounded > current:
        desired = min(_values_since(history, inp.now - up_window, bounded))
        step = spec.scale_up.max_groups_per_step
        if desired > current + step:
            desired, limited_by = current + step, "maxGroupsPerStep"
        if inp.placeable is not None and desired > current + inp.placeable:
            desired, limited_by = max(current, current + inp.placeable), "capacity"
    elif bounded < current:
        desired = max(_values_since(history, inp.now - down_window, bounded))
        step = spec.scale_down.max_groups_per_step
        if desired < current - step:
            desired, limited_by = current - step, "maxGroupsPerStep"
        if unreadable:
            desired = current
    else:
        desired = current
    desired = min(max(desired, spec.min_replicas), spec.max_replicas)
    if raw > spec.max_replicas and desired == spec.max_replicas:
        limited_by = limited_by or "maxReplicas"
    reason = _reason(
        inp,
        queue=queue,
        bounded=bounded,
        desired=desired,
        unreadable=unreadable,
        limited_by=limited_by,
    )
    return ScaleDecision(
        desired=desired,
        recommendation=bounded,
        queue=queue,
        history=history,
        reason=reason,
        unreadable=unreadable,
        limited_by=limited_by,
    )


def _total(load: GroupLoad | None) -> int | None:
    return None if load is None else load.total


def _longest_window(spec: AutoscalingSpec) -> timedelta:
    return timedelta(
        seconds=max(
            spec.scale_up.stabilization_window_seconds,
            spec.scale_down.stabilization_window_seconds,
        )
    )


def _record(
    history: Sequence[Run], now: datetime, replicas: int, keep: timedelta
) -> tuple[Run, ...]:
    """The runs with ``replicas`` recommended now; runs that ended before the longest
    window began are dropped (the last one always stays)."""
    runs = list(history)
    if not runs or runs[-1].replicas != replicas:
        runs.append(Run(now, replicas))
    start = now - keep
    kept = [r for i, r in enumerate(runs) if i + 1 == len(runs) or runs[i + 1].since > start]
    return tuple(kept)


def _values_since(history: Sequence[Run], start: datetime, now_value: int) -> list[int]:
    """Every recommendation that held at some moment since ``start``."""
    values = [now_value]
    for i, run in enumerate(history):
        ended = history[i + 1].since if i + 1 < len(history) else None
        if ended is None or ended > start:
            values.append(run.replicas)
    return values


def _reason(
    inp: ScaleInput,
    *,
    queue: int | None,
    bounded: int,
    desired: int,
    unreadable: tuple[str, ...],
    limited_by: str,
) -> str:
    target = inp.spec.target_queue_per_replica
    if queue is None:
        seen = "no group serves yet"
    else:
        seen = f"queue {queue} over {len(inp.serving)} serving group(s), target {target} each"
        if inp.starting:
            seen += f", {inp.starting} starting"
    parts = [seen, f"recommends {bounded}"]
    if unreadable:
        parts.append(f"no metrics from {', '.join(unreadable)}: no scale-down")
    if desired != bounded and not unreadable:
        parts.append(
            f"held at {desired} by {limited_by}"
            if limited_by
            else f"held at {desired} by the stabilization window"
        )
    return "; ".join(parts)


def history_from_status(status: Mapping[str, Any]) -> tuple[Run, ...]:
    runs = []
    for item in (status.get("autoscaling") or {}).get("recommendations") or []:
        since = parse_time(item.get("since"))
        if since is not None and isinstance(item.get("replicas"), int):
            runs.append(Run(since, item["replicas"]))
    return tuple(runs)
