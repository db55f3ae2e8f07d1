"""Regression against a baseline: a case regressed only when its drop in pass rate is
statistically significant, so the noise of a few runs of a stochastic model is not a failure.

Each case common to both reports is tested on its own (one-sided: "the current pass rate is lower
than the baseline's") at level ``alpha``. Fisher's exact test is the default because it is exact
at the small run counts agent evals can afford; the pooled two-proportion z-test is offered for
large N. No correction for testing several cases is applied: each case's verdict stands alone.
"""

from __future__ import annotations

from typing import Literal

from keel.evals.report import Comparison, EvalReport
from keel.evals.stats import fisher_exact_less, two_proportion_z_less

__all__ = ["TEST_NAMES", "compare"]

TEST_NAMES = {
    "fisher": "Fisher's exact test, one-sided",
    "z": "two-proportion z-test (pooled), one-sided",
}


def compare(
    report: EvalReport,
    baseline: EvalReport,
    *,
    alpha: float = 0.05,
    test: Literal["fisher", "z"] = "fisher",
    baseline_name: str = "baseline",
) -> EvalReport:
    """``report`` with each case's comparison to ``baseline`` filled in (cases new since the
    baseline get none)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be between 0 and 1")
    before = {c.id: c for c in baseline.cases}
    cases = []
    for case in report.cases:
        base = before.get(case.id)
        if base is None:
            cases.append(case.model_copy(update={"comparison": None}))
            continue
        if test == "fisher":
            lower = fisher_exact_less(case.passes, case.runs, base.passes, base.runs)
            higher = fisher_exact_less(base.passes, base.runs, case.passes, case.runs)
        else:
            lower = two_proportion_z_less(case.passes, case.runs, base.passes, base.runs)
            higher = two_proportion_z_less(base.passes, base.runs, case.passes, case.runs)
        comparison = Comparison(
            baseline_passes=base.passes,
            baseline_runs=base.runs,
            p_value=lower.p_value,
            regressed=lower.p_value < alpha,
            improved=higher.p_value < alpha,
        )
        cases.append(case.model_copy(update={"comparison": comparison}))
    return report.model_copy(
        update={
            "cases": cases,
            "regression_test": TEST_NAMES[test],
            "alpha": alpha,
            "baseline": baseline_name,
        }
    )
