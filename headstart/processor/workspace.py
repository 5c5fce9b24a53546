"""The processor's in-memory view of derived state for the batch in progress.

Reads go through caches; writes are collected and flushed in the batch's transaction. The
caches stay valid across batches because the processor is the only writer; they are dropped
after a rollback or when they grow past their limit.
"""

from __future__ import annotations

import uuid
from typing import Any

from headstart.onboarding.state import compute_state
from headstart.plan.model import Plan
from headstart.profiles.person import Person
from headstart.state.store import StateStore

PERSON_NAMESPACE = uuid.UUID("6f1c8e0a-5d0b-4b6e-9a43-2f0d9a7c1e55")
MAX_CACHED_PERSONS = 200_000


def new_person_id(kind: str, value: str) -> str:
    """Derive a person id from the identifier that first created the person.

    The id is a UUIDv5, so replaying the same log gives the same person ids.
    """
    return str(uuid.uuid5(PERSON_NAMESPACE, f"{kind}:{value}"))


class Workspace:
    def __init__(self, store: StateStore):
        self.store = store
        self._ids: dict[tuple[str, str], str] = {}
        self._persons: dict[str, Person] = {}
        self._redirects: dict[str, str] = {}
        self._dirty: set[str] = set()

    def person_id_of(self, kind: str, value: str) -> str | None:
        key = (kind, value)
        person_id = self._ids.get(key)
        if person_id is None:
            person_id = self.store.person_of(kind, value)
            if person_id is None:
                return None
            self._ids[key] = person_id
        while person_id in self._redirects:
            person_id = self._redirects[person_id]
        return person_id

    def person(self, person_id: str) -> Person:
        person = self._persons.get(person_id)
        if person is None:
            person = self.store.load_person(person_id)
            if person is None:
                raise LookupError(f"person {person_id} is bound to an identifier but has no row")
            self._persons[person_id] = person
        return person

    def create(self, kind: str, value: str, seq: int) -> Person:
        person = Person(person_id=new_person_id(kind, value), created_seq=seq)
        self._persons[person.person_id] = person
        self._dirty.add(person.person_id)
        return person

    def bind(self, kind: str, value: str, person: Person) -> None:
        self._ids[(kind, value)] = person.person_id
        self.store.bind(kind, value, person.person_id)
        if kind == "user_id":
            person.user_id = value
        elif kind == "anonymous_id":
            person.add_anonymous_id(value)
        self._dirty.add(person.person_id)

    def touch(self, person: Person) -> None:
        self._dirty.add(person.person_id)

    def merge(self, survivor: Person, loser: Person, keep: dict[str, int]) -> None:
        """Fold ``loser`` into ``survivor`` and point every identifier of the loser at it."""
        survivor.absorb(loser, keep)
        self.store.rebind_all(loser.person_id, survivor.person_id)
        self._redirects[loser.person_id] = survivor.person_id
        self._persons.pop(loser.person_id, None)
        self._dirty.discard(loser.person_id)
        self._dirty.add(survivor.person_id)

    def warn(self, seq: int, at: int, person: Person, code: str, message: str) -> None:
        self.store.record_warning(seq, at, person.person_id, code, message)

    def record_merge(
        self,
        seq: int,
        at: int,
        survivor: Person,
        loser: Person,
        reason: str,
        detail: dict[str, Any],
    ) -> None:
        self.store.record_merge(seq, at, survivor.person_id, loser.person_id, reason, detail)

    def flush(self, plan: Plan | None) -> int:
        """Write every changed person with its onboarding state; return how many."""
        rows: list[tuple[Person, int | None, dict[str, int | None]]] = []
        for person_id in self._dirty:
            person = self._persons[person_id]
            if plan is None:
                rows.append((person, None, {}))
                continue
            state = compute_state(plan, person)
            rows.append((person, state.activated_at, state.milestones))
        self.store.save_persons(rows)
        count = len(self._dirty)
        self._dirty.clear()
        return count

    def after_commit(self) -> None:
        if len(self._persons) > MAX_CACHED_PERSONS or len(self._ids) > 4 * MAX_CACHED_PERSONS:
            self.drop_caches()

    def drop_caches(self) -> None:
        self._ids.clear()
        self._persons.clear()
        self._redirects.clear()
        self._dirty.clear()
