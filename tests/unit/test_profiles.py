"""Model and GPU profiles: the facts planning relies on, and refusal of unknown names."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mistral_operator.catalogue.profiles import (
    GIB,
    GPU_PROFILES,
    GPUS_PER_HGX_NODE,
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
from mistral_operator.core.sizing import compact_gpus

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


def test_mistral_small_4_memory_facts() -> None:
    small4 = model_profile("mistral-small-4-119b")
    # MLA caches the 256-value latent plus the 64-value RoPE key per layer, in bf16.
    assert small4.layers == 36
    assert small4.kv_values_per_token_layer == 256 + 64
    assert small4.kv_bytes_per_token == 36 * 320 * 2
    # The model card's checkpoint sizes, and SGLang's cookbook GPU counts per replica.
    assert dict(small4.published_weight_gb) == {"fp8": 119.0, "fp4": 60.0}
    assert dict(small4.cookbook_gpus) == {
        ("fp8", "hopper"): 2,
        ("fp8", "blackwell"): 1,
        ("fp4", "blackwell"): 1,
    }
    # Mistral's own statement is quoted as it is, not read as nodes per replica.
    assert small4.stated_minimum == "4x NVIDIA HGX H100, 2x HGX H200 or 1x DGX B200"
    assert dict(small4.architecture_args) == {"blackwell": ("--attention-backend", "flashinfer")}


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
    assert profile.layers > 0
    assert profile.kv_bytes_per_token == profile.layers * profile.kv_values_per_token_layer * 2
    architectures = {g.architecture for g in GPU_PROFILES.values()}
    assert set(profile.architecture_args) <= architectures
    assert {arch for _, arch in profile.cookbook_gpus} <= architectures
    # The default (Compact) replica of every profile fits on one 8-GPU node of every GPU,
    # with the weights as published.
    for gpu in GPU_PROFILES.values():
        plan = compact_gpus(profile, gpu, profile.native_precision, profile.max_context_length)
        assert plan is not None, f"{gpu.name}: does not fit one node"
        assert plan.gpus <= GPUS_PER_HGX_NODE


def test_weight_sizes_scale_with_precision() -> None:
    small4 = model_profile("mistral-small-4-119b")
    assert small4.weight_gib() == small4.weight_gib("fp8")
    # Published checkpoints by their stated size (119 GB, 60 GB); bf16 from the parameters.
    assert small4.weight_gib("fp8") == pytest.approx(119e9 / GIB)
    assert small4.weight_gib("fp4") == pytest.approx(60e9 / GIB)
    assert small4.weight_gib("bf16") == pytest.approx(119.4e9 * 2 / GIB)
    assert small4.weight_gib("bf16") == pytest.approx(2 * small4.weight_gib("fp8"), rel=0.01)
    # Without a published size, parameters x bytes per parameter.
    mistral7b = model_profile("mistral-7b-v0.3")
    assert not mistral7b.published_weight_gb
    assert mistral7b.weight_gib() == pytest.approx(mistral7b.total_params_b * 1e9 * 2 / GIB)
    assert mistral7b.weight_gib("fp8") == pytest.approx(mistral7b.weight_gib() / 2)


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
