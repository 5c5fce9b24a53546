"""Behavioural segments: each condition kind, membership, sizes, and a Python reference.

The SQL runs on a real in-memory DuckDB warehouse filled with ``load_*``; the reference
evaluates the same conditions over plain dicts, with trait filters through the processor's
matcher so that ``is`` means what ``where`` means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headstart.analytics.segments import (
    find_segment,
    in_segment,
    segment_members,
    segment_sizes,
)
from headstart.analytics.warehouse import create_schema, load_events, load_milestones, load_persons
from headstart.errors import NotFound
from headstart.events import LoggedEvent
from headstart.plan.analytics import SegmentCondition, SegmentSpec
from headstart.plan.match import compile_matcher
from headstart.plan.model import EventMatcher
from tests.test_funnels_properties import SETTINGS, emptied, shared_conn
from tests.test_funnels_reference import HOUR, Event, as_row, matcher_test

__all__ = ["shared_conn"]

DAY = 24 * HOUR
AS_OF = 30 * DAY


@dataclass
class Person:
    person_id: str
    traits: dict[str, Any] = field(default_factory=dict)
    first_seen: int = 0
    activated_at: int | None = None
    milestones: dict[str, int] = field(default_factory=dict)


def fill(conn: duckdb.DuckDBPyConnection, persons: list[Person], events: list[Event]) -> None:
    load_persons(
        conn,
        [
            {
                "person_id": p.person_id,
                "traits": p.traits,
                "first_seen": p.first_seen,
                "activated_at": p.activated_at,
            }
            for p in persons
        ],
    )
    load_milestones(
        conn,
        [
            {"person_id": p.person_id, "milestone": name, "reached_at": at}
            for p in persons
            for name, at in p.milestones.items()
        ],
    )
    load_events(conn, [as_row(event) for event in events])


def reference_condition(
    condition: SegmentCondition, person: Person, events: list[Event], as_of: int
) -> bool:
    kind = condition.kind
    if kind == "trait":
        wanted = condition.is_ if "is_" in condition.model_fields_set else {"exists": True}
        matcher = EventMatcher(event="trait", where={condition.trait or "": wanted})
        body = {"properties": person.traits}
        probe = LoggedEvent(0, "s", "m", "track", "trait", None, None, 0, 0, body)
        return compile_matcher(matcher)(probe)
    if kind in ("did", "did_not"):
        test = matcher_test(condition.matcher())
        within = condition.within_us
        count = sum(
            1
            for event in events
            if event.person_id == person.person_id
            and test(event)
            and event.ts <= as_of
            and (within is None or event.ts > as_of - within)
        )
        did = count >= condition.at_least
        return did if kind == "did" else not did
    if kind == "milestone":
        reached = condition.milestone in person.milestones and (
            person.milestones[condition.milestone or ""] <= as_of
        )
        return reached == condition.reached
    activated = person.activated_at is not None and person.activated_at <= as_of
    return activated == condition.activated


def reference_members(
    spec: SegmentSpec, persons: list[Person], events: list[Event], as_of: int
) -> set[str]:
    members = set()
    for person in persons:
        if person.first_seen > as_of:
            continue
        results = [reference_condition(c, person, events, as_of) for c in spec.conditions]
        if all(results) if spec.match == "all" else any(results):
            members.add(person.person_id)
    return members


def segment(*conditions: dict[str, Any], match: str = "all") -> SegmentSpec:
    return SegmentSpec.model_validate({"name": "s", "match": match, "conditions": list(conditions)})


PERSONS = [
    Person("ann", {"plan": "pro", "seats": 5}, activated_at=2 * DAY, milestones={"created": DAY}),
    Person("bob", {"plan": "free", "seats": 1}, milestones={"created": 40 * DAY}),
    Person("cid", {"plan": "pro"}, activated_at=40 * DAY),
    Person("dan", {}, first_seen=40 * DAY),
]
EVENTS = [
    Event(1, "ann", "Project Created", 29 * DAY, {"kind": "team"}),
    Event(2, "ann", "Project Created", 29 * DAY + HOUR, {"kind": "solo"}),
    Event(3, "bob", "Project Created", 10 * DAY, {"kind": "team"}),
    Event(4, "cid", "Teammate Invited", 29 * DAY),
    Event(5, "dan", "Project Created", 29 * DAY),
]

CASES = {
    "trait-equals": ({"trait": "plan", "is": "pro"}, {"ann", "cid"}),
    "trait-operator": ({"trait": "seats", "is": {"gte": 2}}, {"ann"}),
    "trait-set": ({"trait": "seats"}, {"ann", "bob"}),
    "trait-list": ({"trait": "plan", "is": ["free", "enterprise"]}, {"bob"}),
    "did-ever": ({"did": "Project Created"}, {"ann", "bob"}),
    "did-within": ({"did": "Project Created", "within": "7d"}, {"ann"}),
    "did-at-least": ({"did": "Project Created", "at_least": 2}, {"ann"}),
    "did-with-filter": ({"did": "Project Created", "where": {"kind": "team"}}, {"ann", "bob"}),
    "did-not-within": ({"did_not": "Project Created", "within": "7d"}, {"bob", "cid"}),
    "milestone-reached": ({"milestone": "created"}, {"ann"}),
    "milestone-not-reached": ({"milestone": "created", "reached": False}, {"bob", "cid"}),
    "activated": ({"activated": True}, {"ann"}),
    "not-activated": ({"activated": False}, {"bob", "cid"}),
}


@pytest.mark.parametrize(("condition", "expected"), CASES.values(), ids=CASES.keys())
def test_segment_condition(condition: dict[str, Any], expected: set[str]) -> None:
    conn = duckdb.connect()
    create_schema(conn)
    fill(conn, PERSONS, EVENTS)
    spec = segment(condition)

    members = set(segment_members(conn, spec, as_of=AS_OF)["person_id"])

    assert members == expected
    assert members == reference_members(spec, PERSONS, EVENTS, AS_OF)


def test_match_any_and_all() -> None:
    conn = duckdb.connect()
    create_schema(conn)
    fill(conn, PERSONS, EVENTS)
    conditions = ({"trait": "plan", "is": "free"}, {"activated": True})

    any_members = set(
        segment_members(conn, segment(*conditions, match="any"), as_of=AS_OF)["person_id"]
    )
    all_members = set(segment_members(conn, segment(*conditions), as_of=AS_OF)["person_id"])

    assert any_members == {"ann", "bob"}
    assert all_members == set()


def test_in_segment_for_one_person() -> None:
    conn = duckdb.connect()
    create_schema(conn)
    fill(conn, PERSONS, EVENTS)
    spec = segment({"trait": "plan", "is": "pro"})

    assert in_segment(conn, spec, "ann", as_of=AS_OF) is True
    assert in_segment(conn, spec, "bob", as_of=AS_OF) is False
    assert in_segment(conn, spec, "nobody", as_of=AS_OF) is False


def test_sizes_isolate_failing_segment() -> None:
    conn = duckdb.connect()
    create_schema(conn)
    fill(conn, PERSONS, EVENTS)
    broken_condition = SegmentCondition.model_construct(
        trait="plan", is_={"in": 3}, _fields_set={"trait", "is_"}
    )
    broken = SegmentSpec.model_construct(
        name="broken", description=None, match="all", conditions=[broken_condition]
    )
    pros = SegmentSpec.model_validate(
        {"name": "pros", "description": "Paying", "conditions": [{"trait": "plan", "is": "pro"}]}
    )

    sizes = segment_sizes(conn, [broken, pros], as_of=AS_OF).set_index("segment")

    assert sizes.loc["pros", "persons"] == 2
    assert sizes.loc["pros", "share"] == 2 / 3
    assert sizes.loc["broken", "code"] == "FAILED"
    assert "needs a list" in sizes.loc["broken", "error"]


def test_find_unknown_segment() -> None:
    with pytest.raises(NotFound) as raised:
        find_segment([segment({"activated": True})], "missing")

    assert "'missing'" in raised.value.message


INVALID = {
    "two-kinds": ({"trait": "plan", "did": "A"}, "exactly one of"),
    "no-kind": ({"within": "7d"}, "exactly one of"),
    "stray-key": ({"trait": "plan", "within": "7d"}, "does not belong"),
    "bad-duration": ({"did": "A", "within": "seven days"}, "duration"),
}


@pytest.mark.parametrize(("condition", "message"), INVALID.values(), ids=INVALID.keys())
def test_invalid_condition(condition: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        SegmentCondition.model_validate(condition)

    assert message in str(raised.value)


# ---- random data ------------------------------------------------------------------------------

conditions = st.one_of(
    st.builds(
        lambda trait, value: {"trait": trait, "is": value},
        st.sampled_from(["plan", "seats"]),
        st.one_of(st.sampled_from(["pro", "free", 1, 2]), st.just({"gte": 2}), st.just(["pro", 1])),
    ),
    st.builds(lambda trait: {"trait": trait}, st.sampled_from(["plan", "seats"])),
    st.builds(
        lambda kind, event, at_least, within: {
            kind: event,
            "at_least": at_least,
            **({"within": within} if within else {}),
        },
        st.sampled_from(["did", "did_not"]),
        st.sampled_from(["A", "B"]),
        st.integers(1, 2),
        st.sampled_from([None, "1d", "3d"]),
    ),
    st.builds(lambda reached: {"milestone": "m", "reached": reached}, st.booleans()),
    st.builds(lambda activated: {"activated": activated}, st.booleans()),
)


@st.composite
def populations(draw: st.DrawFn) -> tuple[list[Person], list[Event]]:
    persons = []
    for person_id in ("p1", "p2", "p3", "p4"):
        traits = draw(
            st.dictionaries(
                st.sampled_from(["plan", "seats"]),
                st.sampled_from(["pro", "free", 1, 2, 3, None]),
                max_size=2,
            )
        )
        day = st.integers(0, 6).map(lambda n: n * DAY)
        persons.append(
            Person(
                person_id,
                traits,
                first_seen=draw(day),
                activated_at=draw(st.one_of(st.none(), day)),
                milestones=draw(st.dictionaries(st.just("m"), day, max_size=1)),
            )
        )
    events = [
        Event(
            seq,
            draw(st.sampled_from(["p1", "p2", "p3", "p4"])),
            draw(st.sampled_from(["A", "B"])),
            draw(st.integers(0, 6)) * DAY,
        )
        for seq in range(1, draw(st.integers(0, 12)) + 1)
    ]
    return persons, events


@SETTINGS
@given(
    population=populations(),
    picked=st.lists(conditions, min_size=1, max_size=3),
    match=st.sampled_from(["all", "any"]),
    as_of=st.sampled_from([2 * DAY, 4 * DAY, 7 * DAY]),
)
def test_segments_match_reference(
    shared_conn: Any,
    population: tuple[list[Person], list[Event]],
    picked: list[dict[str, Any]],
    match: str,
    as_of: int,
) -> None:
    persons, events = population
    spec = segment(*picked, match=match)
    conn = emptied(shared_conn)
    fill(conn, persons, events)

    members = set(segment_members(conn, spec, as_of=as_of)["person_id"])

    assert members == reference_members(spec, persons, events, as_of)
