"""`spec.autoscaling`: adding and removing whole replica groups from SGLang's queue depth."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mistral_operator.api.base import CelRule, SpecModel

DEFAULT_QUEUE_METRIC = "sglang:num_queue_reqs"


class ScaleUpBehavior(SpecModel):
    """How eagerly groups are added."""

    stabilization_window_seconds: int = Field(
        default=0,
        ge=0,
        le=3600,
        description=(
            "Scale up to the lowest recommendation of this many past seconds, so a short "
            "burst does not start a multi-node group."
        ),
    )


class ScaleDownBehavior(SpecModel):
    """How reluctantly groups are removed."""

    stabilization_window_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description=(
            "Scale down to the highest recommendation of this many past seconds, so a lull "
            "does not drop a group that takes minutes to start again."
        ),
    )


class PrometheusSource(SpecModel):
    """Read the queue depth from a Prometheus-compatible API instead of the pods."""

    url: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^https?://[^\s]+$",
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090.",
    )
    query: str | None = Field(
        default=None,
        max_length=4096,
        description=(
            "PromQL giving the total queued requests of this model. Unset: "
            'sum(sglang:num_queue_reqs{model_name="<served name>"}).'
        ),
    )


class MetricsSource(SpecModel):
    """Where the autoscaler reads the queue depth."""

    cel_rules = (
        CelRule(
            rule="!has(self.source) || self.source != 'Prometheus' || has(self.prometheus)",
            message="metrics.prometheus is required when metrics.source is Prometheus",
            field_path=".prometheus",
            reason="FieldValueRequired",
            check=lambda m: m.source != "Prometheus" or m.prometheus is not None,
        ),
    )

    source: Literal["Pods", "Prometheus"] = Field(
        default="Pods",
        description=(
            "Pods: the operator scrapes /metrics of every pod of every group and sums "
            f"{DEFAULT_QUEUE_METRIC}. Prometheus: it queries prometheus.url."
        ),
    )
    interval_seconds: int = Field(
        default=15, ge=5, le=300, description="How often the queue depth is read."
    )
    prometheus: PrometheusSource | None = Field(
        default=None, description="Prometheus source settings, for source Prometheus."
    )


class AutoscalingSpec(SpecModel):
    """Queue-depth autoscaling of whole replica groups by the operator."""

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
            "Let the operator choose the number of groups. false keeps these settings but "
            "serves spec.replicas, which an HPA or KEDA may drive via the scale subresource."
        ),
    )
    min_replicas: int = Field(
        default=1, ge=0, le=1024, description="Fewest replica groups; 0 allows scale to zero."
    )
    max_replicas: int = Field(ge=1, le=1024, description="Most replica groups.")
    target_queue_depth_per_replica: float = Field(
        default=8.0,
        gt=0,
        le=100000,
        description=(
            "Queued requests (sglang:num_queue_reqs, summed over a group's ranks) each group "
            "should carry; desired groups = ceil(total queued / target)."
        ),
    )
    tolerance: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Relative deviation from the target that causes no scaling (like the HPA's).",
    )
    scale_up: ScaleUpBehavior = Field(
        default_factory=ScaleUpBehavior,
        json_schema_extra={"default": {}},
        description="Scale-up behaviour.",
    )
    scale_down: ScaleDownBehavior = Field(
        default_factory=ScaleDownBehavior,
        json_schema_extra={"default": {}},
        description="Scale-down behaviour.",
    )
    metrics: MetricsSource = Field(
        default_factory=MetricsSource,
        json_schema_extra={"default": {}},
        description="Where the queue depth comes from.",
    )
