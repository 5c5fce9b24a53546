"""Retention engine against a plain-Python reference on random event sets (hypothesis).

The reference below restates the definitions of ``headstart.analytics.retention`` one entry
and one event at a time, with ``zoneinfo`` for calendar days; both must agree on every count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headstart.analytics import create_schema, load_events, load_persons
from headstart.analytics.person_groups import ALL_LABEL, Breakdown
from headstart.analytics.retention import RetentionQuery, run_retention
from headstart.timeutil import MICROS_PER_DAY, MICROS_PER_HOUR, parse_iso

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Three weeks before the 2024 spring DST changes in the US (10 March) and Europe (31 March).
BASE = parse_iso("2024-02-28T00:00:00Z")
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]


@dataclass(frozen=True)
class Event:
    person_id: str
    event: str
    ts: int


@dataclass(frozen=True)
class PersonRow:
    person_id: str
    signup_at: int | None
    plan: str | None


def local_date(micros: int, zone: str) -> date:
    return (EPOCH + timedelta(microseconds=micros)).astimezone(ZoneInfo(zone)).date()


def cohort_label(day: date, unit: str) -> str:
    if unit == "week":
        day = day - timedelta(days=day.weekday())
    elif unit == "month":
        day = day.replace(day=1)
    return day.isoformat()


def period_length(query: RetentionQuery) -> int:
    return MICROS_PER_DAY * (7 if query.interval == "week" else 1)


def period_index(query: RetentionQuery, start: int, at: int) -> int:
    if query.boundary == "rolling":
        return (at - start) // period_length(query)
    days = (local_date(at, query.timezone) - local_date(start, query.timezone)).days
    if query.interval == "day":
        return days
    start_day = local_date(start, query.timezone)
    monday = start_day - timedelta(days=start_day.weekday())
    return (local_date(at, query.timezone) - monday).days // 7


def observed_periods(query: RetentionQuery, start: int, as_of: int) -> int:
    if query.boundary == "rolling":
        return (as_of - start) // period_length(query)
    return period_index(query, start, as_of)


def reference(
    events: list[Event], persons: list[PersonRow], query: RetentionQuery, as_of: int
) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """Return {(cohort, column): (entries, persons, observable, retained)}."""
    query = query.validate()
    entries: list[tuple[str, int]] = []
    if query.start_event is None:
        entries = [(p.person_id, p.signup_at) for p in persons if p.signup_at is not None]
    elif query.start_mode == "first":
        first: dict[str, int] = {}
        for e in events:
            if e.event == query.start_event:
                first[e.person_id] = min(first.get(e.person_id, e.ts), e.ts)
        entries = list(first.items())
    else:
        entries = sorted(
            {(e.person_id, e.ts) for e in events if e.event == query.start_event and e.ts <= as_of}
        )
    entries = [
        (pid, s)
        for pid, s in entries
        if s <= as_of
        and (query.start_from is None or s >= query.start_from)
        and (query.start_to is None or s < query.start_to)
    ]
    plans = {p.person_id: p.plan for p in persons}

    def cohort_of(pid: str, s: int) -> str:
        if query.breakdown is not None:
            return plans.get(pid) or "(none)"
        return cohort_label(local_date(s, query.timezone), query.cohort)

    returns = [
        e
        for e in events
        if e.ts <= as_of and (e.event in query.return_events if query.return_events else True)
    ]
    result: dict[tuple[str, str], list[Any]] = {}
    members: dict[str, set[str]] = {}
    for pid, s in entries:
        obs = observed_periods(query, s, as_of)
        hit_periods = {
            period_index(query, s, e.ts) for e in returns if e.person_id == pid and e.ts > s
        }
        for cohort in (cohort_of(pid, s), ALL_LABEL):
            members.setdefault(cohort, set()).add(pid)
            for column in query.columns():
                cell = result.setdefault((cohort, column.label), [0, 0, 0, 0])
                cell[0] += 1
                if obs <= column.need:
                    continue
                cell[2] += 1
                if any(column.lo <= idx <= column.hi for idx in hit_periods):
                    cell[3] += 1
    return {key: (cell[0], len(members[key[0]]), cell[2], cell[3]) for key, cell in result.items()}


_WAREHOUSE: list[duckdb.DuckDBPyConnection] = []


def fresh_warehouse() -> duckdb.DuckDBPyConnection:
    """Return one in-memory warehouse per test process, emptied; connecting costs ~0.1 s."""
    if not _WAREHOUSE:
        conn = duckdb.connect()
        create_schema(conn)
        _WAREHOUSE.append(conn)
    conn = _WAREHOUSE[0]
    for table in ("events", "persons", "milestones"):
        conn.execute(f"DELETE FROM {table}")
    return conn


def engine(
    events: list[Event], persons: list[PersonRow], query: RetentionQuery
) -> tuple[dict[tuple[str, str], tuple[int, int, int, int]], int | None]:
    conn = fresh_warehouse()
    load_events(conn, [{"person_id": e.person_id, "event": e.event, "ts": e.ts} for e in events])
    load_persons(
        conn,
        [
            {
                "person_id": p.person_id,
                "signup_at": p.signup_at,
                "traits": {} if p.plan is None else {"plan": p.plan},
            }
            for p in persons
        ],
    )
    result = run_retention(conn, query)
    cells = {
        (row.cohort, row.column): (row.entries, row.persons, row.observable, row.retained)
        for row in result.cells.itertuples()
    }
    return cells, result.as_of


# Times on a half-hour grid, so that ties, period boundaries and midnights come up often.
# The 75 days reach periods past 61, where the engine stops using a bit mask.
instants = st.integers(0, 2 * 24 * 75).map(
    lambda half_hours: BASE + half_hours * MICROS_PER_HOUR // 2
)
person_ids = st.sampled_from(["p1", "p2", "p3", "p4", "p5"])
event_lists = st.lists(
    st.builds(Event, person_ids, st.sampled_from(["A", "B", "C"]), instants), max_size=40
)
person_lists = st.lists(
    st.builds(
        PersonRow,
        person_ids,
        st.one_of(st.none(), instants),
        st.one_of(st.none(), st.sampled_from(["free", "pro"])),
    ),
    max_size=5,
    unique_by=lambda p: p.person_id,
)


@st.composite
def queries(draw: st.DrawFn) -> RetentionQuery:
    kind = draw(st.sampled_from(["n_day", "unbounded", "bracket"]))
    start_event = draw(st.sampled_from([None, "A", "B"]))
    mode = "first" if start_event is None else draw(st.sampled_from(["first", "recurring"]))
    brackets: tuple[tuple[int, int], ...] = ()
    periods: tuple[int, ...] = (0, 1, 2, 3)
    if kind == "bracket":
        # Starts from 55 reach past period 61, where the engine stops using a bit mask.
        starts = st.one_of(st.integers(0, 12), st.integers(55, 61))
        pairs = draw(st.lists(st.tuples(starts, st.integers(0, 6)), min_size=1, max_size=4))
        brackets = tuple(dict.fromkeys((lo, lo + width) for lo, width in pairs))
    else:
        numbers = st.one_of(st.integers(0, 20), st.sampled_from([60, 61, 62, 70]))
        periods = tuple(draw(st.lists(numbers, min_size=1, max_size=6)))
    window = draw(st.one_of(st.none(), st.tuples(instants, st.integers(1, 30))))
    as_of = draw(st.one_of(st.none(), instants))
    return RetentionQuery(
        start_event=start_event,
        start_mode=mode,
        return_events=draw(st.sampled_from([(), ("B",), ("A", "C")])),
        kind=kind,
        periods=periods,
        brackets=brackets,
        interval=draw(st.sampled_from(["day", "week"])),
        boundary=draw(st.sampled_from(["rolling", "calendar"])),
        timezone=draw(st.sampled_from(ZONES)),
        cohort=draw(st.sampled_from(["day", "week", "month"])),
        breakdown=draw(st.sampled_from([None, Breakdown("trait", "plan")])),
        start_from=None if window is None else window[0],
        start_to=None if window is None else window[0] + window[1] * MICROS_PER_DAY,
        as_of=as_of,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_lists, persons=person_lists, query=queries())
def test_retention_matches_reference(
    events: list[Event], persons: list[PersonRow], query: RetentionQuery
) -> None:
    cells, as_of = engine(events, persons, query)
    if as_of is None:
        assert not events
        return
    expected = reference(events, persons, query, as_of)
    assert cells == expected


@pytest.mark.parametrize("zone", ZONES)
def test_reference_local_dates_agree_with_duckdb(zone: str) -> None:
    # Guards the reference itself: zoneinfo and DuckDB's ICU must give the same local dates
    # around the DST changes the random tests sample.
    conn = duckdb.connect()
    hours = range(0, 24 * 40)
    stamps = [BASE + hour * MICROS_PER_HOUR for hour in hours]
    zone_literal = zone.replace("'", "''")
    rows = conn.execute(
        "SELECT CAST(timezone(?, timezone('UTC', make_timestamp(t))) AS DATE)"
        " FROM unnest(?) AS u(t)",
        [zone_literal, stamps],
    ).fetchall()
    assert [row[0] for row in rows] == [local_date(stamp, zone) for stamp in stamps]
