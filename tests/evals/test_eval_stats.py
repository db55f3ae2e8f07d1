"""The statistics against known values (Wilson 1927 / Newcombe 1998 tables, the lady tasting tea,
a hand-computed z-test)."""

import math

import pytest

from keel.evals.stats import fisher_exact_less, pass_hat_k, two_proportion_z_less, wilson_interval


@pytest.mark.parametrize(
    ("passes", "runs", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),  # Newcombe (1998), example
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (3, 3, 0.4385, 1.0),
        (15, 148, 0.0624, 0.1605),  # Newcombe (1998), 15/148
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), 81/263
    ],
)
def test_wilson_interval_matches_published_values(
    passes: int, runs: int, low: float, high: float
) -> None:
    interval = wilson_interval(passes, runs, 0.95)
    assert interval.rate == passes / runs
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_narrows_with_more_runs_and_widens_with_confidence() -> None:
    assert wilson_interval(40, 50).low > wilson_interval(4, 5).low
    assert wilson_interval(8, 10, 0.99).low < wilson_interval(8, 10, 0.90).low


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(4, 3)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=1.0)


def test_pass_hat_k_is_the_unbiased_estimator() -> None:
    assert pass_hat_k(4, 5, 3) == pytest.approx(math.comb(4, 3) / math.comb(5, 3))  # 0.4
    assert pass_hat_k(5, 5, 3) == 1.0
    assert pass_hat_k(2, 5, 3) == 0.0  # fewer passes than k: no way for k runs to all pass
    assert pass_hat_k(3, 4, 1) == pytest.approx(0.75)  # pass^1 is the pass rate
    assert pass_hat_k(1, 2, 3) == pytest.approx(0.125)  # k > runs: plug-in (1/2)^3


def test_fisher_exact_one_sided_lady_tasting_tea() -> None:
    # 3 of 4 right vs 1 of 4: P(X >= 3) = 17/70; "current lower" is the mirror table.
    assert fisher_exact_less(1, 4, 3, 4).p_value == pytest.approx(17 / 70)
    assert fisher_exact_less(0, 4, 4, 4).p_value == pytest.approx(1 / 70)
    assert fisher_exact_less(4, 4, 0, 4).p_value == pytest.approx(1.0)


def test_two_proportion_z_test_matches_hand_computation() -> None:
    result = two_proportion_z_less(30, 50, 45, 50)
    assert result.statistic == pytest.approx(-3.4641, abs=1e-4)
    assert result.p_value == pytest.approx(0.000266, abs=1e-6)
    same = two_proportion_z_less(5, 5, 5, 5)
    assert same.p_value == 1.0
