"""Discovery engine against a plain-Python reference on random event sets (hypothesis).

The reference decides population, outcome and behaviour counts person by person, then builds
each candidate's 2x2 table; counts must agree exactly and the measures to 1e-12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headstart.analytics import create_schema, load_events, load_persons
from headstart.analytics.discovery import DiscoveryQuery, association, discover
from headstart.timeutil import MICROS_PER_DAY, parse_iso, to_iso

BASE = parse_iso("2024-01-01T00:00:00Z")
HALF_DAY = MICROS_PER_DAY // 2


@dataclass(frozen=True)
class Event:
    person_id: str
    event: str
    ts: int
    kind: str | None


@dataclass(frozen=True)
class PersonRow:
    person_id: str
    signup_at: int | None
    last_access: int | None


def reference(
    events: list[Event], persons: list[PersonRow], query: DiscoveryQuery, as_of: int
) -> tuple[int, int, dict[tuple[str, str | None, int], tuple[int, int, int, int]]]:
    day = MICROS_PER_DAY
    horizon = query.horizon_us()
    population: dict[str, bool] = {}
    signups: dict[str, int] = {}
    for p in persons:
        if p.signup_at is None or p.signup_at + horizon > as_of:
            continue
        s = p.signup_at
        mine = [e for e in events if e.person_id == p.person_id]
        returns = [e for e in mine if not query.return_events or e.event in query.return_events]
        if query.outcome == "active_window":
            lo = s + query.retention_day * day - query.window_days * day // 2
            hi = s + query.retention_day * day + query.window_days * day // 2
            retained: bool | None = any(lo <= e.ts < hi for e in returns)
        elif query.outcome == "active_after":
            retained = any(s + query.retention_day * day <= e.ts <= as_of for e in returns)
        elif query.outcome == "trait_after":
            retained = (
                None if p.last_access is None else p.last_access >= s + query.retention_day * day
            )
        else:
            churned = [e.ts for e in mine if e.event == query.churn_event]
            if any(ts < s + query.first_days * day for ts in churned):
                continue
            retained = not any(ts < s + query.retention_day * day for ts in churned)
        if retained is None:
            continue
        population[p.person_id] = retained
        signups[p.person_id] = s

    split = dict(query.split)
    excluded = set(query.exclude_events)
    if query.outcome == "not_churned" and query.churn_event:
        excluded.add(query.churn_event)
    counts: dict[tuple[str, str | None], dict[str, int]] = {}
    for e in events:
        s_or_none = signups.get(e.person_id)
        if s_or_none is None or e.event in excluded:
            continue
        if not s_or_none <= e.ts < s_or_none + query.first_days * day:
            continue
        detail = None
        if e.event in split:
            detail = "null" if e.kind is None else e.kind
        per_person = counts.setdefault((e.event, detail), {})
        per_person[e.person_id] = per_person.get(e.person_id, 0) + 1

    n = len(population)
    total_retained = sum(population.values())
    threshold = max(query.min_doers, math.ceil(query.min_share * n))
    tables = {}
    for (event, detail), per_person in counts.items():
        for k in set(query.counts):
            doers = [pid for pid, count in per_person.items() if count >= k]
            if min(len(doers), n - len(doers)) < threshold:
                continue
            a = sum(1 for pid in doers if population[pid])
            b = len(doers) - a
            tables[(event, detail, k)] = (a, b, total_retained - a, n - total_retained - b)
    return n, total_retained, tables


_WAREHOUSE: list[duckdb.DuckDBPyConnection] = []


def engine(events: list[Event], persons: list[PersonRow], query: DiscoveryQuery) -> Any:
    if not _WAREHOUSE:
        conn = duckdb.connect()
        create_schema(conn)
        _WAREHOUSE.append(conn)
    conn = _WAREHOUSE[0]
    for table in ("events", "persons", "milestones"):
        conn.execute(f"DELETE FROM {table}")
    load_events(
        conn,
        [
            {
                "person_id": e.person_id,
                "event": e.event,
                "ts": e.ts,
                "properties": {} if e.kind is None else {"kind": e.kind},
            }
            for e in events
        ],
    )
    load_persons(
        conn,
        [
            {
                "person_id": p.person_id,
                "signup_at": p.signup_at,
                "traits": {}
                if p.last_access is None
                else {"last_access_at": to_iso(p.last_access)},
            }
            for p in persons
        ],
    )
    return discover(conn, query)


instants = st.integers(0, 2 * 60).map(lambda halves: BASE + halves * HALF_DAY)
person_ids = st.sampled_from([f"p{i}" for i in range(8)])
event_lists = st.lists(
    st.builds(
        Event,
        person_ids,
        st.sampled_from(["A", "B", "Quit"]),
        instants,
        st.sampled_from([None, "x", "y"]),
    ),
    max_size=60,
)
person_lists = st.lists(
    st.builds(
        PersonRow, person_ids, st.one_of(st.none(), instants), st.one_of(st.none(), instants)
    ),
    max_size=8,
    unique_by=lambda p: p.person_id,
)


@st.composite
def queries(draw: st.DrawFn) -> DiscoveryQuery:
    outcome = draw(st.sampled_from(["active_window", "active_after", "trait_after", "not_churned"]))
    first_days = draw(st.integers(1, 5))
    window_days = draw(st.integers(1, 6))
    retention_day = first_days + draw(st.integers(0, 10)) + (window_days + 1) // 2
    return DiscoveryQuery(
        first_days=first_days,
        counts=tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))),
        outcome=outcome,
        retention_day=retention_day,
        window_days=window_days,
        return_events=draw(st.sampled_from([(), ("A",)])),
        outcome_trait="last_access_at" if outcome == "trait_after" else None,
        churn_event="Quit" if outcome == "not_churned" else None,
        split=draw(st.sampled_from([(), (("B", ("kind",)),)])),
        exclude_events=draw(st.sampled_from([(), ("A",)])),
        min_doers=draw(st.integers(1, 3)),
        min_share=draw(st.sampled_from([0.0, 0.1])),
        as_of=draw(st.one_of(st.none(), instants)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_lists, persons=person_lists, query=queries())
def test_discovery_matches_reference(
    events: list[Event], persons: list[PersonRow], query: DiscoveryQuery
) -> None:
    result = engine(events, persons, query)
    if result.as_of is None:
        assert not events
        return
    population, retained, tables = reference(events, persons, query, result.as_of)
    assert result.population == population
    assert result.retained == retained

    got = {}
    for row in result.candidates.to_dict(orient="records"):
        detail = row["detail"]
        key_detail = None if detail is None else ("null" if detail == "(none)" else detail)
        got[(row["event"], key_detail, row["min_count"])] = row
    assert set(got) == set(tables)
    for key, (a, b, c, d) in tables.items():
        row = got[key]
        assert row["doers"] == a + b, key
        assert row["doers_retained"] == a, key
        want = association(a, b, c, d)
        for measure in ("phi", "odds_ratio", "precision", "recall", "retention_non_doers"):
            if want[measure] is None:
                assert row[measure] is None or math.isnan(row[measure]), (key, measure)
            else:
                assert row[measure] == pytest.approx(want[measure], abs=1e-12), (key, measure)


@pytest.mark.parametrize(
    ("table", "phi", "odds_ratio"),
    [
        ((10, 0, 0, 10), 1.0, (10.5 * 10.5) / (0.5 * 0.5)),
        ((5, 5, 5, 5), 0.0, 1.0),
        ((2, 8, 6, 4), (2 * 4 - 8 * 6) / math.sqrt(10 * 10 * 8 * 12), (2.5 * 4.5) / (8.5 * 6.5)),
        ((0, 4, 3, 3), (0 - 12) / math.sqrt(4 * 6 * 3 * 7), (0.5 * 3.5) / (4.5 * 3.5)),
    ],
    ids=["perfect", "independent", "negative", "zero-cell-haldane"],
)
def test_association_golden_values(
    table: tuple[int, int, int, int], phi: float, odds_ratio: float
) -> None:
    measures = association(*table)
    assert measures["phi"] == pytest.approx(phi, abs=1e-12)
    assert measures["odds_ratio"] == pytest.approx(odds_ratio, rel=1e-12)


def test_association_phi_matches_scipy_chi_square() -> None:
    # Identity: n * phi^2 equals Pearson's chi-square statistic of the 2x2 table without
    # continuity correction, as scipy.stats.chi2_contingency computes it.
    from scipy.stats import chi2_contingency

    a, b, c, d = 30, 12, 45, 80
    measures = association(a, b, c, d)
    statistic, p_value, _, _ = chi2_contingency([[a, b], [c, d]], correction=False)
    assert measures["phi"] is not None
    assert (a + b + c + d) * measures["phi"] ** 2 == pytest.approx(statistic, rel=1e-12)
    assert measures["p_value"] == pytest.approx(p_value, rel=1e-9)


def test_association_without_variation_has_no_phi() -> None:
    measures = association(3, 0, 5, 0)
    assert measures["phi"] is None
    assert measures["p_value"] is None
