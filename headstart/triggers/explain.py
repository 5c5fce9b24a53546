"""A person's trigger history for the person view: decisions and enrollments, newest first."""

from __future__ import annotations

from typing import Any

import orjson

from headstart.state.store import StateStore
from headstart.timeutil import to_iso

DECISIONS_SHOWN = 50
ENROLLMENTS_SHOWN = 20

_DECISIONS_SQL = (
    "SELECT decision_id, at, rule, enrollment_id, step, kind, reason, seq, detail"
    " FROM decisions WHERE person_id = ? ORDER BY decision_id DESC LIMIT ?"
)
_ENROLLMENTS_SQL = (
    "SELECT e.enrollment_id, e.rule, e.key, e.status, e.step, e.started_at, e.entered_at,"
    " e.ended_at, e.reason, t.due FROM enrollments e"
    " LEFT JOIN timers t ON t.enrollment_id = e.enrollment_id WHERE e.person_id = ?"
    " ORDER BY e.status IN ('watching', 'active') DESC, e.enrollment_id DESC LIMIT ?"
)


def decisions_of(
    store: StateStore, person_id: str, limit: int = DECISIONS_SHOWN
) -> list[dict[str, Any]]:
    """Return the person's newest trigger decisions, newest first."""
    rows = _person_rows(store, _DECISIONS_SQL, person_id, limit)
    return [
        {
            "at": to_iso(at),
            "rule": rule or None,
            "kind": kind,
            "reason": reason,
            "step": step,
            "enrollment_id": enrollment_id,
            "seq": seq,
            "detail": orjson.loads(detail) if detail else {},
        }
        for _, at, rule, enrollment_id, step, kind, reason, seq, detail in rows
    ]


def enrollments_of(
    store: StateStore, person_id: str, limit: int = ENROLLMENTS_SHOWN
) -> list[dict[str, Any]]:
    """Return the person's enrollments, open ones first, then the newest."""
    rows = _person_rows(store, _ENROLLMENTS_SQL, person_id, limit)
    return [
        {
            "enrollment_id": enrollment_id,
            "rule": rule,
            "key": key or None,
            "status": status,
            "step": step,
            "started_at": to_iso(started_at),
            "entered_at": to_iso(entered_at),
            "ended_at": to_iso(ended_at),
            "reason": reason,
            "next_timer_at": to_iso(due),
        }
        for enrollment_id, rule, key, status, step, started_at, entered_at, ended_at, reason, due in rows
    ]


def _person_rows(store: StateStore, sql: str, person_id: str, limit: int) -> list[Any]:
    """Run ``sql`` with parameters (person_id, limit) under the store's lock."""
    with store.lock:
        return store.conn.execute(sql, (person_id, limit)).fetchall()
