"""Garbage collection of node weight caches on the real control plane.

This module runs an operator of its own whose GC collects fast: a key unused for
RETENTION seconds goes, in rounds every INTERVAL seconds, by `cacheclean` Jobs that the
process kubelet runs on the node's directory (in a namespace of this module's). Fills
download from each test's stub hub, at a revision only that test serves, so every key
here is new to the nodes. What the tests show: a model's old revision stays while it is
the model's last good one and a pod reads it, then goes; a deleted model's keys leave the
node's disk, labels and annotations; a key another live model reads stays; a key whose
fill runs stays, even when no model wants it any more; a model deleted while it fills
leaves nothing behind. Errors (tracebacks) in the operator's log fail a test (conftest).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.caches import (
    HOST_PATH,
    cache_nodes,
    cache_status,
    cached_quickstart,
    fill_jobs,
    key_marks,
    pinned,
    serve_revision,
)
from tests.support.cluster import Cluster
from tests.support.models import MODEL, apply, pods, wait_ready
from tests.support.operator import RunningOperator, install_chart, run_operator
from tests.support.process_kubelet import ProcessKubelet
from tests.support.stub_hub import StubHub
from tests.support.wait import WaitTimeoutError, holds_for, wait_for
from tests.support.weights import hub_secret

RETENTION = 3  # seconds a key stays unused before it goes
INTERVAL = 1  # seconds between GC rounds
# Long enough for a key to have gone had nothing kept it: first seen unused in one
# round, removed in a round after the retention, with a round or two to spare.
KEPT_FOR = RETENTION + 4 * INTERVAL
OPERATED_PREFIX = "rt-"  # the namespaces the operator watches, as conftest's operator does


@pytest.fixture(scope="module")
def gc_namespace(cluster: Cluster) -> Iterator[str]:
    """Where this module's operator runs its GC Jobs."""
    name = f"gc-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster,
    mistral_crd: str,
    gc_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningOperator]:
    """conftest's operator, with a GC that collects within seconds."""
    install_chart(cluster, "--set", "installCRDs=false")
    gc_args = (
        "--cache-gc-retention-seconds", str(RETENTION),
        "--cache-gc-interval-seconds", str(INTERVAL),
        "--cache-gc-namespace", gc_namespace,
    )  # fmt: skip
    with run_operator(
        cluster,
        tmp_path_factory.mktemp("operator"),
        namespaces=(f"{OPERATED_PREFIX}*",),
        extra_args=gc_args,
    ) as running:
        yield running


@pytest.fixture
def other_namespace(cluster: Cluster, operator: RunningOperator, hub: StubHub) -> Iterator[str]:
    """A second namespace the operator watches, its fills reading this test's hub too."""
    name = f"{OPERATED_PREFIX}{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    hub_secret(cluster, name, hub)
    yield name
    cluster.kubectl("delete", "mistralmodels", "--all", "-n", name, "--timeout=60s", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# -- what a node holds of a key ---------------------------------------------------------


def start_slow_fill(cluster: Cluster, ns: str, hub: StubHub) -> tuple[str, str]:
    """Apply a model whose fill takes about 20 s; return (node, key) once it is under way."""
    hub.rate = 40 * 1024
    apply(cluster, ns, cached_quickstart(hub))
    filling = wait_for(
        lambda: [
            n
            for n in cache_nodes(cluster, ns).values()
            if n["state"] == "Filling" and n.get("bytesDone", 0) > 0
        ],
        timeout=60,
        what="a node filling",
    )
    return str(filling[0]["node"]), str(cache_status(cluster, ns)["key"])


@dataclass(frozen=True)
class Nodes:
    """The nodes as the GC leaves them: their cache directories, labels and annotations."""

    cluster: Cluster
    kubelet: ProcessKubelet
    operator: RunningOperator

    def files(self, node: str, key: str) -> list[str]:
        """What of ``key`` is in the node's cache directory: the key itself, its lock,
        fills' temporary directories and replaced copies."""
        root = self.kubelet.host_path(node, HOST_PATH)
        if not root.is_dir():
            return []
        return sorted(
            p.name for p in root.iterdir() if p.name == key or p.name.startswith(f"{key}.")
        )

    def holders(self, key: str) -> list[str]:
        """Nodes whose labels or annotations name ``key``."""
        out = []
        for node in self.cluster.get_json("nodes")["items"]:
            meta = node["metadata"]
            names = [*(meta.get("labels") or {}), *(meta.get("annotations") or {})]
            if any(n.endswith(f"/{key}") for n in names):
                out.append(str(meta["name"]))
        return sorted(out)

    def traces(self, key: str, nodes: list[str]) -> dict[str, Any]:
        """Node -> what is left of ``key`` there (files, label, annotations); empty when
        it has gone from all of them."""
        out: dict[str, Any] = {}
        for node in nodes:
            files, marks = self.files(node, key), key_marks(self.cluster, node, key)
            if files or marks:
                out[node] = {"files": files, **marks}
        return out

    def not_kept(self, key: str, nodes: list[str]) -> dict[str, Any]:
        """Node -> what is off with ``key`` there; empty while every node keeps it: its
        directory there, its label Ready, not even noted unused."""
        out: dict[str, Any] = {}
        for node in nodes:
            files, marks = self.files(node, key), key_marks(self.cluster, node, key)
            if key not in files or marks.get("label") != "Ready" or "gc" in marks:
                out[node] = {"files": files, **marks}
        return out

    def wait_gone(self, key: str, nodes: list[str], timeout: float = 60) -> None:
        """Wait until ``key`` has left ``nodes``: their disks, labels and annotations."""
        try:
            wait_for(
                lambda: not self.traces(key, nodes),
                timeout=timeout,
                what=f"{key} gone from {', '.join(nodes)}",
            )
        except WaitTimeoutError as exc:
            raise AssertionError(
                f"{exc}\nstill there: {self.traces(key, nodes)}\n"
                f"operator log:\n{self.operator.log_tail(40)}"
            ) from None

    def removed_events(self, nodes: list[str]) -> list[str]:
        """The messages of the GC's CacheRemoved events about ``nodes`` (in `default`, as
        node events are)."""
        out = []
        for node in nodes:
            items = self.cluster.get_json(
                "events", "-n", "default",
                "--field-selector", f"involvedObject.name={node},reason=CacheRemoved",
            )["items"]  # fmt: skip
            out += [str(e["message"]) for e in items]
        return out


@pytest.fixture
def nodes(cluster: Cluster, process_kubelet: ProcessKubelet, operator: RunningOperator) -> Nodes:
    return Nodes(cluster, process_kubelet, operator)


def ready_holders(cluster: Cluster, ns: str) -> list[str]:
    return sorted(n for n, entry in cache_nodes(cluster, ns).items() if entry["state"] == "Ready")


def delete_model(cluster: Cluster, ns: str, *flags: str) -> None:
    cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=60s", *flags, timeout=90)


# -- tests ------------------------------------------------------------------------------


def test_an_old_revision_stays_while_the_model_may_go_back_to_it_and_a_deleted_model_s_cache_goes(
    cluster: Cluster, model_namespace: str, hub: StubHub, nodes: Nodes
) -> None:
    ns = model_namespace
    apply(cluster, ns, cached_quickstart(hub))
    wait_ready(cluster, ns)
    old = wait_for(
        lambda: cache_status(cluster, ns).get("lastGoodKey"), timeout=30, what="a last good key"
    )
    assert old == cache_status(cluster, ns)["key"]
    old_nodes = nodes.holders(old)
    (pod,) = pods(cluster, ns)
    assert old_nodes == [pinned(pod)]
    assert not nodes.not_kept(old, old_nodes)

    # A new revision, filled slowly: while it fills, the old key is the model's last good
    # one and its pod reads it. Nothing may take it, however long past the retention.
    hub.rate = 40 * 1024  # the test weights (768 KiB) take about 20 s
    revision = serve_revision(hub)
    patch = {"spec": {"model": {"revision": revision}}}
    cluster.kubectl("patch", "mm", MODEL, "-n", ns, "--type=merge", "-p", json.dumps(patch))
    new = wait_for(
        lambda: (key := cache_status(cluster, ns).get("key")) != old and key,
        timeout=30,
        what="the model's new key",
    )
    wait_for(
        lambda: any(n["state"] == "Filling" for n in cache_nodes(cluster, ns).values()),
        timeout=30,
        what="the new revision filling",
    )
    holds_for(
        lambda: (
            not nodes.not_kept(old, old_nodes)
            and cache_status(cluster, ns).get("lastGoodKey") == old
        ),
        duration=KEPT_FOR,
        what=f"the old key {old} kept while the new one fills",
        detail=lambda: (nodes.not_kept(old, old_nodes), cache_status(cluster, ns)),
    )

    # The rollout ends: the new key is the last good one, no pod reads the old one, and
    # the old one leaves its node after the retention, though the model still exists.
    hub.rate = None

    def rolled_out() -> bool:
        serving = pods(cluster, ns)
        return cache_status(cluster, ns).get("lastGoodKey") == new and all(
            p["metadata"]["labels"].get("mistral-operator.dev/cache-key") == new for p in serving
        )

    wait_for(rolled_out, timeout=120, what="the rollout to the new revision")
    nodes.wait_gone(old, old_nodes)
    assert any(old in m for m in nodes.removed_events(old_nodes))
    new_nodes = ready_holders(cluster, ns)
    assert new_nodes
    assert not nodes.not_kept(new, new_nodes)

    # The model goes: its pods and fill Jobs at once, its key after the retention.
    delete_model(cluster, ns)
    nodes.wait_gone(new, new_nodes)
    assert any(new in m for m in nodes.removed_events(new_nodes))
    assert nodes.holders(new) == []


def test_a_key_another_live_model_reads_stays_when_the_first_model_goes(
    cluster: Cluster, model_namespace: str, other_namespace: str, hub: StubHub, nodes: Nodes
) -> None:
    manifest = cached_quickstart(hub)  # one revision, one key, read by two models
    apply(cluster, model_namespace, manifest)
    apply(cluster, other_namespace, manifest)
    wait_ready(cluster, model_namespace)
    wait_ready(cluster, other_namespace)
    key = cache_status(cluster, model_namespace)["key"]
    assert cache_status(cluster, other_namespace)["key"] == key
    held = nodes.holders(key)
    assert set(ready_holders(cluster, model_namespace)) <= set(held)

    delete_model(cluster, model_namespace)
    # On every node, also one only the deleted model's pod read: a live model references it.
    holds_for(
        lambda: not nodes.not_kept(key, held),
        duration=KEPT_FOR,
        what=f"{key} kept while another model reads it",
        detail=lambda: nodes.not_kept(key, held),
    )

    delete_model(cluster, other_namespace)
    nodes.wait_gone(key, held)


def test_a_running_fill_keeps_its_key_even_once_no_model_wants_it(
    cluster: Cluster, model_namespace: str, hub: StubHub, nodes: Nodes
) -> None:
    ns = model_namespace
    node, key = start_slow_fill(cluster, ns, hub)
    (job,) = [j["metadata"]["name"] for j in fill_jobs(cluster, ns)]

    # The model goes, leaving its fill running (orphaned): nothing keeps the key now but
    # its fill Job (and the lock its filler holds, should a removal start anyway).
    delete_model(cluster, ns, "--cascade=orphan")
    wait_for(
        lambda: cluster.kubectl("get", "mm", MODEL, "-n", ns, check=False).returncode != 0,
        timeout=60,
        what="the model gone",
    )

    def fill_runs_and_key_stays() -> bool:
        files = nodes.files(node, key)
        marks = key_marks(cluster, node, key)
        return (
            any(".tmp-" in f for f in files)
            and marks.get("label") in {"Pending", "Filling"}
            and "gc" not in marks
        )

    holds_for(
        fill_runs_and_key_stays,
        duration=KEPT_FOR,
        what=f"{key} kept while its fill runs",
        detail=lambda: (nodes.files(node, key), key_marks(cluster, node, key)),
    )

    # The fill ends, and its Job (which its model would have deleted) goes: what the fill
    # left, with the label that still says it is filling, is no one's and leaves the node
    # (that label kept it for ever before tests/unit/test_cache_gc.py's fix).
    hub.rate = None

    def job_complete() -> bool:
        obj = cluster.get_json("job", job, "-n", ns)
        return bool(obj.get("status", {}).get("succeeded"))

    wait_for(job_complete, timeout=60, what="the orphaned fill completed")
    assert key in nodes.files(node, key)
    cluster.kubectl("delete", "job", job, "-n", ns, "--cascade=background")
    nodes.wait_gone(key, [node])


def test_a_model_deleted_while_it_fills_leaves_nothing_behind_on_the_node(
    cluster: Cluster, model_namespace: str, hub: StubHub, nodes: Nodes
) -> None:
    ns = model_namespace
    node, key = start_slow_fill(cluster, ns, hub)
    assert any(".tmp-" in f for f in nodes.files(node, key))

    # Its fill Job goes with it and the filler is stopped: the half-written directory,
    # the lock and the label saying it fills are no one's, and go after the retention.
    delete_model(cluster, ns)
    nodes.wait_gone(key, [node])
