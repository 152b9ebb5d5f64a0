"""The arithmetic of `make bench`'s table: quantiles from histogram readings, ratios, goals."""

from __future__ import annotations

import math

from tests.bench.bench_cluster import Row
from tests.bench.bench_fleet import histogram, quantile

METRICS = """\
# TYPE mistral_operator_reconcile_duration_seconds histogram
mistral_operator_reconcile_duration_seconds_bucket{le="0.1"} 50.0
mistral_operator_reconcile_duration_seconds_bucket{le="0.5"} 90.0
mistral_operator_reconcile_duration_seconds_bucket{le="1.0"} 100.0
mistral_operator_reconcile_duration_seconds_bucket{le="+Inf"} 100.0
"""
NAME = "mistral_operator_reconcile_duration_seconds"


def test_histogram_reads_every_bucket() -> None:
    assert histogram(METRICS, NAME) == {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}


def test_quantiles_interpolate_within_the_bucket_of_what_was_observed_between_readings() -> None:
    after = histogram(METRICS, NAME)
    before = {0.1: 40.0, 0.5: 40.0, 1.0: 40.0, math.inf: 40.0}  # 60 observed since
    # Of the 60: 10 under 0.1 s, 40 in (0.1, 0.5], 10 in (0.5, 1].
    assert math.isclose(quantile(before, after, 0.5), 0.1 + 0.4 * (30 - 10) / 40)
    assert math.isclose(quantile(before, after, 0.99), 0.5 + 0.5 * (59.4 - 50) / 10)
    assert quantile(after, after, 0.5) == 0.0  # nothing observed


def test_a_quantile_in_the_open_top_bucket_is_its_lower_bound() -> None:
    before = {0.1: 0.0, math.inf: 0.0}
    after = {0.1: 1.0, math.inf: 10.0}
    assert quantile(before, after, 0.9) == 0.1


def test_rows_read_against_a_baseline_or_an_absolute_goal() -> None:
    assert Row("a", "vs floor", 1.1, "s", baseline=1.0, goal=1.2).met is True
    assert Row("a", "vs floor", 1.3, "s", baseline=1.0, goal=1.2).met is False
    assert Row("a", "absolute", 0, "writes", goal=0).met is True
    assert Row("a", "absolute", 1, "writes", goal=0).met is False
    assert Row("a", "no goal", 5, "").met is None
    assert Row("a", "no goal", 5, "").ratio is None
