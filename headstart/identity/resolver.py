"""Map an event's ids to one person, merging persons when ids are seen together.

Identifiers are typed: ``user_id`` and ``anonymous_id``. Merges happen on identify, on alias
(previousId -> userId) and on any event that carries both ids. A person has at most one user
id: a merge that would join two different user ids is refused and recorded as an
``identity_conflict`` warning on both persons; the event then goes to the person of its user id.
Placeholder ids from the blocklist are ignored, so they can never join unrelated persons.
Admin merges (headstart.identity.admin) may join two user ids; admin separations forbid any
merge or id attachment that would put two separated identifiers into one person.
"""

from __future__ import annotations

from collections.abc import Sequence

from headstart.events import LoggedEvent
from headstart.identity.admin import ADMIN_SOURCE_ID, AdminMerge, Identifier, admin_merge_of
from headstart.processor.workspace import Workspace
from headstart.profiles.person import Person


class IdentityResolver:
    def __init__(
        self,
        workspace: Workspace,
        blocklist: frozenset[str],
        keep: dict[str, int],
        separations: Sequence[tuple[Identifier, Identifier]] = (),
    ):
        self.ws = workspace
        self.blocklist = blocklist
        self.keep = keep
        self._apart: dict[Identifier, set[Identifier]] = {}
        for a, b in separations:
            self._apart.setdefault(a, set()).add(b)
            self._apart.setdefault(b, set()).add(a)

    def usable(self, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() in self.blocklist:
            return None
        return value

    def resolve(self, event: LoggedEvent) -> Person | None:
        """Return the person the event belongs to after any merge it causes, or None.

        Internal admin events return None: they change identity but are not user activity.
        """
        if event.source_id == ADMIN_SOURCE_ID:
            request = admin_merge_of(event.source_id, event.body)
            if request is not None:
                self._admin_merge(event, request)
            return None
        user_id = self.usable(event.user_id)
        anonymous_id = self.usable(event.anonymous_id)
        if event.type == "alias":
            previous = self.usable(event.previous_id)
            if user_id is not None and previous is not None:
                person = self._alias(event, previous, user_id)
                if anonymous_id is not None:
                    self._attach_anonymous(event, person, anonymous_id)
                return person
        if user_id is not None:
            adopted = self._adopt(event, user_id, anonymous_id)
            if adopted is not None:
                return adopted
            person = self._user(event, user_id)
            if anonymous_id is not None:
                self._attach_anonymous(event, person, anonymous_id)
            return person
        if anonymous_id is not None:
            return self._anonymous(event, anonymous_id)
        return None

    def _adopt(self, event: LoggedEvent, user_id: str, anonymous_id: str | None) -> Person | None:
        """Give a new user id to the anonymous person it arrives with: no merge is needed.

        This is the common first identify call. Returns None when it does not apply.
        """
        if anonymous_id is None or self.ws.person_id_of("user_id", user_id) is not None:
            return None
        person_id = self.ws.person_id_of("anonymous_id", anonymous_id)
        if person_id is None:
            return None
        person = self.ws.person(person_id)
        if person.user_id is not None or self._kept_apart(person, {("user_id", user_id)}):
            return None
        self.ws.bind("user_id", user_id, person)
        return person

    def _user(self, event: LoggedEvent, user_id: str) -> Person:
        person_id = self.ws.person_id_of("user_id", user_id)
        if person_id is not None:
            return self.ws.person(person_id)
        person = self.ws.create("user_id", user_id, event.seq)
        self.ws.bind("user_id", user_id, person)
        return person

    def _anonymous(self, event: LoggedEvent, anonymous_id: str) -> Person:
        person_id = self.ws.person_id_of("anonymous_id", anonymous_id)
        if person_id is not None:
            return self.ws.person(person_id)
        person = self.ws.create("anonymous_id", anonymous_id, event.seq)
        self.ws.bind("anonymous_id", anonymous_id, person)
        return person

    def _attach_anonymous(self, event: LoggedEvent, person: Person, anonymous_id: str) -> None:
        """Join the anonymous id's person (if any) to ``person``, the identified side."""
        other_id = self.ws.person_id_of("anonymous_id", anonymous_id)
        if other_id is None:
            if not self._kept_apart(person, {("anonymous_id", anonymous_id)}):
                self.ws.bind("anonymous_id", anonymous_id, person)
            return
        if other_id == person.person_id:
            return
        self._join(
            event,
            person,
            self.ws.person(other_id),
            reason=event.type,
            link=("anonymous_id", anonymous_id),
        )

    def _alias(self, event: LoggedEvent, previous: str, user_id: str) -> Person:
        previous_pid = self.ws.person_id_of("user_id", previous)
        kind = "user_id"
        if previous_pid is None:
            kind = "anonymous_id"
            previous_pid = self.ws.person_id_of("anonymous_id", previous)
        user_pid = self.ws.person_id_of("user_id", user_id)

        if previous_pid is None:
            person = self._user(event, user_id)
            if not self._kept_apart(person, {("anonymous_id", previous)}):
                self.ws.bind("anonymous_id", previous, person)
            return person
        previous_person = self.ws.person(previous_pid)
        if user_pid is None:
            if previous_person.user_id is None:
                if self._kept_apart(previous_person, {("user_id", user_id)}):
                    return self._user(event, user_id)
                self.ws.bind("user_id", user_id, previous_person)
                return previous_person
            person = self._user(event, user_id)
            self._conflict(event, person, previous_person, link=(kind, previous))
            return person
        person = self.ws.person(user_pid)
        if user_pid != previous_pid:
            self._join(event, person, previous_person, reason="alias", link=(kind, previous))
        return person

    def _join(
        self,
        event: LoggedEvent,
        identified: Person,
        other: Person,
        *,
        reason: str,
        link: tuple[str, str],
    ) -> None:
        if other.user_id is not None and other.user_id != identified.user_id:
            self._conflict(event, identified, other, link=link)
            return
        if self._kept_apart(identified, other.identifiers()):
            self._warn_separated(event, identified, other)
            return
        survivor, loser = _survivor(identified, other)
        detail = {
            "link": {"kind": link[0], "value": link[1]},
            "survivor_user_id": survivor.user_id,
            "merged_user_id": loser.user_id,
            "merged_anonymous_ids": loser.anonymous_ids[:20],
            "message_id": event.message_id,
        }
        self.ws.record_merge(event.seq, event.timestamp, survivor, loser, reason, detail)
        self.ws.merge(survivor, loser, self.keep)

    def _conflict(
        self, event: LoggedEvent, person: Person, other: Person, *, link: tuple[str, str]
    ) -> None:
        key = f"{link[0]}:{link[1]}|{person.user_id}|{other.user_id}"
        message = (
            f"not merged: {link[0]} {link[1]!r} links user ids {person.user_id!r} and "
            f"{other.user_id!r} (first in event {event.message_id}); a person has one user id, "
            "so merge them explicitly if they are the same person"
        )
        self.ws.warn(event.seq, event.timestamp, person, "identity_conflict", message, key)
        self.ws.warn(event.seq, event.timestamp, other, "identity_conflict", message, key)

    def _admin_merge(self, event: LoggedEvent, request: AdminMerge) -> None:
        into_id = self.ws.person_id_of(*request.into)
        other_id = self.ws.person_id_of(*request.other)
        if into_id is None or other_id is None or into_id == other_id:
            return
        into, other = self.ws.person(into_id), self.ws.person(other_id)
        if self._kept_apart(into, other.identifiers()):
            self._warn_separated(event, into, other)
            return
        detail = {
            "into": list(request.into),
            "other": list(request.other),
            "reason": request.reason,
            "merged_user_id": other.user_id,
            "message_id": event.message_id,
        }
        self.ws.record_merge(event.seq, event.timestamp, into, other, "admin", detail)
        self.ws.merge(into, other, self.keep)

    def _kept_apart(self, person: Person, incoming: set[Identifier]) -> bool:
        """Return True when an admin separation forbids joining ``incoming`` to ``person``."""
        if not self._apart:
            return False
        own = person.identifiers()
        return any(self._apart.get(identifier, set()) & incoming for identifier in own) or any(
            self._apart.get(identifier, set()) & own for identifier in incoming
        )

    def _warn_separated(self, event: LoggedEvent, person: Person, other: Person) -> None:
        key = "|".join(sorted((person.person_id, other.person_id)))
        message = (
            f"not merged: an admin separation keeps persons {person.person_id} and "
            f"{other.person_id} apart (first in event {event.message_id})"
        )
        self.ws.warn(event.seq, event.timestamp, person, "identity_separated", message, key)
        self.ws.warn(event.seq, event.timestamp, other, "identity_separated", message, key)


def _survivor(identified: Person, other: Person) -> tuple[Person, Person]:
    """Keep the person with a user id, else the one created first."""
    if identified.user_id is not None and other.user_id is None:
        return identified, other
    if other.user_id is not None and identified.user_id is None:
        return other, identified
    if other.created_seq < identified.created_seq:
        return other, identified
    return identified, other
