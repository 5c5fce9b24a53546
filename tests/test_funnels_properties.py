"""Property-based tests: random events and specs, engine equal to the reference exactly.

Two properties: compiled ``where`` filters select the same events as the processor's Python
matcher, and funnels over random event sets (ties, late arrivals, repeated entries, held
properties, exclusions, breakdowns) agree with ``ReferenceFunnel`` unit by unit and in every
aggregate. One DuckDB connection is reused and emptied between examples, to keep them fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from headstart.analytics.sql_filters import matcher_sql
from headstart.analytics.warehouse import create_schema, load_events, load_persons
from headstart.plan.analytics import FunnelSpec
from headstart.plan.match import compile_matcher
from headstart.plan.model import OPERATORS, EventMatcher
from tests.test_funnels import check_against_reference
from tests.test_funnels_reference import HOUR, Event, as_row

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def shared_conn() -> Iterator[duckdb.DuckDBPyConnection]:
    conn = duckdb.connect()
    create_schema(conn)
    yield conn
    conn.close()


def emptied(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    for table in ("events", "persons", "milestones"):
        conn.execute(f"DELETE FROM {table}")
    return conn


# ---- filters ----------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 1.5, -2.5]),
    st.sampled_from(["a", "b", "ab", "", "1", "é"]),
)
json_values = st.one_of(scalars, st.lists(scalars, max_size=3))
keys = st.sampled_from(["x", "y", "n.x", "context.c", "traits.t"])


def _operand(op: str) -> st.SearchStrategy[Any]:
    if op in ("in", "not_in"):
        return st.lists(scalars, max_size=3)
    if op == "exists":
        return st.booleans()
    if op == "contains":
        return st.one_of(st.sampled_from(["a", "b", "", "é"]), st.integers(-1, 1))
    if op in ("gt", "gte", "lt", "lte"):
        return st.one_of(st.integers(-3, 3), st.sampled_from([1.5, -2.5, "a", "b", ""]))
    return scalars


@st.composite
def conditions(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["value", "list", "operators"]))
    if kind == "value":
        return draw(scalars)
    if kind == "list":
        return draw(st.lists(scalars, max_size=3))
    ops = draw(st.lists(st.sampled_from(OPERATORS), min_size=1, max_size=2, unique=True))
    return {op: draw(_operand(op)) for op in ops}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    properties = draw(st.dictionaries(st.sampled_from(["x", "y"]), json_values, max_size=2))
    if draw(st.booleans()):
        properties["n"] = draw(
            st.one_of(st.dictionaries(st.just("x"), json_values, max_size=1), scalars)
        )
    context: dict[str, Any] = {}
    if draw(st.booleans()):
        context["c"] = draw(json_values)
    if draw(st.booleans()):
        context["traits"] = draw(st.dictionaries(st.just("t"), json_values, max_size=1))
    return properties, context


@SETTINGS
@given(
    where=st.dictionaries(keys, conditions(), min_size=1, max_size=2),
    rows=st.lists(bodies(), min_size=1, max_size=8),
)
def test_filters_match_python_matcher(
    shared_conn: duckdb.DuckDBPyConnection,
    where: dict[str, Any],
    rows: list[tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    try:
        matcher = EventMatcher(event="E", where=where)
    except ValidationError:
        assume(False)
        return
    events = [
        Event(seq, "p", "E", 0, properties, context)
        for seq, (properties, context) in enumerate(rows, start=1)
    ]
    conn = emptied(shared_conn)
    load_events(conn, [as_row(event) for event in events])
    predicate = compile_matcher(matcher)

    selected = {
        seq
        for (seq,) in conn.execute(
            f"SELECT seq FROM events WHERE {matcher_sql(matcher)}"
        ).fetchall()
    }

    expected = {event.seq for event in events if predicate(event.logged())}
    assert selected == expected


# ---- funnels ----------------------------------------------------------------------------------

NAMES = ["A", "B", "C", "X"]


@st.composite
def event_sets(draw: st.DrawFn) -> list[Event]:
    """Events of up to four persons; a few distinct times so that ties are common."""
    count = draw(st.integers(1, 16))
    seqs = draw(st.permutations(range(1, count + 1)))
    events = []
    for seq in seqs:
        properties: dict[str, Any] = {}
        if draw(st.booleans()):
            properties["project"] = draw(st.sampled_from([1, 2]))
        if draw(st.booleans()):
            properties["plan"] = draw(st.sampled_from(["free", "pro"]))
        context: dict[str, Any] = {}
        if draw(st.integers(0, 3)) == 0:
            context["campaign"] = {"source": draw(st.sampled_from(["ads", "mail"]))}
        events.append(
            Event(
                seq=seq,
                person_id=draw(st.sampled_from(["p1", "p2", "p3", "p4"])),
                event=draw(st.sampled_from(NAMES)),
                ts=draw(st.sampled_from([0, 1, 2, 3, 5, 8, 13])) * HOUR // 2,
                properties=properties,
                context=context,
            )
        )
    return events


@st.composite
def step_specs(draw: st.DrawFn) -> dict[str, Any]:
    step: dict[str, Any] = {"event": draw(st.sampled_from(NAMES[:3]))}
    if draw(st.integers(0, 3)) == 0:
        step["where"] = {"plan": draw(st.sampled_from(["free", "pro", {"exists": True}]))}
    return step


@st.composite
def funnel_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "steps": draw(st.lists(step_specs(), min_size=2, max_size=4)),
        "order": draw(st.sampled_from(["ordered", "strict", "any"])),
        "entry": draw(st.sampled_from(["first", "any"])),
        "window": draw(st.sampled_from(["30m", "2h", "1d"])),
    }
    if draw(st.booleans()):
        spec["start"] = draw(st.sampled_from(["1970-01-01T00:30:00Z", "1970-01-01T01:00:00Z"]))
    if draw(st.integers(0, 3)) == 0:
        spec["hold_constant"] = ["project"]
    if draw(st.booleans()):
        first = draw(st.integers(1, len(spec["steps"]) - 1))
        last = draw(st.integers(first + 1, len(spec["steps"])))
        spec["exclusions"] = [{"event": "X", "between": [first, last]}]
    breakdown = draw(st.sampled_from([None, "property", "campaign", "trait"]))
    if breakdown == "trait":
        spec["breakdown"] = {"by": "trait", "key": "plan"}
    elif breakdown is not None:
        attribution = draw(st.sampled_from(["first_touch", "last_touch", "per_step"]))
        key = "plan" if breakdown == "property" else "source"
        spec["breakdown"] = {"by": breakdown, "key": key, "attribution": attribution}
    return spec


@SETTINGS
@given(
    events=event_sets(),
    data=funnel_specs(),
    plans=st.dictionaries(st.sampled_from(["p1", "p2", "p3"]), st.sampled_from(["free", "pro"])),
    as_of=st.sampled_from([HOUR, 4 * HOUR, 30 * HOUR]),
)
def test_funnel_matches_reference(
    shared_conn: duckdb.DuckDBPyConnection,
    events: list[Event],
    data: dict[str, Any],
    plans: dict[str, str],
    as_of: int,
) -> None:
    try:
        spec = FunnelSpec.model_validate(data)
    except ValidationError:
        assume(False)
        return
    traits = {person: {"plan": plan} for person, plan in plans.items()}
    conn = emptied(shared_conn)
    load_events(conn, [as_row(event) for event in events])
    persons = sorted({event.person_id for event in events} | set(traits))
    load_persons(conn, [{"person_id": p, "traits": traits.get(p, {})} for p in persons])

    check_against_reference(conn, spec, events, traits=traits, as_of=as_of)
