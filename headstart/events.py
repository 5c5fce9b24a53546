"""The event types headstart accepts, as the Segment spec defines them, and the logged form.

The wire models validate one message at the HTTP boundary. Their field names follow the Segment
spec (camelCase), because that is what the official SDKs send. Inside headstart, an event is a
``LoggedEvent``: a row of the event log with its sequence number and corrected timestamp.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

MessageType = Literal["track", "identify", "page", "screen", "group", "alias"]
MESSAGE_TYPES: tuple[MessageType, ...] = ("track", "identify", "page", "screen", "group", "alias")

PAGE_EVENT = "Page Viewed"
SCREEN_EVENT = "Screen Viewed"


class LoggedEvent:
    """One event as the log stores it.

    ``timestamp`` is the corrected instant used by every later stage, in UTC microseconds.
    ``body`` is the normalized message: the fields the client sent plus ``messageId``,
    ``originalTimestamp``, ``sentAt``, ``receivedAt`` and the corrected ``timestamp``. It is
    parsed from the stored JSON on first use, because most stages need only the columns.
    """

    __slots__ = (
        "_body",
        "_raw",
        "anonymous_id",
        "event",
        "message_id",
        "received_at",
        "seq",
        "source_id",
        "timestamp",
        "type",
        "user_id",
    )

    def __init__(
        self,
        seq: int,
        source_id: str,
        message_id: str,
        type: MessageType,
        event: str | None,
        user_id: str | None,
        anonymous_id: str | None,
        timestamp: int,
        received_at: int,
        body: dict[str, Any] | None = None,
        raw: bytes | None = None,
    ):
        self.seq = seq
        self.source_id = source_id
        self.message_id = message_id
        self.type = type
        self.event = event
        self.user_id = user_id
        self.anonymous_id = anonymous_id
        self.timestamp = timestamp
        self.received_at = received_at
        self._body = body
        self._raw = raw

    def __repr__(self) -> str:
        return f"LoggedEvent(seq={self.seq}, type={self.type!r}, event={self.event!r})"

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = orjson.loads(self._raw) if self._raw is not None else {}
        return self._body

    @property
    def may_carry_traits(self) -> bool:
        """False when the stored JSON has no "traits" key anywhere, checked without parsing."""
        if self._body is not None or self._raw is None:
            return True
        return b'"traits"' in self._raw

    @property
    def previous_id(self) -> str | None:
        value = self.body.get("previousId")
        return None if value is None else str(value)

    @property
    def properties(self) -> dict[str, Any]:
        return self.body.get("properties") or {}

    @property
    def traits(self) -> dict[str, Any]:
        """Traits from an identify or group call, or ``context.traits`` on any other call.

        An identify call's ``context.traits`` count too, overridden by its top-level traits,
        because the RudderStack SDKs (rudder-sdk-python 2.1) send identify traits only there.
        """
        if self.type == "group":
            return self.body.get("traits") or {}
        if self.type == "identify":
            context_traits = self.context_traits
            top_level = self.body.get("traits") or {}
            return {**context_traits, **top_level} if context_traits else top_level
        return self.context_traits

    @property
    def context_traits(self) -> dict[str, Any]:
        context = self.body.get("context") or {}
        traits = context.get("traits")
        return traits if isinstance(traits, dict) else {}


def counted_name(message_type: str, event: str | None) -> str | None:
    """Return the name an event is counted and matched under, or None for identify/alias/group.

    A track call counts under its event name. Page and screen calls count as ``Page Viewed``
    and ``Screen Viewed``, with the page name in ``properties.name``.
    """
    if message_type == "track":
        return event
    if message_type == "page":
        return PAGE_EVENT
    if message_type == "screen":
        return SCREEN_EVENT
    return None
