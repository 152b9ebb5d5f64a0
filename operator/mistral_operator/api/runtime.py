"""`spec.runtime`: the SGLang container: image, arguments, environment and resources."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from mistral_operator.api import formats
from mistral_operator.api.base import CelRule, Rules, SpecModel
from mistral_operator.api.common import KeySelector, LocalObjectReference, Quantity

DEFAULT_IMAGE = "lmsysorg/sglang:v0.5.23"

# Flags the operator renders from the spec; setting them twice would make ranks disagree.
MANAGED_FLAGS = (
    "model-path|model|host|port|nnodes|node-rank|dist-init-addr"
    "|tp-size|tensor-parallel-size|tp|pp-size|pipeline-parallel-size|pp"
    "|ep-size|expert-parallel-size|ep|attn-dp-size|dp-size|data-parallel-size|dp"
    "|enable-dp-attention|enable-ep-moe|moe-a2a-backend"
    "|served-model-name|context-length|reasoning-parser|tool-call-parser"
    "|quantization|revision|enable-metrics"
)
MANAGED_FLAG_PATTERN = rf"^--({MANAGED_FLAGS})(=.*)?$"
_MANAGED_FLAG = re.compile(MANAGED_FLAG_PATTERN)

ExtraArg = Annotated[str, Field(min_length=1, max_length=256)]


class EnvVarSource(SpecModel):
    """Where an environment variable's value comes from."""

    cel_rules = (
        CelRule(
            rule="[has(self.secretKeyRef), has(self.configMapKeyRef)].exists_one(x, x)",
            message="set exactly one of secretKeyRef or configMapKeyRef",
            check=lambda s: (s.secret_key_ref is None) != (s.config_map_key_ref is None),
        ),
    )

    secret_key_ref: KeySelector | None = Field(
        default=None, description="A key of a Secret in this namespace."
    )
    config_map_key_ref: KeySelector | None = Field(
        default=None, description="A key of a ConfigMap in this namespace."
    )


class EnvVar(SpecModel):
    """An environment variable for every SGLang container of the model."""

    cel_rules = (
        CelRule(
            rule="!(has(self.value) && has(self.valueFrom))",
            message="set either value or valueFrom, not both",
            check=lambda e: e.value is None or e.value_from is None,
        ),
    )

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=formats.ENV_VAR_NAME,
        description="Variable name, e.g. NCCL_DEBUG or SGLANG_ENABLE_JIT_DEEPGEMM.",
    )
    value: str | None = Field(
        default=None, max_length=4096, description="Literal value (may be empty)."
    )
    value_from: EnvVarSource | None = Field(
        default=None, description="Take the value from a Secret or ConfigMap key instead."
    )


class ResourceAmounts(SpecModel):
    """CPU and memory amounts; GPUs are set by the operator from spec.gpu."""

    cpu: Quantity | None = Field(default=None, description="CPU cores, e.g. 32 or 16500m.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 512Gi.")


class ResourcesSpec(SpecModel):
    """CPU and memory for each SGLang pod, beyond the GPUs the operator requests itself."""

    requests: ResourceAmounts | None = Field(
        default=None, description="Amounts the scheduler reserves on the node for each pod."
    )
    limits: ResourceAmounts | None = Field(
        default=None, description="Upper bounds for each pod; unset means no limit."
    )


class RuntimeSpec(SpecModel):
    """The SGLang container every rank of every replica group runs."""

    image: str = Field(
        default=DEFAULT_IMAGE,
        min_length=1,
        max_length=512,
        pattern=formats.IMAGE,
        description=(
            "SGLang container image. The operator renders flags for the SGLang version it "
            "was built against (0.5.x); pin a tag or digest."
        ),
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets with registry credentials for pulling the image.",
    )
    extra_args: Annotated[
        list[ExtraArg],
        Rules(
            CelRule(
                rule=f"self.all(a, !a.matches(r'{MANAGED_FLAG_PATTERN}'))",
                message=(
                    "extraArgs must not set flags the operator renders from the spec "
                    "(model path, ports, node ranks, parallelism, served name, context "
                    "length, parsers, quantization); set the matching spec field instead"
                ),
                check=lambda args: not any(_MANAGED_FLAG.fullmatch(a) for a in args),
            )
        ),
    ] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Extra SGLang launch_server arguments, appended identically on every rank, e.g. "
            "[--mem-fraction-static, '0.85']. Flags the operator renders itself are refused."
        ),
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Extra environment variables for every SGLang container.",
    )
    resources: ResourcesSpec | None = Field(
        default=None,
        description=(
            "CPU and memory for each SGLang pod. GPUs (nvidia.com/gpu) come from "
            "spec.gpu.gpusPerNode and are not set here."
        ),
    )
    shm_size: Quantity | None = Field(
        default=None,
        description=(
            "Size limit of the /dev/shm memory volume NCCL and SGLang use; it counts "
            "against the pod's memory. Unset: no limit."
        ),
    )
    context_length: int | None = Field(
        default=None,
        ge=1024,
        le=1048576,
        description=(
            "Maximum context length in tokens (--context-length). Unset: the profile's "
            "maximum (262144 for Mistral Small 4). Must not exceed the profile's maximum."
        ),
    )
    startup_timeout_seconds: int = Field(
        default=3600,
        ge=60,
        le=86400,
        description=(
            "How long a rank may take to load weights and compile kernels before it counts "
            "as failed (the startupProbe budget). Large models take tens of minutes."
        ),
    )

    @field_validator("env")
    @classmethod
    def _env_names_unique(cls, env: list[EnvVar]) -> list[EnvVar]:
        # The CRD declares env a list map keyed by name; the API server refuses duplicates.
        seen: set[str] = set()
        for var in env:
            if var.name in seen:
                raise ValueError(f"duplicate environment variable {var.name!r}")
            seen.add(var.name)
        return env
