"""A small journey sent through a real server, for the retention, TTV and discovery surfaces.

Three persons sign up (plan: tests.conftest.DEFAULT_PLAN) and a clock person marks the end of
the data 60 days later. Times are hours after T (a Monday, 10:00 UTC):

- ann signs up on her phone at 0 and creates a project on her laptop at 2; identify calls
  merge both devices. She invites two teammates at 26 (activation at 26) and opens the app
  at 50.
- bob signs up at 1 and does nothing else.
- cid signs up at 25 and creates a project at 30.

So retention from sign-up, any event, rolling days: day 0 is 2 of 3 (ann, cid), day 1 and
day 2 are 1 of 3 (ann).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from headstart.timeutil import MICROS_PER_HOUR, parse_iso, to_iso
from tests.conftest import HeadstartServer, make_data_dir, wait_until_processed

T = parse_iso("2024-03-04T10:00:00Z")


def _event(kind: str, hours: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "timestamp": to_iso(T + round(hours * MICROS_PER_HOUR)), **fields}


MESSAGES = [
    _event("track", 0, anonymousId="ann-phone", event="Signed Up", messageId="s1"),
    _event("track", 2, anonymousId="ann-laptop", event="Project Created", messageId="s2"),
    _event("identify", 3, anonymousId="ann-phone", userId="ann", messageId="s3"),
    _event("identify", 4, anonymousId="ann-laptop", userId="ann", messageId="s4"),
    _event("track", 25.5, userId="ann", event="Teammate Invited", messageId="s5"),
    _event("track", 26, userId="ann", event="Teammate Invited", messageId="s6"),
    _event("track", 50, userId="ann", event="Open", messageId="s7"),
    _event("track", 1, userId="bob", event="Signed Up", messageId="s8"),
    _event("track", 25, userId="cid", event="Signed Up", messageId="s9"),
    _event("track", 30, userId="cid", event="Project Created", messageId="s10"),
    _event("track", 24 * 60, userId="clock", event="Tick", messageId="s11"),
]


def send_scenario(server: HeadstartServer, write_key: str) -> None:
    """Post the scenario as one batch and wait until the processor applied it."""
    with server.client() as client:
        response = client.post("/v1/batch", json={"batch": MESSAGES}, auth=(write_key, ""))
        assert response.status_code == 200, response.text
    with server.admin_client() as admin:
        wait_until_processed(admin)


def scenario_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadstartServer]:
    """Yield a running server whose data directory contains the scenario."""
    root: Path = tmp_path_factory.mktemp("lifecycle") / "data"
    data = make_data_dir(root)
    write_key = data.add_source("history", historical=True)
    server = HeadstartServer(data).start()
    try:
        send_scenario(server, write_key)
        yield server
    finally:
        server.stop()


def get_json(server: HeadstartServer, path: str, params: Any = None) -> Any:
    with server.admin_client() as admin:
        response: httpx.Response = admin.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()
