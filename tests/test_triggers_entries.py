"""Each kind of rule entry, driven by a manual clock through the real processor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from headstart.timeutil import MICROS_PER_DAY, MICROS_PER_HOUR
from tests.helpers.pipeline import identify, track
from tests.helpers.triggers import TriggerWorld, at, plan_with, to_record

T0 = at("2024-05-06T10:00:00Z")  # a Monday, 12:00 in Europe/Berlin
HOUR = MICROS_PER_HOUR
DAY = MICROS_PER_DAY

TEMPLATES = """\
  templates:
    hello:
      subject: "Hello {{ traits.name | default('there') }}"
      text: "{{ event.name }} {{ key }} next={{ onboarding.next_milestone }}"
"""


def world(tmp_path: Path, rules: str, extra: str = "") -> TriggerWorld:
    plan = plan_with(
        "triggers:\n  fallback_timezone: Europe/Berlin\n" + extra + TEMPLATES + "  rules:\n" + rules
    )
    return TriggerWorld(tmp_path / "data", plan, T0)


# ---- event entry ------------------------------------------------------------------------

EVENT_RULE = """\
    - name: welcome_pro
      entry:
        event: Signed Up
        where: {plan: pro, seats: {gte: 3}}
      steps:
        - {send: email, template: hello}
"""


@pytest.mark.parametrize(
    ("properties", "sends"),
    [
        pytest.param({"plan": "pro", "seats": 5}, 1, id="matching-filter"),
        pytest.param({"plan": "pro", "seats": 2}, 0, id="operator-fails"),
        pytest.param({"plan": "free", "seats": 5}, 0, id="value-differs"),
        pytest.param({"seats": 5}, 0, id="property-missing"),
    ],
)
def test_event_entry_filters(tmp_path: Path, properties: dict[str, Any], sends: int) -> None:
    w = world(tmp_path, EVENT_RULE)
    w.send(
        identify("u1", traits={"email": "ada@example.com", "name": "Ada"}, at=T0),
        track("Signed Up", user="u1", at=T0 + 1, properties=properties),
    )
    assert len(w.outbox()) == sends
    if sends:
        row = w.outbox()[0]
        assert row.payload["subject"] == "Hello Ada"
        assert row.payload["recipient"] == "ada@example.com"
        assert row.payload["text"] == "Signed Up  next=created_project"


def test_event_entry_other_event_ignored(tmp_path: Path) -> None:
    w = world(tmp_path, EVENT_RULE)
    w.send(track("Project Created", user="u1", at=T0, properties={"plan": "pro", "seats": 9}))
    assert w.outbox() == []
    assert w.decisions() == []


# ---- absence: started X, did not finish within T, correlated by key ---------------------

ABSENCE_RULE = """\
    - name: import_stuck
      entry:
        after: {event: Import Started}
        missing: {event: Import Finished}
        within: 2h
        key: properties.import_id
      reentry: after_exit
      steps:
        - {send: email, template: hello}
"""


@dataclass
class AbsenceCase:
    finishes: list[tuple[str, int]] = field(default_factory=list)  # (import id, offset)
    stuck: list[str] = field(default_factory=list)  # import ids that should get a message


ABSENCE_CASES = {
    "finished-in-time": AbsenceCase([("a", HOUR)], []),
    "finished-at-deadline": AbsenceCase([("a", 2 * HOUR)], []),
    "finished-a-microsecond-late": AbsenceCase([("a", 2 * HOUR + 1)], ["a"]),
    "never-finished": AbsenceCase([], ["a"]),
    "other-key-finished": AbsenceCase([("b", HOUR)], ["a"]),
}


@pytest.mark.parametrize("case", ABSENCE_CASES.values(), ids=ABSENCE_CASES.keys())
def test_absence_entry(tmp_path: Path, case: AbsenceCase) -> None:
    w = world(tmp_path, ABSENCE_RULE)
    w.send(
        identify("u1", traits={"email": "ada@example.com"}, at=T0 - 1),
        track("Import Started", user="u1", at=T0, properties={"import_id": "a"}),
        track("Import Started", user="u1", at=T0, properties={"import_id": "b"}),
    )
    # The finishing events are logged only after the clock passed every deadline, so the
    # outcome depends on event time alone, not on when the processor saw them.
    w.clock.set(T0 + 3 * HOUR)
    w.send(
        *[
            track("Import Finished", user="u1", at=T0 + offset, properties={"import_id": key})
            for key, offset in case.finishes
        ]
    )
    stuck_keys = sorted(row.payload["text"].split()[2] for row in w.outbox())
    expected = sorted(case.stuck + ([] if any(k == "b" for k, _ in case.finishes) else ["b"]))
    assert stuck_keys == expected
    # the deadlines passed while nothing ran, so the messages go out at processing time
    assert all(row.not_before == T0 + 3 * HOUR for row in w.outbox())


def test_absence_event_and_timeout_same_instant(tmp_path: Path) -> None:
    """A finish stamped exactly at the deadline, processed in the batch that reaches it, wins."""
    w = world(tmp_path, ABSENCE_RULE)
    w.send(track("Import Started", user="u1", at=T0, properties={"import_id": "a"}))
    w.append([track("Import Finished", user="u1", at=T0 + 2 * HOUR, properties={"import_id": "a"})])
    w.advance(T0 + 2 * HOUR)
    assert w.outbox() == []
    assert w.enrollments() == [("import_stuck", "a", "cancelled")]


def test_absence_late_finish_seen_early_loses(tmp_path: Path) -> None:
    """A finish stamped after the deadline loses even when the clock has not reached it yet."""
    w = world(tmp_path, ABSENCE_RULE)
    w.send(
        identify("u1", traits={"email": "ada@example.com"}, at=T0 - 1),
        track("Import Started", user="u1", at=T0, properties={"import_id": "a"}),
    )
    w.clock.set(T0 + HOUR)
    w.send(track("Import Finished", user="u1", at=T0 + 3 * HOUR, properties={"import_id": "a"}))
    assert w.enrollments() == [("import_stuck", "a", "watching")]
    w.advance(T0 + 2 * HOUR)
    assert [row.payload["text"].split()[2] for row in w.outbox()] == ["a"]


def test_absence_without_key_not_watched(tmp_path: Path) -> None:
    w = world(tmp_path, ABSENCE_RULE)
    w.send(track("Import Started", user="u1", at=T0, properties={}))
    w.advance(T0 + DAY)
    assert w.outbox() == []
    assert [d.reason for d in w.decisions("not_entered")] == [
        "Import Started has no correlation key properties.import_id"
    ]


def test_absence_repeated_start_one_watch(tmp_path: Path) -> None:
    w = world(tmp_path, ABSENCE_RULE)
    w.send(
        identify("u1", traits={"email": "ada@example.com"}, at=T0 - 1),
        track("Import Started", user="u1", at=T0, properties={"import_id": "a"}),
        track("Import Started", user="u1", at=T0 + HOUR, properties={"import_id": "a"}),
    )
    for hour in range(1, 25):
        w.advance(T0 + hour * HOUR)
    assert len(w.outbox()) == 1
    assert w.outbox()[0].not_before == T0 + 2 * HOUR


# ---- stall before the next milestone ----------------------------------------------------

STALL_RULE = """\
    - name: stalled
      entry: {stalled_for: 2d}
      reentry: after_exit
      steps:
        - {send: email, template: hello}
"""


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        pytest.param([], [("created_project", T0 + 2 * DAY)], id="no-progress"),
        pytest.param(
            [("Project Created", DAY)], [("invited_team", T0 + 3 * DAY)], id="first-milestone"
        ),
        pytest.param(
            [("Teammate Invited", DAY)],
            [("created_project", T0 + 3 * DAY)],
            id="out-of-order-progress-moves-the-clock",
        ),
        pytest.param(
            [("Project Created", DAY), ("Teammate Invited", DAY), ("Report Viewed", DAY)],
            [],
            id="every-milestone",
        ),
    ],
)
def test_stall_entry(
    tmp_path: Path, progress: list[tuple[str, int]], expected: list[tuple[str, int]]
) -> None:
    w = world(tmp_path, STALL_RULE)
    w.send(
        identify("u1", traits={"email": "ada@example.com"}, at=T0 - 1),
        track("Signed Up", user="u1", at=T0),
        *[track(event, user="u1", at=T0 + offset) for event, offset in progress],
    )
    for day in range(1, 11):
        w.advance(T0 + day * DAY)
    got = [(row.payload["text"].split("next=")[1], row.not_before) for row in w.outbox()]
    assert got == expected


def test_stall_needs_signup(tmp_path: Path) -> None:
    w = world(tmp_path, STALL_RULE)
    w.send(track("Project Created", user="u1", at=T0))
    w.advance(T0 + 10 * DAY)
    assert w.outbox() == []
    assert w.enrollments() == []


# ---- trait or score change --------------------------------------------------------------

TRAIT_RULES = """\
    - name: upgraded
      entry: {trait: plan, from: free, to: pro}
      steps:
        - {send: email, template: hello}
    - name: qualified
      entry: {trait: pql_score, from: {lt: 50}, to: {gte: 50}}
      steps:
        - {send: email, template: hello}
"""


@pytest.mark.parametrize(
    ("changes", "rules"),
    [
        pytest.param([{"plan": "free"}, {"plan": "pro"}], ["upgraded"], id="free-to-pro"),
        pytest.param([{"plan": "pro"}], [], id="unset-to-pro-does-not-match-from"),
        pytest.param([{"plan": "free"}, {"plan": "free"}], [], id="no-change"),
        pytest.param([{"pql_score": 10}, {"pql_score": 70}], ["qualified"], id="score-crosses"),
        pytest.param([{"pql_score": 60}, {"pql_score": 70}], [], id="score-already-above"),
    ],
)
def test_trait_change_entry(
    tmp_path: Path, changes: list[dict[str, Any]], rules: list[str]
) -> None:
    w = world(tmp_path, TRAIT_RULES)
    w.send(identify("u1", traits={"email": "ada@example.com"}, at=T0))
    w.send(*[identify("u1", traits=traits, at=T0 + i + 1) for i, traits in enumerate(changes)])
    assert [row.rule for row in w.outbox()] == rules


def test_trait_change_from_context_traits(tmp_path: Path) -> None:
    w = world(tmp_path, TRAIT_RULES)
    w.send(
        identify("u1", traits={"email": "ada@example.com", "plan": "free"}, at=T0),
        track("Billing Updated", user="u1", at=T0 + 1, context={"traits": {"plan": "pro"}}),
    )
    assert [row.rule for row in w.outbox()] == ["upgraded"]


# ---- entering a segment -----------------------------------------------------------------

SEGMENT = """\
  segments:
    power_users:
      - {count: Report Viewed, is: {gte: 3}}
      - {milestone: created_project}
"""
SEGMENT_RULE = """\
    - name: power
      entry: {segment: power_users}
      reentry: after_exit
      steps:
        - {send: email, template: hello}
"""


def test_segment_entry(tmp_path: Path) -> None:
    w = world(tmp_path, SEGMENT_RULE, SEGMENT)
    w.send(identify("u1", traits={"email": "ada@example.com"}, at=T0))
    w.send(*[track("Report Viewed", user="u1", at=T0 + i + 1) for i in range(3)])
    assert w.outbox() == []  # the milestone is still missing
    w.send(track("Project Created", user="u1", at=T0 + 10))
    assert [row.rule for row in w.outbox()] == ["power"]
    w.send(track("Report Viewed", user="u1", at=T0 + 11))
    assert len(w.outbox()) == 1  # still a member: no new entry
    assert w.decisions("entered")[0].reason == "entered segment power_users"


# ---- events that were old when received -------------------------------------------------


def send_received(w: TriggerWorld, received_at: int, *messages: dict[str, Any]) -> None:
    w.log.append([to_record(raw, received_at) for raw in messages])
    w.process()


@pytest.mark.parametrize(
    ("age", "entered"),
    [
        pytest.param(HOUR, True, id="an-hour-late-enters"),
        pytest.param(DAY, True, id="at-the-limit-enters"),
        pytest.param(DAY + 1, False, id="older-is-history"),
    ],
)
def test_old_event_starts_no_journey(tmp_path: Path, age: int, entered: bool) -> None:
    w = world(tmp_path, EVENT_RULE + ABSENCE_RULE)
    w.clock.set(T0 + age)
    send_received(
        w,
        T0 + age,
        identify("u1", traits={"email": "ada@example.com"}, at=T0 - 1),
        track("Signed Up", user="u1", at=T0, properties={"plan": "pro", "seats": 5}),
        track("Import Started", user="u1", at=T0, properties={"import_id": "a"}),
    )
    w.advance(T0 + 2 * DAY)
    assert len(w.outbox()) == (2 if entered else 0)
    assert bool(w.enrollments()) is entered
    assert w.decisions("not_entered") == []


def test_old_event_still_ends_a_journey(tmp_path: Path) -> None:
    w = world(tmp_path, ABSENCE_RULE)
    w.send(track("Import Started", user="u1", at=T0, properties={"import_id": "a"}))
    send_received(
        w,
        T0 + 3 * DAY,
        track("Import Finished", user="u1", at=T0 + HOUR, properties={"import_id": "a"}),
    )
    assert w.enrollments() == [("import_stuck", "a", "cancelled")]


def test_old_event_age_is_configurable(tmp_path: Path) -> None:
    w = world(tmp_path, EVENT_RULE, extra="  max_event_age: 30d\n")
    send_received(
        w,
        T0 + 7 * DAY,
        identify("u1", traits={"email": "ada@example.com"}, at=T0 - 1),
        track("Signed Up", user="u1", at=T0, properties={"plan": "pro", "seats": 5}),
    )
    assert len(w.outbox()) == 1
