"""Local wall-clock time in a person's IANA time zone, for quiet hours, day caps and waits.

Instants stay UTC microseconds everywhere; these functions convert only to answer questions
such as "when is the next 09:00 in Europe/Berlin". A local time that does not exist (skipped
by a spring-forward change) resolves with the offset before the change, so 02:30 on
2024-03-31 in Europe/Berlin is 01:30 UTC (03:30 local). A local time that occurs twice (the
fall-back hour) resolves to its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@lru_cache(maxsize=1024)
def find_zone(name: str) -> ZoneInfo | None:
    """Return the zone called ``name``, or None when it is not a valid IANA name."""
    if not name or len(name) > 100:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def to_local(micros: int, zone: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(microseconds=micros)).astimezone(zone)


def from_local(moment: datetime) -> int:
    """Return the UTC microseconds of an aware datetime."""
    return (moment - _EPOCH) // _MICROSECOND


def local_instant(day: date, clock: time, zone: ZoneInfo) -> int:
    return from_local(datetime.combine(day, clock, tzinfo=zone))


def next_local_time(after: int, clock: time, zone: ZoneInfo) -> int:
    """Return the first instant at or after ``after`` whose local time of day is ``clock``."""
    day = to_local(after, zone).date()
    for offset in range(3):
        candidate = local_instant(day + timedelta(days=offset), clock, zone)
        if candidate >= after:
            return candidate
    raise AssertionError(f"no local {clock} within three days after {after}")


def local_day_bounds(at: int, zone: ZoneInfo) -> tuple[int, int]:
    """Return [start, end) of the local calendar day containing ``at``; 23 or 25 h on DST days."""
    day = to_local(at, zone).date()
    return local_instant(day, time(0), zone), local_instant(day + timedelta(days=1), time(0), zone)


def quiet_until(at: int, start: time, end: time, zone: ZoneInfo) -> int | None:
    """Return when the quiet period around ``at`` ends, or None when ``at`` is not in one.

    The period runs from ``start`` (inclusive) to ``end`` (exclusive) in local time and wraps
    past midnight when ``start`` is later than ``end`` (21:00 to 08:00).
    """
    local = to_local(at, zone).time().replace(tzinfo=None)
    inside = start <= local < end if start < end else (local >= start or local < end)
    if not inside:
        return None
    return next_local_time(at, end, zone)


def time_of_day(micros: int, zone: ZoneInfo) -> time:
    """Return the local time of day of an instant, to the second."""
    local = to_local(micros, zone)
    return time(local.hour, local.minute, local.second)
