"""The built-in autoscaler on the real control plane, reading simulators at the leaders.

One scenario, with an operator of its own (it is restarted mid-window): a queue step,
a restart, a leader whose metrics go away, and a scale-down under light load.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.support.cluster import Cluster
from tests.support.models import MODEL, apply, condition, model, pods, quickstart, wait_ready
from tests.support.operator import RunningOperator, own_namespace, run_operator
from tests.support.rollout import routed_leader_ips, simulators, stream_chat
from tests.support.sglang_sim import send_load
from tests.support.stub_hub import StubHub
from tests.support.wait import holds_for, wait_for

PREFIX = "as-"
INTERVAL = 2
WINDOW = 30


@pytest.fixture
def scaling_namespace(cluster: Cluster, mistral_crd: str, weights_hub: StubHub) -> Iterator[str]:
    with own_namespace(cluster, PREFIX, weights_hub) as name:
        yield name


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


def window_end(cluster: Cluster, ns: str, *, above: int) -> float:
    """When the scale-down window lets go of every recommendation over ``above`` (epoch
    seconds), from the history kept in status: the end of the last such run + WINDOW."""
    runs = scaling(cluster, ns)["recommendations"]
    ends = [
        datetime.fromisoformat(runs[i + 1]["since"].replace("Z", "+00:00")).timestamp()
        for i, run in enumerate(runs[:-1])
        if run["replicas"] > above
    ]
    assert ends, runs
    assert runs[-1]["replicas"] <= above, runs
    return max(ends) + WINDOW


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
            burst.join(timeout=60)
            wait_for(lambda: scaling(cluster, ns).get("queue") == 0, timeout=60,
                     what="the queue drained")  # fmt: skip
            first.assert_clean()

        # Restarted mid-window: the recommendation history is read back, so the window
        # still ends where the first operator's decisions put it, and nothing moves.
        with operator() as second:
            due = window_end(cluster, ns, above=3)
            events = scale_events(cluster, ns)
            left = due - time.time()
            assert left > 2 * INTERVAL + 2, f"the restart came {left:.1f}s before the window ended"
            holds_for(
                lambda: scale_events(cluster, ns) == events,
                duration=2 * INTERVAL,
                what="no scale event right after a restart",
                detail=lambda: scale_events(cluster, ns),
            )
            wait_for(lambda: model(cluster, ns)["status"].get("readyReplicas") == 4,
                     timeout=60, what="4 groups ready")  # fmt: skip
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
                duration=max(0, due + 2 * INTERVAL - time.time()),
                what="no scale-down past the window while a group's metrics are missing",
                detail=lambda: scaling(cluster, ns),
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


def test_a_constant_queue_while_groups_boot_adds_nothing_and_noise_never_flaps(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    """Groups take 6 s to boot (the platform's SIM_STARTUP_DELAY): a queue held at 4x
    the target asks for 4 groups once, not more while they boot; then load at the target
    with noise (within the tolerance) moves nothing."""
    ns = model_namespace
    manifest = autoscaled()
    manifest["spec"]["autoscaling"] |= {"maxReplicas": 8, "intervalSeconds": 1}
    manifest["spec"]["runtime"] = {"env": [{"name": "SIM_STARTUP_DELAY", "value": "6s"}]}
    apply(cluster, ns, manifest)
    wait_ready(cluster, ns)
    in_flight = [12]  # what the load keeps outstanding at the first leader
    stop = threading.Event()
    with simulators(cluster, ns, service_time=1.0, max_running=1) as fleet:
        wait_for(lambda: len(fleet) == 1, timeout=30, what="a simulator at the leader")
        (leader,) = routed_leader_ips(cluster, ns)

        def worker(slot: int) -> None:
            while not stop.is_set():
                if slot < in_flight[0]:
                    stream_chat(leader)
                else:
                    stop.wait(0.1)

        workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(14)]
        for thread in workers:
            thread.start()
        try:
            wait_for(lambda: scaling(cluster, ns).get("desiredReplicas") == 4, timeout=20,
                     what="4 groups decided", interval=0.2)  # fmt: skip
            # While the three new groups boot, the same queue asks for nothing more.
            booting = time.monotonic()
            desired: set[int] = set()

            def all_ready() -> bool:
                status = model(cluster, ns)["status"]
                desired.add((status.get("autoscaling") or {}).get("desiredReplicas") or 0)
                return bool(status.get("readyReplicas") == 4)

            wait_for(all_ready, timeout=60, what="4 groups ready", interval=0.5)
            print(f"groups booted in {time.monotonic() - booting:.1f}s; desired seen: {desired}")
            assert desired == {4}, "0 groups of overshoot while they boot"
            # Noisy load at the target (12 = 4 x 3, give or take 1): no scale event.
            events = scale_events(cluster, ns)
            rng = random.Random(7)
            for _ in range(12):
                in_flight[0] = 12 + rng.choice((-1, 0, 1))
                time.sleep(1)
            assert scale_events(cluster, ns) == events, "a flap under noisy load at the target"
            assert scaling(cluster, ns)["desiredReplicas"] == 4
        finally:
            stop.set()
            for thread in workers:
                thread.join(timeout=30)
    ups = [e for e in scale_events(cluster, ns) if e.startswith("ScaledUp")]
    assert len(ups) == 1, ups
