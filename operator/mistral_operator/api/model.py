"""`spec.model` and `spec.capabilities`: which Mistral model to serve and from where."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mistral_operator.api import formats
from mistral_operator.api.base import Rules, SpecModel, immutable, matches
from mistral_operator.api.common import LocalObjectReference
from mistral_operator.catalogue.profiles import DEFAULT_PROFILE, ProfileName

Quantization = Literal["auto", "fp8", "nvfp4"]

ModelSource = Annotated[
    str,
    Field(max_length=1024),
    Rules(
        matches(
            formats.MODEL_SOURCE,
            "must be hf://<org>/<repo>, s3://<bucket>[/<path>], pvc://<claim>[/<path>] "
            "or http(s)://<mirror>[/<prefix>]/<org>/<repo>",
        )
    ),
]
Revision = Annotated[
    str,
    Field(min_length=1, max_length=128),
    Rules(
        matches(
            formats.REVISION,
            "must be a branch, tag or commit SHA: letters, digits, '-', '_', '.' and '/', "
            "starting and ending with a letter or digit",
        )
    ),
]


class ModelSpec(SpecModel):
    """Which model to serve and where its weights come from."""

    profile: Annotated[
        ProfileName,
        Rules(
            immutable(
                "model.profile is immutable: serving a different model under the same name "
                "would change what clients get mid-rollout; create a new MistralModel instead"
            )
        ),
    ] = Field(
        default=DEFAULT_PROFILE,
        max_length=64,
        description=(
            "Model profile: the catalogue entry whose facts (size, experts, context length, "
            "capabilities, SGLang parsers, default topology per GPU) the operator plans with. "
            "Immutable once created."
        ),
    )
    source: ModelSource | None = Field(
        default=None,
        description=(
            "Where the weights come from: hf://<org>/<repo> (Hugging Face Hub), "
            "s3://<bucket>/<path> (S3-compatible bucket), pvc://<claim>/<path> (weights "
            "already on a PersistentVolumeClaim in this namespace) or "
            "https://<mirror>/<org>/<repo> (Hugging Face-compatible mirror). With cache.mode "
            "None, pods read hf:// and pvc:// sources themselves; s3:// is not read yet. "
            "With cache.mode NodeLocal or SharedPVC, fill Jobs download hf:// and http(s):// "
            "sources into each node's cache or into the claim. Unset: the profile's Hugging "
            "Face repository."
        ),
    )
    revision: Revision = Field(
        default="main",
        description=(
            "Revision of the weights: a branch, tag or (recommended) a 40-character commit "
            "SHA. With cache.mode None and an hf:// source, SGLang loads this revision "
            "(--revision); with a cache, the cache directory is keyed by (source, revision), "
            "so pin a commit SHA for reproducible rollouts."
        ),
    )
    served_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=formats.SERVED_NAME,
        description=(
            "Model name clients send in the OpenAI API `model` field and see in /v1/models "
            "(SGLang --served-model-name). Unset: the profile's Hugging Face repository name."
        ),
    )
    quantization: Quantization = Field(
        default="auto",
        description=(
            "Weight format. auto: serve the checkpoint as published (FP8 for Mistral Small 4, "
            "BF16 for most others). fp8: quantize BF16 weights to FP8 at load time "
            "(--quantization fp8), halving weight memory. nvfp4: the source is a 4-bit NVFP4 "
            "checkpoint (such as mistralai/Mistral-Small-4-119B-2603-NVFP4); B200 only."
        ),
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Secret in this namespace whose keys (HF_TOKEN, and HF_ENDPOINT for a mirror, "
            "several separated by commas for failover) become environment variables of "
            "whoever downloads the weights: the fill Jobs with cache.mode NodeLocal or "
            "SharedPVC, or the "
            "SGLang container with cache.mode None and an hf:// source."
        ),
    )


class CapabilitiesSpec(SpecModel):
    """Which model features to enable, each mapped to SGLang flags; unset follows the profile."""

    reasoning: bool | None = Field(
        default=None,
        description=(
            "Separate reasoning from the answer (SGLang --reasoning-parser, e.g. mistral), so "
            "clients get `reasoning_content`; reasoning_effort stays a per-request field. "
            "Unset: on when the profile supports reasoning. Refused for profiles without it."
        ),
    )
    tool_calling: bool | None = Field(
        default=None,
        description=(
            "Parse tool calls into OpenAI `tool_calls` (SGLang --tool-call-parser, e.g. "
            "mistral). Unset: on when the profile supports tool calling. Refused for profiles "
            "without it."
        ),
    )
