"""Building blocks shared by retention, time-to-value and discovery.

- ``Notice``: a machine-readable code with a sentence, carried by results instead of raising.
- The data's end (``as_of``): the instant up to which events are taken as complete.
- Time zones: validated IANA names and the DuckDB SQL that turns an instant into a local date.

Instants are UTC microseconds (``int``), as everywhere in headstart. The warehouse stores
``TIMESTAMP`` values without a zone that hold UTC, and ``epoch_us`` converts them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb

from headstart.analytics.warehouse import Warehouse
from headstart.errors import InvalidInput
from headstart.timeutil import parse_iso

Source = Warehouse | duckdb.DuckDBPyConnection

# Machine-readable result codes. Each names a condition of the data, not a failure.
NO_DATA = "NO_DATA"
LOW_SAMPLE = "LOW_SAMPLE"
PARTIAL_COHORT = "PARTIAL_COHORT"
UNOBSERVED_CELLS = "UNOBSERVED_CELLS"
NO_VARIATION = "NO_VARIATION"
FEW_CANDIDATES = "FEW_CANDIDATES"
MULTIPLE_VARIANTS = "MULTIPLE_VARIANTS"
MISSING_TRAIT = "MISSING_TRAIT"
CHURNED_EARLY = "CHURNED_EARLY"
ANALYSIS_FAILED = "ANALYSIS_FAILED"


@dataclass(frozen=True, slots=True)
class Notice:
    """A condition found in the data, such as ``LOW_SAMPLE``, with a sentence for people."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def notices_dict(notices: list[Notice]) -> dict[str, Any]:
    """Return the JSON fields for notices: ``codes`` (strings) and ``notices`` (with messages)."""
    return {
        "codes": list(dict.fromkeys(notice.code for notice in notices)),
        "notices": [notice.to_dict() for notice in notices],
    }


@contextmanager
def cursor_for(source: Source) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a cursor of its own on the warehouse, so concurrent requests do not share one."""
    conn = source.conn if isinstance(source, Warehouse) else source
    cursor = conn.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


def data_end(conn: duckdb.DuckDBPyConnection) -> int | None:
    """Return the latest event time in the warehouse, or None when it has no events."""
    row = conn.execute("SELECT epoch_us(max(ts)) FROM events").fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0])


def resolve_as_of(conn: duckdb.DuckDBPyConnection, as_of: int | None) -> int | None:
    """Return ``as_of`` when given, else the latest event time (None for an empty warehouse).

    Defaulting to the latest event rather than the wall clock keeps imported history honest:
    a dump that ends in 2023 has observed nothing after 2023.
    """
    if as_of is not None:
        return as_of
    return data_end(conn)


def check_zone(name: str, field: str) -> str:
    """Return ``name`` if it is an IANA time zone known to zoneinfo; raise InvalidInput if not."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"{field}={name!r} is not an IANA time zone; use a name such as UTC, "
            "Europe/Berlin or America/New_York"
        ) from None
    return name


def local_date_sql(timestamp_sql: str, zone: str) -> str:
    """Return SQL for the local calendar date in ``zone`` of a UTC ``TIMESTAMP`` expression.

    ``zone`` must have passed ``check_zone``, which limits it to IANA names, so it is safe to
    inline as a string literal.
    """
    if zone == "UTC":
        return f"CAST({timestamp_sql} AS DATE)"
    literal = sql_string(zone)
    return f"CAST(timezone({literal}, timezone('UTC', {timestamp_sql})) AS DATE)"


class Params:
    """Named parameters of one DuckDB query; ``add`` returns the placeholder to put in the SQL.

    DuckDB rejects a named parameter that the query does not use, so each value is added at
    the spot that uses it.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return "$" + name


def sql_string(value: str) -> str:
    """Quote ``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def json_path(key: str) -> str:
    """Return the DuckDB JSON path of a top-level or dotted key, such as ``$."a"."b"``."""
    parts = [part for part in key.split(".") if part]
    if not parts:
        raise InvalidInput(f"{key!r} is not a property or trait name; use a name such as plan")
    return "$" + "".join('."' + part.replace('"', '\\"') + '"' for part in parts)


def share(part: int, whole: int) -> float | None:
    """Return ``part / whole``, or None when ``whole`` is zero."""
    return None if whole == 0 else part / whole


def finite_or_none(value: float | None) -> float | None:
    """Map NaN and infinities to None, so JSON output carries null instead of invalid numbers."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def records(frame: Any) -> list[dict[str, Any]]:
    """Return a DataFrame's rows as dicts with NaN turned into None, ready for JSON."""
    rows: list[dict[str, Any]] = frame.to_dict(orient="records")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
    return rows


ParamValue = str | list[str] | None


class ParamReader:
    """Typed access to request parameters given as text, as the REST API and CLI pass them.

    A missing or empty value returns the default. Each parse error raises InvalidInput
    naming the parameter, the value and an example of a valid one.
    """

    def __init__(self, values: Mapping[str, ParamValue]):
        self.values = values

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        if isinstance(value, list):
            value = value[-1] if value else None
        if value is None or not value.strip():
            return None
        return value.strip()

    def texts(self, name: str) -> tuple[str, ...]:
        value = self.values.get(name)
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        return tuple(item.strip() for item in items if item.strip())

    def integer(self, name: str, default: int) -> int:
        text = self.text(name)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise InvalidInput(f"{name}={text!r} is not a whole number, e.g. {default}") from None

    def number(self, name: str, default: float | None) -> float | None:
        text = self.text(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            raise InvalidInput(f"{name}={text!r} is not a number, e.g. 7 or 0.5") from None
        if not math.isfinite(value):
            raise InvalidInput(f"{name}={text!r} is not a finite number")
        return value

    def instant(self, name: str) -> int | None:
        text = self.text(name)
        if text is None:
            return None
        try:
            return parse_iso(text)
        except ValueError:
            raise InvalidInput(
                f"{name}={text!r} is not an ISO-8601 time, e.g. 2024-01-31 or 2024-01-31T12:00:00Z"
            ) from None

    def integer_list(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        """Parse ``0-7,14,30`` (ranges inclusive) into a tuple of integers."""
        ranges = self.ranges(name)
        if ranges is None:
            return default
        values: list[int] = []
        for lo, hi in ranges:
            values.extend(range(lo, hi + 1))
        return tuple(values)

    def ranges(self, name: str) -> tuple[tuple[int, int], ...] | None:
        """Parse ``1-1,2-7,8`` into ((1, 1), (2, 7), (8, 8)); None when the value is absent."""
        texts = self.texts(name)
        if not texts:
            return None
        parsed: list[tuple[int, int]] = []
        for part in (piece.strip() for text in texts for piece in text.split(",")):
            lo_text, dash, hi_text = part.partition("-")
            try:
                lo = int(lo_text)
                hi = int(hi_text) if dash else lo
            except ValueError:
                raise InvalidInput(
                    f"{name}={','.join(texts)!r} is not a list of numbers and ranges, "
                    "e.g. 0-7,14,30"
                ) from None
            parsed.append((lo, hi))
        return tuple(parsed)


def listing(items: list[str], shown: int = 10) -> str:
    """Join the first ``shown`` items, and say how many more there are."""
    text = ", ".join(items[:shown])
    if len(items) > shown:
        text += f" and {len(items) - shown} more"
    return text
