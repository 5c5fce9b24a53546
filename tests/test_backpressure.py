"""The ingest API answers 503 with Retry-After when the log writer's queue is full."""

from __future__ import annotations

import os

from conftest import HeadstartServer


def test_full_queue_answers_503(data_dir, monkeypatch):
    monkeypatch.setitem(os.environ, "HEADSTART_MAX_PENDING_EVENTS", "5")
    server = HeadstartServer(data_dir).start()
    try:
        with server.client(auth=(data_dir.write_key, "")) as client:
            batch = [
                {"type": "track", "event": "Clicked", "anonymousId": f"a{i}"} for i in range(6)
            ]
            refused = client.post("/v1/batch", json={"batch": batch})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["code"] == "overloaded"

            accepted = client.post("/v1/batch", json={"batch": batch[:5]})
            assert accepted.status_code == 200
            assert accepted.json()["accepted"] == 5
    finally:
        server.stop()
