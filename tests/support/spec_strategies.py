"""Hypothesis strategies for fuzzed MistralModel specs: drawn from the generated CRD schema,
and mutated from the examples.

`crd_specs()` walks the `spec` of the committed CRD's openAPIV3Schema: types, enums,
minimum/maximum, minLength/maxLength, `pattern`s and the `self.matches(...)` rules of
`x-kubernetes-validations`, required fields and a few optional ones (EXPECTED_OPTIONAL per
object on average, so that specs stay small and each field comes up often), maps and lists of at
most 3 entries. The values mostly fit the schema (strings from its regexes, now and then a
tricky one that fits too, such as the path "/var/../x"; integers at and near its bounds),
with now and then one that does not: a number just out of range or past int64, an integer
written as `2.0`, a string of the wrong form, a value of another type, an unknown field
(or a known one spelt in snake_case), a required field left out. Now and then a string of
the right form gets one character that regex dialects disagree on (NBSP, U+3000, U+2028,
`\x1c`, `\v`: whitespace to Python's `re`, not to the API server's RE2). Cross-field
rules are not aimed at: whatever they refuse, the API server (or the operator) must refuse
cleanly.

`mutated_examples()` takes the spec of one of examples/*.yaml (all valid) and changes one
or two things: a field replaced by another value of its schema or by a value of any type,
a field dropped, an unknown field added, or a field the example leaves out added.

Both produce plain JSON values (dicts, lists, strings, finite numbers, booleans, null), as
`kubectl apply` would send them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mistral_operator.api import names
from mistral_operator.api.spec import MistralModelSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / names.CRD_FILENAME
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))

Json = Any
Path_ = tuple[str | int, ...]

# Printable ASCII: what a person types into a manifest (the API server takes any UTF-8;
# `junk` brings the rest).
ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# A regex rule inside a CEL expression: `x.matches(r'...')`, possibly negated.
_CEL_MATCHES = re.compile(r"(!?)(\w+)\.matches\(r'(.*?)'\)")
# Keys of a map whose rule only says they contain a '/' (extended resource names).
_RESOURCE_NAME = r"[a-z0-9]([-a-z0-9.]{0,10}[a-z0-9])?/[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?"
# Keys of a map with no rule at all (node labels): qualified names, as Kubernetes has them.
_QUALIFIED_NAME = (
    r"([a-z0-9]([-a-z0-9.]{0,10}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,12}[A-Za-z0-9])?"
)
# Strings that often break what is built from them (paths, flags, shell words, YAML words).
TRICKY_STRINGS = (
    *("..", ".", "/", "//", "/..", "/../..", "/var/../x", "a/../b", "../a", "a/..", "./a"),
    *("-", "--x", "-a", "a-", "a.", ".a", "a..b", "a:b", "a/b", "a//b", ",", "^", "=", "~"),
    *("0", "00", "-0", "1e3", "0x10", "true", "null", "yes", "a b", " a", "a\tb", "a\nb"),
    *("é", "日本", "%", "%s", "$(HOME)", "${X}", "*", "?", "'", '"', "\\", ";", "|", "&"),
)
# Characters that regex engines class differently: `\s` in RE2 (the API server's CEL and
# `pattern`) is [\t\n\f\r ] only; in Python's `re` (pydantic) it is also \v, \x1c-\x1f,
# \x85, NBSP, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000; `\w`
# and `\d` are Unicode-wide in Python too. Plus a zero-width space and a BOM, which neither
# calls whitespace.
DIALECT_CHARS = (
    *("\t", "\n", "\v", "\f", "\r", "\x1c", "\x1f", "\x85", "\u00a0", "\u1680", "\u2003"),
    *("\u2028", "\u2029", "\u202f", "\u3000", "\u200b", "\ufeff", "\u0663", "\u00e9"),
)
# Optional fields one object sets on average: small specs, each field explored often.
EXPECTED_OPTIONAL = 2
# Field names no version of the schema has: the API server prunes or refuses them, the
# operator's models refuse them (extra="forbid").
UNKNOWN_FIELDS = ("unknownField", "replica", "Replicas", "spec", "x-fuzz", "gpus", "")

# Any JSON value, small: what lands in a field when someone gets its type wrong.
junk: st.SearchStrategy[Json] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**31), max_value=2**31)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=6), children, max_size=2)
    ),
    max_leaves=4,
)


@cache
def crd_schema() -> dict[str, Any]:
    """The openAPIV3Schema of `spec` in the committed CRD."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    (version,) = crd["spec"]["versions"]
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


@cache
def example_specs() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, spec) of every example."""
    return tuple((p.name, yaml.safe_load(p.read_text())["spec"]) for p in EXAMPLES)


def mostly(
    usual: st.SearchStrategy[Json], rare: st.SearchStrategy[Json], one_in: int
) -> st.SearchStrategy[Json]:
    """``usual``, and ``rare`` about once in ``one_in`` draws (shrinking towards ``usual``)."""
    return st.integers(min_value=0, max_value=one_in - 1).flatmap(
        lambda n: rare if n == one_in - 1 else usual
    )


def _cel_regexes(schema: Mapping[str, Any]) -> list[tuple[str, bool, str]]:
    """(variable, negated, regex) of every `matches` in the schema's CEL rules."""
    found = []
    for rule in schema.get("x-kubernetes-validations") or []:
        for negated, variable, regex in _CEL_MATCHES.findall(rule["rule"]):
            found.append((variable, bool(negated), regex))
    return found


def _from_regex(regex: str) -> st.SearchStrategy[str]:
    return st.from_regex(regex, fullmatch=True, alphabet=ASCII)


def _with_dialect_char(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A value of ``values`` with one of DIALECT_CHARS put in (at the start, inside, at the end)."""
    return st.tuples(values, st.sampled_from(DIALECT_CHARS), st.integers(0, 64)).map(
        lambda t: t[0][: t[2] % (len(t[0]) + 1)] + t[1] + t[0][t[2] % (len(t[0]) + 1) :]
    )


def _snake(name: str) -> str:
    """``name`` in snake_case: the Python spelling of a camelCase field."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _length_edges(low: int, high: int) -> list[str]:
    """Strings of letters at (and just past) the length bounds, for short-enough bounds."""
    lengths = {low, max(low - 1, 0), high, high + 1} if high <= 1024 else {low, max(low - 1, 0)}
    return ["a" * n for n in sorted(lengths)]


def _string(schema: Mapping[str, Any]) -> st.SearchStrategy[Json]:
    low, high = int(schema.get("minLength", 0)), int(schema.get("maxLength", 64))
    regexes = [schema["pattern"]] if "pattern" in schema else []
    regexes += [r for v, negated, r in _cel_regexes(schema) if v == "self" and not negated]
    usual: st.SearchStrategy[str]
    if regexes:
        usual = _from_regex(regexes[0]).map(lambda s: s[:high])
    else:
        usual = st.text(ASCII, min_size=low, max_size=min(high, 24))
    # Tricky values the field's form admits ("/var/../x" is an absolute path): now and then.
    fitting = [
        t
        for t in TRICKY_STRINGS
        if low <= len(t) <= high and all(re.fullmatch(r, t) for r in regexes)
    ]
    if fitting:
        usual = mostly(usual, st.sampled_from(fitting), 5)
    odd = mostly(
        st.text(max_size=24) | st.sampled_from(_length_edges(low, high)),
        _with_dialect_char(usual.filter(lambda v: isinstance(v, str))),
        2,
    )
    return mostly(usual, odd, 8)


def _integer(schema: Mapping[str, Any]) -> st.SearchStrategy[Json]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    lo = int(low) if low is not None else -8
    hi = int(high) if high is not None else lo + 10**6
    edges = sorted({v for v in (lo, lo + 1, hi - 1, hi) if lo <= v <= hi})
    usual = st.sampled_from(edges) | st.integers(min_value=lo, max_value=min(hi, lo + 64))
    outside = sorted({v for v in (lo - 1, hi + 1, -1, 2**31, 2**63) if not lo <= v <= hi})
    # An integer of the range written as a float (`2.0`): JSON has one number type, the
    # API server's integer fields take no fraction part.
    odd = usual.map(float)
    return mostly(usual, st.sampled_from(outside) | odd if outside else odd, 12)


def _number(schema: Mapping[str, Any]) -> st.SearchStrategy[Json]:
    lo = float(schema.get("minimum", -1e6))
    hi = float(schema.get("maximum", 1e6))
    usual = st.sampled_from([lo, hi]) | st.floats(min_value=lo, max_value=hi)
    return mostly(usual, st.sampled_from([lo - 0.5, hi + 0.5]), 12)


def _int_or_string(schema: Mapping[str, Any]) -> st.SearchStrategy[Json]:
    """A quantity or a count/percentage: an integer, or a string of the rule's regex."""
    high = int(schema.get("maxLength", 64))
    regexes = [r for v, negated, r in _cel_regexes(schema) if v == "self" and not negated]
    strings = _from_regex(regexes[0]).map(lambda s: s[:high]) if regexes else st.text(ASCII)
    usual = st.integers(min_value=0, max_value=200) | strings
    odd = st.sampled_from([-1, "-1", "0%", "101%", "lots", "1.5 Gi", "", 0.5, "1e3"])
    return mostly(usual, odd, 8)


def _keys(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    """Keys of a map, as its CEL rules want them (mostly)."""
    regexes = [r for v, negated, r in _cel_regexes(schema) if v == "k" and not negated]
    rules = " ".join(r["rule"] for r in schema.get("x-kubernetes-validations") or [])
    if regexes:
        usual = _from_regex(regexes[0])
    elif "contains('/')" in rules:
        usual = _from_regex(_RESOURCE_NAME) | st.just("nvidia.com/gpu")
    else:
        usual = _from_regex(_QUALIFIED_NAME)
    return mostly(usual, st.text(max_size=10), 10)


def _array(schema: Mapping[str, Any]) -> st.SearchStrategy[Json]:
    items = from_schema(schema.get("items") or {})
    refused = [r for v, negated, r in _cel_regexes(schema) if negated]
    if refused:  # items the list's rule refuses (flags the operator renders): a few of those
        items = mostly(items, _from_regex(refused[0]), 4)
    size = min(3, int(schema.get("maxItems", 3)))
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if keys:
        key = keys[0]
        return st.lists(
            items,
            max_size=size,
            unique_by=lambda item: repr(item.get(key)) if isinstance(item, dict) else id(item),
        )
    return st.lists(items, max_size=size)


def _object(schema: Mapping[str, Any]) -> st.SearchStrategy[Json]:
    properties: Mapping[str, Any] = schema.get("properties") or {}
    if not properties:
        values = from_schema(schema.get("additionalProperties") or {})
        size = min(3, int(schema.get("maxProperties", 3)))
        return st.dictionaries(_keys(schema), values, max_size=size)
    required = set(schema.get("required") or [])
    optional = sorted(k for k in properties if k not in required)
    # The first few of the optional fields in a random order: each with the same chance.
    chosen = st.tuples(
        st.permutations(optional), st.integers(min_value=0, max_value=2 * EXPECTED_OPTIONAL)
    ).map(lambda order_count: order_count[0][: order_count[1]])
    whole = chosen.flatmap(
        lambda keys: st.fixed_dictionaries(
            {k: from_schema(properties[k]) for k in [*sorted(required), *keys]}
        )
    )
    return mostly(whole, whole.flatmap(_broken_object(required)), 20)


def _broken_object(
    required: set[str],
) -> Callable[[dict[str, Json]], st.SearchStrategy[dict[str, Json]]]:
    """An object with an unknown field added, a field spelt in snake_case, or (where it has
    one) a required field dropped."""

    def broken(value: dict[str, Json]) -> st.SearchStrategy[dict[str, Json]]:
        added = st.tuples(st.sampled_from(UNKNOWN_FIELDS), junk).map(
            lambda kv: {**value, kv[0]: kv[1]}
        )
        camel = sorted(k for k in value if _snake(k) != k)
        if camel:
            added |= st.sampled_from(camel).map(
                lambda k: {(_snake(n) if n == k else n): v for n, v in value.items()}
            )
        if not required:
            return added
        dropped = st.sampled_from(sorted(required)).map(
            lambda k: {n: v for n, v in value.items() if n != k}
        )
        return added | dropped

    return broken


def _enum(schema: Mapping[str, Any]) -> st.SearchStrategy[Json]:
    other = _integer({}) if schema.get("type") == "integer" else st.text(ASCII, max_size=12)
    return mostly(st.sampled_from(list(schema["enum"])), other, 12)


_BY_TYPE: dict[str, Callable[[Mapping[str, Any]], st.SearchStrategy[Json]]] = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": lambda _: st.booleans(),
    "array": _array,
    "object": _object,
}


def _valid_ish(schema: Mapping[str, Any]) -> st.SearchStrategy[Json]:
    if schema.get("x-kubernetes-int-or-string"):
        return _int_or_string(schema)
    if "enum" in schema:
        return _enum(schema)
    of_type = _BY_TYPE.get(str(schema.get("type")))
    return of_type(schema) if of_type is not None else junk


def from_schema(schema: Mapping[str, Any], junk_one_in: int = 60) -> st.SearchStrategy[Json]:
    """Values of one openAPIV3Schema node: mostly of its form, now and then anything at all."""
    return mostly(st.deferred(lambda: _valid_ish(schema)), junk, junk_one_in)


def crd_specs() -> st.SearchStrategy[Json]:
    """Specs drawn from the CRD schema: required fields always (almost), optional ones
    sometimes, values mostly within the schema. Always an object: the API server refuses
    any other `spec` before an operator sees it."""
    return _valid_ish(crd_schema())


# --- mutations of the examples -------------------------------------------------------------


def schema_at(path: Path_) -> Mapping[str, Any] | None:
    """The schema node of ``path`` inside `spec`, or None where the schema has none."""
    node: Mapping[str, Any] | None = crd_schema()
    for step in path:
        if node is None:
            return None
        if isinstance(step, int):
            node = node.get("items")
        elif step in (node.get("properties") or {}):
            node = node["properties"][step]
        else:
            node = node.get("additionalProperties") or None
    return node


def _walk(value: Json, path: Path_ = ()) -> list[tuple[Path_, Json]]:
    """(path, value) of every node of a JSON value, the root first."""
    out: list[tuple[Path_, Json]] = [(path, value)]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _walk(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _walk(child, (*path, index))
    return out


def _node(spec: Json, path: Path_) -> Any:
    node = spec
    for step in path:
        node = node[step]
    return node


MUTATIONS = ("replace", "retype", "drop", "add_unknown", "add_known")


@st.composite
def _mutation(draw: st.DrawFn, spec: Json) -> Json:
    kind = draw(st.sampled_from(MUTATIONS))
    nodes = _walk(spec)
    inner = [(p, v) for p, v in nodes if p]
    objects = [(p, v) for p, v in nodes if isinstance(v, dict)]
    if kind in ("replace", "retype", "drop") and inner:
        path, _ = draw(st.sampled_from(inner))
        parent = _node(spec, path[:-1])
        if kind == "drop":
            del parent[path[-1]]
            return spec
        schema = schema_at(path)
        same = from_schema(schema, junk_one_in=10) if schema is not None else junk
        parent[path[-1]] = draw(same if kind == "replace" else junk)
        return spec
    if kind == "add_known":
        candidates = [
            (p, k, s)
            for p, v in objects
            for k, s in ((schema_at(p) or {}).get("properties") or {}).items()
            if k not in v
        ]
        if candidates:
            path, key, schema = draw(st.sampled_from(candidates))
            _node(spec, path)[key] = draw(from_schema(schema, junk_one_in=10))
            return spec
    # add_unknown (or anything with nothing left to act on): a field no schema has, now
    # and then a field of the object's schema spelt in snake_case.
    path, _ = draw(st.sampled_from(objects))
    known = set((schema_at(path) or {}).get("properties") or {})
    snake = sorted({_snake(k) for k in known} - known - set(_node(spec, path)))
    unknown = st.sampled_from(UNKNOWN_FIELDS) | st.text(ASCII, max_size=8)
    key = draw(unknown | st.sampled_from(snake) if snake else unknown)
    _node(spec, path)[key] = draw(junk)
    return spec


@st.composite
def mutated_examples(draw: st.DrawFn) -> Json:
    """The spec of one example with one or two mutations."""
    _, spec = draw(st.sampled_from(example_specs()))
    spec = copy.deepcopy(spec)
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        spec = draw(_mutation(spec))
    return spec


def fuzzed_specs() -> st.SearchStrategy[Json]:
    """Either kind, half and half."""
    return crd_specs() | mutated_examples()


def operator_accepts(spec: Json) -> bool:
    """Whether the operator's model takes ``spec``."""
    try:
        MistralModelSpec.model_validate(spec)
    except ValidationError:
        return False
    return True


def draw_specs(count: int, at: int) -> list[Json]:
    """``count`` fuzzed specs, the same ones for the same seed ``at``: half of them specs
    the operator's model takes, so that most reach the planner."""
    drawn: list[Json] = []

    @seed(at)
    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(spec=fuzzed_specs() | fuzzed_specs().filter(operator_accepts))
    def collect(spec: Json) -> None:
        drawn.append(spec)

    collect()
    return drawn[:count]
