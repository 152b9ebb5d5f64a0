"""SGLang's queue gauges: parsed from /metrics, and summed over the pods of a group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

QUEUED = "sglang:num_queue_reqs"
RUNNING = "sglang:num_running_reqs"


def queue_gauges(text: str) -> tuple[int, int] | None:
    """Queued and running requests, each summed over every label set SGLang exports.

    None when the text has neither gauge (metrics turned off, or not SGLang): an idle
    server cannot be told from one that does not say.
    """
    sums = {QUEUED: 0.0, RUNNING: 0.0}
    seen = False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name not in sums:
            continue
        try:
            sums[name] += float(line.rsplit(None, 1)[-1])
        except ValueError:
            continue
        seen = True
    return (round(sums[QUEUED]), round(sums[RUNNING])) if seen else None


@dataclass(frozen=True)
class PodSample:
    """One pod's gauges, or why there are none."""

    pod: str
    queued: int = 0
    running: int = 0
    absent: bool = False  # HTTP 404: this rank serves no metrics
    refused: bool = False  # nothing listens at the port
    error: str = ""


@dataclass(frozen=True)
class GroupSample:
    """A group's gauges summed over its pods, as read at ``at``."""

    at: datetime
    queued: int | None
    running: int | None
    # No pod of the group listens at all: no server, so no request in flight.
    refused: bool = False
    error: str = ""

    @classmethod
    def of(cls, pods: Sequence[PodSample], at: datetime) -> GroupSample:
        failed = [p for p in pods if p.error]
        if failed:
            refused = all(p.refused for p in pods if not p.absent)
            return cls(at, None, None, refused=refused, error=failed[0].error)
        readable = [p for p in pods if not p.absent]
        if not readable:
            return cls(at, None, None, error=f"no pod serves metrics ({pods[0].pod}, ...)")
        return cls(at, sum(p.queued for p in readable), sum(p.running for p in readable))

    @property
    def total(self) -> int | None:
        if self.queued is None or self.running is None:
            return None
        return self.queued + self.running

    @property
    def in_flight(self) -> int | None:
        """What a drain waits for: a group where nothing listens has nothing in flight."""
        return 0 if self.refused else self.total
