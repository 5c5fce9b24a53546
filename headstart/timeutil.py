"""UTC instants as integer microseconds since the Unix epoch, and a clock that tests can drive.

Every stored instant is an ``int`` of microseconds in UTC: it sorts, compares and subtracts
exactly in SQLite, DuckDB and Python. Local time zones appear only at the edges.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol

MICROS_PER_SECOND = 1_000_000
MICROS_PER_HOUR = 3600 * MICROS_PER_SECOND
MICROS_PER_DAY = 24 * MICROS_PER_HOUR

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_iso(text: str) -> int:
    """Parse an ISO-8601 timestamp into UTC microseconds.

    A timestamp without an offset is taken as UTC, as the Segment spec does. Raises
    ``ValueError`` with the offending text when it cannot be parsed.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + delta.microseconds


def to_datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / MICROS_PER_SECOND, tz=UTC)


def to_iso(micros: int | None) -> str | None:
    """Format UTC microseconds as ISO-8601 with a ``Z`` suffix and millisecond precision."""
    if micros is None:
        return None
    seconds, rest = divmod(micros, MICROS_PER_SECOND)
    return f"{_second_text(seconds)}.{rest // 1000:03d}Z"


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class Clock(Protocol):
    def now_us(self) -> int: ...


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000


class ManualClock:
    """A clock that only moves when a test moves it."""

    def __init__(self, start_us: int):
        self._now = start_us
        self._lock = threading.Lock()

    def now_us(self) -> int:
        with self._lock:
            return self._now

    def set(self, micros: int) -> None:
        with self._lock:
            self._now = micros

    def advance(self, micros: int) -> None:
        with self._lock:
            self._now += micros
