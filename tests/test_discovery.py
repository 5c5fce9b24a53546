"""Milestone discovery: window boundaries, outcomes, thresholds, notices and the plan snippet.

Expected counts were worked out by hand from the definitions in
headstart.analytics.discovery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from headstart.analytics import create_schema, load_events, load_persons
from headstart.analytics.discovery import CAVEAT, DiscoveryQuery, discover
from headstart.analytics.lifecycle_base import (
    FEW_CANDIDATES,
    LOW_SAMPLE,
    MISSING_TRAIT,
    NO_DATA,
    NO_VARIATION,
)
from headstart.analytics.warehouse import Warehouse
from headstart.datadir import DataDir
from headstart.errors import InvalidInput
from headstart.plan.load import load_plan, parse_plan
from headstart.timeutil import MICROS_PER_DAY, parse_iso, to_iso
from tests.helpers.pipeline import Pipeline, identify, track

DAY = MICROS_PER_DAY
T0 = parse_iso("2024-01-01T00:00:00Z")


def build(
    events: list[tuple[str, str, int, dict[str, Any]]],
    signups: dict[str, int],
    traits: dict[str, dict[str, Any]] | None = None,
    end: int = T0 + 200 * DAY,
) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    create_schema(conn)
    rows = [
        {"person_id": p, "event": e, "ts": ts, "properties": props} for p, e, ts, props in events
    ]
    rows.append({"person_id": "clock", "event": "Tick", "ts": end})
    load_events(conn, rows)
    load_persons(
        conn,
        [
            {"person_id": p, "signup_at": s, "traits": (traits or {}).get(p, {})}
            for p, s in signups.items()
        ],
    )
    return conn


def table(result: Any, behaviour: str) -> tuple[int, int]:
    rows = result.candidates[result.candidates.behaviour == behaviour]
    assert len(rows) == 1, f"{behaviour!r} not in {result.candidates.behaviour.tolist()}"
    return int(rows.doers.iloc[0]), int(rows.doers_retained.iloc[0])


QUERY = DiscoveryQuery(first_days=7, retention_day=30, window_days=14, min_doers=1, min_share=0.0)


def test_behaviour_window_boundaries() -> None:
    # a: Invite at sign-up (counts); b: one microsecond before day 7 (counts);
    # c: exactly at day 7 (too late); d: before sign-up (does not count).
    events = [
        ("a", "Invite", T0, {}),
        ("b", "Invite", T0 + 7 * DAY - 1, {}),
        ("c", "Invite", T0 + 7 * DAY, {}),
        ("d", "Invite", T0 - 1, {}),
    ]
    conn = build(events, {p: T0 for p in "abcd"})
    result = discover(conn, QUERY)
    assert result.population == 4
    assert table(result, "Invite, once in the first 7 days") == (2, 0)


def test_active_window_boundaries() -> None:
    # The outcome window is [day 23, day 37): a returns at its start, b one microsecond
    # before its end, c at its end, d one microsecond before its start.
    events = [
        ("a", "Open", T0 + 23 * DAY, {}),
        ("b", "Open", T0 + 37 * DAY - 1, {}),
        ("c", "Open", T0 + 37 * DAY, {}),
        ("d", "Open", T0 + 23 * DAY - 1, {}),
        ("a", "Invite", T0 + DAY, {}),
        ("c", "Invite", T0 + DAY, {}),
    ]
    conn = build(events, {p: T0 for p in "abcd"})
    result = discover(conn, QUERY)
    assert result.retained == 2
    assert table(result, "Invite, once in the first 7 days") == (2, 1)


def test_population_needs_whole_horizon() -> None:
    # The horizon is 37 days; b signed up 30 days before the data ends.
    conn = build([], {"a": T0, "b": T0 + 170 * DAY})
    result = discover(conn, QUERY)
    assert result.population == 1


def test_min_count_levels_and_threshold() -> None:
    events = [("a", "Invite", T0 + i, {}) for i in range(3)]
    events += [("b", "Invite", T0, {}), ("a", "Open", T0 + 30 * DAY, {})]
    conn = build(events, {p: T0 for p in "abc"})
    query = DiscoveryQuery(first_days=7, counts=(1, 2, 3, 5), min_doers=1, min_share=0.0)
    result = discover(conn, query)
    assert table(result, "Invite, once in the first 7 days") == (2, 1)
    assert table(result, "Invite, at least 2 times in the first 7 days") == (1, 1)
    assert table(result, "Invite, at least 3 times in the first 7 days") == (1, 1)
    # k = 5: nobody did it 5 times, so it is dropped as rare.
    assert result.dropped == 1
    assert result.threshold == 1


def test_threshold_uses_share_of_population() -> None:
    events = [("a", "Invite", T0, {}), ("a", "Open", T0 + 30 * DAY, {})]
    conn = build(events, {f"p{i}": T0 for i in range(40)} | {"a": T0})
    result = discover(conn, DiscoveryQuery(min_doers=1, min_share=0.1))
    assert result.threshold == 5
    assert result.candidates.empty
    assert result.to_dict()["threshold"] == 5


def test_active_after_counts_any_later_return() -> None:
    events = [("a", "Open", T0 + 100 * DAY, {}), ("a", "Invite", T0, {})]
    conn = build(events, {"a": T0, "b": T0})
    result = discover(
        conn, DiscoveryQuery(outcome="active_after", retention_day=30, min_doers=1, min_share=0.0)
    )
    assert result.retained == 1
    assert table(result, "Invite, once in the first 7 days") == (1, 1)


def test_trait_after_and_missing_trait() -> None:
    traits = {
        "a": {"last_access_at": to_iso(T0 + 95 * DAY)},
        "b": {"last_access_at": "2024-01-05T00:00:00"},
        "c": {"last_access_at": "not a time"},
    }
    conn = build([("a", "Invite", T0, {})], {"a": T0, "b": T0, "c": T0}, traits)
    query = DiscoveryQuery(
        outcome="trait_after",
        outcome_trait="last_access_at",
        retention_day=90,
        min_doers=1,
        min_share=0.0,
    )
    result = discover(conn, query)
    assert result.population == 2
    assert result.retained == 1
    assert MISSING_TRAIT in [n.code for n in result.notices]


def test_not_churned_leaves_out_early_churn() -> None:
    # a quit on day 3 (left out), b on day 10 (lost), c never (retained).
    events = [
        ("a", "Cancel", T0 + 3 * DAY, {}),
        ("b", "Cancel", T0 + 10 * DAY, {}),
        ("c", "Invite", T0, {}),
        ("b", "Invite", T0, {}),
    ]
    conn = build(events, {p: T0 for p in "abc"})
    query = DiscoveryQuery(
        outcome="not_churned", churn_event="Cancel", retention_day=30, min_doers=1, min_share=0.0
    )
    result = discover(conn, query)
    assert result.population == 2
    assert result.retained == 1
    assert "Cancel" not in set(result.candidates.event)
    assert "CHURNED_EARLY" in [n.code for n in result.notices]


def test_split_keeps_typed_values_in_snippet(tmp_path: Path) -> None:
    events = []
    signups = {}
    for index in range(12):
        person = f"p{index}"
        signups[person] = T0
        level = 2 if index < 6 else 1
        events.append(
            (person, "Level Reached", T0 + DAY, {"level": level, "tutorial": index % 2 == 0})
        )
        if index < 5:
            events.append((person, "Open", T0 + 30 * DAY, {}))
    conn = build(events, signups)
    query = DiscoveryQuery(split=(("Level Reached", ("level",)),), min_doers=2, min_share=0.0)
    result = discover(conn, query)
    best = result.top_positive.iloc[0]
    assert best["behaviour"] == "Level Reached: 2, once in the first 7 days"
    assert best["where"] == {"level": 2}

    assert result.plan_snippet is not None
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text("signup:\n  event: Signed Up\n" + result.plan_snippet)
    plan = load_plan(plan_file)
    assert plan.milestones[0].where == {"level": 2}
    assert plan.activation.within_days == 7


def test_result_states_caveat_and_codes() -> None:
    events = [("a", "Invite", T0, {}), ("a", "Open", T0 + 30 * DAY, {})]
    conn = build(events, {"a": T0, "b": T0})
    result = discover(conn, QUERY)
    payload = result.to_dict()
    assert payload["caveat"] == CAVEAT
    assert "experiment" in CAVEAT
    assert LOW_SAMPLE in payload["codes"]
    assert FEW_CANDIDATES in payload["codes"]
    assert payload["top_positive"][0]["behaviour"] == "Invite, once in the first 7 days"
    assert "where" not in payload["top_positive"][0]


def test_everyone_retained_has_no_variation() -> None:
    events = [
        ("a", "Open", T0 + 30 * DAY, {}),
        ("b", "Open", T0 + 30 * DAY, {}),
        ("a", "Invite", T0, {}),
    ]
    conn = build(events, {"a": T0, "b": T0})
    result = discover(conn, QUERY)
    assert NO_VARIATION in [n.code for n in result.notices]
    assert result.top_positive.empty
    assert result.top_negative.empty


def test_empty_warehouse_returns_no_data() -> None:
    conn = duckdb.connect()
    create_schema(conn)
    result = discover(conn, QUERY)
    assert [n.code for n in result.notices] == [NO_DATA]
    assert result.to_dict()["plan_snippet"] is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            DiscoveryQuery(first_days=7, retention_day=10, window_days=14),
            "starts inside the first 7 days",
        ),
        (DiscoveryQuery(outcome="trait_after"), "needs outcome_trait"),
        (DiscoveryQuery(outcome="not_churned"), "needs churn_event"),
        (DiscoveryQuery(outcome="later"), "outcome='later' is not valid"),  # type: ignore[arg-type]
        (DiscoveryQuery(counts=()), "counts must list"),
        (DiscoveryQuery(first_days=0), "first_days=0 is out of range"),
        (
            DiscoveryQuery(outcome="active_after", first_days=30, retention_day=7),
            "comes before the end",
        ),
        (DiscoveryQuery(top=0), "top=0 is out of range"),
    ],
    ids=[
        "window-overlap",
        "trait",
        "churn",
        "outcome",
        "counts",
        "first-days",
        "retention-day",
        "top",
    ],
)
def test_invalid_query_names_the_field(query: DiscoveryQuery, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        query.validate()


def test_merged_devices_join_behaviour_and_outcome(tmp_path: Path) -> None:
    # The invite happens on the laptop before the devices are linked, and the return on day
    # 30 on the phone. After the merge both belong to the one person who signed up.
    plan = parse_plan(
        "signup:\n  event: Signed Up\nmilestones:\n  - name: invited\n    event: Invite\n"
        "activation:\n  milestones: [invited]\n  within_days: 7\n"
    )
    pipeline = Pipeline(tmp_path, plan)
    pipeline.send(
        track("Signed Up", anon="phone", hours=0),
        track("Invite", anon="laptop", hours=5),
        identify("ann", "phone", hours=6),
        identify("ann", "laptop", hours=7),
        track("Open", anon="phone", hours=24 * 30),
        track("Signed Up", user="bob", hours=1),
        track("Tick", user="clock", hours=24 * 60),
    )
    warehouse = Warehouse.open(DataDir(tmp_path))
    warehouse.sync()
    result = discover(warehouse, QUERY)
    assert result.population == 2
    assert result.retained == 1
    assert table(result, "Invite, once in the first 7 days") == (1, 1)
    warehouse.close()
    pipeline.close()


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Honolulu", "Asia/Tokyo"])
@pytest.mark.parametrize(
    ("last_access", "retained"),
    [
        pytest.param("2024-01-31", 0, id="date-only-is-utc-midnight"),
        pytest.param("2024-01-31T12:00:00", 1, id="no-offset-is-utc"),
        pytest.param("2024-01-31T11:00:00+02:00", 0, id="offset"),
    ],
)
def test_trait_after_reads_times_as_utc(zone: str, last_access: str, retained: int) -> None:
    signup = T0 + 10 * 3600 * 1_000_000  # 2024-01-01T10:00Z: day 30 starts 2024-01-31T10:00Z
    conn = build([("a", "Invite", signup, {})], {"a": signup}, {"a": {"last_access": last_access}})
    conn.execute(f"SET TimeZone = '{zone}'")
    query = DiscoveryQuery(
        outcome="trait_after",
        outcome_trait="last_access",
        retention_day=30,
        min_doers=1,
        min_share=0.0,
    )
    result = discover(conn, query)
    assert result.population == 1
    assert result.retained == retained
