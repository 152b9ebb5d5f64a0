"""The pydantic API models: examples parse, defaults hold, bad input is refused as by kubectl."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mistral_operator.api.model import ModelSpec
from mistral_operator.api.resource import MistralModel
from mistral_operator.api.rollout import RolloutSpec
from mistral_operator.api.runtime import ResourceAmounts, RuntimeSpec
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.status import MistralModelStatus

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
INVALID = sorted((REPO_ROOT / "tests" / "integration" / "testdata" / "invalid").glob("*.yaml"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def spec(**fields: Any) -> MistralModelSpec:
    return MistralModelSpec.model_validate({"gpu": {"product": "H200"}, **fields})


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"quickstart-h200.yaml", "small4-multinode-h100.yaml", "small4-b200.yaml"} <= names
    assert {"autoscaling.yaml", "shared-pvc-cache.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates(path: Path) -> None:
    model = MistralModel.from_object(load(path))
    assert model.spec.model.profile == "mistral-small-4-119b"
    assert path.read_text().startswith("#"), "examples explain themselves in a leading comment"


def test_quickstart_targets_h200() -> None:
    model = MistralModel.from_object(load(REPO_ROOT / "examples" / "quickstart-h200.yaml"))
    assert model.spec.gpu.product == "H200"


def test_defaults() -> None:
    s = spec()
    assert s.model.profile == "mistral-small-4-119b"
    assert s.model.revision == "main"
    assert s.model.quantization == "auto"
    assert s.replicas == 1
    assert s.gpu.gpus_per_node == 8
    assert s.cache.mode == "NodeLocal"
    assert s.cache.host_path == "/var/lib/mistral-operator/models"
    assert s.rollout.max_surge == 1
    assert s.rollout.max_unavailable == 0
    assert s.group_failure_policy.action == "RecreateGroup"
    assert s.autoscaling is None
    assert s.parallelism.shape == "Compact"
    assert s.parallelism.nodes_per_replica is None
    assert s.runtime.image.startswith("lmsysorg/sglang:")


def test_wire_form_is_camel_case_without_unset_fields() -> None:
    parallelism = {"shape": "MultiNode", "moeA2ABackend": "deepep", "tensorParallelSize": 16}
    wire = spec(parallelism=parallelism).to_wire()
    assert wire["parallelism"] == {
        "shape": "MultiNode",
        "tensorParallelSize": 16,
        "moeA2ABackend": "deepep",
    }
    # As the API server stores it: the default shape filled in, unset sizes left out.
    assert spec().to_wire()["parallelism"] == {"shape": "Compact"}
    assert wire["groupFailurePolicy"]["initialBackoffSeconds"] == 30
    assert "autoscaling" not in wire
    assert MistralModelSpec.model_validate(wire) == MistralModelSpec.model_validate(wire)


def test_python_names_work_for_construction() -> None:
    runtime = RuntimeSpec(context_length=65536, extra_args=["--mem-fraction-static", "0.8"])
    assert runtime.to_wire()["contextLength"] == 65536


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_manifest_is_refused_in_python_too(path: Path) -> None:
    """The operator must not accept what `kubectl apply` refuses (a drifted rule fails here)."""
    with pytest.raises(ValidationError):
        MistralModel.from_object(load(path))


def test_invalid_corpus_is_large_and_labelled() -> None:
    assert len(INVALID) >= 25
    for path in INVALID:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# expect: "), path.name
        assert first.removeprefix("# expect: ").strip(), path.name


def test_strict_types_like_the_api_server() -> None:
    with pytest.raises(ValidationError):
        spec(replicas="2")
    with pytest.raises(ValidationError):
        spec(placement={"hostNetwork": "true"})


def test_status_parses_what_the_operator_writes() -> None:
    status = MistralModelStatus.model_validate(
        {
            "observedGeneration": 3,
            "phase": "Ready",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllGroupsServing",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "replicas": 2,
            "readyReplicas": 2,
            "selector": "mistral-operator.dev/model=m",
            "topology": {"nodesPerReplica": 2, "moeA2ABackend": "deepep"},
            "groups": [
                {
                    "name": "m-a1b2c",
                    "revision": "5d8f",
                    "state": "Serving",
                    "members": [{"rank": 0, "node": "h200-0"}, {"rank": 1, "node": "h200-1"}],
                }
            ],
            "futureField": "ignored",
        }
    )
    assert status.topology is not None
    assert status.topology.moe_a2a_backend == "deepep"
    assert [m.node for m in status.groups[0].members] == ["h200-0", "h200-1"]
    assert status.to_wire()["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"


# --- Parallelism rules against SGLang's own constraints -------------------------------------

sizes = st.one_of(st.none(), st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]))


@given(
    shape=st.sampled_from([None, "Compact", "Node", "MultiNode"]),
    nodes=sizes,
    tp=sizes,
    pp=st.one_of(st.none(), st.sampled_from([1, 2, 3, 4])),
    ep=sizes,
    attn_dp=sizes,
    backend=st.sampled_from([None, "none", "deepep", "mooncake"]),
    gpus_per_node=st.sampled_from([1, 2, 4, 8]),
)
def test_parallelism_is_accepted_exactly_when_sglang_can_run_it(
    *,
    shape: str | None,
    nodes: int | None,
    tp: int | None,
    pp: int | None,
    ep: int | None,
    attn_dp: int | None,
    backend: str | None,
    gpus_per_node: int,
) -> None:
    parallelism = {
        "shape": shape,
        "nodesPerReplica": nodes,
        "tensorParallelSize": tp,
        "pipelineParallelSize": pp,
        "expertParallelSize": ep,
        "attentionDataParallelSize": attn_dp,
        "moeA2ABackend": backend,
    }
    world = None if tp is None else tp * (pp or 1)
    multi = shape == "MultiNode"
    # A Compact replica is one pod on part of a node; a Node or MultiNode replica uses
    # every GPU of its nodes (2 nodes for MultiNode unless nodesPerReplica says).
    replica_nodes = nodes if nodes is not None else (2 if multi else 1)
    runnable = (
        (world is None or attn_dp is None or tp is None or tp % attn_dp == 0)
        and (tp is None or ep is None or tp % ep == 0)
        and (backend in (None, "none") or tp is None or ep is None or ep == tp)
        and (world is None or nodes is None or world % nodes == 0)
        and (nodes is None or (nodes >= 2 if multi else nodes == 1))
        and (
            world is None
            or (
                gpus_per_node % world == 0
                if shape in (None, "Compact")
                else world == replica_nodes * gpus_per_node
            )
        )
    )
    # The quick start's profile is a mixture of experts: off Compact, attention is
    # data-parallel unless attentionDataParallelSize says otherwise, and an attention
    # group (tp / attn-dp GPUs) of a MultiNode replica must sit inside one node.
    gpus = world if shape in (None, "Compact") else replica_nodes * gpus_per_node
    sized = gpus is not None and gpus % (pp or 1) == 0
    tp_planned = tp or (gpus // (pp or 1) if sized and gpus else None)
    if multi and sized and tp_planned and (attn_dp is None or tp_planned % attn_dp == 0):
        group = tp_planned // attn_dp if attn_dp else 1
        runnable = runnable and gpus_per_node % group == 0
    # Against the planned sizes and the profile's 128 experts (api/shape_rules.py): pipeline
    # stages divide the GPUs; attention and expert sizes divide the planned tp; a backend
    # needs ep == tp, with ep planned as 1 (Compact) or as tp where tp divides the experts.
    experts = 128
    if shape not in (None, "Compact") and pp is not None:
        runnable = runnable and (replica_nodes * gpus_per_node) % pp == 0
    runnable = runnable and (ep is None or experts % ep == 0)
    if sized and tp_planned:
        if tp is None:
            runnable = runnable and (attn_dp is None or tp_planned % attn_dp == 0)
            runnable = runnable and (ep is None or tp_planned % ep == 0)
        if backend not in (None, "none"):
            if ep is not None:
                runnable = runnable and (tp is not None or ep == tp_planned)
            elif shape in (None, "Compact"):
                runnable = runnable and tp_planned == 1
            else:
                runnable = runnable and experts % tp_planned == 0
    body = {
        "gpu": {"product": "H200", "gpusPerNode": gpus_per_node},
        "parallelism": {k: v for k, v in parallelism.items() if v is not None},
    }
    if runnable:
        MistralModelSpec.model_validate(body)
    else:
        with pytest.raises(ValidationError):
            MistralModelSpec.model_validate(body)


@pytest.mark.parametrize(
    ("surge", "unavailable", "ok"),
    [
        (1, 0, True),
        (0, 1, True),
        ("25%", "0%", True),
        ("0%", 0, False),
        (0, "0%", False),
        (0, 0, False),
        ("100%", 0, True),
        ("101%", 0, False),
        ("5", 0, False),
        (-1, 1, False),
    ],
)
def test_rollout_surge_and_unavailable(surge: int | str, unavailable: int | str, ok: bool) -> None:
    body = {"maxSurge": surge, "maxUnavailable": unavailable}
    if ok:
        RolloutSpec.model_validate(body)
    else:
        with pytest.raises(ValidationError):
            RolloutSpec.model_validate(body)


@given(st.integers(min_value=0, max_value=10**12))
def test_any_non_negative_integer_is_a_quantity(value: int) -> None:
    ResourceAmounts.model_validate({"cpu": value, "memory": f"{value}Gi"})


@pytest.mark.parametrize("bad", ["lots", "1.5 Gi", "Gi", "-", "1GiB"])
def test_malformed_quantities_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        ResourceAmounts.model_validate({"memory": bad})


@pytest.mark.parametrize(
    "source",
    [
        "hf://mistralai/Mistral-Small-4-119B-2603",
        "s3://models-bucket/mistral/small-4",
        "s3://models-bucket",
        "pvc://weights/mistral/small-4",
        "https://hf-mirror.example.com/mistralai/Mistral-Small-4-119B-2603",
        "http://mirror.internal:8080/hf/mistralai/Mistral-Small-4-119B-2603",
    ],
)
def test_supported_sources(source: str) -> None:
    """Every scheme is a well-formed source (which cache modes read it is checked apart)."""
    ModelSpec.model_validate({"source": source})


@pytest.mark.parametrize(
    ("source", "fillable"),
    [
        ("hf://mistralai/Mistral-Small-4-119B-2603", True),
        ("https://hf-mirror.example.com/mistralai/Mistral-Small-4-119B-2603", True),
        ("http://mirror.internal:8080/hf/mistralai/Mistral-Small-4-119B-2603", True),
        ("s3://models-bucket/mistral/small-4", False),
        ("pvc://weights/mistral/small-4", False),
    ],
)
def test_node_local_caches_are_filled_only_from_the_hub_or_a_mirror(
    source: str, fillable: bool
) -> None:
    shared = {"mode": "SharedPVC", "pvc": {"claimName": "weights"}}
    if fillable:
        spec(model={"source": source})
        spec(model={"source": source}, cache=shared)
        return
    for cache in ({}, shared):
        with pytest.raises(ValidationError, match=r"model.source must be hf:// or an http"):
            spec(model={"source": source}, cache=cache)


@pytest.mark.parametrize(
    "source",
    [
        "mistralai/Mistral-Small-4-119B-2603",
        "hf://mistralai",
        "hf://mistralai/repo/extra",
        "gs://bucket/path",
        "s3://UPPER/path",
        "https://mirror.example.com",
        "pvc:///path",
        "hf://mistral ai/repo",
    ],
)
def test_unsupported_sources(source: str) -> None:
    with pytest.raises(ValidationError):
        spec(model={"source": source})


def test_extra_args_may_not_override_rendered_flags() -> None:
    RuntimeSpec.model_validate({"extraArgs": ["--mem-fraction-static", "0.85", "--tpx"]})
    for flag in ("--tp-size", "--port=8000", "--nnodes", "--context-length", "--dp-size"):
        with pytest.raises(ValidationError):
            RuntimeSpec.model_validate({"extraArgs": [flag, "1"]})


def test_profile_capabilities_and_context_are_enforced() -> None:
    spec(capabilities={"reasoning": False}, model={"profile": "mixtral-8x7b"})
    spec(runtime={"contextLength": 262144})
    with pytest.raises(ValidationError, match=r"capabilities\.reasoning"):
        spec(capabilities={"reasoning": True}, model={"profile": "mixtral-8x7b"})
    with pytest.raises(ValidationError, match="contextLength"):
        spec(runtime={"contextLength": 65536}, model={"profile": "mixtral-8x7b"})


def test_credentials_are_refused_where_nothing_reads_them() -> None:
    token = {"credentialsSecretRef": {"name": "hf-token"}}
    spec(model=token, cache={"mode": "None"})
    spec(
        model={**token, "source": "hf://mistralai/Mistral-Small-4-119B-2603"},
        cache={"mode": "None"},
    )
    spec(model=token)  # the NodeLocal fill Jobs read the Hub with it
    spec(model=token, cache={"mode": "SharedPVC", "pvc": {"claimName": "weights"}})  # and these
    with pytest.raises(ValidationError, match=r"credentialsSecretRef is used only"):
        spec(model={**token, "source": "pvc://weights/small-4"}, cache={"mode": "None"})


def test_backsteps_and_toleration_seconds_are_refused_only_where_kubernetes_refuses_them() -> None:
    """A '..' path element, or tolerationSeconds off NoExecute, would make every pod and
    fill Job of the model refused; a name merely containing '..' is fine."""
    spec(cache={"hostPath": "/var/lib/a..b/..c"})
    spec(cache={"mode": "SharedPVC", "pvc": {"claimName": "w", "subPath": "a..b"}})
    spec(placement={"tolerations": [{"key": "k", "effect": "NoExecute", "tolerationSeconds": 5}]})
    for bad in ({"hostPath": "/var/../x"}, {"hostPath": "/var/.."}):
        with pytest.raises(ValidationError, match=re.escape("must not contain a '..' path")):
            spec(cache=bad)
    for sub in ("..", "../a", "a/../b"):
        with pytest.raises(ValidationError, match=re.escape("cache.pvc.subPath must not contain")):
            spec(cache={"mode": "SharedPVC", "pvc": {"claimName": "w", "subPath": sub}})
    with pytest.raises(ValidationError, match="only allowed with effect NoExecute"):
        spec(placement={"tolerations": [{"key": "k", "tolerationSeconds": 5}]})
