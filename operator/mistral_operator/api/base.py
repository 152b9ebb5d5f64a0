"""Base classes and rule helpers that make one pydantic model both the validator and the CRD schema.

A `CelRule` is written once with its CEL expression (enforced by the API server at
`kubectl apply` time) and, where it does not need the old object, an equivalent
Python check (enforced when the operator parses a resource). Model-level rules live
in a class's `cel_rules`; field-level rules are attached with `Annotated[..., Rules(...)]`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

VALIDATIONS = "x-kubernetes-validations"


@dataclass(frozen=True)
class CelRule:
    """One validation rule, as CEL for the API server and as Python for the operator."""

    rule: str
    message: str
    check: Callable[[Any], bool] | None = None
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out

    def enforce(self, value: Any) -> None:
        if self.check is not None and not self.check(value):
            raise RuleViolationError(self.message, self.field_path)


class RuleViolationError(ValueError):
    """A CelRule's Python twin refused a value; ``field_path`` is the rule's, relative to
    the model it is declared on (as the API server reports it)."""

    def __init__(self, message: str, field_path: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field_path = field_path


def matches(pattern: str, message: str) -> CelRule:
    """A string-format rule whose error names the format in words instead of a regex.

    CEL's `matches` is an RE2 search and the twin a Python fullmatch: they agree because
    the pattern is anchored and keeps to the subset `api.formats` describes.
    """
    compiled = re.compile(pattern)
    return CelRule(
        rule=f"self.matches(r'{pattern}')",
        message=message,
        check=lambda value: compiled.fullmatch(value) is not None,
    )


def no_backsteps(field: str) -> CelRule:
    """A path with no `..` element: the API server refuses one in a hostPath or subPath
    of the pods and Jobs the operator would make from it."""
    return CelRule(
        rule=(
            "self != '..' && !self.startsWith('../') && !self.contains('/../') "
            "&& !self.endsWith('/..')"
        ),
        message=f"{field} must not contain a '..' path element",
        check=lambda value: ".." not in value.split("/"),
    )


def immutable(message: str) -> CelRule:
    """A transition rule: the value may be set at creation but never changed afterwards."""
    return CelRule(rule="self == oldSelf", message=message)


class Rules:
    """Attaches field-level `CelRule`s to a type: `Annotated[str, Rules(matches(...))]`."""

    __slots__ = ("rules",)

    def __init__(self, *rules: CelRule) -> None:
        self.rules = rules

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        rules = self.rules

        def enforce(value: Any) -> Any:
            for rule in rules:
                rule.enforce(value)
            return value

        return core_schema.no_info_after_validator_function(enforce, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault(VALIDATIONS, []).extend(rule.to_schema() for rule in self.rules)
        return json_schema


def _add_model_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema.setdefault(VALIDATIONS, []).extend(rule.to_schema() for rule in rules)


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python, and the class's `cel_rules` enforced.

    Python code may build a model with snake_case keyword arguments, but data parsed with
    `model_validate` or `model_validate_json` is wire data: only the camelCase names count
    there, so `gpus_per_node` is an unknown field as it is to the API server.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        json_schema_extra=_add_model_rules,
        # The default, pinned: `$` is the end of the text and classes are what they say,
        # as in RE2 (Python's `re` differs on both; see api.formats).
        regex_engine="rust-regex",
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        """Parse wire data (a manifest, an API object): camelCase names only, unless the
        caller passes `by_name=True`."""
        return super().model_validate(obj, **_wire_names(options))

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **options: Any) -> Self:
        """Parse wire JSON: camelCase names only, as `model_validate`."""
        return super().model_validate_json(json_data, **_wire_names(options))

    @model_validator(mode="after")
    def _enforce_cel_rules(self) -> Self:
        for rule in self.cel_rules:
            rule.enforce(self)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@cache
def _field_names(cls: type[BaseModel]) -> frozenset[str]:
    """A model's field names on the wire (a snake_case name there is an unknown field)."""
    return frozenset(info.alias or name for name, info in cls.model_fields.items())


def _wire_names(options: dict[str, Any]) -> dict[str, Any]:
    """Validation options that read field names as the API server does, unless overridden."""
    return {"by_alias": True, "by_name": False, **options}


class SpecModel(ApiModel):
    """A part of `spec`: strict types and unknown fields refused, as the API server does.

    A field set to null is dropped (and so defaulted), as the API server does before it
    stores an object, so that a manifest checked offline gets its answer.

    A whole number written as a float (`replicas: 2.0`) stays refused. The API server's
    answer to one depends on the spec: its schema takes it, but a CEL rule that reads the
    field fails on it ("expected int, got float64"), and so does the scale subresource's
    replicas; an integer field no rule reads for that spec is stored as the integer. Being
    stricter on such a manifest is the safe side: it says to write the integer.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _as_stored(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = _field_names(cls)
        # An unknown field stays one, null or not.
        return {k: v for k, v in data.items() if v is not None or k not in known}


class StatusModel(ApiModel):
    """A part of `status`: written by the operator; unknown fields ignored for compatibility."""

    model_config = ConfigDict(extra="ignore")
