"""Events the triggers emit (``emit`` and ``set_trait`` steps), appended to the event log.

The engine writes each event into ``trigger_emits`` inside the processor's transaction; after
the commit, ``LogSink`` appends the pending ones to the log through the ingest normalization,
under the source ``headstart``, and marks them appended. The message id is derived from the
send intent's idempotency key, so a crash between the append and the mark appends nothing
twice: the log drops a repeated (source, messageId).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from headstart.errors import HeadstartError
from headstart.ingest.normalize import IngestContext, LogRecord, normalize
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.sources import SourceRegistry
from headstart.sqlite import connect
from headstart.timeutil import Clock

logger = logging.getLogger(__name__)

SOURCE_NAME = "headstart"


def emitted_message_id(idempotency_key: str) -> str:
    """Return the messageId of an emitted event: stable for one send intent."""
    return "hs-trigger-" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:32]


class EventSink(Protocol):
    def append(self, messages: Sequence[dict[str, Any]]) -> None:
        """Append Segment messages to the event log."""
        ...


class LogSink:
    """Appends emitted events to a SQLite event log as the ``headstart`` source."""

    def __init__(self, log: SQLiteEventLog, clock: Clock):
        self.log = log
        self.clock = clock
        self._source_id: str | None = None

    def append(self, messages: Sequence[dict[str, Any]]) -> None:
        ctx = IngestContext(
            source_id=self._source(), received_at=self.clock.now_us(), historical=True
        )
        records: list[LogRecord] = []
        for message in messages:
            try:
                records.append(normalize(message, None, ctx))
            except HeadstartError as exc:
                logger.error(
                    "emitted event %s is invalid and was not logged: %s",
                    message.get("messageId"),
                    exc.message,
                )
        if records:
            self.log.append(records)

    def _source(self) -> str:
        if self._source_id is None:
            conn = connect(self.log.path)
            try:
                self._source_id = (
                    SourceRegistry(conn).ensure(SOURCE_NAME, historical=True).source_id
                )
            finally:
                conn.close()
        return self._source_id
