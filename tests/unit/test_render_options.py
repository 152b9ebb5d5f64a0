"""Rendering of the spec options the examples do not exercise: host network, RDMA, cache modes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core.errors import SpecError
from mistral_operator.core.inventory import pinned_node
from mistral_operator.core.parallelism import plan_shape
from mistral_operator.core.reconcile import plan_reconcile
from mistral_operator.core.render import resolve_weights
from tests.support.sglang_args import parse_sglang_command
from tests.unit.reconcile_fixtures import example, inventory, observed, pods_of


def spec(**changes: Any) -> dict[str, Any]:
    s: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    s.update(changes)
    return s


def leader(s: dict[str, Any]) -> dict[str, Any]:
    plan = plan_reconcile(observed(s))
    assert plan.status["phase"] != "Failed", plan.status.get("conditions")
    return next(p for p in pods_of(plan) if p["metadata"]["name"].endswith("-0"))


def args_of(pod: dict[str, Any]) -> list[str]:
    return list(pod["spec"]["containers"][0]["args"])


def test_host_network_uses_the_leader_nodes_internal_ip() -> None:
    pod = leader(spec(placement={"hostNetwork": True}))
    assert pod["spec"]["hostNetwork"] is True
    assert pod["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"
    node = pinned_node(pod)
    assert node is not None
    args = args_of(pod)
    assert args[args.index("--dist-init-addr") + 1] == f"{inventory()[node].internal_ip}:20000"


def test_rdma_options_become_env_capabilities_and_device_requests() -> None:
    pod = leader(
        spec(
            placement={
                "rdma": {
                    "socketInterface": "eth0",
                    "ibHca": "mlx5_0,mlx5_1",
                    "resources": {"rdma/ib": 8},
                    "env": {"NCCL_IB_GID_INDEX": "3"},
                }
            }
        )
    )
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "NCCL_SOCKET_IFNAME": "eth0",
        "GLOO_SOCKET_IFNAME": "eth0",
        "NCCL_IB_HCA": "mlx5_0,mlx5_1",
        "NCCL_IB_GID_INDEX": "3",
    }
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert container["resources"]["limits"]["rdma/ib"] == "8"


def test_without_a_cache_pods_read_the_hub_at_the_pinned_revision_with_the_token() -> None:
    pod = leader(
        spec(
            cache={"mode": "None"},
            model={
                "profile": "mistral-small-4-119b",
                "revision": "0123456789abcdef0123456789abcdef01234567",
                "credentialsSecretRef": {"name": "hf-token"},
            },
        )
    )
    container = pod["spec"]["containers"][0]
    args = args_of(pod)
    assert args[args.index("--model-path") + 1] == "mistralai/Mistral-Small-4-119B-2603"
    assert args[args.index("--revision") + 1] == "0123456789abcdef0123456789abcdef01234567"
    assert "--model-config-parser" not in args  # the repository name tells SGLang the format
    assert container["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"dshm"}
    parse_sglang_command([*container["command"], *args], allow_abbrev=False)


def test_an_s3_source_without_a_cache_is_refused_naming_the_field() -> None:
    s = MistralModelSpec.model_validate(
        spec(
            cache={"mode": "None"},
            model={"source": "s3://weights/mistral-small-4", "revision": "v1"},
        )
    )
    with pytest.raises(SpecError) as err:
        resolve_weights(s, plan_shape(s))
    assert err.value.field == "spec.cache.mode"
    plan = plan_reconcile(
        observed(
            spec(
                cache={"mode": "None"},
                model={"source": "s3://weights/mistral-small-4", "revision": "v1"},
            )
        )
    )
    assert plan.apply == []
    degraded = next(c for c in plan.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "spec.cache.mode" in degraded["message"]


def test_fp8_quantization_and_extra_args_are_rendered_on_every_rank() -> None:
    plan = plan_reconcile(
        observed(
            spec(
                model={"quantization": "fp8"},
                runtime={"extraArgs": ["--mem-fraction-static", "0.85"]},
            )
        )
    )
    for pod in pods_of(plan):
        args = args_of(pod)
        assert args[args.index("--quantization") + 1] == "fp8"
        assert args[-2:] == ["--mem-fraction-static", "0.85"]
