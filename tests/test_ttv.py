"""Time-to-value: censoring, quantiles, breakdowns, lifelines golden values and merged devices.

Tolerances against lifelines: S(t), its interval and 1 - S(N) to 1e-9 (float rounding of two
formulas for the same product), median times exactly. Quantiles of converters against
numpy.quantile's default linear method to 1e-9 hours.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from headstart.analytics import create_schema, load_events, load_milestones, load_persons
from headstart.analytics.lifecycle_base import LOW_SAMPLE, MULTIPLE_VARIANTS, NO_DATA
from headstart.analytics.person_groups import Breakdown
from headstart.analytics.ttv import ACTIVATION, TtvQuery, time_to_value
from headstart.analytics.warehouse import Warehouse
from headstart.datadir import DataDir
from headstart.errors import InvalidInput
from headstart.plan.load import parse_plan
from headstart.timeutil import MICROS_PER_DAY, MICROS_PER_HOUR, parse_iso
from tests.helpers.pipeline import Pipeline, identify, track

HOUR = MICROS_PER_HOUR
DAY = MICROS_PER_DAY
T0 = parse_iso("2024-04-01T00:00:00Z")
PLAN = parse_plan(
    """\
signup:
  event: Signed Up
milestones:
  - name: created
    event: Project Created
  - name: invited
    event: Teammate Invited
activation:
  milestones: [created, invited]
  within_days: 3
"""
)


def warehouse(
    persons: list[dict[str, Any]],
    milestones: list[dict[str, Any]] = (),  # type: ignore[assignment]
    events: list[dict[str, Any]] = (),  # type: ignore[assignment]
    end: int = T0 + 10 * DAY,
) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    create_schema(conn)
    load_persons(conn, persons)
    load_milestones(conn, list(milestones))
    load_events(conn, [*events, {"person_id": "clock", "event": "Tick", "ts": end}])
    return conn


def row(result: Any, goal: str, group: str = "(all)") -> dict[str, Any]:
    rows = result.summary[(result.summary.goal == goal) & (result.summary.group == group)]
    assert len(rows) == 1, f"no single row for {goal}/{group}"
    return dict(rows.iloc[0])


def test_censoring_and_mature_denominator() -> None:
    # a converts after 12 h, b never (censored at as_of, 10 days), c signed up 1 day before
    # as_of and converted after 6 h: c is in the cohort but not yet mature for 3 days.
    conn = warehouse(
        [
            {"person_id": "a", "signup_at": T0},
            {"person_id": "b", "signup_at": T0},
            {"person_id": "c", "signup_at": T0 + 9 * DAY},
        ],
        [
            {"person_id": "a", "milestone": "created", "reached_at": T0 + 12 * HOUR},
            {"person_id": "c", "milestone": "created", "reached_at": T0 + 9 * DAY + 6 * HOUR},
        ],
    )
    result = time_to_value(conn, TtvQuery(within_days=3), PLAN)
    created = row(result, "created")
    assert created["signups"] == 3
    assert created["converted"] == 2
    assert created["censored"] == 1
    assert created["mature"] == 2
    assert created["converted_within"] == 1
    assert created["share_within"] == 0.5
    assert created["median_hours"] == 9.0
    # KM: at 6 h 1 of 3 converts (S = 2/3), at 12 h 1 of 2 (S = 1/3); b stays at risk.
    assert created["km_share_within"] == pytest.approx(2 / 3, abs=1e-12)
    assert created["km_median_hours"] == 12.0
    assert math.isnan(created["km_p90_hours"])
    curve = result.curves[result.curves.goal == "created"]
    assert curve["time_hours"].tolist() == [6.0, 12.0, 240.0]
    assert curve["at_risk"].tolist() == [3, 2, 1]


def test_goal_after_as_of_counts_as_not_reached() -> None:
    conn = warehouse(
        [{"person_id": "a", "signup_at": T0}],
        [{"person_id": "a", "milestone": "created", "reached_at": T0 + 5 * DAY}],
    )
    result = time_to_value(conn, TtvQuery(as_of=T0 + 2 * DAY), PLAN)
    created = row(result, "created")
    assert created["converted"] == 0
    assert created["censored"] == 1
    assert math.isnan(created["median_hours"])


def test_milestone_before_signup_floors_at_zero() -> None:
    conn = warehouse(
        [{"person_id": "a", "signup_at": T0}],
        [{"person_id": "a", "milestone": "created", "reached_at": T0 - 5 * HOUR}],
    )
    created = row(time_to_value(conn, TtvQuery(), PLAN), "created")
    assert created["median_hours"] == 0.0
    assert created["km_median_hours"] == 0.0


def test_activation_uses_activated_at() -> None:
    conn = warehouse(
        [
            {"person_id": "a", "signup_at": T0, "activated_at": T0 + 30 * HOUR},
            {"person_id": "b", "signup_at": T0},
        ]
    )
    activation = row(time_to_value(conn, TtvQuery(), PLAN), ACTIVATION)
    assert activation["converted"] == 1
    assert activation["median_hours"] == 30.0
    assert activation["km_median_hours"] == 30.0


def test_goals_filter_and_unknown_goal() -> None:
    conn = warehouse([{"person_id": "a", "signup_at": T0}])
    result = time_to_value(conn, TtvQuery(goals=("invited",)), PLAN)
    assert result.summary.goal.tolist() == ["invited"]
    with pytest.raises(InvalidInput, match="not a milestone"):
        time_to_value(conn, TtvQuery(goals=("nope",)), PLAN)


def test_without_plan_uses_warehouse_milestones() -> None:
    conn = warehouse(
        [{"person_id": "a", "signup_at": T0}],
        [{"person_id": "a", "milestone": "zeta", "reached_at": T0 + HOUR}],
    )
    result = time_to_value(conn, TtvQuery())
    assert result.summary.goal.tolist() == ["zeta", ACTIVATION]
    assert result.within_days == 14.0


def test_no_signups_returns_no_data() -> None:
    conn = warehouse([{"person_id": "a", "signup_at": None}])
    result = time_to_value(conn, TtvQuery(), PLAN)
    assert [n.code for n in result.notices] == [NO_DATA]
    assert result.to_dict()["summary"] == []


def test_trait_breakdown_and_low_sample() -> None:
    conn = warehouse(
        [
            {"person_id": "a", "signup_at": T0, "traits": {"plan": "pro"}},
            {"person_id": "b", "signup_at": T0},
        ],
        [{"person_id": "a", "milestone": "created", "reached_at": T0 + 2 * HOUR}],
    )
    result = time_to_value(conn, TtvQuery(breakdown=Breakdown.parse("trait:plan")), PLAN)
    assert row(result, "created", "pro")["converted"] == 1
    assert row(result, "created", "(none)")["converted"] == 0
    assert row(result, "created")["signups"] == 2
    assert LOW_SAMPLE in [n.code for n in result.notices]


CHANNEL_CASES = [
    (
        "campaign-source-wins",
        [
            {
                "context": {
                    "campaign": {"source": "Newsletter"},
                    "page": {"referrer": "https://google.com/"},
                }
            }
        ],
        "newsletter",
    ),
    ("utm-in-properties", [{"properties": {"utm_source": "twitter"}}], "twitter"),
    (
        "utm-in-page-url",
        [{"context": {"page": {"url": "https://app.example/?a=1&utm_source=linked%20in"}}}],
        "linked in",
    ),
    (
        "referrer-host-without-www",
        [
            {
                "context": {
                    "page": {
                        "url": "https://app.example/",
                        "referrer": "https://www.Google.com/search?q=x",
                    }
                }
            }
        ],
        "google.com",
    ),
    (
        "internal-referrer-ignored",
        [
            {
                "context": {
                    "page": {"url": "https://app.example/b", "referrer": "https://app.example/a"}
                }
            }
        ],
        "(none)",
    ),
    (
        "first-touch-wins",
        [
            {"properties": {}, "at": 0},
            {"context": {"campaign": {"source": "ads"}}, "at": 1},
            {"context": {"campaign": {"source": "email"}}, "at": 2},
        ],
        "ads",
    ),
    (
        "referrer-without-page-url",
        [{"properties": {"referrer": "https://news.example.org/story"}}],
        "news.example.org",
    ),
    ("no-signal", [{"properties": {"plan": "x"}}], "(none)"),
]


@pytest.mark.parametrize(
    ("events", "channel"),
    [(case[1], case[2]) for case in CHANNEL_CASES],
    ids=[case[0] for case in CHANNEL_CASES],
)
def test_first_touch_channel(events: list[dict[str, Any]], channel: str) -> None:
    rows = [
        {
            "person_id": "a",
            "event": "Page Viewed",
            "ts": T0 + event.get("at", 0) * HOUR,
            "properties": event.get("properties", {}),
            "context": event.get("context", {}),
        }
        for event in events
    ]
    conn = warehouse([{"person_id": "a", "signup_at": T0}], events=rows)
    result = time_to_value(conn, TtvQuery(breakdown=Breakdown("channel")), PLAN)
    groups = set(result.summary.group) - {"(all)"}
    assert groups == {channel}


def test_experiment_variant_first_exposure() -> None:
    def exposure(
        person: str, variant: str, hours: int, experiment: str = "onboarding"
    ) -> dict[str, Any]:
        return {
            "person_id": person,
            "event": "Experiment Viewed",
            "ts": T0 + hours * HOUR,
            "properties": {"experiment_id": experiment, "variation_name": variant},
        }

    conn = warehouse(
        [{"person_id": p, "signup_at": T0} for p in ("a", "b", "c", "d")],
        [{"person_id": "a", "milestone": "created", "reached_at": T0 + HOUR}],
        [
            exposure("a", "checklist", 1),
            exposure("a", "progress", 2),
            exposure("b", "progress", 1),
            exposure("c", "checklist", 1, experiment="pricing"),
        ],
    )
    result = time_to_value(conn, TtvQuery(breakdown=Breakdown.parse("experiment:onboarding")), PLAN)
    assert row(result, "created", "checklist")["signups"] == 1
    assert row(result, "created", "checklist")["converted"] == 1
    assert row(result, "created", "progress")["signups"] == 1
    assert row(result, "created", "(not exposed)")["signups"] == 2
    codes = [n.code for n in result.notices]
    assert MULTIPLE_VARIANTS in codes


@pytest.mark.parametrize("text", ["trait", "trait:", "experiment", "channel:x", "country"])
def test_invalid_breakdown_text(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a breakdown"):
        Breakdown.parse(text)


def test_curve_and_quantiles_match_lifelines_and_numpy() -> None:
    # 400 persons over 20 days with exponential times to a milestone and some never
    # converting; as_of cuts recent sign-ups off, so many are censored.
    rng = np.random.default_rng(7)
    persons, milestones = [], []
    for index in range(400):
        signup = T0 + int(rng.integers(0, 20 * DAY))
        persons.append(
            {
                "person_id": f"p{index}",
                "signup_at": signup,
                "traits": {"plan": str(rng.choice(["a", "b"]))},
            }
        )
        if rng.random() < 0.7:
            reached = signup + int(rng.exponential(40 * HOUR))
            milestones.append(
                {"person_id": f"p{index}", "milestone": "created", "reached_at": reached}
            )
    as_of = T0 + 21 * DAY
    conn = warehouse(persons, milestones, end=as_of)
    result = time_to_value(
        conn, TtvQuery(within_days=2, breakdown=Breakdown("trait", "plan")), PLAN
    )

    for group in ("(all)", "a", "b"):
        members = [p for p in persons if group == "(all)" or p["traits"]["plan"] == group]
        reached = {m["person_id"]: m["reached_at"] for m in milestones}
        durations, flags = [], []
        for p in members:
            at = reached.get(p["person_id"])
            done = at is not None and at <= as_of
            durations.append(((at - p["signup_at"]) if done else (as_of - p["signup_at"])) / HOUR)
            flags.append(done)
        fitter = KaplanMeierFitter().fit(np.array(durations), event_observed=np.array(flags))
        got = row(result, "created", group)

        assert got["km_median_hours"] == pytest.approx(fitter.median_survival_time_, abs=1e-9)
        assert got["km_share_within"] == pytest.approx(1 - float(fitter.predict(48.0)), abs=1e-9)
        converters = np.array([d for d, f in zip(durations, flags, strict=True) if f])
        for column, q in (("median_hours", 0.5), ("p75_hours", 0.75), ("p90_hours", 0.9)):
            assert got[column] == pytest.approx(float(np.quantile(converters, q)), abs=1e-9)

        curve = result.curves[(result.curves.goal == "created") & (result.curves.group == group)]
        expected = fitter.survival_function_.iloc[:, 0]
        bounds = fitter.confidence_interval_
        for time, survival, low, high in zip(
            curve.time_hours, curve.survival, curve.ci_lower, curve.ci_upper, strict=True
        ):
            assert survival == pytest.approx(expected.loc[time], abs=1e-9)
            assert low == pytest.approx(bounds.iloc[:, 0].loc[time], abs=1e-9)
            assert high == pytest.approx(bounds.iloc[:, 1].loc[time], abs=1e-9)


def test_curve_points_step_function() -> None:
    conn = warehouse(
        [{"person_id": "a", "signup_at": T0}, {"person_id": "b", "signup_at": T0}],
        [{"person_id": "a", "milestone": "created", "reached_at": T0 + 30 * HOUR}],
    )
    result = time_to_value(conn, TtvQuery(goals=("created",), curve_days=3), PLAN)
    points = result.curve_points()
    assert points.day.tolist() == [0, 1, 2, 3]
    assert points.survival.tolist() == [1.0, 1.0, 0.5, 0.5]


def test_merged_devices_reach_milestone_once(tmp_path: Path) -> None:
    # Sign-up on the phone, project created on the laptop before the devices are linked:
    # the merged person reached the milestone 5 hours after signing up.
    pipeline = Pipeline(tmp_path, PLAN)
    pipeline.send(
        track("Signed Up", anon="phone", hours=0),
        track("Project Created", anon="laptop", hours=5),
        identify("ann", "phone", hours=6),
        identify("ann", "laptop", hours=7),
        track("Tick", user="clock", hours=24 * 5),
    )
    store = Warehouse.open(DataDir(tmp_path))
    store.sync()
    created = row(time_to_value(store, TtvQuery(), PLAN), "created")
    assert created["signups"] == 1
    assert created["converted"] == 1
    assert created["median_hours"] == 5.0
    store.close()
    pipeline.close()
