"""Status conditions: built from decisions, keeping transition times when nothing changed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mistral_operator.core.timestamps import format_time

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SCHEDULABLE = "Schedulable"
CACHE_READY = "CacheReady"
ROLLED_BACK = "RolledBack"
SCALING_ACTIVE = "ScalingActive"
EXTERNAL_SCALER = "ExternalScaler"


@dataclass(frozen=True)
class ConditionSpec:
    """A condition as decided, before it meets the previous status."""

    type: str
    status: bool
    reason: str
    message: str = ""


def render_conditions(
    decided: Iterable[ConditionSpec],
    previous: Iterable[Mapping[str, Any]],
    generation: int,
    now: datetime,
    restarted: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Conditions in the metav1.Condition shape; lastTransitionTime moves only on a flip,
    or for the types in ``restarted``: a condition that now speaks of something new (a
    Progressing that turned to another revision) starts its clock again."""
    before = {c.get("type"): c for c in previous}
    again = set(restarted)
    out = []
    for cond in decided:
        status = "True" if cond.status else "False"
        prior = before.get(cond.type)
        if prior is None or prior.get("status") != status or cond.type in again:
            since = format_time(now)
        else:
            since = prior["lastTransitionTime"]
        out.append(
            {
                "type": cond.type,
                "status": status,
                "observedGeneration": generation,
                "lastTransitionTime": since,
                "reason": cond.reason,
                "message": cond.message,
            }
        )
    return out


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
