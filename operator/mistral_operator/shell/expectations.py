"""What the operator just wrote and its watch caches may not show yet.

Kopf's indexes and the object body follow the API through watches, a moment
behind our own writes. A reconcile that ran on that older view could create a
group twice or forget a failure it just recorded, so each model remembers the
pods it created and the status it wrote until the caches catch up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HOLD_SECONDS = 30.0


@dataclass
class _Pending:
    pods: set[str] = field(default_factory=set)
    status: dict[str, Any] | None = None
    expires: float = 0.0


class Expectations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, _Pending] = {}

    def wrote(self, uid: str, pods: Iterable[str], status: Mapping[str, Any] | None) -> None:
        """Remember the pods just created and the status just written for a model."""
        with self._lock:
            pending = self._by_model.setdefault(uid, _Pending())
            pending.pods.update(pods)
            if status is not None:
                pending.status = dict(status)
            pending.expires = time.monotonic() + HOLD_SECONDS

    def caught_up(self, uid: str, seen_pods: Iterable[str]) -> bool:
        """Whether the cache shows every pod we created (or we stopped waiting)."""
        with self._lock:
            pending = self._by_model.get(uid)
            if pending is None:
                return True
            if pending.expires < time.monotonic():
                del self._by_model[uid]
                return True
            pending.pods -= set(seen_pods)
            return not pending.pods

    def status(self, uid: str, cached: Mapping[str, Any]) -> dict[str, Any]:
        """The newer of the cached status and the one we last wrote."""
        with self._lock:
            pending = self._by_model.get(uid)
            if pending is None or pending.status is None or pending.expires < time.monotonic():
                return dict(cached)
            if dict(cached) == pending.status:
                pending.status = None  # the cache has it: trust the cache again
                return dict(cached)
            return dict(pending.status)
