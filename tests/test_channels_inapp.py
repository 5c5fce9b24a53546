"""The in-app channel end to end: a real ``headstart serve`` whose dispatcher fills the inbox,
read over REST and server-sent events by a client that proves its user id with an HMAC."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from channel_peers import BrowserKeys, http_peer, vapid_check
from conftest import (
    DEFAULT_PLAN,
    HeadstartServer,
    make_data_dir,
    wait_until,
    wait_until_processed,
)

from headstart.channels.inapp import inbox_message_id, user_hash
from headstart.channels.push import generate_vapid_key
from headstart.delivery.outbox import OutboxStore

SECRET = "inapp-identity-secret-for-tests"
INAPP_PLAN = DEFAULT_PLAN + (
    "channels:\n  in_app:\n    type: in_app\n    identity_secret_env: HEADSTART_TEST_INAPP_SECRET\n"
    "  push:\n    type: web_push\n    vapid_private_key_env: HEADSTART_TEST_VAPID_KEY\n"
    "    subject: mailto:ops@acme.example\n"
)
VAPID_PRIVATE, VAPID_PUBLIC = generate_vapid_key()
WAIT_S = 30.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with an in_app channel and two identified users, u1 and u2."""
    root = tmp_path_factory.mktemp("inapp") / "data"
    data = make_data_dir(root, plan=INAPP_PLAN)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEADSTART_TEST_INAPP_SECRET", SECRET)
        patch.setenv("HEADSTART_TEST_VAPID_KEY", VAPID_PRIVATE)
        server = HeadstartServer(data).start()
    try:
        with server.client() as client, server.admin_client() as admin:
            for user in ("u1", "u2"):
                response = client.post(
                    "/v1/identify",
                    json={"userId": user, "traits": {"name": user}},
                    auth=(data.write_key, ""),
                )
                assert response.status_code == 200, response.text
            wait_until_processed(admin)
            persons = {
                user: admin.get(f"/api/persons/{user}").json()["person_id"] for user in ("u1", "u2")
            }
            yield {
                "server": server,
                "data": data,
                "client": client,
                "admin": admin,
                "persons": persons,
            }
    finally:
        server.stop()


def headers(user_id: str, secret: str = SECRET) -> dict[str, str]:
    return {"X-Headstart-User-Id": user_id, "X-Headstart-User-Hash": user_hash(secret, user_id)}


def deliver(running: dict[str, Any], user: str, key: str, **payload: Any) -> str:
    """Enqueue an in-app row for ``user`` and wait until the dispatcher marked it sent."""
    outbox = OutboxStore(running["data"].state_path)
    try:
        outbox_id = outbox.enqueue(
            idempotency_key=key,
            person_id=running["persons"][user],
            rule=payload.pop("rule", "tour"),
            step="tip",
            channel="in_app",
            payload=payload,
            created_at=time.time_ns() // 1000,
        )
        assert outbox_id is not None

        def sent() -> bool:
            row = outbox.get(outbox_id)
            return row is not None and row.status == "sent"

        wait_until(sent, WAIT_S, f"outbox row {outbox_id} was not sent")
    finally:
        outbox.close()
    return inbox_message_id(key)


def logged_events(running: dict[str, Any], name: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(running["data"].log_path)
    try:
        rows = conn.execute("SELECT body FROM events WHERE event = ?", (name,)).fetchall()
    finally:
        conn.close()
    return [orjson.loads(body) for (body,) in rows]


def test_inbox_lists_delivered_message(running):
    message_id = deliver(running, "u1", "tour:tip:u1:1", title="Welcome", body="Start here")
    response = running["client"].get("/api/inapp/messages", headers=headers("u1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [message["id"] for message in body["messages"]] == [message_id]
    assert body["current"]["id"] == message_id
    assert body["current"]["content"]["title"] == "Welcome"
    assert body["current"]["rule"] == "tour"


def test_query_parameters_authenticate(running):
    deliver(running, "u1", "tour:tip:u1:query", title="Q")
    response = running["client"].get(
        "/api/inapp/messages", params={"user_id": "u1", "user_hash": user_hash(SECRET, "u1")}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "sent_headers",
    [
        {},
        {"X-Headstart-User-Id": "u1"},
        {"X-Headstart-User-Id": "u1", "X-Headstart-User-Hash": user_hash("wrong", "u1")},
        {"X-Headstart-User-Id": "u1", "X-Headstart-User-Hash": user_hash(SECRET, "u2")},
    ],
    ids=["none", "no-hash", "wrong-secret", "hash-of-other-user"],
)
def test_wrong_identity_is_401(running, sent_headers):
    response = running["client"].get("/api/inapp/messages", headers=sent_headers)
    assert response.status_code == 401
    assert response.json()["code"] in ("missing_user_hash", "invalid_user_hash")


def test_other_persons_message_is_404(running):
    message_id = deliver(running, "u1", "tour:tip:u1:private", title="Only for u1")
    client = running["client"]

    assert client.get(f"/api/inapp/messages/{message_id}", headers=headers("u2")).status_code == 404
    dismissed = client.post(f"/api/inapp/messages/{message_id}/dismissed", headers=headers("u2"))
    assert dismissed.status_code == 404
    listed = client.get("/api/inapp/messages", headers=headers("u2")).json()
    assert message_id not in [message["id"] for message in listed["messages"]]
    own = client.get(f"/api/inapp/messages/{message_id}", headers=headers("u1"))
    assert own.status_code == 200
    assert own.json()["status"] == "new"


def test_actions_come_back_as_events(running):
    message_id = deliver(running, "u2", "onboarding:tip:u2:1", title="Invite", rule="onboarding")
    client = running["client"]

    shown = client.post(f"/api/inapp/messages/{message_id}/shown", headers=headers("u2"))
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "shown"
    for _ in range(2):
        dismissed = client.post(
            f"/api/inapp/messages/{message_id}/dismissed", headers=headers("u2")
        )
        assert dismissed.status_code == 200
    assert dismissed.json()["status"] == "dismissed"
    completed = client.post(
        f"/api/inapp/messages/{message_id}/completed",
        headers=headers("u2"),
        json={"messageId": "client-made-id-1", "properties": {"button": "invite"}},
    )
    assert completed.status_code == 200

    events = logged_events(running, "In-App Message Dismissed")
    mine = [e for e in events if e["properties"]["message_id"] == message_id]
    assert len(mine) == 1
    assert mine[0]["userId"] == "u2"
    assert mine[0]["properties"]["rule"] == "onboarding"
    [done] = [
        e
        for e in logged_events(running, "In-App Message Completed")
        if e["properties"]["message_id"] == message_id
    ]
    assert done["messageId"] == "client-made-id-1"
    assert done["properties"]["button"] == "invite"
    listed = client.get("/api/inapp/messages", headers=headers("u2")).json()
    assert message_id not in [message["id"] for message in listed["messages"]]


def test_unknown_action_is_404(running):
    message_id = deliver(running, "u1", "tour:tip:u1:action", title="A")
    response = running["client"].post(
        f"/api/inapp/messages/{message_id}/clicked", headers=headers("u1")
    )
    assert response.status_code == 404


def test_current_prefers_priority(running):
    deliver(running, "u2", "p:low", title="low", priority=1)
    high = deliver(running, "u2", "p:high", title="high", priority=9)
    body = running["client"].get("/api/inapp/messages", headers=headers("u2")).json()
    assert body["current"]["id"] == high


def test_sse_delivers_new_message(running):
    server: HeadstartServer = running["server"]
    seen: list[dict[str, Any]] = []
    ready = threading.Event()
    existing = running["client"].get(
        "/api/inapp/messages", params={"all": "true"}, headers=headers("u1")
    )
    last_cursor = max((m["cursor"] for m in existing.json()["messages"]), default=0)

    def listen() -> None:
        params = {"user_id": "u1", "user_hash": user_hash(SECRET, "u1"), "after": last_cursor}
        with (
            httpx.Client(base_url=server.url, timeout=WAIT_S, trust_env=False) as stream_client,
            stream_client.stream("GET", "/api/inapp/stream", params=params) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            ready.set()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen.append(orjson.loads(line[len("data: ") :]))
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(WAIT_S)
    outbox = OutboxStore(running["data"].state_path)
    try:
        # The stream starts after the newest existing cursor, so only this row can arrive.
        outbox.enqueue(
            idempotency_key="tour:tip:u1:sse",
            person_id=running["persons"]["u1"],
            rule="tour",
            step="tip",
            channel="in_app",
            payload={"title": "Live"},
            created_at=time.time_ns() // 1000,
        )
    finally:
        outbox.close()
    thread.join(WAIT_S)
    assert [event["id"] for event in seen] == [inbox_message_id("tour:tip:u1:sse")]
    assert seen[0]["content"]["title"] == "Live"


def test_sse_rejects_wrong_hash(running):
    response = running["client"].get(
        "/api/inapp/stream", params={"user_id": "u1", "user_hash": "00" * 32}
    )
    assert response.status_code == 401


def test_push_subscription_registration(running):
    client = running["client"]
    subscription = {
        "endpoint": "http://127.0.0.1:9/push/abc",
        "keys": {"p256dh": "B" * 87, "auth": "A" * 22},
    }
    unauthenticated = client.post("/api/inapp/push/subscriptions", json=subscription)
    assert unauthenticated.status_code == 401
    created = client.post("/api/inapp/push/subscriptions", json=subscription, headers=headers("u1"))
    assert created.status_code == 201, created.text
    conn = sqlite3.connect(running["data"].state_path)
    try:
        rows = conn.execute("SELECT user_id, endpoint FROM push_subscriptions").fetchall()
    finally:
        conn.close()
    assert rows == [("u1", "http://127.0.0.1:9/push/abc")]
    other = client.request(
        "DELETE",
        "/api/inapp/push/subscriptions",
        json={"endpoint": subscription["endpoint"]},
        headers=headers("u2"),
    )
    assert other.status_code == 404
    removed = client.request(
        "DELETE",
        "/api/inapp/push/subscriptions",
        json={"endpoint": subscription["endpoint"]},
        headers=headers("u1"),
    )
    assert removed.status_code == 204


def test_push_through_registered_subscription(running):
    """The browser flow: fetch the VAPID key, subscribe, register, receive and decrypt."""
    client = running["client"]
    key = client.get("/api/inapp/push/key")
    assert key.status_code == 200
    assert key.json() == {"channel": "push", "public_key": VAPID_PUBLIC}

    with http_peer() as push_service:
        push_service.check = vapid_check(VAPID_PUBLIC, push_service.url)
        browser = BrowserKeys.generate()
        registered = client.post(
            "/api/inapp/push/subscriptions",
            json=browser.subscription(f"{push_service.url}/push/u2-laptop"),
            headers=headers("u2"),
        )
        assert registered.status_code == 201
        outbox = OutboxStore(running["data"].state_path)
        try:
            outbox_id = outbox.enqueue(
                idempotency_key="push:u2:1",
                person_id=running["persons"]["u2"],
                rule="nudge",
                step="push",
                channel="push",
                payload={"title": "Come back", "body": "Your project is waiting"},
                created_at=time.time_ns() // 1000,
            )
            assert outbox_id is not None

            def sent() -> bool:
                row = outbox.get(outbox_id)
                return row is not None and row.status == "sent"

            wait_until(sent, WAIT_S, "the push row was not sent")
        finally:
            outbox.close()
        [request] = push_service.received()
    assert request.path == "/push/u2-laptop"
    assert browser.decrypt(request.body)["title"] == "Come back"


def test_admin_message_log(running):
    deliver(running, "u1", "log:tip:u1:1", title="Logged", rule="logrule")
    admin = running["admin"]
    body = admin.get("/api/messages", params={"rule": "logrule"}).json()
    assert [message["idempotency_key"] for message in body["messages"]] == ["log:tip:u1:1"]
    assert body["messages"][0]["status"] == "sent"
    assert body["counts"]["sent"] >= 1
    by_person = admin.get("/api/messages", params={"person": "u1", "rule": "logrule"}).json()
    assert len(by_person["messages"]) == 1
    assert running["client"].get("/api/messages").status_code == 401
    assert admin.get("/api/messages", params={"status": "lost"}).status_code == 400
    assert admin.get("/api/messages/999999").status_code == 404


def test_not_configured_without_in_app_channel(tmp_path: Path):
    data = make_data_dir(tmp_path / "plain")
    server = HeadstartServer(data).start()
    try:
        with server.client() as client:
            response = client.get("/api/inapp/messages", headers=headers("u1"))
            push_key = client.get("/api/inapp/push/key")
        assert response.status_code == 404
        assert response.json()["code"] == "not_configured"
        assert push_key.status_code == 404
        assert push_key.json()["code"] == "not_configured"
    finally:
        server.stop()


def test_cors_only_for_inapp(running):
    client = running["client"]
    preflight = client.options(
        "/api/inapp/messages",
        headers={
            "Origin": "https://app.acme.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-headstart-user-id, x-headstart-user-hash",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "x-headstart-user-hash" in preflight.headers["access-control-allow-headers"]
    listed = client.get("/api/inapp/messages", headers=headers("u1"))
    assert listed.headers["access-control-allow-origin"] == "*"
    rejected = client.get("/api/inapp/messages")
    assert rejected.status_code == 401
    assert rejected.headers["access-control-allow-origin"] == "*"
    admin = running["admin"].get("/api/messages")
    assert "access-control-allow-origin" not in admin.headers
