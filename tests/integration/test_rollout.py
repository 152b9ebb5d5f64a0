"""Rolling updates on the real control plane: whole groups, drained before they go.

Simulators serve at the leaders' IPs where a test sends requests; elsewhere nothing
listens there, and a drain finds no request in flight.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.caches import cached_quickstart, node_label, pinned, serve_revision
from tests.support.cluster import Cluster
from tests.support.models import MODEL, apply, condition, model, pods, quickstart, wait_ready
from tests.support.nodes import IMAGE_CONTAINER_CREATING, SCRATCH_TAINT, scratch_node
from tests.support.operator import RunningOperator, own_namespace, run_operator
from tests.support.rollout import ServingWatcher, routed_leader_ips, simulators, stream_chat
from tests.support.stub_hub import StubHub
from tests.support.wait import WaitTimeoutError, wait_for

from mistral_operator.core.timestamps import parse_time

NEW_IMAGE = "lmsysorg/sglang:v0.5.24"


def with_rollout(manifest: dict[str, Any], **rollout: Any) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    out["spec"]["rollout"] = rollout
    return out


def with_image(manifest: dict[str, Any], image: str) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    out["spec"].setdefault("runtime", {})["image"] = image
    return out


def rolled_out(cluster: Cluster, ns: str, replicas: int, old: str) -> bool:
    """Every group runs the spec's revision, which is no longer ``old``, and serves."""
    status = model(cluster, ns).get("status") or {}
    groups = status.get("groups") or []
    return (
        status.get("updateRevision") != old
        and status.get("currentRevision") == status.get("updateRevision")
        and status.get("readyReplicas") == replicas
        and len(groups) == replicas
        and all(g["revision"] == status["updateRevision"] for g in groups)
    )


def events(cluster: Cluster, ns: str, reason: str) -> list[dict[str, Any]]:
    items = cluster.get_json(
        "events", "-n", ns, "--field-selector", f"involvedObject.name={MODEL},reason={reason}"
    )["items"]
    return list(items)


def test_an_image_change_keeps_both_groups_serving_and_no_streamed_request_fails(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    ns = model_namespace
    manifest = with_rollout(quickstart(2), maxSurge=1, maxUnavailable=0, drainTimeoutSeconds=120)
    apply(cluster, ns, manifest)
    wait_ready(cluster, ns)
    old = model(cluster, ns)["status"]["updateRevision"]
    before = {p["metadata"]["uid"] for p in pods(cluster, ns)}
    watcher = ServingWatcher(cluster, ns)
    with simulators(cluster, ns, service_time=30) as fleet, watcher.running():
        wait_for(lambda: len(fleet) == 2, timeout=30, what="a simulator at each leader")
        wait_for(lambda: watcher.counts, timeout=10, what="the watcher's first event")
        apply(cluster, ns, with_image(manifest, NEW_IMAGE))
        results: list[str] = []
        threads: list[threading.Thread] = []

        def send(ip: str) -> None:
            results.append(stream_chat(ip))

        def burst(n: int) -> None:
            # Routed leaders whose server listens (a real one is Ready only then; here
            # the simulator starts a moment after kwok marks the pod Ready).
            ips = wait_for(
                lambda: [ip for ip in routed_leader_ips(cluster, ns) if ip in fleet],
                timeout=10,
                what="a routed leader with its server up",
            )
            for i in range(n):
                thread = threading.Thread(target=send, args=(ips[i % len(ips)],), daemon=True)
                thread.start()
                threads.append(thread)

        burst(10)  # into the old groups as the rollout starts
        wait_for(
            lambda: any(
                g["revision"] == model(cluster, ns)["status"]["updateRevision"] and g["serving"]
                for g in model(cluster, ns)["status"].get("groups") or []
            ),
            timeout=60,
            what="the first new group serving",
        )
        burst(10)  # into whatever serves mid-rollout
        wait_for(lambda: rolled_out(cluster, ns, 2, old), timeout=180, what="the rollout to finish")
        for thread in threads:
            thread.join(timeout=120)
    assert results == ["ok"] * 20, results
    assert min(watcher.counts) >= 2, "fewer than 2 groups served at some point"
    assert not watcher.mixed_groups()
    assert not before & {p["metadata"]["uid"] for p in pods(cluster, ns)}
    drained = [e["message"] for e in events(cluster, ns, "GroupDraining")]
    assert len(drained) == 2, drained
    status = model(cluster, ns)["status"]
    assert status["rollout"]["step"] == "Complete"
    assert status["updatedReplicas"] == 2


def test_with_no_spare_gpus_groups_are_replaced_one_at_a_time_after_the_fallback(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    ns = model_namespace
    with scratch_node(cluster, gpus=4) as node:  # room for exactly two Compact groups
        manifest = quickstart(2, nodeSelector={"kubernetes.io/hostname": node})
        manifest["spec"]["placement"]["tolerations"] = [
            {"key": SCRATCH_TAINT, "operator": "Exists", "effect": "NoSchedule"}
        ]
        manifest = with_rollout(manifest, surgeFallbackSeconds=5)
        apply(cluster, ns, manifest)
        wait_ready(cluster, ns)
        old = model(cluster, ns)["status"]["updateRevision"]
        watcher = ServingWatcher(cluster, ns)
        with watcher.running():
            wait_for(lambda: watcher.counts, timeout=10, what="the watcher's first event")
            apply(cluster, ns, with_image(manifest, NEW_IMAGE))
            blocked = wait_for(
                lambda: (model(cluster, ns)["status"].get("rollout") or {}).get(
                    "surgeBlockedSince"
                ),
                timeout=30,
                what="the surge group finding no room",
            )
            assert model(cluster, ns)["status"]["rollout"]["step"] == "WaitingForSurgeRoom"
            schedulable = condition(model(cluster, ns), "Schedulable")
            assert schedulable is not None
            assert schedulable["status"] == "True", "a surge without room is no GPU shortage"
            wait_for(
                lambda: rolled_out(cluster, ns, 2, old), timeout=90, what="the rollout to finish"
            )
        drains = events(cluster, ns, "GroupDraining")
        assert len(drains) == 2
        first = min(e["firstTimestamp"] or e["eventTime"] for e in drains)
        waited = _seconds_between(blocked, first)
        assert waited >= 4, f"drain-then-replace began {waited}s after the surge was blocked"
        assert min(watcher.counts) >= 1, "more than one group below the desired count"
        assert not watcher.mixed_groups()


def _seconds_between(earlier: str, later: str) -> float:
    start, end = parse_time(earlier), parse_time(later)
    assert start is not None
    assert end is not None
    return (end - start).total_seconds()


def test_a_revision_that_never_gets_ready_is_rolled_back_and_old_groups_keep_serving(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    ns = model_namespace
    manifest = with_rollout(quickstart(1), progressDeadlineSeconds=30)
    apply(cluster, ns, manifest)
    wait_ready(cluster, ns)
    good = model(cluster, ns)["status"]["currentRevision"]
    old = {p["metadata"]["uid"] for p in pods(cluster, ns)}
    apply(cluster, ns, with_image(manifest, IMAGE_CONTAINER_CREATING))
    wait_for(lambda: len(pods(cluster, ns)) == 2, timeout=30, what="the new group's pod")
    rolled = wait_for(
        lambda: (c := condition(model(cluster, ns), "RolledBack")) and c["status"] == "True" and c,
        timeout=60,
        what="the rollback",
    )
    assert rolled["reason"] == "ProgressDeadlineExceeded"
    status = model(cluster, ns)["status"]
    assert status["currentRevision"] == good
    assert status["rollout"]["failedRevision"] == status["updateRevision"] != good
    wait_for(
        lambda: {p["metadata"]["uid"] for p in pods(cluster, ns)} == old,
        timeout=30,
        what="only the old group left",
    )
    assert routed_leader_ips(cluster, ns), "the old group serves throughout"
    assert events(cluster, ns, "RolledBack")
    assert events(cluster, ns, "RolloutFailed")
    described = cluster.kubectl("describe", "mm", MODEL, "-n", ns).stdout
    assert "RolledBack" in described
    # Pinning the good revision back by hand (docs/rollouts.md): the stored spec of the
    # ControllerRevision status.currentRevision names.
    name = f"{MODEL}-{status['currentRevision']}"
    stored = cluster.get_json("controllerrevision", name, "-n", ns)
    assert stored["metadata"]["labels"]["mistral-operator.dev/revision"] == good
    current = model(cluster, ns)
    current["spec"] = stored["data"]["spec"]
    cluster.kubectl("replace", "-f", "-", input=yaml.safe_dump(current))
    wait_for(
        lambda: (c := condition(model(cluster, ns), "RolledBack")) and c["status"] == "False",
        timeout=30,
        what="the rollback to end once the spec is the good one",
    )
    status = model(cluster, ns)["status"]
    assert status["updateRevision"] == status["currentRevision"] == good
    assert {p["metadata"]["uid"] for p in pods(cluster, ns)} == old, "no pod rolled"


def test_old_groups_wait_untouched_until_the_new_weights_are_ready_on_their_nodes(
    cluster: Cluster, model_namespace: str, hub: StubHub
) -> None:
    ns = model_namespace
    manifest = with_rollout(cached_quickstart(hub), maxSurge=0, maxUnavailable=1)
    apply(cluster, ns, manifest)
    wait_ready(cluster, ns)
    old = model(cluster, ns)["status"]["updateRevision"]
    (old_pod,) = pods(cluster, ns)
    node = pinned(old_pod)
    hub.rate = 100 * 1024  # several seconds for the new revision's files
    moved = copy.deepcopy(manifest)
    moved["spec"]["model"]["revision"] = serve_revision(hub)
    apply(cluster, ns, moved)
    key = wait_for(
        lambda: (
            (s := model(cluster, ns)["status"]).get("updateRevision") != (s.get("currentRevision"))
            and s["cache"]["key"]
        ),
        timeout=30,
        what="the new revision's cache key",
    )
    checks = 0
    while True:
        # The pod first, then the label: the operator marks the node Ready before it
        # touches the group, so an old group touched while its node is not Ready shows.
        uid = old_pod["metadata"]["uid"]
        pod = next(p for p in pods(cluster, ns) if p["metadata"]["uid"] == uid)
        status = model(cluster, ns)["status"]
        if node_label(cluster, node, key) == "Ready":
            break
        why = f"rollout {status.get('rollout')}, groups {status.get('groups')}"
        assert not pod["metadata"].get("deletionTimestamp"), f"deleted before staging: {why}"
        assert pod["metadata"]["labels"].get("mistral-operator.dev/serving") == "true", why
        assert status["rollout"]["step"] == "WaitingForWeights", why
        checks += 1
        assert checks < 300, "the new weights never became Ready"
        time.sleep(0.2)
    assert checks > 3, "the fill was too fast to show anything"
    wait_for(lambda: rolled_out(cluster, ns, 1, old), timeout=60, what="the rollout to finish")


# -- an operator killed at every step ---------------------------------------------------

PREFIX = "rk-"


@pytest.fixture
def kill_namespace(cluster: Cluster, mistral_crd: str, weights_hub: StubHub) -> Iterator[str]:
    with own_namespace(cluster, PREFIX, weights_hub) as name:
        yield name


def test_an_operator_killed_at_every_step_of_a_rollout_finishes_it_without_duplicates(
    cluster: Cluster, kill_namespace: str, tmp_path: Path
) -> None:
    ns = kill_namespace
    manifest = with_rollout(quickstart(2), maxSurge=1, maxUnavailable=0)
    watcher = ServingWatcher(cluster, ns)
    stop = threading.Event()

    def draining(ns: str = ns) -> set[str]:
        """Groups being drained whose pods are still there (not yet deleted)."""
        status = model(cluster, ns).get("status") or {}
        live = {p["metadata"]["labels"]["mistral-operator.dev/group"] for p in pods(cluster, ns)}
        return {g["name"] for g in status.get("groups") or [] if g["state"] == "Draining"} & live

    def gone(group: str) -> bool:
        return not any(
            p["metadata"]["labels"]["mistral-operator.dev/group"] == group
            for p in pods(cluster, ns)
        )

    # Where the operator is killed: right after the change, mid-drain of the first old
    # group, once its replacement exists, and mid-drain of the second. A point the
    # rollout has already passed when the operator is back kills it there and then.
    kill_points = [
        ("the spec change", lambda: True),
        ("the first drain", lambda: "g0" in draining() or gone("g0")),
        ("the replacement of g0", lambda: gone("g0") and len(pods(cluster, ns)) >= 2),
        ("the second drain", lambda: "g1" in draining() or gone("g1")),
    ]
    killed_at: list[str] = []
    with simulators(cluster, ns, service_time=6) as fleet, watcher.running():

        def keep_leaders_busy() -> None:
            # One request a second to each routed leader: every drain waits for some.
            while not stop.is_set():
                for ip in [ip for ip in routed_leader_ips(cluster, ns) if ip in fleet]:
                    threading.Thread(target=stream_chat, args=(ip,), daemon=True).start()
                stop.wait(1)

        load = threading.Thread(target=keep_leaders_busy, daemon=True)
        for round_ in range(len(kill_points) + 2):
            workdir = tmp_path / f"op{round_}"
            workdir.mkdir()
            with run_operator(cluster, workdir, namespaces=(f"{PREFIX}*",)) as running:
                if round_ == 0:
                    apply(cluster, ns, manifest)
                    wait_ready(cluster, ns)
                    old = model(cluster, ns)["status"]["updateRevision"]
                    wait_for(lambda: len(fleet) == 2, timeout=30, what="simulators up")
                    load.start()
                    apply(cluster, ns, with_image(manifest, NEW_IMAGE))
                if round_ < len(kill_points):
                    what, reached = kill_points[round_]
                    try:
                        wait_for(reached, timeout=60, interval=0.1, what=what)
                    except WaitTimeoutError as exc:
                        state = _rollout_step(cluster, ns)
                        raise AssertionError(
                            f"{exc}; killed after {killed_at}; now {state}"
                        ) from exc
                    running.process.kill()  # SIGKILL: no cleanup, mid-step
                    running.process.wait(timeout=10)
                    killed_at.append(f"{what}: {_rollout_step(cluster, ns)}")
                    continue
                done = partial(rolled_out, cluster, ns, 2, old)
                wait_for(done, timeout=90, what="the rollout to finish")
                final, counts = pods(cluster, ns), list(watcher.counts)
                stop.set()
                cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=60s")
                running.assert_clean()
                break
    print("killed after", *killed_at, sep="\n  ")
    assert len(killed_at) == len(kill_points)
    assert any(k.startswith("the first drain: Draining") for k in killed_at) or any(
        k.startswith("the second drain: Draining") for k in killed_at
    ), f"never killed mid-drain: {killed_at}"
    assert max(watcher.group_counts) <= 3, "never more than replicas + maxSurge groups"
    assert min(counts[counts.index(2) :]) >= 2, "fewer than 2 groups served at some point"
    assert not watcher.mixed_groups()
    assert len(final) == 2


def _rollout_step(cluster: Cluster, ns: str) -> str:
    status = model(cluster, ns).get("status") or {}
    groups = ",".join(f"{g['name']}:{g['state']}" for g in status.get("groups") or [])
    return f"{(status.get('rollout') or {}).get('step')} {groups}"
