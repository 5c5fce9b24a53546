"""Build the person view: identifiers, traits, onboarding state, counts, recent events and
trigger decisions."""

from __future__ import annotations

from typing import Any

from headstart.errors import NotFound
from headstart.events import counted_name
from headstart.log.base import EventLog
from headstart.onboarding.state import compute_state
from headstart.plan.model import Plan
from headstart.state.store import StateStore
from headstart.timeutil import MICROS_PER_SECOND, to_iso
from headstart.triggers.explain import decisions_of, enrollments_of

RECENT_EVENTS = 20


def person_view(
    store: StateStore,
    log: EventLog,
    plan: Plan | None,
    identifier: str,
    recent: int = RECENT_EVENTS,
) -> dict[str, Any]:
    person_id = store.find_person_id(identifier)
    person = store.load_person(person_id) if person_id is not None else None
    if person is None:
        raise NotFound(
            f"no person has the identifier {identifier!r}; pass a person id, user id or "
            "anonymous id, or prefix it with user_id: or anonymous_id:",
            code="person_not_found",
        )
    identifiers = store.identifiers_of(person.person_id)
    newest = [seq for _, seq in person.recent[-recent:]] if recent > 0 else []
    events = sorted(log.events_at(newest), key=lambda e: (e.timestamp, e.seq), reverse=True)
    return {
        "person_id": person.person_id,
        "user_id": person.user_id,
        "identifiers": [{"kind": kind, "value": value} for kind, value in identifiers],
        "first_seen": to_iso(person.first_seen),
        "last_seen": to_iso(person.last_seen),
        "traits": {name: trait.value for name, trait in sorted(person.traits.items())},
        "trait_set_at": {
            name: to_iso(trait.set_at) for name, trait in sorted(person.traits.items())
        },
        "groups": person.groups,
        "onboarding": _onboarding(plan, person) if plan is not None else None,
        "event_counts": dict(sorted(person.event_counts.items())),
        "recent_events": [
            {
                "seq": event.seq,
                "type": event.type,
                # Page and screen calls under the names funnels and event_counts use; the
                # page name is in properties.name.
                "event": counted_name(event.type, event.event),
                "timestamp": to_iso(event.timestamp),
                "received_at": to_iso(event.received_at),
                "message_id": event.message_id,
                "user_id": event.user_id,
                "anonymous_id": event.anonymous_id,
                "properties": event.properties,
            }
            for event in events
        ],
        "merges": [_with_iso(entry) for entry in store.merges_of(person.person_id)],
        "warnings": [_with_iso(entry) for entry in store.warnings_of(person.person_id)],
        "enrollments": enrollments_of(store, person.person_id),
        "decisions": decisions_of(store, person.person_id),
    }


def _onboarding(plan: Plan, person: Any) -> dict[str, Any]:
    state = compute_state(plan, person)
    return {
        "signup_at": to_iso(state.signup_at),
        "activated": state.activated,
        "activated_at": to_iso(state.activated_at),
        "ttv_seconds": None if state.ttv_us is None else state.ttv_us / MICROS_PER_SECOND,
        "milestones": [
            {
                "name": milestone.name,
                "reached": state.milestones[milestone.name] is not None,
                "reached_at": to_iso(state.milestones[milestone.name]),
                "evidence": len(person.evidence.get(milestone.name, [])),
                "min_count": milestone.min_count,
            }
            for milestone in plan.milestones
        ],
    }


def _with_iso(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "at": to_iso(entry["at"])}
