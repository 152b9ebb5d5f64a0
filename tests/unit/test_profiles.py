"""Model and GPU profiles: the facts planning relies on, and refusal of unknown names."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mistral_operator.catalogue.profiles import (
    GPU_PROFILES,
    MODEL_PROFILES,
    GpuName,
    ModelProfile,
    ProfileName,
    UnknownGpuError,
    UnknownProfileError,
    gpu_for_product_label,
    gpu_profile,
    model_profile,
    moe_profiles,
    profiles_with,
)

pytestmark = pytest.mark.unit


def test_literal_names_match_the_catalogues() -> None:
    assert set(get_args(ProfileName)) == set(MODEL_PROFILES)
    assert set(get_args(GpuName)) == set(GPU_PROFILES)
    for name, profile in MODEL_PROFILES.items():
        assert profile.name == name
    for gpu_name, gpu in GPU_PROFILES.items():
        assert gpu.name == gpu_name


def test_mistral_small_4_facts() -> None:
    small4 = model_profile("mistral-small-4-119b")
    assert small4.hf_repo == "mistralai/Mistral-Small-4-119B-2603"
    assert small4.is_moe
    assert (small4.experts, small4.active_experts) == (128, 4)
    assert small4.total_params_b == pytest.approx(119, abs=1)
    assert small4.max_context_length == 262144
    assert small4.vision
    assert small4.reasoning
    assert small4.tool_calling
    assert small4.reasoning_parser == "mistral"
    assert small4.tool_call_parser == "mistral"
    assert small4.mistral_native_format


@pytest.mark.parametrize(("gpu", "nodes"), [("H100", 4), ("H200", 2), ("B200", 1)])
def test_mistral_small_4_default_nodes_per_replica(gpu: GpuName, nodes: int) -> None:
    assert model_profile("mistral-small-4-119b").nodes_per_replica(gpu) == nodes


@pytest.mark.parametrize("profile", list(MODEL_PROFILES.values()), ids=list(MODEL_PROFILES))
def test_every_profile_is_consistent(profile: ModelProfile) -> None:
    assert profile.hf_repo.startswith("mistralai/")
    assert 0 < profile.active_params_b <= profile.total_params_b
    assert (profile.experts is not None) == profile.is_moe
    assert (profile.active_experts is not None) == profile.is_moe
    if profile.experts and profile.active_experts:
        assert profile.active_experts < profile.experts
    assert (profile.reasoning_parser is not None) == profile.reasoning
    assert (profile.tool_call_parser is not None) == profile.tool_calling
    assert set(profile.default_nodes_per_replica) == set(GPU_PROFILES)
    # A default topology must hold the weights, with room left for the KV cache.
    for gpu_name, nodes in profile.default_nodes_per_replica.items():
        capacity = GPU_PROFILES[gpu_name].node_memory_gib * nodes
        assert profile.weight_gib() < 0.8 * capacity, gpu_name


def test_weight_sizes_scale_with_precision() -> None:
    small4 = model_profile("mistral-small-4-119b")
    assert small4.weight_gib() == small4.weight_gib("fp8")
    assert small4.weight_gib("bf16") == pytest.approx(2 * small4.weight_gib("fp8"))
    assert small4.weight_gib("fp4") < small4.weight_gib("fp8")
    assert small4.weight_gib("fp8") == pytest.approx(111, abs=1)


def test_gpu_facts_and_labels() -> None:
    assert gpu_profile("H100").memory_gb == 80
    assert gpu_profile("H200").memory_gb == 141
    assert gpu_profile("B200").memory_gb in (180, 192)
    assert gpu_for_product_label("NVIDIA-H100-80GB-HBM3") is GPU_PROFILES["H100"]
    assert gpu_for_product_label("NVIDIA-H200") is GPU_PROFILES["H200"]
    assert gpu_for_product_label("NVIDIA-B200") is GPU_PROFILES["B200"]
    assert gpu_for_product_label("NVIDIA-A100-SXM4-80GB") is None
    assert [g.name for g in GPU_PROFILES.values() if g.supports_fp4] == ["B200"]


def test_unknown_profile_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnknownProfileError) as info:
        model_profile("mistral-huge")
    message = str(info.value)
    assert "'mistral-huge'" in message
    for name in MODEL_PROFILES:
        assert name in message
    assert info.value.known == tuple(MODEL_PROFILES)


def test_unknown_gpu_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnknownGpuError, match=r"unknown GPU product 'A100'; .*H100, H200, B200"):
        gpu_profile("A100")


@given(st.text(max_size=40).filter(lambda s: s not in MODEL_PROFILES))
def test_any_other_profile_name_is_refused(name: str) -> None:
    with pytest.raises(UnknownProfileError):
        model_profile(name)


@given(st.text(max_size=10).filter(lambda s: s not in GPU_PROFILES))
def test_any_other_gpu_name_is_refused(name: str) -> None:
    with pytest.raises(UnknownGpuError):
        gpu_profile(name)


def test_capability_and_moe_listings() -> None:
    assert "mistral-small-4-119b" in profiles_with("vision")
    assert "mixtral-8x7b" not in profiles_with("vision")
    assert "magistral-small-2509" in profiles_with("reasoning")
    assert set(moe_profiles()) == {"mistral-small-4-119b", "mixtral-8x22b", "mixtral-8x7b"}
