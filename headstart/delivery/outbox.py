"""The outbox table as the dispatcher and the admin tools see it.

The trigger engine inserts rows in the processor's transaction. The dispatcher claims due rows
(status ``sending`` with a lease in ``next_attempt_at``), sends them, and records the outcome;
admins list rows and retry or drop dead letters. Statuses:

- ``pending``: waiting for ``not_before``;
- ``sending``: claimed; a row whose lease ran out is claimed again;
- ``sent``: the channel accepted it;
- ``failed``: the last attempt failed and another follows at ``next_attempt_at``;
- ``dead``: out of attempts or rejected for good; kept until retried or dropped;
- ``dropped``: a dead letter an admin gave up on. The row stays, so its idempotency key still
  stops the same send from being enqueued again.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from headstart.channels.writes import prefer_polling, write_transaction
from headstart.sqlite import connect
from headstart.state.schema import SCHEMA
from headstart.timeutil import to_iso

Status = Literal["pending", "sending", "sent", "failed", "dead", "dropped"]
STATUSES: tuple[Status, ...] = ("pending", "sending", "sent", "failed", "dead", "dropped")

_COLUMNS = (
    "outbox_id, idempotency_key, person_id, rule, step, channel, payload, created_at,"
    " not_before, status, attempts, next_attempt_at, last_error, sent_at, provider_message_id"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    outbox_id: int
    idempotency_key: str
    person_id: str
    rule: str
    step: str
    channel: str
    payload: str
    created_at: int
    not_before: int
    status: str
    attempts: int
    next_attempt_at: int | None
    last_error: str | None
    sent_at: int | None
    provider_message_id: str | None

    def to_json(self) -> dict[str, Any]:
        try:
            payload: Any = orjson.loads(self.payload)
        except orjson.JSONDecodeError:
            payload = self.payload
        return {
            "outbox_id": self.outbox_id,
            "idempotency_key": self.idempotency_key,
            "person_id": self.person_id,
            "rule": self.rule,
            "step": self.step,
            "channel": self.channel,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": to_iso(self.created_at),
            "not_before": to_iso(self.not_before),
            "next_attempt_at": to_iso(self.next_attempt_at),
            "sent_at": to_iso(self.sent_at),
            "last_error": self.last_error,
            "provider_message_id": self.provider_message_id,
            "payload": payload,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed row: ``sent``, ``failed`` (retry at ``next_attempt_at``) or ``dead``."""

    outbox_id: int
    status: Literal["sent", "failed", "dead"]
    at: int
    next_attempt_at: int | None = None
    error: str | None = None
    provider_message_id: str | None = None


class OutboxStore:
    """One connection to the outbox in ``state.sqlite``; safe to share between threads."""

    def __init__(self, path: Path):
        self.path = path
        # NORMAL, like the processor's writes to this file: a process crash loses nothing, and
        # a power cut may lose the last recorded outcomes, which only re-sends those rows
        # under their idempotency keys.
        self._conn = connect(path, durable=False, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(SCHEMA)
            prefer_polling(self._conn)

    # ---- dispatcher ---------------------------------------------------------------------

    def claim(
        self, now: int, limit: int, lease_us: int, exclude: Collection[int] = ()
    ) -> list[OutboxRow]:
        """Mark up to ``limit`` due rows ``sending`` until ``now + lease_us`` and return them.

        Due: pending rows whose ``not_before`` has passed, failed rows whose retry time has
        come, and sending rows whose lease ran out. ``attempts`` counts this claim.
        """
        if limit <= 0:
            return []
        skip = ",".join(str(int(outbox_id)) for outbox_id in exclude)
        not_excluded = f" AND outbox_id NOT IN ({skip})" if skip else ""
        with self._lock, write_transaction(self._conn):
            rows = self._due_rows(now, limit, not_excluded)
            self._conn.executemany(
                "UPDATE outbox SET status = 'sending', attempts = attempts + 1,"
                " next_attempt_at = ? WHERE outbox_id = ?",
                [(now + lease_us, row[0]) for row in rows],
            )
        return [_claimed(_row(row), now + lease_us) for row in rows]

    def _due_rows(self, now: int, limit: int, not_excluded: str) -> list[Any]:
        """Select due rows with range scans of ``outbox_due``, never a scan of sent rows.

        Pending rows are read in (next_attempt_at, outbox_id) index order, which is the
        order they were enqueued in while next_attempt_at is null.
        """
        # NOTE: pending rows held back by a future not_before (quiet hours) are in the same
        # index range and are stepped over on every claim; thousands of them slow claims down.
        params = {"now": now, "limit": limit}
        retries = self._conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE status IN ('failed', 'sending')"
            f" AND next_attempt_at <= :now AND not_before <= :now{not_excluded}"
            " ORDER BY next_attempt_at LIMIT :limit",
            params,
        ).fetchall()
        pending = self._conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE status = 'pending'"
            f" AND COALESCE(next_attempt_at, 0) <= :now AND not_before <= :now{not_excluded}"
            " ORDER BY next_attempt_at, outbox_id LIMIT :limit",
            params,
        ).fetchall()
        rows = retries + pending
        rows.sort(key=lambda row: (max(row[8], row[11] or 0), row[0]))
        return rows[:limit]

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Store the outcomes of claimed rows in one transaction.

        A row that an admin changed while it was being sent (dropped, retried) keeps the
        admin's status.
        """
        if not outcomes:
            return
        with self._lock, write_transaction(self._conn):
            self._conn.executemany(
                "UPDATE outbox SET status = ?, next_attempt_at = ?, last_error = ?,"
                " sent_at = ?, provider_message_id = COALESCE(?, provider_message_id)"
                " WHERE outbox_id = ? AND status = 'sending'",
                [
                    (
                        outcome.status,
                        outcome.next_attempt_at,
                        outcome.error,
                        outcome.at if outcome.status == "sent" else None,
                        outcome.provider_message_id,
                        outcome.outbox_id,
                    )
                    for outcome in outcomes
                ],
            )

    def release_orphans(self, now: int) -> int:
        """Make every ``sending`` row due now; call only while holding the dispatcher lock.

        A row left ``sending`` by a dispatcher that died may or may not have reached its
        receiver; sending it again with the same idempotency key is the safe choice.
        """
        with self._lock, write_transaction(self._conn):
            cursor = self._conn.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE status = 'sending'", (now,)
            )
        return cursor.rowcount

    def next_due(self) -> int | None:
        """Return the earliest time a row becomes due (or its lease ends), or None if none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MIN(MAX(not_before, COALESCE(next_attempt_at, 0))) FROM outbox"
                " WHERE status IN ('pending', 'failed', 'sending')"
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # ---- inserting (trigger engine, tests, `headstart messages send`) --------------------

    def enqueue(
        self,
        *,
        idempotency_key: str,
        person_id: str,
        rule: str,
        step: str,
        channel: str,
        payload: dict[str, Any],
        created_at: int,
        not_before: int | None = None,
    ) -> int | None:
        """Insert a pending row; return its id, or None if the key was enqueued before."""
        with self._lock, write_transaction(self._conn):
            cursor = self._conn.execute(
                "INSERT INTO outbox (idempotency_key, person_id, rule, step, channel, payload,"
                " created_at, not_before) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (idempotency_key) DO NOTHING",
                (
                    idempotency_key,
                    person_id,
                    rule,
                    step,
                    channel,
                    orjson.dumps(payload).decode(),
                    created_at,
                    created_at if not_before is None else not_before,
                ),
            )
        return cursor.lastrowid if cursor.rowcount == 1 else None

    # ---- admin ----------------------------------------------------------------------------

    def rows(
        self,
        *,
        status: str | None = None,
        channel: str | None = None,
        rule: str | None = None,
        person_id: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[OutboxRow]:
        """Return rows newest first, filtered; ``before`` pages by outbox id."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("status", status),
            ("channel", channel),
            ("rule", rule),
            ("person_id", person_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            clauses.append("outbox_id < ?")
            params.append(before)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            found = self._conn.execute(
                f"SELECT {_COLUMNS} FROM outbox{where} ORDER BY outbox_id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [_row(row) for row in found]

    def get(self, outbox_id: int) -> OutboxRow | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE outbox_id = ?", (outbox_id,)
            ).fetchone()
        return None if row is None else _row(row)

    def counts(self) -> dict[str, int]:
        """Return the number of rows per status, every status included."""
        with self._lock:
            found = dict(
                self._conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
            )
        return {status: int(found.get(status, 0)) for status in STATUSES}

    def retry(self, outbox_ids: Iterable[int] | None = None) -> int:
        """Make dead (or dropped) rows pending again with fresh attempts; None means every dead row."""
        return self._change(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = NULL"
            " WHERE status IN ('dead', 'dropped')",
            "status = 'dead'",
            outbox_ids,
        )

    def drop(self, outbox_ids: Iterable[int] | None = None) -> int:
        """Mark dead rows dropped; None means every dead row."""
        return self._change(
            "UPDATE outbox SET status = 'dropped', next_attempt_at = NULL WHERE status = 'dead'",
            "1",
            outbox_ids,
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _change(self, update: str, all_filter: str, outbox_ids: Iterable[int] | None) -> int:
        with self._lock, write_transaction(self._conn):
            if outbox_ids is None:
                return self._conn.execute(f"{update} AND {all_filter}").rowcount
            return sum(
                self._conn.execute(f"{update} AND outbox_id = ?", (outbox_id,)).rowcount
                for outbox_id in outbox_ids
            )


def _row(row: Sequence[Any]) -> OutboxRow:
    return OutboxRow(*row)


def _claimed(row: OutboxRow, lease_end: int) -> OutboxRow:
    return OutboxRow(
        row.outbox_id,
        row.idempotency_key,
        row.person_id,
        row.rule,
        row.step,
        row.channel,
        row.payload,
        row.created_at,
        row.not_before,
        "sending",
        row.attempts + 1,
        lease_end,
        row.last_error,
        row.sent_at,
        row.provider_message_id,
    )
