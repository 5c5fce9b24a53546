"""Time-to-value: how long persons take from sign-up to each milestone and to activation.

Definitions (docs/analytics.md explains them with examples):

- Cohort: persons with a sign-up (``persons.signup_at``) at or before ``as_of``, optionally
  only sign-ups in [``signup_from``, ``signup_to``).
- Goals: each milestone of the plan, in plan order, then ``activation``
  (``persons.activated_at``, which already requires the plan's activation window). Without a
  plan, the milestones found in the warehouse, by name.
- Duration: reached time minus sign-up time, floored at zero, because events before sign-up
  count toward milestones. A goal reached after ``as_of`` counts as not reached.
- Censoring: a person who has not reached the goal by ``as_of`` is censored at
  ``as_of - signup``: still in progress, not a failure.
- ``converted_within``: among persons whose N-day window (N = ``within_days``) ended by
  ``as_of`` (``mature``), the share that reached the goal within N days (duration <= N days).
  ``km_converted_within`` is 1 - S(N) from the Kaplan-Meier curve over the whole cohort, which
  also uses the persons still in their window.
- ``median_hours``, ``p75_hours``, ``p90_hours``: quantiles of the durations of the persons who
  converted (by ``as_of``), by linear interpolation between order statistics (numpy's default).
  They describe converters only and ignore everyone still in progress.
- ``km_median_hours`` (and p75, p90): the first time at which the Kaplan-Meier curve shows 50%
  (75%, 90%) converted (see ``headstart.analytics.survival``). It is null when the curve never
  gets there.
- Groups: ``(all)`` plus, with ``breakdown``, one group per trait value, first-touch channel or
  experiment variant (``headstart.analytics.person_groups``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from headstart.analytics.lifecycle_base import (
    LOW_SAMPLE,
    NO_DATA,
    Notice,
    ParamReader,
    Params,
    ParamValue,
    Source,
    cursor_for,
    finite_or_none,
    listing,
    notices_dict,
    records,
    resolve_as_of,
    share,
)
from headstart.analytics.person_groups import ALL_LABEL, Breakdown, experiment_conflicts, group_sql
from headstart.analytics.survival import KaplanMeier, from_counts
from headstart.errors import InvalidInput
from headstart.plan.model import Plan
from headstart.timeutil import MICROS_PER_DAY, MICROS_PER_HOUR, to_iso

ACTIVATION = "activation"
DEFAULT_WITHIN_DAYS = 14.0
MAX_DAYS = 3650
# Groups with fewer sign-ups than this get a LOW_SAMPLE notice: their quantiles and curves
# rest on a handful of persons.
LOW_SAMPLE_SIGNUPS = 30
QUANTILES = (0.5, 0.75, 0.9)

SUMMARY_COLUMNS = [
    "goal",
    "group",
    "signups",
    "converted",
    "censored",
    "mature",
    "converted_within",
    "share_within",
    "km_share_within",
    "median_hours",
    "p75_hours",
    "p90_hours",
    "km_median_hours",
    "km_p75_hours",
    "km_p90_hours",
]
_FLOAT_COLUMNS = (
    "share_within",
    "km_share_within",
    "median_hours",
    "p75_hours",
    "p90_hours",
    "km_median_hours",
    "km_p75_hours",
    "km_p90_hours",
)
CURVE_COLUMNS = [
    "goal",
    "group",
    "time_hours",
    "at_risk",
    "converted",
    "censored",
    "survival",
    "ci_lower",
    "ci_upper",
]


@dataclass(frozen=True)
class TtvQuery:
    """Parameters of a time-to-value analysis; the module docstring defines each field."""

    within_days: float | None = None
    breakdown: Breakdown | None = None
    goals: tuple[str, ...] = ()
    signup_from: int | None = None
    signup_to: int | None = None
    as_of: int | None = None
    curve_days: int = 30

    @classmethod
    def from_params(cls, values: Mapping[str, ParamValue]) -> TtvQuery:
        """Build a query from text parameters (REST query string, CLI options), validated."""
        read = ParamReader(values)
        by = read.text("by")
        return cls(
            within_days=read.number("within_days", None),
            breakdown=None if by is None else Breakdown.parse(by),
            goals=read.texts("goal"),
            signup_from=read.instant("signup_from"),
            signup_to=read.instant("signup_to"),
            as_of=read.instant("as_of"),
            curve_days=read.integer("curve_days", cls.curve_days),
        ).validate()

    def validate(self) -> TtvQuery:
        if self.within_days is not None and not 0 < self.within_days <= MAX_DAYS:
            raise InvalidInput(
                f"within_days={self.within_days!r} is out of range; use a number of days "
                f"above 0 and at most {MAX_DAYS}"
            )
        if not 1 <= self.curve_days <= MAX_DAYS:
            raise InvalidInput(
                f"curve_days={self.curve_days!r} is out of range; use 1 to {MAX_DAYS}"
            )
        if (
            self.signup_from is not None
            and self.signup_to is not None
            and self.signup_from >= self.signup_to
        ):
            raise InvalidInput(
                f"signup_from ({to_iso(self.signup_from)}) must be before signup_to "
                f"({to_iso(self.signup_to)})"
            )
        return self

    def to_dict(self, within_days: float) -> dict[str, Any]:
        return {
            "within_days": within_days,
            "breakdown": self.breakdown.label() if self.breakdown else None,
            "goals": list(self.goals) or "all",
            "signup_from": to_iso(self.signup_from),
            "signup_to": to_iso(self.signup_to),
            "censoring": "persons without the goal by as_of are censored at as_of - signup",
            "quantiles": "median/p75/p90 over converters, linear interpolation",
            "km_quantiles": "first time the Kaplan-Meier curve shows that share converted",
        }


@dataclass
class TtvResult:
    """Per goal and group: conversion shares, quantiles and Kaplan-Meier curves.

    ``summary`` has one row per goal and group (``SUMMARY_COLUMNS``); ``curves`` contains each
    full Kaplan-Meier step function (``CURVE_COLUMNS``), one row per distinct duration.
    """

    query: TtvQuery
    as_of: int | None
    within_days: float
    summary: pd.DataFrame
    curves: pd.DataFrame
    notices: list[Notice] = field(default_factory=list)

    def curve_points(self, days: int | None = None) -> pd.DataFrame:
        """Return S and its interval at each whole day 0..``days`` per goal and group."""
        horizon = self.query.curve_days if days is None else days
        rows: list[dict[str, Any]] = []
        for (goal, group), curve in self.curves.groupby(["goal", "group"], sort=False):
            hours = curve["time_hours"].to_numpy()
            for day in range(horizon + 1):
                index = int(np.searchsorted(hours, day * 24.0, side="right")) - 1
                point = curve.iloc[index] if index >= 0 else None
                rows.append(
                    {
                        "goal": goal,
                        "group": group,
                        "day": day,
                        "survival": 1.0 if point is None else float(point["survival"]),
                        "ci_lower": 1.0 if point is None else float(point["ci_lower"]),
                        "ci_upper": 1.0 if point is None else float(point["ci_upper"]),
                    }
                )
        return pd.DataFrame(
            rows, columns=["goal", "group", "day", "survival", "ci_lower", "ci_upper"]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "analysis": "ttv",
            "as_of": to_iso(self.as_of),
            "definition": self.query.to_dict(self.within_days),
            "summary": records(self.summary),
            "curve": records(self.curve_points()),
            **notices_dict(self.notices),
        }


def time_to_value(source: Source, query: TtvQuery, plan: Plan | None = None) -> TtvResult:
    """Compute time-to-value per goal (and group) over the warehouse ``source``."""
    with cursor_for(source) as conn:
        return _time_to_value(conn, query, plan)


def _time_to_value(
    conn: duckdb.DuckDBPyConnection, query: TtvQuery, plan: Plan | None
) -> TtvResult:
    query = query.validate()
    within_days = _within_days(query, plan)
    as_of = resolve_as_of(conn, query.as_of)
    goals = _goals(conn, query, plan)
    if as_of is None:
        return _empty(query, None, within_days, "the warehouse holds no events yet")

    params = Params()
    base = _durations_sql(query, goals, params, as_of)
    within_us = round(within_days * MICROS_PER_DAY)
    grouped = query.breakdown is not None
    summary = _summary(conn, base, params, goals, as_of, within_us, grouped)
    if summary.empty:
        return _empty(query, as_of, within_days, "no sign-ups at or before as_of")
    curves, fits = _curves(conn, base, params, goals, grouped)
    _add_km_columns(summary, fits, within_us)

    notices = _notices(summary)
    if query.breakdown is not None:
        conflict = experiment_conflicts(conn, query.breakdown, as_of)
        if conflict is not None:
            notices.append(conflict)
    return TtvResult(query, as_of, within_days, summary, curves, notices)


def _within_days(query: TtvQuery, plan: Plan | None) -> float:
    if query.within_days is not None:
        return query.within_days
    return plan.activation.within_days if plan is not None else DEFAULT_WITHIN_DAYS


def _goals(conn: duckdb.DuckDBPyConnection, query: TtvQuery, plan: Plan | None) -> list[str]:
    if plan is not None:
        names = [milestone.name for milestone in plan.milestones]
    else:
        rows = conn.execute("SELECT DISTINCT milestone FROM milestones ORDER BY 1").fetchall()
        names = [str(row[0]) for row in rows]
    goals = [*names, ACTIVATION]
    if not query.goals:
        return goals
    unknown = [goal for goal in query.goals if goal not in goals]
    if unknown:
        raise InvalidInput(
            f"goals contains {unknown[0]!r}, which is not a milestone; "
            f"use {ACTIVATION} or one of: {', '.join(names) or '(no milestones yet)'}"
        )
    return [goal for goal in goals if goal in query.goals]


def _empty(query: TtvQuery, as_of: int | None, within_days: float, reason: str) -> TtvResult:
    return TtvResult(
        query,
        as_of,
        within_days,
        pd.DataFrame({name: [] for name in SUMMARY_COLUMNS}),
        pd.DataFrame({name: [] for name in CURVE_COLUMNS}),
        [Notice(NO_DATA, reason)],
    )


def _durations_sql(query: TtvQuery, goals: list[str], params: Params, as_of: int) -> str:
    """Return SQL of (goal_index, grp, signup_us, converted, duration), one row per person and goal."""
    as_of_param = params.add(as_of)
    conditions = f"p.signup_at IS NOT NULL AND p.signup_at <= make_timestamp({as_of_param})"
    if query.signup_from is not None:
        conditions += f" AND p.signup_at >= make_timestamp({params.add(query.signup_from)})"
    if query.signup_to is not None:
        conditions += f" AND p.signup_at < make_timestamp({params.add(query.signup_to)})"

    group_join = ""
    group_expr = "NULL"
    if query.breakdown is not None:
        group_join = (
            f"LEFT JOIN ({group_sql(query.breakdown, params, as_of_param)}) g USING (person_id)"
        )
        missing = query.breakdown.missing_label().replace("'", "''")
        group_expr = f"coalesce(g.grp, '{missing}')"

    goal_rows = ", ".join(f"({index}, {params.add(goal)})" for index, goal in enumerate(goals))
    # Activation is always the last goal; a plan milestone that happens to be named
    # "activation" stays a milestone.
    activation_index = len(goals) - 1 if goals and goals[-1] == ACTIVATION else -1
    return f"""
        WITH cohort AS MATERIALIZED (
            SELECT p.person_id, epoch_us(p.signup_at) AS signup_us,
                   epoch_us(p.activated_at) AS activated_us, {group_expr} AS grp
            FROM persons p {group_join}
            WHERE {conditions}
        ),
        goals(goal_index, goal) AS (VALUES {goal_rows}),
        reached AS (
            SELECT m.person_id, g.goal_index, min(epoch_us(m.reached_at)) AS reached_us
            FROM milestones m JOIN goals g ON g.goal = m.milestone AND g.goal_index <> {activation_index}
            GROUP BY m.person_id, g.goal_index
            UNION ALL
            SELECT person_id, {activation_index}, activated_us FROM cohort
            WHERE activated_us IS NOT NULL
        ),
        durations AS MATERIALIZED (
            SELECT g.goal_index, c.grp, c.signup_us,
                   coalesce(r.reached_us <= {as_of_param}, false) AS converted,
                   CASE WHEN r.reached_us <= {as_of_param}
                        THEN greatest(r.reached_us - c.signup_us, 0)
                        ELSE {as_of_param} - c.signup_us END AS duration
            FROM cohort c CROSS JOIN goals g
            LEFT JOIN reached r ON r.person_id = c.person_id AND r.goal_index = g.goal_index
        )
    """


def _summary(
    conn: duckdb.DuckDBPyConnection,
    base: str,
    params: Params,
    goals: list[str],
    as_of: int,
    within_us: int,
    grouped: bool,
) -> pd.DataFrame:
    mature = f"signup_us + {within_us} <= {as_of}"
    sql = f"""{base}
        SELECT goal_index, {_group_label_sql(grouped)} AS grp,
               count(*) AS signups,
               count(*) FILTER (WHERE converted) AS converted,
               count(*) FILTER (WHERE {mature}) AS mature,
               count(*) FILTER (WHERE {mature} AND converted AND duration <= {within_us})
                   AS converted_within,
               quantile_cont(duration, [0.5, 0.75, 0.9]) FILTER (WHERE converted) AS quantiles
        FROM durations
        GROUP BY GROUPING SETS ({"(goal_index), (goal_index, grp)" if grouped else "(goal_index)"})
        ORDER BY goal_index, {_group_order_sql(grouped)}
    """
    rows = conn.execute(sql, params.values).fetchall()
    out: list[dict[str, Any]] = []
    for goal_index, grp, signups, converted, mature_n, within, quantiles in rows:
        values = list(quantiles) if quantiles is not None else [None, None, None]
        out.append(
            {
                "goal": goals[goal_index],
                "group": grp,
                "signups": int(signups),
                "converted": int(converted),
                "censored": int(signups) - int(converted),
                "mature": int(mature_n),
                "converted_within": int(within),
                "share_within": share(int(within), int(mature_n)),
                "km_share_within": None,
                "median_hours": _hours(values[0]),
                "p75_hours": _hours(values[1]),
                "p90_hours": _hours(values[2]),
                "km_median_hours": None,
                "km_p75_hours": None,
                "km_p90_hours": None,
            }
        )
    frame = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    if frame.empty or int(frame["signups"].max()) == 0:
        return pd.DataFrame({name: [] for name in SUMMARY_COLUMNS})
    return frame.astype({column: float for column in _FLOAT_COLUMNS})


def _curves(
    conn: duckdb.DuckDBPyConnection, base: str, params: Params, goals: list[str], grouped: bool
) -> tuple[pd.DataFrame, dict[tuple[str, str], KaplanMeier]]:
    sets = (
        "(goal_index, duration), (goal_index, grp, duration)"
        if grouped
        else "(goal_index, duration)"
    )
    sql = f"""{base}
        SELECT goal_index, {_group_label_sql(grouped)} AS grp, duration,
               count(*) FILTER (WHERE converted) AS converted,
               count(*) FILTER (WHERE NOT converted) AS censored
        FROM durations
        GROUP BY GROUPING SETS ({sets})
        ORDER BY goal_index, {_group_order_sql(grouped)}, duration
    """
    counts = conn.execute(sql, params.values).df()
    fits: dict[tuple[str, str], KaplanMeier] = {}
    frames: list[pd.DataFrame] = []
    for (goal_index, group), part in counts.groupby(["goal_index", "grp"], sort=False):
        fit = from_counts(
            part["duration"].to_numpy(dtype=np.int64),
            part["converted"].to_numpy(dtype=np.int64),
            part["censored"].to_numpy(dtype=np.int64),
        )
        goal = goals[int(goal_index)]
        fits[(goal, str(group))] = fit
        frames.append(_curve_frame(goal, str(group), fit))
    if not frames:
        return pd.DataFrame({name: [] for name in CURVE_COLUMNS}), fits
    return pd.concat(frames, ignore_index=True), fits


def _group_label_sql(grouped: bool) -> str:
    label = ALL_LABEL.replace("'", "''")
    if not grouped:
        return f"'{label}'"
    return f"CASE WHEN grouping(grp) = 1 THEN '{label}' ELSE grp END"


def _group_order_sql(grouped: bool) -> str:
    return "grouping(grp) DESC, grp" if grouped else "1"


def _curve_frame(goal: str, group: str, fit: KaplanMeier) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "goal": goal,
            "group": group,
            "time_hours": fit.times / MICROS_PER_HOUR,
            "at_risk": fit.at_risk,
            "converted": fit.events,
            "censored": fit.censored,
            "survival": fit.survival,
            "ci_lower": fit.ci_lower,
            "ci_upper": fit.ci_upper,
        },
        columns=CURVE_COLUMNS,
    )


def _add_km_columns(
    summary: pd.DataFrame, fits: dict[tuple[str, str], KaplanMeier], within_us: int
) -> None:
    for index, row in summary.iterrows():
        fit = fits.get((row["goal"], row["group"]))
        if fit is None:
            continue
        summary.at[index, "km_share_within"] = 1.0 - fit.survival_at(within_us)
        for column, q in zip(
            ("km_median_hours", "km_p75_hours", "km_p90_hours"), QUANTILES, strict=True
        ):
            time = fit.conversion_time(q)
            summary.at[index, column] = None if time is None else time / MICROS_PER_HOUR
    for column in _FLOAT_COLUMNS:
        summary[column] = summary[column].astype(float)


def _hours(micros: float | None) -> float | None:
    return finite_or_none(None if micros is None else micros / MICROS_PER_HOUR)


def _notices(summary: pd.DataFrame) -> list[Notice]:
    groups = summary.drop_duplicates("group")
    small = groups[groups["signups"] < LOW_SAMPLE_SIGNUPS]
    if small.empty:
        return []
    return [
        Notice(
            LOW_SAMPLE,
            f"{len(small)} groups have fewer than {LOW_SAMPLE_SIGNUPS} sign-ups: "
            + listing([f"{row.group} ({row.signups})" for row in small.itertuples()]),
        )
    ]
