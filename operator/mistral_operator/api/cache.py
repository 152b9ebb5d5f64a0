"""`spec.cache`: where fetched weights are kept so pods and later rollouts reuse them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mistral_operator.api import formats
from mistral_operator.api.base import CelRule, Rules, SpecModel, immutable

CacheMode = Literal["NodeLocal", "SharedPVC", "None"]
DEFAULT_HOST_PATH = "/var/lib/mistral-operator/models"


class PvcCacheSpec(SpecModel):
    """A shared PersistentVolumeClaim that holds the weights."""

    claim_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=formats.DNS1123_SUBDOMAIN,
        description=(
            "PersistentVolumeClaim in this namespace. It must be ReadWriteMany (or "
            "ReadOnlyMany once filled) so every node of every group can mount it."
        ),
    )
    sub_path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^[^/\x00][^\x00]*$",
        description="Directory inside the volume to use; unset: the volume root.",
    )


class CacheSpec(SpecModel):
    """How model weights are cached."""

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
            message="cache.prewarmSpareNodes needs cache.mode NodeLocal",
            field_path=".prewarmSpareNodes",
            check=lambda c: c.mode == "NodeLocal" or c.prewarm_spare_nodes == 0,
        ),
    )

    mode: CacheMode = Field(
        default="NodeLocal",
        description=(
            "NodeLocal: a Job on each chosen node fetches and verifies the weights once into "
            "hostPath; pods mount them read-only. SharedPVC: one Job fills the shared volume "
            "in pvc. None: no cache; each pod reads model.source itself at start (slow for "
            "large models)."
        ),
    )
    host_path: Annotated[
        str,
        Rules(
            immutable(
                "cache.hostPath is immutable: weights cached under the old path on every "
                "node would be orphaned; create a new MistralModel to move the cache"
            )
        ),
    ] = Field(
        default=DEFAULT_HOST_PATH,
        min_length=2,
        max_length=1024,
        pattern=formats.ABSOLUTE_PATH,
        description=(
            "NodeLocal mode: absolute directory on each node under which weights are kept, "
            "one subdirectory per (source, revision). Immutable once created."
        ),
    )
    pvc: PvcCacheSpec | None = Field(
        default=None, description="SharedPVC mode: the volume that holds the weights."
    )
    retention: str = Field(
        default="168h",
        max_length=32,
        pattern=formats.DURATION,
        description=(
            "How long cached weights no MistralModel uses are kept before they are deleted, "
            "as a duration such as 168h or 30m. 0s deletes them as soon as they are unused."
        ),
    )
    prewarm_spare_nodes: int = Field(
        default=0,
        ge=0,
        le=64,
        description=(
            "NodeLocal mode: also fill the cache on this many matching nodes that run no "
            "group, so a replacement or scale-up group starts without a download."
        ),
    )
