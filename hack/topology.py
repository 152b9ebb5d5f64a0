"""Renders a topology file from hack/topologies/ into simulated Node objects (a v1 List).

Each GPU node looks as NVIDIA GPU feature discovery and a topology labeller
would label a real HGX node, carries the GPU taint of a real GPU pool, and gets
a loopback podCIDR so that pods on it receive 127.x addresses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

TOPOLOGY_LABEL = "sim.mistral-operator.dev/topology"
BLOCK_LABEL = "network.topology.nvidia.com/block"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def render_nodes(topology: dict[str, Any]) -> list[dict[str, Any]]:
    name = topology["name"]
    nodes: list[dict[str, Any]] = []
    for pool in topology["pools"]:
        count = int(pool["count"])
        blocks = int(pool.get("blocks", 1))
        per_block = -(-count // blocks)
        for i in range(count):
            index = len(nodes)
            nodes.append(render_node(name, pool, i, index, i // per_block))
    return nodes


def render_node(
    topology: str, pool: dict[str, Any], i: int, index: int, block: int
) -> dict[str, Any]:
    node_name = f"{pool['namePrefix']}-{i}"
    labels = {
        "kubernetes.io/hostname": node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": pool["instanceType"],
        "type": "kwok",
        TOPOLOGY_LABEL: topology,
    }
    allocatable = {
        "cpu": str(pool["cpu"]),
        "memory": str(pool["memory"]),
        "pods": "110",
        "ephemeral-storage": "10Ti",
    }
    taints: list[dict[str, str]] = []
    gpu = pool.get("gpu")
    if gpu:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": gpu["product"],
            "nvidia.com/gpu.count": str(gpu["count"]),
            "nvidia.com/gpu.memory": str(gpu["memoryMiB"]),
            "nvidia.com/gpu.family": gpu["family"],
            BLOCK_LABEL: f"block-{chr(ord('a') + block)}",
        }
        allocatable["nvidia.com/gpu"] = str(gpu["count"])
        taints.append(dict(GPU_TAINT))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node_name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {
            # Pod IPs 127.10.<index>.x; node InternalIP 127.11.<index>.1.
            "podCIDR": f"127.10.{index}.0/24",
            "podCIDRs": [f"127.10.{index}.0/24"],
            "taints": taints,
        },
        "status": {
            "allocatable": allocatable,
            "capacity": allocatable,
            "addresses": [
                {"type": "InternalIP", "address": f"127.11.{index}.1"},
                {"type": "Hostname", "address": node_name},
            ],
        },
    }


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: topology.py TOPOLOGY_FILE", file=sys.stderr)
        return 2
    topology = yaml.safe_load(Path(sys.argv[1]).read_text())
    json.dump({"apiVersion": "v1", "kind": "List", "items": render_nodes(topology)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
