"""Builders for pure reconcile tests: simulated inventories, observed snapshots, examples."""

from __future__ import annotations

import copy
import importlib.util
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.cachefill.codes import ExitCode
from mistral_operator.cachefill.result import FillResult
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.errors import SpecError
from mistral_operator.core.inventory import GpuNode, build_inventory, pinned_node
from mistral_operator.core.parallelism import plan_shape
from mistral_operator.core.reconcile import Observed, Plan, plan_reconcile
from mistral_operator.core.render import ModelRef, resolve_weights
from mistral_operator.core.sglang_metrics import GroupSample

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BLOCK = "network.topology.nvidia.com/block"
# spec.parallelism of the quick start spread over 2 nodes: a group of two pods (a leader
# and a worker), for tests of what a group with several ranks does.
MULTI_NODE = {"shape": "MultiNode", "nodesPerReplica": 2}


def _topology_module() -> Any:
    spec = importlib.util.spec_from_file_location("hack_topology", REPO / "hack" / "topology.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def topology_nodes(name: str) -> list[dict[str, Any]]:
    """The simulated nodes of hack/topologies/<name>.yaml, Ready."""
    topology = yaml.safe_load((REPO / "hack" / "topologies" / f"{name}.yaml").read_text())
    nodes: list[dict[str, Any]] = _topology_module().render_nodes(topology)
    for node in nodes:
        node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return nodes


def inventory(name: str = "h200", pods: list[dict[str, Any]] | None = None) -> dict[str, GpuNode]:
    return build_inventory(topology_nodes(name), pods or [])


def cache_key_of(spec: dict[str, Any]) -> str | None:
    """The cache key a spec's pods read, or None for a spec the operator refuses."""
    try:
        parsed = MistralModelSpec.model_validate(spec)
        return resolve_weights(parsed, plan_shape(parsed)).key
    except (ValidationError, SpecError):
        return None


def warmed(inv: dict[str, GpuNode], spec: dict[str, Any]) -> dict[str, GpuNode]:
    """Every node with a Ready weight cache for ``spec``'s key, as fills leave them."""
    key = cache_key_of(spec)
    if key is None:
        return inv
    label = {L.node_cache_label(key): "Ready"}
    return {name: replace(node, labels={**node.labels, **label}) for name, node in inv.items()}


def warm_claims(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A SharedPVC spec's claim, bound and Ready for its key, as a fill leaves it."""
    key = cache_key_of(spec)
    claim = ((spec.get("cache") or {}).get("pvc") or {}).get("claimName")
    if key is None or claim is None:
        return {}
    return {claim: claim_object(claim, {L.node_cache_label(key): "Ready"})}


def claim_object(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A bound PersistentVolumeClaim as the shell shows it to the core."""
    return {
        "metadata": {"name": name, "namespace": "serving", "labels": labels or {}},
        "status": {"phase": "Bound"},
    }


def example(name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    return manifest


def observed(
    spec: dict[str, Any],
    *,
    topology: str = "h200",
    pods: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
    now: datetime = NOW,
    inv: dict[str, GpuNode] | None = None,
    warm: bool = True,
    drain_load: dict[str, int | None] | None = None,
    revisions: list[dict[str, Any]] | None = None,
    samples: dict[str, GroupSample] | None = None,
    managed_fields: list[dict[str, Any]] | None = None,
) -> Observed:
    """A snapshot; with ``warm``, every node (or a SharedPVC spec's claim) already holds the
    spec's weights (the cache tests pass ``warm=False`` and show the fills)."""
    nodes = inv if inv is not None else inventory(topology, pods)
    return Observed(
        model=ModelRef("mistral-small-4", "serving", "0000-uid"),
        generation=1,
        spec=spec,
        status=status or {},
        pods=pods or [],
        services=[],
        inventory=warmed(nodes, spec) if warm else nodes,
        now=now,
        claims=warm_claims(spec) if warm else {},
        samples={g: sample(n, now) for g, n in (drain_load or {}).items()} | (samples or {}),
        managed_fields=managed_fields or [],
        revisions=revisions or [],
    )


def sample(in_flight: int | None, at: datetime = NOW, queued: int = 0) -> GroupSample:
    """A group's gauges as read at ``at``: ``in_flight`` running (None: unreadable)."""
    if in_flight is None:
        return GroupSample(at, None, None, error="http://127.0.0.1:30000/metrics: timeout")
    return GroupSample(at, queued, in_flight)


def idle_drains(status: dict[str, Any]) -> dict[str, int | None]:
    """Every draining group's leader reports no request in flight."""
    return {g["name"]: 0 for g in status.get("groups") or [] if g.get("state") == "Draining"}


def kept_revisions(revisions: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """The ControllerRevisions after ``plan`` ran: applied ones in, deleted ones out."""
    by_name = {r["metadata"]["name"]: r for r in revisions}
    for obj in plan.apply:
        if obj["kind"] == "ControllerRevision":
            by_name[obj["metadata"]["name"]] = obj
    for gone in plan.delete:
        if gone.kind == "ControllerRevision":
            by_name.pop(gone.name, None)
    return list(by_name.values())


def as_running(pod: dict[str, Any], *, ready: bool = True) -> dict[str, Any]:
    """A rendered pod as the API server and kubelet would show it once it runs."""
    out = dict(pod)
    node = pinned_node(pod)
    out["metadata"] = dict(pod["metadata"]) | {"uid": f"uid-{pod['metadata']['name']}"}
    out["spec"] = dict(pod["spec"]) | {"nodeName": node}
    out["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"name": "sglang", "restartCount": 0, "state": {"running": {}}}],
    }
    return out


def pods_of(plan: Plan) -> list[dict[str, Any]]:
    return [o for o in plan.apply if o["kind"] == "Pod"]


def converge(
    s: dict[str, Any], rounds: int = 3, inv: dict[str, GpuNode] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run reconcile as the cluster would: created pods start running, status is stored."""
    pods: list[dict[str, Any]] = []
    status: dict[str, Any] = {}
    for _ in range(rounds):
        # Draining leaders of earlier rounds are idle by now.
        plan = plan_reconcile(
            observed(s, pods=pods, status=status, inv=inv, drain_load=idle_drains(status))
        )
        deleted = {d.name for d in plan.delete}
        pods = [p for p in pods if p["metadata"]["name"] not in deleted]
        pods += [as_running(p) for p in pods_of(plan)]
        for name, labels in plan.label:
            pod = next(p for p in pods if p["metadata"]["name"] == name)
            pod["metadata"]["labels"] = {
                k: v for k, v in (pod["metadata"]["labels"] | labels).items() if v is not None
            }
        status = plan.status
    return pods, status


def multinode_spec(replicas: int = 1, **extra: Any) -> dict[str, Any]:
    """The quick start as MultiNode groups of two pods (leader and worker), one block each."""
    s: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    s["replicas"] = replicas
    s["placement"] = {"topologyKey": BLOCK}
    s["parallelism"] = dict(MULTI_NODE)
    s.update(extra)
    return s


def cond(plan: Plan, type_: str) -> dict[str, Any]:
    """One condition of a plan's status."""
    return next(c for c in plan.status["conditions"] if c["type"] == type_)


def jobs_of(plan: Plan) -> list[dict[str, Any]]:
    return [o for o in plan.apply if o["kind"] == "Job"]


def as_job(rendered: dict[str, Any], **status: Any) -> dict[str, Any]:
    job = copy.deepcopy(rendered)
    job["metadata"]["uid"] = f"uid-{job['metadata']['name']}"
    job["status"] = status
    return job


def job_pod(job: dict[str, Any], n: int, state: dict[str, Any]) -> dict[str, Any]:
    """The n-th pod of a fill Job, with its container in ``state``."""
    return {
        "metadata": {
            "name": f"{job['metadata']['name']}-{n}",
            "namespace": "serving",
            "creationTimestamp": f"2026-06-01T11:5{n}:00Z",
            "labels": job["spec"]["template"]["metadata"]["labels"],
            "ownerReferences": [{"kind": "Job", "uid": job["metadata"]["uid"]}],
        },
        "status": {"containerStatuses": [{"name": "fill", "state": state}]},
    }


def failed_result(code: ExitCode, message: str, file: str | None = None) -> str:
    """A failed fill's termination message, as the fill program writes it."""
    return FillResult.failed(code, message, file=file, done_bytes=10, total_bytes=100).render()


def ready_result(total_bytes: int, seconds: float) -> str:
    """A finished fill's termination message: it fetched all ``total_bytes`` in ``seconds``."""
    return FillResult.succeeded(
        commit="c" * 40,
        total_bytes=total_bytes,
        files=3,
        fetched_bytes=total_bytes,
        seconds=seconds,
        disk_free_bytes=10**12,
        disk_total_bytes=2 * 10**12,
    ).render()


@dataclass
class Cluster:
    """The reconcile's world, moved forward by each plan as the API server would."""

    spec: dict[str, Any]
    now: datetime = NOW
    pods: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    revisions: list[dict[str, Any]] = field(default_factory=list)
    load: dict[str, int | None] = field(default_factory=dict)
    inv: dict[str, GpuNode] | None = None
    new_pods_ready: bool = True
    samples: dict[str, GroupSample] = field(default_factory=dict)
    managed_fields: list[dict[str, Any]] = field(default_factory=list)

    def step(self, **changes: Any) -> Plan:
        for key, value in changes.items():
            setattr(self, key, value)
        plan = plan_reconcile(
            observed(
                self.spec,
                pods=self.pods,
                status=self.status,
                now=self.now,
                inv=self.inv,
                warm=self.inv is None,
                drain_load=self.load,
                samples=self.samples,
                managed_fields=self.managed_fields,
                revisions=self.revisions,
            )
        )
        deleted = {d.name for d in plan.delete}
        self.pods = [p for p in self.pods if p["metadata"]["name"] not in deleted]
        self.pods += [as_running(p, ready=self.new_pods_ready) for p in pods_of(plan)]
        for name, labels in plan.label:
            pod = next(p for p in self.pods if p["metadata"]["name"] == name)
            merged = pod["metadata"]["labels"] | labels
            pod["metadata"]["labels"] = {k: v for k, v in merged.items() if v is not None}
        self.revisions = kept_revisions(self.revisions, plan)
        self.status = plan.status
        return plan

    def settle(self, rounds: int = 8) -> Plan:
        """Reconcile until nothing changes, with every draining leader idle."""
        for _ in range(rounds):
            plan = self.step(load=self.idle())
        return plan

    def idle(self) -> dict[str, int | None]:
        return {g: 0 for g, s in self.groups().items() if s == "Draining"} if self.status else {}

    def groups(self) -> dict[str, str]:
        return {g["name"]: g["state"] for g in self.status["groups"]}

    def serving(self) -> set[str]:
        return {
            p["metadata"]["labels"][L.GROUP]
            for p in self.pods
            if p["metadata"]["labels"].get(L.SERVING) == "true" and p["status"].get("phase")
        }
