"""The official Segment and RudderStack Python SDKs against a real headstart server.

Each SDK sends identify, track, page, group and alias calls from two devices (two anonymous
ids) that later turn out to be one user. The SDKs talk to a recording proxy on 127.0.0.1 that
forwards every request to headstart unchanged, so the tests check both what each SDK really
sends (path, auth, gzip, sentAt) and that headstart accepted it.
"""

from __future__ import annotations

import base64
import gzip
import http.server
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from conftest import HeadstartServer, make_data_dir

from headstart.timeutil import MICROS_PER_SECOND, parse_iso

# The corrected timestamp is the client's plus the time between sentAt and receipt. On one
# machine that is the request's transit time, which stays far below this bound.
TRANSIT_BOUND_US = 60 * MICROS_PER_SECOND


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        data = gzip.decompress(self.body) if self.body[:2] == b"\x1f\x8b" else self.body
        return orjson.loads(data)


class RecordingProxy:
    """An HTTP server on 127.0.0.1 that records each request and forwards it to headstart."""

    def __init__(self, upstream: str):
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._upstream = httpx.Client(base_url=upstream, trust_env=False, timeout=60)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> RecordingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()

    def taken(self) -> list[Recorded]:
        with self._lock:
            recorded, self.requests = self.requests, []
        return recorded

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        passed = {
            name: value
            for name, value in headers.items()
            if name.lower() not in ("host", "content-length", "connection")
        }
        response = self._upstream.post(path, content=body, headers=passed)
        with self._lock:
            self.requests.append(Recorded(path, headers, body, response.status_code))
        return response

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                response = proxy._forward(self.path, headers, body)
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadstartServer]:
    data = make_data_dir(tmp_path_factory.mktemp("sdk") / "data")
    running = HeadstartServer(data).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def proxy(server: HeadstartServer) -> Iterator[RecordingProxy]:
    recording = RecordingProxy(server.url).start()
    try:
        yield recording
    finally:
        recording.stop()


@pytest.fixture(scope="module")
def admin(server: HeadstartServer) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


# ---- the SDK clients -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sdk:
    """How to build one SDK's client and what its requests are expected to look like."""

    make: Callable[[str, str, list[Exception]], Any]
    library: str
    gzip: bool
    write_key_in_body: bool
    traits_at_top_level: bool
    sync: bool


def segment_client(sync: bool, use_gzip: bool) -> Callable[[str, str, list[Exception]], Any]:
    def make(write_key: str, host: str, errors: list[Exception]) -> Any:
        from segment.analytics import Client

        return Client(
            write_key,
            host=host,
            sync_mode=sync,
            gzip=use_gzip,
            max_retries=1,
            upload_interval=0.05,
            on_error=lambda error, batch: errors.append(error),
        )

    return make


def rudder_client(sync: bool) -> Callable[[str, str, list[Exception]], Any]:
    def make(write_key: str, host: str, errors: list[Exception]) -> Any:
        from rudderstack.analytics import Client

        # ``host`` is what rudderstack.analytics.dataPlaneUrl sets for the default client.
        return Client(
            write_key,
            host=host,
            sync_mode=sync,
            max_retries=1,
            upload_interval=0.05,
            on_error=lambda error, batch: errors.append(error),
        )

    return make


SDKS = [
    pytest.param(Sdk(segment_client(True, False), "analytics-python", False, True, True, True), id="segment-sync"),
    pytest.param(Sdk(segment_client(False, True), "analytics-python", True, True, True, False), id="segment-queued-gzip"),
    pytest.param(Sdk(rudder_client(True), "analytics-python", True, False, False, True), id="rudderstack-sync"),
    pytest.param(Sdk(rudder_client(False), "analytics-python", True, False, False, False), id="rudderstack-queued"),
]  # fmt: skip


# ---- the scenario ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ids:
    user: str
    laptop: str
    phone: str


def send_two_device_journey(client: Any, ids: Ids, base: datetime) -> dict[str, datetime]:
    """Send one user's journey over two devices; return the time of each step.

    The laptop views pricing and signs up anonymously, the phone creates a project
    anonymously. Then the laptop identifies, the phone is aliased to the user id and
    identifies too, and the user invites two teammates and joins a group.
    """
    at = {name: base + timedelta(minutes=minute) for minute, name in enumerate(STEPS)}
    client.page(
        anonymous_id=ids.laptop,
        name="Pricing",
        properties={"url": "https://x.test/pricing"},
        timestamp=at["pricing"],
    )
    client.track(
        anonymous_id=ids.laptop,
        event="Signed Up",
        properties={"method": "email"},
        timestamp=at["signup"],
    )
    client.page(anonymous_id=ids.phone, name="Home", timestamp=at["home"])
    client.track(
        anonymous_id=ids.phone,
        event="Project Created",
        properties={"template": "blank"},
        timestamp=at["project"],
    )
    client.identify(
        user_id=ids.user,
        anonymous_id=ids.laptop,
        traits={"email": f"{ids.user}@example.test", "plan": "free", "name": "Ada"},
        timestamp=at["identify_laptop"],
    )
    client.alias(previous_id=ids.phone, user_id=ids.user, timestamp=at["alias_phone"])
    client.identify(
        user_id=ids.user,
        anonymous_id=ids.phone,
        traits={"plan": "pro"},
        timestamp=at["identify_phone"],
    )
    client.track(
        user_id=ids.user,
        event="Teammate Invited",
        properties={"role": "editor"},
        timestamp=at["invite_1"],
    )
    client.track(
        user_id=ids.user,
        event="Teammate Invited",
        properties={"role": "viewer"},
        timestamp=at["invite_2"],
    )
    client.group(user_id=ids.user, group_id="acme", traits={"employees": 12}, timestamp=at["group"])
    return at


STEPS = (
    "pricing",
    "signup",
    "home",
    "project",
    "identify_laptop",
    "alias_phone",
    "identify_phone",
    "invite_1",
    "invite_2",
    "group",
)


def flush(client: Any, sdk: Sdk) -> None:
    if not sdk.sync:
        client.flush()
        client.shutdown()


def micros(moment: datetime) -> int:
    return int(moment.timestamp()) * MICROS_PER_SECOND + moment.microsecond


def assert_corrected(iso_time: str | None, sent: datetime) -> None:
    """Check that a corrected time is the client's, moved later by at most the transit time."""
    assert iso_time is not None
    delay = parse_iso(iso_time) - micros(sent)
    assert 0 <= delay < TRANSIT_BOUND_US, (iso_time, sent)


def logged_events(server: HeadstartServer, source_name: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(server.data.log_path)
    try:
        rows = conn.execute(
            "SELECT e.message_id, e.body FROM events e JOIN sources s ON s.source_id = e.source_id"
            " WHERE s.name = ? ORDER BY e.seq",
            (source_name,),
        ).fetchall()
    finally:
        conn.close()
    return [{"message_id": message_id, "body": orjson.loads(body)} for message_id, body in rows]


@pytest.mark.parametrize("sdk", SDKS)
def test_two_devices_merge_into_one_person(
    sdk: Sdk,
    request: pytest.FixtureRequest,
    server: HeadstartServer,
    proxy: RecordingProxy,
    admin: httpx.Client,
) -> None:
    source_name = request.node.callspec.id
    write_key = server.data.add_source(source_name)
    tag = uuid.uuid4().hex[:8]
    ids = Ids(user=f"user-{tag}", laptop=f"laptop-{tag}", phone=f"phone-{tag}")
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    errors: list[Exception] = []
    proxy.taken()

    client = sdk.make(write_key, proxy.url, errors)
    at = send_two_device_journey(client, ids, base)
    flush(client, sdk)

    assert errors == []
    view = admin.get(f"/api/persons/{ids.laptop}", params={"wait": "true", "recent": 50}).json()
    assert view["user_id"] == ids.user
    assert {(entry["kind"], entry["value"]) for entry in view["identifiers"]} == {
        ("user_id", ids.user),
        ("anonymous_id", ids.laptop),
        ("anonymous_id", ids.phone),
    }
    for identifier in (ids.user, ids.phone, f"user_id:{ids.user}", f"anonymous_id:{ids.phone}"):
        other = admin.get(f"/api/persons/{identifier}").json()
        assert other["person_id"] == view["person_id"], identifier
    assert view["traits"] == {"email": f"{ids.user}@example.test", "name": "Ada", "plan": "pro"}
    assert view["groups"] == ["acme"]
    assert view["event_counts"] == {
        "Page Viewed": 2,
        "Project Created": 1,
        "Signed Up": 1,
        "Teammate Invited": 2,
    }
    assert len(view["recent_events"]) == len(STEPS)
    assert view["warnings"] == []

    onboarding = view["onboarding"]
    milestones = {entry["name"]: entry for entry in onboarding["milestones"]}
    assert {name: entry["reached"] for name, entry in milestones.items()} == {
        "created_project": True,
        "invited_teammate": True,
        "viewed_pricing": True,
    }
    assert_corrected(onboarding["signup_at"], at["signup"])
    assert_corrected(milestones["viewed_pricing"]["reached_at"], at["pricing"])
    assert_corrected(milestones["created_project"]["reached_at"], at["project"])
    assert_corrected(milestones["invited_teammate"]["reached_at"], at["invite_2"])
    assert onboarding["activated"] is True
    assert onboarding["activated_at"] == milestones["invited_teammate"]["reached_at"]


@pytest.mark.parametrize("sdk", SDKS)
def test_sdk_requests_as_sent(
    sdk: Sdk, request: pytest.FixtureRequest, server: HeadstartServer, proxy: RecordingProxy
) -> None:
    source_name = f"wire-{request.node.callspec.id}"
    write_key = server.data.add_source(source_name)
    tag = uuid.uuid4().hex[:8]
    ids = Ids(user=f"user-{tag}", laptop=f"laptop-{tag}", phone=f"phone-{tag}")
    errors: list[Exception] = []
    proxy.taken()

    client = sdk.make(write_key, proxy.url, errors)
    send_two_device_journey(client, ids, datetime.now(UTC) - timedelta(minutes=30))
    flush(client, sdk)
    recorded = proxy.taken()

    assert errors == []
    assert recorded, "the SDK sent nothing"
    expected_auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    messages: list[dict[str, Any]] = []
    for sent in recorded:
        assert sent.path == "/v1/batch"
        assert sent.status == 200
        assert sent.headers["authorization"] == expected_auth
        assert (sent.body[:2] == b"\x1f\x8b") is sdk.gzip
        assert (sent.headers.get("content-encoding") == "gzip") is sdk.gzip
        payload = sent.json()
        assert parse_iso(payload["sentAt"]) > 0
        assert (payload.get("writeKey") == write_key) is sdk.write_key_in_body
        messages.extend(payload["batch"])
    if sdk.sync:
        assert len(recorded) == len(STEPS)

    assert [message["type"] for message in messages] == [
        "page",
        "track",
        "page",
        "track",
        "identify",
        "alias",
        "identify",
        "track",
        "track",
        "group",
    ]
    assert all(message["context"]["library"]["name"] == sdk.library for message in messages)
    identify = messages[4]
    if sdk.traits_at_top_level:
        assert identify["traits"]["name"] == "Ada"
    else:
        assert "traits" not in identify
        assert identify["context"]["traits"]["name"] == "Ada"

    stored = logged_events(server, source_name)
    assert [event["message_id"] for event in stored] == [m["messageId"] for m in messages]
    for event, message in zip(stored, messages, strict=True):
        # Compared at millisecond precision, the precision headstart shows timestamps with.
        original = parse_iso(event["body"]["originalTimestamp"])
        assert original // 1000 == parse_iso(message["timestamp"]) // 1000
        assert event["body"]["sentAt"] is not None
