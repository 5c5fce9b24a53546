"""Retention: hand-computed cases for boundaries, time zones, DST days, observability and merges.

Each case lists events and sign-ups, the query, and the expected cells as
{(cohort, column): (observable, retained)}; the values were worked out by hand from the
definitions in headstart.analytics.retention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

from headstart.analytics import create_schema, load_events, load_persons
from headstart.analytics.lifecycle_base import NO_DATA, PARTIAL_COHORT, UNOBSERVED_CELLS
from headstart.analytics.person_groups import Breakdown
from headstart.analytics.retention import RetentionQuery, run_retention
from headstart.analytics.warehouse import Warehouse
from headstart.datadir import DataDir
from headstart.errors import InvalidInput
from headstart.plan.load import parse_plan
from headstart.timeutil import MICROS_PER_HOUR, parse_iso
from tests.helpers.pipeline import Pipeline, identify, track

HOUR = MICROS_PER_HOUR


def at(text: str) -> int:
    return parse_iso(text)


@dataclass
class Case:
    id: str
    events: list[tuple[str, str, int]]
    query: RetentionQuery
    expected: dict[tuple[str, str], tuple[int, int]]
    signups: dict[str, int] = field(default_factory=dict)
    traits: dict[str, dict[str, Any]] = field(default_factory=dict)


S = at("2024-03-04T10:00:00Z")  # a Monday

CASES = [
    Case(
        "rolling-day-boundaries",
        # Returns one microsecond before the end of day 0 and exactly at the start of day 2.
        [
            ("a", "Open", S + 24 * HOUR - 1),
            ("a", "Open", S + 48 * HOUR),
            ("z", "Tick", S + 100 * HOUR),
        ],
        RetentionQuery(periods=(0, 1, 2), cohort="day"),
        {
            ("2024-03-04", "day 0"): (1, 1),
            ("2024-03-04", "day 1"): (1, 0),
            ("2024-03-04", "day 2"): (1, 1),
        },
        signups={"a": S},
    ),
    Case(
        "tie-with-start-is-no-return",
        [("a", "Signed Up", S), ("a", "Open", S), ("z", "Tick", S + 100 * HOUR)],
        RetentionQuery(periods=(0,), cohort="day"),
        {("2024-03-04", "day 0"): (1, 0)},
        signups={"a": S},
    ),
    Case(
        "cell-not-observable-is-null",
        # as_of (the Tick) falls inside day 1, so day 1 has no observable entry.
        [("a", "Open", S + 2 * HOUR), ("z", "Tick", S + 30 * HOUR)],
        RetentionQuery(periods=(0, 1), cohort="day"),
        {("2024-03-04", "day 0"): (1, 1), ("2024-03-04", "day 1"): (0, 0)},
        signups={"a": S},
    ),
    Case(
        "partially-observed-cohort",
        # b signed up a day after a, in the same week; only a's day 2 ended by as_of.
        # Both return at S + 50 h: day 2 for a, day 1 for b.
        [("a", "Open", S + 50 * HOUR), ("b", "Open", S + 50 * HOUR), ("z", "Tick", S + 80 * HOUR)],
        RetentionQuery(periods=(1, 2)),
        {("2024-03-04", "day 1"): (2, 1), ("2024-03-04", "day 2"): (1, 1)},
        signups={"a": S, "b": S + 24 * HOUR},
    ),
    Case(
        "berlin-spring-forward-calendar-day",
        # 2024-03-31 has 23 hours in Berlin: 23 hours after 23:30 on the 30th is the 31st,
        # 23:30, calendar day 1; a rolling day has not ended yet (day 0).
        [("a", "Open", at("2024-03-31T21:30:00Z")), ("z", "Tick", at("2024-04-05T00:00:00Z"))],
        RetentionQuery(periods=(0, 1), boundary="calendar", timezone="Europe/Berlin", cohort="day"),
        {("2024-03-30", "day 0"): (1, 0), ("2024-03-30", "day 1"): (1, 1)},
        signups={"a": at("2024-03-30T22:30:00Z")},
    ),
    Case(
        "berlin-spring-forward-rolling-day",
        [("a", "Open", at("2024-03-31T21:30:00Z")), ("z", "Tick", at("2024-04-05T00:00:00Z"))],
        RetentionQuery(periods=(0, 1), boundary="rolling", cohort="day"),
        {("2024-03-30", "day 0"): (1, 1), ("2024-03-30", "day 1"): (1, 0)},
        signups={"a": at("2024-03-30T22:30:00Z")},
    ),
    Case(
        "berlin-fall-back-calendar-day",
        # 2024-10-27 has 25 hours in Berlin: 25h40m after 23:30 on the 26th is 00:10 on the
        # 28th, calendar day 2, while a rolling day count gives day 1.
        [("a", "Open", at("2024-10-27T23:10:00Z")), ("z", "Tick", at("2024-11-05T00:00:00Z"))],
        RetentionQuery(periods=(1, 2), boundary="calendar", timezone="Europe/Berlin", cohort="day"),
        {("2024-10-26", "day 1"): (1, 0), ("2024-10-26", "day 2"): (1, 1)},
        signups={"a": at("2024-10-26T21:30:00Z")},
    ),
    Case(
        "calendar-day-observed-only-after-local-midnight",
        # as_of is 23:59 local (New York) on day 1, so day 1 is not over; UTC is already the
        # next day.
        [("a", "Open", at("2024-06-02T15:00:00Z")), ("z", "Tick", at("2024-06-03T03:59:00Z"))],
        RetentionQuery(
            periods=(0, 1), boundary="calendar", timezone="America/New_York", cohort="day"
        ),
        {("2024-06-01", "day 0"): (1, 0), ("2024-06-01", "day 1"): (0, 0)},
        signups={"a": at("2024-06-01T15:00:00Z")},
    ),
    Case(
        "cohort-uses-local-date",
        # 03:00 UTC on 2 June is still 1 June in New York.
        [("z", "Tick", at("2024-06-10T00:00:00Z"))],
        RetentionQuery(periods=(0,), cohort="day", timezone="America/New_York"),
        {("2024-06-01", "day 0"): (1, 0)},
        signups={"a": at("2024-06-02T03:00:00Z")},
    ),
    Case(
        "calendar-weeks-start-monday",
        # Sign-up on Sunday; the return on Monday is already week 1.
        [("a", "Open", at("2024-03-11T08:00:00Z")), ("z", "Tick", at("2024-04-01T00:00:00Z"))],
        RetentionQuery(periods=(0, 1), interval="week", boundary="calendar", cohort="week"),
        {("2024-03-04", "week 0"): (1, 0), ("2024-03-04", "week 1"): (1, 1)},
        signups={"a": at("2024-03-10T20:00:00Z")},
    ),
    Case(
        "unbounded-counts-later-returns",
        [("a", "Open", S + 5 * 24 * HOUR + HOUR), ("z", "Tick", S + 20 * 24 * HOUR)],
        RetentionQuery(kind="unbounded", periods=(1, 5, 6), cohort="day"),
        {
            ("2024-03-04", "day 1+"): (1, 1),
            ("2024-03-04", "day 5+"): (1, 1),
            ("2024-03-04", "day 6+"): (1, 0),
        },
        signups={"a": S},
    ),
    Case(
        "bracket-needs-its-last-day",
        # as_of ends day 5: bracket 1-3 is observable, bracket 4-7 is not.
        [("a", "Open", S + 2 * 24 * HOUR + HOUR), ("z", "Tick", S + 6 * 24 * HOUR)],
        RetentionQuery(kind="bracket", brackets=((1, 3), (4, 7)), cohort="day"),
        {("2024-03-04", "days 1-3"): (1, 1), ("2024-03-04", "days 4-7"): (0, 0)},
        signups={"a": S},
    ),
    Case(
        "recurring-entries",
        # Three Opens are three entries; only the first and second have a later Open on the
        # next day.
        [
            ("a", "Open", S),
            ("a", "Open", S + 25 * HOUR),
            ("a", "Open", S + 50 * HOUR),
            ("z", "Tick", S + 10 * 24 * HOUR),
        ],
        RetentionQuery(
            start_event="Open",
            start_mode="recurring",
            return_events=("Open",),
            periods=(1,),
            cohort="week",
        ),
        {("2024-03-04", "day 1"): (3, 2)},
    ),
    Case(
        "first-time-before-window-has-no-entry",
        # a's first Open is before start_from, so a second Open inside the window is no entry.
        [
            ("a", "Open", S - 48 * HOUR),
            ("a", "Open", S),
            ("b", "Open", S + HOUR),
            ("z", "Tick", S + 5 * 24 * HOUR),
        ],
        RetentionQuery(start_event="Open", periods=(0,), cohort="week", start_from=S - HOUR),
        {("2024-03-04", "day 0"): (1, 0)},
    ),
    Case(
        "trait-cohorts",
        [("a", "Open", S + 25 * HOUR), ("z", "Tick", S + 5 * 24 * HOUR)],
        RetentionQuery(periods=(1,), breakdown=Breakdown("trait", "plan")),
        {("pro", "day 1"): (1, 1), ("(none)", "day 1"): (1, 0)},
        signups={"a": S, "b": S},
        traits={"a": {"plan": "pro"}},
    ),
    Case(
        "return-events-filter",
        [
            ("a", "Page Viewed", S + 25 * HOUR),
            ("b", "Invite", S + 25 * HOUR),
            ("z", "Tick", S + 5 * 24 * HOUR),
        ],
        RetentionQuery(periods=(1,), return_events=("Invite",), cohort="week"),
        {("2024-03-04", "day 1"): (2, 1)},
        signups={"a": S, "b": S},
    ),
]


def build(case: Case) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    create_schema(conn)
    load_events(conn, [{"person_id": p, "event": e, "ts": ts} for p, e, ts in case.events])
    load_persons(
        conn,
        [
            {"person_id": p, "signup_at": s, "traits": case.traits.get(p, {})}
            for p, s in case.signups.items()
        ],
    )
    return conn


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_retention_case(case: Case) -> None:
    result = run_retention(build(case), case.query)
    cells = {
        (row.cohort, row.column): (row.observable, row.retained)
        for row in result.cells.itertuples()
        if row.cohort != "(all)"
    }
    assert cells == case.expected


def test_unobservable_cell_is_nan_and_flagged() -> None:
    case = next(c for c in CASES if c.id == "cell-not-observable-is-null")
    result = run_retention(build(case), case.query)
    matrix = result.matrix()
    assert matrix.loc["2024-03-04", "day 0"] == 1.0
    assert math.isnan(matrix.loc["2024-03-04", "day 1"])
    assert UNOBSERVED_CELLS in [n.code for n in result.notices]
    payload = result.to_dict()
    day_one = [c for c in payload["cells"] if c["column"] == "day 1"]
    assert all(c["rate"] is None for c in day_one)


def test_partial_cohort_is_flagged() -> None:
    case = next(c for c in CASES if c.id == "partially-observed-cohort")
    result = run_retention(build(case), case.query)
    assert PARTIAL_COHORT in [n.code for n in result.notices]
    row = result.cells[(result.cells.cohort == "2024-03-04") & (result.cells.column == "day 2")]
    assert int(row.entries.iloc[0]) == 2
    assert int(row.observable.iloc[0]) == 1


def test_total_row_sums_cohorts() -> None:
    conn = duckdb.connect()
    create_schema(conn)
    load_persons(
        conn,
        [{"person_id": "a", "signup_at": S}, {"person_id": "b", "signup_at": S + 8 * 24 * HOUR}],
    )
    load_events(
        conn,
        [
            {"person_id": "a", "event": "Open", "ts": S + 25 * HOUR},
            {"person_id": "b", "event": "Open", "ts": S + 8 * 24 * HOUR + 25 * HOUR},
            {"person_id": "z", "event": "Tick", "ts": S + 30 * 24 * HOUR},
        ],
    )
    result = run_retention(conn, RetentionQuery(periods=(1, 2)))
    total = result.cells[result.cells.cohort == "(all)"].set_index("column")
    assert total.loc["day 1", "observable"] == 2
    assert total.loc["day 1", "retained"] == 2
    assert total.loc["day 2", "retained"] == 0
    assert list(result.matrix().index) == ["2024-03-04", "2024-03-11", "(all)"]


def test_empty_warehouse_returns_no_data() -> None:
    conn = duckdb.connect()
    create_schema(conn)
    result = run_retention(conn, RetentionQuery())
    assert [n.code for n in result.notices] == [NO_DATA]
    assert result.cells.empty
    assert result.to_dict()["codes"] == [NO_DATA]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (RetentionQuery(timezone="Mars/Olympus"), "not an IANA time zone"),
        (RetentionQuery(start_mode="recurring"), "needs a start_event"),
        (RetentionQuery(kind="bracket"), "needs brackets"),
        (RetentionQuery(kind="bracket", brackets=((5, 2),)), "ends before it starts"),
        (RetentionQuery(periods=(1, 99999)), "periods run from 0"),
        (RetentionQuery(brackets=((1, 2),)), "apply only to kind=bracket"),
        (RetentionQuery(kind="weekly"), "kind='weekly' is not valid"),  # type: ignore[arg-type]
        (RetentionQuery(start_from=S, start_to=S), "must be before start_to"),
    ],
    ids=[
        "zone",
        "recurring-signup",
        "no-brackets",
        "reversed-bracket",
        "period-range",
        "stray-brackets",
        "kind",
        "window",
    ],
)
def test_invalid_query_names_the_field(query: RetentionQuery, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        query.validate()


def test_merged_devices_count_as_one_person(tmp_path: Path) -> None:
    # One person signs up on a phone, then opens the app on a laptop. The identify calls
    # merge the two devices, so the laptop's return on day 1 counts for the one person.
    plan = parse_plan(
        "signup:\n  event: Signed Up\nmilestones:\n  - name: opened\n    event: Open\n"
        "activation:\n  milestones: [opened]\n  within_days: 7\n"
    )
    pipeline = Pipeline(tmp_path, plan)
    pipeline.send(
        track("Signed Up", anon="phone", hours=0),
        track("Open", anon="laptop", hours=26),
        identify("ann", "phone", hours=27),
        identify("ann", "laptop", hours=28),
        track("Open", user="bob", hours=0),
        track("Signed Up", user="bob", hours=1),
        track("Tick", user="clock", hours=24 * 10),
    )
    warehouse = Warehouse.open(DataDir(tmp_path))
    warehouse.sync()
    result = run_retention(warehouse, RetentionQuery(periods=(1,), cohort="month"))
    total = result.cells[result.cells.cohort == "(all)"].iloc[0]
    assert int(total.entries) == 2
    assert int(total.persons) == 2
    assert int(total.retained) == 1
    warehouse.close()
    pipeline.close()
