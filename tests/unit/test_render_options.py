"""Rendering of the spec options the examples do not exercise: each one changes the pods."""

from __future__ import annotations

import copy
from typing import Any
from unittest.mock import patch

import pytest
from pydantic import ValidationError

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.catalogue.profiles import gpu_profile, model_profile
from mistral_operator.core.errors import SpecError
from mistral_operator.core.inventory import GpuNode, build_inventory, pinned_node
from mistral_operator.core.parallelism import plan_shape
from mistral_operator.core.reconcile import plan_reconcile
from mistral_operator.core.render import resolve_weights
from mistral_operator.core.sizing import compact_gpus
from tests.support.sglang_args import parse_sglang_command
from tests.unit.reconcile_fixtures import (
    MULTI_NODE,
    example,
    inventory,
    observed,
    pods_of,
    topology_nodes,
)


def spec(**changes: Any) -> dict[str, Any]:
    s: dict[str, Any] = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    s.update(changes)
    return s


def multi(**changes: Any) -> dict[str, Any]:
    """The quick start as a group of two pods (leader and worker) on two nodes."""
    return spec(**{"parallelism": dict(MULTI_NODE), **changes})


def leader(s: dict[str, Any]) -> dict[str, Any]:
    plan = plan_reconcile(observed(s))
    assert plan.status["phase"] != "Failed", plan.status.get("conditions")
    return next(p for p in pods_of(plan) if p["metadata"]["name"].endswith("-0"))


def args_of(pod: dict[str, Any]) -> list[str]:
    return list(pod["spec"]["containers"][0]["args"])


def flag(pod: dict[str, Any], name: str) -> str:
    args = args_of(pod)
    return args[args.index(name) + 1]


def container_of(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


def volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)


def test_host_network_uses_the_leader_nodes_internal_ip() -> None:
    pods = pods_of(plan_reconcile(observed(multi(placement={"hostNetwork": True}))))
    assert len(pods) == 2
    node = pinned_node(pods[0])
    assert node is not None
    for pod in pods:
        assert pod["spec"]["hostNetwork"] is True
        assert pod["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert flag(pod, "--dist-init-addr") == f"{inventory()[node].internal_ip}:20000"


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
        "HF_HUB_OFFLINE": "1",
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
    raw = spec(
        cache={"mode": "None"},
        model={"source": "s3://weights/mistral-small-4", "revision": "v1"},
    )
    with pytest.raises(ValidationError, match=r"cache\.mode None serves only hf:// and pvc://"):
        MistralModelSpec.model_validate(raw)
    # A spec stored before the admission rule existed: the renderer refuses it as well.
    with patch.object(MistralModelSpec, "cel_rules", ()):
        s = MistralModelSpec.model_validate(raw)
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
            multi(
                model={"quantization": "fp8"},
                runtime={"extraArgs": ["--mem-fraction-static", "0.85"]},
            )
        )
    )
    assert len(pods_of(plan)) == 2
    for pod in pods_of(plan):
        args = args_of(pod)
        assert args[args.index("--quantization") + 1] == "fp8"
        assert args[-2:] == ["--mem-fraction-static", "0.85"]


def test_image_pull_policy_and_pull_secrets_reach_every_pod() -> None:
    s = multi(
        runtime={
            "image": "registry.example.com/sglang:v0.5.23-cu129",
            "imagePullPolicy": "Always",
            "imagePullSecrets": [{"name": "registry-creds"}],
        }
    )
    pods = pods_of(plan_reconcile(observed(s)))
    assert len(pods) == 2
    for pod in pods:
        assert container_of(pod)["image"] == "registry.example.com/sglang:v0.5.23-cu129"
        assert container_of(pod)["imagePullPolicy"] == "Always"
        assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-creds"}]


def test_env_values_and_references_are_passed_as_written() -> None:
    env = [
        {"name": "NCCL_DEBUG", "value": "INFO"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        {"name": "TUNING", "valueFrom": {"configMapKeyRef": {"name": "sglang", "key": "tuning"}}},
    ]
    pod = leader(spec(runtime={"env": env}))
    # The weights are local (cache.mode NodeLocal): the Hub is never reached from a pod.
    assert container_of(pod)["env"] == [{"name": "HF_HUB_OFFLINE", "value": "1"}, *env]
    uncached = leader(spec(runtime={"env": env}, cache={"mode": "None"}))
    assert container_of(uncached)["env"] == env


def test_resource_requests_and_limits_are_added_to_the_gpus() -> None:
    pod = leader(
        spec(
            runtime={
                "resources": {
                    "requests": {"cpu": 32, "memory": "512Gi"},
                    "limits": {"cpu": "48", "memory": "640Gi"},
                }
            }
        )
    )
    assert container_of(pod)["resources"] == {
        "requests": {"cpu": 32, "memory": "512Gi"},
        "limits": {"nvidia.com/gpu": "2", "cpu": "48", "memory": "640Gi"},
    }
    whole = leader(multi(runtime={"resources": {"limits": {"cpu": "48"}}}))
    assert container_of(whole)["resources"] == {"limits": {"nvidia.com/gpu": "8", "cpu": "48"}}


def test_shm_size_limits_the_shared_memory_volume() -> None:
    assert "sizeLimit" not in volume(leader(spec()), "dshm")["emptyDir"]
    pod = leader(spec(runtime={"shmSize": "64Gi"}))
    assert volume(pod, "dshm")["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}


def test_startup_timeout_is_the_startup_probe_budget() -> None:
    probe = container_of(leader(spec(runtime={"startupTimeoutSeconds": 600})))["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] == 600


def test_context_length_is_passed_to_sglang() -> None:
    assert flag(leader(spec(runtime={"contextLength": 65536})), "--context-length") == "65536"


def test_capabilities_turned_off_drop_their_parsers() -> None:
    pod = leader(spec(capabilities={"reasoning": False, "toolCalling": False}))
    assert "--reasoning-parser" not in args_of(pod)
    assert "--tool-call-parser" not in args_of(pod)
    on = leader(spec())
    assert flag(on, "--reasoning-parser") == "mistral"
    assert flag(on, "--tool-call-parser") == "mistral"


def test_profile_sets_the_served_name_context_and_group_shape() -> None:
    profile = model_profile("mixtral-8x7b")
    pods = pods_of(plan_reconcile(observed(spec(model={"profile": "mixtral-8x7b"}))))
    # Mixtral 8x7B (bf16, about 87 GiB, 32K context) fits one H200; Small 4 FP8 takes 2.
    sized = compact_gpus(profile, gpu_profile("H200"), "bf16", profile.max_context_length)
    assert sized is not None
    assert sized.gpus == 1
    assert len(pods) == 1
    assert container_of(pods[0])["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert flag(pods[0], "--tp-size") == "1"
    assert flag(pods[0], "--served-model-name") == profile.hf_repo.split("/")[-1]
    assert flag(pods[0], "--context-length") == str(profile.max_context_length)
    assert flag(leader(spec()), "--tp-size") == "2"


def test_served_name_is_what_clients_send() -> None:
    s = spec(model={"profile": "mistral-small-4-119b", "servedName": "small-4"})
    plan = plan_reconcile(observed(s))
    assert all(flag(p, "--served-model-name") == "small-4" for p in pods_of(plan))
    assert plan.status["endpoint"]["servedName"] == "small-4"


def test_gpu_product_picks_the_nodes_and_the_group_size() -> None:
    h100 = spec(gpu={"product": "H100"})
    pods = pods_of(plan_reconcile(observed(h100, topology="h100")))
    # Mistral Small 4 FP8 takes 2 H100 (or H200) GPUs, and 1 B200 GPU.
    assert len(pods) == 1
    assert (pinned_node(pods[0]) or "").startswith("h100-")
    assert container_of(pods[0])["resources"]["limits"]["nvidia.com/gpu"] == "2"
    nowhere = plan_reconcile(observed(h100, topology="h200"))
    assert pods_of(nowhere) == []
    schedulable = next(c for c in nowhere.status["conditions"] if c["type"] == "Schedulable")
    assert schedulable["status"] == "False"
    b200 = pods_of(plan_reconcile(observed(spec(gpu={"product": "B200"}), topology="b200")))
    assert [(pinned_node(p) or "")[:5] for p in b200] == ["b200-"]
    assert container_of(b200[0])["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert flag(b200[0], "--tp-size") == "1"


def test_gpus_per_node_sets_the_gpu_request_and_the_group_size() -> None:
    pods = pods_of(plan_reconcile(observed(multi(gpu={"product": "H200", "gpusPerNode": 4}))))
    # A MultiNode pod asks for gpusPerNode GPUs: 2 pods of 4 GPUs instead of 2 of 8.
    assert len(pods) == 2
    assert {container_of(p)["resources"]["limits"]["nvidia.com/gpu"] for p in pods} == {"4"}
    assert flag(pods[0], "--nnodes") == "2"
    assert flag(pods[0], "--tp-size") == "8"
    node = pods_of(
        plan_reconcile(
            observed(spec(gpu={"product": "H200", "gpusPerNode": 4}, parallelism={"shape": "Node"}))
        )
    )
    assert [container_of(p)["resources"]["limits"]["nvidia.com/gpu"] for p in node] == ["4"]
    assert flag(node[0], "--tp-size") == "4"
    # A Compact replica asks for what it needs, at most gpusPerNode: Small 4 needs 2 H200.
    compact = spec(gpu={"product": "H200", "gpusPerNode": 1})
    refused = plan_reconcile(observed(compact))
    assert pods_of(refused) == []
    degraded = next(c for c in refused.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "spec.parallelism.shape" in degraded["message"]
    assert "does not fit one node" in degraded["message"]


@pytest.mark.parametrize(
    ("parallelism", "flags", "nodes"),
    [
        pytest.param(
            {"shape": "MultiNode", "nodesPerReplica": 4},
            {"--nnodes": "4", "--tp-size": "32", "--ep-size": "32", "--attn-dp-size": "32"},
            4,
            id="nodesPerReplica",
        ),
        pytest.param(
            {"shape": "Compact", "tensorParallelSize": 4},
            {"--tp-size": "4"},
            1,
            id="tensorParallelSize",
        ),
        pytest.param(
            {"shape": "MultiNode", "tensorParallelSize": 8, "pipelineParallelSize": 2},
            {"--tp-size": "8", "--pp-size": "2", "--nnodes": "2"},
            2,
            id="pipelineParallelSize",
        ),
        pytest.param(
            {"shape": "MultiNode", "expertParallelSize": 4},
            {"--tp-size": "16", "--ep-size": "4"},
            2,
            id="expertParallelSize",
        ),
        pytest.param(
            {"shape": "MultiNode", "attentionDataParallelSize": 2},
            {"--attn-dp-size": "2", "--tp-size": "16"},
            2,
            id="attentionDataParallelSize",
        ),
        pytest.param(
            {"shape": "Node", "moeA2ABackend": "deepep"},
            {"--moe-a2a-backend": "deepep", "--ep-size": "8"},
            1,
            id="moeA2ABackend",
        ),
    ],
)
def test_parallelism_fields_become_sglang_flags(
    parallelism: dict[str, Any], flags: dict[str, str], nodes: int
) -> None:
    pods = pods_of(plan_reconcile(observed(spec(parallelism=parallelism))))
    assert len(pods) == nodes
    for name, value in flags.items():
        assert flag(pods[0], name) == value, name
    # Without the field the plan differs: each field changes the command.
    default = {k: v for k, v in parallelism.items() if k == "shape"}
    if default != parallelism:
        planned = pods_of(plan_reconcile(observed(spec(parallelism=default))))
        assert any(
            name not in args_of(planned[0]) or flag(planned[0], name) != value
            for name, value in flags.items()
        )
    container = container_of(pods[0])
    parse_sglang_command([*container["command"], *args_of(pods[0])], allow_abbrev=False)


def nodes_with(
    labels: dict[str, dict[str, str]], taints: list[dict[str, str]]
) -> dict[str, GpuNode]:
    """The h200 topology with extra labels on some nodes and the given taints on every GPU node."""
    nodes = topology_nodes("h200")
    for node in nodes:
        node["metadata"]["labels"] |= labels.get(node["metadata"]["name"], {})
        if "nvidia.com/gpu.product" in node["metadata"]["labels"]:
            node["spec"]["taints"] = [*node["spec"].get("taints", []), *taints]
    return build_inventory(nodes, [])


def test_node_selector_limits_the_nodes_groups_use() -> None:
    inv = nodes_with({"h200-2": {"pool": "serving"}, "h200-3": {"pool": "serving"}}, [])
    plan = plan_reconcile(observed(multi(placement={"nodeSelector": {"pool": "serving"}}), inv=inv))
    assert sorted(pinned_node(p) or "" for p in pods_of(plan)) == ["h200-2", "h200-3"]
    elsewhere = plan_reconcile(
        observed(multi(placement={"nodeSelector": {"pool": "batch"}}), inv=inv)
    )
    assert pods_of(elsewhere) == []
    schedulable = next(c for c in elsewhere.status["conditions"] if c["type"] == "Schedulable")
    assert schedulable["status"] == "False"


def test_tolerations_are_rendered_and_let_groups_onto_tainted_nodes() -> None:
    inv = nodes_with({}, [{"key": "dedicated", "value": "mistral", "effect": "NoSchedule"}])
    assert pods_of(plan_reconcile(observed(multi(), inv=inv))) == []
    tolerations = [
        {"key": "dedicated", "operator": "Equal", "value": "mistral", "effect": "NoSchedule"},
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 60,
        },
    ]
    pods = pods_of(plan_reconcile(observed(multi(placement={"tolerations": tolerations}), inv=inv)))
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["tolerations"][1:] == tolerations


def test_priority_class_is_set_on_every_pod() -> None:
    plan = plan_reconcile(observed(multi(placement={"priorityClassName": "serving-high"})))
    assert len(pods_of(plan)) == 2
    assert {p["spec"]["priorityClassName"] for p in pods_of(plan)} == {"serving-high"}
    assert "priorityClassName" not in leader(spec())["spec"]


def test_rdma_without_ipc_lock_adds_no_capability() -> None:
    pod = leader(spec(placement={"rdma": {"ipcLock": False}}))
    assert container_of(pod)["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_node_local_cache_reads_under_the_host_path() -> None:
    pod = leader(spec(cache={"mode": "NodeLocal", "hostPath": "/data/models"}))
    key = pod["metadata"]["labels"]["mistral-operator.dev/cache-key"]
    assert volume(pod, "model")["hostPath"] == {"path": f"/data/models/{key}", "type": "Directory"}
    assert flag(pod, "--model-path") == "/model"


def test_shared_pvc_cache_mounts_the_claim_and_reads_under_the_sub_path() -> None:
    pod = leader(
        spec(cache={"mode": "SharedPVC", "pvc": {"claimName": "weights", "subPath": "mistral"}})
    )
    key = pod["metadata"]["labels"]["mistral-operator.dev/cache-key"]
    claim = volume(pod, "model")["persistentVolumeClaim"]
    assert claim == {"claimName": "weights", "readOnly": True}
    assert flag(pod, "--model-path") == f"/model/mistral/{key}"
    root = leader(spec(cache={"mode": "SharedPVC", "pvc": {"claimName": "weights"}}))
    assert flag(root, "--model-path") == f"/model/{key}"


def test_a_pvc_source_without_a_cache_mounts_the_claim() -> None:
    pod = leader(spec(cache={"mode": "None"}, model={"source": "pvc://weights/mistral/small-4"}))
    assert volume(pod, "model")["persistentVolumeClaim"] == {
        "claimName": "weights",
        "readOnly": True,
    }
    assert flag(pod, "--model-path") == "/model/mistral/small-4"
