"""Per-row owners for a person that a rebuild split in two.

When identity is rebuilt after an admin separation, one old person can become several (two
user ids that an admin merge had joined, say). Each trigger or delivery row then belongs to the
person of the event that started it: the log sequence number in an enrollment's occurrence, or
at the end of an idempotency key (``rule:step:person_id:occurrence``). Rows without one keep
the old person's single new id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

# {log sequence number: (user_id, anonymous_id)} of the events asked for.
EventIds = Callable[[list[int]], dict[int, tuple[str | None, str | None]]]

# Tables whose rows name the event that started them: (primary key, column with the seq).
_STARTED_BY = {
    "enrollments": ("enrollment_id", "occurrence"),
    "outbox": ("outbox_id", "idempotency_key"),
    "inbox": ("message_id", "idempotency_key"),
    "inapp_slots": ("idempotency_key", "idempotency_key"),
}


def split_persons(conn: sqlite3.Connection) -> set[str]:
    """Return the old person ids whose identifiers several persons now hold."""
    rows = conn.execute(
        "SELECT r.person_id FROM rebuild_identities r JOIN identifiers i"
        " ON i.kind = r.kind AND i.value = r.value"
        " GROUP BY r.person_id HAVING count(DISTINCT i.person_id) > 1"
    )
    return {str(row[0]) for row in rows}


def row_owners(
    conn: sqlite3.Connection, split: set[str], event_ids: EventIds
) -> dict[str, dict[object, str]]:
    """Return {table: {primary key: new person id}} for the rows of the split persons."""
    marks = ",".join("?" * len(split))
    started: dict[str, dict[object, int]] = {}
    for table, (key, column) in _STARTED_BY.items():
        rows = conn.execute(
            f"SELECT {key}, {column} FROM {table} WHERE person_id IN ({marks})", list(split)
        )
        started[table] = {pk: seq for pk, text in rows if (seq := _seq(text)) is not None}
    decisions = conn.execute(
        f"SELECT decision_id, enrollment_id, seq FROM decisions WHERE person_id IN ({marks})",
        list(split),
    ).fetchall()
    seqs = {seq for by_key in started.values() for seq in by_key.values()}
    seqs.update(seq for _, _, seq in decisions if seq is not None)
    person_of = _persons_of_events(conn, event_ids(sorted(seqs)))

    owners = {
        table: {pk: person_of[seq] for pk, seq in by_key.items() if seq in person_of}
        for table, by_key in started.items()
    }
    enrollments = owners["enrollments"]
    owners["decisions"] = {
        decision_id: owner
        for decision_id, enrollment_id, seq in decisions
        if (owner := enrollments.get(enrollment_id) or person_of.get(seq)) is not None
    }
    timers = conn.execute(
        f"SELECT timer_id, enrollment_id, ref FROM timers WHERE person_id IN ({marks})",
        list(split),
    )
    owners["timers"] = {
        timer_id: owner
        for timer_id, enrollment_id, ref in timers
        if (owner := enrollments.get(enrollment_id) or owners["inapp_slots"].get(ref)) is not None
    }
    return owners


def _seq(text: object) -> int | None:
    tail = str(text).rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _persons_of_events(
    conn: sqlite3.Connection, ids: dict[int, tuple[str | None, str | None]]
) -> dict[int, str]:
    """Map each event to the person of its user id, else of its anonymous id, as now bound."""
    found: dict[int, str] = {}
    for seq, (user_id, anonymous_id) in ids.items():
        for kind, value in (("user_id", user_id), ("anonymous_id", anonymous_id)):
            person = _holder(conn, kind, value)
            if person is not None:
                found[seq] = person
                break
    return found


def _holder(conn: sqlite3.Connection, kind: str, value: str | None) -> str | None:
    if value is None:
        return None
    row = conn.execute(
        "SELECT person_id FROM identifiers WHERE kind = ? AND value = ?", (kind, value)
    ).fetchone()
    return None if row is None else str(row[0])


def primary_keys() -> Iterable[tuple[str, str]]:
    """Yield (table, primary key column) of every table ``row_owners`` returns."""
    yield from ((table, key) for table, (key, _) in _STARTED_BY.items())
    yield ("decisions", "decision_id")
    yield ("timers", "timer_id")
