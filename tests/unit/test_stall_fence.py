"""shell/stall.py: a replica that was frozen writes nothing it planned before the freeze."""

from __future__ import annotations

import pytest

from mistral_operator.shell.stall import TICK_SECONDS, StaleViewError, StallFence

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def run(self, seconds: float, fence: StallFence) -> None:
        """Time passing while the event loop ticks (the process runs)."""
        end = self.now + seconds
        while self.now + TICK_SECONDS <= end:
            self.now += TICK_SECONDS
            fence.tick()
        self.now = end


def fence(clock: Clock) -> StallFence:
    return StallFence(limit=5, settle=5, clock=clock)


def test_a_running_process_writes_its_plans_however_slow_its_calls() -> None:
    clock = Clock()
    f = fence(clock)
    view = f.view()
    clock.run(30, f)  # a thread blocked in slow API calls; the loop keeps ticking
    f.check(view)
    assert f.hold_seconds() == 0


def test_a_freeze_stops_the_plan_the_thread_resumes_with() -> None:
    clock = Clock()
    f = fence(clock)
    view = f.view()
    clock.run(1, f)
    f.check(view)  # a first write, before the freeze
    clock.now += 20  # SIGSTOP ... SIGCONT: no tick meanwhile; the thread runs first
    with pytest.raises(StaleViewError):
        f.check(view)
    assert f.hold_seconds() == 5
    # The ticker, running next, does not count the same stall again.
    f.tick()
    assert f.hold_seconds() == 5


def test_the_ticker_sees_a_freeze_first_and_holds_observing() -> None:
    clock = Clock()
    f = fence(clock)
    view = f.view()
    clock.now += 12
    f.tick()
    assert f.hold_seconds() == 5
    with pytest.raises(StaleViewError):
        f.check(view)
    clock.run(5, f)
    assert f.hold_seconds() == 0
    f.check(f.view())  # a view taken after the hold is acted on


def test_a_short_hiccup_is_no_stall() -> None:
    clock = Clock()
    f = fence(clock)
    view = f.view()
    clock.now += 4  # under the limit: no standby could have taken over
    f.tick()
    f.check(view)
    assert f.hold_seconds() == 0
