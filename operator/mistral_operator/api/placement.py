"""`spec.placement`: which nodes replica groups may use and how their pods reach each other."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from mistral_operator.api import formats
from mistral_operator.api.base import CelRule, Rules, SpecModel
from mistral_operator.api.common import FITS_INT64, Int64

_FABRIC_ENV_PATTERN = r"^(NCCL|GLOO|NVSHMEM|UCX)_[A-Z0-9_]+$"
_FABRIC_ENV = re.compile(_FABRIC_ENV_PATTERN)

LabelKey = Annotated[str, Field(min_length=1, max_length=317, pattern=formats.QUALIFIED_NAME)]
LabelValue = Annotated[str, Field(max_length=63, pattern=formats.LABEL_VALUE)]


class Toleration(SpecModel):
    """A node taint the model's pods tolerate (same meaning as in a Pod spec)."""

    cel_rules = (
        CelRule(
            rule=(
                "!has(self.operator) || self.operator != 'Exists' || "
                "!has(self.value) || self.value == ''"
            ),
            message="value must be empty when operator is Exists",
            field_path=".value",
            check=lambda t: t.operator != "Exists" or not t.value,
        ),
        CelRule(
            rule="has(self.key) || (has(self.operator) && self.operator == 'Exists')",
            message="a toleration without key must use operator Exists",
            field_path=".operator",
            check=lambda t: t.key is not None or t.operator == "Exists",
        ),
        CelRule(
            rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="tolerationSeconds is only allowed with effect NoExecute",
            field_path=".tolerationSeconds",
            check=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
        ),
    )

    key: LabelKey | None = Field(
        default=None, description="Taint key; unset together with operator Exists matches all."
    )
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Equal matches key and value; Exists matches the key."
    )
    value: LabelValue | None = Field(default=None, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; unset matches all effects."
    )
    toleration_seconds: Annotated[int, Field(ge=0), FITS_INT64] | None = Field(
        default=None,
        description="For NoExecute: how long the pod stays bound after the taint appears.",
    )


class RdmaSpec(SpecModel):
    """Options for the inter-node fabric NCCL, Gloo and DeepEP use (InfiniBand or RoCE)."""

    ipc_lock: bool = Field(
        default=True,
        description="Add the IPC_LOCK capability so RDMA can pin (register) memory.",
    )
    socket_interface: str | None = Field(
        default=None,
        max_length=256,
        pattern=formats.NCCL_LIST,
        description=(
            "Network interface(s) for bootstrap and socket traffic, set as NCCL_SOCKET_IFNAME "
            "and GLOO_SOCKET_IFNAME, e.g. eth0 or ^lo,docker."
        ),
    )
    ib_hca: str | None = Field(
        default=None,
        max_length=256,
        pattern=formats.NCCL_LIST,
        description="InfiniBand/RoCE adapters NCCL may use (NCCL_IB_HCA), e.g. mlx5_0,mlx5_1.",
    )
    resources: Annotated[
        dict[str, Int64],
        Rules(
            CelRule(
                rule="self.all(k, k.contains('/') && k != 'nvidia.com/gpu')",
                message=(
                    "keys must be extended resource names such as rdma/ib or "
                    "nvidia.com/hostdev; GPUs come from spec.gpu"
                ),
                check=lambda r: all("/" in k and k != "nvidia.com/gpu" for k in r),
            )
        ),
    ] = Field(
        default_factory=dict,
        max_length=8,
        description=(
            "Extended resources each pod requests for RDMA devices, e.g. {rdma/ib: 8} or "
            "{nvidia.com/hostdev: 8}, as the cluster's device plugin names them."
        ),
    )
    env: Annotated[
        dict[str, Annotated[str, Field(max_length=1024)]],
        Rules(
            CelRule(
                rule=f"self.all(k, k.matches(r'{_FABRIC_ENV_PATTERN}'))",
                message="keys must be NCCL_*, GLOO_*, NVSHMEM_* or UCX_* variables",
                check=lambda e: all(_FABRIC_ENV.fullmatch(k) for k in e),
            )
        ),
    ] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Further fabric settings as environment variables, e.g. "
            "{NCCL_IB_GID_INDEX: '3', NCCL_NET_GDR_LEVEL: PHB}."
        ),
    )


class PlacementSpec(SpecModel):
    """Where replica groups may be placed and how their pods are networked."""

    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Node labels a node must have, in addition to the GPU product label the operator "
            "matches from spec.gpu.product."
        ),
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Taints the pods tolerate. The operator always tolerates the nvidia.com/gpu taint "
            "of GPU node pools; list any others here."
        ),
    )
    topology_key: LabelKey | None = Field(
        default=None,
        description=(
            "Node label whose value all nodes of one replica group must share, e.g. an "
            "InfiniBand leaf or block label such as network.topology.nvidia.com/block. "
            "Unset: any nodes."
        ),
    )
    host_network: bool = Field(
        default=False,
        description=(
            "Run pods in the node's network namespace (with dnsPolicy ClusterFirstWithHostNet), "
            "as many RDMA setups need. The leader is then reached at its node's InternalIP."
        ),
    )
    rdma: RdmaSpec | None = Field(
        default=None,
        description="Inter-node fabric options (IPC_LOCK, NCCL/Gloo interfaces, RDMA devices).",
    )
    priority_class_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=formats.DNS1123_SUBDOMAIN,
        description="PriorityClass of the pods, e.g. to let serving preempt batch work.",
    )
