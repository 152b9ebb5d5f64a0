"""The whole MistralModel object as read from the API server or a manifest."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from mistral_operator.api import formats, names
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.status import MistralModelStatus


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads; the API server owns the rest."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=names.MAX_NAME_LENGTH, pattern=formats.DNS1035_LABEL)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class MistralModel(BaseModel):
    """A MistralModel resource: one model served by SGLang replica groups."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["serving.mistral-operator.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["MistralModel"]
    metadata: ObjectMeta
    spec: MistralModelSpec
    status: MistralModelStatus | None = None

    @classmethod
    def from_object(cls, obj: Any) -> Self:
        """Parse a manifest or API object as the API server would: camelCase names only."""
        return cls.model_validate(obj, by_alias=True, by_name=False)
