"""Events in, messages out: trigger rules enqueue outbox rows and the dispatcher delivers them
to a local SMTP server and webhook receiver, also across a SIGKILL of the whole server."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
from channel_peers import http_peer, smtp_peer
from conftest import DEFAULT_PLAN, HeadstartServer, make_data_dir, wait_until

pytest.importorskip("headstart.triggers.engine", reason="needs the trigger engine")

USERS = 40
WAIT_S = 120.0


def pipeline_plan(smtp_port: int, webhook_url: str) -> str:
    return DEFAULT_PLAN + (
        "channels:\n"
        "  email:\n"
        "    type: smtp\n"
        "    host: 127.0.0.1\n"
        f"    port: {smtp_port}\n"
        "    security: none\n"
        "    from: Acme <hello@acme.example>\n"
        "  hooks:\n"
        "    type: webhook\n"
        f"    url: {webhook_url}/hook\n"
        "    secret_env: HEADSTART_TEST_PIPELINE_SECRET\n"
        "triggers:\n"
        "  fallback_timezone: UTC\n"
        "  templates:\n"
        '    welcome: {subject: "Welcome {{ traits.name }}", text: "Hi {{ traits.name }}",'
        ' html: "<p>Hi {{ traits.name }}</p>"}\n'
        "  rules:\n"
        "    - name: welcome\n"
        "      entry: {event: Signed Up}\n"
        "      quiet_hours: ignore\n"
        "      steps:\n"
        "        - {send: email, template: welcome}\n"
        "        - {send: hooks, template: welcome}\n"
    )


def outbox_statuses(state_path: Path) -> dict[str, int]:
    conn = sqlite3.connect(state_path, timeout=30)
    try:
        rows = conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return {str(status): int(count) for status, count in rows}


def send_signups(client, write_key: str, users: range) -> None:
    for index in users:
        batch = [
            {
                "type": "identify",
                "userId": f"user-{index}",
                "traits": {"name": f"User {index}", "email": f"user{index}@example.org"},
                "messageId": f"pipeline-identify-{index}",
            },
            {
                "type": "track",
                "userId": f"user-{index}",
                "event": "Signed Up",
                "messageId": f"pipeline-signup-{index}",
            },
        ]
        response = client.post("/v1/batch", json={"batch": batch}, auth=(write_key, ""))
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("crash", [False, True], ids=["steady", "sigkill-midway"])
def test_signup_rule_delivers_once(tmp_path: Path, monkeypatch, crash: bool):
    monkeypatch.setenv("HEADSTART_TEST_PIPELINE_SECRET", "pipeline-secret")
    with smtp_peer() as smtp, http_peer() as webhook:
        smtp.mailbox.delay_s = 0.01
        webhook.delay_s = 0.01
        data = make_data_dir(tmp_path / "data", plan=pipeline_plan(smtp.port, webhook.url))
        server = HeadstartServer(data).start()
        try:
            with server.client() as client:
                send_signups(client, data.write_key, range(USERS // 2))
            if crash:
                wait_until(
                    lambda: outbox_statuses(data.state_path).get("sent", 0) >= 4,
                    WAIT_S,
                    "nothing was sent before the kill",
                )
                os.killpg(server.pid, signal.SIGKILL)
                server.process.wait()  # type: ignore[union-attr]
                server = HeadstartServer(data).start()
            with server.client() as client:
                send_signups(client, data.write_key, range(USERS // 2, USERS))

            def all_sent() -> bool:
                return outbox_statuses(data.state_path) == {"sent": 2 * USERS}

            wait_until(all_sent, WAIT_S, f"outbox: {outbox_statuses(data.state_path)}")
        finally:
            server.stop()

        message_ids = smtp.message_ids()
        assert len(message_ids) == USERS
        recipients = sorted(str(message["To"]) for message in smtp.messages)
        assert set(recipients) == {f"user{index}@example.org" for index in range(USERS)}
        assert all(message["Subject"].startswith("Welcome User ") for message in smtp.messages)
        keys = webhook.keys()
        assert len(keys) == USERS
        if not crash:
            assert sum(message_ids.values()) == USERS
            assert sum(keys.values()) == USERS
