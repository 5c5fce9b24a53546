"""Waits, local times across daylight-saving changes, wait-for branches, restarts, lateness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headstart.timeutil import MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_SECOND
from tests.helpers.pipeline import identify, track
from tests.helpers.triggers import TriggerWorld, at, plan_with

HOUR = MICROS_PER_HOUR
DAY = MICROS_PER_DAY

HEADER = """\
triggers:
  fallback_timezone: Europe/Berlin
  templates:
    note: {text: "step {{ rule }}"}
  rules:
"""


def world(tmp_path: Path, rules: str, start: int) -> TriggerWorld:
    return TriggerWorld(tmp_path / "data", plan_with(HEADER + rules), start)


def signed_up(user: str, when: int, **context: Any) -> list[dict[str, Any]]:
    extra = {"context": context} if context else {}
    return [
        identify(user, traits={"email": f"{user}@example.com"}, at=when - 1),
        track("Signed Up", user=user, at=when, **extra),
    ]


def walk(w: TriggerWorld, start: int, end: int, step: int) -> None:
    """Advance the clock from ``start`` to ``end`` in increments of ``step``."""
    instant = start
    while instant <= end:
        w.advance(instant)
        instant += step


# ---- local time of day across daylight-saving changes -----------------------------------

NINE_AM = """\
    - name: morning
      entry: {event: Signed Up}
      quiet_hours: ignore
      steps:
        - wait_until: "09:00"
        - {send: email, template: note}
"""


@pytest.mark.parametrize(
    ("signup", "zone_trait", "expected"),
    [
        pytest.param(
            "2024-03-30T12:00:00Z", None, "2024-03-31T07:00:00Z", id="berlin-spring-forward"
        ),
        pytest.param("2024-10-26T12:00:00Z", None, "2024-10-27T08:00:00Z", id="berlin-fall-back"),
        pytest.param(
            "2024-03-31T06:59:00Z", None, "2024-03-31T07:00:00Z", id="same-day-before-nine"
        ),
        pytest.param(
            "2024-03-10T12:00:00Z",
            "America/New_York",
            "2024-03-10T13:00:00Z",
            id="new-york-on-its-change-day",
        ),
        pytest.param(
            "2024-03-30T12:00:00Z", "Not/AZone", "2024-03-31T07:00:00Z", id="bad-zone-falls-back"
        ),
    ],
)
def test_wait_until_local_time(
    tmp_path: Path, signup: str, zone_trait: str | None, expected: str
) -> None:
    start = at(signup)
    w = world(tmp_path, NINE_AM, start)
    messages = signed_up("u1", start)
    if zone_trait is not None:
        messages.insert(0, identify("u1", traits={"timezone": zone_trait}, at=start - 2))
    w.send(*messages)
    assert w.timers() == [("wait", at(expected))]
    w.advance(at(expected) - 1)
    assert w.outbox() == []
    w.advance(at(expected))
    assert w.sends() == [("morning", "2", at(expected))]


def test_zone_from_event_context(tmp_path: Path) -> None:
    start = at("2024-06-01T12:00:00Z")
    w = world(tmp_path, NINE_AM, start)
    w.send(*signed_up("u1", start, timezone="Asia/Tokyo"))
    assert w.timers() == [("wait", at("2024-06-02T00:00:00Z"))]  # 09:00 in Tokyo


def test_fixed_wait_is_elapsed_time_across_dst(tmp_path: Path) -> None:
    """A 1d wait is 24 hours, so across spring-forward it ends an hour later on the wall clock."""
    start = at("2024-03-30T10:00:00Z")  # 11:00 CET
    rules = """\
    - name: later
      entry: {event: Signed Up}
      quiet_hours: ignore
      steps:
        - wait: 1d
        - {send: email, template: note}
"""
    w = world(tmp_path, rules, start)
    w.send(*signed_up("u1", start))
    w.advance(start + DAY)
    assert w.sends() == [("later", "2", at("2024-03-31T10:00:00Z"))]  # 12:00 CEST


# ---- wait for an event or a timeout -----------------------------------------------------

WAIT_FOR = """\
    - name: onboarding
      entry: {event: Signed Up}
      quiet_hours: ignore
      steps:
        - id: project
          wait_for: {event: Project Created}
          timeout: 1d
          on_event:
            - {id: congratulate, send: email, template: note}
          on_timeout:
            - {id: remind, send: email, template: note}
        - {id: after, send: email, template: note}
"""


@pytest.mark.parametrize(
    ("project_at", "steps"),
    [
        pytest.param(HOUR, ["congratulate", "after"], id="event-first"),
        pytest.param(DAY, ["congratulate", "after"], id="event-at-the-deadline-wins"),
        pytest.param(DAY + 1, ["remind", "after"], id="event-after-the-deadline"),
        pytest.param(None, ["remind", "after"], id="no-event"),
    ],
)
def test_wait_for_branches(tmp_path: Path, project_at: int | None, steps: list[str]) -> None:
    start = at("2024-05-06T10:00:00Z")
    w = world(tmp_path, WAIT_FOR, start)
    w.send(*signed_up("u1", start))
    # Everything arrives only after the deadline passed on the clock: the outcome must still
    # follow the event's timestamp.
    w.clock.set(start + 2 * DAY)
    if project_at is not None:
        w.append([track("Project Created", user="u1", at=start + project_at)])
    w.process()
    assert [step for _, step, _ in w.sends()] == steps
    assert w.timers() == []


def test_wait_for_late_event_seen_early_loses(tmp_path: Path) -> None:
    """An event stamped after the deadline takes the timeout branch, even when the processor
    handles it before its clock reaches the deadline."""
    start = at("2024-05-06T10:00:00Z")
    w = world(tmp_path, WAIT_FOR, start)
    w.send(*signed_up("u1", start))
    w.clock.set(start + DAY - HOUR)
    w.send(track("Project Created", user="u1", at=start + DAY + 2 * HOUR))
    w.advance(start + DAY + 3 * HOUR)
    assert [step for _, step, _ in w.sends()] == ["remind", "after"]
    assert w.kinds().count("resumed") == 0


def test_wait_for_resumes_live(tmp_path: Path) -> None:
    start = at("2024-05-06T10:00:00Z")
    w = world(tmp_path, WAIT_FOR, start)
    w.send(*signed_up("u1", start))
    w.advance(start + HOUR)
    w.send(track("Project Created", user="u1", at=start + HOUR))
    assert w.sends() == [
        ("onboarding", "congratulate", start + HOUR),
        ("onboarding", "after", start + HOUR),
    ]
    kinds = w.kinds()
    assert kinds.index("resumed") < kinds.index("enqueued")


def test_wait_for_same_key(tmp_path: Path) -> None:
    start = at("2024-05-06T10:00:00Z")
    rules = """\
    - name: feature
      entry: {event: Feature Started, key: feature_id}
      quiet_hours: ignore
      reentry: after_exit
      steps:
        - wait_for: {event: Feature Finished}
          timeout: 2h
          on_timeout:
            - {send: email, template: note}
"""
    w = world(tmp_path, rules, start)
    w.send(
        identify("u1", traits={"email": "a@example.com"}, at=start - 1),
        track("Feature Started", user="u1", at=start, properties={"feature_id": "f1"}),
        track("Feature Started", user="u1", at=start, properties={"feature_id": "f2"}),
        track("Feature Finished", user="u1", at=start + HOUR, properties={"feature_id": "f2"}),
    )
    w.advance(start + 2 * HOUR)
    assert [row.key.split(":")[0] for row in w.outbox()] == ["feature"]
    assert w.enrollments() == [("feature", "f1", "completed"), ("feature", "f2", "completed")]
    assert len(w.decisions("resumed")) == 1


# ---- restarts and lateness --------------------------------------------------------------

LATE_RULE = """\
    - name: delayed
      entry: {{event: Signed Up}}
      quiet_hours: ignore
      lateness: {{after: 1h, policy: {policy}}}
      steps:
        - wait: 2h
        - {{send: email, template: note}}
"""


def test_restart_between_enrollment_and_timer(tmp_path: Path) -> None:
    start = at("2024-05-06T10:00:00Z")
    w = world(tmp_path, LATE_RULE.format(policy="send"), start)
    w.send(*signed_up("u1", start))
    assert w.timers() == [("wait", start + 2 * HOUR)]
    w.restart()
    w.advance(start + 2 * HOUR)
    assert w.sends() == [("delayed", "2", start + 2 * HOUR)]
    w.restart()
    w.advance(start + 3 * HOUR)
    assert len(w.outbox()) == 1  # fired once, not again after the second restart


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param("send", [("delayed", "2", "2024-05-08T10:00:00Z")], id="send"),
        pytest.param("skip", [], id="skip"),
        # the missed due time was 14:00 CEST; the next 14:00 after the restart is on May 8
        pytest.param("next_slot", [("delayed", "2", "2024-05-08T12:00:00Z")], id="next-slot"),
    ],
)
def test_lateness_after_downtime(
    tmp_path: Path, policy: str, expected: list[tuple[str, str, str]]
) -> None:
    start = at("2024-05-06T10:00:00Z")
    w = world(tmp_path, LATE_RULE.format(policy=policy), start)
    w.send(*signed_up("u1", start))
    w.close()
    w.clock.set(at("2024-05-08T10:00:00Z"))  # two days of downtime
    w.restart()
    w.process()
    w.advance(at("2024-05-08T12:00:00Z"))
    w.advance(at("2024-05-09T10:00:00Z"))
    assert w.sends() == [(rule, step, at(when)) for rule, step, when in expected]
    if policy == "skip":
        assert w.enrollments() == [("delayed", "", "exited")]


def test_timer_slightly_late_is_not_late(tmp_path: Path) -> None:
    start = at("2024-05-06T10:00:00Z")
    w = world(tmp_path, LATE_RULE.format(policy="skip"), start)
    w.send(*signed_up("u1", start))
    w.advance(start + 2 * HOUR + 30 * 60 * MICROS_PER_SECOND)
    assert len(w.outbox()) == 1


def test_backlog_fires_timers_after_earlier_events(tmp_path: Path) -> None:
    """A backlog larger than a batch: timers wait for the events logged before their due time."""
    start = at("2024-05-06T10:00:00Z")
    w = world(tmp_path, WAIT_FOR, start)
    w.processor.batch_size = 2
    w.clock.set(start + 3 * DAY)
    w.append(signed_up("u1", start))
    w.append([track("Report Viewed", user="u1", at=start + i * HOUR) for i in range(1, 10)])
    w.append([track("Project Created", user="u1", at=start + 12 * HOUR)])
    w.process()
    assert [step for _, step, _ in w.sends()] == ["congratulate", "after"]
