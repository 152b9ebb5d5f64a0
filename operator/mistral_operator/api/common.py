"""Small building blocks shared by several parts of the spec: references and quantities."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, StrictInt, StrictStr

from mistral_operator.api import formats
from mistral_operator.api.base import CelRule, Rules, SpecModel

_QUANTITY = re.compile(formats.QUANTITY)


def _is_quantity(value: int | str) -> bool:
    if isinstance(value, int):
        return value >= 0
    return _QUANTITY.fullmatch(value) is not None


Quantity = Annotated[
    StrictInt | Annotated[StrictStr, Field(max_length=64)],
    Rules(
        CelRule(
            rule=(f"type(self) == int ? self >= 0 : self.matches(r'{formats.QUANTITY}')"),
            message="must be a Kubernetes quantity such as 16, 500m, 64Gi or 1.5Ti",
            check=_is_quantity,
        )
    ),
]


class LocalObjectReference(SpecModel):
    """A reference to an object by name in the MistralModel's namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=formats.DNS1123_SUBDOMAIN,
        description="Name of the object in the MistralModel's namespace.",
    )


class KeySelector(SpecModel):
    """One key of a Secret or ConfigMap in the MistralModel's namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=formats.DNS1123_SUBDOMAIN,
        description="Name of the Secret or ConfigMap.",
    )
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=formats.CONFIG_KEY,
        description="Key within the Secret or ConfigMap.",
    )
