"""The SMTP email channel against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from channel_peers import SmtpPeer, smtp_peer
from conftest import DEFAULT_PLAN

from headstart.channels.base import ChannelContext
from headstart.delivery.channelset import ChannelSet
from headstart.delivery.dispatcher import Dispatcher, outbound_message
from headstart.delivery.outbox import OutboxStore
from headstart.plan.load import parse_plan
from headstart.timeutil import MICROS_PER_SECOND, ManualClock, parse_iso

T0 = parse_iso("2025-03-01T12:00:00Z")


def email_plan(port: int) -> str:
    return DEFAULT_PLAN + (
        "channels:\n"
        "  email:\n"
        "    type: smtp\n"
        "    host: 127.0.0.1\n"
        f"    port: {port}\n"
        "    security: none\n"
        "    from: Acme Onboarding <hello@acme.example>\n"
        "    reply_to: support@acme.example\n"
        "    unsubscribe:\n"
        "      mailto: unsubscribe@acme.example\n"
        "      url: https://acme.example/unsubscribe?person={person_id}&email={email}\n"
        "    retry: {max_attempts: 3, base_delay_s: 5}\n"
    )


class Rig:
    def __init__(self, tmp_path: Path, smtp: SmtpPeer):
        self.clock = ManualClock(T0)
        self.outbox = OutboxStore(tmp_path / "state.sqlite")
        context = ChannelContext(tmp_path / "state.sqlite", self.clock, {})
        plan = parse_plan(email_plan(smtp.port))
        self.dispatcher = Dispatcher(
            self.outbox, ChannelSet.from_plan(plan, context), self.clock, rng=random.Random(1)
        )

    def enqueue(self, key: str, **payload: object) -> int:
        outbox_id = self.outbox.enqueue(
            idempotency_key=key,
            person_id="person 1",
            rule="stalled",
            step="nudge",
            channel="email",
            payload=dict(payload),
            created_at=self.clock.now_us(),
        )
        assert outbox_id is not None
        return outbox_id

    def status(self, outbox_id: int) -> str:
        row = self.outbox.get(outbox_id)
        assert row is not None
        return row.status

    def close(self) -> None:
        self.dispatcher.close()
        self.outbox.close()


@pytest.fixture
def smtp():
    with smtp_peer() as running:
        yield running


@pytest.fixture
def rig(tmp_path: Path, smtp: SmtpPeer):
    made = Rig(tmp_path, smtp)
    yield made
    made.close()


def test_email_multipart_with_headers(rig: Rig, smtp: SmtpPeer):
    outbox_id = rig.enqueue(
        "stalled:nudge:p1:4",
        to="ada@example.org",
        subject="Finish your first project",
        text="Hi Ada, one step left.",
        html="<p>Hi Ada, <b>one step</b> left.</p>",
    )
    rig.dispatcher.run_until_idle()

    [message] = smtp.messages
    assert message.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
    assert parts["text/plain"].strip() == "Hi Ada, one step left."
    assert "<b>one step</b>" in parts["text/html"]
    assert message["From"] == "Acme Onboarding <hello@acme.example>"
    assert message["To"] == "ada@example.org"
    assert message["Reply-To"] == "support@acme.example"
    assert message["Subject"] == "Finish your first project"
    assert message["List-Unsubscribe"] == (
        "<mailto:unsubscribe@acme.example?subject=unsubscribe>, "
        "<https://acme.example/unsubscribe?person=person%201&email=ada%40example.org>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"].endswith("@acme.example>")
    row = rig.outbox.get(outbox_id)
    assert row is not None
    assert row.status == "sent"
    assert row.provider_message_id == message["Message-ID"]


def test_html_only_gets_text_part(rig: Rig, smtp: SmtpPeer):
    rig.enqueue(
        "k-html",
        to="bob@example.org",
        subject="Hello",
        html="<html><head><style>p{}</style></head><body><p>Line one</p><p>Line two</p></body>",
    )
    rig.dispatcher.run_until_idle()
    [message] = smtp.messages
    text = message.get_body(("plain",))
    assert text is not None
    assert text.get_content().splitlines() == ["Line one", "Line two"]


def test_same_key_same_message_id(rig: Rig, smtp: SmtpPeer):
    """Sending a row twice (crash before recording) gives the receiver one Message-ID."""
    outbox_id = rig.enqueue("k-twice", to="c@example.org", subject="Once", text="body")
    [claimed] = rig.outbox.claim(rig.clock.now_us(), 10, 300 * MICROS_PER_SECOND)
    rig.dispatcher.channels.get("email").send(outbound_message(claimed))
    assert rig.dispatcher.recover() == 1
    rig.dispatcher.run_until_idle()

    assert rig.status(outbox_id) == "sent"
    assert len(smtp.messages) == 2
    assert len(smtp.message_ids()) == 1


def test_distinct_keys_distinct_message_ids(rig: Rig, smtp: SmtpPeer):
    for index in range(3):
        rig.enqueue(f"k-{index}", to="d@example.org", subject="s", text="t")
    rig.dispatcher.run_until_idle()
    assert len(smtp.message_ids()) == 3


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("451 4.3.0 try again later", "failed"), ("554 5.6.0 rejected", "dead")],
    ids=["4xx-retried", "5xx-dead"],
)
def test_smtp_reply_decides_retry(rig: Rig, smtp: SmtpPeer, reply: str, expected: str):
    smtp.fail_next(reply)
    outbox_id = rig.enqueue("k-reply", to="e@example.org", subject="s", text="t")
    rig.dispatcher.run_until_idle()
    assert rig.status(outbox_id) == expected


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"subject": "s", "text": "t"}, "no valid email address"),
        ({"to": "not-an-address", "subject": "s", "text": "t"}, "no valid email address"),
        ({"to": "f@example.org", "text": "t"}, "no 'subject'"),
        ({"to": "f@example.org", "subject": "s"}, "neither 'text' nor 'html'"),
    ],
    ids=["no-recipient", "bad-recipient", "no-subject", "no-body"],
)
def test_unusable_payload_is_dead(rig: Rig, smtp: SmtpPeer, payload, error):
    outbox_id = rig.enqueue("k-bad", **payload)
    rig.dispatcher.run_until_idle()
    row = rig.outbox.get(outbox_id)
    assert row is not None
    assert row.status == "dead"
    assert error in (row.last_error or "")
    assert smtp.messages == []


def test_unreachable_server_is_retried(tmp_path: Path):
    with smtp_peer() as stopped:
        port = stopped.port
    rig = Rig(tmp_path, stopped)
    try:
        outbox_id = rig.enqueue("k-down", to="g@example.org", subject="s", text="t")
        rig.dispatcher.run_until_idle()
        row = rig.outbox.get(outbox_id)
        assert row is not None
        assert row.status == "failed"
        assert f"127.0.0.1:{port}" in (row.last_error or "")
    finally:
        rig.close()
