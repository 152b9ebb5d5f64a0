"""Regex parity: every pattern of the generated CRD means the same to the API server and to Python.

The API server runs a CRD `pattern` and CEL's `matches` with RE2; the operator runs the same
text with pydantic's `pattern` (the Rust `regex` crate) or, in a `matches` rule's twin, with
Python's `re` (fullmatch). Their `\\s`, `\\d` and `\\w` differ (ASCII, Unicode, Unicode plus
the C0 separators), so an image holding a no-break space was stored by one and refused by the
other. Two checks here: a static one, that each pattern keeps to the constructs that mean the
same in all three (the rules api/formats.py lists), and one that runs pydantic and `re` over
strings built from the characters where the engines part. The integration twin,
tests/integration/test_regex_parity.py, puts the same strings to the real API server.
"""

from __future__ import annotations

import pytest

from mistral_operator.api import formats
from tests.support.regex_parity import (
    Kind,
    bases,
    crd_regexes,
    distinct_regexes,
    engine_answers,
    portability_problems,
    probe_values,
)

pytestmark = pytest.mark.unit


def test_the_crd_has_the_api_regexes() -> None:
    """The walk finds every pattern of api/formats.py, the CEL ones included."""
    found = {r.regex for r in crd_regexes()}
    kinds = {r.kind for r in crd_regexes()}
    shared = {
        value
        for name, value in vars(formats).items()
        if name.isupper() and isinstance(value, str) and value.startswith("^")
    }
    assert shared <= found, sorted(shared - found)
    assert kinds == {"pattern", "cel"}
    assert len(distinct_regexes()) >= 15


@pytest.mark.parametrize(("regex", "kind"), distinct_regexes())
def test_regex_keeps_to_the_shared_dialect(regex: str, kind: Kind) -> None:
    assert portability_problems(regex) == [], regex


@pytest.mark.parametrize(("regex", "kind"), distinct_regexes())
def test_regex_has_bases_to_probe(regex: str, kind: Kind) -> None:
    """Each regex accepts a few BASES, so the probes are near-misses and not just noise;
    add one to BASES when a new pattern has none."""
    assert bases(regex), f"no value of BASES matches {regex}"


@pytest.mark.parametrize(("regex", "kind"), distinct_regexes())
def test_pydantic_and_re_agree_on_tricky_strings(regex: str, kind: Kind) -> None:
    disagreements = [
        (value, answers)
        for value in probe_values(regex)
        if len(set(answers := engine_answers(regex, value))) > 1
    ]
    assert disagreements == [], (
        f"{regex}: (pydantic, re, re.ASCII) disagree on {len(disagreements)} values, e.g. "
        f"{disagreements[:8]!r}"
    )


@pytest.mark.parametrize(
    ("regex", "problem"),
    [
        (r"^[^\s]+$", "escape \\s"),
        (r"^[0-9]+\d$", "escape \\d"),
        (r"^\w+$", "escape \\w"),
        (r"^a\b$", "escape \\b"),
        (r"^a\Z", "not anchored"),
        (r"^(?i)a$", "'(?'"),
        (r"^[[:alpha:]]$", "'[' in a class"),
        (r"^a{,3}$", "'{' that is not"),
        (r"^a.*?$", "lazy"),
        (r"^[a-z--b]$", "'--' in a class"),
        ("^caf\u00e9$", "not printable ASCII"),
        (r"^a|b$", "top-level '|'"),
        (r"^(a|b)$", None),
        (r"a$", "not anchored"),
        (r"^a$b$", "inside the pattern"),
        (r"^\u00e9$", "escape \\u"),
    ],
)
def test_the_static_check_names_unshared_constructs(regex: str, problem: str | None) -> None:
    problems = portability_problems(regex)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_the_probes_catch_the_old_patterns() -> None:
    """The image and source patterns before the fix: `\\s` made pydantic refuse NBSP that
    RE2 accepts, and `re` refuse the C0 separators that pydantic accepts."""
    old_image = r"^[^\s]+$"
    split = {v for v in probe_values(old_image) if len(set(engine_answers(old_image, v))) > 1}
    assert "a\u00a0" in split
    assert "a\x1c" in split
    assert "a\n" not in split  # `$` is the end of the text in both
