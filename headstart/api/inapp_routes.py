"""Browser-facing in-app API: one person's inbox, its actions, SSE and push subscriptions.

Every request names the user with ``user_id`` and proves it with ``user_hash`` (hex
HMAC-SHA256 of the user id, keyed by the in-app channel's identity secret), sent as the
headers ``X-Headstart-User-Id`` and ``X-Headstart-User-Hash`` or as query parameters (for
``EventSource``, which cannot set headers). A missing or wrong hash is 401; a message of
another person is 404.

Shown, dismissed and completed are appended to the event log as track events
``In-App Message Shown``, ``In-App Message Dismissed`` and ``In-App Message Completed``, with
the client's ``messageId`` or a deterministic one, so repeats are dropped as duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headstart.channels.inapp import verify_user_hash
from headstart.channels.inbox import ACTIONS, InboxMessage, InboxStore, current_message
from headstart.channels.push import PushSubscriptions, load_vapid_key, public_key_text
from headstart.errors import HeadstartError, InvalidInput, NotFound, Overloaded, Unauthorized
from headstart.ingest.normalize import IngestContext, normalize
from headstart.runtime import Runtime
from headstart.timeutil import to_iso

logger = logging.getLogger(__name__)

USER_HEADER = "x-headstart-user-id"
HASH_HEADER = "x-headstart-user-hash"
INAPP_SOURCE = "in-app"
EVENT_NAMES = {
    "shown": "In-App Message Shown",
    "dismissed": "In-App Message Dismissed",
    "completed": "In-App Message Completed",
}
# The SSE loop looks for new messages this often.
STREAM_POLL_SECONDS = 0.25
STREAM_KEEPALIVE_SECONDS = 15.0
# A stream ends after this long and EventSource reconnects with Last-Event-ID, so a server
# shutdown waits at most this long for open streams.
STREAM_MAX_SECONDS = 60.0
STREAM_RETRY_MS = 2000


class NotConfigured(HeadstartError):
    status = 404
    code = "not_configured"


class KeyPair(BaseModel):
    model_config = ConfigDict(extra="ignore")

    p256dh: Annotated[StrictStr, Field(min_length=20, max_length=200)]
    auth: Annotated[StrictStr, Field(min_length=8, max_length=100)]


class PushSubscriptionIn(BaseModel):
    """The JSON of a browser ``PushSubscription`` (``subscription.toJSON()``)."""

    model_config = ConfigDict(extra="ignore")

    endpoint: Annotated[StrictStr, Field(pattern=r"^https?://", max_length=2000)]
    keys: KeyPair


class EndpointIn(BaseModel):
    endpoint: Annotated[StrictStr, Field(min_length=1, max_length=2000)]


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messageId: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class InAppCors:
    """ASGI middleware: CORS for ``/api/inapp`` only, so product pages on any origin can call it.

    Any origin is allowed because these endpoints authenticate with the user hash in headers or
    query parameters, never with cookies. The admin API gets no CORS headers.
    """

    PREFIX = "/api/inapp"
    ALLOW_HEADERS = b"content-type, x-headstart-user-id, x-headstart-user-hash, last-event-id"

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(self.PREFIX):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await self._preflight(send)
            return

        async def send_with_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"access-control-allow-origin", b"*")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_origin)

    async def _preflight(self, send: Send) -> None:
        headers = [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
            (b"access-control-allow-headers", self.ALLOW_HEADERS),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def inapp_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/inapp", tags=["in-app"], redirect_slashes=False)
    inbox = InboxStore(runtime.data_dir.state_path)
    subscriptions = PushSubscriptions(runtime.data_dir.state_path)

    def identity_secrets() -> list[str]:
        plan = runtime.plan()
        configs = [c for c in (plan.channels if plan else {}).values() if c.type == "in_app"]
        if not configs:
            raise NotConfigured("in-app messaging is off: the plan has no channel of type in_app")
        secrets = [os.environ.get(getattr(c, "identity_secret_env", ""), "") for c in configs]
        usable = [secret for secret in secrets if secret]
        if not usable:
            raise HeadstartError(
                "the in-app identity secret is not set in the server's environment",
                code="not_configured",
                status=503,
            )
        return usable

    def user_of(request: Request) -> str:
        user_id = request.headers.get(USER_HEADER) or request.query_params.get("user_id")
        presented = request.headers.get(HASH_HEADER) or request.query_params.get("user_hash")
        if not user_id or not presented:
            raise Unauthorized(
                "send user_id and user_hash (headers X-Headstart-User-Id and "
                "X-Headstart-User-Hash, or query parameters)",
                code="missing_user_hash",
            )
        if not verify_user_hash(identity_secrets(), user_id, presented):
            raise Unauthorized(
                f"user_hash does not match user_id {user_id!r}; compute it on your server as "
                "hex(hmac_sha256(secret, user_id))",
                code="invalid_user_hash",
            )
        return user_id

    def owned(user_id: str, message_id: str) -> InboxMessage:
        found = inbox.get(inbox.person_ids(user_id), message_id)
        if found is None:
            raise NotFound(f"no in-app message {message_id!r} for this user")
        return found

    @router.get("/messages", summary="The user's open in-app messages and the one to show now")
    def list_messages(request: Request, all: bool = False) -> dict[str, Any]:
        user_id = user_of(request)
        messages = inbox.messages(
            inbox.person_ids(user_id), runtime.clock.now_us(), include_closed=all
        )
        current = current_message(messages)
        return {
            "user_id": user_id,
            "current": current.to_json() if current else None,
            "messages": [message.to_json() for message in messages],
        }

    @router.get("/messages/{message_id}", summary="One in-app message of the user")
    def get_message(request: Request, message_id: str) -> dict[str, Any]:
        return owned(user_of(request), message_id).to_json()

    @router.post(
        "/messages/{message_id}/{action}",
        summary="Record that a message was shown, dismissed or completed",
    )
    async def act(
        request: Request,
        message_id: str,
        action: str,
        body: Annotated[ActionIn | None, Body()] = None,
    ) -> dict[str, Any]:
        if action not in ACTIONS:
            raise NotFound(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        user_id = user_of(request)
        message = owned(user_id, message_id)
        now = runtime.clock.now_us()
        inbox.record(message.message_id, action, now)
        await _log_action(runtime, user_id, message, action, now, body or ActionIn())
        return owned(user_id, message_id).to_json()

    @router.get("/stream", summary="Server-sent events: each new in-app message as it arrives")
    async def stream(request: Request, after: int | None = None) -> StreamingResponse:
        user_id = user_of(request)
        last_event = request.headers.get("last-event-id")
        cursor = after if after is not None else _int_or_zero(last_event)
        return StreamingResponse(
            _events(runtime, inbox, request, user_id, cursor),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/push/key", summary="The VAPID public key for PushManager.subscribe()")
    def push_key() -> dict[str, str]:
        plan = runtime.plan()
        for name, config in (plan.channels if plan else {}).items():
            if config.type != "web_push":
                continue
            secret = os.environ.get(getattr(config, "vapid_private_key_env", ""), "")
            try:
                return {"channel": name, "public_key": public_key_text(load_vapid_key(secret))}
            except ValueError:
                logger.error("channel %s: the VAPID private key is missing or invalid", name)
        raise NotConfigured("Web Push is off: the plan has no usable channel of type web_push")

    @router.post(
        "/push/subscriptions", status_code=201, summary="Register the browser's push subscription"
    )
    def add_subscription(request: Request, subscription: PushSubscriptionIn) -> dict[str, str]:
        user_id = user_of(request)
        subscriptions.add(
            user_id,
            subscription.endpoint,
            subscription.keys.p256dh,
            subscription.keys.auth,
            runtime.clock.now_us(),
        )
        return {"endpoint": subscription.endpoint, "user_id": user_id}

    @router.delete(
        "/push/subscriptions", status_code=204, summary="Remove one of the user's subscriptions"
    )
    def remove_subscription(request: Request, endpoint: EndpointIn) -> Response:
        user_id = user_of(request)
        if not subscriptions.remove(endpoint.endpoint, user_id):
            raise NotFound("this user has no push subscription with that endpoint")
        return Response(status_code=204)

    return router


async def _log_action(
    runtime: Runtime,
    user_id: str,
    message: InboxMessage,
    action: str,
    now: int,
    body: ActionIn,
) -> None:
    """Append the action to the event log as a track call, durably before returning."""
    source = runtime.sources.ensure(INAPP_SOURCE, historical=False)
    properties = {
        **body.properties,
        "message_id": message.message_id,
        "rule": message.rule,
        "step": message.step,
    }
    for key in ("template", "template_version"):
        if key in message.content:
            properties[key] = message.content[key]
    event = {
        "type": "track",
        "userId": user_id,
        "event": EVENT_NAMES[action],
        "messageId": body.messageId or f"inapp-{action}-{message.message_id}",
        "timestamp": to_iso(now),
        "properties": properties,
    }
    context = IngestContext(
        source_id=source.source_id, received_at=now, blocklist=runtime.blocklist()
    )
    try:
        record = normalize(event, "track", context)
    except HeadstartError as exc:
        raise InvalidInput(f"the {action} event is invalid: {exc.message}") from None
    await asyncio.wrap_future(runtime.writer.submit([record]))


async def _events(
    runtime: Runtime, inbox: InboxStore, request: Request, user_id: str, cursor: int
) -> AsyncIterator[str]:
    yield f"retry: {STREAM_RETRY_MS}\n\n"
    started = time.monotonic()
    last_sent = started
    while time.monotonic() - started < STREAM_MAX_SECONDS:
        if await request.is_disconnected():
            return
        new = await anyio.to_thread.run_sync(_new_messages, inbox, user_id, runtime, cursor)
        for message in new:
            cursor = message.cursor
            data = orjson.dumps(message.to_json()).decode()
            yield f"id: {message.cursor}\nevent: message\ndata: {data}\n\n"
            last_sent = time.monotonic()
        if time.monotonic() - last_sent >= STREAM_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(STREAM_POLL_SECONDS)


def _new_messages(
    inbox: InboxStore, user_id: str, runtime: Runtime, cursor: int
) -> list[InboxMessage]:
    try:
        person_ids = inbox.person_ids(user_id)
    except Overloaded:
        return []  # identity is being rebuilt: the stream waits and polls again
    return inbox.messages(person_ids, runtime.clock.now_us(), after=cursor)


def _int_or_zero(text: str | None) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0
