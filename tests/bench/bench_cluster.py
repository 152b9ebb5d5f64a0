"""`make bench` on the local cluster: convergence against its floor, API efficiency,
idle traffic and the autoscaler's reaction, each against a baseline measured in the
same run (these machines are noisy: only ratios compare).

- **convergence**: the quick start (warm cache) applied until every pod is Ready and
  the model says Ready, against `kubectl apply` of the very pods the operator rendered
  until they are Ready (the floor: the API server, scheduler and kwok doing the same
  work with no operator);
- **API efficiency**: the operator's requests during one convergence, from the API
  server's audit log (reads, watches, subresources and events included), and its
  writes against the minimum: one create per object the model owns at the end, one
  patch for the finalizer, one status write;
- **idle**: requests in a minute with nothing changing (the chart's resync interval);
- **autoscaler reaction**: a queue step at the leader until the desired count changes,
  against the configured scrape interval.

Run: `python -m tests.bench.bench_cluster [--json FILE]` with the local cluster up.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from mistral_operator.api import names
from mistral_operator.core import labels as L  # noqa: N812
from tests.support.audit import WRITE_VERBS, AuditLog
from tests.support.caches import cached_quickstart
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.models import MODEL, apply, condition, model
from tests.support.operator import RELEASE, SYSTEM_NAMESPACE, RunningOperator, own_namespace
from tests.support.operator import run_operator as start_operator
from tests.support.process_kubelet import shared_kubelet
from tests.support.rollout import routed_leader_ips, simulators
from tests.support.sglang_sim import send_load
from tests.support.stub_hub import StubHub, run_stub_hub
from tests.support.wait import wait_for
from tests.support.weights import serve_weights

OPERATOR_USER = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{RELEASE}"
PREFIX = "bench-"
CRD_PATH = REPO_ROOT / "crds" / names.CRD_FILENAME
RESYNC_SECONDS = 60  # the chart's operator.driftIntervalSeconds
WEBHOOK_CHECK_SECONDS = 300  # the chart's webhook.checkSeconds


@dataclass
class Row:
    """One figure of the table: its value, the floor or goal it is read against."""

    area: str
    figure: str
    value: float
    unit: str
    baseline: float | None = None  # measured in the same run
    goal: float | None = None  # the most value / baseline (or value) may be
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio, "met": self.met}

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        measured = self.ratio if self.baseline else self.value
        return measured is not None and measured <= self.goal


class PodClock:
    """Times how long until ``count`` pods of a namespace are Ready, from a real watch
    (started before the change it times, so no event is missed)."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.core = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
        self.namespace = namespace

    def until_ready(self, count: int, start: Any, timeout: float = 180) -> float:
        listing = self.core.list_namespaced_pod(self.namespace)
        ready = {p.metadata.name for p in listing.items if _ready(p)}
        began = time.monotonic()
        start()
        stream = watch.Watch()
        for event in stream.stream(
            self.core.list_namespaced_pod,
            self.namespace,
            resource_version=listing.metadata.resource_version,
            timeout_seconds=int(timeout),
        ):
            pod = event["object"]
            if event["type"] != "DELETED" and _ready(pod):
                ready.add(pod.metadata.name)
            else:
                ready.discard(pod.metadata.name)
            if len(ready) >= count:
                stream.stop()
                return time.monotonic() - began
        raise TimeoutError(f"{count} pods never Ready in {self.namespace}")


def _ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp or not pod.status or not pod.status.conditions:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def model_pods(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    return list(cluster.get_json("pods", "-n", ns, "-l", f"{L.MODEL}={MODEL}")["items"])


def as_rendered(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod as the operator asked for it: no status, owner, node binding or server
    fields; without the operator's labels (so that the operator leaves it alone) and
    without what the simulated kubelet noted on it (its volumes are mounted anew)."""
    meta = pod["metadata"]
    spec = copy.deepcopy(pod["spec"])
    spec.pop("nodeName", None)
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if "mistral-operator" not in k}
    notes = meta.get("annotations") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": meta["name"],
            "labels": labels | {"bench.example/floor": "true"},
            "annotations": {k: v for k, v in notes.items() if not k.startswith("sim.")},
        },
        "spec": spec,
    }


def gone(cluster: Cluster, ns: str) -> None:
    wait_for(lambda: not cluster.get_json("pods", "-n", ns)["items"], timeout=180,
             what=f"the pods of {ns} gone")  # fmt: skip


def is_ready(obj: dict[str, Any]) -> bool:
    return (condition(obj, "Ready") or {}).get("status") == "True"


def model_ready(cluster: Cluster, ns: str) -> bool:
    return is_ready(model(cluster, ns))


def settle(audit: AuditLog, quiet: float = 5, timeout: float = 120) -> None:
    """Wait until the operator has written nothing for ``quiet`` seconds."""
    start = AuditLog(audit.path, audit.offset)

    def calm() -> bool:
        start.mark()
        deadline = time.monotonic() + quiet
        while time.monotonic() < deadline:
            if any(r["verb"] in WRITE_VERBS for r in start.requests(user=OPERATOR_USER)):
                return False
            time.sleep(0.5)
        return True

    wait_for(calm, timeout=timeout, what=f"the operator quiet for {quiet:g} s", interval=0)


def convergence(
    cluster: Cluster, ns: str, hub: StubHub, audit: AuditLog, *, replicas: int, rounds: int
) -> tuple[list[Row], dict[str, Any]]:
    """Rows, and the manifest (its cache warm)."""
    manifest = cached_quickstart(hub, replicas)
    clock = PodClock(cluster, ns)
    # Warm-up: the fills, so that every round reads a warm cache as the floor does.
    apply(cluster, ns, manifest)
    wait_for(lambda: model_ready(cluster, ns), timeout=300, what="the warm-up Ready")
    rendered = [as_rendered(p) for p in model_pods(cluster, ns)]
    cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=120s")
    gone(cluster, ns)

    operated, floors = [], []
    rounds_writes: list[list[dict[str, str]]] = []
    rounds_reads: list[list[dict[str, str]]] = []
    for _ in range(rounds):
        settle(audit)
        audit.mark()
        seconds = clock.until_ready(len(rendered), lambda: apply(cluster, ns, manifest))
        wait_for(lambda: model_ready(cluster, ns), timeout=60, what="the model Ready")
        operated.append(seconds)
        settle(audit)  # the writes that follow Ready count too
        made = audit.requests(user=OPERATOR_USER)
        rounds_writes.append([r for r in made if r["verb"] in WRITE_VERBS])
        rounds_reads.append([r for r in made if r["verb"] not in WRITE_VERBS])
        cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=120s")
        gone(cluster, ns)

        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered})

        def apply_pods(body: str = body) -> None:
            cluster.kubectl("apply", "-n", ns, "-f", "-", input=body)

        floors.append(clock.until_ready(len(rendered), apply_pods))
        cluster.kubectl("delete", "pods", "--all", "-n", ns, "--grace-period=0", "--force")
        gone(cluster, ns)

    # Pods turning Ready a few milliseconds apart are one reconcile or two (one more
    # status write and event), and the 60 s resync's lists fall in a round or not: the
    # median round is reported, every round in the note.
    writes = sorted(rounds_writes, key=len)[len(rounds_writes) // 2]
    read = sorted(rounds_reads, key=len)[len(rounds_reads) // 2]
    objects = {
        (r["resource"], r["name"])
        for r in writes
        if r["namespace"] == ns and "/" not in r["resource"] and r["resource"] != "events"
    }
    # A create per owned object (the model's own write being its finalizer), the route
    # label on each group's leader once it is Ready, one status write.
    minimum = len(objects) + replicas + 1
    kinds = Counter(f"{r['verb']} {r['resource']}" for r in writes)
    reads = Counter(f"{r['verb']} {r['resource']}" for r in read)
    rows = [
        Row("convergence", f"quick start, {replicas} groups, warm cache: apply to all Ready",
            statistics.median(operated), "s", statistics.median(floors), 1.2,
            "floor: kubectl apply of the same rendered pods"),
        Row("API", f"writes per convergence, {replicas} groups", len(writes), "requests",
            minimum, 1.1,
            "minimum: a create per owned object, a route label per group, one status "
            "write; rounds: " + ", ".join(str(len(w)) for w in rounds_writes)
            + "; made (median round): "
            + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))),
        Row("API", "reads per convergence", sum(reads.values()), "requests",
            note="rounds: " + ", ".join(str(len(r)) for r in rounds_reads) + "; "
            + ", ".join(f"{k} {v}" for k, v in sorted(reads.items()))),
    ]  # fmt: skip
    return rows, manifest


def idle(cluster: Cluster, ns: str, audit: AuditLog, seconds: float) -> list[Row]:
    """A converged model and nothing changing: what the operator asks in ``seconds``."""
    wait_for(lambda: model_ready(cluster, ns), timeout=120, what="the model Ready")
    settle(audit, quiet=10)
    audit.mark()
    time.sleep(seconds)  # the window measured: nothing is meant to happen in it
    made = audit.requests(user=OPERATOR_USER)
    writes = [r for r in made if r["verb"] in WRITE_VERBS]
    per_minute = 60 / seconds
    kinds = Counter(f"{r['verb']} {r['resource']}" for r in made)
    return [
        Row("idle", "writes per minute, nothing changing", len(writes) * per_minute, "requests",
            goal=0, note=", ".join(f"{r['verb']} {r['resource']} {r['name']}" for r in writes)),
        Row("idle", "requests per minute, nothing changing", len(made) * per_minute, "requests",
            note=", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))),
    ]  # fmt: skip


def autoscaler_reaction(cluster: Cluster, ns: str, hub: StubHub, interval: float) -> list[Row]:
    """A queue step to 4x the target at the one leader: seconds until 4 groups are decided."""
    manifest = cached_quickstart(hub, 1)
    manifest["spec"]["autoscaling"] = {
        "minReplicas": 1, "maxReplicas": 4, "targetQueuePerReplica": 3,
        "intervalSeconds": int(interval),
    }  # fmt: skip
    apply(cluster, ns, manifest)
    wait_for(lambda: model_ready(cluster, ns), timeout=300, what="the autoscaled model Ready")
    with simulators(cluster, ns, service_time=1.0, max_running=1) as fleet:
        wait_for(lambda: len(fleet) >= 1, timeout=30, what="a simulator at the leader")
        wait_for(lambda: desired(cluster, ns) == 1, timeout=60, what="a first decision")
        (leader,) = routed_leader_ips(cluster, ns)
        began = time.monotonic()
        burst = threading.Thread(
            target=send_load, args=(f"http://{leader}:30000", 12, 12, 60), daemon=True
        )
        burst.start()
        wait_for(lambda: desired(cluster, ns) == 4, timeout=60, what="4 groups", interval=0.1)
        reaction = time.monotonic() - began
        burst.join(timeout=60)
    return [
        Row("autoscaler", "queue step to 4 groups decided", reaction, "s", interval, 1.5,
            "baseline: the scrape interval (intervalSeconds)"),
    ]  # fmt: skip


def desired(cluster: Cluster, ns: str) -> int | None:
    scaling = (model(cluster, ns).get("status") or {}).get("autoscaling") or {}
    value = scaling.get("desiredReplicas")
    return int(value) if value is not None else None


@contextmanager
def bench_namespace(cluster: Cluster, hub: StubHub) -> Iterator[str]:
    with own_namespace(cluster, PREFIX, hub) as ns:
        yield ns


@contextmanager
def operator(cluster: Cluster, workdir: Path) -> Iterator[RunningOperator]:
    workdir.mkdir(parents=True, exist_ok=True)
    with start_operator(
        cluster,
        workdir,
        namespaces=(f"{PREFIX}*",),
        drift_interval_seconds=RESYNC_SECONDS,
        webhook_check_seconds=WEBHOOK_CHECK_SECONDS,
    ) as op:
        yield op


def print_table(rows: list[Row]) -> None:
    print(f"{'area':12} {'figure':58} {'value':>10} {'baseline':>10} {'ratio':>7} {'goal':>6} met")
    for row in rows:
        baseline = f"{row.baseline:10.2f}" if row.baseline is not None else " " * 10
        ratio = f"{row.ratio:7.2f}" if row.ratio is not None else " " * 7
        goal = f"{row.goal:6.2f}" if row.goal is not None else " " * 6
        met = {True: "yes", False: "NO", None: ""}[row.met]
        print(
            f"{row.area:12} {row.figure[:58]:58} {row.value:10.2f} {baseline} {ratio} {goal} {met}"
        )
        if row.note:
            print(f"{'':12} {row.note}")


def bench_parser(prog: str) -> argparse.ArgumentParser:
    """The options every cluster benchmark takes."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--topology", default="h200")
    parser.add_argument("--workdir", default=None, help="where the operators' logs go")
    parser.add_argument("--json", default=None, help="write the rows here as JSON")
    return parser


def emit(rows: list[Row], json_path: str | None) -> None:
    """Print the table; write the rows as JSON too when asked."""
    print_table(rows)
    if json_path:
        Path(json_path).write_text(json.dumps([r.as_json() for r in rows], indent=2))


def run(args: argparse.Namespace) -> list[Row]:
    cluster = Cluster.up(args.topology)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mistral-bench-"))
    rows: list[Row] = []
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{names.CRD_NAME}")
    with (
        run_stub_hub() as hub,
        shared_kubelet(cluster, lambda: cluster.node_disks),
    ):
        serve_weights(hub)
        with bench_namespace(cluster, hub) as ns, operator(cluster, workdir / "op") as op:
            audit = AuditLog.of(cluster)
            converged, manifest = convergence(
                cluster, ns, hub, audit, replicas=args.replicas, rounds=args.rounds
            )
            rows += converged
            if args.wide_replicas:
                # The writes above the minimum are a few per convergence, not per group:
                # the same count at a larger size (its timing is not the figure here).
                wide, _ = convergence(
                    cluster, ns, hub, audit, replicas=args.wide_replicas, rounds=1
                )
                rows += [r for r in wide if r.figure.startswith("writes per convergence")]
            apply(cluster, ns, manifest)
            rows += idle(cluster, ns, audit, args.idle_seconds)
            cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=120s")
            gone(cluster, ns)
            rows += autoscaler_reaction(cluster, ns, hub, args.interval)
            cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=120s")
            op.assert_clean()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("python -m tests.bench.bench_cluster")
    parser.add_argument("--replicas", type=int, default=2, help="groups of the quick start")
    parser.add_argument("--rounds", type=int, default=3, help="convergences timed")
    parser.add_argument(
        "--wide-replicas", type=int, default=8, help="groups of one more convergence (0: none)"
    )
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=2, help="the autoscaler's interval")
    args = parser.parse_args(argv)
    emit(run(args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
