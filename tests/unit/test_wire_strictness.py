"""Wire strictness: parsing a spec refuses what the API server refuses, field names and integers.

The API server knows a field by its camelCase name only (`gpus_per_node` is an unknown
field to it) and stores integers as int64, refusing `true`, `1.5` and numbers past int64.
`model_validate` reads wire data the same way, while Python code may still build models
with snake_case keyword arguments. (`1.0` is no test here: the API server takes it as 1,
and the operator only ever reads what the API server stored.)
"""

from __future__ import annotations

import itertools
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from mistral_operator.api.base import ApiModel
from mistral_operator.api.common import INT64_MAX, INT64_MIN
from mistral_operator.api.crd import custom_resource_definition
from mistral_operator.api.placement import PlacementSpec, Toleration
from mistral_operator.api.resource import MistralModel
from mistral_operator.api.rollout import RolloutSpec
from mistral_operator.api.runtime import RuntimeSpec
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.status import MistralModelStatus

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = {"gpu": {"product": "H200"}}
MAP_KEY = "example.com/key"  # a key of a map (rdma resources need a '/')
Path = tuple[str | int, ...]


def api_models(root: type[BaseModel]) -> list[type[ApiModel]]:
    """The API models reachable from `root` through its fields' types."""
    seen: dict[type[ApiModel], None] = {}
    todo: list[Any] = [root]
    while todo:
        tp = todo.pop()
        if isinstance(tp, type) and issubclass(tp, ApiModel):
            if tp in seen:
                continue
            seen[tp] = None
            todo.extend(f.annotation for f in tp.model_fields.values())
        todo.extend(typing.get_args(tp))
        if isinstance(tp, types.UnionType):
            todo.extend(tp.__args__)
    return list(seen)


def snake_named_fields() -> list[tuple[type[ApiModel], str]]:
    """(model, field name) of every spec field whose wire name is different."""
    return [
        (model, name)
        for model in api_models(MistralModelSpec)
        for name, field in model.model_fields.items()
        if field.alias and field.alias != name
    ]


def errors_at(exc: ValidationError, loc: Path) -> list[str]:
    """The error types reported at `loc` or below it."""
    return [e["type"] for e in exc.errors() if tuple(e["loc"][: len(loc)]) == loc]


@pytest.mark.parametrize(
    ("model", "name"), snake_named_fields(), ids=lambda v: getattr(v, "__name__", v)
)
def test_snake_case_key_is_an_unknown_field(model: type[ApiModel], name: str) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate({name: None})
    assert "extra_forbidden" in errors_at(refused.value, (name,))
    with pytest.raises(ValidationError) as json_refused:
        model.model_validate_json(f'{{"{name}": null}}')
    assert "extra_forbidden" in errors_at(json_refused.value, (name,))


def test_the_spec_has_snake_named_fields_to_check() -> None:
    names = {name for _, name in snake_named_fields()}
    assert {"gpus_per_node", "context_length", "toleration_seconds", "max_surge"} <= names


def test_nested_snake_case_key_is_refused_in_a_whole_spec() -> None:
    with pytest.raises(ValidationError) as refused:
        MistralModelSpec.model_validate({"gpu": {"product": "H200", "gpus_per_node": 8}})
    assert errors_at(refused.value, ("gpu", "gpus_per_node")) == ["extra_forbidden"]
    with pytest.raises(ValidationError):
        MistralModel.from_object(
            {"api_version": "serving.mistral-operator.dev/v1alpha1", "kind": "MistralModel"}
        )


def test_python_code_still_builds_models_by_field_name() -> None:
    runtime = RuntimeSpec(context_length=65536, startup_timeout_seconds=600)
    assert runtime.to_wire()["contextLength"] == 65536
    spec = MistralModelSpec(gpu={"product": "H200", "gpus_per_node": 4})  # type: ignore[arg-type]
    assert spec.gpu.gpus_per_node == 4
    # A caller that means to read Python names says so.
    opted = MistralModelSpec.model_validate(
        {"gpu": {"product": "H200", "gpus_per_node": 4}}, by_name=True
    )
    assert opted == spec


def test_status_snake_case_key_is_ignored_like_an_unknown_field() -> None:
    """The API server prunes unknown status fields; reading one ignores it the same way."""
    status = MistralModelStatus.model_validate({"readyReplicas": 2, "desired_replicas": 9})
    assert status.ready_replicas == 2
    assert status.desired_replicas != 9


def integer_paths() -> Iterator[tuple[Path, bool]]:
    """(path, int-or-string) of every integer field of the CRD's spec."""
    spec = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    yield from _integers(spec["properties"]["spec"], ())


def _integers(node: dict[str, Any], path: Path) -> Iterator[tuple[Path, bool]]:
    if node.get("type") == "integer" or node.get("x-kubernetes-int-or-string"):
        yield path, bool(node.get("x-kubernetes-int-or-string"))
    for name, child in node.get("properties", {}).items():
        yield from _integers(child, (*path, name))
    if isinstance(node.get("additionalProperties"), dict):
        yield from _integers(node["additionalProperties"], (*path, MAP_KEY))
    if "items" in node:
        yield from _integers(node["items"], (*path, 0))


def spec_with(path: Path, value: Any) -> dict[str, Any]:
    """BASE with `value` at `path` (an int step is the first item of a list)."""
    spec = {**BASE, "gpu": dict(BASE["gpu"])}
    node: Any = spec
    for step, nxt in itertools.pairwise(path):
        child: Any = [] if isinstance(nxt, int) else {}
        if isinstance(node, list):
            node.append(child)
        else:
            child = node.setdefault(step, child)
        node = child
    if isinstance(node, list):
        node.append(value)
    else:
        node[path[-1]] = value
    return spec


# The API server's answer to each: a boolean, a fraction and numbers past int64 are no
# integers; a string is no integer unless the field is int-or-string.
NOT_INTEGERS: tuple[Any, ...] = (True, False, 1.5, INT64_MAX + 1, INT64_MIN - 1, 2**100)


def integer_cases() -> Iterator[Any]:
    for path, int_or_string in integer_paths():
        values = NOT_INTEGERS if int_or_string else (*NOT_INTEGERS, "1")
        for value in values:
            yield pytest.param(path, value, id=f"{'.'.join(map(str, path))}={value!r}")


@pytest.mark.parametrize(("path", "value"), list(integer_cases()))
def test_what_is_no_integer_on_the_wire_is_refused(path: Path, value: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        MistralModelSpec.model_validate(spec_with(path, value))
    assert errors_at(refused.value, path), refused.value.errors()


def test_every_integer_field_is_checked() -> None:
    paths = {".".join(map(str, p)) for p, _ in integer_paths()}
    assert {
        "placement.tolerations.0.tolerationSeconds",
        f"placement.rdma.resources.{MAP_KEY}",
        "runtime.shmSize",
        "rollout.maxSurge",
        "gpu.gpusPerNode",
    } <= paths


@pytest.mark.parametrize("edge", [INT64_MAX, 1])
def test_unbounded_integers_take_all_of_int64(edge: int) -> None:
    """Fields with no bound of their own take what the API server does, up to int64."""
    toleration = Toleration.model_validate(
        {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": edge}
    )
    assert toleration.toleration_seconds == edge
    placement = PlacementSpec.model_validate({"rdma": {"resources": {MAP_KEY: edge}}})
    assert placement.rdma is not None
    assert placement.rdma.resources == {MAP_KEY: edge}
    assert RuntimeSpec.model_validate({"shmSize": edge}).shm_size == edge
    assert RolloutSpec.model_validate({"maxSurge": edge}).max_surge == edge


def test_unbounded_integer_past_int64_names_the_reason() -> None:
    with pytest.raises(ValidationError, match="must be a 64-bit integer"):
        RuntimeSpec.model_validate({"shmSize": INT64_MAX + 1})


@pytest.mark.parametrize(("path", "value"), [(p, 2.0) for p, _ in integer_paths()])
def test_a_whole_number_written_as_a_float_is_refused(path: Path, value: Any) -> None:
    """The API server's answer to `2.0` depends on the spec (a CEL rule reading the field
    fails on it; an unread field is stored as 2: found by the differential fuzz test), so
    the model takes the safe side and asks for the integer."""
    assert _verdict(spec_with(path, value)).startswith("refused")


def test_a_null_field_is_dropped_and_defaulted_as_the_api_server_does() -> None:
    spec = MistralModelSpec.model_validate(
        {"gpu": {"product": "H200", "gpusPerNode": None}, "model": None, "replicas": None}
    )
    assert spec.gpu.gpus_per_node == 8
    assert spec.replicas == 1
    assert spec.model.profile == "mistral-small-4-119b"
    with pytest.raises(ValidationError, match="gpu"):
        MistralModelSpec.model_validate({"gpu": None})  # required: as if it were missing


def _verdict(spec: dict[str, Any]) -> str:
    try:
        MistralModelSpec.model_validate(spec)
    except ValidationError as exc:
        return f"refused {[e['loc'] for e in exc.errors()]}"
    return "accepted"
