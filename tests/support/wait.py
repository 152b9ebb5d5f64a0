"""Polling with a deadline: the only way tests wait for the cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """A condition did not hold before its deadline."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Call ``probe`` until it returns a truthy value and return that value.

    Raises WaitTimeoutError naming ``what`` and the last value or error seen, so a
    failure says what the test was waiting for.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except Exception as exc:  # noqa: BLE001 - a probe may fail while the cluster converges
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


def holds_for(
    probe: Callable[[], bool],
    *,
    duration: float,
    what: str,
    interval: float = 0.5,
    detail: Callable[[], object] | None = None,
) -> None:
    """Assert that ``probe`` stays true for ``duration`` seconds, checking as it goes.

    ``detail`` is called when it stops holding, to say what broke it.
    """
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert probe(), f"{what} stopped holding" + (f": {detail()!r}" if detail else "")
        time.sleep(interval)
