"""The rolling-update step: which groups to create, drain and delete, and why it waits.

Pure: it sees each live group as a `RolloutGroup` and decides one step. The caller
(``lifecycle.converge_groups``) places the new groups, renders pods and writes records.

Rules, in the order they apply:

- A draining group is deleted once it is idle or its drain timeout has passed.
- Surplus groups of the target revision (a scale-down) are drained, those not serving
  deleted at once; the least useful go first (not ready, then the least loaded, then
  the newest).
- Old groups that do not serve (not ready, or not yet routed) are deleted at once: they
  carry no traffic.
- An old group that serves is drained only when, without it, at least
  ``desired - maxUnavailable`` groups still serve, and only when the target's weights
  are staged on its nodes (nothing old is touched before the new weights are Ready).
  The oldest (lowest index) goes first.
- New groups are created up to ``desired``, with at most ``desired + maxSurge`` groups
  alive at once; draining groups still hold their GPUs and count.
- When surge capacity could not be placed for ``surgeFallbackSeconds``, the rollout
  falls back to drain-then-replace: one group below the desired count at a time
  (``maxUnavailable`` counts as at least 1), so a cluster with no spare nodes finishes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here


@dataclass(frozen=True)
class RolloutGroup:
    name: str
    index: int
    revision: str
    ready: bool  # every rank ready
    routed: bool  # the client Service routes to its leader (as observed)
    draining: bool = False  # unrouted for retirement; waiting for in-flight requests
    drained: bool = False  # idle, or its drain timeout passed
    staged: bool = True  # the target revision's weights are Ready on all its nodes
    load: int = 0  # requests waiting or running at it, as last read (0 if unknown)

    @property
    def serves(self) -> bool:
        return self.ready and self.routed and not self.draining


@dataclass(frozen=True)
class RolloutInput:
    target: str
    desired: int
    surge: int
    unavailable: int
    groups: tuple[RolloutGroup, ...]
    fallback: bool = False  # surge could not be placed for surgeFallbackSeconds


@dataclass(frozen=True)
class RolloutStep:
    create: int = 0
    drain: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    # Why the step is what it is: one of the STEP_* reasons, and the same in words.
    reason: str = "Complete"
    message: str = ""
    # Groups scaled down rather than replaced (for events).
    scaled_down: tuple[str, ...] = ()


STEP_COMPLETE = "Complete"
STEP_CREATING = "CreatingGroups"
STEP_WAITING_READY = "WaitingForReadiness"
STEP_WAITING_WEIGHTS = "WaitingForWeights"
STEP_DRAINING = "Draining"
STEP_FALLBACK = "DrainThenReplace"
STEP_WAITING_ROOM = "WaitingForSurgeRoom"


def min_serving(inp: RolloutInput) -> int:
    """Fewest groups that must serve at every step."""
    unavailable = max(inp.unavailable, 1) if inp.fallback else inp.unavailable
    return max(0, inp.desired - unavailable)


def plan_rollout(inp: RolloutInput) -> RolloutStep:
    draining = [g for g in inp.groups if g.draining]
    active = [g for g in inp.groups if not g.draining]
    new = [g for g in active if g.revision == inp.target]
    old = [g for g in active if g.revision != inp.target]
    delete = [g.name for g in draining if g.drained]
    drain: list[str] = []
    serving = sum(1 for g in active if g.serves)

    # Scale down: surplus groups of the target revision.
    surplus = _least_useful(new)[: max(0, len(new) - inp.desired)]
    for group in surplus:
        (drain if group.serves else delete).append(group.name)
        serving -= 1 if group.serves else 0
    kept_new = [g for g in new if g not in surplus]

    # Old groups that serve nothing go at once; serving ones are drained within budget.
    floor = min_serving(inp)
    unstaged: list[str] = []
    for group in sorted(old, key=lambda g: (g.serves, g.index)):
        if not group.serves:
            delete.append(group.name)
        elif not group.staged:
            unstaged.append(group.name)
        elif serving - 1 >= floor:
            drain.append(group.name)
            serving -= 1

    alive = len(inp.groups) - len(delete)
    room = inp.desired + inp.surge - alive
    create = max(0, min(inp.desired - len(kept_new), room))
    reason, message = _explain(inp, (kept_new, old, draining), drain, create, unstaged)
    return RolloutStep(
        create=create,
        drain=tuple(drain),
        delete=tuple(delete),
        reason=reason,
        message=message,
        scaled_down=tuple(g.name for g in surplus),
    )


def waiting_for_readiness(groups: Iterable[str]) -> str:
    """The words of the readiness wait, the same whoever says them (in index order)."""
    names = sorted(groups, key=lambda name: (L.group_index(name) or 0, name))
    return f"waiting for {', '.join(names)} to become ready"


def _least_useful(groups: Iterable[RolloutGroup]) -> list[RolloutGroup]:
    """Not serving first, then the least loaded (fewest requests to drain), then the newest."""
    return sorted(groups, key=lambda g: (g.serves, g.ready, g.load, -g.index))


def _explain(
    inp: RolloutInput,
    groups: tuple[list[RolloutGroup], list[RolloutGroup], list[RolloutGroup]],
    drain: list[str],
    create: int,
    unstaged: list[str],
) -> tuple[str, str]:
    """The step's reason and message: the first of these that holds."""
    new, old, draining = groups
    waiting_drain = [g.name for g in draining if not g.drained] + drain
    # A ready new group is routed by the same plan (lifecycle.mark_serving), so the step
    # is said as it stands once the plan is written: the status this step goes into
    # needs no second write when the routes land.
    starting = [g.name for g in new if not g.ready]
    routing = [g.name for g in new if g.ready and not g.routed]
    done = not old and not draining and len(new) == inp.desired and not starting
    how = " (drain-then-replace: no room for surge)" if inp.fallback else ""
    candidates = (
        (done, STEP_COMPLETE, f"all {inp.desired} groups run revision {inp.target}"),
        (
            bool(waiting_drain),
            STEP_DRAINING,
            f"draining {', '.join(waiting_drain)}: waiting for in-flight requests to finish",
        ),
        (
            bool(unstaged),
            STEP_WAITING_WEIGHTS,
            f"waiting for revision {inp.target}'s weights on the nodes of "
            f"{', '.join(unstaged)} before touching them",
        ),
        (bool(create), STEP_CREATING, f"creating {create} group(s) of revision {inp.target}{how}"),
        (bool(starting), STEP_WAITING_READY, waiting_for_readiness(starting)),
        (
            inp.fallback,
            STEP_FALLBACK,
            "drain-then-replace: waiting for room to replace the next group",
        ),
        (
            bool(routing),
            STEP_WAITING_READY,
            f"routing {', '.join(routing)}: old groups are drained once it serves",
        ),
    )
    for holds, reason, message in candidates:
        if holds:
            return reason, message
    return STEP_WAITING_READY, (
        f"{len(old)} old group(s) wait: {min_serving(inp)} of {inp.desired} must keep serving"
    )
