"""The autoscaler's decision: sizing in one step, capacity on the way, windows, limits,
no scale-down without data; then properties over random load."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mistral_operator.api.scaling import AutoscalingSpec
from mistral_operator.core.autoscaler import GroupLoad, Run, ScaleInput, decide

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def scaling(**extra: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate({"maxReplicas": 16, "targetQueuePerReplica": 10, **extra})


def inp(
    queue_per_group: Sequence[int | None],
    *,
    current: int | None = None,
    starting: int = 0,
    spec: AutoscalingSpec | None = None,
    history: tuple[Run, ...] = (),
    now: datetime = NOW,
    placeable: int | None = None,
) -> ScaleInput:
    names = [f"g{i}" for i in range(len(queue_per_group))]
    loads = {
        n: GroupLoad(q, 0) if q is not None else GroupLoad(None, None, "timeout")
        for n, q in zip(names, queue_per_group, strict=True)
    }
    return ScaleInput(
        spec=spec or scaling(),
        now=now,
        current=len(names) + starting if current is None else current,
        serving=names,
        starting=starting,
        loads=loads,
        history=history,
        placeable=placeable,
    )


def test_a_queue_of_four_times_the_target_is_sized_in_one_step() -> None:
    decision = decide(inp([40]))
    assert decision.desired == 4
    assert decision.queue == 40
    assert "recommends 4" in decision.reason


def test_groups_still_starting_are_capacity_on_the_way() -> None:
    assert decide(inp([40], starting=3)).desired == 4  # nothing more while they boot


def test_within_tolerance_nothing_changes() -> None:
    assert decide(inp([10, 11])).desired == 2  # 21 / 20 is within 10 %
    assert decide(inp([10, 13])).desired == 3


def test_a_scale_down_waits_for_its_window_and_takes_the_highest_recommendation() -> None:
    spec = scaling(scaleDown={"stabilizationWindowSeconds": 300, "maxGroupsPerStep": 4})
    busy = decide(inp([10, 10, 10, 10], spec=spec))
    assert busy.desired == 4
    at = NOW + timedelta(seconds=60)
    quiet = decide(inp([0, 0, 0, 0], spec=spec, history=busy.history, now=at))
    assert quiet.desired == 4, "the window still holds the busy recommendation"
    # Busy until 60 s: the window holds it until 360 s.
    held = decide(
        inp([0, 0, 0, 0], spec=spec, history=quiet.history, now=at + timedelta(seconds=299))
    )
    assert held.desired == 4
    later = decide(
        inp([0, 0, 0, 0], spec=spec, history=quiet.history, now=at + timedelta(seconds=301))
    )
    assert later.desired == 1


def test_scale_down_goes_by_at_most_its_step() -> None:
    spec = scaling(scaleDown={"stabilizationWindowSeconds": 0})
    decision = decide(inp([0, 0, 0, 0], spec=spec))
    assert decision.desired == 3
    assert decision.limited_by == "maxGroupsPerStep"


def test_scale_up_is_limited_by_its_step_the_maximum_and_what_can_be_placed() -> None:
    assert decide(inp([200], spec=scaling(scaleUp={"maxGroupsPerStep": 2}))).desired == 3
    capped = decide(inp([400]))
    assert (capped.desired, capped.limited_by) == (16, "maxReplicas")
    room = decide(inp([100], placeable=2))
    assert (room.desired, room.limited_by) == (3, "capacity")


def test_missing_metrics_block_scale_down_but_not_scale_up() -> None:
    spec = scaling(scaleDown={"stabilizationWindowSeconds": 0})
    blocked = decide(inp([0, None, 0], spec=spec))
    assert blocked.desired == 3
    assert blocked.unreadable == ("g1",)
    assert "no metrics from g1" in blocked.reason
    # Up, g1 counts as idle: 60 requests ask for 6 groups, not more for what g1 may hold.
    assert decide(inp([60, None], spec=spec)).desired == 6


def test_bounds_hold_and_nothing_serving_keeps_the_count() -> None:
    spec = scaling(minReplicas=2, scaleDown={"stabilizationWindowSeconds": 0})
    assert decide(inp([0, 0, 0], spec=spec)).desired == 2
    idle = ScaleInput(spec=spec, now=NOW, current=2, serving=[], starting=2, loads={})
    assert decide(idle).desired == 2


def test_history_keeps_only_what_the_longest_window_needs() -> None:
    spec = scaling(scaleDown={"stabilizationWindowSeconds": 60})
    runs: tuple[Run, ...] = ()
    kept = []
    for minute, queue in enumerate([40, 30, 20, 10, 10, 10]):
        runs = decide(
            inp([queue], spec=spec, history=runs, now=NOW + timedelta(minutes=minute))
        ).history
        kept.append([r.replicas for r in runs])
    # A run stays while it ended within the window (60 s) or is the latest.
    assert kept == [[4], [4, 3], [3, 2], [2, 1], [1], [1]]


# -- properties ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    queues=st.lists(st.integers(0, 200), min_size=1, max_size=8),
    current=st.integers(1, 16),
    starting=st.integers(0, 4),
    unreadable=st.booleans(),
)
def test_decisions_stay_in_bounds_and_never_drop_without_data(
    queues: list[int], current: int, starting: int, unreadable: bool
) -> None:
    loads: list[int | None] = list(queues)
    if unreadable:
        loads[0] = None
    spec = scaling(minReplicas=1, scaleDown={"stabilizationWindowSeconds": 0})
    decision = decide(inp(loads, current=current, starting=starting, spec=spec))
    assert 1 <= decision.desired <= 16
    if unreadable:
        assert decision.desired >= current
    assert abs(decision.desired - current) <= max(16, 1)
    if decision.desired < current:
        assert current - decision.desired <= spec.scale_down.max_groups_per_step


@settings(max_examples=100, deadline=None)
@given(noise=st.lists(st.integers(-3, 3), min_size=120, max_size=120))
def test_noisy_load_at_the_target_never_flaps(noise: list[int]) -> None:
    """Ten minutes of 5 s decisions with the load per group at the target, give or take
    a few requests: the count never changes."""
    spec = scaling(targetQueuePerReplica=32)
    runs: tuple[Run, ...] = ()
    current = 4
    changes = 0
    for step, jitter in enumerate(noise):
        per_group = [32 + jitter] * current
        decision = decide(
            inp(
                per_group,
                spec=spec,
                history=runs,
                now=NOW + timedelta(seconds=5 * step),
            )
        )
        runs = decision.history
        changes += decision.desired != current
        current = decision.desired
    assert changes == 0


@settings(max_examples=100, deadline=None)
@given(queue=st.integers(0, 640))
def test_a_constant_queue_while_groups_boot_overshoots_by_nothing(queue: int) -> None:
    spec = scaling(maxReplicas=64, scaleUp={"maxGroupsPerStep": 64})
    first = decide(inp([queue], spec=spec))
    wanted = max(1, math.ceil(queue / 10))
    assert first.desired in {wanted, 1} or abs(queue / 10 - 1) <= 0.1
    starting = first.desired - 1
    again = decide(inp([queue], spec=spec, starting=starting, history=first.history))
    assert again.desired == first.desired


def test_an_up_window_takes_the_lowest_recommendation() -> None:
    spec = scaling(scaleUp={"stabilizationWindowSeconds": 30})
    calm = decide(inp([10]))
    spike = decide(inp([50], spec=spec, history=calm.history, now=NOW + timedelta(seconds=10)))
    assert spike.desired == 1, "a spike shorter than the window adds nothing"
    held = decide(inp([50], spec=spec, history=spike.history, now=NOW + timedelta(seconds=41)))
    assert held.desired == 5


def test_groups_not_read_yet_add_nothing_on_the_way_up() -> None:
    """Three groups just booted (not read yet) beside one that holds all 12 requests:
    still 4 groups for a target of 3, not 7 for load nobody measured."""
    spec = scaling(targetQueuePerReplica=3)
    decision = decide(inp([12, None, None, None], spec=spec))
    assert decision.desired == 4
    assert decision.unreadable == ("g1", "g2", "g3")
