"""Turns a pydantic JSON Schema into a Kubernetes structural OpenAPI v3 schema.

Kubernetes accepts only a subset of JSON Schema in a CRD: no `$ref`, no `anyOf`
with null, a `type` on every node, `additionalProperties` only for maps, and
int-or-string written as `x-kubernetes-int-or-string`. Optional fields stay
non-nullable so an explicit `null` is pruned to "unset", as pydantic reads it.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

VALIDATIONS = "x-kubernetes-validations"
_DROPPED = frozenset({"title", "$defs", "examples"})


class SchemaError(ValueError):
    """A model uses a JSON Schema construct that has no structural equivalent."""


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's validation schema, in the structural form a CRD requires."""
    raw = model.model_json_schema(mode="validation", by_alias=True)
    return _convert(raw, raw.get("$defs", {}), path=model.__name__)


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    node = _inline(node, defs, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            # `false` (from extra="forbid") is implied: structural schemas prune unknown fields.
            if isinstance(value, dict):
                out[key] = _convert(value, defs, f"{path}{{}}")
        else:
            out.update(_openapi_v3_keyword(key, value))
    if "properties" in out and "additionalProperties" in out:
        raise SchemaError(f"{path}: an object has both properties and additionalProperties")
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        out["type"] = _infer_type(out, path)
    return dict(sorted(out.items(), key=lambda item: _key_rank(item[0])))


# Keys in the order a reader wants them: what it is, then constraints, then children.
_KEY_ORDER = (
    "description",
    "type",
    "x-kubernetes-int-or-string",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "additionalProperties",
    "items",
)


def _key_rank(key: str) -> tuple[int, str]:
    return (_KEY_ORDER.index(key), key) if key in _KEY_ORDER else (len(_KEY_ORDER), key)


def _openapi_v3_keyword(key: str, value: Any) -> dict[str, Any]:
    """JSON Schema 2020-12 keywords in their OpenAPI v3.0 spelling."""
    if key == "const":
        return {"enum": [value]}
    if key == "exclusiveMinimum":
        return {"minimum": value, "exclusiveMinimum": True}
    if key == "exclusiveMaximum":
        return {"maximum": value, "exclusiveMaximum": True}
    return {key: value}


def _inline(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Resolve `$ref`, `allOf: [one]` and `anyOf` with null or int|string into one node."""
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        node = _merge(target, node)
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise SchemaError(f"{path}: allOf with {len(parts)} members")
        node = _merge(_inline(parts[0], defs, path), node)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) == 1:
            node = _merge(_inline(branches[0], defs, path), node)
        elif sorted(b.get("type", "") for b in branches) == ["integer", "string"]:
            # Constraints of either branch apply only to values of that type.
            node["x-kubernetes-int-or-string"] = True
            for branch in branches:
                node.update({k: v for k, v in branch.items() if k != "type"})
        else:
            raise SchemaError(f"{path}: anyOf over {branches} has no structural form")
    if "oneOf" in node:
        raise SchemaError(f"{path}: oneOf has no structural form")
    if "$ref" in node or "allOf" in node or "anyOf" in node:
        return _inline(node, defs, path)
    return node


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Field-level keys win over the referenced type's; validation rules add up."""
    merged = {**base, **override}
    rules = base.get(VALIDATIONS, []) + override.get(VALIDATIONS, [])
    if rules:
        merged[VALIDATIONS] = rules
    return merged


def _infer_type(node: dict[str, Any], path: str) -> str:
    if "properties" in node or "additionalProperties" in node:
        return "object"
    if "items" in node:
        return "array"
    values = node.get("enum")
    if values:
        kinds = {type(v) for v in values}
        if kinds == {str}:
            return "string"
        if kinds == {int}:
            return "integer"
    raise SchemaError(f"{path}: cannot tell the type of {node}")
