"""`status` of a MistralModel: what the operator observed and decided, written only by it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from mistral_operator.api import formats
from mistral_operator.api.base import StatusModel
from mistral_operator.api.cache import CacheMode
from mistral_operator.api.topology import MoeA2ABackend, Shape

Phase = Literal["Unschedulable", "Starting", "Ready", "Progressing", "Degraded", "Failed"]
GroupState = Literal["Starting", "Serving", "Draining", "Failed", "Restarting", "Held"]
ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """One aspect of the model's state, in the standard Kubernetes condition shape."""

    type: str = Field(
        max_length=316,
        pattern=formats.CONDITION_TYPE,
        description="Condition type: Ready, Progressing, Degraded, Schedulable or CacheReady.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )
    last_transition_time: datetime = Field(
        description="When status last changed from one value to another."
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=formats.CONDITION_REASON,
        description="CamelCase machine-readable reason for the last transition.",
    )
    message: str = Field(
        default="", max_length=32768, description="Human-readable details, e.g. what is missing."
    )


class GroupMember(StatusModel):
    """One rank of a replica group: a pod pinned to a node."""

    rank: int = Field(ge=0, description="SGLang --node-rank; 0 is the leader.")
    node: str = Field(description="Node the pod is pinned to.")
    pod: str | None = Field(default=None, description="Pod name, once created.")
    ready: bool = Field(default=False, description="Whether the pod is ready.")
    restarts: int = Field(default=0, ge=0, description="Container restarts of the pod.")


class GroupFailure(StatusModel):
    """The last failure that made a group restart."""

    rank: int = Field(ge=0, description="Rank whose pod failed.")
    node: str = Field(description="Node the failed pod ran on.")
    reason: str = Field(description="Why, e.g. Error, OOMKilled, NodeLost, PodDeleted.")
    exit_code: int | None = Field(default=None, description="Container exit code, if it exited.")
    message: str = Field(default="", description="Details, e.g. the container's last message.")
    time: datetime = Field(description="When the failure was observed.")


class GroupStatus(StatusModel):
    """One replica group: N pods on N nodes serving one copy of the model."""

    name: str = Field(description="Group name; also the mistral-operator.dev/group label value.")
    revision: str = Field(description="Pod-template revision the group runs.")
    state: GroupState = Field(description="Where the group is in its life cycle.")
    serving: bool = Field(
        default=False, description="Whether the client Service sends requests to its leader."
    )
    members: list[GroupMember] = Field(
        default_factory=list, description="The group's ranks and the nodes they run on."
    )
    since: datetime | None = Field(default=None, description="When the group entered its state.")
    recreations: int = Field(
        default=0, ge=0, description="Times the group was recreated after a failure."
    )
    drain_started: datetime | None = Field(
        default=None,
        description=(
            "When the group stopped taking requests to leave (Draining); it is deleted "
            "once its leader is idle or rollout.drainTimeoutSeconds passed."
        ),
    )
    last_failure: GroupFailure | None = Field(
        default=None, description="The failure behind the latest recreation."
    )


class TopologyStatus(StatusModel):
    """The planned shape of one replica: spec values where set, planned values elsewhere."""

    shape: Shape | None = Field(default=None, description="Compact, Node or MultiNode.")
    gpu_product: str | None = Field(default=None, description="GPU product the plan targets.")
    gpus_per_node: int | None = Field(default=None, description="GPUs each pod requests.")
    replicas_per_node: int | None = Field(
        default=None, description="Replicas one node holds: several for Compact, else 1."
    )
    memory: str | None = Field(
        default=None,
        description=(
            "The memory arithmetic of one replica: weights plus KV cache for the requests it "
            "is sized for, against what its GPUs offer after headroom."
        ),
    )
    nodes_per_replica: int | None = Field(default=None, description="Nodes (pods) per group.")
    gpus_per_replica: int | None = Field(default=None, description="GPUs per group.")
    tensor_parallel_size: int | None = Field(default=None, description="--tp-size.")
    pipeline_parallel_size: int | None = Field(default=None, description="--pp-size.")
    expert_parallel_size: int | None = Field(default=None, description="--ep-size.")
    attention_data_parallel_size: int | None = Field(default=None, description="--attn-dp-size.")
    moe_a2a_backend: MoeA2ABackend | None = Field(
        default=None, alias="moeA2ABackend", description="--moe-a2a-backend."
    )
    context_length: int | None = Field(default=None, description="--context-length.")


FillState = Literal["Pending", "Filling", "Ready", "Failed"]
CacheState = Literal["Ready", "Filling", "Failed", "NotCached"]


class CacheFillStatus(StatusModel):
    """The weight cache of the current revision in one place: a node, or the shared claim."""

    state: FillState = Field(
        description=(
            "Pending: the fill Job waits to start (or, for a claim, the claim does not exist "
            "yet); Filling: it downloads; Ready: it holds verified weights; Failed: the last "
            "fill failed (it is retried by itself)."
        )
    )
    job: str | None = Field(default=None, description="The fill Job, while it exists.")
    attempts: int | None = Field(default=None, ge=0, description="Fill Jobs started so far.")
    start_time: datetime | None = Field(default=None, description="When the last fill started.")
    completion_time: datetime | None = Field(
        default=None, description="When the last fill ended (Ready or Failed)."
    )
    bytes_done: int | None = Field(default=None, ge=0, description="Bytes on disk and verified.")
    bytes_total: int | None = Field(default=None, ge=0, description="Bytes of the revision.")
    bytes_per_second: float | None = Field(
        default=None, ge=0, description="Download rate of the last or running fill."
    )
    reason: str | None = Field(
        default=None,
        description=(
            "Why the last fill failed: AuthRefused, NotFound, DiskFull, ChecksumMismatch, "
            "SourceUnreachable, Locked, DeadlineExceeded, Unexpected."
        ),
    )
    file: str | None = Field(default=None, description="The file a failure concerns.")
    exit_code: int | None = Field(default=None, description="Exit code of the failed fill.")
    message: str | None = Field(
        default=None,
        description="The fill's own one-line message (for a claim: also why it waits).",
    )
    retry_at: datetime | None = Field(
        default=None, description="When a failed fill's Job is started again."
    )


class CacheNodeStatus(CacheFillStatus):
    """NodeLocal: the weight cache of the current revision on one node the model needs."""

    node: str = Field(description="Node name.")


class CacheClaimStatus(CacheFillStatus):
    """SharedPVC: the weights of the current revision on the claim (cache.pvc)."""

    name: str = Field(description="PersistentVolumeClaim name, in the model's namespace.")


class CacheStatus(StatusModel):
    """Where the pods read the weights, and how far the caches of the current revision are."""

    mode: CacheMode | None = Field(default=None, description="Cache mode in use.")
    key: str | None = Field(
        default=None,
        description="Cache key: a stable hash of (source, revision), the directory pods read.",
    )
    source: str | None = Field(default=None, description="Resolved weights source URI.")
    revision: str | None = Field(default=None, description="Revision of the weights.")
    last_good_key: str | None = Field(
        default=None,
        description=(
            "Cache key of the last revision every group served: kept on the nodes, never "
            "garbage-collected, while this model exists."
        ),
    )
    state: CacheState | None = Field(
        default=None,
        description=(
            "Ready: every group's nodes (or the claim) hold the weights; Filling: fills a "
            "group needs run (or wait for the claim); Failed: a needed fill failed; "
            "NotCached: cache.mode None, pods download at start."
        ),
    )
    message: str | None = Field(default=None, description="The state in words.")
    ready_nodes: int | None = Field(default=None, ge=0, description="Nodes Ready.")
    filling_nodes: int | None = Field(default=None, ge=0, description="Nodes Filling.")
    pending_nodes: int | None = Field(default=None, ge=0, description="Nodes Pending.")
    failed_nodes: int | None = Field(default=None, ge=0, description="Nodes Failed.")
    bytes_done: int | None = Field(
        default=None, ge=0, description="Bytes verified on the listed nodes (or the claim), summed."
    )
    bytes_total: int | None = Field(
        default=None, ge=0, description="Bytes the listed nodes (or the claim) need, summed."
    )
    bytes_per_second: float | None = Field(
        default=None, ge=0, description="Summed download rate of the running fills."
    )
    nodes: list[CacheNodeStatus] = Field(
        default_factory=list,
        description="Per node the model uses or keeps warm: fill state, progress, failure.",
    )
    claim: CacheClaimStatus | None = Field(
        default=None,
        description="SharedPVC: the claim's fill state, progress and failure.",
    )


class Recommendation(StatusModel):
    """One run of the autoscaler's recommendation: the count, and since when it held."""

    since: datetime = Field(description="When this recommendation began.")
    replicas: int = Field(ge=0, description="Groups recommended.")


class AutoscalingStatus(StatusModel):
    """The built-in autoscaler's last decision and what it saw."""

    desired_replicas: int | None = Field(
        default=None, ge=0, description="Groups decided: the operator converges to this."
    )
    current_replicas: int | None = Field(
        default=None, ge=0, description="Groups serving or starting when it decided."
    )
    recommended_replicas: int | None = Field(
        default=None,
        ge=0,
        description="ceil(queue / targetQueuePerReplica) within minReplicas..maxReplicas, "
        "before the stabilization windows and step limits.",
    )
    queue: int | None = Field(
        default=None,
        ge=0,
        description="Requests waiting or running at the serving groups, as last read.",
    )
    last_scale_time: datetime | None = Field(
        default=None, description="When the autoscaler last changed the count."
    )
    last_scale_reason: str | None = Field(default=None, description="From what, to what, why.")
    message: str | None = Field(default=None, description="The latest decision in words.")
    recommendations: list[Recommendation] = Field(
        default_factory=list,
        description=(
            "Recommendations within the longest stabilization window, kept so that a "
            "restarted operator decides as the running one would have."
        ),
    )


class EndpointStatus(StatusModel):
    """Where clients reach the model."""

    service: str | None = Field(default=None, description="Client Service name.")
    url: str | None = Field(
        default=None, description="OpenAI-compatible base URL inside the cluster, ending in /v1."
    )
    served_name: str | None = Field(
        default=None, description="Model name to send in the `model` field of requests."
    )


class RolloutStatus(StatusModel):
    """Where the rollout to the update revision is, and why it waits."""

    revision: str | None = Field(default=None, description="The update revision this concerns.")
    step: str | None = Field(
        default=None,
        description=(
            "Complete, CreatingGroups, WaitingForReadiness, WaitingForWeights, "
            "WaitingForSurgeRoom, Draining, DrainThenReplace or RolledBack."
        ),
    )
    message: str | None = Field(default=None, description="The step in words.")
    group_failures: int = Field(
        default=0,
        ge=0,
        description="Failures of groups of the update revision; 3 fail the rollout.",
    )
    surge_blocked_since: datetime | None = Field(
        default=None,
        description=(
            "Since when a surge group finds no free nodes; after "
            "rollout.surgeFallbackSeconds groups are replaced one at a time."
        ),
    )
    failed_revision: str | None = Field(
        default=None,
        description=(
            "The update revision, once its rollout failed; with rollout.autoRollback the "
            "last good revision (currentRevision) is served until the spec changes."
        ),
    )
    failure_reason: str | None = Field(
        default=None, description="ProgressDeadlineExceeded or GroupsFailed."
    )
    failure_message: str | None = Field(default=None, description="Why the rollout failed.")


class MistralModelStatus(StatusModel):
    """The observed state of a served Mistral model."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status describes."
    )
    phase: Phase | None = Field(
        default=None,
        description=(
            "One-word summary for humans: Unschedulable, Starting, Ready, Progressing, "
            "Degraded or Failed (the spec cannot be served). Automation should use conditions."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Progressing, Degraded and Schedulable conditions.",
    )
    replicas: int = Field(default=0, ge=0, description="Replica groups that exist.")
    ready_replicas: int = Field(
        default=0, ge=0, description="Groups whose pods are all ready; their leaders serve."
    )
    updated_replicas: int = Field(
        default=0, ge=0, description="Groups running the update revision."
    )
    desired_replicas: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Groups the operator is converging to: spec.replicas, kept within "
            "autoscaling.minReplicas..maxReplicas while autoscaling is enabled."
        ),
    )
    selector: str | None = Field(
        default=None,
        description="Label selector of the leader pods, for the scale subresource (HPA, KEDA).",
    )
    topology: TopologyStatus | None = Field(default=None, description="The planned replica shape.")
    groups: list[GroupStatus] = Field(
        default_factory=list, description="Every replica group and its nodes."
    )
    cache: CacheStatus | None = Field(default=None, description="Where pods read the weights.")
    autoscaling: AutoscalingStatus | None = Field(
        default=None, description="How the group count was chosen, when autoscaling is enabled."
    )
    endpoint: EndpointStatus | None = Field(default=None, description="Where clients connect.")
    current_revision: str | None = Field(
        default=None, description="Revision every group ran after the last completed rollout."
    )
    update_revision: str | None = Field(
        default=None, description="Revision of the current spec; groups are rolled to it."
    )
    rollout: RolloutStatus | None = Field(
        default=None, description="The rollout to the update revision, step by step."
    )
