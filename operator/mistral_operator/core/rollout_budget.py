"""How many groups a rollout may add above, and take below, the desired count."""

from __future__ import annotations

from mistral_operator.api.spec import MistralModelSpec


def _groups(value: int | str, desired: int, *, round_up: bool) -> int:
    """A number of groups, or a percentage of the desired groups rounded as asked."""
    if isinstance(value, int):
        return value
    scaled = desired * int(value.removesuffix("%"))
    return -(-scaled // 100) if round_up else scaled // 100


def resolve_surge_and_unavailable(spec: MistralModelSpec, desired: int) -> tuple[int, int]:
    """`rollout.maxSurge` (rounded up) and `rollout.maxUnavailable` (rounded down), in groups.

    The CRD refuses both being zero as written, but percentages can still both round to
    zero (maxSurge 0 with maxUnavailable 10% of 2 groups): no group could then be added
    or removed and the rollout would wait forever. As a Deployment does, maxUnavailable
    then counts as 1.
    """
    surge = _groups(spec.rollout.max_surge, desired, round_up=True)
    unavailable = _groups(spec.rollout.max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable
