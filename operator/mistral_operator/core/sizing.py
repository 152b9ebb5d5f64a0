"""Memory arithmetic of one replica, per GPU: weights, KV cache and what is left for batching.

Every GPU of a replica holds its share of the weights (tensor, expert and pipeline
parallelism split them evenly) and the KV cache of the requests its attention group
serves. How the KV cache splits depends on the attention:
- grouped-query attention (GQA): SGLang splits the KV heads over the attention group's
  GPUs, so a request's KV per GPU is its KV divided by the group size;
- multi-head latent attention (MLA, Mistral Small 4): the compressed cache is small but
  SGLang keeps a full copy on every GPU of the attention group.
With data-parallel attention each attention group serves its own requests, so the
requests a replica holds add up over the groups.

A Compact replica takes the fewest GPUs (1, 2, 4 or 8) where each GPU, after the
headroom, holds its weights and still keeps KV_SHARE of its memory (at least one
full-context request) for the KV cache. For Mistral Small 4 this reproduces SGLang's
cookbook: FP8 on 2 H100 or 2 H200 (one H200 would hold the weights with 12% to spare),
on 1 B200; NVFP4 on 1 B200. Any shape must hold at least one full-context request.
"""

from __future__ import annotations

from dataclasses import dataclass

from mistral_operator.catalogue.profiles import (
    GIB,
    HEADROOM,
    GpuProfile,
    ModelProfile,
    Precision,
    precision_of,
)

__all__ = ["HEADROOM", "KV_SHARE", "MemoryPlan", "compact_gpus", "precision_of"]

# Share of each GPU's usable memory a Compact replica keeps for the KV cache, so it can
# batch requests instead of barely holding its weights.
KV_SHARE = 0.20
# Tensor-parallel sizes a replica on one node can take.
GPU_COUNTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class MemoryPlan:
    """What each GPU of a replica holds, and how many full-context requests fit beside it."""

    profile: ModelProfile
    gpu: GpuProfile
    precision: Precision
    context_length: int
    gpus: int
    # Attention data-parallel groups; each spans gpus / attention_dp GPUs.
    attention_dp: int = 1

    @property
    def weights_gib(self) -> float:
        return self.profile.weight_gib(self.precision)

    @property
    def usable_per_gpu_gib(self) -> float:
        return self.gpu.usable_bytes / GIB

    @property
    def weights_per_gpu_gib(self) -> float:
        return self.weights_gib / self.gpus

    @property
    def kv_room_per_gpu_gib(self) -> float:
        return self.usable_per_gpu_gib - self.weights_per_gpu_gib

    @property
    def kv_per_request_gib(self) -> float:
        """KV cache of one full-context request, whole."""
        return self.context_length * self.profile.kv_bytes_per_token / GIB

    @property
    def kv_per_request_per_gpu_gib(self) -> float:
        """What one full-context request's KV takes on each GPU of its attention group."""
        if self.profile.latent_attention:
            return self.kv_per_request_gib  # MLA: a full copy on every GPU
        return self.kv_per_request_gib / (self.gpus // self.attention_dp)

    @property
    def requests_held(self) -> int:
        """Full-context requests whose KV fits beside the weights, over all attention groups."""
        room = self.kv_room_per_gpu_gib
        if room <= 0:
            return 0
        return self.attention_dp * int(room // self.kv_per_request_per_gpu_gib)

    @property
    def holds_one_request(self) -> bool:
        return self.requests_held >= 1

    @property
    def compact_fit(self) -> bool:
        """Room for batching: KV_SHARE of every GPU left for KV, one request at least."""
        return self.holds_one_request and (
            self.kv_room_per_gpu_gib >= KV_SHARE * self.usable_per_gpu_gib
        )

    def summary(self) -> str:
        """The arithmetic in one line, as status and refusals show it."""
        attention = "MLA, cached on every GPU" if self.profile.latent_attention else "GQA"
        return (
            f"{self.gpus} x {self.gpu.name}: weights {self.weights_gib:.1f} GiB "
            f"({self.precision}), {self.weights_per_gpu_gib:.1f} GiB per GPU of "
            f"{self.usable_per_gpu_gib:.1f} GiB usable ({HEADROOM:.0%} headroom); KV room "
            f"{self.kv_room_per_gpu_gib:.1f} GiB per GPU holds {self.requests_held} "
            f"request{'' if self.requests_held == 1 else 's'} "
            f"of {self.context_length} tokens ({self.kv_per_request_gib:.2f} GiB each, "
            f"{attention})"
        )


def compact_gpus(
    profile: ModelProfile, gpu: GpuProfile, precision: Precision, context_length: int
) -> MemoryPlan | None:
    """The smallest one-node replica with room for batching; None if 8 GPUs do not give it."""
    for gpus in GPU_COUNTS:
        plan = MemoryPlan(profile, gpu, precision, context_length, gpus)
        if plan.compact_fit:
            return plan
    return None
