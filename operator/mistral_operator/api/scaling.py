"""`spec.autoscaling`: the bounds the number of replica groups is kept within."""

from __future__ import annotations

from pydantic import Field

from mistral_operator.api.base import CelRule, SpecModel


class AutoscalingSpec(SpecModel):
    """Bounds on the group count; the queue-depth scaler that will move within them is not built."""

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
            "Keep the group count within minReplicas..maxReplicas: spec.replicas below "
            "minReplicas serves minReplicas groups, above maxReplicas serves maxReplicas. "
            "false serves spec.replicas as it is."
        ),
    )
    min_replicas: int = Field(
        default=1, ge=0, le=1024, description="Fewest replica groups; 0 allows scale to zero."
    )
    max_replicas: int = Field(ge=1, le=1024, description="Most replica groups.")
