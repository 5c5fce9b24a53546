"""A real SQLite event log, state store and processor in one directory, and state snapshots.

Messages are built as Segment JSON, validated by the ingest ``normalize`` step as a historical
import (timestamps kept as sent) and appended to the log, so every test goes through the same
path as events sent over HTTP.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from headstart.ingest.normalize import IngestContext, LogRecord, normalize
from headstart.log.base import AppendResult
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.model import Plan
from headstart.processor.processor import Processor
from headstart.state.store import StateStore
from headstart.timeutil import MICROS_PER_HOUR, parse_iso

SOURCE_ID = "src-test"
T0 = parse_iso("2024-03-01T00:00:00Z")
RECEIVED_AT = parse_iso("2024-06-01T00:00:00Z")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_message_ids = itertools.count(1)


def instant(hours: float) -> int:
    """Return the instant ``hours`` after T0, in UTC microseconds."""
    return T0 + round(hours * MICROS_PER_HOUR)


def iso(micros: int) -> str:
    """Format UTC microseconds as ISO-8601, exact to the microsecond."""
    return (EPOCH + timedelta(microseconds=micros)).isoformat()


def message(
    kind: str,
    *,
    hours: float = 0.0,
    at: int | None = None,
    user: str | None = None,
    anon: str | None = None,
    message_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build a Segment message of type ``kind`` at ``at`` (UTC microseconds) or ``hours`` after T0.

    The timestamp keeps its microseconds, so tests can place events exactly on a boundary.
    """
    timestamp = instant(hours) if at is None else at
    body: dict[str, Any] = {
        "type": kind,
        "messageId": message_id or f"m{next(_message_ids)}",
        "timestamp": iso(timestamp),
    }
    if user is not None:
        body["userId"] = user
    if anon is not None:
        body["anonymousId"] = anon
    body.update(fields)
    return body


def track(event: str, **kwargs: Any) -> dict[str, Any]:
    return message("track", event=event, **kwargs)


def identify(user: str | None, anon: str | None = None, **kwargs: Any) -> dict[str, Any]:
    return message("identify", user=user, anon=anon, **kwargs)


def alias(previous: str, user: str, **kwargs: Any) -> dict[str, Any]:
    return message("alias", user=user, previousId=previous, **kwargs)


def to_record(raw: dict[str, Any], source_id: str = SOURCE_ID) -> LogRecord:
    ctx = IngestContext(source_id=source_id, received_at=RECEIVED_AT, historical=True)
    return normalize(raw, None, ctx)


@dataclass(frozen=True)
class PersonState:
    """One person as the derived state stores it, comparable without its person id."""

    person_id: str = field(compare=False)
    identifiers: frozenset[str]
    user_id: str | None
    first_seen: int | None
    last_seen: int | None
    signup_at: int | None
    activated_at: int | None
    milestones: dict[str, int]
    traits: dict[str, tuple[Any, int]]
    event_counts: dict[str, int]


class Pipeline:
    """An event log, a state store and a processor under ``root``."""

    def __init__(self, root: Path, plan: Plan | None = None, *, batch_size: int = 5000):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.log = SQLiteEventLog(root / "log.sqlite")
        self.store = StateStore(root / "state.sqlite")
        self.processor = Processor(self.log, self.store, plan, batch_size=batch_size)

    def append(self, messages: Iterable[dict[str, Any]]) -> AppendResult:
        return self.log.append([to_record(raw) for raw in messages])

    def process(self) -> int:
        return self.processor.catch_up()

    def send(self, *messages: dict[str, Any]) -> int:
        """Append ``messages`` to the log and process everything up to the log head."""
        self.append(messages)
        return self.process()

    def person(self, identifier: str) -> PersonState:
        """Return the person that ``identifier`` (user id, anonymous id or person id) resolves to."""
        person_id = self.store.find_person_id(identifier)
        assert person_id is not None, f"no person for {identifier!r}"
        return self.persons_by_id()[person_id]

    def persons(self) -> dict[frozenset[str], PersonState]:
        """Return every person keyed by its identifiers, e.g. ``{"user_id:alice", ...}``."""
        return {state.identifiers: state for state in self.persons_by_id().values()}

    def persons_by_id(self) -> dict[str, PersonState]:
        return snapshot_persons(self.store)

    def close(self) -> None:
        self.log.close()
        self.store.close()


def snapshot_persons(store: StateStore) -> dict[str, PersonState]:
    """Read every person with its identifiers, columns, document and milestone rows.

    Raises AssertionError when the tables disagree with each other: an identifier bound to a
    missing person, a person without identifiers, or an indexed column that differs from the
    person document.
    """
    conn = store.conn
    identifiers: dict[str, set[str]] = {}
    for kind, value, person_id in conn.execute("SELECT kind, value, person_id FROM identifiers"):
        identifiers.setdefault(person_id, set()).add(f"{kind}:{value}")
    milestones: dict[str, dict[str, int]] = {}
    for person_id, name, reached_at in conn.execute(
        "SELECT person_id, milestone, reached_at FROM milestones"
    ):
        milestones.setdefault(person_id, {})[name] = reached_at
    rows = conn.execute(
        "SELECT person_id, user_id, first_seen, last_seen, signup_at, activated_at FROM persons"
    ).fetchall()

    result: dict[str, PersonState] = {}
    for person_id, user_id, first_seen, last_seen, signup_at, activated_at in rows:
        person = store.load_person(person_id)
        assert person is not None
        columns = (user_id, first_seen, last_seen, signup_at)
        document = (person.user_id, person.first_seen, person.last_seen, person.signup_at)
        assert columns == document, f"person {person_id}: columns {columns} != doc {document}"
        assert person_id in identifiers, f"person {person_id} has no identifiers"
        result[person_id] = PersonState(
            person_id=person_id,
            identifiers=frozenset(identifiers[person_id]),
            user_id=user_id,
            first_seen=first_seen,
            last_seen=last_seen,
            signup_at=signup_at,
            activated_at=activated_at,
            milestones=milestones.get(person_id, {}),
            traits={name: (trait.value, trait.set_at) for name, trait in person.traits.items()},
            event_counts=dict(person.event_counts),
        )
    unbound = set(identifiers) - set(result)
    assert not unbound, f"identifiers point to persons without a row: {sorted(unbound)}"
    return result


# Tables compared row by row when two runs over the same log must give identical state.
_DUMPED = {
    "identifiers": "SELECT kind, value, person_id FROM identifiers",
    "persons": "SELECT person_id, user_id, first_seen, last_seen, signup_at, activated_at, doc"
    " FROM persons",
    "merged_persons": "SELECT person_id, merged_into FROM merged_persons",
    "milestones": "SELECT person_id, milestone, reached_at FROM milestones",
    "merges": "SELECT seq, at, survivor, merged, reason, detail FROM merges",
    "warnings": "SELECT seq, at, person_id, code, message FROM warnings",
    "failed_events": "SELECT seq, error FROM failed_events",
    "meta": "SELECT key, value FROM meta",
}


def dump_tables(store: StateStore) -> dict[str, list[tuple[Any, ...]]]:
    """Return every derived table's rows, sorted, with person documents decoded."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    for table, sql in _DUMPED.items():
        rows = [tuple(_decoded(value) for value in row) for row in store.conn.execute(sql)]
        dump[table] = sorted(rows, key=repr)
    return dump


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        return orjson.dumps(orjson.loads(value), option=orjson.OPT_SORT_KEYS).decode()
    return value
