"""Exits, goals, re-entry, conditions, branches, duplicates, merges and plan changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.api.persons import person_view
from headstart.delivery.outbox import OutboxStore, Outcome
from headstart.timeutil import MICROS_PER_DAY, MICROS_PER_HOUR
from tests.helpers.pipeline import alias, identify, track
from tests.helpers.triggers import TriggerWorld, at, plan_with

HOUR = MICROS_PER_HOUR
DAY = MICROS_PER_DAY
START = at("2024-05-06T10:00:00Z")

HEADER = """\
triggers:
  fallback_timezone: UTC
  templates:
    note: {text: "{{ rule }}"}
  rules:
"""


def world(tmp_path: Path, rules: str) -> TriggerWorld:
    return TriggerWorld(tmp_path / "data", plan_with(HEADER + rules), START)


def person(user: str, when: int = START - 1, **traits: object) -> dict[str, object]:
    return identify(user, traits={"email": f"{user}@example.com", **traits}, at=when)


# ---- exits and goals --------------------------------------------------------------------

JOURNEY = """\
    - name: trial
      entry: {event: Signed Up}
      exit:
        events: [{event: Account Deleted}]
        conditions: [{trait: plan, is: enterprise}]
      goal:
        events: [{event: Subscription Started}]
      steps:
        - wait: 1d
        - {send: email, template: note}
        - wait: 1d
        - {id: last, send: email, template: note}
"""


@pytest.mark.parametrize(
    ("message", "status", "kind"),
    [
        pytest.param(
            track("Account Deleted", user="u1", at=START + HOUR),
            "exited",
            "exited",
            id="exit-event",
        ),
        pytest.param(
            person("u1", START + HOUR, plan="enterprise"), "exited", "exited", id="exit-condition"
        ),
        pytest.param(
            track("Subscription Started", user="u1", at=START + HOUR),
            "goal",
            "goal_reached",
            id="goal",
        ),
    ],
)
def test_exit_cancels_timers(
    tmp_path: Path, message: dict[str, object], status: str, kind: str
) -> None:
    w = world(tmp_path, JOURNEY)
    w.send(person("u1"), track("Signed Up", user="u1", at=START))
    assert len(w.timers()) == 1
    w.advance(START + HOUR)
    w.send(message)
    assert w.timers() == []
    assert w.enrollments() == [("trial", "", status)]
    assert w.kinds()[-1] == kind
    w.advance(START + 5 * DAY)
    assert w.outbox() == []


def test_exit_condition_not_met_keeps_going(tmp_path: Path) -> None:
    w = world(tmp_path, JOURNEY)
    w.send(person("u1"), track("Signed Up", user="u1", at=START))
    w.send(person("u1", START + HOUR, plan="team"))
    w.advance(START + DAY)
    w.advance(START + 2 * DAY)
    assert [row.step for row in w.outbox()] == ["2", "last"]
    assert w.enrollments() == [("trial", "", "completed")]


def test_exit_between_steps_after_first_send(tmp_path: Path) -> None:
    w = world(tmp_path, JOURNEY)
    w.send(person("u1"), track("Signed Up", user="u1", at=START))
    w.advance(START + DAY)
    w.send(track("Account Deleted", user="u1", at=START + DAY + HOUR))
    w.advance(START + 3 * DAY)
    assert [row.step for row in w.outbox()] == ["2"]


# ---- re-entry ---------------------------------------------------------------------------

REENTRY = """\
    - name: again
      entry: {{event: Ping}}
      reentry: {policy}
      steps:
        - wait: 1h
        - {{send: email, template: note}}
"""


@pytest.mark.parametrize(
    ("policy", "pings", "entered"),
    [
        pytest.param("never", [0, 2, 200], [0], id="never"),
        pytest.param("after_exit", [0, 0.5, 2], [0, 2], id="after-exit-not-while-active"),
        pytest.param("{cooldown: 3d}", [0, 2, 71, 73], [0, 73], id="cooldown"),
    ],
)
def test_reentry_policies(
    tmp_path: Path, policy: str, pings: list[float], entered: list[float]
) -> None:
    w = world(tmp_path, REENTRY.format(policy=policy))
    w.send(person("u1"))
    for hours in pings:
        when = START + round(hours * HOUR)
        w.advance(when)
        w.send(track("Ping", user="u1", at=when))
    w.advance(START + 300 * HOUR)
    rows = w.store.conn.execute(
        "SELECT entered_at FROM enrollments WHERE entered_at IS NOT NULL ORDER BY entered_at"
    ).fetchall()
    assert [(entered_at - START) / HOUR for (entered_at,) in rows] == entered
    assert len(w.outbox()) == len(entered)


def test_duplicate_message_id_sends_once(tmp_path: Path) -> None:
    w = world(tmp_path, REENTRY.format(policy="after_exit"))
    duplicate = track("Ping", user="u1", at=START, message_id="same-id")
    w.send(person("u1"), duplicate, dict(duplicate))
    w.advance(START + 2 * HOUR)
    assert len(w.outbox()) == 1


def test_same_event_twice_one_enrollment(tmp_path: Path) -> None:
    w = world(tmp_path, REENTRY.format(policy="after_exit"))
    w.send(person("u1"), track("Ping", user="u1", at=START), track("Ping", user="u1", at=START))
    w.advance(START + 2 * HOUR)
    assert len(w.outbox()) == 1
    assert w.enrollments() == [("again", "", "completed")]


# ---- conditions and branches -----------------------------------------------------------

BRANCHING = """\
    - name: welcome
      entry: {event: Signed Up}
      conditions:
        - {not: {trait: plan, is: enterprise}}
      steps:
        - if:
            - {any: [{milestone: created_project}, {count: Report Viewed, is: {gte: 2}}]}
          then:
            - {id: advanced, send: email, template: note}
          else:
            - {id: basics, send: email, template: note}
        - {id: always, send: email, template: note}
"""


@pytest.mark.parametrize(
    ("before", "traits", "steps"),
    [
        pytest.param([], {}, ["basics", "always"], id="else"),
        pytest.param(["Project Created"], {}, ["advanced", "always"], id="milestone"),
        pytest.param(["Report Viewed", "Report Viewed"], {}, ["advanced", "always"], id="count"),
        pytest.param([], {"plan": "enterprise"}, [], id="entry-condition-fails"),
    ],
)
def test_conditions_and_branches(
    tmp_path: Path, before: list[str], traits: dict[str, str], steps: list[str]
) -> None:
    w = world(tmp_path, BRANCHING)
    w.send(
        person("u1", **traits),
        *[track(name, user="u1", at=START - 10 + i) for i, name in enumerate(before)],
        track("Signed Up", user="u1", at=START),
    )
    assert [row.step for row in w.outbox()] == steps
    if not steps:
        assert w.decisions("not_entered")[0].reason.endswith("the rule's conditions do not hold")


# ---- identity merges --------------------------------------------------------------------

ABSENCE = """\
    - name: checkout
      entry:
        after: {event: Checkout Started}
        missing: {event: Order Completed}
        within: 1h
      steps:
        - {send: email, template: note}
"""


def test_enrollment_follows_merge(tmp_path: Path) -> None:
    w = world(tmp_path, ABSENCE)
    w.send(track("Checkout Started", anon="device-1", at=START))
    w.send(person("u1", START + 1), alias("device-1", "u1", at=START + 2))
    w.send(identify("u1", "device-1", at=START + 3))
    w.send(track("Order Completed", user="u1", at=START + 10))
    w.advance(START + 2 * HOUR)
    assert w.outbox() == []
    assert w.enrollments() == [("checkout", "", "cancelled")]
    rows = w.store.conn.execute("SELECT person_id, reason FROM enrollments").fetchall()
    assert rows == [(w.person_id("u1"), "Order Completed arrived by 2024-05-06T11:00:00.000Z")]


# ---- plan changes and rebuilds ----------------------------------------------------------


def test_rebuild_does_not_decide_again(tmp_path: Path) -> None:
    w = world(tmp_path, JOURNEY)
    w.send(person("u1"), track("Signed Up", user="u1", at=START))
    w.advance(START + DAY)
    assert len(w.outbox()) == 1
    decisions = len(w.decisions())

    # a milestone change rebuilds state from the log; the journey keeps going
    changed = plan_with(HEADER + JOURNEY).model_copy(
        update={"activation": w.plan.activation.model_copy(update={"within_days": 30})}
    )
    w.restart(changed)
    assert w.processor.offset == 0  # the rebuild starts from the beginning of the log
    w.process()
    assert len(w.outbox()) == 1
    assert len(w.decisions()) == decisions
    w.advance(START + 2 * DAY)
    assert [row.step for row in w.outbox()] == ["2", "last"]


def test_new_rule_does_not_fire_on_history(tmp_path: Path) -> None:
    w = world(tmp_path, JOURNEY)
    w.send(person("u1"), track("Signed Up", user="u1", at=START))
    extra = JOURNEY.replace("name: trial", "name: late_comer")
    w.restart(plan_with(HEADER + JOURNEY + extra))
    w.process()
    assert [rule for rule, _, _ in w.enrollments()] == ["trial"]
    w.send(person("u2", START + HOUR), track("Signed Up", user="u2", at=START + HOUR))
    assert sorted(rule for rule, _, _ in w.enrollments()) == ["late_comer", "trial", "trial"]


@pytest.mark.parametrize(
    ("new_rules", "reason"),
    [
        pytest.param("", "the rule was removed or disabled in the plan", id="removed"),
        pytest.param(
            JOURNEY.replace("wait: 1d\n        - {id: last", "wait: 2d\n        - {id: last"),
            "the rule's steps changed in the plan",
            id="steps-changed",
        ),
    ],
)
def test_changed_rule_ends_enrollments(tmp_path: Path, new_rules: str, reason: str) -> None:
    w = world(tmp_path, JOURNEY + REENTRY.format(policy="never"))
    w.send(person("u1"), track("Signed Up", user="u1", at=START))
    w.restart(plan_with(HEADER + (new_rules or REENTRY.format(policy="never"))))
    w.advance(START + 3 * DAY)
    assert w.outbox() == []
    assert w.enrollments() == [("trial", "", "exited")]
    assert w.decisions("exited")[0].reason == reason


# ---- explain ----------------------------------------------------------------------------


def test_person_view_shows_deliveries(tmp_path: Path) -> None:
    w = world(tmp_path, JOURNEY)
    w.send(person("u1"), track("Signed Up", user="u1", at=START))
    w.advance(START + 3 * DAY)
    outbox = OutboxStore(w.store.path)
    claimed = outbox.claim(START + 3 * DAY, limit=10, lease_us=HOUR)
    assert len(claimed) == 2
    outbox.record(
        [
            Outcome(claimed[0].outbox_id, "sent", START + 3 * DAY + 5, provider_message_id="m1"),
            Outcome(claimed[1].outbox_id, "dead", START + 3 * DAY + 9, error="550 no mailbox"),
        ]
    )
    outbox.close()

    decisions = person_view(w.store, w.log, w.plan, "u1")["decisions"]
    enqueued = [row for row in decisions if row["kind"] == "enqueued"]
    sent = [row for row in decisions if row["kind"] == "sent"]
    assert [row["delivery"]["status"] for row in enqueued] == ["dead", "sent"]
    assert enqueued[0]["delivery"]["last_error"] == "550 no mailbox"
    assert len(sent) == 1
    assert sent[0]["at"] == "2024-05-09T10:00:00.000Z"
    assert sent[0]["step"] == enqueued[1]["step"]
    assert sent[0]["rule"] == "trial"
    assert sent[0]["detail"] == {"outbox_id": claimed[0].outbox_id, "provider_message_id": "m1"}
    assert decisions[0] is sent[0]


def test_person_view_explains(tmp_path: Path) -> None:
    w = world(tmp_path, JOURNEY)
    w.send(person("u1"), track("Signed Up", user="u1", at=START))
    view = person_view(w.store, w.log, w.plan, "u1")
    assert [row["kind"] for row in view["decisions"]] == ["waiting", "entered"]
    assert view["decisions"][0]["reason"] == "wait 1d: due 2024-05-07T10:00:00.000Z"
    assert view["enrollments"] == [
        {
            "enrollment_id": 1,
            "rule": "trial",
            "key": None,
            "status": "active",
            "step": "1",
            "started_at": "2024-05-06T10:00:00.000Z",
            "entered_at": "2024-05-06T10:00:00.000Z",
            "ended_at": None,
            "reason": None,
            "next_timer_at": "2024-05-07T10:00:00.000Z",
        }
    ]
