"""The in-app inbox in ``state.sqlite``: delivered in-app messages and what the person did.

The in-app channel inserts rows (one per idempotency key, so a repeated send is a no-op); the
API lists them for one person and records shown, dismissed and completed. A person's inbox
includes rows delivered to persons that were later merged into them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from headstart.channels.writes import prefer_polling, write_transaction
from headstart.errors import Overloaded
from headstart.sqlite import connect
from headstart.state.schema import REMAP_AT_KEY, SCHEMA
from headstart.timeutil import to_iso

Action = Literal["shown", "dismissed", "completed"]
ACTIONS: tuple[Action, ...] = ("shown", "dismissed", "completed")
# Statuses of a message that is still on screen or waiting to be.
OPEN_STATUSES = ("new", "shown")

_COLUMNS = (
    "rowid, message_id, outbox_id, person_id, rule, step, priority, content, delivered_at,"
    " expires_at, status, shown_at, dismissed_at, completed_at"
)


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """One delivered in-app message. ``cursor`` orders deliveries, for SSE and polling."""

    cursor: int
    message_id: str
    outbox_id: int
    person_id: str
    rule: str
    step: str
    priority: int
    content: dict[str, Any]
    delivered_at: int
    expires_at: int | None
    status: str
    shown_at: int | None
    dismissed_at: int | None
    completed_at: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "cursor": self.cursor,
            "rule": self.rule,
            "step": self.step,
            "priority": self.priority,
            "status": self.status,
            "content": self.content,
            "delivered_at": to_iso(self.delivered_at),
            "expires_at": to_iso(self.expires_at),
            "shown_at": to_iso(self.shown_at),
            "dismissed_at": to_iso(self.dismissed_at),
            "completed_at": to_iso(self.completed_at),
        }


class InboxStore:
    """Reads and writes the inbox table; safe to share between threads."""

    def __init__(self, path: Path):
        # NORMAL: a process crash loses no delivery, and a power cut can lose only the last
        # deliveries, which the dispatcher then repeats under the same unique key.
        self._conn = connect(path, durable=False, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(SCHEMA)
            prefer_polling(self._conn)

    def deliver(
        self,
        *,
        message_id: str,
        idempotency_key: str,
        outbox_id: int,
        person_id: str,
        rule: str,
        step: str,
        priority: int,
        content: dict[str, Any],
        delivered_at: int,
        expires_at: int | None,
    ) -> bool:
        """Insert a message; return False when its idempotency key was delivered before."""
        params = _insert_params(
            message_id=message_id,
            idempotency_key=idempotency_key,
            outbox_id=outbox_id,
            person_id=person_id,
            rule=rule,
            step=step,
            priority=priority,
            content=content,
            delivered_at=delivered_at,
            expires_at=expires_at,
        )
        with self._lock, write_transaction(self._conn):
            cursor = self._conn.execute(_INSERT, params)
        return cursor.rowcount == 1

    def deliver_many(self, rows: Sequence[dict[str, Any]]) -> list[bool]:
        """Insert many messages (``deliver``'s keyword arguments) in one transaction.

        Returns, per row, whether it was inserted (False: delivered before).
        """
        inserted: list[bool] = []
        with self._lock, write_transaction(self._conn):
            for row in rows:
                cursor = self._conn.execute(_INSERT, _insert_params(**row))
                inserted.append(cursor.rowcount == 1)
        return inserted

    def person_ids(self, user_id: str) -> list[str]:
        """Return the person of ``user_id`` followed by the persons merged into it.

        Raises ``Overloaded`` while a rebuild has not yet moved messages to new person ids,
        because until then an id may name another person.
        """
        with self._lock:
            if self._conn.execute("SELECT 1 FROM meta WHERE key = ?", (REMAP_AT_KEY,)).fetchone():
                raise Overloaded(
                    "identity is being rebuilt after an admin or plan change; retry shortly",
                    retry_after=2,
                )
            row = self._conn.execute(
                "SELECT person_id FROM identifiers WHERE kind = 'user_id' AND value = ?",
                (user_id,),
            ).fetchone()
            if row is None:
                return []
            merged = self._conn.execute(
                "SELECT person_id FROM merged_persons WHERE merged_into = ?", (row[0],)
            ).fetchall()
        return [str(row[0]), *(str(m[0]) for m in merged)]

    def messages(
        self, person_ids: Sequence[str], now: int, *, after: int = 0, include_closed: bool = False
    ) -> list[InboxMessage]:
        """Return the persons' unexpired messages delivered after cursor ``after``, oldest first."""
        if not person_ids:
            return []
        marks = ",".join("?" * len(person_ids))
        status_filter = "" if include_closed else " AND status IN ('new', 'shown')"
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM inbox WHERE person_id IN ({marks}) AND rowid > ?"
                f" AND (expires_at IS NULL OR expires_at > ?){status_filter} ORDER BY rowid",
                (*person_ids, after, now),
            ).fetchall()
        return [_message(row) for row in rows]

    def get(self, person_ids: Sequence[str], message_id: str) -> InboxMessage | None:
        """Return the message if it belongs to one of ``person_ids``, else None."""
        if not person_ids:
            return None
        marks = ",".join("?" * len(person_ids))
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM inbox WHERE message_id = ? AND person_id IN ({marks})",
                (message_id, *person_ids),
            ).fetchone()
        return None if row is None else _message(row)

    def record(self, message_id: str, action: Action, at: int) -> None:
        """Record an action; the first time of each action is kept, and closed stays closed."""
        column = f"{action}_at"
        status = {"shown": "shown", "dismissed": "dismissed", "completed": "completed"}[action]
        keep_status = "status IN ('dismissed', 'completed')" if action == "shown" else "0"
        with self._lock, write_transaction(self._conn):
            self._conn.execute(
                f"UPDATE inbox SET {column} = COALESCE({column}, ?),"
                f" status = CASE WHEN {keep_status} THEN status ELSE ? END"
                " WHERE message_id = ?",
                (at, status, message_id),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_INSERT = (
    "INSERT INTO inbox (message_id, idempotency_key, outbox_id, person_id, rule, step, priority,"
    " content, delivered_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (idempotency_key) DO NOTHING"
)


def _insert_params(
    *,
    message_id: str,
    idempotency_key: str,
    outbox_id: int,
    person_id: str,
    rule: str,
    step: str,
    priority: int,
    content: dict[str, Any],
    delivered_at: int,
    expires_at: int | None,
) -> tuple[Any, ...]:
    return (
        message_id,
        idempotency_key,
        outbox_id,
        person_id,
        rule,
        step,
        priority,
        orjson.dumps(content).decode(),
        delivered_at,
        expires_at,
    )


def current_message(messages: Sequence[InboxMessage]) -> InboxMessage | None:
    """Return the message to display now: one already shown, else the highest priority.

    Ties go to the oldest delivery.
    """
    open_messages = [m for m in messages if m.status in OPEN_STATUSES]
    if not open_messages:
        return None
    return min(open_messages, key=lambda m: (m.status != "shown", -m.priority, m.cursor))


def _message(row: sqlite3.Row | tuple[Any, ...]) -> InboxMessage:
    (
        cursor,
        message_id,
        outbox_id,
        person_id,
        rule,
        step,
        priority,
        content,
        delivered_at,
        expires_at,
        status,
        shown_at,
        dismissed_at,
        completed_at,
    ) = row
    return InboxMessage(
        cursor=int(cursor),
        message_id=str(message_id),
        outbox_id=int(outbox_id),
        person_id=str(person_id),
        rule=str(rule),
        step=str(step),
        priority=int(priority),
        content=orjson.loads(content),
        delivered_at=int(delivered_at),
        expires_at=None if expires_at is None else int(expires_at),
        status=str(status),
        shown_at=None if shown_at is None else int(shown_at),
        dismissed_at=None if dismissed_at is None else int(dismissed_at),
        completed_at=None if completed_at is None else int(completed_at),
    )
