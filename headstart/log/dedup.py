"""Duplicate detection on (source, messageId) for at least 24 hours, across restarts.

Each message's key is a 64-bit hash stored with the message's sequence number in one of two
tables (generations). New keys go to the current generation; once it is 24 hours old, the
older one is emptied and becomes current. So a key is remembered for 24 to 48 hours, and the
tables stay small enough to live in the page cache, unlike a unique index over the whole log.

A hash hit is confirmed against the logged event's source and messageId, so a hash collision
never drops a valid event.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence

from headstart.timeutil import MICROS_PER_DAY

GENERATION_SPAN_US = MICROS_PER_DAY
_PARAMS_PER_QUERY = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS dedup_0 (key INTEGER PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup_1 (key INTEGER PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    current INTEGER NOT NULL,
    started_at INTEGER NOT NULL
);
"""


def message_key(source_id: str, message_id: str) -> int:
    digest = hashlib.blake2b(f"{source_id}\0{message_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class DedupIndex:
    """Operates inside the log writer's transaction on the log connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.executescript(SCHEMA)

    def rotate_if_due(self, now_us: int) -> None:
        row = self.conn.execute("SELECT current, started_at FROM dedup_state").fetchone()
        if row is None:
            self.conn.execute(
                "INSERT INTO dedup_state (id, current, started_at) VALUES (0, 0, ?)", (now_us,)
            )
            return
        current, started_at = row
        if now_us - started_at < GENERATION_SPAN_US:
            return
        older = 1 - current
        self.conn.execute(f"DELETE FROM dedup_{older}")
        self.conn.execute(
            "UPDATE dedup_state SET current = ?, started_at = ? WHERE id = 0", (older, now_us)
        )

    def current(self) -> int:
        row = self.conn.execute("SELECT current FROM dedup_state").fetchone()
        return 0 if row is None else int(row[0])

    def seen(self, keys: Sequence[int]) -> dict[int, int]:
        """Return {key: seq} for the keys already remembered."""
        found: dict[int, int] = {}
        for start in range(0, len(keys), _PARAMS_PER_QUERY):
            chunk = keys[start : start + _PARAMS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            for table in ("dedup_0", "dedup_1"):
                rows = self.conn.execute(
                    f"SELECT key, seq FROM {table} WHERE key IN ({marks})", chunk
                ).fetchall()
                found.update((int(key), int(seq)) for key, seq in rows)
        return found

    def remember(self, pairs: Iterable[tuple[int, int]]) -> None:
        self.conn.executemany(
            f"INSERT OR REPLACE INTO dedup_{self.current()} (key, seq) VALUES (?, ?)", pairs
        )
