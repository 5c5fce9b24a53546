"""The Kaplan-Meier estimator for time-to-event data with right censoring.

Each subject has a duration and a flag: converted at that duration, or censored then (still
in progress when observation stopped). The estimate of the share not yet converted at time t is

    S(t) = product over event times t_i <= t of (1 - d_i / n_i)

where d_i subjects converted at t_i and n_i were at risk just before t_i (durations >= t_i).
At a time with both conversions and censorings, the censored subjects count as at risk, as
usual. The 95% interval is the exponential Greenwood ("log-log") interval:

    V(t) = sum over t_i <= t of d_i / (n_i (n_i - d_i))   (a term with n_i = d_i counts 0)
    bounds = exp(-exp(log(-log S) -/+ z sqrt(V) / log S)),  z = 1.959963984540054

which is what lifelines' ``KaplanMeierFitter`` reports by default (both bounds equal S where S
is 1 or 0). The quantile time for a
share q converted is the first time at which S(t) <= 1 - q; like lifelines, no interpolation
across a plateau. Because S is a product of floats, a value within 1e-12 of 1 - q counts as
reaching it, so a curve that reaches exactly 0.5 in exact arithmetic has a median.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Z_95 = 1.959963984540054
_TOLERANCE = 1e-12

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class KaplanMeier:
    """A Kaplan-Meier curve: one entry per distinct duration, in ascending order.

    ``survival[i]`` is S just after ``times[i]``; before the first time S is 1.
    """

    times: IntArray
    at_risk: IntArray
    events: IntArray
    censored: IntArray
    survival: FloatArray
    ci_lower: FloatArray
    ci_upper: FloatArray

    @property
    def subjects(self) -> int:
        return int(self.events.sum() + self.censored.sum())

    def survival_at(self, time: int) -> float:
        """Return S(time): the share not converted by ``time`` (inclusive)."""
        index = int(np.searchsorted(self.times, time, side="right")) - 1
        return 1.0 if index < 0 else float(self.survival[index])

    def conversion_time(self, share: float) -> int | None:
        """Return the first time by which ``share`` of the subjects converted, or None.

        None means the curve never falls to ``1 - share``: too many are still in progress.
        """
        reached = np.nonzero(self.survival <= 1.0 - share + _TOLERANCE)[0]
        return None if reached.size == 0 else int(self.times[reached[0]])


def kaplan_meier(durations: npt.ArrayLike, converted: npt.ArrayLike) -> KaplanMeier:
    """Fit the curve to per-subject durations (integers) and conversion flags."""
    duration_array = np.asarray(durations, dtype=np.int64)
    flag_array = np.asarray(converted, dtype=bool)
    if duration_array.shape != flag_array.shape:
        raise ValueError(
            f"durations ({duration_array.size}) and converted ({flag_array.size}) "
            "must have the same length"
        )
    times, inverse = np.unique(duration_array, return_inverse=True)
    events = np.bincount(inverse, weights=flag_array, minlength=times.size).astype(np.int64)
    totals = np.bincount(inverse, minlength=times.size).astype(np.int64)
    return from_counts(times, events, totals - events)


def from_counts(times: IntArray, events: IntArray, censored: IntArray) -> KaplanMeier:
    """Fit the curve to counts per distinct time (ascending times, no duplicates)."""
    removed = events + censored
    at_risk = (removed.sum() - np.concatenate(([0], np.cumsum(removed)[:-1]))).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        factors = 1.0 - events / at_risk
        survival = np.cumprod(factors)
        remaining = at_risk - events
        terms = np.where(remaining > 0, events / (at_risk * remaining.astype(float)), 0.0)
        variance = np.cumsum(terms)
        lower, upper = _log_log_bounds(survival, variance)
    return KaplanMeier(
        times=np.asarray(times, dtype=np.int64),
        at_risk=at_risk,
        events=np.asarray(events, dtype=np.int64),
        censored=np.asarray(censored, dtype=np.int64),
        survival=survival,
        ci_lower=lower,
        ci_upper=upper,
    )


def _log_log_bounds(survival: FloatArray, variance: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Return the exponential Greenwood bounds; where S is 1 or 0 both bounds equal S."""
    inside = (survival > 0.0) & (survival < 1.0)
    log_s = np.log(np.where(inside, survival, 0.5))
    spread = Z_95 * np.sqrt(variance) / log_s
    lower = np.where(inside, np.exp(-np.exp(np.log(-log_s) - spread)), survival)
    upper = np.where(inside, np.exp(-np.exp(np.log(-log_s) + spread)), survival)
    return lower, upper
