"""`spec.rollout` and `spec.groupFailurePolicy`: replacing groups on change and on failure."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StrictStr

from mistral_operator.api import formats
from mistral_operator.api.base import CelRule, Rules, SpecModel
from mistral_operator.api.common import StrictInt64

_PERCENT = re.compile(formats.PERCENT)


def _is_int_or_percent(value: int | str) -> bool:
    if isinstance(value, int):
        return value >= 0
    return _PERCENT.fullmatch(value) is not None


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


IntOrPercent = Annotated[
    StrictInt64 | Annotated[StrictStr, Field(max_length=4)],
    Rules(
        CelRule(
            rule=(f"type(self) == int ? self >= 0 : self.matches(r'{formats.PERCENT}')"),
            message="must be a non-negative number of groups or a percentage from 0% to 100%",
            check=_is_int_or_percent,
        )
    ),
]


class RolloutSpec(SpecModel):
    """How groups are replaced when the pod-affecting spec changes."""

    cel_rules = (
        CelRule(
            rule=(
                "!has(self.maxSurge) || !has(self.maxUnavailable) || "
                "!((type(self.maxSurge) == int ? self.maxSurge == 0 : self.maxSurge == '0%') && "
                "(type(self.maxUnavailable) == int ? self.maxUnavailable == 0 : "
                "self.maxUnavailable == '0%'))"
            ),
            message=(
                "rollout.maxSurge and rollout.maxUnavailable must not both be 0: "
                "the rollout could never make progress"
            ),
            field_path=".maxSurge",
            check=lambda r: not (_is_zero(r.max_surge) and _is_zero(r.max_unavailable)),
        ),
    )

    max_surge: IntOrPercent = Field(
        default=1,
        description=(
            "Groups that may exist above the desired count during a rollout: a number or a "
            "percentage of desired groups (rounded up). New groups start before old ones "
            "are deleted."
        ),
    )
    max_unavailable: IntOrPercent = Field(
        default=0,
        description=(
            "Groups below the desired count that may be unavailable during a rollout: a "
            "number or a percentage (rounded down). 0 never lowers serving capacity. When "
            "maxSurge and maxUnavailable both come to 0 groups (such as maxSurge 0 with "
            "maxUnavailable 10% of 2 groups), maxUnavailable counts as 1 so that the rollout "
            "can progress, as in a Deployment."
        ),
    )
    progress_deadline_seconds: int = Field(
        default=3600,
        ge=30,
        le=86400,
        description=(
            "A rollout that makes no progress (no new group becomes ready) for this long is "
            "marked failed (Progressing=False, reason ProgressDeadlineExceeded); with "
            "autoRollback the last good revision is restored."
        ),
    )
    auto_rollback: bool = Field(
        default=True,
        description=(
            "When a rollout fails (past progressDeadlineSeconds, or its groups failed 3 "
            "times), serve the last good revision again: groups of the failed revision are "
            "removed and the old ones, with their cached weights, stay. The spec is left as "
            "written; the next spec change starts a new rollout."
        ),
    )
    drain_timeout_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description=(
            "A group leaving (replaced or scaled down) first stops receiving requests, then "
            "the operator waits until its leader has no running or queued request, or this "
            "long, before deleting it. Also the pods' termination grace period, so SGLang "
            "can finish in-flight requests when a pod is deleted by anyone."
        ),
    )
    surge_fallback_seconds: int = Field(
        default=120,
        ge=0,
        le=86400,
        description=(
            "When a surge group cannot be placed for this long (no free nodes), the rollout "
            "replaces groups one at a time instead: drain an old group, then create its "
            "replacement on the freed nodes."
        ),
    )


class GroupFailurePolicySpec(SpecModel):
    """What happens when a pod of a running group fails: SGLang cannot lose a rank."""

    cel_rules = (
        CelRule(
            rule=(
                "!has(self.initialBackoffSeconds) || !has(self.maxBackoffSeconds) || "
                "self.initialBackoffSeconds <= self.maxBackoffSeconds"
            ),
            message=(
                "groupFailurePolicy.initialBackoffSeconds must be less than or equal to "
                "groupFailurePolicy.maxBackoffSeconds"
            ),
            field_path=".initialBackoffSeconds",
            check=lambda p: p.initial_backoff_seconds <= p.max_backoff_seconds,
        ),
    )

    action: Literal["RecreateGroup", "Hold"] = Field(
        default="RecreateGroup",
        description=(
            "RecreateGroup: delete every pod of the group and start it again, with backoff. "
            "Hold: keep the failed group's pods for inspection; the group stops serving and "
            "counts as unavailable until deleted."
        ),
    )
    initial_backoff_seconds: int = Field(
        default=30, ge=1, le=3600, description="Delay before the first recreation of a group."
    )
    max_backoff_seconds: int = Field(
        default=900,
        ge=1,
        le=86400,
        description="Longest delay between recreations; the delay doubles after each failure.",
    )
