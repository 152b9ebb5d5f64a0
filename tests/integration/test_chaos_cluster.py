"""The reliability suite, cluster side: a quarter of the GPU nodes lost at once, and the API
server restarted in the middle of a convergence.

As in test_chaos.py, a real pod watch (ServingWatcher) follows the model the whole time and
fails the test on a duplicate (two live pods of one group and rank) or a mixed group (one
group running two revisions); at the end every pod is owned by the model and belongs to a
group its status reports. The operator runs with the tests' 5 s node grace and a 300 s
drift interval, so every reaction comes from a watch event or from a deadline the
operator set itself. Each test prints what it measured.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from tests.support import apiserver
from tests.support.cluster import Cluster
from tests.support.models import MODEL, apply, condition, model, pods, quickstart
from tests.support.nodes import (
    KUBELET_DOWN,
    KUBELET_LABEL,
    get_node,
    healthy,
    kubelet_silent,
    ready_status,
    restore_node,
)
from tests.support.operator import ERROR_LINE, RunningOperator, own_namespace, run_operator
from tests.support.rollout import ServingWatcher
from tests.support.stub_hub import StubHub
from tests.support.wait import wait_for

from mistral_operator.core import labels as L  # noqa: N812

PREFIX = "cc-"
# The operator's node grace in these tests (run_operator's default).
NODE_GRACE = timedelta(seconds=5)
GPU = "nvidia.com/gpu"
TOPOLOGY_LABEL = "sim.mistral-operator.dev/topology"
# What the operator may log while the API server is down or starting, and only then: a
# reconcile whose writes ran out of retries (a warning: the error is transient), or one
# refused (403) by the restarted API server before its RBAC caches filled (an error line
# naming the refusal; never a traceback).
OUTAGE_LINES = (r"reconcile failed, retrying in \d+s: ",)


@dataclass
class ResilientWatcher(ServingWatcher):
    """A ServingWatcher that outlives an API outage: a failed list or watch starts over
    from a fresh list (what it held is replaced, not merged); any other error ends it
    and is kept in ``error`` for the test to fail on."""

    reconnects: int = 0
    error: BaseException | None = None

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                super().run()
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                self.reconnects += 1
                self._pods.clear()
                self._stop.wait(0.2)
            except Exception as exc:
                self.error = exc
                raise


@pytest.fixture
def cc_namespace(
    cluster: Cluster,
    mistral_crd: str,
    weights_hub: StubHub,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A namespace only this module's operators watch; a model a failed test left behind
    is deleted by an operator of its own."""
    with own_namespace(cluster, PREFIX, weights_hub) as name:
        yield name
        left = cluster.kubectl("get", "mm", "-n", name, "-o", "name", check=False).stdout
        if left.strip():
            with run_operator(
                cluster, tmp_path_factory.mktemp("cleanup"), namespaces=(f"{PREFIX}*",)
            ):
                cluster.kubectl("delete", "mm", "--all", "-n", name, "--timeout=60s", check=False)


def live_pods(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    return [p for p in pods(cluster, ns) if not p["metadata"].get("deletionTimestamp")]


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def settled(cluster: Cluster, ns: str, replicas: int) -> bool:
    """The model at its last spec: every group reported, ready, at the update revision,
    Ready=True, and no pod beyond its groups' (none still being deleted either)."""
    body = model(cluster, ns)
    status = body.get("status") or {}
    everything = pods(cluster, ns)
    return (
        status.get("observedGeneration") == body["metadata"]["generation"]
        and status.get("readyReplicas") == replicas
        and len(status.get("groups") or []) == replicas
        and status.get("currentRevision") == status.get("updateRevision")
        and (condition(body, "Ready") or {}).get("status") == "True"
        and len(everything) == replicas
        and all(pod_ready(p) and not p["metadata"].get("deletionTimestamp") for p in everything)
    )


def assert_whole(cluster: Cluster, ns: str, replicas: int) -> None:
    """No orphan and no stranger: every pod owned by the model, in a group it reports, at
    the revision it reports."""
    body = model(cluster, ns)
    status = body["status"]
    reported = {g["name"] for g in status["groups"]}
    assert len(reported) == replicas
    live = live_pods(cluster, ns)
    assert len(live) == replicas
    for pod in live:
        meta = pod["metadata"]
        owners = {o["uid"] for o in meta.get("ownerReferences") or []}
        assert body["metadata"]["uid"] in owners, f"orphan: {meta['name']}"
        assert meta["labels"][L.GROUP] in reported, f"unreported group: {meta['name']}"
        assert meta["labels"][L.REVISION] == status["updateRevision"], meta["name"]


def gpu_nodes(cluster: Cluster) -> list[str]:
    """The topology's GPU nodes (scratch nodes other tests make are not part of it)."""
    items = cluster.get_json("nodes", "-l", f"{TOPOLOGY_LABEL}={cluster.topology}")["items"]
    return sorted(
        n["metadata"]["name"]
        for n in items
        if int((n.get("status") or {}).get("allocatable", {}).get(GPU, "0")) > 0
    )


def gpu_holders(cluster: Cluster, nodes: list[str]) -> list[str]:
    """Unfinished pods that hold GPUs on ``nodes``, in any namespace."""
    found = []
    for pod in cluster.get_json("pods", "--all-namespaces")["items"]:
        spec, status = pod["spec"], pod.get("status") or {}
        if spec.get("nodeName") not in nodes or status.get("phase") in {"Succeeded", "Failed"}:
            continue
        asks = [(c.get("resources") or {}).get("limits", {}).get(GPU) for c in spec["containers"]]
        if any(a and int(a) > 0 for a in asks):
            found.append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
    return found


def groups_by_node(cluster: Cluster, ns: str) -> dict[str, set[str]]:
    placed: dict[str, set[str]] = {}
    for pod in live_pods(cluster, ns):
        placed.setdefault(pod["spec"]["nodeName"], set()).add(pod["metadata"]["labels"][L.GROUP])
    return placed


def group_pod_uids(cluster: Cluster, ns: str) -> dict[str, set[str]]:
    uids: dict[str, set[str]] = {}
    for pod in live_pods(cluster, ns):
        uids.setdefault(pod["metadata"]["labels"][L.GROUP], set()).add(pod["metadata"]["uid"])
    return uids


def assert_operator_clean(running: RunningOperator, expected: tuple[str, ...] = ()) -> None:
    assert running.process.poll() is None, "the operator exited:\n" + running.log_tail()
    log = running.log_path.read_text(errors="replace")
    assert "Traceback" not in log, "the operator logged a traceback:\n" + running.log_tail(80)
    running.assert_clean(expected=expected)


def error_lines(text: str, expected: tuple[str, ...] = ()) -> list[str]:
    """The operator's error lines (tests.support.operator.ERROR_LINE) not ``expected``."""
    found = [line for line in text.splitlines() if ERROR_LINE.search(line)]
    return [line for line in found if not any(re.search(p, line) for p in expected)]


def test_a_quarter_of_the_nodes_lost_at_once_regroups_where_gpus_allow(
    cluster: Cluster, cc_namespace: str, tmp_path: Path
) -> None:
    """The model fills what the GPU nodes left after the loss can hold (12 single-node
    groups of 2 GPUs on the h200 topology: 24 of its 32 GPUs, 3 of its 4 nodes' worth),
    so every group still fits once 25 % of the nodes (h200: 1 of 4) are lost, with no GPU
    to spare. The nodes lost are those hosting the most groups. Expected: within the node
    grace after the controller manager gives up on them, no pod of the model is left on a
    dead node; every group lost is re-placed on the survivors (all of them: the numbers
    allow it), the others keep their pods, and the model is Ready and Schedulable again,
    without a duplicate or mixed group. The kubelets are revived afterwards, whatever
    happened, and the nodes must be Ready again.
    """
    ns = cc_namespace
    nodes = gpu_nodes(cluster)
    lose = max(1, round(len(nodes) / 4))
    wait_for(lambda: all(healthy(get_node(cluster, n) or {}) for n in nodes), timeout=60,
             what="every GPU node of the topology healthy")  # fmt: skip
    wait_for(lambda: not gpu_holders(cluster, nodes), timeout=90,
             what="no other workload holding GPUs on the topology's nodes")  # fmt: skip
    workdir = tmp_path / "operator"
    workdir.mkdir()
    manifest = quickstart(0)
    watcher = ResilientWatcher(cluster, ns)
    with (
        run_operator(cluster, workdir, namespaces=(f"{PREFIX}*",)) as running,
        watcher.running(),
    ):
        # The plan of one replica, from the operator itself: how many fit on a node.
        apply(cluster, ns, manifest)
        planned = wait_for(lambda: (model(cluster, ns).get("status") or {}).get("topology"),
                           timeout=30, what="the model's planned topology")  # fmt: skip
        if planned.get("nodesPerReplica") != 1:
            pytest.skip(f"this test places single-node groups; {cluster.topology}: {planned}")
        per_node = int(planned["replicasPerNode"])
        replicas = (len(nodes) - lose) * per_node
        print(f"{cluster.topology}: {len(nodes)} GPU nodes, {per_node} groups of "
              f"{planned['gpusPerReplica']} GPUs per node; {replicas} groups, "
              f"{lose} node(s) lost")  # fmt: skip
        manifest = quickstart(replicas)
        apply(cluster, ns, manifest)
        started = time.monotonic()
        wait_for(lambda: settled(cluster, ns, replicas), timeout=120,
                 what=f"{replicas} groups serving")  # fmt: skip
        print(f"{replicas} groups serving after {time.monotonic() - started:.1f}s")
        placed = groups_by_node(cluster, ns)
        victims = sorted(nodes, key=lambda n: (-len(placed.get(n, ())), n))[:lose]
        hit = set().union(*(placed.get(n, set()) for n in victims))
        assert hit, f"the nodes lost host groups: {placed}"
        before = group_pod_uids(cluster, ns)
        survivors = [n for n in nodes if n not in victims]
        try:
            cluster.kubectl(
                "label", "node", *victims, f"{KUBELET_LABEL}={KUBELET_DOWN}", "--overwrite"
            )
            killed = time.monotonic()
            seen_at_kill = len(watcher.counts)
            wait_for(lambda: all(kubelet_silent(cluster, n) for n in victims), timeout=30,
                     what=f"the kubelets of {victims} silent")  # fmt: skip

            def given_up() -> datetime | None:
                found = [get_node(cluster, n) or {} for n in victims]
                if any(ready_status(n) == "True" for n in found):
                    return None
                return max(
                    datetime.fromisoformat(c["lastTransitionTime"].replace("Z", "+00:00"))
                    for n in found
                    for c in n["status"]["conditions"]
                    if c["type"] == "Ready"
                )

            not_ready_since = wait_for(given_up, timeout=60, what=f"{victims} not Ready")
            unknown = time.monotonic() - killed
            grace_ends = not_ready_since + NODE_GRACE

            def cleared() -> bool:
                return not [p for p in pods(cluster, ns) if p["spec"].get("nodeName") in victims]

            # The operator acts once the grace ends; a few seconds for it and the API.
            deadline = (grace_ends - datetime.now(UTC)).total_seconds() + 10
            wait_for(cleared, timeout=max(deadline, 1), interval=0.1,
                     what=f"no pod of the model on {victims} after the node grace")  # fmt: skip
            cleared_at = time.monotonic() - killed

            def recovered() -> bool:
                on = {p["spec"]["nodeName"] for p in pods(cluster, ns)}
                return on <= set(survivors) and settled(cluster, ns, replicas)

            wait_for(recovered, timeout=60, what=f"all {replicas} groups serving on {survivors}")
            recovery = time.monotonic() - killed
            # The groups away from the loss served throughout.
            fewest = min(watcher.counts[seen_at_kill:])
            assert fewest >= replicas - len(hit), watcher.counts[seen_at_kill:]
            print(f"lost {victims} hosting {len(hit)} of {replicas} groups: not Ready after "
                  f"{unknown:.1f}s, their pods gone after {cleared_at:.1f}s, all groups "
                  f"serving again after {recovery:.1f}s (time to recovery); fewest groups "
                  f"routed meanwhile: {fewest}/{replicas}")  # fmt: skip
            body = model(cluster, ns)
            assert (condition(body, "Schedulable") or {}).get("status") == "True"
            records = {g["name"]: g for g in body["status"]["groups"]}
            for group in hit:
                failure = records[group].get("lastFailure") or {}
                assert failure.get("node") in victims, (group, failure)
                assert failure.get("reason") in {"NodeNotReady", "NodeLost"}, (group, failure)
            after = group_pod_uids(cluster, ns)
            for group in set(before) - hit:
                assert after[group] == before[group], (
                    f"{group} was away from the loss, yet restarted"
                )
            assert_whole(cluster, ns, replicas)
            cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=60s")
        finally:
            revived = time.monotonic()
            for node in victims:
                restore_node(cluster, node)
        print(f"{victims} Ready again {time.monotonic() - revived:.1f}s after the revival")
        assert all(healthy(get_node(cluster, n) or {}) for n in victims)
        assert_operator_clean(running)
    assert watcher.error is None, watcher.error
    assert watcher.counts
    assert not watcher.duplicate_ranks()
    assert not watcher.mixed_groups()


def test_an_api_server_restart_mid_reconcile_loses_nothing(
    cluster: Cluster, cc_namespace: str, tmp_path: Path
) -> None:
    """One group serves; the model is scaled to 6 (on h200, over at least two nodes, so
    weights may have to be filled on a new one) with pods that take 5 s to turn Ready, and
    the kube-apiserver is stopped (SIGTERM) as soon as the operator has created the first
    new pod, then started again with its own command line. The operator must live through
    it, its watches must resume (the drift interval is 300 s: only events bring the
    convergence), the model must reach the last spec with no duplicate, mixed or orphan
    pod, and an edit made after the restart (6 to 2 groups) must be acted on."""
    ns = cc_namespace
    workdir = tmp_path / "operator"
    workdir.mkdir()
    manifest = quickstart(1)
    manifest["spec"]["runtime"] = {"env": [{"name": "SIM_STARTUP_DELAY", "value": "5s"}]}
    watcher = ResilientWatcher(cluster, ns)
    with (
        run_operator(cluster, workdir, namespaces=(f"{PREFIX}*",)) as running,
        watcher.running(),
    ):
        apply(cluster, ns, manifest)
        wait_for(lambda: settled(cluster, ns, 1), timeout=90, what="the first group serving")
        planned = model(cluster, ns)["status"]["topology"]
        if planned.get("nodesPerReplica") != 1:
            pytest.skip(f"this test scales single-node groups; {cluster.topology}: {planned}")
        scaled = copy.deepcopy(manifest)
        scaled["spec"]["replicas"] = 6
        apply(cluster, ns, scaled)

        def first_new_pod() -> list[dict[str, Any]] | None:
            found = pods(cluster, ns)
            return found if len(found) > 1 else None

        at_stop = wait_for(first_new_pod, timeout=30, interval=0.05, what="a first new pod")
        stop_offset = running.log_size()
        with apiserver.apiserver_down(cluster) as outage:
            pass  # started again at once: the outage is the stop and the start
        back = time.monotonic()
        after_outage = len(pods(cluster, ns))
        assert running.process.poll() is None, "the operator died with the API server"
        assert apiserver.open_locks(outage.new_pid) == [], "the new API server holds a lock"
        # Mid-work: new groups were being created, none of them ready yet.
        assert not any(pod_ready(p) for p in at_stop if p["metadata"]["labels"][L.GROUP] != "g0")
        wait_for(lambda: settled(cluster, ns, 6), timeout=90, what="6 groups after the restart")
        converged = time.monotonic() - back
        settled_offset = running.log_size()
        assert_whole(cluster, ns, 6)
        print(f"API server down {outage.down_seconds:.1f}s (SIGTERM to gone "
              f"{outage.stop_seconds:.1f}s{', SIGKILLed' if outage.killed else ''}); "
              f"{len(at_stop)} of 6 pods there at the stop, {after_outage} when it came back, "
              f"converged {converged:.1f}s after it was back; watcher reconnected "
              f"{watcher.reconnects} time(s)")  # fmt: skip
        # An edit after the restart is acted on: the model watch resumed too.
        shrunk = copy.deepcopy(scaled)
        shrunk["spec"]["replicas"] = 2
        edited = time.monotonic()
        apply(cluster, ns, shrunk)
        wait_for(
            lambda: settled(cluster, ns, 2), timeout=30, what="the edit made after the restart"
        )
        print(
            f"the edit after the restart (6 to 2 groups) done in {time.monotonic() - edited:.1f}s"
        )
        assert_whole(cluster, ns, 2)
        cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=60s")
        assert running.process.poll() is None, "the operator exited:\n" + running.log_tail()
        text = running.log_path.read_bytes()
        # Clean before the stop and after the convergence; in between, only the outage's.
        assert not error_lines(text[:stop_offset].decode(errors="replace"))
        assert not error_lines(text[settled_offset:].decode(errors="replace"))
        window = text[stop_offset:settled_offset].decode(errors="replace")
        assert not error_lines(window, OUTAGE_LINES), error_lines(window, OUTAGE_LINES)
        assert "Traceback" not in window
        refused = len(re.findall(r"the API server refused a request: HTTP 403", window))
        print(f"reconciles refused (403) by the restarted API server before its RBAC caches "
              f"filled: {refused}")  # fmt: skip
    assert watcher.error is None, watcher.error
    assert watcher.reconnects >= 1, "the watcher never saw the API server go"
    assert not watcher.duplicate_ranks()
    assert not watcher.mixed_groups()
