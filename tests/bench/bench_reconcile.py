"""`make bench`: how the pure reconcile decision scales with cluster and model size.

Each case is timed against a baseline measured in the same run (one replica on the
4-node H200 topology), and reported as a ratio, so the figures compare across
machines. Run: `python -m tests.bench.bench_reconcile`.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mistral_operator.core.inventory import build_inventory
from mistral_operator.core.reconcile import plan_reconcile
from tests.unit.reconcile_fixtures import BLOCK, converge, example, observed


def hgx_cluster(nodes: int, blocks: int) -> list[dict[str, Any]]:
    """A synthetic fleet of 8-GPU H100 nodes split evenly into leaf blocks."""
    per_block = nodes // blocks
    return [
        {
            "metadata": {
                "name": f"h100-{i}",
                "labels": {
                    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                    BLOCK: f"block-{i // per_block}",
                },
            },
            "spec": {
                "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
            },
            "status": {
                "allocatable": {"nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [
                    {"type": "InternalIP", "address": f"127.12.{i // 250}.{i % 250 + 1}"}
                ],
            },
        }
        for i in range(nodes)
    ]


def model_spec(replicas: int, gpu: str) -> dict[str, Any]:
    spec: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    spec["replicas"] = replicas
    spec["gpu"] = {"product": gpu}
    spec["placement"] = {"topologyKey": BLOCK}
    return spec


def steady_state(spec: dict[str, Any], nodes: list[dict[str, Any]]) -> Callable[[], object]:
    """A reconcile of a model whose groups all run: the common, periodic case."""
    pods, status = converge(spec, inv=build_inventory(nodes, []))
    inventory = build_inventory(nodes, pods)
    # Only a fully placed, converged model measures the steady state.
    assert status["readyReplicas"] == spec["replicas"], status.get("conditions")
    again = plan_reconcile(observed(spec, pods=pods, status=status, inv=inventory))
    assert again.pod_writes == 0
    return lambda: plan_reconcile(observed(spec, pods=pods, status=status, inv=inventory))


def cold_start(spec: dict[str, Any], nodes: list[dict[str, Any]]) -> Callable[[], object]:
    """The first reconcile: every group placed and rendered."""
    inventory = build_inventory(nodes, [])
    return lambda: plan_reconcile(observed(spec, inv=inventory))


def median_seconds(fn: Callable[[], object], rounds: int = 15) -> float:
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_reconcile")
    parser.add_argument("--json", default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    small = hgx_cluster(4, 1)
    cases = {
        "baseline: 1 group, 4 nodes (steady)": steady_state(model_spec(1, "H100"), small),
        "16 groups, 64 nodes (steady)": steady_state(model_spec(16, "H100"), hgx_cluster(64, 8)),
        "64 groups, 256 nodes (steady)": steady_state(model_spec(64, "H100"), hgx_cluster(256, 16)),
        "64 groups, 256 nodes (cold start)": cold_start(
            model_spec(64, "H100"), hgx_cluster(256, 16)
        ),
        "1 group, 1024 nodes (cold start)": cold_start(
            model_spec(1, "H100"), hgx_cluster(1024, 64)
        ),
    }
    baseline = None
    rows = []
    print(f"{'case':42} {'median ms':>10} {'x baseline':>11}")
    for name, fn in cases.items():
        seconds = median_seconds(fn)
        baseline = baseline or seconds
        print(f"{name:42} {seconds * 1000:10.2f} {seconds / baseline:11.1f}")
        rows.append({"area": "decision", "figure": name, "unit": "ms", "value": seconds * 1000,
                     "baseline": baseline * 1000, "goal": None, "note": ""})  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
