"""The event log in a SQLite file (WAL mode, fsync on every commit).

Sequence numbers are SQLite rowids. One writer at a time holds the write lock, so rowids are
assigned in commit order and a reader never sees a later sequence number before an earlier one.
The events table has no secondary index: every index on random keys (message ids, user ids)
multiplies the pages each commit writes. Duplicates are found through ``DedupIndex``, and a
person's events through the sequence numbers the processor keeps on the person.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from headstart.events import LoggedEvent
from headstart.ingest.normalize import LogRecord
from headstart.log.base import AppendResult
from headstart.log.dedup import DedupIndex, message_key
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
"""

INSERT = (
    "INSERT INTO events (seq, source_id, message_id, type, event, user_id, anonymous_id,"
    " timestamp, received_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

COLUMNS = (
    "seq, source_id, message_id, type, event, user_id, anonymous_id, timestamp, received_at, body"
)
_PARAMS_PER_QUERY = 500


class SQLiteEventLog:
    """An ``EventLog`` in ``log.sqlite``. Safe to share between threads; writes serialize."""

    def __init__(self, path: Path):
        self.path = path
        self._conn = connect(path, durable=True, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(SCHEMA)
            self._dedup = DedupIndex(self._conn)

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def append(self, records: Sequence[LogRecord]) -> AppendResult:
        return self.append_many([records])[0]

    def append_many(self, groups: Sequence[Sequence[LogRecord]]) -> list[AppendResult]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = self._append_locked(groups)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return results

    def _append_locked(self, groups: Sequence[Sequence[LogRecord]]) -> list[AppendResult]:
        newest = max((r.received_at for records in groups for r in records), default=0)
        if newest:
            self._dedup.rotate_if_due(newest)
        keys = [message_key(r.source_id, r.message_id) for records in groups for r in records]
        known = self._confirmed(keys, [r for records in groups for r in records])
        row = self._conn.execute("SELECT max(seq) FROM events").fetchone()
        next_seq = int(row[0] or 0) + 1

        rows: list[tuple[object, ...]] = []
        remembered: list[tuple[int, int]] = []
        results = []
        index = 0
        for records in groups:
            accepted = 0
            for record in records:
                key = keys[index]
                index += 1
                if key in known:
                    continue
                known[key] = next_seq
                rows.append(_row(next_seq, record))
                remembered.append((key, next_seq))
                next_seq += 1
                accepted += 1
            results.append(AppendResult(accepted, len(records) - accepted))
        self._conn.executemany(INSERT, rows)
        self._dedup.remember(remembered)
        return results

    def _confirmed(self, keys: list[int], records: list[LogRecord]) -> dict[int, int]:
        """Return the keys that belong to logged events with the same source and messageId."""
        hits = self._dedup.seen(keys)
        if not hits:
            return {}
        wanted = {key: record for key, record in zip(keys, records, strict=True) if key in hits}
        logged = {
            seq: (source_id, message_id)
            for seq, source_id, message_id in self._select_columns(
                "seq, source_id, message_id", sorted(set(hits.values()))
            )
        }
        return {
            key: seq
            for key, seq in hits.items()
            if key in wanted and logged.get(seq) == (wanted[key].source_id, wanted[key].message_id)
        }

    def _select_columns(self, columns: str, seqs: Sequence[int]) -> list[tuple[object, ...]]:
        rows: list[tuple[object, ...]] = []
        for start in range(0, len(seqs), _PARAMS_PER_QUERY):
            chunk = seqs[start : start + _PARAMS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            rows.extend(
                self._conn.execute(f"SELECT {columns} FROM events WHERE seq IN ({marks})", chunk)
            )
        return rows

    def read(self, after_seq: int, limit: int) -> list[LoggedEvent]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [_event(row) for row in rows]

    def events_at(self, seqs: Sequence[int]) -> list[LoggedEvent]:
        """Return the events with these sequence numbers, in sequence order."""
        with self._lock:
            rows = self._select_columns(COLUMNS, list(seqs))
        return sorted((_event(row) for row in rows), key=lambda event: event.seq)

    def head(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def count(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _row(seq: int, record: LogRecord) -> tuple[object, ...]:
    return (
        seq,
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
    assert isinstance(seq, int) and isinstance(timestamp, int) and isinstance(received, int)
    assert isinstance(body, bytes)
    return LoggedEvent(
        seq=seq,
        source_id=str(source_id),
        message_id=str(message_id),
        type=kind,  # type: ignore[arg-type]
        event=event,  # type: ignore[arg-type]
        user_id=user_id,  # type: ignore[arg-type]
        anonymous_id=anonymous_id,  # type: ignore[arg-type]
        timestamp=timestamp,
        received_at=received,
        raw=body,
    )
