"""The webhook channel against a real local HTTP receiver, driven through the dispatcher.

The dispatcher runs in-process on a ManualClock so retry times can be checked exactly.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from channel_peers import HttpPeer, http_peer
from conftest import DEFAULT_PLAN

from headstart.channels.base import ChannelContext
from headstart.channels.webhook import sign, verify_signature
from headstart.delivery.channelset import ChannelSet
from headstart.delivery.dispatcher import Dispatcher, outbound_message
from headstart.delivery.outbox import OutboxStore
from headstart.plan.load import parse_plan
from headstart.timeutil import MICROS_PER_SECOND, ManualClock, parse_iso

T0 = parse_iso("2025-03-01T12:00:00Z")
SECRET = "whsec-test-0123456789"


def webhook_plan(url: str, *, max_attempts: int = 4) -> str:
    return DEFAULT_PLAN + (
        "channels:\n"
        "  hooks:\n"
        "    type: webhook\n"
        f"    url: {url}/default\n"
        "    secret_env: HOOK_SECRET\n"
        "    destinations:\n"
        "      crm:\n"
        f"        url: {url}/crm\n"
        "    retry:\n"
        f"      max_attempts: {max_attempts}\n"
        "      base_delay_s: 10\n"
        "      max_delay_s: 60\n"
        "      jitter: 0.5\n"
    )


class Rig:
    """A dispatcher with the webhook channel, an outbox in tmp_path and a manual clock."""

    def __init__(self, tmp_path: Path, peer: HttpPeer, *, max_attempts: int = 4):
        self.clock = ManualClock(T0)
        self.state_path = tmp_path / "state.sqlite"
        self.outbox = OutboxStore(self.state_path)
        plan = parse_plan(webhook_plan(peer.url, max_attempts=max_attempts))
        context = ChannelContext(self.state_path, self.clock, {"HOOK_SECRET": SECRET})
        self.dispatcher = Dispatcher(
            self.outbox,
            ChannelSet.from_plan(plan, context),
            self.clock,
            rng=random.Random(7),
        )

    def enqueue(self, key: str, **payload: object) -> int:
        outbox_id = self.outbox.enqueue(
            idempotency_key=key,
            person_id="p1",
            rule="welcome",
            step="hook",
            channel="hooks",
            payload=dict(payload),
            created_at=self.clock.now_us(),
        )
        assert outbox_id is not None
        return outbox_id

    def row(self, outbox_id: int):
        row = self.outbox.get(outbox_id)
        assert row is not None
        return row

    def close(self) -> None:
        self.dispatcher.close()
        self.outbox.close()


@pytest.fixture
def peer():
    with http_peer() as running:
        yield running


@pytest.fixture
def rig(tmp_path: Path, peer: HttpPeer):
    made = Rig(tmp_path, peer)
    yield made
    made.close()


def test_webhook_signed_body_and_headers(rig: Rig, peer: HttpPeer):
    outbox_id = rig.enqueue("welcome:hook:p1:1", text="hello", plan="pro")

    rig.dispatcher.run_until_idle()

    [request] = peer.received()
    assert request.path == "/default"
    assert request.headers["idempotency-key"] == "welcome:hook:p1:1"
    assert request.headers["content-type"] == "application/json"
    timestamp = request.headers["x-headstart-timestamp"]
    assert int(timestamp) == T0 // MICROS_PER_SECOND
    assert request.headers["x-headstart-signature"] == sign(SECRET, int(timestamp), request.body)
    assert verify_signature(
        SECRET,
        request.body,
        timestamp,
        request.headers["x-headstart-signature"],
        now_s=T0 / MICROS_PER_SECOND,
    )
    body = orjson.loads(request.body)
    assert body["id"] == "welcome:hook:p1:1"
    assert body["rule"] == "welcome"
    assert body["person_id"] == "p1"
    assert body["payload"] == {"text": "hello", "plan": "pro"}
    row = rig.row(outbox_id)
    assert row.status == "sent"
    assert row.sent_at == T0
    assert row.attempts == 1


@pytest.mark.parametrize(
    ("case", "secret", "body", "timestamp_offset_s", "expected"),
    [
        ("valid", SECRET, b'{"a":1}', 0, True),
        ("wrong secret", "other-secret", b'{"a":1}', 0, False),
        ("changed body", SECRET, b'{"a":2}', 0, False),
        ("too old", SECRET, b'{"a":1}', -301, False),
        ("within tolerance", SECRET, b'{"a":1}', -299, True),
    ],
    ids=["valid", "wrong-secret", "changed-body", "too-old", "within-tolerance"],
)
def test_verify_signature_cases(case, secret, body, timestamp_offset_s, expected):
    signed_at = 1_700_000_000
    signature = sign(SECRET, signed_at, b'{"a":1}')
    now = signed_at - timestamp_offset_s
    assert verify_signature(secret, body, str(signed_at), signature, now_s=now) is expected, case


def test_verify_signature_accepts_rotated_list():
    signature = sign("old", 10, b"x") + "," + sign("new", 10, b"x")
    assert verify_signature("new", b"x", "10", signature, now_s=10)
    assert not verify_signature("third", b"x", "10", signature, now_s=10)


def test_webhook_destination_by_recipient(rig: Rig, peer: HttpPeer):
    rig.enqueue("k-crm", recipient="crm", deal="won")
    rig.dispatcher.run_until_idle()
    [request] = peer.received()
    assert request.path == "/crm"


def test_unknown_recipient_uses_default_url(rig: Rig, peer: HttpPeer):
    rig.enqueue("k-user", recipient="user-42")
    rig.dispatcher.run_until_idle()
    [request] = peer.received()
    assert request.path == "/default"


def test_unknown_destination_without_default_dead(tmp_path: Path, peer: HttpPeer):
    clock = ManualClock(T0)
    outbox = OutboxStore(tmp_path / "state.sqlite")
    plan = parse_plan(
        DEFAULT_PLAN
        + "channels:\n  hooks:\n    type: webhook\n    secret_env: HOOK_SECRET\n"
        + f"    destinations:\n      crm: {{url: {peer.url}/crm}}\n"
    )
    context = ChannelContext(tmp_path / "state.sqlite", clock, {"HOOK_SECRET": SECRET})
    dispatcher = Dispatcher(outbox, ChannelSet.from_plan(plan, context), clock)
    try:
        outbox_id = outbox.enqueue(
            idempotency_key="k-erp",
            person_id="p1",
            rule="r",
            step="s",
            channel="hooks",
            payload={"recipient": "erp"},
            created_at=T0,
        )
        assert outbox_id is not None
        dispatcher.run_until_idle()
        row = outbox.get(outbox_id)
        assert row is not None
        assert row.status == "dead"
        assert "no destination 'erp'" in (row.last_error or "")
        assert peer.received() == []
    finally:
        dispatcher.close()
        outbox.close()


def test_retry_after_header_sets_next_attempt(rig: Rig, peer: HttpPeer):
    peer.respond((503, {"Retry-After": "7"}))
    outbox_id = rig.enqueue("k-busy")

    rig.dispatcher.run_until_idle()
    row = rig.row(outbox_id)
    assert row.status == "failed"
    assert row.next_attempt_at == T0 + 7 * MICROS_PER_SECOND
    assert "503" in (row.last_error or "")

    rig.clock.advance(6 * MICROS_PER_SECOND)
    rig.dispatcher.run_until_idle()
    assert rig.row(outbox_id).status == "failed"

    rig.clock.advance(1 * MICROS_PER_SECOND)
    rig.dispatcher.run_until_idle()
    row = rig.row(outbox_id)
    assert row.status == "sent"
    assert row.attempts == 2
    assert len(peer.received()) == 1


def test_backoff_grows_and_is_jittered(rig: Rig, peer: HttpPeer):
    peer.respond((500, {}), (500, {}), (500, {}))
    outbox_id = rig.enqueue("k-flaky")
    waits = []
    for _ in range(3):
        rig.dispatcher.run_until_idle()
        row = rig.row(outbox_id)
        assert row.status == "failed"
        assert row.next_attempt_at is not None
        waits.append((row.next_attempt_at - rig.clock.now_us()) / MICROS_PER_SECOND)
        rig.clock.set(row.next_attempt_at)
    rig.dispatcher.run_until_idle()
    assert rig.row(outbox_id).status == "sent"
    # base 10 s doubling per attempt, each scaled into [1 - jitter, 1] = [0.5, 1].
    for attempt, wait in enumerate(waits, start=1):
        ceiling = 10 * 2 ** (attempt - 1)
        assert ceiling * 0.5 <= wait <= ceiling, (attempt, wait)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "dead"),
        (401, "dead"),
        (404, "dead"),
        (408, "failed"),
        (429, "failed"),
        (502, "failed"),
    ],
    ids=["400", "401", "404", "408", "429", "502"],
)
def test_status_decides_retry(rig: Rig, peer: HttpPeer, status: int, expected: str):
    peer.respond((status, {}))
    outbox_id = rig.enqueue(f"k-{status}")
    rig.dispatcher.run_until_idle()
    assert rig.row(outbox_id).status == expected


def test_dead_after_max_attempts(tmp_path: Path, peer: HttpPeer):
    rig = Rig(tmp_path, peer, max_attempts=3)
    try:
        peer.respond(*[(503, {"Retry-After": "1"})] * 5)
        outbox_id = rig.enqueue("k-down")
        for _ in range(3):
            rig.dispatcher.run_until_idle()
            rig.clock.advance(2 * MICROS_PER_SECOND)
        rig.dispatcher.run_until_idle()
        row = rig.row(outbox_id)
        assert row.status == "dead"
        assert row.attempts == 3
        assert (row.last_error or "").startswith("gave up after 3 attempts")
        assert rig.outbox.counts()["dead"] == 1
    finally:
        rig.close()


def test_resend_after_crash_keeps_key(tmp_path: Path, peer: HttpPeer):
    """A row claimed by a dispatcher that died is sent again under the same key."""
    first = Rig(tmp_path, peer)
    outbox_id = first.enqueue("k-crash", n=1)
    # The first dispatcher delivers, then dies before it records the outcome.
    [claimed] = first.outbox.claim(first.clock.now_us(), 10, 300 * MICROS_PER_SECOND)
    first.dispatcher.channels.get("hooks").send(outbound_message(claimed))
    assert first.row(outbox_id).status == "sending"

    second = Rig(tmp_path, peer)
    try:
        assert second.dispatcher.recover() == 1
        second.dispatcher.run_until_idle()
        assert second.row(outbox_id).status == "sent"
        assert second.row(outbox_id).attempts == 2
        keys = peer.keys()
        assert keys == {"k-crash": 2}
        bodies = {request.body for request in peer.received()}
        assert len(bodies) == 1
    finally:
        second.close()
        first.close()
