"""The analytical store: ``analytics.duckdb``, a DuckDB copy of the log and state for queries.

The warehouse is derived data, rebuilt from ``log.sqlite`` and ``state.sqlite``.

Tables (the columns are a contract shared by every analysis; new columns may be added):

- ``events``: one row per logged track, page, screen, identify, group and alias call that
  belongs to a person. ``event`` is the counted name (``Page Viewed`` / ``Screen Viewed`` for
  page and screen calls, NULL for identify, group and alias), ``ts`` the corrected event time in
  UTC, ``person_id`` the surviving person after every merge seen so far.
- ``persons``: person columns of the state plus ``traits`` as a JSON object of current values.
- ``milestones``: the milestones each person reached and when.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from headstart.timeutil import parse_iso

logger = logging.getLogger(__name__)

WAREHOUSE_FILE = "analytics.duckdb"

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT,
    person_id VARCHAR,
    type VARCHAR,
    event VARCHAR,
    ts TIMESTAMP,
    properties JSON,
    context JSON,
    user_id VARCHAR,
    anonymous_id VARCHAR,
    message_id VARCHAR
);
CREATE TABLE IF NOT EXISTS persons (
    person_id VARCHAR,
    user_id VARCHAR,
    first_seen TIMESTAMP,
    last_seen TIMESTAMP,
    signup_at TIMESTAMP,
    activated_at TIMESTAMP,
    traits JSON
);
CREATE TABLE IF NOT EXISTS milestones (
    person_id VARCHAR,
    milestone VARCHAR,
    reached_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS warehouse_meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
"""

DATA_TABLES = ("events", "persons", "milestones")

Instant = int | str | datetime


def create_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the warehouse tables when they do not exist yet."""
    conn.execute(SCHEMA)


def to_micros(value: Instant) -> int:
    """Convert UTC microseconds, an ISO-8601 string or a datetime to UTC microseconds.

    A naive datetime or an ISO string without an offset is taken as UTC.
    """
    if isinstance(value, bool):
        raise TypeError(f"expected a time, got the boolean {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_iso(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return parse_iso(value.isoformat())


def _optional_micros(value: Instant | None) -> int | None:
    return None if value is None else to_micros(value)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def load_events(conn: duckdb.DuckDBPyConnection, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert events given as dicts straight into ``events``; return how many were inserted.

    For tests and notebooks that fill the warehouse without going through ingest. Each row needs
    ``person_id`` and ``ts`` (UTC microseconds, ISO-8601 or datetime) and usually ``event``;
    ``properties`` and ``context`` are dicts. ``type`` defaults to ``track`` when ``event`` is
    set and ``identify`` otherwise. ``seq`` defaults to the next number after the largest one
    in the table, in row order, and ``message_id`` to ``m<seq>``.
    """
    create_schema(conn)
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    next_seq = int(row[0]) + 1 if row is not None else 1
    columns: dict[str, list[Any]] = {name: [] for name in _EVENT_COLUMNS}
    for item in rows:
        seq = item.get("seq")
        if seq is None:
            seq = next_seq
        next_seq = max(next_seq, int(seq)) + 1
        event = item.get("event")
        columns["seq"].append(int(seq))
        columns["person_id"].append(item["person_id"])
        columns["type"].append(item.get("type") or ("track" if event is not None else "identify"))
        columns["event"].append(event)
        columns["ts"].append(to_micros(item["ts"]))
        columns["properties"].append(_json(item.get("properties", {})))
        columns["context"].append(_json(item.get("context", {})))
        columns["user_id"].append(item.get("user_id"))
        columns["anonymous_id"].append(item.get("anonymous_id"))
        columns["message_id"].append(item.get("message_id") or f"m{seq}")
    if not columns["seq"]:
        return 0
    batch = pa.table(columns, schema=_EVENT_ARROW)
    conn.execute(
        "INSERT INTO events SELECT seq, person_id, type, event, make_timestamp(ts),"
        " properties::JSON, context::JSON, user_id, anonymous_id, message_id FROM batch"
    )
    return int(batch.num_rows)


def load_persons(conn: duckdb.DuckDBPyConnection, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert persons given as dicts into ``persons``; return how many were inserted.

    Each row needs ``person_id``; ``user_id``, ``first_seen``, ``last_seen``, ``signup_at``,
    ``activated_at`` (times as in ``load_events``) and ``traits`` (a dict) are optional.
    """
    create_schema(conn)
    columns: dict[str, list[Any]] = {name: [] for name in _PERSON_COLUMNS}
    for item in rows:
        columns["person_id"].append(item["person_id"])
        columns["user_id"].append(item.get("user_id"))
        for name in ("first_seen", "last_seen", "signup_at", "activated_at"):
            columns[name].append(_optional_micros(item.get(name)))
        columns["traits"].append(_json(item.get("traits", {})))
    if not columns["person_id"]:
        return 0
    batch = pa.table(columns, schema=_PERSON_ARROW)
    conn.execute(
        "INSERT INTO persons SELECT person_id, user_id, make_timestamp(first_seen),"
        " make_timestamp(last_seen), make_timestamp(signup_at), make_timestamp(activated_at),"
        " traits::JSON FROM batch"
    )
    return int(batch.num_rows)


def load_milestones(conn: duckdb.DuckDBPyConnection, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert milestone rows (``person_id``, ``milestone``, ``reached_at``) into ``milestones``."""
    create_schema(conn)
    columns: dict[str, list[Any]] = {"person_id": [], "milestone": [], "reached_at": []}
    for item in rows:
        columns["person_id"].append(item["person_id"])
        columns["milestone"].append(item["milestone"])
        columns["reached_at"].append(to_micros(item["reached_at"]))
    if not columns["person_id"]:
        return 0
    batch = pa.table(columns, schema=_MILESTONE_ARROW)
    conn.execute(
        "INSERT INTO milestones SELECT person_id, milestone, make_timestamp(reached_at) FROM batch"
    )
    return int(batch.num_rows)


_EVENT_COLUMNS = (
    "seq",
    "person_id",
    "type",
    "event",
    "ts",
    "properties",
    "context",
    "user_id",
    "anonymous_id",
    "message_id",
)
_EVENT_ARROW = pa.schema(
    [
        ("seq", pa.int64()),
        ("person_id", pa.string()),
        ("type", pa.string()),
        ("event", pa.string()),
        ("ts", pa.int64()),
        ("properties", pa.string()),
        ("context", pa.string()),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("message_id", pa.string()),
    ]
)
_PERSON_COLUMNS = (
    "person_id",
    "user_id",
    "first_seen",
    "last_seen",
    "signup_at",
    "activated_at",
    "traits",
)
_PERSON_ARROW = pa.schema(
    [
        ("person_id", pa.string()),
        ("user_id", pa.string()),
        ("first_seen", pa.int64()),
        ("last_seen", pa.int64()),
        ("signup_at", pa.int64()),
        ("activated_at", pa.int64()),
        ("traits", pa.string()),
    ]
)
_MILESTONE_ARROW = pa.schema(
    [("person_id", pa.string()), ("milestone", pa.string()), ("reached_at", pa.int64())]
)
