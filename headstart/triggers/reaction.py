"""One event as the trigger engine evaluates it, with the person's facts and open enrollments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headstart.events import LoggedEvent, counted_name
from headstart.timeutil import to_iso
from headstart.triggers.conditions import Facts
from headstart.triggers.journey import Moment
from headstart.triggers.tables import OPEN, Enrollment, TriggerTables


class PersonEnrollments:
    """One person's open enrollments and entry history, each read at most once per event.

    Both stay in step with the engine's writes during the event. Open entries whose status
    changed to a closed one are skipped, so ``TriggerTables.end`` on a cached object needs no
    extra bookkeeping.
    """

    def __init__(self, tables: TriggerTables, person_id: str, *, new_person: bool = False):
        self.tables = tables
        self.person_id = person_id
        self.new_person = new_person
        # A person created by the event being evaluated has no trigger rows yet: skip the reads.
        self._rows: dict[tuple[str, str], Enrollment] | None = {} if new_person else None
        self._entered: dict[tuple[str, str], int] | None = {} if new_person else None
        # enrollments started during this event, ended if evaluating the event fails
        self.created: list[Enrollment] = []

    def last_entered(self, rule: str, key: str) -> int | None:
        if self._entered is None:
            self._entered = self.tables.entry_history(self.person_id)
        return self._entered.get((rule, key))

    def note_entry(self, enrollment: Enrollment) -> None:
        if self._entered is not None and enrollment.entered_at is not None:
            slot = (enrollment.rule, enrollment.key)
            self._entered[slot] = max(self._entered.get(slot, 0), enrollment.entered_at)

    def _load(self) -> dict[tuple[str, str], Enrollment]:
        if self._rows is None:
            rows = self.tables.open_enrollments(self.person_id)
            self._rows = {(row.rule, row.key): row for row in rows}
        return self._rows

    def all(self) -> list[Enrollment]:
        return [row for row in self._load().values() if row.status in OPEN]

    def get(self, rule: str, key: str) -> Enrollment | None:
        row = self._load().get((rule, key))
        return row if row is not None and row.status in OPEN else None

    def add_new(self, enrollment: Enrollment) -> None:
        self.created.append(enrollment)
        self.put(enrollment)

    def put(self, enrollment: Enrollment) -> None:
        """Record a new or re-read enrollment (a closed one is dropped)."""
        if self._rows is None:
            return
        slot = (enrollment.rule, enrollment.key)
        if enrollment.status in OPEN:
            self._rows[slot] = enrollment
        elif slot in self._rows and _same_enrollment(self._rows[slot], enrollment):
            del self._rows[slot]


@dataclass
class Reaction:
    """One event with its person's facts, open enrollments and stored event context."""

    event: LoggedEvent
    name: str | None
    facts: Facts
    moment: Moment
    trait_event: bool
    onboarding_event: bool
    open: PersonEnrollments
    rules: set[str] = field(default_factory=set)
    # Older than max_event_age when received: it may end journeys but starts none.
    stale: bool = False
    _context: dict[str, Any] | None = None

    @property
    def person_id(self) -> str:
        return self.facts.person.person_id

    def context(self) -> dict[str, Any]:
        """Return the event as enrollments store it (computed once, on first entry)."""
        if self._context is None:
            self._context = event_context(self.event)
        return self._context


def carries_traits(event: LoggedEvent) -> bool:
    return event.type == "identify" or event.may_carry_traits


def event_context(event: LoggedEvent, keep_zone: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the event as an enrollment stores it for templates and time zones.

    The event's ``context.timezone`` is kept; without one, that of ``keep_zone`` is.
    """
    context: dict[str, Any] = {
        "event": {
            "name": counted_name(event.type, event.event) or event.type,
            "properties": event.properties,
            "timestamp": to_iso(event.timestamp),
            "seq": event.seq,
        }
    }
    body_context = event.body.get("context")
    zone = body_context.get("timezone") if isinstance(body_context, dict) else None
    if isinstance(zone, str):
        context["timezone"] = zone
    elif keep_zone is not None and "timezone" in keep_zone:
        context["timezone"] = keep_zone["timezone"]
    return context


def key_detail(key: str) -> dict[str, Any]:
    """Return the decision detail naming the correlation key; empty for a rule without one."""
    return {"key": key} if key else {}


def _same_enrollment(first: Enrollment, second: Enrollment) -> bool:
    return first is second or (first.saved and first.enrollment_id == second.enrollment_id)
