"""The node-local weight cache on the real control plane.

Fill Jobs run as real processes (the process kubelet) and download from a stub hub into
each node's directory; serving pods mount that directory, and the process kubelet holds
one in ContainerCreating while it is missing, as a kubelet would. Each test serves its
own revision, so its cache key is new to every node.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.support.caches import (
    HOST_PATH,
    cache_nodes,
    cache_status,
    cached_quickstart,
    fill_jobs,
    node_label,
    pinned,
)
from tests.support.cluster import Cluster
from tests.support.models import MODEL, apply, condition, model, pods, wait_ready
from tests.support.nodes import kill_kubelet, waiting_reason
from tests.support.process_kubelet import ProcessKubelet
from tests.support.stub_hub import StubHub
from tests.support.wait import holds_for, wait_for
from tests.support.weights import (
    REPO_ID,
    shard_name,
    weight_files,
)


def failed_node(cluster: Cluster, ns: str, what: str) -> dict[str, Any]:
    """The first node whose fill status.cache reports Failed, once one does."""
    failed = wait_for(
        lambda: [n for n in cache_nodes(cluster, ns).values() if n["state"] == "Failed"],
        timeout=60,
        what=what,
    )
    return dict(failed[0])


def serving_from_copy(
    cluster: Cluster, ns: str, hub: StubHub, process_kubelet: ProcessKubelet
) -> tuple[dict[str, Any], str, str, Path]:
    """The quick start Ready from its node's copy: its pod, node, cache key and the
    copy's directory on that node."""
    apply(cluster, ns, cached_quickstart(hub))
    wait_ready(cluster, ns)
    (pod,) = pods(cluster, ns)
    node = pinned(pod)
    key = cache_status(cluster, ns)["key"]
    return pod, node, key, process_kubelet.host_path(node, f"{HOST_PATH}/{key}")


def load_failures(cluster: Cluster, ns: str) -> list[str]:
    """What the platform said of pods whose server could not load their weights."""
    items = cluster.get_json("events", "-n", ns, "--field-selector", "reason=ModelLoadFailed")[
        "items"
    ]
    return [str(e["message"]) for e in items]


def events(cluster: Cluster, ns: str, reason: str) -> list[str]:
    items = cluster.get_json(
        "events", "-n", ns, "--field-selector", f"involvedObject.name={MODEL},reason={reason}"
    )["items"]
    return [str(e["message"]) for e in items]


def test_the_quick_start_waits_for_its_fill_then_serves_from_the_nodes_copy(
    cluster: Cluster, model_namespace: str, hub: StubHub, process_kubelet: ProcessKubelet
) -> None:
    ns = model_namespace
    hub.rate = 150 * 1024  # about 5 s for the test weights: long enough to watch
    apply(cluster, ns, cached_quickstart(hub))
    # Progress comes from the fill's log while it runs (the operator reads pods/log).
    filling = wait_for(
        lambda: [
            n
            for n in cache_nodes(cluster, ns).values()
            if n["state"] == "Filling" and 0 < n.get("bytesDone", 0) < n.get("bytesTotal", 0)
        ],
        timeout=60,
        what="a node filling, with its progress",
    )
    node = filling[0]["node"]
    key = cache_status(cluster, ns)["key"]
    # While the fill runs, no serving pod exists anywhere.
    assert pods(cluster, ns) == []
    ready_cond = condition(model(cluster, ns), "CacheReady")
    assert ready_cond is not None
    assert (ready_cond["status"], ready_cond["reason"]) == ("False", "Filling")
    assert node_label(cluster, node, key) in {"Pending", "Filling"}

    wait_ready(cluster, ns)
    (pod,) = pods(cluster, ns)
    assert pinned(pod) == node
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env") or []}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert node_label(cluster, node, key) == "Ready"
    manifest = process_kubelet.host_path(node, f"{HOST_PATH}/{key}") / ".mistral-cache.json"
    assert json.loads(manifest.read_text())["totalBytes"] == sum(
        len(d) for d in weight_files().values()
    )
    entry = cache_nodes(cluster, ns)[node]
    assert entry["state"] == "Ready"
    assert entry["bytesDone"] == entry["bytesTotal"] == hub.repos[REPO_ID].total_bytes
    assert entry["bytesPerSecond"] > 0
    assert hub.bytes_served(REPO_ID) == hub.repos[REPO_ID].total_bytes
    assert events(cluster, ns, "CacheFilling")
    assert any(node in m for m in events(cluster, ns, "CacheReady"))
    # The label remembers the fill: its Job goes.
    wait_for(lambda: fill_jobs(cluster, ns) == [], timeout=30, what="the fill Job removed")


def test_a_corrupt_shard_fails_its_node_naming_the_file_and_the_retry_runs_by_itself(
    cluster: Cluster, model_namespace: str, hub: StubHub
) -> None:
    ns = model_namespace
    manifest = cached_quickstart(hub)
    bad = shard_name(1)
    hub.corrupt(REPO_ID, bad, offset=1000)
    apply(cluster, ns, manifest)
    entry = failed_node(cluster, ns, "the node's fill failed")
    assert (entry["reason"], entry["file"], entry["exitCode"]) == ("ChecksumMismatch", bad, 6)
    key = cache_status(cluster, ns)["key"]
    assert node_label(cluster, entry["node"], key) == "Failed"
    cache_ready = condition(model(cluster, ns), "CacheReady")
    assert cache_ready is not None
    assert (cache_ready["status"], cache_ready["reason"]) == ("False", "FillFailed")
    assert bad in cache_ready["message"]
    assert any(bad in m for m in events(cluster, ns, "CacheFillFailed"))
    assert pods(cluster, ns) == []  # no serving pod lands on a failed cache

    hub.heal(REPO_ID, bad)
    # Nobody deletes anything: the Job's own retry (10 s after the failure) fills the node.
    wait_ready(cluster, ns, timeout=90)
    assert node_label(cluster, entry["node"], key) == "Ready"


def test_a_spare_node_takes_a_failed_nodes_group_without_a_download(
    cluster: Cluster, model_namespace: str, hub: StubHub, broken_nodes: list[str]
) -> None:
    ns = model_namespace
    apply(cluster, ns, cached_quickstart(hub, prewarmSpareNodes=1))
    wait_ready(cluster, ns)
    wait_for(
        lambda: cache_status(cluster, ns).get("readyNodes") == 2,
        timeout=60,
        what="the spare node filled",
    )
    (pod,) = pods(cluster, ns)
    used = pinned(pod)
    (spare,) = [n for n in cache_nodes(cluster, ns) if n != used]
    fetched = hub.bytes_served(REPO_ID)
    assert fetched == 2 * hub.repos[REPO_ID].total_bytes

    kill_kubelet(cluster, used)
    broken_nodes.append(used)

    def replaced() -> bool:
        return any(
            pinned(p) == spare and p["status"].get("phase") == "Running" for p in pods(cluster, ns)
        )

    wait_for(replaced, timeout=120, what="the group recreated on the spare node")
    wait_ready(cluster, ns)
    # The replacement read what the spare already held: its node was never filled again.
    assert sum(1 for m in events(cluster, ns, "CacheFilling") if f"node {spare}:" in m) == 1


def test_a_disk_too_small_fails_the_fill_with_the_reason_and_touches_nothing_else(
    cluster: Cluster, model_namespace: str, hub: StubHub, process_kubelet: ProcessKubelet
) -> None:
    ns = model_namespace
    manifest = cached_quickstart(hub)
    hub.declare_size(REPO_ID, shard_name(0), 2**50)  # a petabyte shard
    others: dict[Path, bytes] = {}
    for node in ("h200-0", "h200-1", "h200-2", "h200-3"):
        other = process_kubelet.host_path(node, f"{HOST_PATH}/someone-elses-key") / "w.bin"
        other.parent.mkdir(parents=True, exist_ok=True)
        other.write_bytes(b"keep me")
        others[other] = other.read_bytes()
    apply(cluster, ns, manifest)
    entry = failed_node(cluster, ns, "the fill refused for lack of space")
    assert (entry["reason"], entry["exitCode"]) == ("DiskFull", 5)
    assert "disk full" in entry["message"]
    key = cache_status(cluster, ns)["key"]
    assert not process_kubelet.host_path(entry["node"], f"{HOST_PATH}/{key}").exists()
    assert all(path.read_bytes() == data for path, data in others.items())
    holds_for(lambda: pods(cluster, ns) == [], duration=3, what="no serving pod")


def test_a_refused_token_fails_the_fill_with_the_reason(
    cluster: Cluster, model_namespace: str, hub: StubHub
) -> None:
    ns = model_namespace
    hub.token = "the-right-token"  # the Secret carries none
    apply(cluster, ns, cached_quickstart(hub))
    entry = failed_node(cluster, ns, "the fill refused by the hub")
    assert (entry["reason"], entry["exitCode"]) == ("AuthRefused", 3)
    degraded = condition(model(cluster, ns), "Degraded")
    assert degraded is not None
    assert (degraded["status"], degraded["reason"]) == ("True", "CacheFillFailed")
    assert pods(cluster, ns) == []


def test_a_wiped_cache_under_a_ready_label_is_filled_again_when_a_pod_waits_on_it(
    cluster: Cluster, model_namespace: str, hub: StubHub, process_kubelet: ProcessKubelet
) -> None:
    """A disk wiped under a Node that stayed: its label still says Ready, so the next pod
    lands there and waits in ContainerCreating; the operator fills the node again."""
    ns = model_namespace
    pod, node, key, directory = serving_from_copy(cluster, ns, hub, process_kubelet)
    shutil.rmtree(directory)
    cluster.kubectl("delete", "pod", "-n", ns, pod["metadata"]["name"], "--wait=false")

    def recreated_and_held() -> bool:
        return any(
            p["metadata"]["uid"] != pod["metadata"]["uid"]
            and waiting_reason(p) == "ContainerCreating"
            for p in pods(cluster, ns)
        )

    wait_for(recreated_and_held, timeout=60, what="the group back on the wiped node, held")
    wait_for(
        lambda: any(node in m for m in events(cluster, ns, "CacheRecheck")),
        timeout=60,
        what="the operator doubting the node's cache",
    )
    wait_ready(cluster, ns, timeout=90)
    assert (directory / ".mistral-cache.json").is_file()
    # The pod may start as soon as the directory is back, a moment before the operator
    # reads the finished fill.
    wait_for(lambda: node_label(cluster, node, key) == "Ready", timeout=30, what="Ready again")
    assert hub.bytes_served(REPO_ID) == 2 * hub.repos[REPO_ID].total_bytes


def test_a_shard_removed_from_a_ready_copy_is_fetched_again_alone(
    cluster: Cluster, model_namespace: str, hub: StubHub, process_kubelet: ProcessKubelet
) -> None:
    """One file gone from a node's Ready copy (the directory stays, so the pod mounts it):
    the server exits at load time and the pod crash-loops; the operator's recheck hashes
    every file and fetches only the missing one."""
    ns = model_namespace
    pod, node, key, directory = serving_from_copy(cluster, ns, hub, process_kubelet)
    shard = shard_name(1)
    (directory / shard).unlink()
    cluster.kubectl("delete", "pod", "-n", ns, pod["metadata"]["name"], "--wait=false")
    # The new pod's server exits at load time (its group is recreated at once, so the
    # crash-looping pod may be gone before anyone sees it; the events stay).
    recheck = wait_for(
        lambda: [m for m in events(cluster, ns, "CacheRecheck") if node in m],
        timeout=60,
        what="the operator doubting the node's cache",
    )
    assert "crash-loops although the cache is Ready" in recheck[0]
    assert load_failures(cluster, ns) != []
    wait_ready(cluster, ns, timeout=90)
    assert (directory / shard).is_file()
    repo = hub.repos[REPO_ID]
    assert hub.bytes_served(REPO_ID) == repo.total_bytes + len(repo.files[shard].data)
    wait_for(lambda: node_label(cluster, node, key) == "Ready", timeout=30, what="Ready again")
    repaired = wait_for(
        lambda: [m for m in events(cluster, ns, "CacheRepaired") if node in m],
        timeout=30,
        what="an event naming the file fetched again",
    )
    assert shard in repaired[0]
