"""`spec.autoscaling`: the built-in queue-depth autoscaler and its bounds."""

from __future__ import annotations

from pydantic import Field

from mistral_operator.api.base import CelRule, SpecModel


class ScaleUpSpec(SpecModel):
    """How fast the group count may rise."""

    stabilization_window_seconds: int = Field(
        default=0,
        ge=0,
        le=3600,
        description=(
            "A scale-up goes to the lowest count recommended over this window (0: at once)."
        ),
    )
    max_groups_per_step: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Most groups added by one decision.",
    )


class ScaleDownSpec(SpecModel):
    """How fast the group count may fall: slowly, since a new group takes minutes to boot."""

    stabilization_window_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description=(
            "A scale-down goes only to the highest count recommended over this window, so "
            "a short lull removes nothing (300 s, as an HPA)."
        ),
    )
    max_groups_per_step: int = Field(
        default=1,
        ge=1,
        le=1024,
        description=(
            "Most groups removed by one decision; each is drained (no new requests, then "
            "deleted once idle or after rollout.drainTimeoutSeconds), the least loaded first."
        ),
    )


class AutoscalingSpec(SpecModel):
    """The built-in autoscaler: replica groups sized from the requests SGLang has queued."""

    cel_rules = (
        CelRule(
            rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            message="autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
            field_path=".minReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
        ),
    )

    enabled: bool = Field(
        default=True,
        description=(
            "true: the operator sets the group count itself from the queue depth it reads "
            "at the serving groups, within minReplicas..maxReplicas, and writes it to "
            "status.autoscaling.desiredReplicas; spec.replicas is then only the count to "
            "start from. false: spec.replicas is served as it is (kubectl scale, an HPA or "
            "KEDA may drive it through the scale subresource)."
        ),
    )
    min_replicas: int = Field(
        default=1, ge=0, le=1024, description="Fewest replica groups; 0 allows scale to zero."
    )
    max_replicas: int = Field(ge=1, le=1024, description="Most replica groups.")
    target_queue_per_replica: int = Field(
        default=32,
        ge=1,
        le=100000,
        description=(
            "Requests each group should have to serve: waiting plus running "
            "(sglang:num_queue_reqs + sglang:num_running_reqs). The count is "
            "ceil(total / target). Set it near the batch a group runs at full speed "
            "(SGLang's --max-running-requests, or what meets your latency goal)."
        ),
    )
    tolerance: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description=(
            "No change while the load per group is within this fraction of the target "
            "(0.1, as an HPA)."
        ),
    )
    interval_seconds: int = Field(
        default=5,
        ge=1,
        le=300,
        description=(
            "How often every serving group's /metrics is read (in parallel, with a timeout "
            "of at most 2 s) and the count decided."
        ),
    )
    scale_up: ScaleUpSpec = Field(
        default_factory=ScaleUpSpec,
        json_schema_extra={"default": {}},
        description="Limits on adding groups.",
    )
    scale_down: ScaleDownSpec = Field(
        default_factory=ScaleDownSpec,
        json_schema_extra={"default": {}},
        description="Limits on removing groups.",
    )
