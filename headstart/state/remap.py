"""Carry trigger and delivery rows over to the person ids a rebuild gives out.

A person id is derived from the identifier that created the person, so a rebuild that changes
identity (an admin separation, a new blocklist) can give a person a new id, and hand the old
id to another person. The outbox, the inbox and the trigger tables are not rebuilt: they record
what was decided and sent. Before a rebuild, ``begin`` keeps a copy of the identifier map. When
the replay reaches the last event decided before the rebuild, ``apply`` moves each old person's
rows to the person that now has its user id (or, without one, its creating identifier), in
the processor's transaction. Until then ``pending`` is true and the in-app API waits.
"""

from __future__ import annotations

import logging
import sqlite3

from headstart.processor.workspace import new_person_id
from headstart.state.remap_rows import EventIds, primary_keys, row_owners, split_persons
from headstart.state.schema import REMAP_AT_KEY

logger = logging.getLogger(__name__)

# Non-derived tables whose rows belong to a person.
PERSON_TABLES = ("outbox", "inbox", "timers", "inapp_slots", "decisions")
_ROW_TABLES = ("outbox", "inbox", "enrollments", "decisions")

SCHEMA = """
CREATE TABLE IF NOT EXISTS rebuild_identities (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    person_id TEXT NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rebuild_merged (
    person_id TEXT PRIMARY KEY,
    merged_into TEXT NOT NULL
) WITHOUT ROWID;
"""


class PersonRemap:
    """The identifier map of one rebuild, read and applied inside the caller's transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (REMAP_AT_KEY,)).fetchone()
        self.remap_at: int | None = None if row is None else int(row[0])

    @property
    def pending(self) -> bool:
        return self.remap_at is not None

    def begin(self, decided: int) -> None:
        """Keep the current identifier map before the derived tables are emptied.

        ``decided`` is the last log sequence number that trigger rules evaluated. A rebuild
        that starts while another one is pending keeps the first copy, which is what the
        non-derived rows still refer to.
        """
        if self.pending or not self._has_person_rows():
            return
        self.conn.execute(
            "INSERT INTO rebuild_identities SELECT kind, value, person_id FROM identifiers"
        )
        self.conn.execute(
            "INSERT INTO rebuild_merged SELECT person_id, merged_into FROM merged_persons"
        )
        self._set_remap_at(decided)

    def due(self, offset: int, next_seq: int | None) -> bool:
        """Return True when the replay is at the point where the rows must move."""
        if self.remap_at is None:
            return False
        return offset >= self.remap_at or (next_seq is not None and next_seq > self.remap_at)

    def apply(self, event_ids: EventIds | None = None) -> dict[str, str]:
        """Move the rows of every person whose id changed; return {old id: new id}.

        ``event_ids`` reads the ids of logged events. With it, the rows of a person that the
        rebuild split go to the person of the event that started each row.
        """
        mapping = self._mapping()
        split = split_persons(self.conn) if event_ids is not None else set()
        owners = row_owners(self.conn, split, event_ids) if split and event_ids else {}
        for person_id in split:
            mapping.setdefault(person_id, person_id)
        if mapping:
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS person_map (old TEXT PRIMARY KEY, new TEXT)"
            )
            self.conn.execute("DELETE FROM temp.person_map")
            self.conn.executemany("INSERT INTO temp.person_map VALUES (?, ?)", mapping.items())
            self._move_enrollments(mapping, owners.get("enrollments", {}))
            for table in PERSON_TABLES:
                self.conn.execute(
                    f"UPDATE {table} SET person_id = (SELECT new FROM temp.person_map"
                    f" WHERE old = {table}.person_id) WHERE person_id IN"
                    " (SELECT old FROM temp.person_map)"
                )
            for table, key in primary_keys():
                if table != "enrollments" and owners.get(table):
                    self.conn.executemany(
                        f"UPDATE {table} SET person_id = ? WHERE {key} = ?",
                        [(owner, pk) for pk, owner in owners[table].items()],
                    )
            self.conn.execute("DELETE FROM temp.person_map")
            logger.info("moved trigger and delivery rows of %d persons to new ids", len(mapping))
        self.conn.execute("DELETE FROM rebuild_identities")
        self.conn.execute("DELETE FROM rebuild_merged")
        self.conn.execute("DELETE FROM meta WHERE key = ?", (REMAP_AT_KEY,))
        self.remap_at = None
        return mapping

    def _mapping(self) -> dict[str, str]:
        identifiers: dict[str, list[tuple[str, str]]] = {}
        for kind, value, person_id in self.conn.execute(
            "SELECT kind, value, person_id FROM rebuild_identities ORDER BY kind DESC, value"
        ):
            identifiers.setdefault(person_id, []).append((kind, value))
        mapping: dict[str, str] = {}
        for old, ids in identifiers.items():
            new = self._new_id(old, ids)
            if new is not None and new != old:
                mapping[old] = new
        for loser, survivor in self.conn.execute(
            "SELECT person_id, merged_into FROM rebuild_merged"
        ):
            if survivor in mapping and loser not in mapping:
                mapping[loser] = mapping[survivor]
        return mapping

    def _new_id(self, old: str, ids: list[tuple[str, str]]) -> str | None:
        """Return the person that now has ``old``'s user id, else its creating identifier,
        else any of its identifiers; None when no person has any of them now."""
        creators = [pair for pair in ids if new_person_id(*pair) == old]
        # With several user ids (an admin merge), the one that created the person comes first.
        users = sorted(
            (pair for pair in ids if pair[0] == "user_id"), key=lambda pair: pair not in creators
        )
        for kind, value in [*users, *creators, *ids]:
            row = self.conn.execute(
                "SELECT person_id FROM identifiers WHERE kind = ? AND value = ?", (kind, value)
            ).fetchone()
            if row is not None:
                return str(row[0])
        return None

    def _move_enrollments(self, mapping: dict[str, str], owners: dict[object, str]) -> None:
        """Move enrollments row by row: a person has one open enrollment per rule and key, so
        an open one that meets another is ended instead."""
        rows = self.conn.execute(
            "SELECT enrollment_id, person_id FROM enrollments"
            " WHERE person_id IN (SELECT old FROM temp.person_map)"
        ).fetchall()
        # Park the rows first, so no move can collide with a row that is about to move away.
        self.conn.executemany(
            "UPDATE enrollments SET person_id = ? WHERE enrollment_id = ?",
            [(f"remap:{enrollment_id}", enrollment_id) for enrollment_id, _ in rows],
        )
        for enrollment_id, old in rows:
            new = owners.get(enrollment_id, mapping[old])
            moved = self.conn.execute(
                "UPDATE OR IGNORE enrollments SET person_id = ? WHERE enrollment_id = ?",
                (new, enrollment_id),
            )
            if moved.rowcount:
                continue
            self.conn.execute(
                "UPDATE enrollments SET status = 'exited', step = NULL, person_id = ?,"
                " ended_at = coalesce(entered_at, started_at),"
                " reason = 'identity rebuilt: the person has this rule open already'"
                " WHERE enrollment_id = ?",
                (new, enrollment_id),
            )
            self.conn.execute("DELETE FROM timers WHERE enrollment_id = ?", (enrollment_id,))

    def _has_person_rows(self) -> bool:
        return any(
            self.conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
            for table in _ROW_TABLES
        )

    def _set_remap_at(self, decided: int) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (REMAP_AT_KEY, str(decided)),
        )
        self.remap_at = decided
