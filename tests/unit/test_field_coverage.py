"""Every CRD field, printer column and condition type is mapped to tests that exist.

The map is tests/unit/field_coverage.py. Test files are read with `ast`, never imported
or run, so a renamed or deleted test fails here by name before anything else runs.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from mistral_operator.api.crd import PRINTER_COLUMNS, openapi_schema
from mistral_operator.core import conditions
from tests.unit import field_coverage

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE = REPO_ROOT / "operator" / "mistral_operator" / "core"


# --- What the CRD and the operator declare ---------------------------------------------------


def field_paths(node: dict[str, Any], path: str) -> Iterator[str]:
    """Leaf fields under `node`: scalars, lists of scalars, maps, and fields of list items."""
    if "properties" in node:
        for name, child in node["properties"].items():
            yield from field_paths(child, f"{path}.{name}")
    elif "properties" in node.get("items", {}):
        yield from field_paths(node["items"], f"{path}[]")
    else:
        yield path


def spec_fields() -> set[str]:
    return set(field_paths(openapi_schema()["properties"]["spec"], "spec"))


def printer_columns() -> set[str]:
    return {column["name"] for column in PRINTER_COLUMNS}


def condition_types() -> set[str]:
    """The first argument of every `ConditionSpec(...)` in the core: what the operator writes."""
    found: set[str] = set()
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or _called_name(node.func) != "ConditionSpec":
                continue
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
            elif isinstance(first, ast.Attribute | ast.Name):
                value = getattr(conditions, _called_name(first), None)
                assert isinstance(value, str), (
                    f"{path.name}:{node.lineno}: condition type {ast.unparse(first)} is not "
                    "a string constant of core/conditions.py"
                )
                found.add(value)
            else:
                pytest.fail(f"{path.name}:{node.lineno}: cannot tell the condition type")
    return found


def _called_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


# --- What a node id names --------------------------------------------------------------------


@cache
def _module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _find_function(module: ast.Module, names: list[str]) -> ast.FunctionDef | None:
    """The test that `names` spells in `module`: a function, or classes and then a method."""
    *classes, function = names
    body = module.body
    for name in classes:
        found = next((s for s in body if isinstance(s, ast.ClassDef) and s.name == name), None)
        if found is None:
            return None
        body = found.body
    return next((s for s in body if isinstance(s, ast.FunctionDef) and s.name == function), None)


def _is_parametrize(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Call) and _called_name(decorator.func) == "parametrize"


def _literal_id(node: ast.expr, argname: str, index: int) -> str:
    """The id pytest gives one value: scalars as written, anything else argname + index."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError):
        return f"{argname}{index}"
    if value is None or isinstance(value, str | int | float | bool):
        return str(value)
    return f"{argname}{index}"


def parametrize_ids(decorator: ast.Call) -> list[str] | None:
    """The ids one `pytest.mark.parametrize` gives, or None when only collection can tell."""
    keywords = {k.arg: k.value for k in decorator.keywords}
    names_node = decorator.args[0] if decorator.args else keywords["argnames"]
    values_node = decorator.args[1] if len(decorator.args) > 1 else keywords["argvalues"]
    explicit = keywords.get("ids")
    if explicit is not None:
        if isinstance(explicit, ast.List | ast.Tuple) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in explicit.elts
        ):
            return [ast.literal_eval(e) for e in explicit.elts]
        return None
    if not isinstance(values_node, ast.List | ast.Tuple):
        return None
    names = ast.literal_eval(names_node)
    argnames = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    ids: list[str] = []
    for index, value in enumerate(values_node.elts):
        if isinstance(value, ast.Call) and _called_name(value.func) == "param":
            given = next((k.value for k in value.keywords if k.arg == "id"), None)
            if isinstance(given, ast.Constant) and isinstance(given.value, str):
                ids.append(given.value)
                continue
            parts = list(value.args)
        elif len(argnames) == 1:
            parts = [value]
        elif isinstance(value, ast.Tuple | ast.List):
            parts = list(value.elts)
        else:
            return None
        ids.append(
            "-".join(_literal_id(p, n, index) for p, n in zip(parts, argnames, strict=False))
        )
    return ids


def function_ids(function: ast.FunctionDef) -> list[str] | None:
    """Every parametrized id of a test, in pytest's order: the innermost decorator first."""
    per_decorator = []
    for decorator in reversed(function.decorator_list):
        if isinstance(decorator, ast.Call) and _is_parametrize(decorator):
            ids = parametrize_ids(decorator)
            if ids is None:
                return None
            per_decorator.append(ids)
    if not per_decorator:
        return []
    return ["-".join(combo) for combo in itertools.product(*per_decorator)]


def node_id_problem(node_id: str) -> str | None:
    """Why `node_id` names no test that exists, or None when it does."""
    file, _, rest = node_id.partition("::")
    param = None
    if rest.endswith("]") and "[" in rest:
        rest, _, param = rest[:-1].partition("[")
    path = REPO_ROOT / file
    if not (file.startswith("tests/") and path.name.startswith("test_") and path.is_file()):
        return f"{node_id}: {file} is not a test file under tests/"
    names = rest.split("::")
    function = _find_function(_module(path), names)
    if function is None or not names[-1].startswith("test"):
        return f"{node_id}: no test {rest} in {file}"
    if param is None:
        return None
    ids = function_ids(function)
    if ids is None:
        return f"{node_id}: its ids are made at collection; name the test without [{param}]"
    if param not in ids:
        return f"{node_id}: no parametrized id {param!r}; the test has {ids}"
    return None


# --- The checks ------------------------------------------------------------------------------

DECLARED = {
    "SPEC_FIELDS": spec_fields,
    "PRINTER_COLUMNS": printer_columns,
    "CONDITION_TYPES": condition_types,
}


def declared_and_mapped(name: str) -> tuple[set[str], Mapping[str, tuple[str, ...]]]:
    mapping: Mapping[str, tuple[str, ...]] = getattr(field_coverage, name)
    return DECLARED[name](), mapping


@pytest.mark.parametrize("name", list(DECLARED))
def test_everything_declared_is_mapped(name: str) -> None:
    declared, mapping = declared_and_mapped(name)
    missing = sorted(declared - set(mapping))
    assert not missing, (
        f"{name} in tests/unit/field_coverage.py lacks {missing}: name the tests that show "
        "each one's effect, or leave it out of the API until something honours it"
    )


@pytest.mark.parametrize("name", list(DECLARED))
def test_nothing_mapped_is_gone(name: str) -> None:
    declared, mapping = declared_and_mapped(name)
    stale = sorted(set(mapping) - declared)
    assert not stale, f"{name} in tests/unit/field_coverage.py names what is gone: {stale}"


@pytest.mark.parametrize("name", list(DECLARED))
def test_every_named_test_exists(name: str) -> None:
    _, mapping = declared_and_mapped(name)
    problems = [f"{key}: no tests named" for key, tests in mapping.items() if not tests]
    problems += [
        f"{key}: {problem}"
        for key, tests in mapping.items()
        for node_id in tests
        if (problem := node_id_problem(node_id)) is not None
    ]
    assert not problems, "\n".join(problems)


# --- The checker itself, against what pytest does ---------------------------------------------

SAMPLE = """
from pathlib import Path

import pytest

VALUES = [Path("a.yaml")]


@pytest.mark.parametrize("x", [1, "a", -2, None, {"k": 1}, True, 1.5])
def test_scalars(x): ...


@pytest.mark.parametrize(("a", "b"), [(1, "z"), pytest.param(2, 3, id="named"), (4, [5])])
def test_tuples(a, b): ...


@pytest.mark.parametrize("x,y", [pytest.param(1, 2), (3, 4)])
def test_comma_names(x, y): ...


@pytest.mark.parametrize("x", [0, 1])
@pytest.mark.parametrize("y", ["p", "q"])
def test_stacked(x, y): ...


@pytest.mark.parametrize("x", [1, 2], ids=["one", "two"])
def test_explicit(x): ...


@pytest.mark.parametrize("x", VALUES, ids=lambda v: v.stem)
def test_dynamic(x): ...


def test_plain(): ...


class TestGroup:
    @pytest.mark.parametrize("x", ["m"])
    def test_method(self, x): ...
"""


def test_ids_are_read_as_pytest_makes_them(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(SAMPLE)
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    by_pytest: dict[str, list[str]] = {}
    for line in collected.splitlines():
        if line.startswith("test_sample.py::"):
            name, _, param = line.removeprefix("test_sample.py::").partition("[")
            by_pytest.setdefault(name, []).append(param.removesuffix("]"))
    module = ast.parse(SAMPLE)
    by_ast = {}
    for name in by_pytest:
        function = _find_function(module, name.split("::"))
        assert function is not None, name
        ids = function_ids(function)
        by_ast[name] = [""] if ids == [] else ids
    assert by_ast.pop("test_dynamic") is None
    by_pytest.pop("test_dynamic")
    assert by_ast == by_pytest
    assert _find_function(module, ["test_missing"]) is None


def test_a_missing_test_or_id_is_named() -> None:
    this = "tests/unit/test_field_coverage.py"
    flags = "tests/unit/test_render_options.py::test_parallelism_fields_become_sglang_flags"
    assert node_id_problem(f"{this}::test_nothing_mapped_is_gone") is None
    assert node_id_problem(f"{flags}[moeA2ABackend]") is None
    problems = [
        (f"{this}::test_no_such_test", "no test test_no_such_test"),
        (f"{flags}[moeA2A]", "no parametrized id 'moeA2A'"),
        (f"{this}::test_a_missing_test_or_id_is_named[X]", "no parametrized id 'X'"),
        (f"{this}::test_nothing_mapped_is_gone[SPEC_FIELDS]", "made at collection"),
        ("docs/architecture.md::test_x", "not a test file"),
    ]
    for node_id, expected in problems:
        assert expected in (node_id_problem(node_id) or ""), node_id
