"""The rolling-update step planner: scenarios, then properties over simulated clusters."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from mistral_operator.core.rollout import (
    STEP_COMPLETE,
    STEP_CREATING,
    STEP_DRAINING,
    STEP_WAITING_READY,
    STEP_WAITING_WEIGHTS,
    RolloutGroup,
    RolloutInput,
    RolloutStep,
    min_serving,
    plan_rollout,
)


def serving(name: str, revision: str = "old", index: int | None = None) -> RolloutGroup:
    idx = int(name.rsplit("-", 1)[-1]) if index is None else index
    return RolloutGroup(name, idx, revision, ready=True, routed=True)


def plan(*groups: RolloutGroup, desired: int = 2, surge: int = 1, unavailable: int = 0,
         fallback: bool = False) -> RolloutStep:  # fmt: skip
    return plan_rollout(
        RolloutInput("new", desired, surge, unavailable, tuple(groups), fallback=fallback)
    )


def test_surge_first_creates_one_new_group_and_touches_no_old_one() -> None:
    step = plan(serving("g-0"), serving("g-1"))
    assert (step.create, step.drain, step.delete) == (1, (), ())
    assert step.reason == STEP_CREATING


def test_an_old_group_drains_only_once_the_new_one_serves() -> None:
    starting = RolloutGroup("g-2", 2, "new", ready=True, routed=False)
    waiting = plan(serving("g-0"), serving("g-1"), starting)
    assert (waiting.create, waiting.drain, waiting.delete) == (0, (), ())
    assert waiting.reason == STEP_WAITING_READY
    assert waiting.message.startswith("routing g-2")  # this step's plan routes it
    step = plan(serving("g-0"), serving("g-1"), serving("g-2", "new"))
    assert step.drain == ("g-0",)  # the oldest first
    assert step.reason == STEP_DRAINING


def test_a_drained_group_is_deleted_and_its_room_used_at_once() -> None:
    drained = replace(serving("g-0"), routed=False, draining=True, drained=True)
    step = plan(drained, serving("g-1"), serving("g-2", "new"))
    assert step.delete == ("g-0",)
    assert step.create == 1


def test_a_draining_group_still_holds_its_gpus() -> None:
    busy = replace(serving("g-0"), routed=False, draining=True)
    step = plan(busy, serving("g-1"), serving("g-2", "new"))
    assert (step.create, step.delete) == (0, ())
    assert step.reason == STEP_DRAINING


def test_old_groups_that_serve_nothing_go_at_once() -> None:
    broken = RolloutGroup("g-1", 1, "old", ready=False, routed=False)
    step = plan(serving("g-0"), broken)
    assert step.delete == ("g-1",)
    assert step.create == 2  # desired 2 + surge 1 - the one left


def test_unstaged_weights_keep_every_old_group_untouched() -> None:
    old = [replace(serving(f"g-{i}"), staged=False) for i in range(2)]
    step = plan(*old, unavailable=1)
    assert (step.drain, step.delete) == ((), ())
    assert step.create == 1
    step = plan(*old, serving("g-2", "new"), unavailable=1)
    assert (step.drain, step.delete) == ((), ())
    assert step.reason == STEP_WAITING_WEIGHTS


def test_max_unavailable_drains_before_the_replacement_is_ready() -> None:
    step = plan(serving("g-0"), serving("g-1"), surge=0, unavailable=1)
    assert step.drain == ("g-0",)
    assert step.create == 0  # g-0 still holds its GPUs until it is deleted


def test_no_room_for_surge_falls_back_to_one_group_at_a_time() -> None:
    old = (serving("g-0"), serving("g-1"))
    assert plan(*old).drain == ()
    step = plan(*old, fallback=True)
    assert step.drain == ("g-0",)
    assert min_serving(RolloutInput("new", 2, 1, 0, old, fallback=True)) == 1
    # The replacement is starting: the next old group waits for it.
    starting = RolloutGroup("g-0", 0, "new", ready=False, routed=False)
    assert plan(starting, serving("g-1"), fallback=True).drain == ()


def test_scale_down_drains_the_newest_serving_group_and_deletes_unready_ones_first() -> None:
    unready = RolloutGroup("g-0", 0, "new", ready=False, routed=False)
    step = plan(unready, serving("g-1", "new"), serving("g-2", "new"), desired=1)
    assert step.delete == ("g-0",)
    assert step.drain == ("g-2",)
    assert step.scaled_down == ("g-0", "g-2")


def test_complete_when_every_group_serves_the_target() -> None:
    step = plan(serving("g-0", "new"), serving("g-1", "new"))
    assert step == RolloutStep(reason=STEP_COMPLETE, message=step.message)


# -- properties over a simulated cluster ----------------------------------------------


@dataclass
class SimGroup:
    name: str
    index: int
    revision: str
    ready: bool = False
    routed: bool = False
    draining: bool = False
    drained: bool = False
    staged: bool = False

    def view(self) -> RolloutGroup:
        return RolloutGroup(
            self.name,
            self.index,
            self.revision,
            self.ready,
            self.routed,
            self.draining,
            self.drained,
            self.staged or self.revision == "new",
        )


@dataclass
class Scenario:
    desired: int
    old: int
    surge: int
    unavailable: int
    capacity: int  # groups the cluster can hold at once
    fallback_after: int  # steps of blocked surge before drain-then-replace


scenarios = st.builds(
    Scenario,
    desired=st.integers(1, 5),
    old=st.integers(0, 6),
    surge=st.integers(0, 3),
    unavailable=st.integers(0, 3),
    capacity=st.integers(0, 4),
    fallback_after=st.integers(1, 4),
).map(lambda s: replace(s, surge=1 if s.surge == s.unavailable == 0 else s.surge))


@settings(max_examples=300, deadline=None)
@given(scenarios, st.randoms(use_true_random=False))
def test_rollouts_keep_capacity_never_route_partial_groups_and_finish(
    sc: Scenario, rnd: object
) -> None:
    assert isinstance(rnd, random.Random)
    groups = [SimGroup(f"g-{i}", i, "old", ready=True, routed=True) for i in range(sc.old)]
    # The cluster holds what exists plus `capacity` more groups.
    capacity = max(len(groups) + sc.capacity, sc.desired)
    blocked = 0
    next_index = len(groups)
    for _ in range(400):
        fallback = blocked >= sc.fallback_after
        inp = RolloutInput(
            "new", sc.desired, sc.surge, sc.unavailable, tuple(g.view() for g in groups), fallback
        )
        step = plan_rollout(inp)
        before = sum(1 for g in groups if g.view().serves)
        floor = min(before, min_serving(inp))
        # Apply the step as the operator would: delete, drain, then create what fits.
        groups = [g for g in groups if g.name not in step.delete]
        for g in groups:
            if g.name in step.drain:
                assert g.view().serves, "only a serving group is drained"
                assert g.revision != "new" or g.name in step.scaled_down
                assert g.staged or g.revision == "new", "touched before its weights were staged"
                g.draining, g.routed = True, False
                if g.revision == "old":
                    skipped = [
                        o.index
                        for o in groups
                        if o.revision == "old" and o.index < g.index and o.view().serves
                        and o.staged and o.name not in step.drain
                    ]  # fmt: skip
                    assert not skipped, f"{g.name} retired before older {skipped}"
        after = sum(1 for g in groups if g.view().serves)
        assert after >= floor, f"serving fell from {before} to {after} below {floor}"
        assert len(groups) <= max(sc.desired + sc.surge, sc.old)
        placed = min(step.create, capacity - len(groups))
        blocked = blocked + 1 if placed < step.create else 0
        for _ in range(placed):
            groups.append(SimGroup(f"g-{next_index}", next_index, "new"))
            next_index += 1
        if step.reason == STEP_COMPLETE and not any(g.revision == "old" for g in groups):
            break
        # The cluster moves on: readiness, routing of ready groups, drains, fills.
        for g in groups:
            if g.ready and not g.draining:
                g.routed = True  # mark_serving routes a ready group; never a partial one
            if not g.ready and rnd.random() < 0.5:
                g.ready = True
            if g.draining and rnd.random() < 0.5:
                g.drained = True
            if not g.staged and rnd.random() < 0.3:
                g.staged = True
    else:
        raise AssertionError(f"rollout never finished: {groups}")
    assert sorted(g.revision for g in groups) == ["new"] * sc.desired
