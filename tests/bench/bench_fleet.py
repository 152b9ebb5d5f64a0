"""`make bench` at fleet size: 500 simulated 8-GPU nodes and 100 MistralModels.

Adds the nodes to the local cluster (kwok-managed, in leaf blocks of 16), applies 100
one-group models at once and measures until every model is Ready: the time, the
operator's CPU and peak RSS, and its reconcile latency (p50/p99, from its own histogram);
then one node flapping (NotReady and back): the reconciles and API writes it causes.
Everything it adds is removed at the end.

Run: `python -m tests.bench.bench_fleet [--nodes N] [--models M]` with the cluster up.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.bench_cluster import (
    CRD_PATH,
    OPERATOR_USER,
    PREFIX,
    Row,
    bench_parser,
    emit,
    is_ready,
)
from tests.support.audit import WRITE_VERBS, AuditLog
from tests.support.cluster import Cluster
from tests.support.models import quickstart
from tests.support.nodes import (
    NODE_HEALTH_ANNOTATION,
    get_node,
    healthy,
    kwok_node,
    ready_status,
    revive_kubelet,
    with_h200_gpus,
)
from tests.support.operator import RunningOperator, install_chart, run_operator
from tests.support.wait import wait_for

BLOCK_LABEL = "network.topology.nvidia.com/block"
FLEET_LABEL = "bench.mistral-operator.dev/fleet"
BLOCK_SIZE = 16
IDLE_SECONDS = 30


def fleet_node(name: str, index: int) -> dict[str, Any]:
    resources = {"cpu": "192", "memory": "2Ti", "pods": "110"}
    cidr = f"127.{20 + index // 256}.{index % 256}.0/24"
    ip = f"127.19.{index // 250}.{index % 250 + 1}"
    node = with_h200_gpus(
        kwok_node(name, resources, cidr=cidr, ip=ip), 8, f"fleet-{index // BLOCK_SIZE}"
    )
    node["metadata"]["labels"][FLEET_LABEL] = "true"
    return node


def settled(node: dict[str, Any]) -> bool:
    return healthy(node) and "beta.kubernetes.io/os" in node["metadata"]["labels"]


def fleet_model(index: int) -> dict[str, Any]:
    manifest = quickstart(1)
    manifest["metadata"]["name"] = f"m-{index:03d}"
    manifest["spec"]["placement"] = {"topologyKey": BLOCK_LABEL}
    manifest["spec"]["cache"] = {"mode": "None"}  # the operator's own cost, not the fills'
    manifest["spec"]["model"].pop("credentialsSecretRef", None)
    return manifest


def models_ready(cluster: Cluster, ns: str) -> int:
    return sum(is_ready(m) for m in cluster.get_json("mm", "-n", ns)["items"])


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def proc_peak_rss_mb(pid: int) -> float:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def histogram(metrics: str, name: str) -> dict[float, float]:
    buckets = {}
    for le, count in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', metrics, re.MULTILINE):
        buckets[float(le)] = float(count)
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of what a histogram observed between two readings (linear within
    the bucket; the top bucket's lower bound when it falls in +Inf)."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = delta[-1][1]
    if total <= 0:
        return 0.0
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if le == float("inf"):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (le - lower) * share
        lower, below = le, count
    return lower


def reconciles(metrics: str) -> float:
    return sum(
        float(v)
        for v in re.findall(r"^mistral_operator_reconciles_total{[^}]*} (\S+)$", metrics, re.M)
    )


@dataclass(frozen=True)
class Fleet:
    namespace: str  # the models'
    nodes: frozenset[str]


def flap(
    cluster: Cluster, op: RunningOperator, audit: AuditLog, node: str, fleet: Fleet
) -> tuple[float, int]:
    """One node NotReady and back: reconciles and operator writes to the fleet meanwhile
    (the cache GC's periodic marks of the cluster's other nodes are not the flap's)."""
    before = reconciles(op.metrics())
    audit.mark()
    cluster.kubectl("annotate", "node", node, f"{NODE_HEALTH_ANNOTATION}=NotReady", "--overwrite")
    wait_for(lambda: ready_status(get_node(cluster, node) or {}) == "False", timeout=60,
             what=f"{node} NotReady")  # fmt: skip
    revive_kubelet(cluster, node)
    time.sleep(5)  # what the flap sets off lands within a few seconds; count that too
    writes = [r for r in audit.requests(user=OPERATOR_USER) if r["verb"] in WRITE_VERBS]
    ours = [w for w in writes if w["namespace"] == fleet.namespace or w["name"] in fleet.nodes]
    return reconciles(op.metrics()) - before, len(ours)


def run(args: argparse.Namespace) -> list[Row]:
    cluster = Cluster.up(args.topology)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    install_chart(cluster, "--set", "installCRDs=false")
    names = [f"fleet-{i:03d}" for i in range(args.nodes)]
    ns = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mistral-bench-fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    items = [fleet_node(n, i) for i, n in enumerate(names)]
    nodes = {"apiVersion": "v1", "kind": "List", "items": items}
    cluster.kubectl("create", "-f", "-", input=json.dumps(nodes), timeout=300)
    try:
        # Ready, and done with by the node controllers (their taints lifted, their labels
        # added): until then every node changes a few times, which is not the idle fleet.
        wait_for(lambda: sum(settled(n) for n in cluster.get_json(
            "nodes", "-l", FLEET_LABEL)["items"]) == args.nodes, timeout=600,
            what=f"{args.nodes} fleet nodes Ready and settled")  # fmt: skip
        cluster.kubectl("create", "namespace", ns)
        # The chart's node grace (40 s): a short flap recreates nothing.
        with run_operator(cluster, workdir, namespaces=(f"{PREFIX}*",), node_grace_seconds=40,
                          drift_interval_seconds=60, webhook_check_seconds=300) as op:  # fmt: skip
            pid = op.process.pid
            audit = AuditLog.of(cluster)
            cpu0, hist0 = proc_cpu_seconds(pid), histogram(op.metrics(), HIST)
            models = {"apiVersion": "v1", "kind": "List",
                      "items": [fleet_model(i) for i in range(args.models)]}  # fmt: skip
            began = time.monotonic()
            cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(models))
            wait_for(lambda: models_ready(cluster, ns) == args.models, timeout=600,
                     what=f"{args.models} models Ready", interval=0.5)  # fmt: skip
            converged = time.monotonic() - began
            cpu = proc_cpu_seconds(pid) - cpu0
            hist1 = histogram(op.metrics(), HIST)
            rss = proc_peak_rss_mb(pid)
            busy = cluster.get_json("pods", "-n", ns)["items"][0]["spec"]["nodeName"]
            idle_node = next(n for n in names if n != busy and not cluster.get_json(
                "pods", "-A", "--field-selector", f"spec.nodeName={n}")["items"])  # fmt: skip
            quiet_before = reconciles(op.metrics())
            time.sleep(IDLE_SECONDS)  # nothing changes: what the fleet's own churn costs
            quiet = (reconciles(op.metrics()) - quiet_before) * 60 / IDLE_SECONDS
            fleet = Fleet(ns, frozenset(names))
            busy_reconciles, busy_writes = flap(cluster, op, audit, busy, fleet)
            idle_reconciles, idle_writes = flap(cluster, op, audit, idle_node, fleet)
            op.assert_clean()
        label = f"{args.nodes} nodes x {args.models} models"
        return [
            Row("fleet", f"{label}: apply to all Ready", converged, "s", goal=60),
            Row("fleet", "operator peak RSS", rss, "MB", goal=200),
            Row("fleet", "operator CPU during convergence", cpu, "s"),
            Row("fleet", "reconcile latency p50", quantile(hist0, hist1, 0.5), "s"),
            Row("fleet", "reconcile latency p99", quantile(hist0, hist1, 0.99), "s"),
            Row("fleet", "reconciles per minute, nothing changing", quiet, ""),
            Row("fleet", "a node with a group flaps: reconciles", busy_reconciles, ""),
            Row("fleet", "a node with a group flaps: writes", busy_writes, ""),
            Row("fleet", "an empty node flaps: reconciles", idle_reconciles, ""),
            Row("fleet", "an empty node flaps: writes", idle_writes, "", goal=0),
        ]
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "nodes", "-l", FLEET_LABEL, "--wait=false", check=False,
                        timeout=300)  # fmt: skip


HIST = "mistral_operator_reconcile_duration_seconds"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("python -m tests.bench.bench_fleet")
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--models", type=int, default=100)
    args = parser.parse_args(argv)
    emit(run(args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
