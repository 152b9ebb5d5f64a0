"""What the operator just wrote and its watch caches may not show yet.

Kopf's indexes and the object body follow the API through watches, a moment
behind our own writes. A reconcile that ran on that older view could create a
group twice, forget a failure it just recorded, or let another model take the
nodes it just claimed. So the pods just created (with the node and GPUs each is
pinned to) and the status just written are remembered until the caches show
them, or for at most HOLD_SECONDS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mistral_operator.core.inventory import GPU_RESOURCE, pinned_node, pod_gpu_request

HOLD_SECONDS = 30.0


@dataclass(frozen=True)
class _Created:
    model_uid: str
    node: str | None
    gpus: int
    expires: float


@dataclass(frozen=True)
class _Status:
    status: dict[str, Any]
    expires: float


class RecentWrites:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], _Created] = {}
        self._status: dict[str, _Status] = {}

    def created(self, model_uid: str, pods: Iterable[Mapping[str, Any]]) -> None:
        """Remember pods a model just applied."""
        expires = time.monotonic() + HOLD_SECONDS
        with self._lock:
            for pod in pods:
                meta = pod["metadata"]
                key = (meta["namespace"], meta["name"])
                self._pods[key] = _Created(
                    model_uid, pinned_node(pod), pod_gpu_request(pod), expires
                )

    def wrote_status(self, model_uid: str, status: Mapping[str, Any]) -> None:
        with self._lock:
            self._status[model_uid] = _Status(dict(status), time.monotonic() + HOLD_SECONDS)

    def _forget(self, seen: Iterable[tuple[str, str]]) -> None:
        now = time.monotonic()
        seen_keys = set(seen)
        for key in [k for k, c in self._pods.items() if k in seen_keys or c.expires < now]:
            del self._pods[key]

    def caught_up(self, model_uid: str, seen: Iterable[tuple[str, str]]) -> bool:
        """Whether the cache shows every pod this model created (or we stopped waiting)."""
        with self._lock:
            self._forget(seen)
            return all(c.model_uid != model_uid for c in self._pods.values())

    def unseen_gpu_pods(self, seen: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Created pods not yet in the cache, as pod-shaped records placement can count."""
        with self._lock:
            self._forget(seen)
            return [
                {
                    "spec": {
                        "nodeName": c.node,
                        "containers": [{"resources": {"limits": {GPU_RESOURCE: str(c.gpus)}}}],
                    },
                    "status": {"phase": "Pending"},
                }
                for c in self._pods.values()
                if c.node
            ]

    def status(self, model_uid: str, cached: Mapping[str, Any]) -> dict[str, Any]:
        """The newer of the cached status and the one we last wrote."""
        with self._lock:
            written = self._status.get(model_uid)
            if written is None or written.expires < time.monotonic():
                self._status.pop(model_uid, None)
                return dict(cached)
            if dict(cached) == written.status:
                del self._status[model_uid]  # the cache has it: trust the cache again
            return written.status
