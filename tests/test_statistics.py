"""Tests of the spread and duration figures against known distributions."""

import math

import numpy as np
import pytest
from scipy.stats import chi2

from harness.statistics import (
    durations,
    expected_coefficient_of_variation,
    spread,
)

PODS = ("catalog-a", "catalog-b", "catalog-c")


def _counts(values: np.ndarray) -> dict[str, int]:
    return {f"pod-{i}": int(v) for i, v in enumerate(values)}


def test_even_multinomial_splits_are_rarely_rejected() -> None:
    rng = np.random.default_rng(20261203)
    samples = rng.multinomial(3000, [1 / 3] * 3, size=200)

    rejected = sum(
        not spread(_counts(sample)).judge(max_ratio=math.inf).passed
        for sample in samples
    )

    # At p < 0.001 about 0.2 of 200 trials are expected to be rejected.
    assert rejected / len(samples) < 0.02


def test_even_split_p_values_are_roughly_uniform() -> None:
    rng = np.random.default_rng(7)
    samples = rng.multinomial(3000, [1 / 3] * 3, size=400)

    p_values = np.array([spread(_counts(sample)).p_value for sample in samples])

    # Under the null hypothesis about a tenth of p-values fall below 0.1.
    assert 0.05 < np.mean(p_values < 0.1) < 0.15
    assert 0.4 < np.median(p_values) < 0.6


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param([0.5, 0.3, 0.2], id="fifty-thirty-twenty"),
        pytest.param([0.4, 0.3, 0.3], id="forty-thirty-thirty"),
        pytest.param([0.5, 0.5, 0.0], id="one-pod-idle"),
    ],
)
def test_skewed_multinomial_splits_are_rejected(weights: list[float]) -> None:
    rng = np.random.default_rng(11)
    samples = rng.multinomial(3000, weights, size=50)

    judgements = [spread(_counts(sample)).judge() for sample in samples]

    assert not any(judgement.passed for judgement in judgements)
    assert all("p-value" in judgement.reasons[0] for judgement in judgements), (
        "the chi-squared test alone should reject these splits"
    )


@pytest.mark.parametrize(
    "counts",
    [
        pytest.param([1000, 1000, 1000], id="exactly-even"),
        pytest.param([1040, 980, 980], id="slightly-uneven"),
        pytest.param([1500, 900, 600], id="skewed"),
        pytest.param([7, 0, 3, 12], id="four-pods-with-a-zero"),
    ],
)
def test_p_value_matches_the_chi_squared_survival_function(counts: list[int]) -> None:
    n, k = sum(counts), len(counts)
    expected = n / k
    statistic = sum((c - expected) ** 2 / expected for c in counts)

    measured = spread(_counts(np.array(counts)))

    assert measured.chi_squared == pytest.approx(statistic)
    assert measured.p_value == pytest.approx(chi2.sf(statistic, k - 1))


def test_coefficient_of_variation_of_even_picks_matches_its_expectation() -> None:
    rng = np.random.default_rng(3)
    samples = rng.multinomial(3000, [1 / 3] * 3, size=2000)

    cvs = np.array([spread(_counts(s)).coefficient_of_variation for s in samples])
    root_mean_square = math.sqrt(float(np.mean(cvs**2)))

    expected = expected_coefficient_of_variation(pods=3, total=3000)
    assert expected == pytest.approx(math.sqrt(2 / 3000))
    assert root_mean_square == pytest.approx(expected, rel=0.05)


def test_ratio_and_variation_are_computed_from_the_counts() -> None:
    measured = spread({"a": 300, "b": 200, "c": 100})

    assert measured.max_min_ratio == 3.0
    assert measured.coefficient_of_variation == pytest.approx(
        np.std([300, 200, 100]) / 200
    )
    assert measured.total == 600
    assert measured.pods == 3


def test_a_ratio_above_the_threshold_is_reported_with_the_split() -> None:
    judgement = spread({"a": 1600, "b": 1000, "c": 1000}).judge(
        min_p_value=0.0, max_ratio=1.5
    )

    assert not judgement.passed
    assert judgement.reasons == (
        "max/min ratio 1.6 is above 1.5: the split is a=1600, b=1000, c=1000",
    )


def test_a_pod_that_served_nothing_makes_the_ratio_infinite() -> None:
    measured = spread({"a": 10, "b": 0})

    assert measured.max_min_ratio == math.inf
    assert not measured.judge().passed


def test_a_single_pod_is_trivially_even() -> None:
    measured = spread({"only": 42})

    assert measured.p_value == 1.0
    assert measured.max_min_ratio == 1.0
    assert measured.coefficient_of_variation == 0.0
    assert measured.expected_coefficient_of_variation == 0.0
    assert measured.judge().passed


def test_counts_are_ordered_by_pod_name() -> None:
    measured = spread(dict(zip(reversed(PODS), (1, 2, 3), strict=True)))

    assert measured.counts == (("catalog-a", 3), ("catalog-b", 2), ("catalog-c", 1))


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        pytest.param({}, "no pods", id="no-pods"),
        pytest.param({"a": 0, "b": 0}, "no requests counted", id="all-zero"),
        pytest.param({"a": 5, "b": -1}, "negative request counts", id="negative"),
    ],
)
def test_unusable_counts_are_refused_with_a_reason(
    counts: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        spread(counts)


def test_durations_are_summarised_by_interpolated_percentiles() -> None:
    summary = durations([1.0, 2.0, 3.0, 4.0, 10.0])

    assert summary.count == 5
    assert summary.minimum == 1.0
    assert summary.median == 3.0
    # Linear interpolation: 95 % of the way from index 0 to 4 is 3.8,
    # between 4.0 and 10.0.
    assert summary.p95 == pytest.approx(4.0 + 0.8 * 6.0)
    assert summary.maximum == 10.0


def test_a_single_duration_is_every_percentile() -> None:
    summary = durations([1.25])

    assert (summary.minimum, summary.median, summary.p95, summary.maximum) == (
        1.25,
        1.25,
        1.25,
        1.25,
    )


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([], id="empty"),
        pytest.param([1.0, math.nan], id="not-a-number"),
        pytest.param([1.0, -0.5], id="negative"),
        pytest.param([math.inf], id="infinite"),
    ],
)
def test_unusable_durations_are_refused(values: list[float]) -> None:
    with pytest.raises(ValueError, match=r"durations"):
        durations(values)
