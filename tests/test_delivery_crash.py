"""SIGKILL while messages are in flight: after a restart none is lost and none is sent twice.

Outbox rows for an SMTP channel and a webhook channel are sent by the server's dispatcher to
a local aiosmtpd server and a local HTTP receiver, both slowed down so that sends are in
flight when the kill comes. Afterwards every row is sent, each receiver saw exactly one
distinct Message-ID or Idempotency-Key per row, and only rows that were in flight at the
kill may have reached a receiver twice (with the same key).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from channel_peers import HttpPeer, SmtpPeer, http_peer, smtp_peer
from conftest import DEFAULT_PLAN, HeadstartServer, is_running, make_data_dir, wait_until

from headstart.delivery.outbox import OutboxStore

ROWS_PER_CHANNEL = 80
KILL_AFTER_SENT = 30
WAIT_S = 120.0


def crash_plan(smtp_port: int, webhook_url: str) -> str:
    return DEFAULT_PLAN + (
        "channels:\n"
        "  email:\n"
        "    type: smtp\n"
        "    host: 127.0.0.1\n"
        f"    port: {smtp_port}\n"
        "    security: none\n"
        "    from: hello@acme.example\n"
        "  hooks:\n"
        "    type: webhook\n"
        f"    url: {webhook_url}/hook\n"
        "    secret_env: HEADSTART_TEST_HOOK_SECRET\n"
    )


def enqueue_all(state_path: Path) -> list[str]:
    outbox = OutboxStore(state_path)
    keys = []
    now = time.time_ns() // 1000
    try:
        for index in range(ROWS_PER_CHANNEL):
            for channel in ("email", "hooks"):
                key = f"crash:{channel}:person-{index}:1"
                payload = {"to": f"user{index}@example.org", "subject": "Hi", "text": "x"}
                outbox_id = outbox.enqueue(
                    idempotency_key=key,
                    person_id=f"person-{index}",
                    rule="crash",
                    step=channel,
                    channel=channel,
                    payload=payload if channel == "email" else {"n": index},
                    created_at=now,
                )
                assert outbox_id is not None
                keys.append(key)
    finally:
        outbox.close()
    return keys


def statuses(state_path: Path) -> dict[str, list[tuple[str, str | None]]]:
    """Return (idempotency key, provider message id) per status, read without the server."""
    conn = sqlite3.connect(state_path, timeout=30)
    try:
        rows = conn.execute(
            "SELECT status, idempotency_key, provider_message_id FROM outbox"
        ).fetchall()
    finally:
        conn.close()
    found: dict[str, list[tuple[str, str | None]]] = {}
    for status, key, provider_id in rows:
        found.setdefault(status, []).append((key, provider_id))
    return found


@pytest.fixture
def peers():
    with smtp_peer() as smtp, http_peer() as webhook:
        smtp.mailbox.delay_s = 0.02
        webhook.delay_s = 0.02
        yield smtp, webhook


def kill_server_group(server: HeadstartServer) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.process.wait()  # type: ignore[union-attr]


def kill_dispatcher(server: HeadstartServer) -> None:
    [pid] = server.dispatcher_pids()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not is_running(pid), 10, "the killed dispatcher is still running")


@pytest.mark.parametrize("victim", ["server-group", "dispatcher"])
def test_sigkill_in_flight(tmp_path: Path, peers, monkeypatch, victim: str):
    smtp, webhook = peers
    smtp_peer_: SmtpPeer = smtp
    webhook_peer: HttpPeer = webhook
    monkeypatch.setenv("HEADSTART_TEST_HOOK_SECRET", "crash-secret")
    data = make_data_dir(tmp_path / "data", plan=crash_plan(smtp_peer_.port, webhook_peer.url))
    server = HeadstartServer(data).start()
    try:
        keys = enqueue_all(data.state_path)

        def mid_flight() -> bool:
            found = statuses(data.state_path)
            return len(found.get("sent", [])) >= KILL_AFTER_SENT and bool(found.get("sending"))

        wait_until(mid_flight, WAIT_S, "the dispatcher never had sends in flight")
        if victim == "server-group":
            kill_server_group(server)
            at_kill = statuses(data.state_path)
            server = HeadstartServer(data).start()
        else:
            kill_dispatcher(server)
            at_kill = statuses(data.state_path)
            # The server's supervisor starts a new dispatcher on its own.

        def all_sent() -> bool:
            return len(statuses(data.state_path).get("sent", [])) == len(keys)

        wait_until(all_sent, WAIT_S, f"not every row was sent; {statuses(data.state_path)}")
    finally:
        server.stop()
    assert "crash-secret" not in server.output()

    in_flight = {key for key, _ in at_kill.get("sending", [])}
    recorded_sent = {key for key, _ in at_kill.get("sent", [])}
    assert in_flight, "nothing was in flight at the kill, so the test proved nothing"

    email_keys = {key for key in keys if ":email:" in key}
    hook_keys = {key for key in keys if ":hooks:" in key}
    final = statuses(data.state_path)
    message_id_of = {key: provider for key, provider in final["sent"]}

    received_ids = smtp_peer_.message_ids()
    assert set(received_ids) == {message_id_of[key] for key in email_keys}
    received_keys = webhook_peer.keys()
    assert set(received_keys) == hook_keys

    repeated = {key for key, count in received_keys.items() if count > 1}
    repeated |= {key for key in email_keys if received_ids[message_id_of[key]] > 1}
    assert repeated <= in_flight, "a row recorded as sent before the kill was sent again"
    assert not repeated & recorded_sent
    total = sum(received_ids.values()) + sum(received_keys.values())
    assert total - len(keys) <= len(in_flight)
    assert set(final) == {"sent"}
