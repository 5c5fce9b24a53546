"""Kaplan-Meier estimator: golden values from lifelines and an exact-fraction reference.

Tolerances: lifelines computes S as exp(sum(log(n - d) - log(n))) while headstart multiplies
(1 - d / n), so the two differ by float rounding only; S and the interval bounds are compared
to 1e-9. Quantile times are compared exactly, except where the exact S equals the threshold
(then lifelines' rounding can land on either side; the exact reference decides).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter

from headstart.analytics.survival import kaplan_meier

TOLERANCE = 1e-9


def lifelines_fit(durations: np.ndarray, converted: np.ndarray) -> KaplanMeierFitter:
    fitter = KaplanMeierFitter()
    fitter.fit(durations.astype(float), event_observed=converted)
    return fitter


def exact_survival(durations: list[int], converted: list[bool]) -> dict[int, Fraction]:
    """Return S just after each distinct time, by the product-limit formula in fractions."""
    result: dict[int, Fraction] = {}
    survival = Fraction(1)
    for time in sorted(set(durations)):
        at_risk = sum(1 for d in durations if d >= time)
        events = sum(1 for d, c in zip(durations, converted, strict=True) if d == time and c)
        survival *= 1 - Fraction(events, at_risk)
        result[time] = survival
    return result


def exact_conversion_time(curve: dict[int, Fraction], share: Fraction) -> int | None:
    for time, survival in curve.items():
        if survival <= 1 - share:
            return time
    return None


@pytest.mark.parametrize(
    ("seed", "size", "censor_share"),
    [(1, 50, 0.2), (2, 500, 0.5), (3, 2000, 0.8), (4, 300, 0.0)],
    ids=["small", "half-censored", "mostly-censored", "no-censoring"],
)
def test_curve_matches_lifelines(seed: int, size: int, censor_share: float) -> None:
    rng = np.random.default_rng(seed)
    # Durations on a coarse grid, so many subjects tie, some with mixed events and censorings.
    durations = rng.integers(0, 60, size=size) * 3_600_000_000
    converted = rng.random(size) >= censor_share
    fit = kaplan_meier(durations, converted)
    reference = lifelines_fit(durations, converted)

    survival = reference.survival_function_.iloc[:, 0]
    bounds = reference.confidence_interval_
    for index, time in enumerate(fit.times):
        assert fit.survival[index] == pytest.approx(survival.loc[float(time)], abs=TOLERANCE)
        assert fit.ci_lower[index] == pytest.approx(
            bounds.iloc[:, 0].loc[float(time)], abs=TOLERANCE
        )
        assert fit.ci_upper[index] == pytest.approx(
            bounds.iloc[:, 1].loc[float(time)], abs=TOLERANCE
        )

    table = reference.event_table
    for index, time in enumerate(fit.times):
        assert fit.at_risk[index] == table.loc[float(time), "at_risk"]
        assert fit.events[index] == table.loc[float(time), "observed"]
        assert fit.censored[index] == table.loc[float(time), "censored"]

    median = fit.conversion_time(0.5)
    if np.isinf(reference.median_survival_time_):
        assert median is None
    else:
        assert median == reference.median_survival_time_


def test_median_with_plateau_at_one_half() -> None:
    # Four subjects, two convert at hour 1: S is exactly 0.5 from hour 1 on. The median is
    # the first time S <= 0.5 (lifelines' convention), not the middle of the plateau.
    durations = np.array([1, 1, 5, 9]) * 3_600_000_000
    fit = kaplan_meier(durations, [True, True, False, False])
    assert fit.conversion_time(0.5) == 3_600_000_000
    assert fit.conversion_time(0.75) is None


def test_everyone_converted_at_once() -> None:
    fit = kaplan_meier([7, 7, 7], [True, True, True])
    assert fit.survival.tolist() == [0.0]
    assert fit.ci_lower.tolist() == [0.0]
    assert fit.ci_upper.tolist() == [0.0]
    assert fit.conversion_time(0.9) == 7


def test_only_censored_has_no_quantiles() -> None:
    fit = kaplan_meier([3, 4], [False, False])
    assert fit.survival.tolist() == [1.0, 1.0]
    assert fit.ci_lower.tolist() == [1.0, 1.0]
    assert fit.conversion_time(0.5) is None
    assert fit.survival_at(100) == 1.0


def test_survival_at_is_right_continuous() -> None:
    fit = kaplan_meier([10, 20], [True, True])
    assert fit.survival_at(9) == 1.0
    assert fit.survival_at(10) == 0.5
    assert fit.survival_at(19) == 0.5
    assert fit.survival_at(20) == 0.0


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="same length"):
        kaplan_meier([1, 2], [True])


subjects = st.lists(st.tuples(st.integers(0, 12), st.booleans()), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(subjects=subjects)
def test_curve_matches_exact_fractions(subjects: list[tuple[int, bool]]) -> None:
    durations = [d for d, _ in subjects]
    converted = [c for _, c in subjects]
    fit = kaplan_meier(durations, converted)
    exact = exact_survival(durations, converted)

    assert fit.times.tolist() == sorted(exact)
    for index, time in enumerate(fit.times.tolist()):
        assert fit.survival[index] == pytest.approx(float(exact[time]), abs=1e-12)
    for q in (Fraction(1, 2), Fraction(3, 4), Fraction(9, 10)):
        assert fit.conversion_time(float(q)) == exact_conversion_time(exact, q)
