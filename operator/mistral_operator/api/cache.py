"""`spec.cache`: where pods read the model weights from."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mistral_operator.api import formats
from mistral_operator.api.base import CelRule, Rules, SpecModel, immutable, no_backsteps

CacheMode = Literal["NodeLocal", "SharedPVC", "None"]
DEFAULT_HOST_PATH = "/var/lib/mistral-operator/models"


class PvcCacheSpec(SpecModel):
    """A shared PersistentVolumeClaim that holds the weights."""

    claim_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=formats.DNS1123_SUBDOMAIN,
        description=(
            "PersistentVolumeClaim in this namespace that holds the weights. A fill Job "
            "mounts it read-write and every pod of every group read-only, so it must be "
            "ReadWriteMany (ReadWriteOnce only if everything runs on one node). Its labels "
            "cache.mistral-operator.dev/<cache key> say Pending, Filling, Ready or Failed."
        ),
    )
    sub_path: (
        Annotated[
            str,
            Field(max_length=1024, pattern=r"^[^/\x00][^\x00]*$"),
            Rules(no_backsteps("cache.pvc.subPath")),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "Directory inside the volume that holds the cache-key directories; unset: the "
            "volume root."
        ),
    )


class CacheSpec(SpecModel):
    """Where pods read the model weights."""

    cel_rules = (
        CelRule(
            rule="!has(self.mode) || self.mode != 'SharedPVC' || has(self.pvc)",
            message="cache.pvc is required when cache.mode is SharedPVC",
            field_path=".pvc",
            reason="FieldValueRequired",
            check=lambda c: c.mode != "SharedPVC" or c.pvc is not None,
        ),
        CelRule(
            rule="!has(self.pvc) || (has(self.mode) && self.mode == 'SharedPVC')",
            message="cache.pvc is only used with cache.mode SharedPVC",
            field_path=".pvc",
            check=lambda c: c.mode == "SharedPVC" or c.pvc is None,
        ),
        CelRule(
            rule=(
                "!has(self.prewarmSpareNodes) || self.prewarmSpareNodes == 0 || "
                "!has(self.mode) || self.mode == 'NodeLocal'"
            ),
            message="cache.prewarmSpareNodes is only used with cache.mode NodeLocal",
            field_path=".prewarmSpareNodes",
            check=lambda c: c.mode == "NodeLocal" or c.prewarm_spare_nodes == 0,
        ),
    )

    mode: CacheMode = Field(
        default="NodeLocal",
        description=(
            "Where pods read the weights. NodeLocal: a fill Job on each node a group needs "
            "downloads and verifies model.source at model.revision into <hostPath>/<cache "
            "key>, and groups are placed only on nodes whose fill is Ready; each pod mounts "
            "that directory read-only (progress and failures per node in status.cache). "
            "SharedPVC: one fill Job downloads and verifies them into <subPath>/<cache key> on "
            "pvc, and groups are created once the claim is Ready; each pod mounts pvc "
            "read-only (progress and failures in status.cache.claim). The cache key is a "
            "hash of (model.source, model.revision), shown in status.cache.key. "
            "None: no cache; each pod reads model.source itself at start (hf:// from the Hub "
            "at model.revision, pvc:// from the claim); other sources need a cache."
        ),
    )
    host_path: Annotated[
        str,
        Rules(
            immutable(
                "cache.hostPath is immutable: weights cached under the old path on every "
                "node would be orphaned; create a new MistralModel to move the cache"
            ),
            no_backsteps("cache.hostPath"),
        ),
    ] = Field(
        default=DEFAULT_HOST_PATH,
        min_length=2,
        max_length=1024,
        pattern=formats.ABSOLUTE_PATH,
        description=(
            "NodeLocal mode: absolute directory on each node under which the weights are "
            "read, one subdirectory per cache key. Immutable once created."
        ),
    )
    pvc: PvcCacheSpec | None = Field(
        default=None, description="SharedPVC mode: the volume that holds the weights."
    )
    prewarm_spare_nodes: int = Field(
        default=0,
        ge=0,
        le=1000,
        description=(
            "NodeLocal mode: how many eligible nodes beyond those the groups use to keep "
            "filled for the current revision, so that a scale-up or the replacement of a "
            "failed node starts without a download."
        ),
    )
    fill_timeout_seconds: int = Field(
        default=21600,
        ge=60,
        le=604800,
        description=(
            "NodeLocal and SharedPVC modes: how long one fill Job may run (its "
            "activeDeadlineSeconds) before it counts as failed and is retried."
        ),
    )
