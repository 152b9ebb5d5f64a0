"""Watching a rollout from outside: serving groups on every pod event, simulators at the
leaders, and long streaming requests sent through the leaders that serve."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config, watch

from mistral_operator.api import names as api_names
from mistral_operator.core import labels as L  # noqa: N812
from tests.support.cluster import Cluster
from tests.support.models import MODEL, pods
from tests.support.sglang_sim import SimulatorFleet


def is_routed(pod: dict[str, Any]) -> bool:
    """A leader the client Service sends requests to: labelled serving, Ready, not leaving."""
    meta, status = pod["metadata"], pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return (
        (meta.get("labels") or {}).get(L.SERVING) == "true"
        and ready
        and not meta.get("deletionTimestamp")
        and status.get("phase") == "Running"
    )


LISTED = "LISTED"  # a pod of the list the watch starts from
SYNCED = "SYNCED"  # the list is done; watch events follow (no pod)


def model_pod_events(
    cluster: Cluster, namespace: str, model: str, stop: threading.Event
) -> Iterator[tuple[str, dict[str, Any]]]:
    """One model's pods from a real list, then a watch from its resourceVersion, until
    ``stop`` is set: (LISTED, pod) for each pod listed, (SYNCED, {}) once, then (event
    type, pod) for each watch event."""
    api_client = config.new_client_from_config(str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    selector = f"{L.MODEL}={model}"
    listing = core.list_namespaced_pod(namespace, label_selector=selector)
    for item in listing.items:
        yield LISTED, api_client.sanitize_for_serialization(item)
    yield SYNCED, {}
    version = listing.metadata.resource_version
    stream = watch.Watch()
    while not stop.is_set():
        for event in stream.stream(
            core.list_namespaced_pod, namespace, label_selector=selector,
            resource_version=version, timeout_seconds=2,
        ):  # fmt: skip
            pod = api_client.sanitize_for_serialization(event["object"])
            version = pod["metadata"]["resourceVersion"]
            yield event["type"], pod
            if stop.is_set():
                break


@dataclass
class ServingWatcher:
    """Counts routed leaders after every pod event of one model's namespace (a real watch)."""

    cluster: Cluster
    namespace: str
    counts: list[int] = field(default_factory=list)
    # Groups with pods not being deleted, after each event (a group on its way out no
    # longer counts toward maxSurge, as pods do not for a Deployment; its GPUs do count
    # for placement until its pods are gone).
    group_counts: list[int] = field(default_factory=list)
    # Every revision seen under each group name.
    group_revisions: dict[str, set[str]] = field(default_factory=dict)
    # Pod deletions seen (a DELETED event: the pod is gone).
    deletions: int = 0
    _pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    _mixed: dict[str, set[str]] = field(default_factory=dict)
    _duplicates: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        # The counts start from the whole picture (the list), not from the first pod the
        # watch happens to replay.
        for kind, pod in model_pod_events(self.cluster, self.namespace, MODEL, self._stop):
            if kind == SYNCED:
                self._count()
            elif kind == "DELETED":
                self._pods.pop(pod["metadata"]["name"], None)
                self.deletions += 1
                self._count()
            else:
                self._seen(pod)
                if kind != LISTED:
                    self._count()

    def _seen(self, pod: dict[str, Any]) -> None:
        self._pods[pod["metadata"]["name"]] = pod
        labels = pod["metadata"].get("labels") or {}
        self.group_revisions.setdefault(labels[L.GROUP], set()).add(labels[L.REVISION])

    def _count(self) -> None:
        self.counts.append(sum(1 for p in self._pods.values() if is_routed(p)))
        self.group_counts.append(
            len(
                {
                    p["metadata"]["labels"][L.GROUP]
                    for p in self._pods.values()
                    if not p["metadata"].get("deletionTimestamp")
                }
            )
        )
        self._note_mixed()
        self._note_duplicates()

    def _note_duplicates(self) -> None:
        by_rank: dict[tuple[str, str], set[str]] = {}
        for name, pod in self._pods.items():
            if pod["metadata"].get("deletionTimestamp"):
                continue  # a pod on its way out may overlap its replacement
            labels = pod["metadata"].get("labels") or {}
            by_rank.setdefault((labels[L.GROUP], labels.get(L.RANK, "")), set()).add(name)
        for rank, names in by_rank.items():
            if len(names) > 1:
                self._duplicates[rank] = self._duplicates.get(rank, set()) | names

    def _note_mixed(self) -> None:
        by_group: dict[str, set[str]] = {}
        for pod in self._pods.values():
            labels = pod["metadata"].get("labels") or {}
            by_group.setdefault(labels[L.GROUP], set()).add(labels[L.REVISION])
        for group, revisions in by_group.items():
            if len(revisions) > 1:
                self._mixed[group] = revisions

    @contextmanager
    def running(self) -> Iterator[ServingWatcher]:
        with in_thread("serving-watcher", self.run, self._stop):
            yield self

    def mixed_groups(self) -> dict[str, set[str]]:
        """Groups whose pods ran two revisions at the same time."""
        return dict(self._mixed)

    def duplicate_ranks(self) -> dict[tuple[str, str], set[str]]:
        """(group, rank)s that had two live pods (not being deleted) at the same time."""
        return dict(self._duplicates)


@contextmanager
def simulators(
    cluster: Cluster, namespace: str, down: set[str] | None = None, **options: Any
) -> Iterator[SimulatorFleet]:
    """A simulator at every running leader, kept in step with the cluster as it changes;
    none at the pod IPs in ``down`` (a test adds one to take that server away)."""
    stop = threading.Event()
    unserved = down if down is not None else set()
    with SimulatorFleet(**options) as fleet:

        def sync() -> None:
            while not stop.is_set():
                found = pods(cluster, namespace)
                fleet.sync(p for p in found if p["status"].get("podIP") not in unserved)
                stop.wait(0.2)

        thread = threading.Thread(target=sync, name="fleet-sync", daemon=True)
        fleet.sync(pods(cluster, namespace))
        thread.start()
        try:
            yield fleet
        finally:
            stop.set()
            thread.join(timeout=10)


def routed_leader_ips(cluster: Cluster, namespace: str) -> list[str]:
    return sorted(p["status"]["podIP"] for p in pods(cluster, namespace) if is_routed(p))


def stream_chat(ip: str, port: int = L.SGLANG_PORT, timeout: float = 120) -> str:
    """One streaming chat request to a leader, read to its end: 'ok' or what went wrong."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell me about the tides."}],
            "max_tokens": 64,
            "stream": True,
        }
    )
    try:
        conn = http.client.HTTPConnection(ip, port, timeout=timeout)
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return f"{ip}: {type(exc).__name__}: {exc}"
    if response.status != 200 or not text.rstrip().endswith("data: [DONE]"):
        return f"{ip}: HTTP {response.status}, stream ended: {text[-80:]!r}"
    return "ok"


@dataclass
class GenerationWatcher:
    """Every ``status.observedGeneration`` of one model, in the order the API server stored
    them, from a real watch: a status written from a stale view shows as a step back."""

    cluster: Cluster
    namespace: str
    seen: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        api_client = config.new_client_from_config(str(self.cluster.kubeconfig))
        custom = client.CustomObjectsApi(api_client)
        where = (api_names.GROUP, api_names.VERSION, self.namespace, api_names.PLURAL)
        listing = custom.list_namespaced_custom_object(*where)
        version = listing["metadata"]["resourceVersion"]
        for item in listing["items"]:
            self._note(item)
        stream = watch.Watch()
        while not self._stop.is_set():
            for event in stream.stream(
                custom.list_namespaced_custom_object, *where,
                resource_version=version, timeout_seconds=2,
            ):  # fmt: skip
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                if event["type"] != "DELETED":
                    self._note(obj)
                if self._stop.is_set():
                    break

    def _note(self, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] != MODEL:
            return
        generation = (obj.get("status") or {}).get("observedGeneration")
        if isinstance(generation, int) and (not self.seen or self.seen[-1] != generation):
            self.seen.append(generation)

    def steps_back(self) -> list[tuple[int, int]]:
        """(from, to) for each status that reported an older generation than the one before."""
        return [(a, b) for a, b in itertools.pairwise(self.seen) if b < a]

    @contextmanager
    def running(self) -> Iterator[GenerationWatcher]:
        with in_thread("generation-watcher", self.run, self._stop):
            yield self


@contextmanager
def in_thread(name: str, run: Callable[[], None], stop: threading.Event) -> Iterator[None]:
    """``run`` in a thread of its own for the block; then ``stop`` is set and it is joined."""
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
