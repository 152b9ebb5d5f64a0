"""SharedPVC weight caches on the real control plane: one fill per claim.

Each test gets a claim bound by the real PV controller to a static volume of its own
(tests.support.caches.make_claim). The fill Job runs as a real process (the process
kubelet maps the claim to a directory of its own, on whichever node the scheduler put
the pod) and downloads from a stub hub; the claim's label says how far it is, and no
serving pod exists until it says Ready.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.caches import (
    CACHE_LABEL_PREFIX,
    cache_status,
    cached_quickstart,
    claim_marks,
    fill_jobs,
    make_claim,
)
from tests.support.cluster import Cluster
from tests.support.models import MODEL, apply, condition, model, pods, wait_ready
from tests.support.process_kubelet import ProcessKubelet
from tests.support.stub_hub import StubHub
from tests.support.wait import wait_for
from tests.support.weights import REPO_ID, shard_name

CLAIM = "weights"
SUB_PATH = "mistral"


@pytest.fixture
def claim(cluster: Cluster, model_namespace: str, process_kubelet: ProcessKubelet) -> Iterator[str]:
    """A bound claim in the test's namespace; its volume and files go afterwards."""
    volume = make_claim(cluster, model_namespace, CLAIM)
    yield CLAIM
    cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)
    shutil.rmtree(process_kubelet.claim_dir(model_namespace, CLAIM).parent, ignore_errors=True)


def shared_quickstart(hub: StubHub) -> dict[str, Any]:
    """The quick start reading a revision only this test serves from the claim."""
    return cached_quickstart(hub, mode="SharedPVC", pvc={"claimName": CLAIM, "subPath": SUB_PATH})


def claim_entry(cluster: Cluster, ns: str, name: str = MODEL) -> dict[str, Any]:
    status = cluster.get_json("mm", name, "-n", ns).get("status") or {}
    return dict((status.get("cache") or {}).get("claim") or {})


def is_ready(cluster: Cluster, ns: str, name: str) -> bool:
    ready = condition(cluster.get_json("mm", name, "-n", ns), "Ready")
    return ready is not None and ready["status"] == "True"


def events(cluster: Cluster, ns: str, reason: str) -> list[str]:
    items = cluster.get_json(
        "events", "-n", ns, "--field-selector", f"involvedObject.name={MODEL},reason={reason}"
    )["items"]
    return [str(e["message"]) for e in items]


def test_a_shared_claim_is_filled_once_then_groups_start_and_nobody_fills_it_again(
    cluster: Cluster,
    model_namespace: str,
    hub: StubHub,
    claim: str,
    process_kubelet: ProcessKubelet,
) -> None:
    ns = model_namespace
    hub.rate = 150 * 1024  # about 5 s for the test weights: long enough to watch
    manifest = shared_quickstart(hub)
    apply(cluster, ns, manifest)
    filling = wait_for(
        lambda: (
            (entry := claim_entry(cluster, ns)).get("state") == "Filling"
            and 0 < entry.get("bytesDone", 0) < entry.get("bytesTotal", 0)
            and entry
        ),
        timeout=60,
        what="the claim filling, with its progress",
    )
    key = cache_status(cluster, ns)["key"]
    # While it fills no group exists: the groups wait for the weights, not for GPUs.
    assert pods(cluster, ns) == []
    status = model(cluster, ns)
    progressing, cache_ready = condition(status, "Progressing"), condition(status, "CacheReady")
    assert progressing is not None
    assert cache_ready is not None
    assert progressing["reason"] == "FillingCache"
    assert (cache_ready["status"], cache_ready["reason"]) == ("False", "Filling")
    assert claim_marks(cluster, ns, claim, key).get("label") in {"Pending", "Filling"}
    (job,) = fill_jobs(cluster, ns)
    assert job["metadata"]["name"] == filling["job"]
    assert "nodeSelector" not in job["spec"]["template"]["spec"]

    wait_ready(cluster, ns)
    directory = process_kubelet.claim_dir(ns, claim) / SUB_PATH / key
    manifest_file = json.loads((directory / ".mistral-cache.json").read_text())
    assert manifest_file["totalBytes"] == hub.repos[REPO_ID].total_bytes
    marks = claim_marks(cluster, ns, claim, key)
    assert marks["label"] == "Ready"
    assert json.loads(marks["annotation"])["root"] == f"/{SUB_PATH}"
    entry = claim_entry(cluster, ns)
    assert entry["state"] == "Ready"
    assert entry["bytesDone"] == hub.repos[REPO_ID].total_bytes
    (pod,) = pods(cluster, ns)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "model")
    assert volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env") or []}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert any(
        m.startswith(f"claim {claim}: weights ready") for m in events(cluster, ns, "CacheReady")
    )
    wait_for(lambda: fill_jobs(cluster, ns) == [], timeout=30, what="the fill Job removed")

    # A second model reading the same weights from the claim starts at once, without a fill.
    second = copy.deepcopy(manifest)
    second["metadata"]["name"] = "second"
    apply(cluster, ns, second)
    wait_for(lambda: is_ready(cluster, ns, "second"), timeout=60, what="the second model Ready")
    assert claim_entry(cluster, ns, "second")["state"] == "Ready"
    assert fill_jobs(cluster, ns) == []
    assert hub.bytes_served(REPO_ID) == hub.repos[REPO_ID].total_bytes  # fetched once


def test_a_corrupt_shard_fails_the_claim_naming_the_file(
    cluster: Cluster, model_namespace: str, hub: StubHub, claim: str
) -> None:
    ns = model_namespace
    manifest = shared_quickstart(hub)
    bad = shard_name(1)
    hub.corrupt(REPO_ID, bad, offset=1000)
    apply(cluster, ns, manifest)
    entry = wait_for(
        lambda: (e := claim_entry(cluster, ns)).get("state") == "Failed" and e,
        timeout=60,
        what="the claim's fill failed",
    )
    assert (entry["reason"], entry["file"], entry["exitCode"]) == ("ChecksumMismatch", bad, 6)
    key = cache_status(cluster, ns)["key"]
    labels = cluster.get_json("pvc", claim, "-n", ns)["metadata"]["labels"]
    assert labels[CACHE_LABEL_PREFIX + key] == "Failed"
    cache_ready = condition(model(cluster, ns), "CacheReady")
    assert cache_ready is not None
    assert (cache_ready["status"], cache_ready["reason"]) == ("False", "FillFailed")
    assert bad in cache_ready["message"]
    assert any(
        m.startswith(f"claim {claim}: ChecksumMismatch")
        for m in events(cluster, ns, "CacheFillFailed")
    )
    assert pods(cluster, ns) == []  # no serving pod reads a failed claim


def test_a_wiped_claim_under_its_ready_label_is_filled_again_when_a_pod_crash_loops(
    cluster: Cluster,
    model_namespace: str,
    hub: StubHub,
    claim: str,
    process_kubelet: ProcessKubelet,
) -> None:
    """The claim's directory removed while its label still says Ready: the next pod's
    server cannot load its weights and crash-loops (the platform holds it so, as a
    real SGLang exits); the operator verifies the claim and fills it again, and the pod
    starts, as its next restart would."""
    ns = model_namespace
    apply(cluster, ns, shared_quickstart(hub))
    wait_ready(cluster, ns)
    (pod,) = pods(cluster, ns)
    key = cache_status(cluster, ns)["key"]
    directory = process_kubelet.claim_dir(ns, claim) / SUB_PATH / key
    shutil.rmtree(directory)
    cluster.kubectl("delete", "pod", "-n", ns, pod["metadata"]["name"], "--wait=false")
    # The new pod's server exits at load time; its group is recreated at once, so the
    # crash-looping pod may be gone before anyone sees it: the events stay.
    wait_for(
        lambda: cluster.get_json("events", "-n", ns, "--field-selector", "reason=ModelLoadFailed")[
            "items"
        ],
        timeout=60,
        what="the new pod's server failing to load the wiped claim",
    )
    recheck = wait_for(
        lambda: [m for m in events(cluster, ns, "CacheRecheck") if f"claim {claim}" in m],
        timeout=60,
        what="the operator doubting the claim",
    )
    assert "crash-loops although the cache is Ready" in recheck[0]
    wait_ready(cluster, ns, timeout=90)
    assert (directory / ".mistral-cache.json").is_file()
    wait_for(
        lambda: claim_marks(cluster, ns, claim, key).get("label") == "Ready",
        timeout=30,
        what="the claim Ready again",
    )
    assert hub.bytes_served(REPO_ID) == 2 * hub.repos[REPO_ID].total_bytes
