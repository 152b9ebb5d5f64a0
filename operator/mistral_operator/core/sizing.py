"""Memory arithmetic of one replica: weights plus KV cache against the GPUs that hold them.

A replica fits when its weights and the KV cache for the requests it must hold at once
stay within its GPUs' memory less a headroom for activations, CUDA graphs and
communication buffers. The Compact shape takes the smallest GPU count where KV for
TARGET_SEQUENCES full-context requests fits; any shape must at least hold one.
With these figures the plan for Mistral Small 4 matches SGLang's cookbook: FP8 on 2
H100 or H200, on 1 B200; NVFP4 on 1 B200.
"""

from __future__ import annotations

from dataclasses import dataclass

from mistral_operator.catalogue.profiles import GIB, GpuProfile, ModelProfile, Precision

# Share of GPU memory kept free of weights and KV (SGLang's static memory fraction
# leaves about as much for activations and CUDA graphs).
HEADROOM = 0.10
# Full-context requests a Compact replica holds KV for at once.
TARGET_SEQUENCES = 4
# Tensor-parallel sizes a replica on one node can take.
GPU_COUNTS = (1, 2, 4, 8)


def precision_of(quantization: str, profile: ModelProfile) -> Precision:
    """The precision weights are served in: as published, FP8, or NVFP4."""
    if quantization == "fp8":
        return "fp8"
    if quantization == "nvfp4":
        return "fp4"
    return profile.native_precision


@dataclass(frozen=True)
class MemoryPlan:
    """What a replica holds in GPU memory, and what its GPUs offer."""

    profile: ModelProfile
    gpu: GpuProfile
    precision: Precision
    context_length: int
    gpus: int
    sequences: int

    @property
    def weights_gib(self) -> float:
        return self.profile.weight_gib(self.precision)

    @property
    def kv_per_sequence_gib(self) -> float:
        return self.context_length * self.profile.kv_bytes_per_token / GIB

    @property
    def kv_gib(self) -> float:
        return self.sequences * self.kv_per_sequence_gib

    @property
    def need_gib(self) -> float:
        return self.weights_gib + self.kv_gib

    @property
    def offered_gib(self) -> float:
        """The replica's GPU memory after the headroom."""
        return self.gpus * self.gpu.memory_gib * (1 - HEADROOM)

    @property
    def fits(self) -> bool:
        return self.need_gib <= self.offered_gib

    @property
    def sequences_held(self) -> int:
        """Full-context requests whose KV fits beside the weights."""
        room = self.offered_gib - self.weights_gib
        return max(0, int(room // self.kv_per_sequence_gib)) if room > 0 else 0

    def summary(self) -> str:
        """The arithmetic in one line, as status and refusals show it."""
        return (
            f"weights {self.weights_gib:.1f} GiB ({self.precision}) + KV {self.kv_gib:.1f} GiB "
            f"({self.sequences} x {self.context_length} tokens) = {self.need_gib:.1f} GiB; "
            f"{self.gpus} x {self.gpu.name} offer {self.offered_gib:.1f} GiB after "
            f"{HEADROOM:.0%} headroom"
        )


def compact_gpus(
    profile: ModelProfile, gpu: GpuProfile, precision: Precision, context_length: int
) -> MemoryPlan | None:
    """The smallest one-node replica holding the weights and TARGET_SEQUENCES requests."""
    for gpus in GPU_COUNTS:
        plan = MemoryPlan(profile, gpu, precision, context_length, gpus, TARGET_SEQUENCES)
        if plan.fits:
            return plan
    return None
