"""The statistics of probabilistic assertions: Wilson intervals, pass^k, and regression tests.

A case that runs N times gives a count of passes; these functions turn counts into what a report
can honestly claim. Only the standard library is used (``statistics.NormalDist`` for quantiles,
``math.comb`` for exact binomial and hypergeometric terms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

__all__ = [
    "Interval",
    "TestResult",
    "fisher_exact_less",
    "pass_hat_k",
    "two_proportion_z_less",
    "wilson_interval",
]

RegressionTest = Literal["fisher", "z"]


@dataclass(frozen=True)
class Interval:
    """A confidence interval for a pass rate, with the point estimate it surrounds."""

    rate: float
    low: float
    high: float


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(passes: int, runs: int, confidence: float = 0.95) -> Interval:
    """The Wilson score interval of ``passes`` out of ``runs`` (two-sided, at ``confidence``).

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0 or N
    passes, which matters at the small N an agent eval can afford.
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    if not 0 <= passes <= runs:
        raise ValueError(f"passes must be between 0 and runs ({runs}), not {passes}")
    z = _z(confidence)
    p = passes / runs
    z2n = z * z / runs
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / runs + z2n / (4 * runs))
    low = 0.0 if passes == 0 else max(0.0, centre - half)
    high = 1.0 if passes == runs else min(1.0, centre + half)
    return Interval(rate=p, low=low, high=high)


def pass_hat_k(passes: int, runs: int, k: int) -> float:
    """The estimated probability that ``k`` independent runs all pass (pass^k).

    With ``k <= runs`` this is the unbiased estimator C(passes, k) / C(runs, k) (tau-bench's
    pass^k); with fewer runs than ``k`` it falls back to the plug-in estimate (passes/runs)^k.
    """
    if runs < 1 or k < 1:
        raise ValueError("runs and k must be at least 1")
    if not 0 <= passes <= runs:
        raise ValueError(f"passes must be between 0 and runs ({runs}), not {passes}")
    if k <= runs:
        return math.comb(passes, k) / math.comb(runs, k)
    return (passes / runs) ** k


@dataclass(frozen=True)
class TestResult:
    """A one-sided test of "the current pass rate is lower than the baseline's"."""

    __test__ = False  # not a pytest class

    p_value: float
    statistic: float | None = None


def fisher_exact_less(passes: int, runs: int, base_passes: int, base_runs: int) -> TestResult:
    """Fisher's exact test, one-sided: is the current rate lower than the baseline rate?

    The p-value is the hypergeometric probability, with both margins fixed, of the current run
    having ``passes`` or fewer of all the passes. Exact, so valid at any N.
    """
    for a, n in ((passes, runs), (base_passes, base_runs)):
        if n < 1 or not 0 <= a <= n:
            raise ValueError(f"bad counts: {a} passes of {n} runs")
    total_pass = passes + base_passes
    total = runs + base_runs
    denominator = math.comb(total, runs)
    lowest = max(0, total_pass - base_runs)
    tail = sum(
        math.comb(total_pass, x) * math.comb(total - total_pass, runs - x)
        for x in range(lowest, passes + 1)
    )
    return TestResult(p_value=min(1.0, tail / denominator))


def two_proportion_z_less(passes: int, runs: int, base_passes: int, base_runs: int) -> TestResult:
    """The pooled two-proportion z-test, one-sided: is the current rate lower than the baseline?

    A large-sample approximation; prefer Fisher's exact test at the small N of agent evals.
    """
    for a, n in ((passes, runs), (base_passes, base_runs)):
        if n < 1 or not 0 <= a <= n:
            raise ValueError(f"bad counts: {a} passes of {n} runs")
    pooled = (passes + base_passes) / (runs + base_runs)
    se = math.sqrt(pooled * (1 - pooled) * (1 / runs + 1 / base_runs))
    difference = passes / runs - base_passes / base_runs
    if se == 0.0:
        return TestResult(p_value=1.0 if difference >= 0 else 0.0, statistic=0.0)
    z = difference / se
    return TestResult(p_value=NormalDist().cdf(z), statistic=z)
