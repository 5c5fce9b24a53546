"""The storage interface of the event log, so another backend can be added beside SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from headstart.events import LoggedEvent
from headstart.ingest.normalize import LogRecord


@dataclass(frozen=True, slots=True)
class AppendResult:
    accepted: int
    duplicates: int


class EventLog(Protocol):
    def append(self, records: Sequence[LogRecord]) -> AppendResult:
        """Durably append records in one transaction, skipping (source, messageId) repeats."""
        ...

    def append_many(self, groups: Sequence[Sequence[LogRecord]]) -> list[AppendResult]:
        """Append several requests' records in one transaction; one result per group."""
        ...

    def read(self, after_seq: int, limit: int) -> list[LoggedEvent]:
        """Return up to ``limit`` events with ``seq > after_seq`` in sequence order."""
        ...

    def head(self) -> int:
        """Return the highest sequence number, or 0 for an empty log."""
        ...

    def events_at(self, seqs: Sequence[int]) -> list[LoggedEvent]:
        """Return the events with these sequence numbers, in sequence order."""
        ...

    def close(self) -> None: ...
