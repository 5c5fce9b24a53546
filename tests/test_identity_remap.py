"""A rebuild that changes person ids moves trigger and delivery rows to the new ids.

The case: alice signs up on a shared kiosk, so her person is created by the kiosk's anonymous
id. An admin separates the kiosk from alice, and bob logs in on the kiosk next. Her message must
stay hers, bob must not see it, and a rule she already went through must not send again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.channels.inbox import InboxStore
from headstart.errors import Overloaded
from headstart.identity.admin import merge_record
from headstart.plan.load import parse_plan
from headstart.timeutil import MICROS_PER_HOUR
from tests.helpers.pipeline import identify, track
from tests.helpers.triggers import BASE_PLAN, TriggerWorld, at, plan_with

START = at("2024-05-06T10:00:00Z")
HOUR = MICROS_PER_HOUR
KIOSK_APART = [(("anonymous_id", "kiosk"), ("user_id", "alice"))]

RULES = """\
triggers:
  fallback_timezone: UTC
  templates:
    hello: {title: "Welcome {{ traits.name }}"}
  rules:
    - name: welcome
      entry: {event: Signed Up}
      steps:
        - {send: in_app, template: hello}
"""


def deliver_outbox(w: TriggerWorld, inbox: InboxStore) -> None:
    """Put every outbox row in the inbox under the row's person, as the dispatcher does."""
    rows = w.store.conn.execute(
        "SELECT outbox_id, idempotency_key, person_id, rule, step FROM outbox"
    ).fetchall()
    for outbox_id, key, person_id, rule, step in rows:
        inbox.deliver(
            message_id=f"msg-{outbox_id}",
            idempotency_key=key,
            outbox_id=outbox_id,
            person_id=person_id,
            rule=rule,
            step=step,
            priority=0,
            content={"title": "Welcome Alice"},
            delivered_at=START,
            expires_at=None,
        )


def titles(inbox: InboxStore, user_id: str) -> list[str]:
    return [m.content["title"] for m in inbox.messages(inbox.person_ids(user_id), START + HOUR)]


@pytest.fixture
def kiosk(tmp_path: Path) -> TriggerWorld:
    """Alice on the kiosk, welcomed in-app, before anyone separates the two ids."""
    w = TriggerWorld(tmp_path / "data", plan_with(RULES), START)
    w.send(
        track("Opened App", anon="kiosk", at=START),
        identify("alice", anon="kiosk", traits={"name": "Alice"}, at=START + 1),
        track("Signed Up", user="alice", at=START + 2),
    )
    return w


def separate(w: TriggerWorld) -> None:
    assert w.processor.use_plan(w.plan, KIOSK_APART)
    w.process()


def test_messages_follow_the_user_after_separation(kiosk: TriggerWorld) -> None:
    inbox = InboxStore(kiosk.store.path)
    deliver_outbox(kiosk, inbox)
    assert titles(inbox, "alice") == ["Welcome Alice"]

    separate(kiosk)
    kiosk.send(identify("bob", anon="kiosk", at=START + HOUR))

    assert titles(inbox, "alice") == ["Welcome Alice"]
    assert titles(inbox, "bob") == []
    alice = kiosk.person_id("alice")
    assert [row.person_id for row in kiosk.outbox()] == [alice]
    assert {d.person_id for d in kiosk.decisions()} == {alice}
    inbox.close()


def test_rule_does_not_send_again_after_separation(kiosk: TriggerWorld) -> None:
    separate(kiosk)
    kiosk.send(track("Signed Up", user="alice", at=START + HOUR))

    assert len(kiosk.outbox()) == 1
    assert [rule for rule, _, _ in kiosk.enrollments()] == ["welcome"]


def test_inbox_waits_while_rows_have_not_moved(kiosk: TriggerWorld) -> None:
    inbox = InboxStore(kiosk.store.path)
    assert kiosk.processor.use_plan(kiosk.plan, KIOSK_APART)

    with pytest.raises(Overloaded):
        inbox.person_ids("alice")
    kiosk.process()
    assert inbox.person_ids("alice") == [kiosk.person_id("alice")]
    inbox.close()


def test_rebuild_without_identity_change_moves_nothing(kiosk: TriggerWorld) -> None:
    before = kiosk.outbox()
    longer_window = BASE_PLAN.replace("within_days: 14", "within_days: 21") + RULES
    assert kiosk.processor.use_plan(parse_plan(longer_window))
    kiosk.process()

    assert kiosk.outbox() == before
    assert kiosk.store.get_meta("rebuild_remap_at") is None


def test_separating_an_admin_merge_splits_rows_by_event(tmp_path: Path) -> None:
    rules = RULES.replace("send: in_app, template: hello", "send: email, template: hello")
    w = TriggerWorld(tmp_path / "data", plan_with(rules), START)
    w.send(
        identify("u1", anon="dev-a", traits={"email": "u1@example.com", "name": "U1"}, at=START),
        track("Signed Up", user="u1", at=START + 1),
        identify(
            "u4", anon="dev-c", traits={"email": "u4@example.com", "name": "U4"}, at=START + 2
        ),
        track("Signed Up", user="u4", at=START + 3),
    )
    merge = merge_record(("user_id", "u4"), ("user_id", "u1"), "same customer", START + HOUR)
    w.log.append([merge])
    w.process()
    assert w.person_id("u1") == w.person_id("u4")

    assert w.processor.use_plan(w.plan, [(("user_id", "u4"), ("user_id", "u1"))])
    w.process()

    u1, u4 = w.person_id("u1"), w.person_id("u4")
    assert u1 != u4
    recipients = {row.payload["recipient"]: row.person_id for row in w.outbox()}
    assert recipients == {"u1@example.com": u1, "u4@example.com": u4}
    assert {d.person_id for d in w.decisions() if d.kind == "entered"} == {u1, u4}
    owners = w.store.conn.execute("SELECT person_id FROM enrollments ORDER BY enrollment_id")
    assert [row[0] for row in owners] == [u1, u4]
