"""The analytical store: ``analytics.duckdb``, a DuckDB copy of the log and state for queries.

The warehouse is derived data. ``Warehouse.sync`` copies the events the processor has applied
(log sequence numbers up to the state's offset), with each event's person resolved through the
state's identity graph, and refreshes the persons and milestones that changed since the last
sync. Deleting the file loses nothing: the next sync rebuilds it.

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
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from headstart.datadir import DataDir, DirectoryBusy
from headstart.events import PAGE_EVENT, SCREEN_EVENT
from headstart.timeutil import SystemClock, parse_iso

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
-- One row: how far the warehouse has copied the log and state.
CREATE TABLE IF NOT EXISTS warehouse_sync (
    log_offset BIGINT NOT NULL,
    plan_hash VARCHAR NOT NULL,
    merge_id BIGINT NOT NULL
);
INSERT INTO warehouse_sync SELECT 0, '', 0 WHERE NOT EXISTS (SELECT 1 FROM warehouse_sync);
"""

DATA_TABLES = ("events", "persons", "milestones")
# Part of the sync mark: a warehouse written by an older version is rebuilt, not extended.
WAREHOUSE_VERSION = "2"
# Events that trigger rules emit come from this source. They record what headstart did, not
# what the person did, so analyses would count them as activity: they stay out.
EMITTED_SOURCE = "headstart"

Instant = int | str | datetime


# Rows read from log.sqlite per copy step: large enough to amortise the per-step work, small
# enough to keep the Python lists of one step within tens of megabytes.
SYNC_CHUNK_ROWS = 100_000
# Identifier values looked up in state.sqlite per query (SQLite limits bound parameters).
_LOOKUP_CHUNK = 500


def create_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the warehouse tables when they do not exist yet."""
    conn.execute(SCHEMA)


def resolve_as_of(conn: duckdb.DuckDBPyConnection, as_of: int | None) -> int:
    """Return ``as_of``, or else the latest event time, or else the current time.

    Analyses default to the end of the data rather than the clock, so that imported history
    (where every conversion window ended long ago by the clock) reads as it did then.
    """
    if as_of is not None:
        return as_of
    row = conn.execute("SELECT epoch_us(max(ts)) FROM events").fetchone()
    if row is None or row[0] is None:
        return SystemClock().now_us()
    return int(row[0])


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


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one ``Warehouse.sync`` call copied."""

    offset: int
    events: int
    persons: int
    merges: int
    rebuilt: bool


@dataclass(slots=True)
class _Mark:
    """How far the warehouse has copied: log offset, state plan hash and last merge id."""

    offset: int = 0
    plan_hash: str = ""
    merge_id: int = 0


class Warehouse:
    """A DuckDB connection holding the warehouse tables, and the sync from a data directory.

    Without a data directory (``Warehouse(conn)``), ``sync`` has nothing to copy and returns an
    empty report; tests fill such a warehouse with ``load_events``. One ``Warehouse`` is safe to
    share between threads: ``lock`` serialises sync and queries on the one connection.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, data_dir: DataDir | None = None):
        self.conn = conn
        self.data_dir = data_dir
        self.lock = threading.RLock()
        create_schema(conn)

    @classmethod
    def open(cls, data_dir: DataDir) -> Warehouse:
        """Open (or create) ``analytics.duckdb`` in ``data_dir`` for reading and writing.

        DuckDB lets one process at a time open the file for writing, so this raises
        ``DirectoryBusy`` while another process (usually ``headstart serve``) has it open.
        """
        path = data_dir.root / WAREHOUSE_FILE
        try:
            conn = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise DirectoryBusy(
                f"{path} is open in another process ({exc}); query the running server "
                "instead, or stop the process that holds it"
            ) from None
        return cls(conn, data_dir)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def sync(self) -> SyncReport:
        """Copy what the processor applied since the last sync; rebuild after a state rebuild.

        The state is read in one SQLite read transaction, so the offset, identifiers, merges
        and persons all come from the same committed batch. A rebuild happens when the state's
        plan hash (plan plus admin separations) changed or its offset went backwards. Replaying
        the same log with the same plan gives the same state whatever the batch sizes, so a
        plan changed and changed back between two syncs needs no rebuild.
        """
        if self.data_dir is None or not self.data_dir.state_path.exists():
            return SyncReport(0, 0, 0, 0, rebuilt=False)
        with self.lock:
            state = _connect_reader(self.data_dir.state_path)
            log = _connect_reader(self.data_dir.log_path)
            try:
                state.execute("BEGIN")
                return self._sync_from(state, log)
            finally:
                state.close()
                log.close()

    def _sync_from(self, state: sqlite3.Connection, log: sqlite3.Connection) -> SyncReport:
        meta = dict(state.execute("SELECT key, value FROM meta").fetchall())
        offset = int(meta.get("log_offset") or 0)
        plan_hash = f"{meta.get('plan_hash') or ''}/v{WAREHOUSE_VERSION}"
        mark = self._mark()
        rebuild = mark.plan_hash != plan_hash or offset < mark.offset
        if not rebuild and offset == mark.offset:
            return SyncReport(offset, 0, 0, 0, rebuilt=False)

        conn = self.conn
        conn.execute("BEGIN TRANSACTION")
        try:
            if rebuild:
                if mark.offset or mark.plan_hash:
                    logger.info(
                        "state was rebuilt (plan hash %s -> %s, offset %d -> %d);"
                        " rebuilding the warehouse",
                        mark.plan_hash or "-",
                        plan_hash or "-",
                        mark.offset,
                        offset,
                    )
                for table in DATA_TABLES:
                    conn.execute(f"DELETE FROM {table}")
                mark = _Mark()
            merges, merge_id = self._apply_merges(state, mark.merge_id)
            events = self._copy_events(state, log, mark.offset, offset)
            persons = self._refresh_persons(state, mark.offset, initial=mark.offset == 0)
            self._save_mark(_Mark(offset, plan_hash, merge_id))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return SyncReport(offset, events, persons, merges, rebuilt=rebuild)

    # ---- merges -----------------------------------------------------------------------

    def _apply_merges(self, state: sqlite3.Connection, after_merge_id: int) -> tuple[int, int]:
        """Point events of persons merged since ``after_merge_id`` at their survivors.

        Returns the number of merges applied and the newest merge id.
        """
        rows = state.execute(
            "SELECT m.merge_id, m.merged, p.merged_into FROM merges m"
            " JOIN merged_persons p ON p.person_id = m.merged"
            " WHERE m.merge_id > ? ORDER BY m.merge_id",
            (after_merge_id,),
        ).fetchall()
        if not rows:
            row = state.execute("SELECT coalesce(max(merge_id), 0) FROM merges").fetchone()
            return 0, max(after_merge_id, int(row[0]))
        remap = pa.table(
            {
                "merged": [merged for _, merged, _ in rows],
                "survivor": [survivor for _, _, survivor in rows],
            }
        )
        conn = self.conn
        conn.register("sync_remap", remap)
        try:
            conn.execute(
                "UPDATE events SET person_id = r.survivor FROM"
                " (SELECT DISTINCT merged, survivor FROM sync_remap) r"
                " WHERE events.person_id = r.merged"
            )
            for table in ("persons", "milestones"):
                conn.execute(
                    f"DELETE FROM {table} WHERE person_id IN (SELECT merged FROM sync_remap)"
                )
        finally:
            conn.unregister("sync_remap")
        return len(rows), int(rows[-1][0])

    # ---- events -----------------------------------------------------------------------

    def _copy_events(
        self, state: sqlite3.Connection, log: sqlite3.Connection, after: int, upto: int
    ) -> int:
        """Copy log events with ``after < seq <= upto`` that belong to a person, except the
        ones trigger rules emitted."""
        copied = 0
        cursor = after
        emitted = _source_id(log, EMITTED_SOURCE)
        while cursor < upto:
            rows = log.execute(
                "SELECT seq, message_id, type, event, user_id, anonymous_id, timestamp, body,"
                " source_id FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (cursor, upto, SYNC_CHUNK_ROWS),
            ).fetchall()
            if not rows:
                break
            cursor = int(rows[-1][0])
            kept = [row[:-1] for row in rows if row[-1] != emitted]
            if kept:
                copied += self._insert_events(state, kept)
        return copied

    def _insert_events(self, state: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
        seqs, message_ids, types, names, user_ids, anonymous_ids, stamps, bodies = zip(
            *rows, strict=True
        )
        by_user = _lookup(state, "user_id", user_ids)
        by_anonymous = _lookup(state, "anonymous_id", anonymous_ids)
        # The processor gives an event to its user id's person when it has one, else to its
        # anonymous id's person; identifiers only move to merge survivors, so today's binding
        # is the event's person after every merge so far.
        person_ids = [
            by_user.get(user_id) or by_anonymous.get(anonymous_id)
            for user_id, anonymous_id in zip(user_ids, anonymous_ids, strict=True)
        ]
        batch = pa.table(
            {
                "seq": pa.array(seqs, pa.int64()),
                "person_id": pa.array(person_ids, pa.string()),
                "type": pa.array(types, pa.string()),
                "name": pa.array(names, pa.string()),
                "ts": pa.array(stamps, pa.int64()),
                "body": pa.array(bodies, pa.binary()),
                "user_id": pa.array(user_ids, pa.string()),
                "anonymous_id": pa.array(anonymous_ids, pa.string()),
                "message_id": pa.array(message_ids, pa.string()),
            }
        )
        conn = self.conn
        conn.register("sync_batch", batch)
        try:
            inserted = conn.execute(
                "INSERT INTO events SELECT seq, person_id, type,"
                " CASE type WHEN 'track' THEN name WHEN 'page' THEN ? WHEN 'screen' THEN ? END,"
                " make_timestamp(ts),"
                " coalesce(json_extract(decode(body), '$.properties'), '{}'::JSON),"
                " coalesce(json_extract(decode(body), '$.context'), '{}'::JSON),"
                " user_id, anonymous_id, message_id"
                " FROM sync_batch WHERE person_id IS NOT NULL",
                [PAGE_EVENT, SCREEN_EVENT],
            ).fetchone()
            return int(inserted[0]) if inserted is not None else 0
        finally:
            conn.unregister("sync_batch")

    # ---- persons and milestones -------------------------------------------------------

    def _refresh_persons(self, state: sqlite3.Connection, after: int, *, initial: bool) -> int:
        """Rewrite persons (and their milestones) that the processor wrote after ``after``."""
        rows = state.execute(
            "SELECT person_id, user_id, first_seen, last_seen, signup_at, activated_at, doc"
            " FROM persons WHERE updated_seq > ?",
            (after,),
        ).fetchall()
        if not rows:
            return 0
        person_ids = [row[0] for row in rows]
        batch = pa.table(
            {
                "person_id": pa.array(person_ids, pa.string()),
                "user_id": pa.array([row[1] for row in rows], pa.string()),
                "first_seen": pa.array([row[2] for row in rows], pa.int64()),
                "last_seen": pa.array([row[3] for row in rows], pa.int64()),
                "signup_at": pa.array([row[4] for row in rows], pa.int64()),
                "activated_at": pa.array([row[5] for row in rows], pa.int64()),
                "traits": pa.array([_trait_values(row[6]) for row in rows], pa.string()),
            }
        )
        milestone_rows = state.execute(
            "SELECT m.person_id, m.milestone, m.reached_at FROM milestones m"
            " JOIN persons p ON p.person_id = m.person_id WHERE p.updated_seq > ?",
            (after,),
        ).fetchall()
        reached = pa.table(
            {
                "person_id": pa.array([row[0] for row in milestone_rows], pa.string()),
                "milestone": pa.array([row[1] for row in milestone_rows], pa.string()),
                "reached_at": pa.array([row[2] for row in milestone_rows], pa.int64()),
            }
        )
        conn = self.conn
        conn.register("sync_persons", batch)
        conn.register("sync_milestones", reached)
        try:
            if not initial:
                for table in ("persons", "milestones"):
                    conn.execute(
                        f"DELETE FROM {table}"
                        " WHERE person_id IN (SELECT person_id FROM sync_persons)"
                    )
            conn.execute(
                "INSERT INTO persons SELECT person_id, user_id, make_timestamp(first_seen),"
                " make_timestamp(last_seen), make_timestamp(signup_at),"
                " make_timestamp(activated_at), traits::JSON FROM sync_persons"
            )
            if milestone_rows:
                conn.execute(
                    "INSERT INTO milestones SELECT person_id, milestone,"
                    " make_timestamp(reached_at) FROM sync_milestones"
                )
        finally:
            conn.unregister("sync_persons")
            conn.unregister("sync_milestones")
        return len(rows)

    # ---- bookkeeping ------------------------------------------------------------------

    def _mark(self) -> _Mark:
        row = self.conn.execute(
            "SELECT log_offset, plan_hash, merge_id FROM warehouse_sync"
        ).fetchone()
        if row is None:
            return _Mark()
        return _Mark(offset=int(row[0]), plan_hash=str(row[1]), merge_id=int(row[2]))

    def _save_mark(self, mark: _Mark) -> None:
        self.conn.execute(
            "UPDATE warehouse_sync SET log_offset = ?, plan_hash = ?, merge_id = ?",
            [mark.offset, mark.plan_hash, mark.merge_id],
        )


def _connect_reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA query_only=1")
    return conn


def _lookup(state: sqlite3.Connection, kind: str, values: Iterable[str | None]) -> dict[str, str]:
    """Return ``{value: person_id}`` for the identifiers of ``kind`` that are bound."""
    wanted = sorted({value for value in values if value is not None})
    found: dict[str, str] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(
            state.execute(
                f"SELECT value, person_id FROM identifiers WHERE kind = ? AND value IN ({marks})",
                (kind, *chunk),
            ).fetchall()
        )
    return found


def _trait_values(doc: bytes) -> str:
    """Return a person document's traits as a JSON object of current values."""
    traits = orjson.loads(doc).get("traits") or {}
    return orjson.dumps({name: entry[0] for name, entry in traits.items()}).decode()


def _source_id(log: sqlite3.Connection, name: str) -> str | None:
    """Return the id of the source called ``name``, or None when the log has none."""
    try:
        row = log.execute("SELECT source_id FROM sources WHERE name = ?", (name,)).fetchone()
    except sqlite3.OperationalError:  # a log without a sources table yet
        return None
    return None if row is None else str(row[0])
