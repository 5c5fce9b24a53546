"""Frequency caps, quiet hours, priorities, the in-app slot, templates and emitted events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headstart.channels.inapp import inbox_message_id
from headstart.timeutil import MICROS_PER_DAY, MICROS_PER_HOUR
from tests.helpers.pipeline import identify, track
from tests.helpers.triggers import TriggerWorld, at, plan_with

HOUR = MICROS_PER_HOUR
DAY = MICROS_PER_DAY
START = at("2024-05-06T10:00:00Z")  # 12:00 in Berlin

TEMPLATES = """\
  templates:
    note: {subject: "{{ rule }}", text: "for {{ traits.email }}"}
    card: {title: "Tip from {{ rule }}", body: "..."}
"""


def world(tmp_path: Path, settings: str, rules: str, start: int = START) -> TriggerWorld:
    text = "triggers:\n  fallback_timezone: Europe/Berlin\n" + settings + TEMPLATES
    return TriggerWorld(tmp_path / "data", plan_with(text + "  rules:\n" + rules), start)


def person(user: str, when: int, **traits: Any) -> dict[str, Any]:
    return identify(user, traits={"email": f"{user}@example.com", **traits}, at=when)


PING_RULE = """\
    - name: ping
      entry: {event: Ping}
      reentry: after_exit
      quiet_hours: ignore
      steps:
        - {send: email, template: note}
"""


# ---- frequency caps ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cap", "offsets", "sent"),
    [
        pytest.param(
            "{channel: email, max: 2, per: 24h}", [0, 1, 2], [0, 1], id="rolling-third-capped"
        ),
        pytest.param(
            "{channel: email, max: 2, per: 24h}",
            [0, 1, 2, 25],
            [0, 1, 25],
            id="rolling-window-moves",
        ),
        pytest.param(
            "{channel: email, max: 2, per: 24h}",
            [0, 1, 24],
            [0, 1, 24],
            id="rolling-window-half-open",
        ),
        pytest.param("{channel: '*', max: 1, per: 24h}", [0, 5], [0], id="all-channels"),
        pytest.param("{channel: push, max: 1, per: 24h}", [0, 5], [0, 5], id="other-channel-cap"),
    ],
)
def test_rolling_caps(tmp_path: Path, cap: str, offsets: list[int], sent: list[int]) -> None:
    w = world(tmp_path, f"  caps:\n    - {cap}\n", PING_RULE)
    w.send(person("u1", START - 1))
    for hours in offsets:
        w.advance(START + hours * HOUR)
        w.send(track("Ping", user="u1", at=START + hours * HOUR))
    assert [(row.not_before - START) // HOUR for row in w.outbox()] == sent
    suppressed = w.decisions("suppressed")
    assert len(suppressed) == len(offsets) - len(sent)
    assert all("frequency cap reached" in row.reason for row in suppressed)


@pytest.mark.parametrize(
    ("sends_at", "sent"),
    [
        # Berlin's 2024-10-27 has 25 hours: 2024-10-26T22:00Z to 2024-10-27T23:00Z.
        pytest.param(
            ["2024-10-26T22:30:00Z", "2024-10-27T22:30:00Z", "2024-10-27T23:30:00Z"],
            ["2024-10-26T22:30:00Z", "2024-10-27T23:30:00Z"],
            id="25-hour-day",
        ),
        # Berlin's 2024-03-31 has 23 hours: 2024-03-30T23:00Z to 2024-03-31T22:00Z.
        pytest.param(
            ["2024-03-30T23:30:00Z", "2024-03-31T21:30:00Z", "2024-03-31T22:30:00Z"],
            ["2024-03-30T23:30:00Z", "2024-03-31T22:30:00Z"],
            id="23-hour-day",
        ),
        pytest.param(
            ["2024-05-06T21:59:00Z", "2024-05-06T22:01:00Z"],
            ["2024-05-06T21:59:00Z", "2024-05-06T22:01:00Z"],
            id="local-midnight-splits",
        ),
    ],
)
def test_calendar_day_cap(tmp_path: Path, sends_at: list[str], sent: list[str]) -> None:
    first = at(sends_at[0])
    w = world(
        tmp_path, "  caps:\n    - {channel: email, max: 1, per: calendar_day}\n", PING_RULE, first
    )
    w.send(person("u1", first - 1))
    for when in sends_at:
        w.advance(at(when))
        w.send(track("Ping", user="u1", at=at(when)))
    assert [row.not_before for row in w.outbox()] == [at(when) for when in sent]


def test_cap_uses_person_zone(tmp_path: Path) -> None:
    """Two sends 3 hours apart are on one day in Berlin but on two days in Los Angeles."""
    first = at("2024-05-06T05:00:00Z")  # 07:00 Berlin, 22:00 the day before in Los Angeles
    w = world(
        tmp_path, "  caps:\n    - {channel: email, max: 1, per: calendar_day}\n", PING_RULE, first
    )
    w.send(person("berlin", first - 1), person("la", first - 1, timezone="America/Los_Angeles"))
    for when in (first, first + 3 * HOUR):
        w.advance(when)
        w.send(track("Ping", user="berlin", at=when), track("Ping", user="la", at=when))
    by_person = [row.payload["user_id"] for row in w.outbox()]
    assert by_person.count("berlin") == 1
    assert by_person.count("la") == 2


def test_cap_counts_sends_of_merged_person(tmp_path: Path) -> None:
    w = world(tmp_path, "  caps:\n    - {channel: email, max: 1, per: 24h}\n", PING_RULE)
    w.send(person("carol", START - HOUR))
    # On a new device, still anonymous, she gets one email; then she logs in there.
    w.send(
        identify(None, anon="dev1", traits={"email": "carol@example.com"}, at=START),
        track("Ping", anon="dev1", at=START + 1),
    )
    w.send(identify("carol", anon="dev1", at=START + 2))
    w.send(track("Ping", user="carol", at=START + 3))

    assert len(w.outbox()) == 1
    assert w.outbox()[0].person_id == w.person_id("carol")
    assert "cap" in w.decisions("suppressed")[0].reason


def test_ignore_caps_rule_bypasses(tmp_path: Path) -> None:
    rules = (
        PING_RULE
        + """\
    - name: receipt
      entry: {event: Ping}
      ignore_caps: true
      reentry: after_exit
      quiet_hours: ignore
      steps:
        - {send: email, template: note}
"""
    )
    w = world(tmp_path, "  caps:\n    - {channel: email, max: 1, per: 24h}\n", rules)
    w.send(person("u1", START - 1))
    w.send(track("Ping", user="u1", at=START), track("Ping", user="u1", at=START + HOUR))
    assert [row.rule for row in w.outbox()] == ["ping", "receipt", "receipt"]


# ---- priorities -------------------------------------------------------------------------

TWO_RULES = """\
    - name: tips
      priority: {tips}
      entry: {{event: Signed Up}}
      quiet_hours: ignore
      steps:
        - {{send: email, template: note}}
    - name: security
      priority: {security}
      entry: {{event: Signed Up}}
      quiet_hours: ignore
      steps:
        - {{send: email, template: note}}
"""


@pytest.mark.parametrize(
    ("tips", "security", "winner"),
    [
        pytest.param(1, 5, "security", id="higher-priority-wins"),
        pytest.param(5, 1, "tips", id="priority-swapped"),
        pytest.param(0, 0, "tips", id="tie-goes-to-plan-order"),
    ],
)
def test_priority_decides_cap(tmp_path: Path, tips: int, security: int, winner: str) -> None:
    rules = TWO_RULES.format(tips=tips, security=security)
    w = world(tmp_path, "  caps:\n    - {channel: email, max: 1, per: calendar_day}\n", rules)
    w.send(person("u1", START - 1), track("Signed Up", user="u1", at=START))
    assert [row.rule for row in w.outbox()] == [winner]
    loser = "tips" if winner == "security" else "security"
    assert [row.rule for row in w.decisions("suppressed")] == [loser]


def test_priority_between_timers_due_together(tmp_path: Path) -> None:
    rules = """\
    - name: low
      priority: 1
      entry: {event: Signed Up}
      quiet_hours: ignore
      steps:
        - wait: 1h
        - {send: email, template: note}
    - name: high
      priority: 9
      entry: {event: Signed Up}
      quiet_hours: ignore
      steps:
        - wait: 1h
        - {send: email, template: note}
"""
    w = world(tmp_path, "  caps:\n    - {channel: email, max: 1, per: 24h}\n", rules)
    w.send(person("u1", START - 1), track("Signed Up", user="u1", at=START))
    w.advance(START + HOUR)
    assert [row.rule for row in w.outbox()] == ["high"]


# ---- quiet hours ------------------------------------------------------------------------

QUIET = '  quiet_hours: {start: "21:00", end: "08:00", channels: [email]}\n'


@pytest.mark.parametrize(
    ("policy", "when", "expected"),
    [
        pytest.param("delay", "2024-05-06T20:30:00Z", "2024-05-07T06:00:00Z", id="delay-overnight"),
        pytest.param(
            "delay", "2024-05-07T03:00:00Z", "2024-05-07T06:00:00Z", id="delay-early-morning"
        ),
        pytest.param(
            "delay", "2024-05-06T12:00:00Z", "2024-05-06T12:00:00Z", id="outside-quiet-hours"
        ),
        pytest.param(
            "delay", "2024-05-06T18:59:59Z", "2024-05-06T18:59:59Z", id="just-before-start"
        ),
        pytest.param("delay", "2024-05-06T19:00:00Z", "2024-05-07T06:00:00Z", id="at-start"),
        pytest.param("delay", "2024-05-07T06:00:00Z", "2024-05-07T06:00:00Z", id="at-end"),
        # the night into spring-forward: 08:00 CEST on 2024-03-31 is 06:00 UTC
        pytest.param("delay", "2024-03-30T22:00:00Z", "2024-03-31T06:00:00Z", id="dst-spring"),
        # the night into fall-back: 08:00 CET on 2024-10-27 is 07:00 UTC
        pytest.param("delay", "2024-10-26T22:00:00Z", "2024-10-27T07:00:00Z", id="dst-fall"),
        pytest.param("skip", "2024-05-06T20:30:00Z", None, id="skip"),
        pytest.param("ignore", "2024-05-06T20:30:00Z", "2024-05-06T20:30:00Z", id="ignore"),
    ],
)
def test_quiet_hours(tmp_path: Path, policy: str, when: str, expected: str | None) -> None:
    rules = f"""\
    - name: nudge
      entry: {{event: Ping}}
      quiet_hours: {policy}
      steps:
        - {{send: email, template: note}}
        - {{send: in_app, template: card}}
"""
    w = world(tmp_path, QUIET, rules, at(when))
    w.send(person("u1", at(when) - 1), track("Ping", user="u1", at=at(when)))
    by_channel = {row.channel: row.not_before for row in w.outbox()}
    assert by_channel.get("email") == (None if expected is None else at(expected))
    assert by_channel["in_app"] == at(when)  # quiet hours apply to email only
    if expected is None:
        assert "quiet hours 21:00-08:00 in Europe/Berlin" in w.decisions("suppressed")[0].reason


def test_quiet_hours_in_person_zone(tmp_path: Path) -> None:
    when = at("2024-05-06T20:30:00Z")  # 22:30 Berlin, 16:30 New York
    rules = """\
    - name: nudge
      entry: {event: Ping}
      steps:
        - {send: email, template: note}
"""
    w = world(tmp_path, QUIET, rules, when)
    w.send(person("ny", when - 1, timezone="America/New_York"), track("Ping", user="ny", at=when))
    assert [row.not_before for row in w.outbox()] == [when]


# ---- one in-app message at a time ------------------------------------------------------

IN_APP_RULES = """\
    - name: tour
      priority: 1
      entry: {event: Signed Up}
      steps:
        - {send: in_app, template: card}
    - name: checklist
      priority: 3
      entry: {event: Signed Up}
      steps:
        - wait: 1h
        - {send: in_app, template: card}
    - name: survey
      priority: 7
      entry: {event: Signed Up}
      steps:
        - wait: 1h
        - {send: in_app, template: card}
"""


def closed(user: str, when: int, key: str, action: str = "Dismissed") -> dict[str, Any]:
    properties = {"message_id": inbox_message_id(key), "rule": key.split(":")[0]}
    return track(f"In-App Message {action}", user=user, at=when, properties=properties)


def test_in_app_one_open_at_a_time(tmp_path: Path) -> None:
    w = world(tmp_path, "  in_app: {expire_after: 2d}\n", IN_APP_RULES)
    w.send(person("u1", START - 1), track("Signed Up", user="u1", at=START))
    w.advance(START + HOUR)
    assert [row.rule for row in w.outbox()] == ["tour"]
    assert [row.rule for row in w.decisions("queued")] == ["survey", "checklist"]

    tour = w.outbox()[0]
    assert tour.payload["expires_at"] == "2024-05-08T10:00:00.000Z"
    w.advance(START + 2 * HOUR)
    w.send(closed("u1", START + 2 * HOUR, tour.key))
    assert [row.rule for row in w.outbox()] == ["tour", "survey"]  # highest priority first
    assert w.outbox()[1].not_before == START + 2 * HOUR

    # nobody closes the survey: it expires and the checklist follows
    w.advance(START + 2 * HOUR + 2 * DAY)
    assert [row.rule for row in w.outbox()] == ["tour", "survey", "checklist"]
    assert w.kinds().count("in_app_closed") == 2


def test_in_app_close_of_other_message_ignored(tmp_path: Path) -> None:
    w = world(tmp_path, "", IN_APP_RULES)
    w.send(person("u1", START - 1), track("Signed Up", user="u1", at=START))
    w.advance(START + HOUR)
    w.send(closed("u1", START + HOUR, "tour:1:someone-else:1", "Completed"))
    assert [row.rule for row in w.outbox()] == ["tour"]


# ---- templates, recipients, webhooks ----------------------------------------------------


def test_template_error_recorded_and_journey_goes_on(tmp_path: Path) -> None:
    rules = """\
    - name: hello
      entry: {event: Signed Up}
      quiet_hours: ignore
      steps:
        - {id: broken, send: email, template: broken}
        - {id: fine, send: email, template: note}
"""
    templates = TEMPLATES + "    broken: {subject: 'Hi {{ traits.first_name }}'}\n"
    text = "triggers:\n  fallback_timezone: UTC\n" + templates + "  rules:\n" + rules
    w = TriggerWorld(tmp_path / "data", plan_with(text), START)
    w.send(person("u1", START - 1), track("Signed Up", user="u1", at=START))
    assert [row.step for row in w.outbox()] == ["fine"]
    errors = w.decisions("template_error")
    assert len(errors) == 1
    assert errors[0].step == "broken"
    assert "first_name" in errors[0].reason
    assert errors[0].reason.startswith("template 'broken' field subject: UndefinedError")


def test_template_escapes_html_only(tmp_path: Path) -> None:
    rules = """\
    - name: hello
      entry: {event: Signed Up}
      quiet_hours: ignore
      steps:
        - {send: email, template: rich}
"""
    settings = """\
  templates:
    rich: {subject: "Hi {{ traits.name }}", html: "<p>Hi {{ traits.name }}</p>"}
"""
    text = "triggers:\n  fallback_timezone: UTC\n" + settings + "  rules:\n" + rules
    w = TriggerWorld(tmp_path / "data", plan_with(text), START)
    w.send(person("u1", START - 1, name="<b>Ada</b>"), track("Signed Up", user="u1", at=START))
    payload = w.outbox()[0].payload
    assert payload["subject"] == "Hi <b>Ada</b>"
    assert payload["html"] == "<p>Hi &lt;b&gt;Ada&lt;/b&gt;</p>"
    assert len(payload["template_version"]) == 12


def test_template_sandbox_blocks_internals(tmp_path: Path) -> None:
    rules = """\
    - name: hello
      entry: {event: Signed Up}
      quiet_hours: ignore
      steps:
        - {send: email, template: sneaky}
"""
    settings = '  templates:\n    sneaky: {text: "{{ traits.__class__.__mro__ }}"}\n'
    text = "triggers:\n  fallback_timezone: UTC\n" + settings + "  rules:\n" + rules
    w = TriggerWorld(tmp_path / "data", plan_with(text), START)
    w.send(person("u1", START - 1), track("Signed Up", user="u1", at=START))
    assert w.outbox() == []
    assert len(w.decisions("template_error")) == 1


def test_template_version_changes_with_source(tmp_path: Path) -> None:
    rules = "    - name: hello\n      entry: {event: Signed Up}\n      steps:\n        - {send: email, template: note}\n"
    first = plan_with("triggers:\n  fallback_timezone: UTC\n" + TEMPLATES + "  rules:\n" + rules)
    second = plan_with(
        "triggers:\n  fallback_timezone: UTC\n"
        + TEMPLATES.replace("for ", "to ")
        + "  rules:\n"
        + rules
    )
    assert first.triggers is not None and second.triggers is not None
    assert first.triggers.templates["note"].version() != second.triggers.templates["note"].version()
    assert first.triggers.templates["card"].version() == second.triggers.templates["card"].version()


def test_email_without_address_suppressed(tmp_path: Path) -> None:
    w = world(tmp_path, "", PING_RULE.replace("template: note", "template: card"))
    w.send(
        identify("u1", traits={"name": "no mail"}, at=START - 1), track("Ping", user="u1", at=START)
    )
    assert w.outbox() == []
    assert "no email trait" in w.decisions("suppressed")[0].reason


def test_send_to_expression(tmp_path: Path) -> None:
    rules = """\
    - name: hello
      entry: {event: Signed Up}
      quiet_hours: ignore
      steps:
        - {send: email, template: note, to: "{{ traits.work_email }}"}
"""
    w = world(tmp_path, "", rules)
    w.send(
        person("u1", START - 1, work_email="ada@work.example"),
        track("Signed Up", user="u1", at=START),
    )
    assert w.outbox()[0].payload["recipient"] == "ada@work.example"


def test_webhook_step(tmp_path: Path) -> None:
    rules = """\
    - name: crm_sync
      entry: {event: Signed Up}
      steps:
        - {webhook: crm}
"""
    w = world(tmp_path, "", rules)
    w.send(person("u1", START - 1, plan="pro"), track("Signed Up", user="u1", at=START))
    row = w.outbox()[0]
    assert (row.channel, row.payload["recipient"]) == ("webhook", "crm")
    assert row.payload["data"]["traits"]["plan"] == "pro"
    assert row.payload["data"]["event"]["name"] == "Signed Up"


# ---- emitted events and traits ----------------------------------------------------------


def test_emit_and_set_trait_go_through_the_log(tmp_path: Path) -> None:
    rules = """\
    - name: nudge
      entry: {event: Signed Up}
      steps:
        - {emit: Nudge Planned, properties: {channel: email, plan: "{{ traits.plan }}"}}
        - {set_trait: nudged, value: true}
    - name: follow_up
      entry: {event: Nudge Planned}
      steps:
        - {send: email, template: note}
"""
    w = world(tmp_path, "", rules)
    w.send(person("u1", START - 1, plan="pro"), track("Signed Up", user="u1", at=START))
    emitted = w.log.connection.execute(
        "SELECT e.type, e.event, e.message_id, s.name FROM events e"
        " JOIN sources s ON s.source_id = e.source_id WHERE s.name = 'headstart' ORDER BY e.seq"
    ).fetchall()
    assert [(kind, name, source) for kind, name, _, source in emitted] == [
        ("track", "Nudge Planned", "headstart"),
        ("identify", None, "headstart"),
    ]
    assert all(message_id.startswith("hs-trigger-") for _, _, message_id, _ in emitted)
    person_id = w.person_id("u1")
    loaded = w.store.load_person(person_id)
    assert loaded is not None
    assert loaded.traits["nudged"].value is True
    assert loaded.event_counts["Nudge Planned"] == 1
    assert [row.rule for row in w.outbox()] == ["follow_up"]

    head = w.log.head()
    w.restart()
    w.process()
    assert w.log.head() == head  # nothing appended twice


def test_in_app_expired_slot_frees_on_next_send(tmp_path: Path) -> None:
    rules = """\
    - name: card
      entry: {event: Ping}
      reentry: after_exit
      steps:
        - {send: in_app, template: card}
"""
    w = world(tmp_path, "  in_app: {expire_after: 1d}\n", rules)
    w.send(person("u1", START - 1), track("Ping", user="u1", at=START))
    assert w.timers() == []  # nothing waits, so no expiry timer is armed
    w.advance(START + DAY + HOUR)
    w.send(track("Ping", user="u1", at=START + DAY + HOUR))
    assert [row.not_before for row in w.outbox()] == [START, START + DAY + HOUR]
    assert w.kinds().count("in_app_closed") == 1
    assert w.kinds().count("queued") == 0
