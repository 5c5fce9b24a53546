"""Friction points: events after a funnel step, dropped units against converters.

Checked against expected shares on a small table of events, and against a plain-Python
version built on the funnel reference, on fixed and random data.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb
import pandas as pd
import pytest
from hypothesis import assume, given
from pydantic import ValidationError

from headstart.analytics.friction import NO_EVENT, FrictionMode, friction_points
from headstart.analytics.warehouse import create_schema, load_events
from headstart.errors import InvalidInput
from headstart.plan.analytics import FunnelSpec
from tests.test_funnels import spec_of, warehouse
from tests.test_funnels_properties import SETTINGS, emptied, event_sets, funnel_specs, shared_conn
from tests.test_funnels_reference import HOUR, Event, ReferenceFunnel, as_row

__all__ = ["shared_conn"]

DAY = 24 * HOUR
AS_OF = 30 * DAY


def reference_friction(
    spec: FunnelSpec, events: list[Event], step: int, mode: FrictionMode, as_of: int
) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """Return (dropped units, converted units, {event: (dropped units, converted units)})."""
    reference = ReferenceFunnel(spec, events)
    dropped = converted = 0
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for unit in reference.units():
        if unit.excluded or unit.depth < step:
            continue
        is_converted = unit.depth > step
        if not is_converted and unit.deadline > as_of:
            continue
        if is_converted:
            converted += 1
        else:
            dropped += 1
        after, before = unit.keys[step - 1], unit.keys[step]
        assert after is not None
        span = []
        for event in reference.by_person[unit.person_id]:
            if event.event is None or event.key <= after:
                continue
            if is_converted:
                assert before is not None
                inside = event.key <= before if mode == "next" else event.key < before
            else:
                inside = event.ts <= unit.deadline
            if inside:
                span.append(event)
        names = {span[0].event} if mode == "next" and span else {e.event for e in span}
        if not names:
            names = {NO_EVENT}
        for name in names:
            assert name is not None
            counts[name][1 if is_converted else 0] += 1
    return dropped, converted, {name: (pair[0], pair[1]) for name, pair in counts.items()}


def engine_friction(conn: Any, spec: FunnelSpec, step: int, mode: FrictionMode, as_of: int) -> Any:
    result = friction_points(conn, spec, step, mode=mode, as_of=as_of)
    counts = {
        row["event"]: (row["dropped_units"], row["converted_units"])
        for row in result.events.to_dict(orient="records")
    }
    return result, (result.dropped, result.converted, counts)


SIGNUP_EVENTS = [
    # ann converts after an error and a retry
    Event(1, "ann", "Form Opened", 0),
    Event(2, "ann", "Validation Error", HOUR),
    Event(3, "ann", "Form Submitted", 2 * HOUR),
    # bob converts straight away
    Event(4, "bob", "Form Opened", 0),
    Event(5, "bob", "Form Submitted", HOUR),
    # cid and dan drop after errors, eve drops doing nothing
    Event(6, "cid", "Form Opened", 0),
    Event(7, "cid", "Validation Error", HOUR),
    Event(8, "cid", "Help Viewed", 2 * HOUR),
    Event(9, "dan", "Form Opened", 0),
    Event(10, "dan", "Validation Error", HOUR),
    Event(11, "dan", "Validation Error", 2 * HOUR),
    Event(12, "eve", "Form Opened", 0),
    # fay is still inside her window at AS_OF, so she is in neither group
    Event(13, "fay", "Form Opened", AS_OF - HOUR),
]


def test_friction_between_steps() -> None:
    spec = spec_of("Form Opened", "Form Submitted", window="1d")
    conn = warehouse(SIGNUP_EVENTS)

    result, found = engine_friction(conn, spec, 1, "between", AS_OF)

    assert found == reference_friction(spec, SIGNUP_EVENTS, 1, "between", AS_OF)
    assert (result.dropped, result.converted) == (3, 2)
    rows = result.events.set_index("event")
    assert rows.loc["Validation Error", "dropped_share"] == 2 / 3
    assert rows.loc["Validation Error", "converted_share"] == 1 / 2
    assert rows.loc["Validation Error", "lift"] == (2 / 3) / (1 / 2)
    assert bool(rows.loc["Validation Error", "error_like"]) is True
    assert rows.loc["Help Viewed", "converted_units"] == 0
    assert pd.isna(rows.loc["Help Viewed", "lift"])
    assert rows.loc[NO_EVENT, "dropped_units"] == 1
    assert rows.loc[NO_EVENT, "converted_units"] == 1
    assert result.events["event"].iloc[0] == "Validation Error"
    assert result.codes == ["LOW_SAMPLE"]


def test_friction_next_event() -> None:
    spec = spec_of("Form Opened", "Form Submitted", window="1d")
    conn = warehouse(SIGNUP_EVENTS)

    result, found = engine_friction(conn, spec, 1, "next", AS_OF)

    assert found == reference_friction(spec, SIGNUP_EVENTS, 1, "next", AS_OF)
    rows = result.events.set_index("event")
    assert rows.loc["Form Submitted", "converted_units"] == 1
    assert rows.loc["Validation Error", "dropped_units"] == 2
    assert rows.loc["Validation Error", "converted_units"] == 1


def test_friction_step_without_next() -> None:
    conn = warehouse(SIGNUP_EVENTS)

    with pytest.raises(InvalidInput) as raised:
        friction_points(conn, spec_of("Form Opened", "Form Submitted"), 2, as_of=AS_OF)

    assert "out of range" in raised.value.message


def test_friction_without_drops() -> None:
    conn = duckdb.connect()
    create_schema(conn)
    load_events(conn, [as_row(Event(1, "ann", "A", 0)), as_row(Event(2, "ann", "B", HOUR))])

    result = friction_points(conn, spec_of("A", "B"), 1, as_of=AS_OF)

    assert result.codes == ["NO_DATA"]
    assert result.dropped == 0


@SETTINGS
@given(events=event_sets(), data=funnel_specs())
def test_friction_matches_reference(
    shared_conn: Any, events: list[Event], data: dict[str, Any]
) -> None:
    data.pop("breakdown", None)
    try:
        spec = FunnelSpec.model_validate(data)
    except ValidationError:
        assume(False)
        return
    conn = emptied(shared_conn)
    load_events(conn, [as_row(event) for event in events])

    for step in range(1, len(spec.steps)):
        for mode in ("between", "next"):
            _, found = engine_friction(conn, spec, step, mode, 30 * HOUR)
            assert found == reference_friction(spec, events, step, mode, 30 * HOUR)
