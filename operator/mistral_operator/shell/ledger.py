"""GPUs promised to pods the operator just created, until its watch cache shows those pods.

Placement reads GPU use from a watch cache that lags the API by a moment; without
this ledger two models reconciled back to back could both pick the same free node.
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
class _Promise:
    node: str
    gpus: int
    expires: float


class GpuLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._promises: dict[tuple[str, str], _Promise] = {}

    def promise(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """Record the GPUs of pods that were just applied, each pinned to one node."""
        deadline = time.monotonic() + HOLD_SECONDS
        with self._lock:
            for pod in pods:
                node = pinned_node(pod)
                if node:
                    meta = pod["metadata"]
                    key = (meta["namespace"], meta["name"])
                    self._promises[key] = _Promise(node, pod_gpu_request(pod), deadline)

    def unseen(self, seen: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Promised pods not yet in the cache, as pod-shaped records placement can count."""
        now = time.monotonic()
        seen_keys = set(seen)
        with self._lock:
            for key in [k for k, p in self._promises.items() if k in seen_keys or p.expires < now]:
                del self._promises[key]
            return [
                {
                    "spec": {
                        "nodeName": p.node,
                        "containers": [{"resources": {"limits": {GPU_RESOURCE: str(p.gpus)}}}],
                    },
                    "status": {"phase": "Pending"},
                }
                for p in self._promises.values()
            ]
