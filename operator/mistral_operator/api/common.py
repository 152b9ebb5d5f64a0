"""Small building blocks shared by several parts of the spec: references and quantities."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StrictInt, StrictStr

from mistral_operator.api import formats
from mistral_operator.api.base import CelRule, Rules, SpecModel

_QUANTITY = re.compile(formats.QUANTITY)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _fits_int64(value: int) -> int:
    """The API server refuses a JSON integer past int64 (its storage type), so parsing
    one from the wire must too; the CRD needs no bound for it."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("must be a 64-bit integer")
    return value


# For an integer with no tighter bounds: `Annotated[int, Field(ge=0), FITS_INT64]`. It goes
# after any `Field` bounds, which pydantic writes into the schema only when they come first.
FITS_INT64 = AfterValidator(_fits_int64)
Int64 = Annotated[int, FITS_INT64]
StrictInt64 = Annotated[StrictInt, FITS_INT64]


def _is_quantity(value: int | str) -> bool:
    if isinstance(value, int):
        return value >= 0
    return _QUANTITY.fullmatch(value) is not None


Quantity = Annotated[
    StrictInt64 | Annotated[StrictStr, Field(max_length=64)],
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
