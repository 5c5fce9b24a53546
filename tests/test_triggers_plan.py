"""Validation of the plan's ``triggers:`` section: every problem named with its line."""

from __future__ import annotations

import pytest

from headstart.errors import PlanError
from headstart.plan.load import parse_plan, plan_hash
from headstart.plan.triggers import parse_duration
from tests.helpers.triggers import BASE_PLAN, plan_with

RULE = """\
triggers:
  fallback_timezone: Europe/Berlin
  templates:
    note: {text: "hi"}
  rules:
    - name: r
      entry: {event: Signed Up}
      steps:
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PlanError) as caught:
        parse_plan(BASE_PLAN + text, "plan.yaml")
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            RULE + "        - {send: email, template: missing}\n",
            "triggers.rules[0].steps[0].template: template 'missing' is not defined",
            id="unknown-template",
        ),
        pytest.param(
            RULE + "        - {send: sms, template: note}\n",
            "triggers.rules[0].steps[0].send: channel 'sms' is not configured under channels",
            id="unknown-channel",
        ),
        pytest.param(
            RULE + "        - {webhook: crm, channel: email}\n",
            "channel 'email' has type 'smtp'; expected 'webhook'",
            id="webhook-on-email-channel",
        ),
        pytest.param(
            RULE + "        - {webhook: nowhere}\n",
            "webhook destination 'nowhere' is not listed under channels.webhook.destinations",
            id="unknown-webhook-destination",
        ),
        pytest.param(
            RULE + "        - {wait: 2 hours}\n",
            "expected a duration such as 90s, 15m, 2h, 3d or 1w; got '2 hours'",
            id="bad-duration",
        ),
        pytest.param(RULE + "        - {wait: 0s}\n", "must be above zero", id="zero-duration"),
        pytest.param(
            RULE + '        - {wait_until: "25:00"}\n',
            "expected a local time of day as HH:MM",
            id="bad-local-time",
        ),
        pytest.param(
            RULE + "        - {wait_for: {event: X}}\n",
            "a wait_for step needs a timeout",
            id="wait-for-without-timeout",
        ),
        pytest.param(
            RULE + "        - {send: email, template: note, timeout: 1d}\n",
            "'timeout' does not belong in a 'send' step; remove it",
            id="key-of-another-kind",
        ),
        pytest.param(
            RULE + "        - {send: email, wait: 1d, template: note}\n",
            "each step needs exactly one of wait, wait_until, wait_for, send, set_trait, webhook, "
            "emit, if; got wait, send",
            id="two-kinds-in-one-step",
        ),
        pytest.param(
            RULE + "        - {id: a, send: email, template: note}\n        - {id: a, wait: 1h}\n",
            "step id 'a' is used twice in this rule",
            id="duplicate-step-id",
        ),
        pytest.param(
            RULE + "        - {set_trait: nudged}\n",
            "a set_trait step needs a value",
            id="set-trait-without-value",
        ),
        pytest.param(
            RULE + "        - if: [{milestone: nope}]\n          then: [{wait: 1h}]\n",
            "triggers.rules[0].steps[0].if[0].milestone: 'nope' is not a milestone",
            id="unknown-milestone",
        ),
        pytest.param(
            RULE + "        - if: [{segment: nobody}]\n          then: [{wait: 1h}]\n",
            "segment 'nobody' is not defined under triggers.segments or segments",
            id="unknown-segment",
        ),
        pytest.param(
            RULE + "        - if: [{count: Ping}]\n          then: [{wait: 1h}]\n",
            "a count condition needs 'is'",
            id="count-without-is",
        ),
        pytest.param(
            RULE.replace("{event: Signed Up}", "{event: Signed Up, stalled_for: 2d}")
            + "        - {wait: 1h}\n",
            "each entry needs exactly one of event, after, stalled_for, trait, segment; "
            "got event, stalled_for",
            id="two-entry-kinds",
        ),
        pytest.param(
            RULE.replace("{event: Signed Up}", "{after: {event: A}, within: 1h}")
            + "        - {wait: 1h}\n",
            "an absence entry needs missing",
            id="absence-without-missing",
        ),
        pytest.param(
            RULE.replace("Europe/Berlin", "Mars/Olympus") + "        - {wait: 1h}\n",
            "'Mars/Olympus' is not an IANA time zone",
            id="bad-zone",
        ),
        pytest.param(
            RULE.replace('{text: "hi"}', '{text: "{{ traits.name "}') + "        - {wait: 1h}\n",
            "triggers.templates.note: text: line 1: unexpected end of template",
            id="template-syntax",
        ),
        pytest.param(
            RULE.replace('{text: "hi"}', '{subject: "Hi {{ trait.name }}", text: "{{ rule }}"}')
            + "        - {wait: 1h}\n",
            "triggers.templates.note: subject: unknown variable 'trait'; a template can read "
            "event, key, onboarding, person, rule, traits",
            id="template-unknown-variable",
        ),
        pytest.param(
            RULE.replace("  rules:", '  quiet_hours: {start: "08:00", end: "08:00"}\n  rules:')
            + "        - {wait: 1h}\n",
            "start and end are equal",
            id="empty-quiet-hours",
        ),
        pytest.param(
            RULE.replace(
                "  rules:",
                '  quiet_hours: {start: "21:00", end: "08:00", channels: [emial]}\n  rules:',
            )
            + "        - {wait: 1h}\n",
            "triggers.quiet_hours.channels[0]: channel 'emial' is not configured under channels",
            id="quiet-hours-unknown-channel",
        ),
        pytest.param(
            RULE.replace("  rules:", "  caps: [{channel: sms, max: 1, per: 24h}]\n  rules:")
            + "        - {wait: 1h}\n",
            "triggers.caps[0].channel: channel 'sms' is not configured under channels",
            id="cap-unknown-channel",
        ),
        pytest.param(
            RULE.replace("  rules:", "  caps: [{max: 1, per: weekly}]\n  rules:")
            + "        - {wait: 1h}\n",
            "triggers.caps[0].per",
            id="bad-cap-window",
        ),
        pytest.param(
            RULE
            + "        - {wait: 1h}\n"
            + RULE.split("  rules:\n")[1]
            + "        - {wait: 1h}\n",
            "rule name 'r' is used twice",
            id="duplicate-rule",
        ),
        pytest.param(
            "segments:\n  - name: recent\n    conditions: [{did: Ping, within: 7d}]\n"
            + RULE.replace("{event: Signed Up}", "{segment: recent}")
            + "        - {wait: 1h}\n",
            "segment 'recent' filters events by 'where' or 'within'",
            id="shared-segment-not-evaluable",
        ),
    ],
)
def test_invalid_triggers(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in problem for problem in found), found


def test_problem_has_line_number() -> None:
    text = (
        RULE + "        - {send: email, template: note}\n        - {send: email, template: gone}\n"
    )
    found = problems(text)
    line = (BASE_PLAN + text).splitlines().index("        - {send: email, template: gone}") + 1
    assert found == [
        f"plan.yaml:{line}: triggers.rules[0].steps[1].template: template 'gone' is not defined "
        "under triggers.templates (note)"
    ]


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        pytest.param("90s", 90_000_000, id="seconds"),
        pytest.param("15m", 900_000_000, id="minutes"),
        pytest.param("1.5h", 5_400_000_000, id="fraction"),
        pytest.param("2d", 172_800_000_000, id="days"),
        pytest.param("1w", 604_800_000_000, id="weeks"),
    ],
)
def test_parse_duration(text: str, micros: int) -> None:
    assert parse_duration(text) == micros


def test_trigger_changes_do_not_rebuild_state() -> None:
    rules = RULE + "        - {send: email, template: note}\n"
    first = plan_with(rules)
    second = plan_with(rules.replace('{text: "hi"}', '{text: "hello"}'))
    assert plan_hash(first) == plan_hash(second)


def test_valid_plan_with_every_kind() -> None:
    plan = plan_with(EVERY_KIND)
    assert plan.triggers is not None
    assert [rule.entry.kind for rule in plan.triggers.rules] == [
        "event",
        "absence",
        "stall",
        "trait",
        "segment",
    ]


EVERY_KIND = """\
segments:
  - name: engaged
    conditions: [{did: Report Viewed, at_least: 3}, {milestone: created_project}]
triggers:
  fallback_timezone: Europe/Berlin
  quiet_hours: {start: "21:00", end: "08:00", channels: [email, push]}
  caps:
    - {channel: email, max: 2, per: 24h}
    - {channel: "*", max: 4, per: calendar_day}
  in_app: {channel: in_app, expire_after: 3d}
  templates:
    note: {subject: "Hi", text: "{{ traits.name | default('there') }}"}
  segments:
    pros: [{trait: plan, is: pro}]
  rules:
    - name: one
      entry: {event: Signed Up, where: {plan: pro}}
      steps:
        - {send: email, template: note}
    - name: two
      priority: 5
      entry:
        after: {event: Import Started}
        missing: {event: Import Finished}
        within: 2h
        key: properties.import_id
      reentry: {cooldown: 7d}
      steps:
        - wait_for: {event: Import Finished, same_key: true}
          timeout: 1d
          on_timeout:
            - {send: push, template: note}
    - name: three
      entry: {stalled_for: 3d}
      lateness: {after: 1h, policy: next_slot}
      steps:
        - {wait_until: "09:00"}
        - if: [{segment: pros}]
          then: [{send: in_app, template: note}]
          else: [{webhook: crm}]
    - name: four
      entry: {trait: pql_score, from: {lt: 50}, to: {gte: 50}}
      exit: {events: [{event: Account Deleted}]}
      goal: {conditions: [{activated: true}]}
      steps:
        - {set_trait: pql_notified, value: true}
        - {emit: PQL Reached, properties: {score: "{{ traits.pql_score }}"}}
    - name: five
      entry: {segment: engaged}
      quiet_hours: skip
      ignore_caps: true
      reentry: after_exit
      steps:
        - {send: email, template: note}
"""
