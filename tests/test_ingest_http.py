"""The ingest API over real HTTP: bad input with its status and code, limits, auth, dedup, clocks.

One server runs for the whole module. After every rejected request the server must still return
200 on /health and accept a valid event.
"""

from __future__ import annotations

import base64
import functools
import gzip
import sqlite3
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from conftest import (
    HeadstartDir,
    HeadstartServer,
    make_data_dir,
    run_cli,
    wait_until_processed,
)

from headstart.ingest.normalize import Limits
from headstart.sources import CACHE_SECONDS
from headstart.timeutil import (
    MICROS_PER_DAY,
    MICROS_PER_HOUR,
    MICROS_PER_SECOND,
    parse_iso,
    to_iso,
)

LIMITS = Limits()
MINUTE_US = 60 * MICROS_PER_SECOND


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadstartServer]:
    data = make_data_dir(tmp_path_factory.mktemp("ingest") / "data")
    data.add_source("backfill", historical=True)
    data.add_source("mobile")
    data.add_source("doomed")
    server = HeadstartServer(data).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http(live: HeadstartServer) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


@pytest.fixture(scope="module")
def admin_http(live: HeadstartServer) -> Iterator[httpx.Client]:
    with live.admin_client() as client:
        yield client


# ---- helpers --------------------------------------------------------------------------------


def basic(key: str, password: str = "") -> dict[str, str]:
    token = base64.b64encode(f"{key}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def now_us() -> int:
    return time.time_ns() // 1000


def iso(micros: int) -> str:
    """Format UTC microseconds as ISO-8601 with microseconds, as the SDKs send it."""
    seconds, rest = divmod(micros, MICROS_PER_SECOND)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:06d}Z"


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def track(
    user_id: str | None = None, event: str = "Button Clicked", **extra: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {"event": event, **extra}
    if user_id is not None:
        message["userId"] = user_id
    return message


def nested(levels: int) -> dict[str, Any]:
    """Return ``levels`` objects nested inside each other: 1 is ``{}``, 2 is ``{"a": {}}``."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def nested_list(levels: int) -> list[Any]:
    """Return ``levels`` arrays nested inside each other: 1 is ``[]``, 2 is ``[[]]``."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def padded_event(size: int) -> dict[str, Any]:
    """Return a track message whose compact JSON is exactly ``size`` bytes."""
    message = track(unique("pad"), properties={"pad": ""})
    message["properties"]["pad"] = "x" * (size - len(dumps(message)))
    assert len(dumps(message)) == size
    return message


def padded_batch(size: int) -> bytes:
    """Return a valid batch body of exactly ``size`` bytes: events of 31 KB, then spaces."""
    events = [
        {"type": "track", **padded_event(LIMITS.max_event_bytes - 1024)}
        for _ in range(size // LIMITS.max_event_bytes)
    ]
    body = dumps({"batch": events})
    assert len(body) <= size
    return body + b" " * (size - len(body))


@functools.cache
def gzip_bomb() -> bytes:
    """Return gzip data of a few dozen KB that decompresses to 64 MiB of zero bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    parts = [compressor.compress(chunk) for _ in range(64)]
    parts.append(compressor.flush())
    return b"".join(parts)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check an error response: status, JSON body with ``code`` and a non-empty message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"].strip()
    return body


def assert_still_serves(http: httpx.Client, key: str) -> None:
    assert http.get("/health").status_code == 200
    response = http.post("/v1/track", json=track(unique("alive")), headers=basic(key))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


def logged(data: HeadstartDir, message_id: str) -> list[dict[str, Any]]:
    """Return the log rows with ``message_id``, read from log.sqlite with a separate connection."""
    conn = sqlite3.connect(data.log_path)
    try:
        rows = conn.execute(
            "SELECT seq, source_id, message_id, type, user_id, anonymous_id, timestamp,"
            " received_at, body FROM events WHERE message_id = ?",
            (message_id,),
        ).fetchall()
    finally:
        conn.close()
    names = ("seq", "source_id", "message_id", "type", "user_id", "anonymous_id", "timestamp")
    result = []
    for row in rows:
        entry = dict(zip(names, row[:7], strict=True))
        entry["received_at"] = row[7]
        entry["body"] = orjson.loads(row[8])
        result.append(entry)
    return result


def source_id(data: HeadstartDir, name: str) -> str:
    conn = sqlite3.connect(data.log_path)
    try:
        row = conn.execute("SELECT source_id FROM sources WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    return str(row[0])


def person(admin_http: httpx.Client, identifier: str) -> dict[str, Any]:
    response = admin_http.get(f"/api/persons/{identifier}", params={"wait": "true"})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# ---- rejected input -------------------------------------------------------------------------

Body = bytes | dict[str, Any] | list[Any] | Callable[[], bytes]
Auth = str | Callable[[dict[str, str]], dict[str, str]]


@dataclass(frozen=True)
class Rejected:
    """One bad request: where it goes, its body and auth, and the documented status and code.

    ``body`` is raw bytes, a value sent as JSON, or a function that builds the bytes when the
    test runs. ``auth`` names the source whose key is sent as HTTP Basic, or builds headers.
    """

    path: str
    body: Body
    status: int
    code: str
    auth: Auth = "web"

    def content(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if callable(self.body):
            return self.body()
        return dumps(self.body)

    def headers(self, keys: dict[str, str]) -> dict[str, str]:
        if isinstance(self.auth, str):
            return basic(keys[self.auth])
        return self.auth(keys)


def bad(case_id: str, path: str, body: Body, status: int, code: str, auth: Auth = "web") -> Any:
    return pytest.param(Rejected(path, body, status, code, auth), id=case_id)


def at(offset_us: int) -> Callable[[], bytes]:
    """Build a track body whose timestamp is ``offset_us`` from the time the test sends it."""
    return lambda: dumps(track(unique("clock"), timestamp=iso(now_us() + offset_us)))


def no_auth(keys: dict[str, str]) -> dict[str, str]:
    return {}


U1 = track("u1")
# The event limit applies to the event as stored, with ids and timestamps added. An event sent at
# exactly 32 KB is accepted and one sent 1 KB over is rejected. Sizes in between are not checked.
OVERSIZE_EVENT = LIMITS.max_event_bytes + 1024
DEEP_ARRAY = b'{"userId":"u1","event":"x","properties":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}"
# Deeper than orjson 3.13 serializes (254 levels) but within what it parses (1024 levels).
ARRAY_300_DEEP = b'{"userId":"u1","event":"x","properties":{"a":' + b"[" * 300 + b"]" * 300 + b"}}"
MANY_TRAITS = {f"trait_{i}": "v" * 20 for i in range(1200)}
TOO_MANY = {
    "batch": [{"type": "track", **track(f"u{i}")} for i in range(LIMITS.max_batch_events + 1)]
}
EPOCH = track("u1", timestamp="1970-01-01T00:00:01Z")

REJECTED = [
    # Bodies that are not JSON, or not a JSON object.
    bad("truncated-json", "/v1/track", b'{"userId": "u1", "event": ', 400, "invalid_json"),
    bad("empty-body", "/v1/track", b"", 400, "invalid_json"),
    bad("whitespace-body", "/v1/track", b" \n\t ", 400, "invalid_json"),
    bad("trailing-garbage", "/v1/track", dumps(U1) + b" trailing", 400, "invalid_json"),
    bad("nan-literal", "/v1/track", b'{"userId":"u1","event":"x","n":NaN}', 400, "invalid_json"),
    bad("number-overflows-double", "/v1/track", b'{"userId":"u1","event":"x","n":1e400}', 400, "invalid_json"),
    bad("invalid-utf8", "/v1/track", b'{"userId":"u1\xff\xfe","event":"x"}', 400, "invalid_json"),
    bad("lone-surrogate-escape", "/v1/track", b'{"userId":"u1","event":"\\ud800"}', 400, "invalid_json"),
    bad("nesting-past-parser-limit", "/v1/track", DEEP_ARRAY, 400, "invalid_json"),
    bad("array-body", "/v1/track", b"[1, 2]", 400, "invalid_event"),
    bad("string-body", "/v1/track", b'"hello"', 400, "invalid_event"),
    # Wrong types and missing fields.
    bad("event-as-number", "/v1/track", {"userId": "u1", "event": 42}, 400, "invalid_event"),
    bad("event-missing", "/v1/track", {"userId": "u1"}, 400, "invalid_event"),
    bad("event-empty", "/v1/track", {"userId": "u1", "event": ""}, 400, "invalid_event"),
    bad("event-over-256-chars", "/v1/track", track("u1", event="e" * 257), 400, "invalid_event"),
    bad("traits-as-list", "/v1/identify", {"userId": "u1", "traits": ["a"]}, 400, "invalid_event"),
    bad("properties-as-string", "/v1/track", track("u1", properties="x"), 400, "invalid_event"),
    bad("context-as-list", "/v1/track", track("u1", context=[1]), 400, "invalid_event"),
    bad("userId-as-object", "/v1/track", {"userId": {"id": 1}, "event": "x"}, 400, "invalid_event"),
    bad("userId-as-float", "/v1/track", {"userId": 1.5, "event": "x"}, 400, "invalid_event"),
    bad("userId-as-bool", "/v1/track", {"userId": True, "event": "x"}, 400, "invalid_event"),
    bad("userId-over-256-chars", "/v1/track", track("u" * 257), 400, "invalid_event"),
    bad("messageId-as-number", "/v1/track", track("u1", messageId=7), 400, "invalid_event"),
    bad("timestamp-as-number", "/v1/track", track("u1", timestamp=1700000000), 400, "invalid_event"),
    bad("timestamp-not-iso", "/v1/track", track("u1", timestamp="yesterday"), 400, "invalid_timestamp"),
    bad("sentAt-not-iso", "/v1/track", track("u1", sentAt="soon"), 400, "invalid_timestamp"),
    bad("group-without-groupId", "/v1/group", {"userId": "u1"}, 400, "invalid_event"),
    bad("alias-without-previousId", "/v1/alias", {"userId": "u1"}, 400, "invalid_event"),
    bad("alias-without-userId", "/v1/alias", {"previousId": "a1"}, 400, "missing_identity"),
    bad("alias-placeholder-previousId", "/v1/alias", {"userId": "u1", "previousId": "undefined"}, 400, "missing_identity"),
    # Events without a usable id: JSON null, blanks and placeholders count as absent.
    bad("no-ids", "/v1/track", {"event": "x"}, 400, "missing_identity"),
    bad("null-ids", "/v1/track", {"userId": None, "anonymousId": None, "event": "x"}, 400, "missing_identity"),
    bad("blank-ids", "/v1/track", {"userId": "", "anonymousId": "  ", "event": "x"}, 400, "missing_identity"),
    bad("placeholder-undefined", "/v1/track", track("undefined"), 400, "missing_identity"),
    bad("placeholder-null-string", "/v1/track", {"anonymousId": "null", "event": "x"}, 400, "missing_identity"),
    bad("placeholder-zero", "/v1/track", track("0"), 400, "missing_identity"),
    bad("placeholder-zero-int", "/v1/track", {"userId": 0, "event": "x"}, 400, "missing_identity"),
    bad("placeholder-case-and-spaces", "/v1/identify", {"userId": " NULL ", "anonymousId": "Undefined"}, 400, "missing_identity"),
    # Size and nesting limits.
    bad("event-over-32kb", "/v1/track", lambda: dumps(padded_event(OVERSIZE_EVENT)), 413, "event_too_large"),
    bad("traits-over-32kb", "/v1/identify", {"userId": "u1", "traits": MANY_TRAITS}, 413, "event_too_large"),
    bad("traits-nested-33-levels", "/v1/identify", {"userId": "u1", "traits": nested(33)}, 400, "too_deep"),
    bad("arrays-nested-33-levels", "/v1/track", track("u1", properties={"a": nested_list(32)}), 400, "too_deep"),
    bad("arrays-nested-300-levels", "/v1/track", ARRAY_300_DEEP, 400, "too_deep"),
    bad("batch-over-500kb-raw", "/v1/batch", lambda: padded_batch(LIMITS.max_batch_bytes + 1), 413, "batch_too_large"),
    bad("batch-over-500kb-gzip", "/v1/batch", lambda: gzip.compress(padded_batch(LIMITS.max_batch_bytes + 1)), 413, "batch_too_large"),
    bad("single-call-over-500kb", "/v1/track", lambda: padded_batch(LIMITS.max_batch_bytes + 1), 413, "batch_too_large"),
    bad("gzip-bomb-64mib", "/v1/batch", gzip_bomb, 413, "batch_too_large"),
    bad("batch-2501-events", "/v1/batch", TOO_MANY, 413, "batch_too_large"),
    bad("truncated-gzip", "/v1/track", gzip.compress(dumps(U1))[:15], 400, "invalid_gzip"),
    bad("corrupt-gzip", "/v1/track", b"\x1f\x8b\x08\x00" + b"not deflate data" * 4, 400, "invalid_gzip"),
    # Batch shape.
    bad("batch-as-array", "/v1/batch", [{"type": "track", **U1}], 400, "invalid_batch"),
    bad("batch-key-missing", "/v1/batch", {"events": []}, 400, "invalid_batch"),
    bad("batch-not-array", "/v1/batch", {"batch": {"type": "track"}}, 400, "invalid_batch"),
    bad("batch-empty", "/v1/batch", {"batch": []}, 400, "invalid_batch"),
    bad("batch-sentAt-not-iso", "/v1/batch", {"batch": [{"type": "track", **U1}], "sentAt": "x"}, 400, "invalid_batch"),
    bad("batch-all-invalid", "/v1/batch", {"batch": [U1, {"type": "buy", "userId": "u1"}, 5]}, 400, "invalid_batch"),
    # Timestamps out of range: live events only go 30 days back, no event over a day ahead.
    bad("live-2-days-ahead", "/v1/track", at(2 * MICROS_PER_DAY), 400, "timestamp_in_future"),
    bad("live-31-days-old", "/v1/track", at(-31 * MICROS_PER_DAY), 400, "timestamp_too_old"),
    bad("live-epoch", "/v1/track", EPOCH, 400, "timestamp_too_old"),
    bad("historical-epoch", "/v1/track", EPOCH, 400, "timestamp_too_old", "backfill"),
    bad("historical-3-days-ahead", "/v1/track", at(3 * MICROS_PER_DAY), 400, "timestamp_in_future", "backfill"),
    # Write keys.
    bad("no-write-key", "/v1/track", U1, 401, "missing_write_key", no_auth),
    bad("unknown-write-key", "/v1/track", U1, 401, "invalid_write_key", lambda keys: basic("hs_wk_x")),
    bad("basic-not-base64", "/v1/track", U1, 401, "invalid_write_key", lambda keys: {"Authorization": "Basic %%"}),
    bad("basic-empty-user", "/v1/track", U1, 401, "missing_write_key", lambda keys: basic("", keys["web"])),
    bad("unknown-body-writeKey", "/v1/track", track("u1", writeKey="hs_wk_x"), 401, "invalid_write_key", no_auth),
    bad("body-writeKey-as-number", "/v1/track", track("u1", writeKey=123), 401, "missing_write_key", no_auth),
    # Routing: no redirects.
    bad("trailing-slash", "/v1/track/", U1, 404, "not_found"),
    bad("unknown-endpoint", "/v1/purchase", U1, 404, "not_found"),
    bad("v1-root", "/v1", U1, 404, "not_found"),
]  # fmt: skip


@pytest.mark.parametrize("case", REJECTED)
def test_rejected_input(
    case: Rejected, live: HeadstartServer, http: httpx.Client, admin_http: httpx.Client
) -> None:
    head_before = admin_http.get("/api/status").json()["log_head"]
    response = http.post(
        case.path,
        content=case.content(),
        headers={"Content-Type": "application/json", **case.headers(live.data.write_keys)},
    )

    assert_error(response, case.status, case.code)
    assert "location" not in response.headers
    assert admin_http.get("/api/status").json()["log_head"] == head_before
    assert_still_serves(http, live.data.write_key)


def test_get_on_ingest_route(http: httpx.Client, live: HeadstartServer) -> None:
    response = http.get("/v1/track", headers=basic(live.data.write_key))

    assert_error(response, 405, "method_not_allowed")


def test_all_invalid_batch_lists_each_event(http: httpx.Client, live: HeadstartServer) -> None:
    body = {"batch": [track("u1"), {"type": "purchase", "userId": "u1"}, 5, {"type": "track"}]}

    response = http.post("/v1/batch", json=body, headers=basic(live.data.write_key))

    result = assert_error(response, 400, "invalid_batch")
    assert [(entry["index"], entry["code"]) for entry in result["rejected"]] == [
        (0, "invalid_event"),
        (1, "invalid_event"),
        (2, "invalid_event"),
        (3, "invalid_event"),
    ]
    assert all(entry["message"] for entry in result["rejected"])


# ---- accepted input at the limits ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "build"),
    [
        pytest.param("/v1/track", lambda: dumps(padded_event(LIMITS.max_event_bytes)), id="event-exactly-32kb"),
        pytest.param("/v1/batch", lambda: padded_batch(LIMITS.max_batch_bytes), id="batch-exactly-500kb"),
        pytest.param("/v1/batch", lambda: gzip.compress(padded_batch(LIMITS.max_batch_bytes)), id="gzip-batch-exactly-500kb"),
        pytest.param("/v1/identify", lambda: dumps({"userId": unique("deep"), "traits": nested(32)}), id="traits-nested-32-levels"),
        pytest.param("/v1/identify", lambda: dumps({"userId": unique("wide"), "traits": {f"t{i}": i for i in range(2000)}}), id="traits-2000-keys"),
    ],
)  # fmt: skip
def test_accepted_at_limit(
    path: str, build: Callable[[], bytes], http: httpx.Client, live: HeadstartServer
) -> None:
    body = build()

    response = http.post(path, content=body, headers=basic(live.data.write_key))

    assert response.status_code == 200, response.text
    assert response.json()["accepted"] >= 1
    assert response.json()["duplicates"] == 0


def test_batch_of_2500_events_accepted(
    http: httpx.Client, live: HeadstartServer, admin_http: httpx.Client
) -> None:
    user = unique("bulk")
    events = [
        {"type": "track", **track(user, event="Teammate Invited"), "messageId": f"{user}-{i}"}
        for i in range(LIMITS.max_batch_events)
    ]

    response = http.post("/v1/batch", json={"batch": events}, headers=basic(live.data.write_key))

    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 2500, "duplicates": 0}
    assert person(admin_http, user)["event_counts"] == {"Teammate Invited": 2500}


def test_huge_traits_visible(
    http: httpx.Client, live: HeadstartServer, admin_http: httpx.Client
) -> None:
    user = unique("traits")
    traits = {f"trait_{i:04d}": f"value {i}" for i in range(1000)}
    traits["deep"] = nested(30)

    response = http.post(
        "/v1/identify", json={"userId": user, "traits": traits}, headers=basic(live.data.write_key)
    )

    assert response.status_code == 200, response.text
    assert person(admin_http, user)["traits"] == traits


# ---- gzip and write keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Encoding": "gzip", "Content-Type": "application/json"}, id="content-encoding-gzip"),
        pytest.param({"Content-Type": "application/json"}, id="no-encoding-header"),
        pytest.param({"Content-Type": "text/plain"}, id="text-plain"),
        pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="form-content-type"),
    ],
)  # fmt: skip
def test_gzip_body_decoded_whatever_headers(
    headers: dict[str, str], http: httpx.Client, live: HeadstartServer, admin_http: httpx.Client
) -> None:
    user = unique("gzip")
    body = gzip.compress(dumps({"batch": [{"type": "track", **track(user, event="Signed Up")}]}))

    response = http.post(
        "/v1/batch", content=body, headers={**headers, **basic(live.data.write_key)}
    )

    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert person(admin_http, user)["event_counts"] == {"Signed Up": 1}


def test_plain_json_with_gzip_header_accepted(http: httpx.Client, live: HeadstartServer) -> None:
    # The body decides: JSON sent with a wrong Content-Encoding is still read as JSON.
    response = http.post(
        "/v1/track",
        content=dumps(track(unique("plain"))),
        headers={"Content-Encoding": "gzip", **basic(live.data.write_key)},
    )

    assert response.status_code == 200, response.text


AUTH_STYLES = [
    pytest.param(lambda key: (basic(key), {}), id="basic"),
    pytest.param(lambda key: (basic(key, "ignored-password"), {}), id="basic-with-password"),
    pytest.param(lambda key: ({"Authorization": f"basic {basic(key)['Authorization'][6:]}"}, {}), id="basic-lowercase-scheme"),
    pytest.param(lambda key: ({"Authorization": key}, {}), id="bare-key"),
    pytest.param(lambda key: ({"Authorization": f"Bearer {key}"}, {}), id="bearer"),
    pytest.param(lambda key: ({}, {"writeKey": key}), id="body-writeKey"),
]  # fmt: skip


@pytest.mark.parametrize("style", AUTH_STYLES)
def test_auth_style_accepted(
    style: Callable[[str], tuple[dict[str, str], dict[str, Any]]],
    http: httpx.Client,
    live: HeadstartServer,
) -> None:
    headers, extra = style(live.data.write_keys["mobile"])
    message_id = unique("auth")

    response = http.post(
        "/v1/track", json=track(unique("auth"), messageId=message_id, **extra), headers=headers
    )

    assert response.status_code == 200, response.text
    rows = logged(live.data, message_id)
    assert [row["source_id"] for row in rows] == [source_id(live.data, "mobile")]


def test_header_key_wins_over_body(http: httpx.Client, live: HeadstartServer) -> None:
    message_id = unique("both")
    body = track(unique("both"), messageId=message_id, writeKey=live.data.write_keys["web"])

    response = http.post("/v1/track", json=body, headers=basic(live.data.write_keys["mobile"]))

    assert response.status_code == 200, response.text
    assert logged(live.data, message_id)[0]["source_id"] == source_id(live.data, "mobile")


def test_revoked_key_rejected_while_serving(http: httpx.Client, live: HeadstartServer) -> None:
    key = live.data.write_keys["doomed"]
    before = http.post("/v1/track", json=track(unique("doomed")), headers=basic(key))
    assert before.status_code == 200, before.text

    run_cli("sources", "revoke", "doomed", "--data-dir", str(live.data.root))
    # The server caches a key lookup for CACHE_SECONDS, so the revocation applies after that.
    time.sleep(CACHE_SECONDS + 0.2)
    after = http.post("/v1/track", json=track(unique("doomed")), headers=basic(key))

    body = assert_error(after, 401, "revoked_write_key")
    assert "doomed" in body["message"]
    assert_still_serves(http, live.data.write_key)


# ---- batches, dedup and the person API -------------------------------------------------------


def test_partial_batch_keeps_valid_events(
    http: httpx.Client, live: HeadstartServer, admin_http: httpx.Client
) -> None:
    user = unique("partial")
    anonymous = unique("anon")
    batch = [
        {"type": "page", "anonymousId": anonymous, "name": "Pricing", "messageId": f"{user}-0"},
        {"type": "track", "event": "Signed Up", "messageId": f"{user}-1"},
        {"type": "identify", "userId": user, "anonymousId": anonymous, "traits": {"plan": "pro"}},
        {"type": "purchase", "userId": user},
        {"type": "track", **padded_event(OVERSIZE_EVENT)},
        {"type": "track", "userId": user, "event": "Signed Up", "messageId": f"{user}-5"},
        {"type": "track", "userId": "undefined", "event": "Project Created"},
        {"type": "track", "userId": user, "event": "Project Created", "timestamp": "never"},
    ]

    response = http.post("/v1/batch", json={"batch": batch}, headers=basic(live.data.write_key))

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 3
    assert result["duplicates"] == 0
    assert [(entry["index"], entry["code"]) for entry in result["rejected"]] == [
        (1, "missing_identity"),
        (3, "invalid_event"),
        (4, "event_too_large"),
        (6, "missing_identity"),
        (7, "invalid_timestamp"),
    ]
    view = person(admin_http, anonymous)
    assert view["user_id"] == user
    assert view["traits"] == {"plan": "pro"}
    assert view["event_counts"] == {"Page Viewed": 1, "Signed Up": 1}
    assert {event["message_id"] for event in view["recent_events"]} >= {f"{user}-0", f"{user}-5"}
    assert len(view["recent_events"]) == 3
    [page] = [event for event in view["recent_events"] if event["type"] == "page"]
    assert page["event"] == "Page Viewed"
    assert page["properties"]["name"] == "Pricing"


@pytest.mark.parametrize("sent_at", ["yesterday", 1714989600])
def test_bad_batch_sent_at_partly_rejected(
    http: httpx.Client, live: HeadstartServer, sent_at: object
) -> None:
    user = unique("sent-at")
    own = iso(now_us())
    batch = [
        {"type": "track", "userId": user, "event": "Signed Up"},
        {"type": "track", "userId": user, "event": "Project Created", "sentAt": own},
    ]
    body = {"batch": batch, "sentAt": sent_at}

    response = http.post("/v1/batch", json=body, headers=basic(live.data.write_key))

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 1
    [rejected] = result["rejected"]
    assert (rejected["index"], rejected["code"]) == (0, "invalid_timestamp")
    assert f"sentAt={sent_at!r}" in rejected["message"]


def test_dedup_within_batch(
    http: httpx.Client, live: HeadstartServer, admin_http: httpx.Client
) -> None:
    user = unique("dedup")
    message_id = unique("msg")
    batch = [
        {"type": "track", **track(user, event="Project Created"), "messageId": message_id},
        {"type": "track", **track(user, event="Project Created"), "messageId": message_id},
        {"type": "track", **track(user, event="Project Created"), "messageId": unique("msg")},
    ]

    response = http.post("/v1/batch", json={"batch": batch}, headers=basic(live.data.write_key))

    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 2, "duplicates": 1}
    assert len(logged(live.data, message_id)) == 1
    assert person(admin_http, user)["event_counts"] == {"Project Created": 2}


def test_dedup_across_batches(
    http: httpx.Client, live: HeadstartServer, admin_http: httpx.Client
) -> None:
    user = unique("resend")
    batch = [
        {"type": "track", **track(user, event="Teammate Invited"), "messageId": f"{user}-{i}"}
        for i in range(3)
    ]
    headers = basic(live.data.write_key)

    first = http.post("/v1/batch", json={"batch": batch}, headers=headers)
    again = http.post("/v1/batch", json={"batch": batch}, headers=headers)
    single = http.post("/v1/track", json=batch[0], headers=headers)

    assert first.json() == {"success": True, "accepted": 3, "duplicates": 0}
    assert again.status_code == 200, again.text
    assert again.json() == {"success": True, "accepted": 0, "duplicates": 3}
    assert single.json() == {"success": True, "accepted": 0, "duplicates": 1}
    view = person(admin_http, user)
    assert view["event_counts"] == {"Teammate Invited": 3}
    assert view["onboarding"]["milestones"][1]["name"] == "invited_teammate"
    assert view["onboarding"]["milestones"][1]["reached"] is True


def test_dedup_is_per_source(http: httpx.Client, live: HeadstartServer) -> None:
    message_id = unique("shared")
    body = track(unique("shared"), messageId=message_id)

    web = http.post("/v1/track", json=body, headers=basic(live.data.write_keys["web"]))
    mobile = http.post("/v1/track", json=body, headers=basic(live.data.write_keys["mobile"]))

    assert web.json()["accepted"] == 1
    assert mobile.json()["accepted"] == 1
    assert len(logged(live.data, message_id)) == 2


def test_dedup_across_restart(data_dir: HeadstartDir) -> None:
    batch = [
        {"type": "track", **track("restart-user", event="Project Created"), "messageId": f"r-{i}"}
        for i in range(5)
    ]
    server = HeadstartServer(data_dir).start()
    try:
        with server.client() as http:
            first = http.post("/v1/batch", json={"batch": batch}, headers=basic(data_dir.write_key))
    finally:
        assert server.stop() == 0
    assert not (data_dir.root / "server.json").exists()

    restarted = HeadstartServer(data_dir, port=server.port).start()
    try:
        with restarted.client() as http, restarted.admin_client() as admin_http:
            again = http.post("/v1/batch", json={"batch": batch}, headers=basic(data_dir.write_key))
            view = person(admin_http, "restart-user")
    finally:
        restarted.stop()

    assert first.json() == {"success": True, "accepted": 5, "duplicates": 0}
    assert again.status_code == 200, again.text
    assert again.json() == {"success": True, "accepted": 0, "duplicates": 5}
    assert view["event_counts"] == {"Project Created": 5}


# ---- clocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("skew_us", [MICROS_PER_HOUR, -MICROS_PER_HOUR], ids=["ahead", "behind"])
@pytest.mark.parametrize("where", ["event-sentAt", "batch-sentAt"])
def test_clock_skew_corrected(
    skew_us: int, where: str, http: httpx.Client, live: HeadstartServer
) -> None:
    # The client's clock is an hour off; its event happened 5 minutes before it sent it. The
    # client clock has millisecond precision, as the SDKs' clocks do.
    client_now = (now_us() + skew_us) // 1000 * 1000
    client_timestamp = iso(client_now - 5 * MINUTE_US)
    message_id = unique("skew")
    event = track(unique("skew"), messageId=message_id, timestamp=client_timestamp)
    if where == "event-sentAt":
        path, body = "/v1/track", {**event, "sentAt": iso(client_now)}
    else:
        path, body = "/v1/batch", {"batch": [{"type": "track", **event}], "sentAt": iso(client_now)}

    response = http.post(path, json=body, headers=basic(live.data.write_key))

    assert response.status_code == 200, response.text
    [row] = logged(live.data, message_id)
    assert row["timestamp"] == row["received_at"] - 5 * MINUTE_US
    assert row["body"]["timestamp"] == to_iso(row["timestamp"])
    assert parse_iso(row["body"]["originalTimestamp"]) == client_now - 5 * MINUTE_US
    assert parse_iso(row["body"]["sentAt"]) == client_now
    assert row["body"]["receivedAt"] == to_iso(row["received_at"])


def test_clock_days_ahead_corrected_with_sentAt(http: httpx.Client, live: HeadstartServer) -> None:
    # Two days ahead is rejected on its own (see live-2-days-ahead) but fine with sentAt.
    client_now = now_us() + 2 * MICROS_PER_DAY
    message_id = unique("ahead")
    body = track(
        unique("ahead"),
        messageId=message_id,
        timestamp=iso(client_now - MINUTE_US),
        sentAt=iso(client_now),
    )

    response = http.post("/v1/track", json=body, headers=basic(live.data.write_key))

    assert response.status_code == 200, response.text
    [row] = logged(live.data, message_id)
    assert row["timestamp"] == row["received_at"] - MINUTE_US


def test_timestamp_without_sentAt_kept(http: httpx.Client, live: HeadstartServer) -> None:
    timestamp = now_us() - 3 * MICROS_PER_HOUR
    message_id = unique("nosent")

    response = http.post(
        "/v1/track",
        json=track(unique("nosent"), messageId=message_id, timestamp=iso(timestamp)),
        headers=basic(live.data.write_key),
    )

    assert response.status_code == 200, response.text
    assert logged(live.data, message_id)[0]["timestamp"] == timestamp


def test_missing_timestamp_uses_received_at(http: httpx.Client, live: HeadstartServer) -> None:
    message_id = unique("nots")

    response = http.post(
        "/v1/track",
        json=track(unique("nots"), messageId=message_id),
        headers=basic(live.data.write_key),
    )

    assert response.status_code == 200, response.text
    [row] = logged(live.data, message_id)
    assert row["timestamp"] == row["received_at"]


HISTORICAL_ROUTES = [
    pytest.param("web", {"X-Headstart-Historical": "true"}, {}, id="header"),
    pytest.param("web", {}, {"historical": "1"}, id="query"),
    pytest.param("backfill", {}, {}, id="historical-source"),
]


@pytest.mark.parametrize(("source", "headers", "params"), HISTORICAL_ROUTES)
def test_historical_keeps_client_timestamp(
    source: str,
    headers: dict[str, str],
    params: dict[str, str],
    http: httpx.Client,
    live: HeadstartServer,
) -> None:
    # 40 days old, and sent by a client whose clock is an hour ahead: kept exactly as sent.
    timestamp = now_us() - 40 * MICROS_PER_DAY
    message_id = unique("history")
    body = track(
        unique("history"),
        messageId=message_id,
        timestamp=iso(timestamp),
        sentAt=iso(now_us() + MICROS_PER_HOUR),
    )

    response = http.post(
        "/v1/track",
        json=body,
        params=params,
        headers={**headers, **basic(live.data.write_keys[source])},
    )

    assert response.status_code == 200, response.text
    [row] = logged(live.data, message_id)
    assert row["timestamp"] == timestamp


@pytest.mark.parametrize("flag", ["false", "0", "no"])
def test_historical_flag_off_stays_live(
    flag: str, http: httpx.Client, live: HeadstartServer
) -> None:
    body = track(unique("flag"), timestamp=iso(now_us() - 40 * MICROS_PER_DAY))

    response = http.post(
        "/v1/track",
        json=body,
        headers={"X-Headstart-Historical": flag, **basic(live.data.write_key)},
    )

    assert_error(response, 400, "timestamp_too_old")


# ---- ids, routing and documents ---------------------------------------------------------------


def test_integer_user_id_stored_as_string(
    http: httpx.Client, live: HeadstartServer, admin_http: httpx.Client
) -> None:
    number = int(uuid.uuid4().int % 10**12) + 10**12

    response = http.post(
        "/v1/track",
        json={"userId": number, "event": "Signed Up"},
        headers=basic(live.data.write_key),
    )

    assert response.status_code == 200, response.text
    view = person(admin_http, str(number))
    assert view["user_id"] == str(number)


def test_null_user_id_with_anonymous_id(
    http: httpx.Client, live: HeadstartServer, admin_http: httpx.Client
) -> None:
    anonymous = unique("anon")

    response = http.post(
        "/v1/page",
        json={"userId": None, "anonymousId": anonymous, "name": "Pricing"},
        headers=basic(live.data.write_key),
    )

    assert response.status_code == 200, response.text
    view = person(admin_http, anonymous)
    assert view["user_id"] is None
    assert view["identifiers"] == [{"kind": "anonymous_id", "value": anonymous}]
    assert view["onboarding"]["milestones"][2] == {
        "name": "viewed_pricing",
        "reached": True,
        "reached_at": view["first_seen"],
        "evidence": 1,
        "min_count": 1,
    }


@pytest.mark.parametrize(
    "path", ["/v1/track/", "/v1/batch/", "/api/status/", "/api/persons/someone/", "/health/"]
)
def test_trailing_slash_not_redirected(
    path: str, http: httpx.Client, live: HeadstartServer
) -> None:
    headers = {"Authorization": f"Bearer {live.data.admin_key}"}

    response = http.request("POST" if path.startswith("/v1") else "GET", path, headers=headers)

    assert_error(response, 404, "not_found")
    assert "location" not in response.headers


def test_unknown_person_is_404(admin_http: httpx.Client) -> None:
    response = admin_http.get("/api/persons/nobody-has-this-id")

    assert_error(response, 404, "person_not_found")


def test_admin_api_needs_admin_key(http: httpx.Client, live: HeadstartServer) -> None:
    wrong = http.get("/api/status", headers={"Authorization": f"Bearer {live.data.write_key}"})
    missing = http.get("/api/report")

    assert_error(wrong, 401, "invalid_admin_key")
    assert_error(missing, 401, "invalid_admin_key")


def test_openapi_lists_ingest_routes(http: httpx.Client) -> None:
    response = http.get("/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    for route in ("track", "identify", "page", "screen", "group", "alias", "batch"):
        assert "post" in paths[f"/v1/{route}"], route
    assert "get" in paths["/api/persons/{identifier}"]
    assert "get" in paths["/api/report"]


def test_report_counts_signups(
    http: httpx.Client, live: HeadstartServer, admin_http: httpx.Client
) -> None:
    before = admin_http.get("/api/report", params={"wait": "true"}).json()["signups"]
    users = [unique("report") for _ in range(3)]
    batch = [{"type": "track", **track(user, event="Signed Up")} for user in users]

    response = http.post("/v1/batch", json={"batch": batch}, headers=basic(live.data.write_key))
    assert response.status_code == 200, response.text
    wait_until_processed(admin_http)
    after = admin_http.get("/api/report").json()["signups"]

    assert after == before + 3
