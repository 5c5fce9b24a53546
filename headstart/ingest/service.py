"""The ingest path of one HTTP request: decode, authenticate, validate, durably append.

Batch rule: every valid event of a batch is committed; each invalid one is reported by its
index, code and message. The response is 200 when at least one event was accepted (or all
were duplicates), and 400 when every event was invalid.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from headstart.errors import HeadstartError, InvalidInput, PayloadTooLarge
from headstart.ingest.auth import write_key_from
from headstart.ingest.body import decode_body
from headstart.ingest.normalize import IngestContext, Limits, LogRecord, normalize
from headstart.ingest.writer import GroupCommitWriter
from headstart.sources import SourceRegistry
from headstart.timeutil import Clock, parse_iso

TRUE_VALUES = ("1", "true", "yes")


@dataclass(slots=True)
class IngestResult:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


class IngestService:
    def __init__(
        self,
        sources: SourceRegistry,
        writer: GroupCommitWriter,
        clock: Clock,
        blocklist: frozenset[str],
        limits: Limits | None = None,
    ):
        self.sources = sources
        self.writer = writer
        self.clock = clock
        self.blocklist = blocklist
        self.limits = limits or Limits()

    async def handle(
        self,
        message_type: str | None,
        raw: bytes,
        authorization: str | None,
        historical_flag: str | None,
    ) -> IngestResult:
        received_at = self.clock.now_us()
        body = decode_body(raw, self.limits.max_batch_bytes)
        source = self.sources.authenticate(write_key_from(authorization, body))
        historical = source.historical or (historical_flag or "").lower() in TRUE_VALUES

        sent_at_error = None
        if message_type is None:
            items, sent_at, shared_context = _batch_items(body, self.limits)
            sent_at_error = _sent_at_error(body)
        else:
            items, sent_at, shared_context = [body], None, None
        ctx = IngestContext(
            source_id=source.source_id,
            received_at=received_at,
            historical=historical,
            batch_sent_at=sent_at,
            batch_sent_at_error=sent_at_error,
            blocklist=self.blocklist,
            limits=self.limits,
        )

        records: list[LogRecord] = []
        rejected: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                if shared_context is not None and isinstance(item, dict):
                    item = _with_shared_context(item, shared_context)
                records.append(normalize(item, message_type, ctx))
            except HeadstartError as exc:
                if message_type is not None:
                    raise
                rejected.append({"index": index, "code": exc.code, "message": exc.message})

        if not records:
            return IngestResult(
                400,
                {
                    "code": "invalid_batch",
                    "message": f"all {len(items)} events of the batch are invalid; see rejected",
                    "rejected": rejected,
                },
            )
        result = await asyncio.wrap_future(self.writer.submit(records))
        response: dict[str, Any] = {
            "success": True,
            "accepted": result.accepted,
            "duplicates": result.duplicates,
        }
        if rejected:
            response["rejected"] = rejected
        return IngestResult(200, response)


def _batch_items(body: Any, limits: Limits) -> tuple[list[Any], int | None, dict[str, Any] | None]:
    if not isinstance(body, dict):
        raise InvalidInput(
            "a batch body must be a JSON object with a 'batch' array", code="invalid_batch"
        )
    items = body.get("batch")
    if not isinstance(items, list):
        raise InvalidInput(
            "the body has no 'batch' array; send {\"batch\": [event, ...]}", code="invalid_batch"
        )
    if not items:
        raise InvalidInput(
            "the 'batch' array is empty; send at least one event", code="invalid_batch"
        )
    if len(items) > limits.max_batch_events:
        raise PayloadTooLarge(
            f"the batch has {len(items)} events, over the limit of {limits.max_batch_events}; "
            "split it",
            code="batch_too_large",
        )
    sent_at = body.get("sentAt")
    parsed_sent_at = None
    if isinstance(sent_at, str):
        try:
            parsed_sent_at = parse_iso(sent_at)
        except ValueError:
            parsed_sent_at = None
    context = body.get("context")
    return items, parsed_sent_at, context if isinstance(context, dict) and context else None


def _sent_at_error(body: dict[str, Any]) -> str | None:
    """Describe an unusable batch ``sentAt``; the events that need it are rejected one by one."""
    sent_at = body.get("sentAt")
    if sent_at is None:
        return None
    if isinstance(sent_at, str):
        try:
            parse_iso(sent_at)
        except ValueError:
            pass
        else:
            return None
    return (
        f"the batch's sentAt={sent_at!r} is not an ISO-8601 timestamp, and this event has no "
        "sentAt of its own; send e.g. 2024-05-01T12:00:00Z"
    )


def _with_shared_context(item: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Apply batch-level context to one event; the event's own keys win."""
    own = item.get("context")
    merged = dict(shared)
    if isinstance(own, dict):
        merged.update(own)
    elif own is not None:
        return item
    return {**item, "context": merged}
