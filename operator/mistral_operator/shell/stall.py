"""A replica that was frozen must not act on what it saw before the freeze.

Kopf's peering lets one replica act. A replica that stops running for a while (SIGSTOP,
a paused VM or container, a long stop-the-world, a partitioned node that comes back)
has its peering record lapse, and a standby takes over and changes things. When the
frozen replica runs again it is the higher-priority peer, so it stays active, and the
standby pauses once it reads the renewed record. In between both act, and the resumed
replica acts on a stale view: a reconcile it was in the middle of goes on writing, and
its watch caches still show the world of before the freeze (a group the standby
deleted, pods it did not see created) until the queued events are read. Recreating a
deleted group or deleting a new one from that view is the double action to avoid.

`StallFence` gives the reconciler two rules:
- a plan is written only while its view is fresh: no write once the process is seen to
  have stalled since the view was taken. A ticker on the event loop marks the time every
  half second; a tick late by more than ``limit``, or no tick for ``limit`` when the
  reconcile thread is about to write, is a stall (the thread blocked in a slow API call
  does not stop the loop from ticking, so waiting is no stall; a frozen process stops
  both, and the thread may run first when it resumes);
- after a stall, nothing is observed for ``settle`` seconds: the caches read the events
  queued meanwhile, and the standby reads the renewed peering record and pauses.
A plan stopped this way raises `StaleViewError`; the loop waits out the hold and
reconciles from a fresh view, which sees what was written.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
TICK_SECONDS = 0.5


class StaleViewError(RuntimeError):
    """A plan's view went stale before all of it was written; the rest was not."""


class StallFence:
    """Notices stalls of this process and holds back writes from views taken before."""

    def __init__(
        self, *, limit: float, settle: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.settle = settle
        self._clock = clock
        self._lock = threading.Lock()
        self._ticked = clock()
        self._stalled_at = float("-inf")  # when the last stall was seen (its end)

    def stalled(self, gap: float) -> None:
        """Record a stall of ``gap`` seconds seen now; hold observing for ``settle``."""
        now = self._clock()
        with self._lock:
            self._stalled_at = now
            self._ticked = now
        log.warning(
            "this replica did not run for %.1fs: nothing planned before is written, and "
            "nothing is observed for %.0fs while its caches and the peering catch up",
            gap,
            self.settle,
        )

    def hold_seconds(self) -> float:
        """How long to wait before observing again (0 when not holding)."""
        with self._lock:
            return max(0.0, self._stalled_at + self.settle - self._clock())

    def view(self) -> float:
        """A new view's time, taken before the reconcile reads its snapshot."""
        return self._clock()

    def check(self, view: float) -> None:
        """Raise `StaleViewError` if the view taken at ``view`` may no longer be acted on."""
        now = self._clock()
        with self._lock:
            silent = now - self._ticked
        if silent > self.limit:
            self.stalled(silent)
        with self._lock:
            if self._stalled_at >= view:
                raise StaleViewError(
                    "the view this plan was made from is stale: the replica stalled since"
                )

    def tick(self) -> None:
        """One beat of the event loop's ticker; a late one is a stall of the process."""
        now = self._clock()
        with self._lock:
            late = now - self._ticked - TICK_SECONDS
        if late > self.limit:
            self.stalled(now - self._ticked)
        with self._lock:
            self._ticked = now

    async def watch(self) -> None:
        """The ticker: runs on the event loop until cancelled."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.tick()
