"""Facts about the Mistral models and NVIDIA GPUs the operator plans for, and lookups by name.

These are data, not decisions: planning and rendering read them. The names here
are also the enums of `spec.model.profile` and `spec.gpu.product` in the CRD, so
`kubectl apply` refuses a name this module does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Precision = Literal["bf16", "fp8", "fp4"]
GpuName = Literal["H100", "H200", "B200"]
ProfileName = Literal[
    "mistral-small-4-119b",
    "mistral-small-3.2-24b",
    "mistral-small-3.1-24b",
    "magistral-small-2509",
    "devstral-small-2507",
    "pixtral-12b",
    "mistral-large-2-123b",
    "mixtral-8x22b",
    "mixtral-8x7b",
    "mistral-nemo-12b",
    "ministral-8b",
    "mistral-7b-v0.3",
]
Architecture = Literal["moe", "dense"]

DEFAULT_PROFILE: ProfileName = "mistral-small-4-119b"
GPUS_PER_HGX_NODE = 8
GIB = 1 << 30
# SGLang keeps the KV cache in the model's compute dtype (bf16) unless told otherwise.
KV_CACHE_BYTES = 2
# Share of GPU memory kept free of weights and KV (SGLang's static memory fraction
# leaves about as much for activations and CUDA graphs).
HEADROOM = 0.10

# Bytes of weight storage per parameter; 4-bit formats carry block scales (~4.5 bits).
BYTES_PER_PARAM: Mapping[Precision, float] = MappingProxyType(
    {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5625}
)


class UnknownProfileError(ValueError):
    """A model profile name that this operator does not know."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.known = tuple(MODEL_PROFILES)
        super().__init__(f"unknown model profile {name!r}; known profiles: {', '.join(self.known)}")


class UnknownGpuError(ValueError):
    """A GPU product name that this operator does not know."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.known = tuple(GPU_PROFILES)
        super().__init__(
            f"unknown GPU product {name!r}; known GPU products: {', '.join(self.known)}"
        )


@dataclass(frozen=True)
class GpuProfile:
    """One NVIDIA data-centre GPU as it appears in an 8-GPU HGX/DGX node."""

    name: GpuName
    description: str
    memory_gb: int
    """Marketed memory per GPU, in GB."""
    memory_mib: int
    """Memory per GPU as the driver reports it (`nvidia.com/gpu.memory`), in MiB."""
    product_labels: tuple[str, ...]
    """Values of the `nvidia.com/gpu.product` node label (GPU feature discovery) it matches."""
    architecture: Literal["hopper", "blackwell"]
    supports_fp8: bool
    supports_fp4: bool

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def usable_bytes(self) -> int:
        """Memory per GPU for weights and KV cache, after the headroom."""
        return int(self.memory_mib * 2**20 * (1 - HEADROOM))


@dataclass(frozen=True)
class ModelProfile:
    """The facts about one Mistral model that planning and rendering need."""

    name: ProfileName
    display_name: str
    hf_repo: str
    """Default weights source: the Hugging Face repository `org/name`."""
    architecture: Architecture
    total_params_b: float
    """Total parameters, in billions."""
    active_params_b: float
    """Parameters used per token, in billions (equal to the total for dense models)."""
    experts: int | None
    """Routed experts per MoE layer; None for dense models."""
    active_experts: int | None
    """Routed experts used per token; None for dense models."""
    max_context_length: int
    """Longest context the model is served with, in tokens (`--context-length`)."""
    native_precision: Precision
    """Precision of the published checkpoint's weights."""
    vision: bool
    reasoning: bool
    tool_calling: bool
    reasoning_parser: str | None
    """SGLang `--reasoning-parser` value when reasoning is on."""
    tool_call_parser: str | None
    """SGLang `--tool-call-parser` value when tool calling is on."""
    mistral_native_format: bool
    """Checkpoint in Mistral's native format (params.json, consolidated safetensors): a
    renamed local copy needs `--model-config-parser mistral --load-format mistral`."""
    layers: int
    """Decoder layers (`num_hidden_layers`), each holding KV for every cached token."""
    kv_values_per_token_layer: int
    """KV-cache values per token and layer: 2 x KV heads x head dim for grouped-query
    attention; the compressed latent plus the RoPE key for multi-head latent attention
    (MLA), which is why MLA models cache so little."""
    license: str
    latent_attention: bool = False
    """Multi-head latent attention (MLA): SGLang keeps the whole (small) KV cache on every
    GPU of an attention group instead of splitting it by KV head."""
    nvfp4_repo: str | None = None
    """A published NVFP4 (4-bit) variant of the checkpoint, if any."""
    published_weight_gb: Mapping[Precision, float] = field(default_factory=dict)
    """Size of the published checkpoints, in GB, where it is stated; otherwise the
    size is estimated from the parameter count."""
    cookbook_gpus: Mapping[tuple[Precision, str], int] = field(default_factory=dict)
    """GPUs per replica in SGLang's cookbook, by (precision, GPU architecture)."""
    stated_minimum: str = ""
    """The vendor's own statement of minimum infrastructure, quoted as it is."""
    architecture_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """SGLang arguments the model needs on a GPU architecture (hopper, blackwell)."""

    @property
    def is_moe(self) -> bool:
        return self.architecture == "moe"

    def weight_gib(self, precision: Precision | None = None) -> float:
        """Size of the weights in GiB at `precision` (default: as published): the published
        checkpoint's where stated, else parameters x bytes per parameter."""
        chosen = precision or self.native_precision
        if chosen in self.published_weight_gb:
            return self.published_weight_gb[chosen] * 1e9 / GIB
        return self.total_params_b * 1e9 * BYTES_PER_PARAM[chosen] / GIB

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token holds across all layers (bf16 cache, SGLang's default)."""
        return self.layers * self.kv_values_per_token_layer * KV_CACHE_BYTES


def _gqa(kv_heads: int, head_dim: int) -> int:
    """KV values per token and layer with grouped-query attention: a K and a V per KV head."""
    return 2 * kv_heads * head_dim


GPU_PROFILES: Mapping[GpuName, GpuProfile] = MappingProxyType(
    {
        "H100": GpuProfile(
            name="H100",
            description="NVIDIA H100 SXM5 80 GB HBM3 (HGX H100)",
            memory_gb=80,
            memory_mib=81559,
            product_labels=("NVIDIA-H100-80GB-HBM3",),
            architecture="hopper",
            supports_fp8=True,
            supports_fp4=False,
        ),
        "H200": GpuProfile(
            name="H200",
            description="NVIDIA H200 SXM 141 GB HBM3e (HGX H200)",
            memory_gb=141,
            memory_mib=143771,
            product_labels=("NVIDIA-H200",),
            architecture="hopper",
            supports_fp8=True,
            supports_fp4=False,
        ),
        "B200": GpuProfile(
            name="B200",
            description="NVIDIA B200 180 GB HBM3e (DGX/HGX B200; 192 GB physical)",
            memory_gb=180,
            memory_mib=183359,
            product_labels=("NVIDIA-B200",),
            architecture="blackwell",
            supports_fp8=True,
            supports_fp4=True,
        ),
    }
)

_MISTRAL = "mistral"

MODEL_PROFILES: Mapping[ProfileName, ModelProfile] = MappingProxyType(
    {
        "mistral-small-4-119b": ModelProfile(
            name="mistral-small-4-119b",
            display_name="Mistral Small 4 (119B MoE)",
            hf_repo="mistralai/Mistral-Small-4-119B-2603",
            architecture="moe",
            total_params_b=119.4,
            active_params_b=6.5,
            experts=128,
            active_experts=4,
            max_context_length=262144,
            native_precision="fp8",
            vision=True,
            reasoning=True,
            tool_calling=True,
            reasoning_parser=_MISTRAL,
            tool_call_parser=_MISTRAL,
            mistral_native_format=True,
            layers=36,
            # MLA: the cache holds the latent (kv_lora_rank 256) and the RoPE key (64).
            kv_values_per_token_layer=320,
            latent_attention=True,
            license="Apache-2.0",
            nvfp4_repo="mistralai/Mistral-Small-4-119B-2603-NVFP4",
            # The model card: FP8 about 119 GB, NVFP4 about 60 GB.
            published_weight_gb=MappingProxyType({"fp8": 119.0, "fp4": 60.0}),
            # SGLang cookbook (docs/autoregressive/Mistral/Mistral-Small-4): "FP8 (~119 GB)
            # requires tp=2 on Hopper (H100/H200), tp=1 on Blackwell (B200/B300). NVFP4
            # runs with tp=1".
            cookbook_gpus=MappingProxyType(
                {("fp8", "hopper"): 2, ("fp8", "blackwell"): 1, ("fp4", "blackwell"): 1}
            ),
            stated_minimum="4x NVIDIA HGX H100, 2x HGX H200 or 1x DGX B200",
            # SGLang cookbook: on Blackwell launch with --attention-backend flashinfer.
            architecture_args=MappingProxyType(
                {"blackwell": ("--attention-backend", "flashinfer")}
            ),
        ),
        "mistral-small-3.2-24b": ModelProfile(
            name="mistral-small-3.2-24b",
            display_name="Mistral Small 3.2 (24B)",
            hf_repo="mistralai/Mistral-Small-3.2-24B-Instruct-2506",
            architecture="dense",
            total_params_b=24.0,
            active_params_b=24.0,
            experts=None,
            active_experts=None,
            max_context_length=131072,
            native_precision="bf16",
            vision=True,
            reasoning=False,
            tool_calling=True,
            reasoning_parser=None,
            tool_call_parser=_MISTRAL,
            mistral_native_format=False,
            layers=40,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Apache-2.0",
        ),
        "mistral-small-3.1-24b": ModelProfile(
            name="mistral-small-3.1-24b",
            display_name="Mistral Small 3.1 (24B)",
            hf_repo="mistralai/Mistral-Small-3.1-24B-Instruct-2503",
            architecture="dense",
            total_params_b=24.0,
            active_params_b=24.0,
            experts=None,
            active_experts=None,
            max_context_length=131072,
            native_precision="bf16",
            vision=True,
            reasoning=False,
            tool_calling=True,
            reasoning_parser=None,
            tool_call_parser=_MISTRAL,
            mistral_native_format=False,
            layers=40,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Apache-2.0",
        ),
        "magistral-small-2509": ModelProfile(
            name="magistral-small-2509",
            display_name="Magistral Small 1.2 (24B reasoning)",
            hf_repo="mistralai/Magistral-Small-2509",
            architecture="dense",
            total_params_b=24.0,
            active_params_b=24.0,
            experts=None,
            active_experts=None,
            max_context_length=131072,
            native_precision="bf16",
            vision=True,
            reasoning=True,
            tool_calling=True,
            reasoning_parser=_MISTRAL,
            tool_call_parser=_MISTRAL,
            mistral_native_format=False,
            layers=40,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Apache-2.0",
        ),
        "devstral-small-2507": ModelProfile(
            name="devstral-small-2507",
            display_name="Devstral Small 1.1 (24B coding agent)",
            hf_repo="mistralai/Devstral-Small-2507",
            architecture="dense",
            total_params_b=24.0,
            active_params_b=24.0,
            experts=None,
            active_experts=None,
            max_context_length=131072,
            native_precision="bf16",
            vision=False,
            reasoning=False,
            tool_calling=True,
            reasoning_parser=None,
            tool_call_parser=_MISTRAL,
            mistral_native_format=False,
            layers=40,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Apache-2.0",
        ),
        "pixtral-12b": ModelProfile(
            name="pixtral-12b",
            display_name="Pixtral 12B",
            hf_repo="mistralai/Pixtral-12B-2409",
            architecture="dense",
            total_params_b=12.4,
            active_params_b=12.4,
            experts=None,
            active_experts=None,
            max_context_length=131072,
            native_precision="bf16",
            vision=True,
            reasoning=False,
            tool_calling=False,
            reasoning_parser=None,
            tool_call_parser=None,
            mistral_native_format=True,
            layers=40,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Apache-2.0",
        ),
        "mistral-large-2-123b": ModelProfile(
            name="mistral-large-2-123b",
            display_name="Mistral Large 2.1 (123B)",
            hf_repo="mistralai/Mistral-Large-Instruct-2411",
            architecture="dense",
            total_params_b=123.0,
            active_params_b=123.0,
            experts=None,
            active_experts=None,
            max_context_length=131072,
            native_precision="bf16",
            vision=False,
            reasoning=False,
            tool_calling=True,
            reasoning_parser=None,
            tool_call_parser=_MISTRAL,
            mistral_native_format=False,
            layers=88,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Mistral Research License",
        ),
        "mixtral-8x22b": ModelProfile(
            name="mixtral-8x22b",
            display_name="Mixtral 8x22B (141B MoE)",
            hf_repo="mistralai/Mixtral-8x22B-Instruct-v0.1",
            architecture="moe",
            total_params_b=141.0,
            active_params_b=39.0,
            experts=8,
            active_experts=2,
            max_context_length=65536,
            native_precision="bf16",
            vision=False,
            reasoning=False,
            tool_calling=True,
            reasoning_parser=None,
            tool_call_parser=_MISTRAL,
            mistral_native_format=False,
            layers=56,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Apache-2.0",
        ),
        "mixtral-8x7b": ModelProfile(
            name="mixtral-8x7b",
            display_name="Mixtral 8x7B (47B MoE)",
            hf_repo="mistralai/Mixtral-8x7B-Instruct-v0.1",
            architecture="moe",
            total_params_b=46.7,
            active_params_b=12.9,
            experts=8,
            active_experts=2,
            max_context_length=32768,
            native_precision="bf16",
            vision=False,
            reasoning=False,
            tool_calling=False,
            reasoning_parser=None,
            tool_call_parser=None,
            mistral_native_format=False,
            layers=32,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Apache-2.0",
        ),
        "mistral-nemo-12b": ModelProfile(
            name="mistral-nemo-12b",
            display_name="Mistral NeMo 12B",
            hf_repo="mistralai/Mistral-Nemo-Instruct-2407",
            architecture="dense",
            total_params_b=12.2,
            active_params_b=12.2,
            experts=None,
            active_experts=None,
            max_context_length=131072,
            native_precision="bf16",
            vision=False,
            reasoning=False,
            tool_calling=True,
            reasoning_parser=None,
            tool_call_parser=_MISTRAL,
            mistral_native_format=False,
            layers=40,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Apache-2.0",
        ),
        "ministral-8b": ModelProfile(
            name="ministral-8b",
            display_name="Ministral 8B",
            hf_repo="mistralai/Ministral-8B-Instruct-2410",
            architecture="dense",
            total_params_b=8.0,
            active_params_b=8.0,
            experts=None,
            active_experts=None,
            max_context_length=131072,
            native_precision="bf16",
            vision=False,
            reasoning=False,
            tool_calling=True,
            reasoning_parser=None,
            tool_call_parser=_MISTRAL,
            mistral_native_format=False,
            layers=36,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Mistral Research License",
        ),
        "mistral-7b-v0.3": ModelProfile(
            name="mistral-7b-v0.3",
            display_name="Mistral 7B v0.3",
            hf_repo="mistralai/Mistral-7B-Instruct-v0.3",
            architecture="dense",
            total_params_b=7.25,
            active_params_b=7.25,
            experts=None,
            active_experts=None,
            max_context_length=32768,
            native_precision="bf16",
            vision=False,
            reasoning=False,
            tool_calling=True,
            reasoning_parser=None,
            tool_call_parser=_MISTRAL,
            mistral_native_format=False,
            layers=32,
            kv_values_per_token_layer=_gqa(8, 128),
            license="Apache-2.0",
        ),
    }
)


def model_profile(name: str) -> ModelProfile:
    """The profile called `name`; an unknown name is refused with the list of known ones."""
    for profile in MODEL_PROFILES.values():
        if profile.name == name:
            return profile
    raise UnknownProfileError(name)


def gpu_profile(name: str) -> GpuProfile:
    """The GPU called `name` (H100, H200, B200); an unknown one is refused with the list."""
    for gpu in GPU_PROFILES.values():
        if gpu.name == name:
            return gpu
    raise UnknownGpuError(name)


def gpu_for_product_label(label: str) -> GpuProfile | None:
    """The GPU a node's `nvidia.com/gpu.product` label names; None for GPUs we do not plan for."""
    for gpu in GPU_PROFILES.values():
        if label in gpu.product_labels:
            return gpu
    return None


def precision_of(quantization: str, profile: ModelProfile) -> Precision:
    """The precision weights are served in: as published, FP8, or NVFP4."""
    if quantization == "fp8":
        return "fp8"
    if quantization == "nvfp4":
        return "fp4"
    return profile.native_precision


def profiles_with(capability: Literal["vision", "reasoning", "tool_calling"]) -> tuple[str, ...]:
    """Names of the profiles that support `capability`, in catalogue order."""
    return tuple(p.name for p in MODEL_PROFILES.values() if getattr(p, capability))


def moe_profiles() -> tuple[str, ...]:
    """Names of the mixture-of-experts profiles, in catalogue order."""
    return tuple(p.name for p in MODEL_PROFILES.values() if p.is_moe)
