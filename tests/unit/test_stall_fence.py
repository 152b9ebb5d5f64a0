"""shell/stall.py: a replica that was frozen writes nothing it planned before the freeze."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import cast

import kopf
import pytest

from mistral_operator.core.reconcile import plan_reconcile
from mistral_operator.shell.kubeapi import KubeApi
from mistral_operator.shell.reconciler import Reconciler
from mistral_operator.shell.stall import TICK_SECONDS, StaleViewError, StallFence
from tests.unit.reconcile_fixtures import example, observed
from tests.unit.test_write_refusals import FakeApi, body_of

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


def test_the_reconciler_writes_nothing_of_a_plan_whose_view_went_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda _body, **event: events.append(event["reason"]))
    clock = Clock()
    f = fence(clock)
    api = FakeApi()
    reconciler = Reconciler(cast(KubeApi, api), node_grace=timedelta(seconds=40), fence=f)
    obs = observed(copy.deepcopy(example("quickstart-h200.yaml")["spec"]))
    plan = plan_reconcile(obs)
    view = f.view()
    clock.now += 20  # frozen between the snapshot and the first write
    with pytest.raises(StaleViewError):
        reconciler.execute(body_of(obs), obs, plan, view=view)
    assert (api.writes, api.statuses, events) == ([], [], [])
    # A plan from a view taken after the hold is written.
    clock.run(5, f)
    reconciler.execute(body_of(obs), obs, plan, view=f.view())
    assert api.writes
    assert api.statuses
    assert "GroupCreated" in events
