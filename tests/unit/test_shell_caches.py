"""The shell's memory of its own recent writes, for reconciles on lagging watch caches."""

from __future__ import annotations

from typing import Any

from mistral_operator.shell.recent_writes import RecentWrites


def pinned_pod(name: str, node: str, gpus: int = 8) -> dict[str, Any]:
    term = {
        "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]
    }
    return {
        "metadata": {"namespace": "ns", "name": name},
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
                }
            },
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
    }


def test_ledger_counts_promised_gpus_until_the_cache_shows_the_pod() -> None:
    ledger = RecentWrites()
    ledger.created("uid", [pinned_pod("a", "n1"), pinned_pod("b", "n2", gpus=4)])
    unseen = ledger.unseen_gpu_pods([])
    assert sorted(
        (p["spec"]["nodeName"], p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        for p in unseen
    ) == [
        ("n1", "8"),
        ("n2", "4"),
    ]
    assert [p["spec"]["nodeName"] for p in ledger.unseen_gpu_pods([("ns", "a")])] == ["n2"]
    assert ledger.unseen_gpu_pods([("ns", "b")]) == []


def test_expectations_wait_for_created_pods_and_prefer_the_written_status() -> None:
    expected = RecentWrites()
    assert expected.caught_up("uid", [])
    expected.created("uid", [pinned_pod("p0", "n1"), pinned_pod("p1", "n2")])
    expected.wrote_status("uid", {"phase": "Starting"})
    assert not expected.caught_up("uid", [("ns", "p0")])
    assert expected.caught_up("other-model", [])
    assert expected.caught_up("uid", [("ns", "p0"), ("ns", "p1")])
    assert expected.status("uid", {"phase": "Pending"}) == {"phase": "Starting"}
    # Once the cache shows what we wrote, the cache is trusted again.
    assert expected.status("uid", {"phase": "Starting"}) == {"phase": "Starting"}
    assert expected.status("uid", {"phase": "Ready"}) == {"phase": "Ready"}
