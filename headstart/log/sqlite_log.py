"""The event log in a SQLite file (WAL mode, fsync on every commit).

Sequence numbers are SQLite rowids. One writer at a time holds the write lock, so rowids are
assigned in commit order and a reader never sees a later sequence number before an earlier one.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import orjson

from headstart.events import LoggedEvent
from headstart.ingest.normalize import LogRecord
from headstart.log.base import AppendResult
from headstart.sqlite import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    source_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    event TEXT,
    user_id TEXT,
    anonymous_id TEXT,
    timestamp INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL
);
-- Deduplication on (source, messageId) for as long as the event is kept.
CREATE UNIQUE INDEX IF NOT EXISTS events_message ON events (source_id, message_id);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_anonymous ON events (anonymous_id)
    WHERE anonymous_id IS NOT NULL;
"""

INSERT = (
    "INSERT OR IGNORE INTO events (source_id, message_id, type, event, user_id, anonymous_id,"
    " timestamp, received_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

COLUMNS = (
    "seq, source_id, message_id, type, event, user_id, anonymous_id, timestamp, received_at, body"
)


class SQLiteEventLog:
    """An ``EventLog`` in ``log.sqlite``. Safe to share between threads; writes serialize."""

    def __init__(self, path: Path):
        self.path = path
        self._conn = connect(path, durable=True, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(SCHEMA)

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def append(self, records: Sequence[LogRecord]) -> AppendResult:
        return self.append_many([records])[0]

    def append_many(self, groups: Sequence[Sequence[LogRecord]]) -> list[AppendResult]:
        results = []
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for records in groups:
                    before = conn.total_changes
                    conn.executemany(INSERT, [_row(record) for record in records])
                    accepted = conn.total_changes - before
                    results.append(AppendResult(accepted, len(records) - accepted))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return results

    def read(self, after_seq: int, limit: int) -> list[LoggedEvent]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [_event(row) for row in rows]

    def head(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def count(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0])

    def events_of(
        self, user_ids: Sequence[str], anonymous_ids: Sequence[str], limit: int
    ) -> list[LoggedEvent]:
        if not user_ids and not anonymous_ids:
            return []
        users = ",".join("?" * len(user_ids)) or "NULL"
        anonymous = ",".join("?" * len(anonymous_ids)) or "NULL"
        sql = (
            f"SELECT {COLUMNS} FROM events WHERE user_id IN ({users})"
            f" UNION SELECT {COLUMNS} FROM events WHERE anonymous_id IN ({anonymous})"
            " ORDER BY timestamp DESC, seq DESC LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, (*user_ids, *anonymous_ids, limit)).fetchall()
        return [_event(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _row(record: LogRecord) -> tuple[object, ...]:
    return (
        record.source_id,
        record.message_id,
        record.type,
        record.event,
        record.user_id,
        record.anonymous_id,
        record.timestamp,
        record.received_at,
        record.body,
    )


def _event(row: tuple[object, ...]) -> LoggedEvent:
    seq, source_id, message_id, kind, event, user_id, anonymous_id, timestamp, received, body = row
    return LoggedEvent(
        seq=int(seq),  # type: ignore[call-overload]
        source_id=str(source_id),
        message_id=str(message_id),
        type=kind,  # type: ignore[arg-type]
        event=event,  # type: ignore[arg-type]
        user_id=user_id,  # type: ignore[arg-type]
        anonymous_id=anonymous_id,  # type: ignore[arg-type]
        timestamp=int(timestamp),  # type: ignore[call-overload]
        received_at=int(received),  # type: ignore[call-overload]
        body=orjson.loads(body),  # type: ignore[arg-type]
    )
