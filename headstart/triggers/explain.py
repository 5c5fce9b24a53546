"""A person's trigger history for the person view: decisions and enrollments, newest first.

The timeline also shows what became of each enqueued message. An ``enqueued`` decision carries
its outbox row's ``delivery`` (status, attempts, last error), and a message the channel
accepted adds a ``sent`` entry at the time it was sent.
"""

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


_DELIVERIES_SQL = (
    "SELECT outbox_id, channel, status, attempts, sent_at, last_error, provider_message_id"
    " FROM outbox WHERE person_id = ? AND outbox_id >= ? ORDER BY outbox_id"
)


def decisions_of(
    store: StateStore, person_id: str, limit: int = DECISIONS_SHOWN
) -> list[dict[str, Any]]:
    """Return the person's newest trigger decisions and sends, newest first."""
    decisions = _decisions(store, person_id, limit)
    outbox_ids = [entry["detail"]["outbox_id"] for entry in decisions if _outbox_id(entry)]
    if not outbox_ids:
        return decisions
    deliveries = _deliveries(store, person_id, min(outbox_ids))
    sent: list[dict[str, Any]] = []
    for entry in decisions:
        delivery = deliveries.get(_outbox_id(entry) or 0)
        if delivery is None:
            continue
        entry["delivery"] = delivery
        if delivery["status"] == "sent":
            sent.append(_sent_entry(entry, delivery))
    # Sent entries first, so a send stays above a decision made at the same instant.
    return sorted(sent + decisions, key=lambda entry: entry["at"] or "", reverse=True)


def _decisions(store: StateStore, person_id: str, limit: int) -> list[dict[str, Any]]:
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


def _outbox_id(entry: dict[str, Any]) -> int | None:
    if entry["kind"] != "enqueued":
        return None
    outbox_id = entry["detail"].get("outbox_id")
    return outbox_id if isinstance(outbox_id, int) else None


def _deliveries(store: StateStore, person_id: str, first_id: int) -> dict[int, dict[str, Any]]:
    """Return the person's outbox rows from ``first_id`` on, by outbox id."""
    with store.lock:
        rows = store.conn.execute(_DELIVERIES_SQL, (person_id, first_id)).fetchall()
    return {
        outbox_id: {
            "outbox_id": outbox_id,
            "channel": channel,
            "status": status,
            "attempts": attempts,
            "sent_at": to_iso(sent_at),
            "last_error": last_error,
            "provider_message_id": provider_message_id,
        }
        for outbox_id, channel, status, attempts, sent_at, last_error, provider_message_id in rows
    }


def _sent_entry(enqueued: dict[str, Any], delivery: dict[str, Any]) -> dict[str, Any]:
    attempts = delivery["attempts"]
    return {
        "at": delivery["sent_at"],
        "rule": enqueued["rule"],
        "kind": "sent",
        "reason": (
            f"{delivery['channel']} accepted the message"
            f" after {attempts} attempt{'s' if attempts != 1 else ''}"
        ),
        "step": enqueued["step"],
        "enrollment_id": enqueued["enrollment_id"],
        "seq": None,
        "detail": {
            "outbox_id": delivery["outbox_id"],
            "provider_message_id": delivery["provider_message_id"],
        },
    }


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
