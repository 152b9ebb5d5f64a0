"""The simulated-node topologies render into distinct, well-formed HGX nodes."""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
import yaml

HACK = Path(__file__).resolve().parents[2] / "hack"
TOPOLOGY_FILES = sorted((HACK / "topologies").glob("*.yaml"))


def load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hack_topology", HACK / "topology.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


renderer = load_renderer()


def test_the_required_topologies_exist() -> None:
    assert {p.stem for p in TOPOLOGY_FILES} >= {"h200", "h100", "b200"}


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
def test_topology_renders_distinct_nodes(path: Path) -> None:
    topology = yaml.safe_load(path.read_text())
    nodes = renderer.render_nodes(topology)
    names = [n["metadata"]["name"] for n in nodes]
    assert len(names) == len(set(names))
    cidrs = [ipaddress.ip_network(n["spec"]["podCIDR"]) for n in nodes]
    assert all(c.network_address.is_loopback for c in cidrs)
    assert not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])
    internal = [n["status"]["addresses"][0]["address"] for n in nodes]
    assert len(set(internal)) == len(internal)
    assert not any(ipaddress.ip_address(ip) in c for ip in internal for c in cidrs)
    assert sum(1 for n in nodes if "nvidia.com/gpu" not in n["status"]["allocatable"]) >= 1


@pytest.mark.parametrize(
    ("name", "product", "gpu_nodes", "blocks"),
    [
        ("h200", "NVIDIA-H200", 4, 2),
        ("h100", "NVIDIA-H100-80GB-HBM3", 8, 2),
        ("b200", "NVIDIA-B200", 2, 1),
    ],
)
def test_gpu_nodes_split_evenly_into_blocks(
    name: str, product: str, gpu_nodes: int, blocks: int
) -> None:
    topology = yaml.safe_load((HACK / "topologies" / f"{name}.yaml").read_text())
    gpu = [
        n for n in renderer.render_nodes(topology) if "nvidia.com/gpu" in n["status"]["allocatable"]
    ]
    assert len(gpu) == gpu_nodes
    assert {n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in gpu} == {product}
    per_block = Counter(n["metadata"]["labels"][renderer.BLOCK_LABEL] for n in gpu)
    assert len(per_block) == blocks
    assert set(per_block.values()) == {gpu_nodes // blocks}
    for node in gpu:
        assert node["spec"]["taints"] == [renderer.GPU_TAINT]
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
