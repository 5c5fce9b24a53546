"""Explicit, audited identity changes made by an administrator.

- A **merge** joins two persons even when both have a user id. It is appended to the event log
  as an internal event (source ``headstart-admin``), so replaying the log repeats it.
- A **separation** says two identifiers must never end up in one person. It is stored beside the
  log, and adding one rebuilds state from the log, so a wrong merge (automatic or admin) is
  undone as if it had never happened: the replay refuses it and records a warning.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from headstart.errors import InvalidInput, NotFound
from headstart.ingest.normalize import LogRecord
from headstart.state.store import StateStore
from headstart.timeutil import to_iso

ADMIN_SOURCE_ID = "headstart-admin"
IDENTIFIER_KINDS = ("user_id", "anonymous_id")

Identifier = tuple[str, str]

SCHEMA = """
CREATE TABLE IF NOT EXISTS separations (
    separation_id INTEGER PRIMARY KEY,
    a_kind TEXT NOT NULL,
    a_value TEXT NOT NULL,
    b_kind TEXT NOT NULL,
    b_value TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class AdminMerge:
    """An admin merge request as stored in the log event's body."""

    into: Identifier
    other: Identifier
    reason: str


def resolve_identifier(store: StateStore, text: str) -> Identifier:
    """Turn ``kind:value``, a person id, a user id or an anonymous id into a typed identifier.

    A person id becomes the person's user id (or first anonymous id), because person ids are
    derived state while identifiers are in the log.
    """
    kind, sep, value = text.partition(":")
    if sep and kind in IDENTIFIER_KINDS:
        return kind, value
    for kind in IDENTIFIER_KINDS:
        if store.person_of(kind, text) is not None:
            return kind, text
    person_id = store.canonical_person(text)
    identifiers = store.identifiers_of(person_id) if person_id is not None else []
    for wanted in IDENTIFIER_KINDS:
        for kind, value in identifiers:
            if kind == wanted:
                return kind, value
    raise NotFound(
        f"no person has the identifier {text!r}; pass a person id, a user id, an anonymous id "
        "or kind:value",
        code="person_not_found",
    )


def merge_record(into: Identifier, other: Identifier, reason: str, now_us: int) -> LogRecord:
    """Build the internal log event that asks the processor to merge ``other`` into ``into``."""
    if into == other:
        raise InvalidInput("both sides of the merge are the same identifier; pass two persons")
    message_id = f"admin-merge-{uuid.uuid4()}"
    body = {
        "type": "alias",
        "messageId": message_id,
        "timestamp": to_iso(now_us),
        "receivedAt": to_iso(now_us),
        "headstart": {"admin_merge": {"into": list(into), "other": list(other), "reason": reason}},
    }
    return LogRecord(
        source_id=ADMIN_SOURCE_ID,
        message_id=message_id,
        type="alias",
        event=None,
        user_id=None,
        anonymous_id=None,
        timestamp=now_us,
        received_at=now_us,
        body=orjson.dumps(body),
    )


def admin_merge_of(source_id: str, body: dict[str, object]) -> AdminMerge | None:
    """Return the admin merge an internal log event asks for, or None for any other event."""
    if source_id != ADMIN_SOURCE_ID:
        return None
    internal = body.get("headstart")
    request = internal.get("admin_merge") if isinstance(internal, dict) else None
    if not isinstance(request, dict):
        return None
    into, other = request.get("into"), request.get("other")
    if not (isinstance(into, list) and isinstance(other, list)):
        return None
    return AdminMerge(
        (str(into[0]), str(into[1])), (str(other[0]), str(other[1])), str(request.get("reason", ""))
    )


class Separations:
    """Pairs of identifiers that must never be one person, stored in ``log.sqlite``."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.executescript(SCHEMA)

    def add(self, a: Identifier, b: Identifier, reason: str, now_us: int) -> None:
        if a == b:
            raise InvalidInput("both sides of the separation are the same identifier")
        self.conn.execute(
            "INSERT INTO separations (a_kind, a_value, b_kind, b_value, reason, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (*a, *b, reason, now_us),
        )

    def pairs(self) -> list[tuple[Identifier, Identifier]]:
        rows = self.conn.execute(
            "SELECT a_kind, a_value, b_kind, b_value FROM separations ORDER BY separation_id"
        ).fetchall()
        return [((a_kind, a_value), (b_kind, b_value)) for a_kind, a_value, b_kind, b_value in rows]

    def digest(self) -> str:
        return separations_digest(self.pairs())


def separations_digest(pairs: Sequence[tuple[Identifier, Identifier]]) -> str:
    """Return a short digest that changes whenever a separation is added ("none" for none)."""
    if not pairs:
        return "none"
    return hashlib.sha256(orjson.dumps(list(pairs))).hexdigest()[:12]
