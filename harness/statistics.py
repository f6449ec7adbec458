"""How evenly requests spread over pods, and how long recoveries took.

A load-balancing experiment ends with one request count per pod. Whether that
split is "even" is a statistical question: independent picks over k pods never
give exactly n/k each. This module turns the counts into figures with a known
expectation under an even split (a chi-squared goodness-of-fit p-value, the
max/min ratio, the coefficient of variation next to its expected value
sqrt((k-1)/n)) and judges them against thresholds. It also summarises the
recovery times of a self-healing experiment as percentiles.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: A split this unlikely under an even split is judged uneven.
DEFAULT_MIN_P_VALUE = 0.001
#: The busiest pod may serve at most this many times what the idlest serves.
DEFAULT_MAX_RATIO = 1.5


@dataclass(frozen=True)
class Judgement:
    """The outcome of judging figures against thresholds."""

    passed: bool
    #: One sentence per threshold that was not met; empty when passed.
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Spread:
    """How a number of requests spread over pods, with its expectations."""

    #: Requests counted per pod, in pod name order.
    counts: tuple[tuple[str, int], ...]
    #: All requests counted, n.
    total: int
    #: The chi-squared statistic against an even split (k-1 degrees of freedom).
    chi_squared: float
    #: The probability of a split at least this uneven if every pick were even.
    p_value: float
    #: The largest count over the smallest; infinite when a pod got nothing.
    max_min_ratio: float
    #: The standard deviation of the counts over their mean.
    coefficient_of_variation: float
    #: What the coefficient of variation is expected to be, sqrt((k-1)/n).
    expected_coefficient_of_variation: float

    @property
    def pods(self) -> int:
        """Return the number of pods, k."""
        return len(self.counts)

    def judge(
        self,
        *,
        min_p_value: float = DEFAULT_MIN_P_VALUE,
        max_ratio: float = DEFAULT_MAX_RATIO,
    ) -> Judgement:
        """Judge the spread even when both the p-value and the ratio pass."""
        reasons = []
        if self.p_value < min_p_value:
            reasons.append(
                f"chi-squared p-value {self.p_value:.3g} is below {min_p_value:g}: "
                f"the split {self._describe()} is unlikely to come from even picks"
            )
        if self.max_min_ratio > max_ratio:
            reasons.append(
                f"max/min ratio {self.max_min_ratio:.3g} is above {max_ratio:g}: "
                f"the split is {self._describe()}"
            )
        return Judgement(passed=not reasons, reasons=tuple(reasons))

    def as_dict(self) -> dict[str, float | int]:
        """Return the figures as plain numbers, for a results file."""
        return {
            "pods": self.pods,
            "total": self.total,
            "chi_squared": self.chi_squared,
            "p_value": self.p_value,
            "max_min_ratio": self.max_min_ratio,
            "coefficient_of_variation": self.coefficient_of_variation,
            "expected_coefficient_of_variation": (
                self.expected_coefficient_of_variation
            ),
        }

    def _describe(self) -> str:
        return ", ".join(f"{name}={count}" for name, count in self.counts)


def spread(counts: Mapping[str, int]) -> Spread:
    """Measure how evenly the requests in ``counts`` (pod name to count) spread.

    A single pod is trivially even: p-value 1, ratio 1, variation 0. Pods that
    served nothing are kept: they make the ratio infinite and the p-value tiny.
    """
    if not counts:
        raise ValueError("no pods to measure a spread over; pass one count per pod")
    negative = {name: count for name, count in counts.items() if count < 0}
    if negative:
        raise ValueError(f"negative request counts {negative}; counts must be >= 0")
    ordered = tuple(sorted(counts.items()))
    values = np.array([count for _, count in ordered], dtype=float)
    total = int(values.sum())
    if total == 0:
        raise ValueError(
            f"no requests counted on any of the {len(ordered)} pods; "
            "send traffic before measuring its spread"
        )
    k = len(ordered)
    if k == 1:
        return Spread(ordered, total, 0.0, 1.0, 1.0, 0.0, 0.0)

    result = stats.chisquare(values)
    smallest, largest = values.min(), values.max()
    ratio = math.inf if smallest == 0 else float(largest / smallest)
    return Spread(
        counts=ordered,
        total=total,
        chi_squared=float(result.statistic),
        p_value=float(result.pvalue),
        max_min_ratio=ratio,
        coefficient_of_variation=float(values.std() / values.mean()),
        expected_coefficient_of_variation=expected_coefficient_of_variation(
            pods=k, total=total
        ),
    )


def expected_coefficient_of_variation(*, pods: int, total: int) -> float:
    """Return sqrt((k-1)/n), the variation of counts when each pick is even.

    It is the root mean square of the coefficient of variation (standard
    deviation over the k counts, not k-1) for n independent even picks.
    """
    if pods < 1 or total < 1:
        raise ValueError(
            f"pods={pods} and total={total} must both be at least 1 "
            "for an expected variation"
        )
    return math.sqrt((pods - 1) / total)


@dataclass(frozen=True)
class Durations:
    """Percentiles of a set of durations, in seconds."""

    count: int
    minimum: float
    median: float
    p95: float
    maximum: float

    def as_dict(self) -> dict[str, float | int]:
        """Return the figures as plain numbers, for a results file."""
        return {
            "count": self.count,
            "min_s": self.minimum,
            "median_s": self.median,
            "p95_s": self.p95,
            "max_s": self.maximum,
        }


def durations(seconds: Sequence[float]) -> Durations:
    """Summarise durations (such as recovery times) by their percentiles.

    Percentiles interpolate linearly between the sorted values, so the p95 of a
    handful of values lies between the two largest.
    """
    if not seconds:
        raise ValueError("no durations to summarise; pass at least one value")
    values = np.array(seconds, dtype=float)
    bad = [value for value in seconds if not math.isfinite(value) or value < 0]
    if bad:
        raise ValueError(
            f"durations {bad} are not finite non-negative seconds; "
            "leave out the recoveries that were not measured"
        )
    median, p95 = np.percentile(values, [50, 95])
    return Durations(
        count=len(values),
        minimum=float(values.min()),
        median=float(median),
        p95=float(p95),
        maximum=float(values.max()),
    )
