"""One event for the groups one reconcile created or saw start serving, not one per group.

A reconcile that creates or serves several groups at once tells ``kubectl describe`` so
in one line: one write instead of one per group, and the list stays readable for a
model of many groups (the first ``LISTED`` are named, the rest counted).
"""

from __future__ import annotations

from collections.abc import Sequence

from mistral_operator.core.snapshot import Event

LISTED = 8

# (group name, its nodes in rank order)
Placed = tuple[str, Sequence[str]]


def groups_created(groups: Sequence[Placed], verb: str, revision: str) -> Event:
    """``verb`` is created or recreated."""
    if len(groups) == 1:
        name, nodes = groups[0]
        message = f"group {name} {verb} on nodes {', '.join(nodes)} (revision {revision})"
    else:
        message = f"{len(groups)} groups {verb} (revision {revision}): {_where(groups)}"
    return Event("Normal", "GroupCreated", message)


def groups_serving(groups: Sequence[Placed]) -> Event:
    if len(groups) == 1:
        name, nodes = groups[0]
        message = f"group {name} is ready and serving on {', '.join(nodes)}"
    else:
        message = f"{len(groups)} groups are ready and serving: {_where(groups)}"
    return Event("Normal", "GroupServing", message)


def _where(groups: Sequence[Placed]) -> str:
    named = "; ".join(f"{name} on {', '.join(nodes)}" for name, nodes in groups[:LISTED])
    more = len(groups) - LISTED
    return named + (f"; and {more} more" if more > 0 else "")
