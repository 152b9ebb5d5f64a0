"""The built-in autoscaler on the real control plane, reading simulators at the leaders.

One scenario, with an operator of its own (it is restarted mid-window): a queue step,
a restart, a leader whose metrics go away, and a scale-down under light load.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.cluster import Cluster
from tests.support.models import MODEL, apply, condition, model, pods, quickstart, wait_ready
from tests.support.operator import install_chart, run_operator
from tests.support.rollout import routed_leader_ips, simulators, stream_chat
from tests.support.sglang_sim import send_load
from tests.support.stub_hub import StubHub
from tests.support.wait import holds_for, wait_for
from tests.support.weights import hub_secret

PREFIX = "as-"
INTERVAL = 2
WINDOW = 20


@pytest.fixture
def scaling_namespace(cluster: Cluster, mistral_crd: str, weights_hub: StubHub) -> Iterator[str]:
    install_chart(cluster, "--set", "installCRDs=false")
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    hub_secret(cluster, name, weights_hub)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def autoscaled() -> dict[str, Any]:
    manifest = copy.deepcopy(quickstart(1))
    manifest["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetQueuePerReplica": 3,
        "intervalSeconds": INTERVAL,
        "scaleDown": {"stabilizationWindowSeconds": WINDOW, "maxGroupsPerStep": 1},
    }
    manifest["spec"]["rollout"] = {"drainTimeoutSeconds": 60}
    return manifest


def scaling(cluster: Cluster, ns: str) -> dict[str, Any]:
    return dict((model(cluster, ns).get("status") or {}).get("autoscaling") or {})


def scale_events(cluster: Cluster, ns: str) -> list[str]:
    items = cluster.get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={MODEL}")
    return sorted(
        f"{e['reason']}: {e['message']}"
        for e in items["items"]
        if e["reason"] in {"ScaledUp", "ScaledDown"}
    )


def test_queue_depth_scales_up_in_one_step_and_back_down_calmly(
    cluster: Cluster, scaling_namespace: str, tmp_path: Path
) -> None:
    ns = scaling_namespace
    down: set[str] = set()
    ops = iter(range(10))

    def operator() -> Any:
        workdir = tmp_path / f"op{next(ops)}"
        workdir.mkdir()
        return run_operator(cluster, workdir, namespaces=(f"{PREFIX}*",))

    with simulators(cluster, ns, down=down, service_time=1.0, max_running=1) as fleet:
        with operator() as first:
            apply(cluster, ns, autoscaled())
            wait_ready(cluster, ns)
            wait_for(lambda: len(fleet) == 1, timeout=30, what="a simulator at the leader")
            wait_for(lambda: scaling(cluster, ns).get("queue") == 0, timeout=30, what="a read")

            # A queue step to 4x the target: 12 requests at the one leader (1 runs at once).
            (leader,) = routed_leader_ips(cluster, ns)
            started = time.monotonic()
            burst = threading.Thread(
                target=send_load, args=(f"http://{leader}:30000", 12, 12, 60), daemon=True
            )
            burst.start()
            wait_for(lambda: scaling(cluster, ns).get("desiredReplicas") == 4, timeout=30,
                     what="4 groups decided", interval=0.1)  # fmt: skip
            decided = time.monotonic() - started
            print(f"queue step to 4x target: 4 groups decided {decided:.1f}s after the load "
                  f"began (scrape interval {INTERVAL}s)")  # fmt: skip
            (up,) = scale_events(cluster, ns)
            assert up.startswith("ScaledUp: 1 -> 4 groups"), "all needed groups in one step"
            wait_for(lambda: model(cluster, ns)["status"].get("readyReplicas") == 4,
                     timeout=60, what="4 groups ready")  # fmt: skip
            burst.join(timeout=60)
            wait_for(lambda: scaling(cluster, ns).get("queue") == 0, timeout=60,
                     what="the queue drained")  # fmt: skip
            lull = time.monotonic()  # the scale-down window runs from here
            first.assert_clean()

        # Restarted mid-window: the decision and its window are read back; nothing moves.
        with operator() as second:
            events = scale_events(cluster, ns)
            holds_for(
                lambda: scale_events(cluster, ns) == events,
                duration=2 * INTERVAL,
                what="no scale event right after a restart",
            )
            # A leader's metrics go away: no scale-down past the window, and the
            # condition names the group.
            leaders = {p["status"]["podIP"]: p for p in pods(cluster, ns)}
            silent_ip = sorted(leaders)[-1]
            silent = leaders[silent_ip]["metadata"]["labels"]["mistral-operator.dev/group"]
            down.add(silent_ip)
            unavailable = wait_for(
                lambda: (
                    (c := condition(model(cluster, ns), "ScalingActive"))
                    and c["status"] == "False"
                    and c
                ),
                timeout=30,
                what="ScalingActive False",
            )
            assert silent in unavailable["message"]
            holds_for(
                lambda: scaling(cluster, ns).get("desiredReplicas") == 4,
                duration=max(0, lull + WINDOW + 2 * INTERVAL - time.monotonic()),
                what="no scale-down past the window while a group's metrics are missing",
            )
            down.discard(silent_ip)
            wait_for(
                lambda: (
                    (c := condition(model(cluster, ns), "ScalingActive")) and c["status"] == "True"
                ),
                timeout=30,
                what="metrics back",
            )
            # Light load while it scales down: every request is answered.
            results: list[str] = []
            stop = threading.Event()

            def trickle() -> None:
                while not stop.is_set():
                    ips = [ip for ip in routed_leader_ips(cluster, ns) if ip in fleet]
                    if ips:
                        results.append(stream_chat(ips[len(results) % len(ips)]))
                    stop.wait(0.3)

            load = threading.Thread(target=trickle, daemon=True)
            load.start()
            wait_for(lambda: len(pods(cluster, ns)) == 1, timeout=90, what="back to 1 group")
            stop.set()
            load.join(timeout=30)
            assert results
            assert set(results) == {"ok"}, results
            downs = [e for e in scale_events(cluster, ns) if e.startswith("ScaledDown")]
            assert len(downs) == 3, downs  # one group a step
            cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=60s")
            second.assert_clean()
