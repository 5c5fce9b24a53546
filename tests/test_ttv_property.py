"""Time-to-value engine against a plain-Python reference on random cohorts (hypothesis).

Counts must agree exactly; quantiles of converters are checked against numpy's default
(linear) quantile to 1e-9 hours; Kaplan-Meier values against an exact-fraction product-limit
estimate (S to 1e-12, quantile times exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headstart.analytics import create_schema, load_events, load_milestones, load_persons
from headstart.analytics.person_groups import ALL_LABEL, Breakdown
from headstart.analytics.ttv import ACTIVATION, TtvQuery, time_to_value
from headstart.plan.model import Plan
from headstart.timeutil import MICROS_PER_DAY, MICROS_PER_HOUR, parse_iso

BASE = parse_iso("2024-05-01T00:00:00Z")
GOALS = ["m1", "m2"]


@dataclass(frozen=True)
class Person:
    person_id: str
    signup_at: int | None
    activated_at: int | None
    plan: str | None
    reached: tuple[tuple[str, int], ...]


def exact_km(durations: list[int], converted: list[bool]) -> list[tuple[int, Fraction]]:
    curve = []
    survival = Fraction(1)
    for time in sorted(set(durations)):
        at_risk = sum(1 for d in durations if d >= time)
        events = sum(1 for d, c in zip(durations, converted, strict=True) if d == time and c)
        survival *= 1 - Fraction(events, at_risk)
        curve.append((time, survival))
    return curve


def reference(
    persons: list[Person], query: TtvQuery, as_of: int
) -> dict[tuple[str, str], dict[str, Any]]:
    within_us = round((query.within_days or 14.0) * MICROS_PER_DAY)
    cohort = [
        p
        for p in persons
        if p.signup_at is not None
        and p.signup_at <= as_of
        and (query.signup_from is None or p.signup_at >= query.signup_from)
        and (query.signup_to is None or p.signup_at < query.signup_to)
    ]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for goal in [*GOALS, ACTIVATION]:
        groups: dict[str, list[Person]] = {ALL_LABEL: cohort}
        if query.breakdown is not None:
            for p in cohort:
                groups.setdefault(p.plan or "(none)", []).append(p)
        for group, members in groups.items():
            if not members:
                continue
            durations, flags = [], []
            for p in members:
                assert p.signup_at is not None
                if goal == ACTIVATION:
                    at = p.activated_at
                else:
                    times = [t for name, t in p.reached if name == goal]
                    at = min(times) if times else None
                done = at is not None and at <= as_of
                durations.append(
                    max(at - p.signup_at, 0) if done and at is not None else as_of - p.signup_at
                )
                flags.append(done)
            mature = [
                i
                for i, p in enumerate(members)
                if p.signup_at is not None and p.signup_at + within_us <= as_of
            ]
            converters = [d for d, f in zip(durations, flags, strict=True) if f]
            curve = exact_km(durations, flags)
            out[(goal, group)] = {
                "signups": len(members),
                "converted": len(converters),
                "mature": len(mature),
                "converted_within": sum(
                    1 for i in mature if flags[i] and durations[i] <= within_us
                ),
                "quantiles": [
                    None
                    if not converters
                    else float(np.quantile(np.array(converters, dtype=float) / MICROS_PER_HOUR, q))
                    for q in (0.5, 0.75, 0.9)
                ],
                "km_share_within": 1
                - next((s for t, s in reversed(curve) if t <= within_us), Fraction(1)),
                "km_quantiles": [
                    next((t / MICROS_PER_HOUR for t, s in curve if s <= 1 - q), None)
                    for q in (Fraction(1, 2), Fraction(3, 4), Fraction(9, 10))
                ],
            }
    return out


_WAREHOUSE: list[duckdb.DuckDBPyConnection] = []


def warehouse(persons: list[Person]) -> duckdb.DuckDBPyConnection:
    if not _WAREHOUSE:
        conn = duckdb.connect()
        create_schema(conn)
        _WAREHOUSE.append(conn)
    conn = _WAREHOUSE[0]
    for table in ("events", "persons", "milestones"):
        conn.execute(f"DELETE FROM {table}")
    load_persons(
        conn,
        [
            {
                "person_id": p.person_id,
                "signup_at": p.signup_at,
                "activated_at": p.activated_at,
                "traits": {} if p.plan is None else {"plan": p.plan},
            }
            for p in persons
        ],
    )
    load_milestones(
        conn,
        [
            {"person_id": p.person_id, "milestone": name, "reached_at": at}
            for p in persons
            for name, at in p.reached
        ],
    )
    # One event marks the data's end when as_of is left to default.
    load_events(conn, [{"person_id": "clock", "event": "Tick", "ts": BASE + 40 * MICROS_PER_DAY}])
    return conn


grid = st.integers(0, 4 * 40).map(lambda quarter_days: BASE + quarter_days * MICROS_PER_DAY // 4)


@st.composite
def people(draw: st.DrawFn) -> list[Person]:
    count = draw(st.integers(0, 12))
    persons = []
    for index in range(count):
        signup = draw(st.one_of(st.none(), grid))
        activated = None
        if signup is not None and draw(st.booleans()):
            activated = signup + draw(st.integers(0, 20)) * MICROS_PER_DAY // 4
        reached = tuple((name, draw(grid)) for name in GOALS if draw(st.booleans()))
        persons.append(
            Person(f"p{index}", signup, activated, draw(st.sampled_from([None, "a", "b"])), reached)
        )
    return persons


@st.composite
def queries(draw: st.DrawFn) -> TtvQuery:
    window = draw(st.one_of(st.none(), st.tuples(grid, st.integers(1, 30))))
    return TtvQuery(
        within_days=draw(st.sampled_from([None, 0.25, 1.0, 3.5, 7.0])),
        breakdown=draw(st.sampled_from([None, Breakdown("trait", "plan")])),
        signup_from=None if window is None else window[0],
        signup_to=None if window is None else window[0] + window[1] * MICROS_PER_DAY,
        as_of=draw(st.one_of(st.none(), grid)),
    )


PLAN = Plan.model_validate(
    {
        "signup": {"event": "Signed Up"},
        "milestones": [{"name": name, "event": name} for name in GOALS],
        "activation": {"milestones": GOALS, "within_days": 14},
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(persons=people(), query=queries())
def test_ttv_matches_reference(persons: list[Person], query: TtvQuery) -> None:
    conn = warehouse(persons)
    result = time_to_value(conn, query, PLAN)
    assert result.as_of is not None
    expected = reference(persons, query, result.as_of)

    rows = {(row["goal"], row["group"]): row for row in result.summary.to_dict(orient="records")}
    assert set(rows) == set(expected)
    for key, want in expected.items():
        got = rows[key]
        assert got["signups"] == want["signups"], key
        assert got["converted"] == want["converted"], key
        assert got["mature"] == want["mature"], key
        assert got["converted_within"] == want["converted_within"], key
        for column, value in zip(
            ("median_hours", "p75_hours", "p90_hours"), want["quantiles"], strict=True
        ):
            if value is None:
                assert np.isnan(got[column]), (key, column)
            else:
                assert got[column] == pytest.approx(value, abs=1e-9), (key, column)
        assert got["km_share_within"] == pytest.approx(float(want["km_share_within"]), abs=1e-12), (
            key
        )
        for column, value in zip(
            ("km_median_hours", "km_p75_hours", "km_p90_hours"), want["km_quantiles"], strict=True
        ):
            if value is None:
                assert np.isnan(got[column]), (key, column)
            else:
                assert got[column] == value, (key, column)
