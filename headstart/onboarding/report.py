"""The onboarding report: milestone completion, activation, time-to-value and drop-off.

Definitions (also in docs/onboarding.md):

- The cohort is every person with a sign-up, optionally limited to sign-ups in
  [``signup_from``, ``signup_to``).
- Milestone completion: the share of the cohort that reached the milestone, at any time,
  and the median hours from sign-up to reaching it (floored at zero).
- Activation rate: the share of the cohort activated, meaning every activation milestone was
  reached within the window. ``mature_activation_rate`` counts only persons whose window had
  ended by ``as_of``, so recent sign-ups still in their window do not pull it down.
- TTV: among activated persons, the median, p75 and p90 of activation time minus sign-up
  time, by linear interpolation between order statistics (numpy's default).
- Drop-off: step k is the number of persons in the cohort who reached milestones 1..k of the
  plan, in any order; each step shows its conversion from the previous step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from headstart.onboarding.state import activation_window_us
from headstart.plan.model import Plan
from headstart.state.store import StateStore
from headstart.timeutil import MICROS_PER_HOUR, to_iso


@dataclass(frozen=True)
class CohortRow:
    person_id: str
    signup_at: int
    activated_at: int | None
    reached: dict[str, int]


def load_cohort(
    store: StateStore, signup_from: int | None = None, signup_to: int | None = None
) -> list[CohortRow]:
    conditions = ["signup_at IS NOT NULL"]
    params: list[int] = []
    if signup_from is not None:
        conditions.append("signup_at >= ?")
        params.append(signup_from)
    if signup_to is not None:
        conditions.append("signup_at < ?")
        params.append(signup_to)
    where = " AND ".join(conditions)
    with store.lock:
        persons = store.conn.execute(
            f"SELECT person_id, signup_at, activated_at FROM persons WHERE {where}", params
        ).fetchall()
        milestone_rows = store.conn.execute(
            "SELECT m.person_id, m.milestone, m.reached_at FROM milestones m"
            f" JOIN persons p USING (person_id) WHERE {where.replace('signup_at', 'p.signup_at')}",
            params,
        ).fetchall()
    reached: dict[str, dict[str, int]] = {}
    for person_id, milestone, at in milestone_rows:
        reached.setdefault(person_id, {})[milestone] = at
    return [
        CohortRow(pid, signup, activated, reached.get(pid, {}))
        for pid, signup, activated in persons
    ]


def build_report(plan: Plan, cohort: list[CohortRow], as_of: int) -> dict[str, Any]:
    total = len(cohort)
    window_us = activation_window_us(plan)
    return {
        "as_of": to_iso(as_of),
        "signups": total,
        "milestones": [_milestone_row(name, cohort) for name in (m.name for m in plan.milestones)],
        "activation": _activation(plan, cohort, as_of, window_us),
        "ttv": _ttv(plan, cohort),
        "dropoff": _dropoff(plan, cohort),
    }


def _milestone_row(name: str, cohort: list[CohortRow]) -> dict[str, Any]:
    hours = [
        max(0, row.reached[name] - row.signup_at) / MICROS_PER_HOUR
        for row in cohort
        if name in row.reached
    ]
    return {
        "milestone": name,
        "reached": len(hours),
        "share": _share(len(hours), len(cohort)),
        "median_hours_after_signup": _quantile(hours, 0.5),
    }


def _activation(plan: Plan, cohort: list[CohortRow], as_of: int, window_us: int) -> dict[str, Any]:
    activated = sum(1 for row in cohort if row.activated_at is not None)
    mature = [row for row in cohort if row.signup_at + window_us <= as_of]
    mature_activated = sum(1 for row in mature if row.activated_at is not None)
    in_progress = sum(
        1 for row in cohort if row.activated_at is None and row.signup_at + window_us > as_of
    )
    return {
        "milestones": plan.activation.milestones,
        "within_days": plan.activation.within_days,
        "activated": activated,
        "rate": _share(activated, len(cohort)),
        "mature_signups": len(mature),
        "mature_activation_rate": _share(mature_activated, len(mature)),
        "in_progress": in_progress,
    }


def _ttv(plan: Plan, cohort: list[CohortRow]) -> dict[str, Any]:
    hours = [
        max(0, row.activated_at - row.signup_at) / MICROS_PER_HOUR
        for row in cohort
        if row.activated_at is not None
    ]
    return {
        "converted": len(hours),
        "converted_within_window": _share(len(hours), len(cohort)),
        "window_days": plan.activation.within_days,
        "median_hours": _quantile(hours, 0.5),
        "p75_hours": _quantile(hours, 0.75),
        "p90_hours": _quantile(hours, 0.9),
    }


def _dropoff(plan: Plan, cohort: list[CohortRow]) -> list[dict[str, Any]]:
    steps = [{"step": "signup", "persons": len(cohort), "from_previous": None, "dropped": None}]
    previous = len(cohort)
    names: list[str] = []
    for milestone in plan.milestones:
        names.append(milestone.name)
        count = sum(1 for row in cohort if all(name in row.reached for name in names))
        steps.append(
            {
                "step": milestone.name,
                "persons": count,
                "from_previous": _share(count, previous),
                "dropped": previous - count,
            }
        )
        previous = count
    return steps


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.quantile(np.asarray(values, dtype=float), q))
