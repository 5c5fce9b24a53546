"""Turn one decoded message into a log record: validate, fill ids and correct the clock.

Each failure raises ``InvalidInput`` or ``PayloadTooLarge`` whose message names the field,
the value and the fix, so a batch can report it per event and keep the valid ones.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from headstart.errors import InvalidInput, PayloadTooLarge
from headstart.events import MESSAGE_TYPES
from headstart.ingest.wire import WIRE_MODELS, passes_fast_check
from headstart.timeutil import MICROS_PER_DAY, parse_iso, to_iso

# Bytes normalization may add to an event (ids and four timestamps); the per-event limit is
# applied to the normalized JSON minus this allowance.
NORMALIZED_OVERHEAD_BYTES = 256

# Years before this are almost always a zero or a unit mistake (seconds read as milliseconds).
EARLIEST_TIMESTAMP_US = parse_iso("1990-01-01T00:00:00Z")


@dataclass(frozen=True, slots=True)
class Limits:
    """Ingest limits. The byte limits apply to the decompressed JSON."""

    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    max_batch_events: int = 2500
    max_depth: int = 32
    max_future_us: int = MICROS_PER_DAY
    # Live events older than this must come through a historical source or `headstart import`.
    max_live_age_us: int = 30 * MICROS_PER_DAY


@dataclass(frozen=True)
class IngestContext:
    """What a request knows besides the message itself."""

    source_id: str
    received_at: int
    historical: bool = False
    batch_sent_at: int | None = None
    # Why the batch's sentAt is unusable; events that would rely on it are rejected.
    batch_sent_at_error: str | None = None
    blocklist: frozenset[str] = field(default_factory=frozenset)
    limits: Limits = field(default_factory=Limits)

    @cached_property
    def received_at_text(self) -> str | None:
        return to_iso(self.received_at)

    @cached_property
    def batch_sent_at_text(self) -> str | None:
        return to_iso(self.batch_sent_at)


class LogRecord(NamedTuple):
    """A validated event ready to append to the log (a tuple: cheap to build per event)."""

    source_id: str
    message_id: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: int
    received_at: int
    body: bytes


def normalize(raw: Any, message_type: str | None, ctx: IngestContext) -> LogRecord:
    """Validate one message and return its log record.

    ``message_type`` comes from the endpoint path; for ``/v1/batch`` it is None and the
    message's own ``type`` field decides.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"each event must be a JSON object, got {type(raw).__name__}", code="invalid_event"
        )
    kind = message_type or _batch_item_type(raw)
    if not passes_fast_check(kind, raw):
        try:
            WIRE_MODELS[kind].model_validate(raw)
        except ValidationError as exc:
            raise InvalidInput(_describe(exc), code="invalid_event") from None

    # The log keeps ids as sent, placeholders included, so a rebuild with a changed blocklist
    # sees them; identity resolution skips placeholders. Ingest only rejects an event that has
    # no usable id under the current blocklist.
    user_id = _id_text(raw.get("userId"), "userId")
    anonymous_id = _id_text(raw.get("anonymousId"), "anonymousId")
    usable_user_id = _usable(user_id, ctx.blocklist)
    if kind == "alias":
        _require_alias_ids(raw, usable_user_id, ctx.blocklist)
    elif usable_user_id is None and _usable(anonymous_id, ctx.blocklist) is None:
        raise InvalidInput(
            "the event has neither userId nor anonymousId (null, empty and placeholder values "
            "such as 'undefined' count as absent); set at least one of them",
            code="missing_identity",
        )

    client_timestamp = raw.get("timestamp")
    original_timestamp = raw.get("originalTimestamp")
    sent_at = raw.get("sentAt")
    timestamp = _event_time(client_timestamp, original_timestamp, sent_at, ctx)
    message_id = raw.get("messageId") or f"hs-{uuid.uuid4()}"

    body = dict(raw)
    body["type"] = kind
    body["messageId"] = message_id
    if user_id is not None:
        body["userId"] = user_id
    if anonymous_id is not None:
        body["anonymousId"] = anonymous_id
    body["timestamp"] = to_iso(timestamp)
    # The client's own values are kept as sent; headstart adds only the corrected timestamp.
    body["originalTimestamp"] = client_timestamp or original_timestamp
    body["sentAt"] = sent_at or ctx.batch_sent_at_text
    body["receivedAt"] = ctx.received_at_text
    if kind == "page" or kind == "screen":
        _copy_name_to_properties(body)
    data = _encode(body, raw, ctx.limits)

    return LogRecord(
        source_id=ctx.source_id,
        message_id=message_id,
        type=kind,
        event=raw.get("event") if kind == "track" else raw.get("name"),
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=timestamp,
        received_at=ctx.received_at,
        body=data,
    )


def _encode(body: dict[str, Any], raw: dict[str, Any], limits: Limits) -> bytes:
    """Serialize the normalized body, enforcing the size and nesting limits."""
    try:
        data = orjson.dumps(body)
    except orjson.JSONEncodeError:
        # orjson refuses more than 254 levels of nesting.
        _check_depth(raw, limits.max_depth)
        raise
    if len(data) > limits.max_event_bytes + NORMALIZED_OVERHEAD_BYTES:
        size = len(orjson.dumps(raw))
        over = "over" if size > limits.max_event_bytes else "with the fields headstart adds, over"
        raise PayloadTooLarge(
            f"event is {size} bytes as compact JSON, {over} the limit of "
            f"{limits.max_event_bytes} bytes; send fewer or smaller properties or traits",
            code="event_too_large",
        )
    # Each level of nesting needs a bracket, so few brackets prove a shallow event.
    if data.count(b"{") + data.count(b"[") > limits.max_depth:
        _check_depth(raw, limits.max_depth)
    return data


def _batch_item_type(raw: dict[str, Any]) -> str:
    kind = raw.get("type")
    if kind is None:
        raise InvalidInput(
            f"type is missing; a batch event needs one of {', '.join(MESSAGE_TYPES)}",
            code="invalid_event",
        )
    if kind not in MESSAGE_TYPES:
        raise InvalidInput(
            f"type {kind!r} is not a message type; use one of {', '.join(MESSAGE_TYPES)}",
            code="invalid_event",
        )
    return str(kind)


def _check_depth(value: Any, max_depth: int) -> None:
    """Raise when containers nest deeper than ``max_depth`` levels below the message."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise InvalidInput(
                f"the event nests objects or arrays more than {max_depth} levels deep; "
                "flatten its properties or traits",
                code="too_deep",
            )
        if isinstance(item, dict):
            stack.extend(
                (child, depth + 1) for child in item.values() if isinstance(child, (dict, list))
            )
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))


# Pydantic reports an id of the wrong type once per member of the union, under locations such
# as ("userId", "str"). The message combines them into one problem.
_UNION_MEMBERS = frozenset(("str", "int"))


def _describe(exc: ValidationError) -> str:
    """Name each invalid field, its value and what was expected, in one line per problem."""
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"] if not str(part).startswith("function")]
        shown = _shown(error.get("input"))
        if error["type"] == "missing":
            parts.append(f"{'.'.join(loc)} is required")
        elif len(loc) == 2 and loc[1] in _UNION_MEMBERS:
            problem = f"{loc[0]}={shown}: expected a string or an integer"
            if problem not in parts:
                parts.append(problem)
        else:
            parts.append(f"{'.'.join(loc)}={shown}: {error['msg'].lower()}")
    return "; ".join(parts)


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _id_text(value: str | int | None, field_name: str) -> str | None:
    """Return an id as text, or None when it is absent or empty."""
    if value is None:
        return None
    text = str(value)
    if len(text) > 256:
        raise InvalidInput(
            f"{field_name} is {len(text)} characters long; ids are limited to 256",
            code="invalid_event",
        )
    return text if text.strip() else None


def _usable(text: str | None, blocklist: frozenset[str]) -> str | None:
    """Return ``text`` unless it is absent or a placeholder from the blocklist."""
    if text is None or text.strip().lower() in blocklist:
        return None
    return text


def _require_alias_ids(raw: dict[str, Any], user_id: str | None, blocklist: frozenset[str]) -> None:
    previous = raw.get("previousId")
    if user_id is None:
        raise InvalidInput(
            "an alias call needs userId, the id the user is known by from now on",
            code="missing_identity",
        )
    if _usable(_id_text(previous, "previousId"), blocklist) is None:
        raise InvalidInput(
            f"previousId={previous!r} is empty or a placeholder; send the id to merge into userId",
            code="missing_identity",
        )


def _event_time(
    timestamp: str | None, original: str | None, sent_at: str | None, ctx: IngestContext
) -> int:
    """Return the corrected timestamp in UTC microseconds.

    A live event's client clock is corrected as receivedAt - (sentAt - timestamp). A
    historical event keeps its client timestamp as sent.
    """
    client_ts = _parse_time(timestamp, "timestamp") if timestamp else None
    if client_ts is None and original:
        client_ts = _parse_time(original, "originalTimestamp")
    if not sent_at and ctx.batch_sent_at_error is not None:
        raise InvalidInput(ctx.batch_sent_at_error, code="invalid_timestamp")
    sent = _parse_time(sent_at, "sentAt") if sent_at else ctx.batch_sent_at

    if client_ts is None:
        corrected = ctx.received_at
    elif ctx.historical or sent is None:
        corrected = client_ts
    else:
        corrected = ctx.received_at - (sent - client_ts)

    _check_bounds(corrected, client_ts, ctx)
    return corrected


def _parse_time(text: str, field_name: str) -> int:
    try:
        return parse_iso(text)
    except ValueError:
        raise InvalidInput(
            f"{field_name}={text!r} is not an ISO-8601 timestamp; send e.g. 2024-05-01T12:00:00Z",
            code="invalid_timestamp",
        ) from None


def _check_bounds(corrected: int, client_ts: int | None, ctx: IngestContext) -> None:
    shown = client_ts if client_ts is not None else corrected
    if corrected > ctx.received_at + ctx.limits.max_future_us:
        raise InvalidInput(
            f"timestamp {to_iso(shown)} is more than a day in the future; fix the client clock or "
            "send sentAt so headstart can correct it",
            code="timestamp_in_future",
        )
    if corrected < EARLIEST_TIMESTAMP_US:
        raise InvalidInput(
            f"timestamp {to_iso(shown)} is before 1990-01-01; check that the value is not zero or in "
            "the wrong unit",
            code="timestamp_too_old",
        )
    if not ctx.historical and corrected < ctx.received_at - ctx.limits.max_live_age_us:
        days = ctx.limits.max_live_age_us // MICROS_PER_DAY
        raise InvalidInput(
            f"timestamp {to_iso(shown)} is more than {days} days old; send old events through a "
            "historical source (headstart sources add NAME --historical) or headstart import",
            code="timestamp_too_old",
        )


def _copy_name_to_properties(body: dict[str, Any]) -> None:
    """Put a page or screen name into ``properties.name``, as Segment does."""
    name = body.get("name")
    if name is None:
        return
    properties = body.get("properties")
    # A copy, so the caller's message is left as it was.
    properties = dict(properties) if isinstance(properties, dict) else {}
    properties.setdefault("name", name)
    body["properties"] = properties
