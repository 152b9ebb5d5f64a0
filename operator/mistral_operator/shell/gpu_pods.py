"""Every unfinished GPU-holding pod of the cluster, watched in all namespaces.

Placement must count the GPUs of every workload, also in namespaces the operator does
not watch for models (Kopf's indexes see only those), so this list-and-watch covers all
namespaces whatever `--namespace` says. It keeps only what placement reads.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from mistral_operator.core.inventory import gpu_node_of, pod_gpu_request

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
RETRY_SECONDS = 2.0
Key = tuple[str, str]


def placement_record(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """What placement reads of a pod that holds GPUs; None for any other pod."""
    node = gpu_node_of(pod)
    if node is None:
        return None
    meta = pod.get("metadata") or {}
    gpus = pod_gpu_request(pod)
    return {
        "metadata": {"namespace": meta.get("namespace"), "name": meta.get("name")},
        "spec": {
            "nodeName": node,
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


class GpuPods:
    """The GPU-holding pods, kept current by a background watch; safe to read from any thread.

    ``on_change`` is called (from the watch thread) when a pod starts or stops holding
    GPUs on a node, so that models waiting for room can look again.
    """

    def __init__(self, api: client.CoreV1Api, on_change: Callable[[], None]) -> None:
        self._api = api
        self._on_change = on_change
        self._lock = threading.Lock()
        self._pods: dict[Key, dict[str, Any]] = {}
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-pods", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        """Start watching and wait for the first full list."""
        self._thread.start()
        if not self._synced.wait(timeout):
            raise RuntimeError("could not list the cluster's pods to count GPUs in use")

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._pods.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._relist()
                self._watch(version)
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: the version is too old, list again
                    log.warning("watching GPU pods failed, listing again: %s", exc.reason)
                    self._stop.wait(RETRY_SECONDS)
            except Exception as exc:  # noqa: BLE001 - the watch must outlive network errors
                log.warning("watching GPU pods failed, listing again: %s", exc)
                self._stop.wait(RETRY_SECONDS)

    def _relist(self) -> str:
        listed = self._api.list_pod_for_all_namespaces(_preload_content=False)
        data = _json(listed)
        pods: dict[Key, dict[str, Any]] = {}
        for pod in data.get("items") or []:
            record = placement_record(pod)
            if record is not None:
                pods[_key(pod)] = record
        with self._lock:
            changed = _nodes_of(pods) != _nodes_of(self._pods)
            self._pods = pods
        self._synced.set()
        if changed:
            self._on_change()
        return str(data["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        stream = watch.Watch().stream(
            self._api.list_pod_for_all_namespaces,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=True,
        )
        for event in stream:
            if self._stop.is_set():
                return
            if event["type"] == "BOOKMARK":
                continue
            if event["type"] == "ERROR":
                raise ApiException(status=(event.get("raw_object") or {}).get("code", 500))
            pod = event["raw_object"]
            record = None if event["type"] == "DELETED" else placement_record(pod)
            if self._store(_key(pod), record):
                self._on_change()

    def _store(self, key: Key, record: dict[str, Any] | None) -> bool:
        """Keep or drop one pod's record; True when its node or GPU count changed."""
        with self._lock:
            before = self._pods.get(key)
            if record is None:
                self._pods.pop(key, None)
            else:
                self._pods[key] = record
        return _holding(before) != _holding(record)


def _key(pod: Mapping[str, Any]) -> Key:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def _holding(record: Mapping[str, Any] | None) -> tuple[str, str] | None:
    if record is None:
        return None
    spec = record["spec"]
    return spec["nodeName"], spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def _nodes_of(pods: Mapping[Key, Mapping[str, Any]]) -> dict[Key, tuple[str, str] | None]:
    return {key: _holding(record) for key, record in pods.items()}


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data
