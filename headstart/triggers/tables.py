"""Reads and writes of the trigger tables in ``state.sqlite``, inside the processor's transaction.

The tables are created with the rest of the state schema (headstart.state.schema). None of them
is emptied by a rebuild: they record what was decided, and the unique indexes on enrollments
and outbox keys keep a replay from deciding or enqueuing anything twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

OPEN = ("watching", "active")
# The meta key holding the highest log sequence number trigger rules have evaluated.
DECIDED_KEY = "triggers_decided_seq"

_ENROLLMENT_COLUMNS = (
    "e.enrollment_id, e.rule, e.person_id, e.key, e.occurrence, e.status, e.step,"
    " e.rule_version, e.started_at, e.entered_at, e.context, t.timer_id, t.due"
)
_ENROLLMENT_FROM = "enrollments e LEFT JOIN timers t ON t.enrollment_id = e.enrollment_id"


@dataclass(slots=True)
class Enrollment:
    """A person in (or watching for) a rule. ``enrollment_id`` is 0 until the row is written."""

    enrollment_id: int
    rule: str
    person_id: str
    key: str
    occurrence: str
    status: str
    step: str | None
    rule_version: str
    started_at: int
    entered_at: int | None
    # the stored JSON of ``context``, parsed on first use
    raw_context: bytes | None
    timer_id: int | None = None
    due: int | None = None
    parsed_context: dict[str, Any] | None = None
    ended_at: int | None = None
    reason: str | None = None

    @property
    def saved(self) -> bool:
        return self.enrollment_id != 0

    @property
    def context(self) -> dict[str, Any]:
        """The event that entered or last resumed the enrollment, for templates and zones."""
        if self.parsed_context is None:
            self.parsed_context = orjson.loads(self.raw_context) if self.raw_context else {}
        return self.parsed_context


@dataclass(frozen=True, slots=True)
class Timer:
    timer_id: int
    due: int
    kind: str
    person_id: str
    enrollment_id: int | None
    step: str | None
    ref: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """One row of the decisions table: what the engine decided for a person, and why."""

    at: int
    person_id: str
    rule: str
    kind: str
    reason: str
    enrollment_id: int | None = None
    step: str | None = None
    seq: int | None = None
    detail: dict[str, Any] | None = None
    # read at flush time instead of ``enrollment_id``, for enrollments written later
    enrollment: Enrollment | None = None


@dataclass(frozen=True, slots=True)
class InAppSlot:
    idempotency_key: str
    person_id: str
    status: str
    priority: int
    rule: str
    step: str
    channel: str
    payload: str
    created_at: int
    expires_at: int | None = None
    timer_id: int | None = None


class TriggerTables:
    """SQL for enrollments, timers, in-app slots, decisions, emitted events and the outbox."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._decisions: list[Decision] = []
        # set when an emitted event was written, so the engine appends it after the commit
        self.emits_added = False

    # ---- enrollments --------------------------------------------------------------------

    def open_enrollments(self, person_id: str) -> list[Enrollment]:
        rows = self.conn.execute(
            f"SELECT {_ENROLLMENT_COLUMNS} FROM {_ENROLLMENT_FROM}"
            " WHERE e.person_id = ? AND e.status IN ('watching', 'active') ORDER BY e.enrollment_id",
            (person_id,),
        ).fetchall()
        return [_enrollment(row) for row in rows]

    def open_enrollment(self, rule: str, person_id: str, key: str) -> Enrollment | None:
        row = self.conn.execute(
            f"SELECT {_ENROLLMENT_COLUMNS} FROM {_ENROLLMENT_FROM} WHERE e.rule = ?"
            " AND e.person_id = ? AND e.key = ? AND e.status IN ('watching', 'active')",
            (rule, person_id, key),
        ).fetchone()
        return None if row is None else _enrollment(row)

    def enrollment(self, enrollment_id: int) -> Enrollment | None:
        row = self.conn.execute(
            f"SELECT {_ENROLLMENT_COLUMNS} FROM {_ENROLLMENT_FROM} WHERE e.enrollment_id = ?",
            (enrollment_id,),
        ).fetchone()
        return None if row is None else _enrollment(row)

    def last_entered(self, rule: str, person_id: str, key: str) -> int | None:
        """Return when the person last entered the rule with this key, or None if never."""
        row = self.conn.execute(
            "SELECT max(entered_at) FROM enrollments WHERE person_id = ? AND rule = ? AND key = ?",
            (person_id, rule, key),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def entry_history(self, person_id: str) -> dict[tuple[str, str], int]:
        """Return {(rule, key): last entry time} for every rule the person ever entered."""
        rows = self.conn.execute(
            "SELECT rule, key, max(entered_at) FROM enrollments"
            " WHERE person_id = ? AND entered_at IS NOT NULL GROUP BY rule, key",
            (person_id,),
        )
        return {(str(rule), str(key)): int(at) for rule, key, at in rows}

    def new_enrollment(
        self,
        *,
        rule: str,
        person_id: str,
        key: str,
        occurrence: str,
        status: str,
        version: str,
        started_at: int,
        entered_at: int | None,
        context: dict[str, Any],
    ) -> Enrollment:
        """Return an enrollment that is written on its first wait or its end, not now.

        A journey that runs to its end right away then costs one INSERT instead of an INSERT
        and an UPDATE. Everything happens inside the processor's transaction either way.
        """
        return Enrollment(
            0,
            rule,
            person_id,
            key,
            occurrence,
            status,
            None,
            version,
            started_at,
            entered_at,
            None,
            parsed_context=context,
        )

    def save(self, enrollment: Enrollment) -> None:
        """Write an enrollment made by ``new_enrollment`` with its current state."""
        if enrollment.saved:
            return
        raw = orjson.dumps(enrollment.context)
        cursor = self.conn.execute(
            "INSERT INTO enrollments (rule, person_id, key, occurrence, status, step,"
            " rule_version, started_at, entered_at, ended_at, reason, context)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                enrollment.rule,
                enrollment.person_id,
                enrollment.key,
                enrollment.occurrence,
                enrollment.status,
                enrollment.step,
                enrollment.rule_version,
                enrollment.started_at,
                enrollment.entered_at,
                enrollment.ended_at,
                enrollment.reason,
                raw,
            ),
        )
        assert cursor.lastrowid is not None
        enrollment.enrollment_id = cursor.lastrowid
        enrollment.raw_context = raw

    def activate(self, enrollment: Enrollment, entered_at: int, version: str) -> None:
        assert enrollment.saved, "only a saved watch is activated"
        enrollment.status = "active"
        enrollment.entered_at = entered_at
        enrollment.rule_version = version
        self.conn.execute(
            "UPDATE enrollments SET status = 'active', entered_at = ?, rule_version = ?"
            " WHERE enrollment_id = ?",
            (entered_at, version, enrollment.enrollment_id),
        )

    def set_step(self, enrollment: Enrollment, step: str | None) -> None:
        enrollment.step = step
        if not enrollment.saved:
            return
        self.conn.execute(
            "UPDATE enrollments SET step = ? WHERE enrollment_id = ?",
            (step, enrollment.enrollment_id),
        )

    def set_context(self, enrollment: Enrollment, context: dict[str, Any]) -> None:
        enrollment.parsed_context = context
        if not enrollment.saved:
            return
        raw = orjson.dumps(context)
        enrollment.raw_context = raw
        self.conn.execute(
            "UPDATE enrollments SET context = ? WHERE enrollment_id = ?",
            (raw, enrollment.enrollment_id),
        )

    def end(self, enrollment: Enrollment, status: str, at: int, reason: str) -> None:
        """Close an enrollment and delete its pending timer."""
        enrollment.status = status
        enrollment.ended_at = at
        enrollment.reason = reason
        if not enrollment.saved:
            enrollment.step = None
            self.save(enrollment)
            return
        self.conn.execute(
            "UPDATE enrollments SET status = ?, ended_at = ?, reason = ?, step = NULL"
            " WHERE enrollment_id = ?",
            (status, at, reason, enrollment.enrollment_id),
        )
        if enrollment.timer_id is not None:
            self.conn.execute(
                "DELETE FROM timers WHERE enrollment_id = ?", (enrollment.enrollment_id,)
            )
        enrollment.timer_id = None
        enrollment.due = None

    # ---- timers -------------------------------------------------------------------------

    def add_timer(
        self,
        due: int,
        kind: str,
        person_id: str,
        enrollment: Enrollment | None = None,
        step: str | None = None,
        ref: str | None = None,
    ) -> int:
        if enrollment is not None:
            self.save(enrollment)
        enrollment_id = None if enrollment is None else enrollment.enrollment_id
        cursor = self.conn.execute(
            "INSERT INTO timers (due, kind, person_id, enrollment_id, step, ref)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (due, kind, person_id, enrollment_id, step, ref),
        )
        assert cursor.lastrowid is not None
        if enrollment is not None:
            enrollment.timer_id = cursor.lastrowid
            enrollment.due = due
        return cursor.lastrowid

    def delete_timer(self, timer_id: int) -> bool:
        """Delete a pending timer; return False when it was already gone."""
        cursor = self.conn.execute("DELETE FROM timers WHERE timer_id = ?", (timer_id,))
        return cursor.rowcount > 0

    def timer(self, timer_id: int) -> Timer | None:
        row = self.conn.execute(
            "SELECT timer_id, due, kind, person_id, enrollment_id, step, ref FROM timers"
            " WHERE timer_id = ?",
            (timer_id,),
        ).fetchone()
        return None if row is None else Timer(*row)

    def due_timers(self, until: int, limit: int) -> list[Timer]:
        """Return up to ``limit`` timers due at or before ``until``, earliest first."""
        rows = self.conn.execute(
            "SELECT timer_id, due, kind, person_id, enrollment_id, step, ref FROM timers"
            " WHERE due <= ? ORDER BY due, timer_id LIMIT ?",
            (until, limit),
        ).fetchall()
        return [Timer(*row) for row in rows]

    def next_due(self) -> int | None:
        row = self.conn.execute("SELECT min(due) FROM timers").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # ---- decisions ----------------------------------------------------------------------

    def decide(self, decision: Decision) -> None:
        """Buffer a decision; ``flush_decisions`` writes the buffer in the same transaction."""
        self._decisions.append(decision)

    @property
    def buffered(self) -> int:
        return len(self._decisions)

    def drop_decisions(self, keep: int = 0) -> None:
        del self._decisions[keep:]

    def flush_decisions(self) -> None:
        if not self._decisions:
            return
        self.conn.executemany(
            "INSERT INTO decisions (at, person_id, rule, enrollment_id, step, kind, reason, seq,"
            " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_decision_row(decision) for decision in self._decisions],
        )
        self._decisions.clear()

    # ---- outbox -------------------------------------------------------------------------

    def enqueue(
        self,
        *,
        key: str,
        person_id: str,
        rule: str,
        step: str,
        channel: str,
        payload: str,
        created_at: int,
        not_before: int,
    ) -> int | None:
        """Insert an outbox row; return its id, or None when the key was enqueued before."""
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO outbox (idempotency_key, person_id, rule, step, channel,"
            " payload, created_at, not_before) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, person_id, rule, step, channel, payload, created_at, not_before),
        )
        return cursor.lastrowid if cursor.rowcount > 0 else None

    def count_sends(self, person_id: str, channel: str | None, after: int, before: int) -> int:
        """Count sends (not dead) to the person with ``after < not_before < before``."""
        if channel is None:
            row = self.conn.execute(
                "SELECT count(*) FROM outbox WHERE person_id = ? AND not_before > ?"
                " AND not_before < ? AND status != 'dead'",
                (person_id, after, before),
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT count(*) FROM outbox WHERE person_id = ? AND channel = ?"
                " AND not_before > ? AND not_before < ? AND status != 'dead'",
                (person_id, channel, after, before),
            ).fetchone()
        return int(row[0])

    # ---- in-app slots -------------------------------------------------------------------

    def open_slot(self, person_id: str) -> InAppSlot | None:
        row = self.conn.execute(
            f"SELECT {_SLOT_COLUMNS} FROM inapp_slots WHERE person_id = ? AND status = 'open'",
            (person_id,),
        ).fetchone()
        return None if row is None else InAppSlot(*row)

    def next_queued(self, person_id: str) -> InAppSlot | None:
        row = self.conn.execute(
            f"SELECT {_SLOT_COLUMNS} FROM inapp_slots WHERE person_id = ? AND status = 'queued'"
            " ORDER BY priority DESC, created_at, idempotency_key LIMIT 1",
            (person_id,),
        ).fetchone()
        return None if row is None else InAppSlot(*row)

    def put_slot(self, slot: InAppSlot, at: int) -> bool:
        """Insert a queued or open slot; return False when the key is known already."""
        cursor = self.conn.execute(
            f"INSERT OR IGNORE INTO inapp_slots ({_SLOT_COLUMNS}, opened_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                slot.idempotency_key,
                slot.person_id,
                slot.status,
                slot.priority,
                slot.rule,
                slot.step,
                slot.channel,
                slot.payload,
                slot.created_at,
                slot.expires_at,
                None,
                at if slot.status == "open" else None,
            ),
        )
        return cursor.rowcount > 0

    def open_queued_slot(self, slot: InAppSlot, at: int, expires_at: int) -> InAppSlot:
        self.conn.execute(
            "UPDATE inapp_slots SET status = 'open', opened_at = ?, expires_at = ?"
            " WHERE idempotency_key = ?",
            (at, expires_at, slot.idempotency_key),
        )
        return replace(slot, status="open", expires_at=expires_at)

    def close_slot(self, slot: InAppSlot, at: int) -> None:
        self.conn.execute(
            "UPDATE inapp_slots SET status = 'closed', closed_at = ? WHERE idempotency_key = ?",
            (at, slot.idempotency_key),
        )
        if slot.timer_id is not None:
            self.delete_timer(slot.timer_id)

    def arm_expiry(self, slot: InAppSlot) -> int:
        """Add the timer that closes the open slot when it expires; return its due time."""
        assert slot.expires_at is not None
        timer_id = self.add_timer(
            slot.expires_at, "in_app_expiry", slot.person_id, ref=slot.idempotency_key
        )
        self.conn.execute(
            "UPDATE inapp_slots SET timer_id = ? WHERE idempotency_key = ?",
            (timer_id, slot.idempotency_key),
        )
        return slot.expires_at

    # ---- emitted events -----------------------------------------------------------------

    def add_emit(self, message_id: str, body: dict[str, Any], at: int) -> bool:
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO trigger_emits (message_id, body, created_at) VALUES (?, ?, ?)",
            (message_id, orjson.dumps(body), at),
        )
        self.emits_added = True
        return cursor.rowcount > 0

    def pending_emits(self, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        rows = self.conn.execute(
            "SELECT message_id, body FROM trigger_emits WHERE appended_at IS NULL"
            " ORDER BY created_at, message_id LIMIT ?",
            (limit,),
        ).fetchall()
        return [(str(message_id), orjson.loads(body)) for message_id, body in rows]

    def mark_appended(self, message_ids: Iterable[str], at: int) -> None:
        self.conn.executemany(
            "UPDATE trigger_emits SET appended_at = ? WHERE message_id = ?",
            [(at, message_id) for message_id in message_ids],
        )


def _decision_row(decision: Decision) -> tuple[Any, ...]:
    enrollment_id = decision.enrollment_id
    if decision.enrollment is not None and decision.enrollment.saved:
        enrollment_id = decision.enrollment.enrollment_id
    detail = None if decision.detail is None else orjson.dumps(decision.detail).decode()
    return (
        decision.at,
        decision.person_id,
        decision.rule,
        enrollment_id,
        decision.step,
        decision.kind,
        decision.reason,
        decision.seq,
        detail,
    )


_SLOT_COLUMNS = (
    "idempotency_key, person_id, status, priority, rule, step, channel, payload, created_at,"
    " expires_at, timer_id"
)


def _enrollment(row: tuple[Any, ...]) -> Enrollment:
    """Build an enrollment from a row selected with ``_ENROLLMENT_COLUMNS`` (same order)."""
    return Enrollment(*row)


def move_person_triggers(conn: sqlite3.Connection, from_person: str, to_person: str) -> None:
    """Move a merged person's trigger rows to the person it was merged into.

    A person has at most one open enrollment per rule and key. So an open enrollment whose rule
    and key the survivor has open already stays behind, ended as ``exited`` without its timer.
    """
    conn.execute(
        "UPDATE OR IGNORE enrollments SET person_id = ? WHERE person_id = ?",
        (to_person, from_person),
    )
    stuck = [
        row[0]
        for row in conn.execute(
            "SELECT enrollment_id FROM enrollments WHERE person_id = ?", (from_person,)
        )
    ]
    for enrollment_id in stuck:
        conn.execute(
            "UPDATE enrollments SET status = 'exited', reason = ?, step = NULL,"
            " ended_at = coalesce(entered_at, started_at) WHERE enrollment_id = ?",
            (f"merged into person {to_person}, which has this rule open already", enrollment_id),
        )
        conn.execute("DELETE FROM timers WHERE enrollment_id = ?", (enrollment_id,))
    # The outbox moves too: caps count the survivor's sends, the merged person's included.
    for table in ("timers", "inapp_slots", "decisions", "outbox"):
        conn.execute(
            f"UPDATE {table} SET person_id = ? WHERE person_id = ?", (to_person, from_person)
        )
