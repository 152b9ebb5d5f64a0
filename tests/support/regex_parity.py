"""Regex parity helpers: the CRD's regexes, strings that tell the engines apart, and
Python's answer (pydantic `pattern`, or a CEL `matches` twin) for each.

Used by tests/unit/test_regex_parity.py (static dialect check, pydantic against `re`) and
tests/integration/test_regex_parity.py (the same strings put to the real API server).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, create_model

from mistral_operator.api.base import VALIDATIONS, ApiModel, matches
from mistral_operator.api.crd import custom_resource_definition

Kind = Literal["pattern", "cel"]
# `self.matches(r'...')` and `k.matches(...)` in a rule; a `!` before it only negates.
_CEL_MATCHES = re.compile(r"\w+\.matches\(r'(.*?)'\)")

# Characters where the engines' classes part, and a few they should all refuse alike.
TRICKY_CHARS = (
    *("\u00a0", "\u3000", "\u2028", "\u2029", "\u0085", "\u1680", "\u2000", "\u200a"),
    *("\u202f", "\u205f", "\u200b", "\ufeff", "\u180e"),  # spaces, and ones that are not
    *("\x1c", "\x1d", "\x1e", "\x1f", "\x0b", "\x0c", "\r", "\n", "\t", " ", "\x00"),
    *("\x01", "\x7f"),
    *("\u0663", "\uff11", "\u00b2", "\u2160", "\u09ea"),  # digits that are not [0-9]
    *("\u00e9", "\u00df", "\u212a", "\u0131", "\u017f", "\u00c5", "\u212b"),  # letters
    *("\uff41", "\uff21", "\uff3f", "\uff0e", "\uff0f", "\uff1a"),  # fullwidth a A _ . / :
    *("e\u0301", "\u0301", "\u200d", "\U0001f600", "\U0001f1eb\U0001f1f7", "\ufffd"),
    *("\u2010", "\u2212", "\u2024", "\u02d0"),  # look-alikes of - . :
)
# Values some pattern of the CRD accepts; each pattern probes inside the ones it accepts.
BASES = (
    *("a", "abc", "a1", "Ready", "main", "eth0", "^lo,docker", "=mlx5_0:1"),
    *("NCCL_DEBUG", "50%", "100%", "1Gi", "500m", "1.5e3", "/data/x", "cache/x"),
    *("example.com/key", "lmsysorg/sglang:v0.5.23", "--model", "--model=x"),
    *("hf://mistralai/Mistral-Small", "s3://bucket/key", "pvc://claim/path"),
    *("https://mirror.example/org/repo",),
)
_BASES_PER_PATTERN = 2


@dataclass(frozen=True)
class CrdRegex:
    """A regex as the CRD uses it: a `pattern` keyword or a CEL `matches` call."""

    regex: str
    kind: Kind
    where: str


def crd_regexes() -> list[CrdRegex]:
    """Every `pattern` and CEL `matches` regex of the generated CRD, where it is used."""
    versions = custom_resource_definition()["spec"]["versions"]
    return [
        found
        for version in versions
        for found in _schema_regexes(version["schema"]["openAPIV3Schema"], version["name"])
    ]


def distinct_regexes() -> list[tuple[str, Kind]]:
    """Each (regex, kind) once, in a stable order."""
    return sorted({(found.regex, found.kind) for found in crd_regexes()})


def _schema_regexes(node: dict[str, Any], path: str) -> Iterator[CrdRegex]:
    if "pattern" in node:
        yield CrdRegex(node["pattern"], "pattern", path)
    for rule in node.get(VALIDATIONS, []):
        for regex in _CEL_MATCHES.findall(rule["rule"]):
            yield CrdRegex(regex, "cel", path)
    for name, child in node.get("properties", {}).items():
        yield from _schema_regexes(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_regexes(node["additionalProperties"], f"{path}{{}}")
    if "items" in node:
        yield from _schema_regexes(node["items"], f"{path}[]")


def bases(regex: str) -> list[str]:
    """The first few BASES the regex accepts: valid-looking values to hide a character in."""
    return [b for b in BASES if re.fullmatch(regex, b)][:_BASES_PER_PATTERN]


def probe_values(regex: str) -> list[str]:
    """Each tricky character alone, inside and around the regex's bases, and before a final
    newline (where Python's `$` also matches)."""
    values: set[str] = set(TRICKY_CHARS)
    for base in bases(regex):
        values |= {base, base + "\n", base + "\r\n", base + "\n" + base}
        cuts = {0, 1, len(base) // 2, len(base) - 1, len(base)}
        for char in TRICKY_CHARS:
            values |= {base[:cut] + char + base[cut:] for cut in cuts}
            values.add(base + char + "\n")
    return sorted(values)


@functools.cache
def _pattern_model(regex: str) -> type[ApiModel]:
    """A model with one field constrained by `regex` as the API models constrain theirs."""
    field: Any = (str, Field(pattern=regex))
    return create_model("PatternProbe", __base__=ApiModel, value=field)


@functools.cache
def _cel_twin(regex: str) -> Any:
    check = matches(regex, "probe").check
    assert check is not None
    return check


def python_accepts(regex: str, kind: Kind, value: str) -> bool:
    """Whether the operator accepts `value`: pydantic for a `pattern`, the `matches` rule's
    Python twin for CEL."""
    if kind == "cel":
        return bool(_cel_twin(regex)(value))
    try:
        _pattern_model(regex).model_validate({"value": value})
    except ValidationError:
        return False
    return True


def engine_answers(regex: str, value: str) -> tuple[bool, bool, bool]:
    """(pydantic, `re` fullmatch, `re` fullmatch in ASCII mode): one answer when the regex
    is portable, since RE2's classes are the ASCII ones."""
    return (
        python_accepts(regex, "pattern", value),
        python_accepts(regex, "cel", value),
        re.fullmatch(regex, value, re.ASCII) is not None,
    )


# The static check: what a pattern may contain so that RE2, Rust and Python read it alike.
_META = set(r".+*?()[]{}|^$\-/")
_CONTROL_ESCAPES = set("tnvfr")  # \a differs (Rust has none)
_HEX_ESCAPE = re.compile(r"x[0-7][0-9A-Fa-f]")  # ASCII only; \x{...} and \u are not shared
_REPEAT = re.compile(r"\{[0-9]+(,[0-9]*)?\}")  # RE2 reads {,n} as a literal, Python as {0,n}
_CLASS_SET_OPS = ("&&", "--", "~~", "||")  # set operations in Rust (and future Python)


def portability_problems(regex: str) -> list[str]:
    """What in `regex` may mean something else in RE2, Rust `regex` or Python `re`."""
    problems: list[str] = []
    if not regex.startswith("^") or not regex.endswith("$") or regex.endswith("\\$"):
        problems.append("not anchored as ^...$")
    body = regex[1:-1]
    depth = i = 0
    while i < len(body):
        char = body[i]
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "|" and depth == 0:
            # RE2 and Rust search `^a|b$` for `^a` or `b$`; fullmatch wants all of it.
            problems.append("top-level '|' (group the alternatives inside ^(...)$)")
        if not " " <= char <= "~":
            problems.append(f"{char!r} is not printable ASCII")
            i += 1
        elif char == "\\":
            i = _escape(body, i, problems)
        elif char == "[":
            i = _class(body, i, problems)
        else:
            i = _outside_class(body, i, problems)
    return problems


def _escape(body: str, i: int, problems: list[str]) -> int:
    nxt = body[i + 1 : i + 2]
    if _HEX_ESCAPE.match(body, i + 1):
        return i + 4
    if nxt and (nxt in _META or nxt in _CONTROL_ESCAPES):
        return i + 2
    problems.append(f"escape \\{nxt} (classes such as \\s \\d \\w \\b differ, or unshared)")
    return i + 2


def _class(body: str, i: int, problems: list[str]) -> int:
    """Check a bracket class from its `[`; return the index after its `]`."""
    i += 1
    if body[i : i + 1] == "^":
        i += 1
    if body[i : i + 1] == "]":
        problems.append("']' first in a class")
    start = i
    while i < len(body) and body[i] != "]":
        if body[i] == "\\":
            i = _escape(body, i, problems)
            continue
        if body[i] == "[":
            problems.append("'[' in a class (POSIX classes and nesting differ)")
        elif not " " <= body[i] <= "~":
            problems.append(f"{body[i]!r} in a class is not printable ASCII")
        i += 1
    problems.extend(f"{op!r} in a class" for op in _CLASS_SET_OPS if op in body[start:i])
    if i >= len(body):
        problems.append("unclosed class")
    return i + 1


def _outside_class(body: str, i: int, problems: list[str]) -> int:
    char = body[i]
    if char in "^$":
        problems.append(f"{char!r} inside the pattern (anchors only at its ends)")
    elif char == "(" and body[i + 1 : i + 2] == "?":
        problems.append("'(?' (flags, look-around and named groups differ or are unshared)")
    elif char in "]}":
        problems.append(f"unescaped {char!r}")
    elif char == "{":
        repeat = _REPEAT.match(body, i)
        if repeat is None:
            problems.append("'{' that is not a {m} or {m,n} repeat")
            return i + 1
        i = repeat.end() - 1
    if char in "*+?{" and body[i + 1 : i + 2] in ("?", "+"):
        problems.append("lazy or possessive repeat")
    return i + 1
