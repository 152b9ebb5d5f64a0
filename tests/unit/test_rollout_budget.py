"""The rollout budget: maxSurge and maxUnavailable in groups, never both zero."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core.rollout_budget import resolve_surge_and_unavailable


def spec(max_surge: int | str, max_unavailable: int | str) -> MistralModelSpec:
    return MistralModelSpec.model_validate(
        {
            "gpu": {"product": "H200"},
            "rollout": {"maxSurge": max_surge, "maxUnavailable": max_unavailable},
        }
    )


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "budget"),
    [
        pytest.param(1, 0, 2, (1, 0), id="default"),
        pytest.param(3, 2, 2, (3, 2), id="numbers"),
        pytest.param("25%", "50%", 3, (1, 1), id="surge-up-unavailable-down"),
        pytest.param("100%", "0%", 4, (4, 0), id="whole-percent"),
        pytest.param(0, "10%", 2, (0, 1), id="both-round-to-zero"),
        pytest.param("0%", "49%", 2, (0, 1), id="percentages-round-to-zero"),
        pytest.param("25%", 0, 0, (0, 1), id="no-groups-desired"),
        pytest.param(0, "50%", 2, (0, 1), id="half-of-two"),
    ],
)
def test_budget_in_groups(
    surge: int | str, unavailable: int | str, desired: int, budget: tuple[int, int]
) -> None:
    assert resolve_surge_and_unavailable(spec(surge, unavailable), desired) == budget


int_or_percent = st.one_of(
    st.integers(min_value=0, max_value=8), st.integers(0, 100).map(lambda p: f"{p}%")
)


def in_groups(value: int | str, desired: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    share = Fraction(desired * int(value.rstrip("%")), 100)
    return math.ceil(share) if round_up else math.floor(share)


@given(surge=int_or_percent, unavailable=int_or_percent, desired=st.integers(0, 64))
def test_rounding_as_documented_and_never_both_zero(
    surge: int | str, unavailable: int | str, desired: int
) -> None:
    assume(not (surge in (0, "0%") and unavailable in (0, "0%")))  # refused at admission
    plain = (
        in_groups(surge, desired, round_up=True),
        in_groups(unavailable, desired, round_up=False),
    )
    expected = (0, 1) if plain == (0, 0) else plain
    assert resolve_surge_and_unavailable(spec(surge, unavailable), desired) == expected
