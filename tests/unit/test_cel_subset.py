"""The CEL subset evaluator that unit tests check CRD rules with: follows CEL, refuses the rest."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.cel_subset import CelError, evaluate, with_defaults

SELF = {"a": 4, "b": 3, "s": "hf://x", "m": {"k": 1}, "l": [1, 2]}


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ("self.a * self.b % 5", 2),
        ("self.a + self.b * 2 == 10", True),
        ("-7 / 2", -3),  # CEL truncates toward zero
        ("-7 % 2", -1),
        ("self.a >= 4 && self.b != 3", False),
        ("!(self.a == 4) || self.b < 4", True),
        ("has(self.a) && !has(self.z)", True),
        ("self.a == 4 ? 'yes' : 'no'", "yes"),
        ("self.a == 5 ? 1 : self.b == 3 ? 2 : 3", 2),
        ("self.a > 1 && self.b > 1 ? self.a : self.b", 4),
        ("self.s.startsWith('hf://')", True),
        ("'k' in self.m && 2 in self.l && !(3 in self.l)", True),
        ("{'x': 7, 'y': 8}['y']", 8),
        ("self.a in [1, 4]", True),
        ("size(self.l) == 2", True),
        ('"two words" == "two words"', True),
    ],
)
def test_expressions_evaluate_as_cel_does(rule: str, value: Any) -> None:
    assert evaluate(rule, SELF) == value


def test_a_missing_field_is_an_error_unless_the_other_side_decides() -> None:
    with pytest.raises(CelError, match="no such key: z"):
        evaluate("self.z == 1", SELF)
    # CEL's || and && are commutative over errors: a deciding side wins on either side.
    assert evaluate("self.z == 1 || self.a == 4", SELF) is True
    assert evaluate("self.a == 4 || self.z == 1", SELF) is True
    assert evaluate("self.z == 1 && self.a == 5", SELF) is False
    with pytest.raises(CelError):
        evaluate("self.z == 1 || self.a == 5", SELF)
    with pytest.raises(CelError):
        evaluate("self.z == 1 && self.a == 4", SELF)


@pytest.mark.parametrize(
    "rule",
    ["self.a.matches('x')", "unknown(self.a)", "self.a +", "self.a == 'x' ? 1", "self.a ^ 2"],
)
def test_what_the_subset_does_not_know_is_refused(rule: str) -> None:
    with pytest.raises(CelError):
        evaluate(rule, SELF)


def test_defaults_fill_absent_fields_and_the_sections_they_create() -> None:
    schema = {
        "type": "object",
        "properties": {
            "kept": {"type": "integer", "default": 1},
            "section": {
                "type": "object",
                "default": {},
                "properties": {
                    "inner": {"type": "string", "default": "x"},
                    "unset": {"type": "integer"},
                },
            },
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"d": {"type": "integer", "default": 0}}},
            },
        },
    }
    value = {"kept": 5, "items": [{}, {"d": 2}]}
    assert with_defaults(schema, value) == {
        "kept": 5,
        "section": {"inner": "x"},
        "items": [{"d": 0}, {"d": 2}],
    }
    assert value == {"kept": 5, "items": [{}, {"d": 2}]}, "the input is left as it was"
