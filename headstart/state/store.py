"""Read and write derived state in ``state.sqlite``.

The processor is the only writer. It wraps each batch in ``transaction()`` and stores the log
offset it consumed in the same transaction, which is what makes processing exactly-once.
Readers (API, CLI) open their own connection and see the last committed batch.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from headstart.profiles.person import Person
from headstart.sqlite import connect
from headstart.state.schema import DERIVED_TABLES, SCHEMA
from headstart.triggers.tables import move_person_triggers

PersonRow = tuple[Person, int | None, dict[str, int | None]]

OFFSET_KEY = "log_offset"
PLAN_KEY = "plan_hash"


class StateStore:
    def __init__(self, path: Path, *, check_same_thread: bool = True):
        self.path = path
        # NORMAL is enough: this state is rebuilt from the log, and a process crash
        # (not a power cut) is what exactly-once processing must survive.
        self.conn = connect(path, durable=False, check_same_thread=check_same_thread)
        self.lock = threading.RLock()
        self.conn.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # ---- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Write a meta value; inside the processor's transaction when one is open."""
        with self.lock:
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def offset(self) -> int:
        return int(self.get_meta(OFFSET_KEY) or 0)

    def reset_derived(self) -> None:
        """Empty every derived table and the offset, so the log is replayed from the start."""
        for table in DERIVED_TABLES:
            self.conn.execute(f"DELETE FROM {table}")
        self.set_meta(OFFSET_KEY, "0")

    # ---- identity ---------------------------------------------------------------------

    def person_of(self, kind: str, value: str) -> str | None:
        row = self.conn.execute(
            "SELECT person_id FROM identifiers WHERE kind = ? AND value = ?", (kind, value)
        ).fetchone()
        return None if row is None else str(row[0])

    def bind(self, kind: str, value: str, person_id: str) -> None:
        self.conn.execute(
            "INSERT INTO identifiers (kind, value, person_id) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, value) DO UPDATE SET person_id = excluded.person_id",
            (kind, value, person_id),
        )

    def rebind_all(self, from_person: str, to_person: str) -> None:
        self.conn.execute(
            "UPDATE identifiers SET person_id = ? WHERE person_id = ?", (to_person, from_person)
        )
        self.conn.execute(
            "UPDATE merged_persons SET merged_into = ? WHERE merged_into = ?",
            (to_person, from_person),
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO merged_persons (person_id, merged_into) VALUES (?, ?)",
            (from_person, to_person),
        )
        # A warning both persons already had stays once, on the survivor.
        self.conn.execute(
            "UPDATE OR IGNORE warnings SET person_id = ? WHERE person_id = ?",
            (to_person, from_person),
        )
        self.conn.execute("DELETE FROM warnings WHERE person_id = ?", (from_person,))
        self.conn.execute("DELETE FROM persons WHERE person_id = ?", (from_person,))
        self.conn.execute("DELETE FROM milestones WHERE person_id = ?", (from_person,))
        move_person_triggers(self.conn, from_person, to_person)

    def identifiers_of(self, person_id: str) -> list[tuple[str, str]]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT kind, value FROM identifiers WHERE person_id = ? ORDER BY kind, value",
                (person_id,),
            ).fetchall()
        return [(str(kind), str(value)) for kind, value in rows]

    # ---- persons ----------------------------------------------------------------------

    def load_person(self, person_id: str) -> Person | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT doc FROM persons WHERE person_id = ?", (person_id,)
            ).fetchone()
        return None if row is None else Person.from_doc(orjson.loads(row[0]))

    def lookup_identifiers(self, kind: str, values: Sequence[str]) -> dict[str, str]:
        """Return {value: person_id} for the values of ``kind`` that are bound."""
        found: dict[str, str] = {}
        for chunk in _chunks(values):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT value, person_id FROM identifiers WHERE kind = ? AND value IN ({marks})",
                (kind, *chunk),
            )
            found.update((str(value), str(person_id)) for value, person_id in rows)
        return found

    def load_persons(self, person_ids: Sequence[str]) -> list[Person]:
        persons: list[Person] = []
        for chunk in _chunks(person_ids):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT doc FROM persons WHERE person_id IN ({marks})", chunk)
            persons.extend(Person.from_doc(orjson.loads(doc)) for (doc,) in rows)
        return persons

    def bind_many(self, rows: Sequence[tuple[str, str, str]]) -> None:
        self.conn.executemany(
            "INSERT INTO identifiers (kind, value, person_id) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, value) DO UPDATE SET person_id = excluded.person_id",
            rows,
        )

    def save_persons(self, rows: Iterable[PersonRow], seq: int) -> None:
        """Insert or fully rewrite persons with their activation and milestone times."""
        person_rows = []
        milestone_rows: list[tuple[str, str, int]] = []
        ids = []
        for person, activated_at, reached in rows:
            ids.append((person.person_id,))
            person_rows.append(
                (
                    person.person_id,
                    person.user_id,
                    person.first_seen,
                    person.last_seen,
                    person.signup_at,
                    activated_at,
                    seq,
                    orjson.dumps(person.to_doc()),
                )
            )
            milestone_rows.extend(
                (person.person_id, name, at) for name, at in reached.items() if at is not None
            )
        self.conn.executemany(
            "INSERT INTO persons (person_id, user_id, first_seen, last_seen, signup_at,"
            " activated_at, updated_seq, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (person_id) DO UPDATE SET user_id = excluded.user_id,"
            " first_seen = excluded.first_seen, last_seen = excluded.last_seen,"
            " signup_at = excluded.signup_at, activated_at = excluded.activated_at,"
            " updated_seq = excluded.updated_seq, doc = excluded.doc",
            person_rows,
        )
        self.conn.executemany("DELETE FROM milestones WHERE person_id = ?", ids)
        self.conn.executemany(
            "INSERT INTO milestones (person_id, milestone, reached_at) VALUES (?, ?, ?)",
            milestone_rows,
        )

    def update_activity(self, persons: Iterable[Person], seq: int) -> None:
        """Rewrite only the document and activity columns of existing persons.

        Used when an event changed nothing indexed (no new id, no onboarding change), so
        SQLite touches one row and no secondary index.
        """
        self.conn.executemany(
            "UPDATE persons SET first_seen = ?, last_seen = ?, updated_seq = ?, doc = ?"
            " WHERE person_id = ?",
            [
                (p.first_seen, p.last_seen, seq, orjson.dumps(p.to_doc()), p.person_id)
                for p in persons
            ],
        )

    def canonical_person(self, person_id: str) -> str | None:
        """Follow merges from a person id, current or merged, to the surviving person."""
        with self.lock:
            row = self.conn.execute(
                "SELECT merged_into FROM merged_persons WHERE person_id = ?", (person_id,)
            ).fetchone()
            if row is not None:
                return str(row[0])
            row = self.conn.execute(
                "SELECT 1 FROM persons WHERE person_id = ?", (person_id,)
            ).fetchone()
        return person_id if row is not None else None

    def find_person_id(self, identifier: str) -> str | None:
        """Resolve a person id, user id or anonymous id (optionally ``kind:value``)."""
        kind, sep, value = identifier.partition(":")
        with self.lock:
            if sep and kind in ("user_id", "anonymous_id"):
                return self.person_of(kind, value)
            found = self.canonical_person(identifier)
            if found is not None:
                return found
            for candidate in ("user_id", "anonymous_id"):
                person_id = self.person_of(candidate, identifier)
                if person_id is not None:
                    return person_id
        return None

    # ---- merge log and warnings -------------------------------------------------------

    def record_merge(
        self, seq: int, at: int, survivor: str, merged: str, reason: str, detail: dict[str, Any]
    ) -> None:
        self.conn.execute(
            "INSERT INTO merges (seq, at, survivor, merged, reason, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (seq, at, survivor, merged, reason, orjson.dumps(detail).decode()),
        )

    def record_warning(
        self, seq: int, at: int, person_id: str, code: str, message: str, key: str | None = None
    ) -> None:
        """Record a warning; a repeat of the same ``key`` only counts up."""
        self.conn.execute(
            "INSERT INTO warnings (seq, at, person_id, code, key, message, last_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (person_id, code, key) DO UPDATE SET count = count + 1,"
            " last_seq = excluded.seq",
            (seq, at, person_id, code, key if key is not None else message, message, seq),
        )

    def record_failure(self, seq: int, error: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO failed_events (seq, error) VALUES (?, ?)", (seq, error)
        )

    def merges_of(self, person_id: str) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, at, survivor, merged, reason, detail FROM merges"
                " WHERE survivor = ? OR merged = ? ORDER BY merge_id",
                (person_id, person_id),
            ).fetchall()
        return [
            {
                "seq": seq,
                "at": at,
                "survivor": survivor,
                "merged": merged,
                "reason": reason,
                "detail": orjson.loads(detail),
            }
            for seq, at, survivor, merged, reason, detail in rows
        ]

    def warnings_of(self, person_id: str) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, at, code, message, count, last_seq FROM warnings"
                " WHERE person_id = ? ORDER BY warning_id",
                (person_id,),
            ).fetchall()
        return [
            {
                "seq": seq,
                "at": at,
                "code": code,
                "message": message,
                "count": count,
                "last_seq": last_seq,
            }
            for seq, at, code, message, count, last_seq in rows
        ]

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
