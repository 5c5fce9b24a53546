"""The processor's in-memory view of derived state for the batch in progress.

Before a batch, ``prefetch`` loads every identifier and person the batch mentions in a few
queries. During the batch, reads hit the caches and writes are collected; ``flush`` writes them
with one statement per kind inside the batch's transaction. The caches stay valid across
batches because the processor is the only writer; they are dropped after a rollback or when
they grow past their limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from headstart.events import LoggedEvent
from headstart.onboarding.state import compute_state
from headstart.plan.model import Plan
from headstart.profiles.person import Person
from headstart.state.store import PersonRow, StateStore

PERSON_NAMESPACE = uuid.UUID("6f1c8e0a-5d0b-4b6e-9a43-2f0d9a7c1e55")
MAX_CACHED_PERSONS = 200_000
MAX_CACHED_IDS = 800_000


def new_person_id(kind: str, value: str) -> str:
    """Derive a person id from the identifier that first created the person.

    The id is a UUIDv5, so replaying the same log gives the same person ids.
    """
    return str(uuid.uuid5(PERSON_NAMESPACE, f"{kind}:{value}"))


class Workspace:
    def __init__(self, store: StateStore):
        self.store = store
        # (kind, value) -> person id, or None when known to be unbound
        self._ids: dict[tuple[str, str], str | None] = {}
        self._persons: dict[str, Person] = {}
        self._redirects: dict[str, str] = {}
        self._new: set[str] = set()
        self._dirty: set[str] = set()
        self._rewrite: set[str] = set()
        self._binds: list[tuple[str, str, str]] = []

    # ---- reads ------------------------------------------------------------------------

    def prefetch(self, events: Iterable[LoggedEvent]) -> None:
        """Load the identifiers and persons that ``events`` refer to, in bulk."""
        wanted: dict[str, set[str]] = {"user_id": set(), "anonymous_id": set()}
        for event in events:
            if event.user_id is not None:
                wanted["user_id"].add(event.user_id)
            if event.anonymous_id is not None:
                wanted["anonymous_id"].add(event.anonymous_id)
            if event.type == "alias" and event.previous_id is not None:
                wanted["user_id"].add(event.previous_id)
                wanted["anonymous_id"].add(event.previous_id)
        person_ids: set[str] = set()
        for kind, values in wanted.items():
            missing = [value for value in values if (kind, value) not in self._ids]
            found = self.store.lookup_identifiers(kind, missing) if missing else {}
            for value in missing:
                person_id = found.get(value)
                self._ids[(kind, value)] = person_id
                if person_id is not None and person_id not in self._persons:
                    person_ids.add(person_id)
        for person in self.store.load_persons(sorted(person_ids)):
            self._persons.setdefault(person.person_id, person)

    def person_id_of(self, kind: str, value: str) -> str | None:
        key = (kind, value)
        if key in self._ids:
            person_id = self._ids[key]
        else:
            person_id = self.store.person_of(kind, value)
            self._ids[key] = person_id
        if person_id is None:
            return None
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

    # ---- writes -----------------------------------------------------------------------

    def create(self, kind: str, value: str, seq: int) -> Person:
        person = Person(person_id=new_person_id(kind, value), created_seq=seq)
        self._persons[person.person_id] = person
        self._new.add(person.person_id)
        self._rewrite.add(person.person_id)
        return person

    def bind(self, kind: str, value: str, person: Person) -> None:
        self._ids[(kind, value)] = person.person_id
        self._binds.append((kind, value, person.person_id))
        if kind == "user_id":
            person.user_id = value
        elif kind == "anonymous_id":
            person.add_anonymous_id(value)
        self._rewrite.add(person.person_id)

    def touch(self, person: Person, *, rewrite: bool = False) -> None:
        """Mark a person changed; ``rewrite`` when indexed columns or milestones changed."""
        if rewrite:
            self._rewrite.add(person.person_id)
        else:
            self._dirty.add(person.person_id)

    def merge(self, survivor: Person, loser: Person, keep: dict[str, int]) -> None:
        """Fold ``loser`` into ``survivor`` and point every identifier of the loser at it."""
        survivor.absorb(loser, keep)
        self._flush_binds()
        self._new.discard(loser.person_id)
        self.store.rebind_all(loser.person_id, survivor.person_id)
        self._redirects[loser.person_id] = survivor.person_id
        self._persons.pop(loser.person_id, None)
        self._dirty.discard(loser.person_id)
        self._rewrite.discard(loser.person_id)
        self._rewrite.add(survivor.person_id)

    def warn(
        self, seq: int, at: int, person: Person, code: str, message: str, key: str | None = None
    ) -> None:
        self.store.record_warning(seq, at, person.person_id, code, message, key)

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

    def flush(self, plan: Plan | None, seq: int) -> int:
        """Write every changed person, with onboarding state where it may have changed."""
        self._flush_binds()
        rows: list[PersonRow] = []
        for person_id in self._rewrite:
            person = self._persons[person_id]
            if plan is None:
                rows.append((person, None, {}))
                continue
            state = compute_state(plan, person)
            rows.append((person, state.activated_at, state.milestones))
        self.store.save_persons(rows, seq)
        light = [self._persons[pid] for pid in self._dirty if pid not in self._rewrite]
        self.store.update_activity(light, seq)
        count = len(rows) + len(light)
        self._new.clear()
        self._dirty.clear()
        self._rewrite.clear()
        return count

    def _flush_binds(self) -> None:
        if self._binds:
            self.store.bind_many(self._binds)
            self._binds.clear()

    def after_commit(self) -> None:
        too_big = (
            len(self._persons) > MAX_CACHED_PERSONS
            or len(self._ids) > MAX_CACHED_IDS
            or len(self._redirects) > MAX_CACHED_IDS
        )
        if too_big:
            self.drop_caches()

    def drop_caches(self) -> None:
        self._ids.clear()
        self._persons.clear()
        self._redirects.clear()
        self._new.clear()
        self._dirty.clear()
        self._rewrite.clear()
        self._binds.clear()
