"""The person document that the processor keeps per person.

Every field is built so that the order events arrive in does not matter: first and last seen
are a min and a max, traits keep the value with the latest timestamp, counts add up, and
milestone evidence keeps the k earliest matching timestamps. Merging two persons applies the
same rules, so a merge gives the same document as if all events had come from one person.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# The largest number of ids of one kind kept on a person; more are still resolved through the
# identifiers table but not listed on the profile.
MAX_LISTED_IDS = 1000
# How many of a person's newest events the profile points to, by (timestamp, seq).
RECENT_EVENTS = 50


@dataclass(slots=True)
class TraitValue:
    """A trait's value, the event time it was set at, and the log sequence number that set it."""

    value: Any
    set_at: int
    seq: int

    def newer_than(self, other: TraitValue) -> bool:
        return (self.set_at, self.seq) > (other.set_at, other.seq)


@dataclass(slots=True)
class Person:
    person_id: str
    created_seq: int
    user_id: str | None = None
    # user ids joined to this person by an admin merge; ``user_id`` stays the primary one
    other_user_ids: list[str] = field(default_factory=list)
    anonymous_ids: list[str] = field(default_factory=list)
    first_seen: int | None = None
    last_seen: int | None = None
    traits: dict[str, TraitValue] = field(default_factory=dict)
    event_counts: dict[str, int] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    signup_at: int | None = None
    # milestone name -> earliest matching timestamps, sorted, at most min_count of them
    evidence: dict[str, list[int]] = field(default_factory=dict)
    # [timestamp, seq] of the newest events, oldest first
    recent: list[list[int]] = field(default_factory=list)

    def remember_event(self, timestamp: int, seq: int) -> None:
        recent = self.recent
        entry = [timestamp, seq]
        if not recent or entry >= recent[-1]:
            recent.append(entry)  # the common case: events arrive in time order
        elif len(recent) >= RECENT_EVENTS and entry <= recent[0]:
            return
        else:
            bisect.insort(recent, entry)
        if len(recent) > RECENT_EVENTS:
            del recent[0]

    def identifiers(self) -> set[tuple[str, str]]:
        """Return the typed identifiers listed on the profile."""
        found = {("anonymous_id", value) for value in self.anonymous_ids}
        found.update(("user_id", value) for value in self.other_user_ids)
        if self.user_id is not None:
            found.add(("user_id", self.user_id))
        return found

    def see(self, timestamp: int) -> None:
        if self.first_seen is None or timestamp < self.first_seen:
            self.first_seen = timestamp
        if self.last_seen is None or timestamp > self.last_seen:
            self.last_seen = timestamp

    def set_traits(self, traits: dict[str, Any], timestamp: int, seq: int) -> None:
        for name, value in traits.items():
            incoming = TraitValue(value, timestamp, seq)
            current = self.traits.get(name)
            if current is None or incoming.newer_than(current):
                self.traits[name] = incoming

    def count(self, name: str) -> None:
        self.event_counts[name] = self.event_counts.get(name, 0) + 1

    def add_anonymous_id(self, anonymous_id: str) -> None:
        if anonymous_id not in self.anonymous_ids and len(self.anonymous_ids) < MAX_LISTED_IDS:
            self.anonymous_ids.append(anonymous_id)

    def record_signup(self, timestamp: int) -> bool:
        """Record a sign-up event; return True when it moved the sign-up time."""
        if self.signup_at is None or timestamp < self.signup_at:
            self.signup_at = timestamp
            return True
        return False

    def record_evidence(self, milestone: str, timestamp: int, keep: int) -> bool:
        """Record a matching event; return True when the kept timestamps changed."""
        times = self.evidence.setdefault(milestone, [])
        if len(times) >= keep and timestamp >= times[-1]:
            return False
        bisect.insort(times, timestamp)
        del times[keep:]
        return True

    def absorb(self, other: Person, keep: dict[str, int]) -> None:
        """Fold ``other`` into this person; ``keep`` gives each milestone's min_count."""
        for anonymous_id in other.anonymous_ids:
            self.add_anonymous_id(anonymous_id)
        if self.user_id is None:
            self.user_id = other.user_id
        elif other.user_id is not None and other.user_id != self.user_id:
            self.other_user_ids.append(other.user_id)
        self.other_user_ids.extend(u for u in other.other_user_ids if u not in self.other_user_ids)
        for timestamp in (other.first_seen, other.last_seen):
            if timestamp is not None:
                self.see(timestamp)
        for name, trait in other.traits.items():
            current = self.traits.get(name)
            if current is None or trait.newer_than(current):
                self.traits[name] = trait
        for name, count in other.event_counts.items():
            self.event_counts[name] = self.event_counts.get(name, 0) + count
        for group in other.groups:
            if group not in self.groups:
                self.groups.append(group)
        if other.signup_at is not None:
            self.record_signup(other.signup_at)
        for milestone, times in other.evidence.items():
            for timestamp in times:
                self.record_evidence(milestone, timestamp, keep.get(milestone, len(times)))
        for timestamp, seq in other.recent:
            self.remember_event(timestamp, seq)
        self.created_seq = min(self.created_seq, other.created_seq)

    def to_doc(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "created_seq": self.created_seq,
            "user_id": self.user_id,
            "other_user_ids": self.other_user_ids,
            "anonymous_ids": self.anonymous_ids,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "traits": {name: [t.value, t.set_at, t.seq] for name, t in self.traits.items()},
            "event_counts": self.event_counts,
            "groups": self.groups,
            "signup_at": self.signup_at,
            "evidence": self.evidence,
            "recent": self.recent,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Person:
        return cls(
            person_id=doc["person_id"],
            created_seq=doc["created_seq"],
            user_id=doc["user_id"],
            other_user_ids=doc.get("other_user_ids", []),
            anonymous_ids=doc["anonymous_ids"],
            first_seen=doc["first_seen"],
            last_seen=doc["last_seen"],
            traits={name: TraitValue(*value) for name, value in doc["traits"].items()},
            event_counts=doc["event_counts"],
            groups=doc["groups"],
            signup_at=doc["signup_at"],
            evidence=doc["evidence"],
            recent=doc.get("recent", []),
        )
