"""Web Push against a local push endpoint that checks the VAPID token (ES256 JWT, RFC 8292)
and whose subscriber decrypts the aes128gcm body (RFC 8291) with its private key."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from channel_peers import BrowserKeys, HttpPeer, b64url, http_peer, vapid_check
from conftest import DEFAULT_PLAN

from headstart.channels.base import ChannelContext
from headstart.channels.push import PushSubscriptions, generate_vapid_key, topic
from headstart.delivery.channelset import ChannelSet
from headstart.delivery.dispatcher import Dispatcher
from headstart.delivery.outbox import OutboxStore
from headstart.plan.load import parse_plan
from headstart.state.store import StateStore
from headstart.timeutil import ManualClock, parse_iso

T0 = parse_iso("2025-03-01T12:00:00Z")

PUSH_PLAN = DEFAULT_PLAN + (
    "channels:\n"
    "  push:\n"
    "    type: web_push\n"
    "    vapid_private_key_env: VAPID_KEY\n"
    "    subject: mailto:ops@acme.example\n"
    "    ttl_s: 3600\n"
    "    urgency: high\n"
    "    retry: {max_attempts: 2}\n"
)


class Rig:
    def __init__(self, tmp_path: Path, peer: HttpPeer, *, expected_key: str | None = None):
        self.clock = ManualClock(T0)
        self.state_path = tmp_path / "state.sqlite"
        private, self.public_key = generate_vapid_key()
        peer.check = vapid_check(expected_key or self.public_key, peer.url)
        store = StateStore(self.state_path)
        store.bind("user_id", "u1", "p1")
        store.bind("user_id", "u2", "p2")
        store.close()
        self.subscriptions = PushSubscriptions(self.state_path)
        self.outbox = OutboxStore(self.state_path)
        context = ChannelContext(self.state_path, self.clock, {"VAPID_KEY": private})
        self.dispatcher = Dispatcher(
            self.outbox,
            ChannelSet.from_plan(parse_plan(PUSH_PLAN), context),
            self.clock,
            rng=random.Random(3),
        )

    def subscribe(self, user_id: str, endpoint: str) -> BrowserKeys:
        keys = BrowserKeys.generate()
        self.subscriptions.add(user_id, endpoint, keys.p256dh, b64url(keys.auth), T0)
        return keys

    def enqueue(self, key: str, person_id: str = "p1") -> int:
        outbox_id = self.outbox.enqueue(
            idempotency_key=key,
            person_id=person_id,
            rule="stalled",
            step="push",
            channel="push",
            payload={"title": "Almost there", "body": "Invite a teammate", "url": "/team"},
            created_at=T0,
        )
        assert outbox_id is not None
        return outbox_id

    def row(self, outbox_id: int):
        row = self.outbox.get(outbox_id)
        assert row is not None
        return row

    def close(self) -> None:
        self.dispatcher.close()
        self.subscriptions.close()
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


def test_push_encrypted_and_vapid_signed(rig: Rig, peer: HttpPeer):
    keys = rig.subscribe("u1", f"{peer.url}/push/device-1")
    outbox_id = rig.enqueue("stalled:push:p1:9")

    rig.dispatcher.run_until_idle()

    [request] = peer.received()
    assert request.path == "/push/device-1"
    assert request.headers["ttl"] == "3600"
    assert request.headers["urgency"] == "high"
    assert request.headers["topic"] == topic("stalled:push:p1:9")
    assert len(request.headers["topic"]) <= 32
    notification = keys.decrypt(request.body)
    assert notification["title"] == "Almost there"
    assert notification["body"] == "Invite a teammate"
    assert notification["url"] == "/team"
    assert notification["rule"] == "stalled"
    assert notification["tag"] == notification["id"]
    assert rig.row(outbox_id).status == "sent"


def test_push_reaches_every_subscription(rig: Rig, peer: HttpPeer):
    phone = rig.subscribe("u1", f"{peer.url}/push/phone")
    laptop = rig.subscribe("u1", f"{peer.url}/push/laptop")
    rig.subscribe("u2", f"{peer.url}/push/someone-else")
    rig.enqueue("k-both")

    rig.dispatcher.run_until_idle()

    by_path = {request.path: request for request in peer.received()}
    assert sorted(by_path) == ["/push/laptop", "/push/phone"]
    assert phone.decrypt(by_path["/push/phone"].body)["title"] == "Almost there"
    assert laptop.decrypt(by_path["/push/laptop"].body)["title"] == "Almost there"


def test_gone_subscription_removed(rig: Rig, peer: HttpPeer):
    rig.subscribe("u1", f"{peer.url}/push/old")
    peer.respond((410, {}))
    outbox_id = rig.enqueue("k-gone")

    rig.dispatcher.run_until_idle()

    row = rig.row(outbox_id)
    assert row.status == "dead"
    assert "gone" in (row.last_error or "")
    assert rig.subscriptions.of_user("u1") == []


def test_no_subscription_is_dead(rig: Rig, peer: HttpPeer):
    outbox_id = rig.enqueue("k-none")
    rig.dispatcher.run_until_idle()
    row = rig.row(outbox_id)
    assert row.status == "dead"
    assert "no push subscription" in (row.last_error or "")


def test_wrong_vapid_key_rejected(tmp_path: Path, peer: HttpPeer):
    _, other_public = generate_vapid_key()
    rig = Rig(tmp_path, peer, expected_key=other_public)
    try:
        rig.subscribe("u1", f"{peer.url}/push/device")
        outbox_id = rig.enqueue("k-unauthorized")
        rig.dispatcher.run_until_idle()
        row = rig.row(outbox_id)
        assert row.status == "dead"
        assert "401" in (row.last_error or "")
        assert peer.received() == []
    finally:
        rig.close()


def test_push_service_busy_is_retried(rig: Rig, peer: HttpPeer):
    rig.subscribe("u1", f"{peer.url}/push/device")
    peer.respond((429, {"Retry-After": "30"}))
    outbox_id = rig.enqueue("k-busy")
    rig.dispatcher.run_until_idle()
    row = rig.row(outbox_id)
    assert row.status == "failed"
    assert row.next_attempt_at == T0 + 30_000_000
