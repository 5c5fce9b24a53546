"""Entering rules: event entries, absence and stall watches, trait changes and segments.

An event entry enrolls the person at once. An absence or stall entry first starts a watch: an
enrollment with status ``watching`` and a timer. The watch enters the rule when the timer fires
(headstart.triggers.timers), unless an event cancels it first (headstart.triggers.lifecycle).
Trait, stall and segment entries compare the person before and after the event (``Snapshot``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headstart.onboarding.state import OnboardingState
from headstart.plan.match import MISSING
from headstart.timeutil import to_iso
from headstart.triggers.conditions import Facts
from headstart.triggers.journey import Journey
from headstart.triggers.reaction import Reaction, key_detail
from headstart.triggers.rules import CompiledRule, RuleIndex
from headstart.triggers.tables import Enrollment, TriggerTables
from headstart.triggers.timers import Timers


@dataclass(slots=True)
class Snapshot:
    """Watched traits, onboarding state and segments, as change-based entries compare them."""

    traits: dict[str, Any] | None = None
    state: OnboardingState | None = None
    segments: frozenset[str] | None = None


@dataclass
class Entries:
    """Decides whether an event enters the person into a rule or starts a watch."""

    index: RuleIndex
    tables: TriggerTables
    journey: Journey
    timers: Timers

    def snapshot(self, facts: Facts, name: str | None, traits: bool, onboarding: bool) -> Snapshot:
        """Capture what change-based entries compare, before the event is applied."""
        index = self.index
        snapshot = Snapshot()
        if traits and index.trait_entries:
            snapshot.traits = {trait: facts.trait(trait) for trait in index.trait_entries}
        if onboarding and index.stall_rules:
            snapshot.state = facts.state
        if index.segment_entries and index.segment_needs.may_change(name, traits, onboarding):
            snapshot.segments = self._segments_of(facts)
        return snapshot

    def on_event(self, rule: CompiledRule, reaction: Reaction) -> None:
        """Enter an event-entry rule whose entry event matched."""
        event = reaction.event
        key = rule.key_of(event)
        if key is None:
            reason = f"{reaction.name} has no correlation key {rule.rule.entry.key}"
            self.journey.decide(
                reaction.moment, reaction.person_id, rule.name, "not_entered", reason
            )
            return
        reason = f"{reaction.name} at {to_iso(event.timestamp)}"
        self._enter(rule, reaction, key, event.timestamp, reason)

    def start_absence(self, rule: CompiledRule, reaction: Reaction) -> None:
        """Start watching for the absence whose ``after`` event matched."""
        event, moment = reaction.event, reaction.moment
        key = rule.key_of(event)
        if key is None:
            reason = f"{reaction.name} has no correlation key {rule.rule.entry.key}"
            self.journey.decide(moment, reaction.person_id, rule.name, "not_entered", reason)
            return
        if self.is_open(rule, reaction, key, event.timestamp):
            return
        last = reaction.open.last_entered(rule.name, key)
        if rule.reentry_blocked(last, event.timestamp) is not None:
            return
        within = rule.rule.entry.within
        assert within is not None
        self._watch(rule, reaction, key, event.timestamp, event.timestamp + within, "absence")

    def changes(self, reaction: Reaction, before: Snapshot) -> None:
        """Enter trait-change and segment rules, and re-arm stall watches, after the event."""
        facts = reaction.facts
        if before.traits is not None:
            self._trait_changes(reaction, before.traits)
        if before.state is not None:
            after = facts.state
            if (
                after.signup_at != before.state.signup_at
                or after.milestones != before.state.milestones
            ):
                for rule in self.index.stall_rules:
                    self._restart_stall(rule, reaction)
        if before.segments is not None:
            entered = self._segments_of(facts) - before.segments
            for segment in sorted(entered):
                for rule in self.index.segment_entries[segment]:
                    reason = f"entered segment {segment}"
                    self._enter(rule, reaction, "", reaction.event.timestamp, reason)

    def is_open(self, rule: CompiledRule, reaction: Reaction, key: str, t: int) -> bool:
        """True when the person has this rule and key open (after firing its overdue timer)."""
        current = reaction.open.get(rule.name, key)
        if current is None:
            return False
        return self.timers.catch_up(current, t, reaction.moment, reaction.open) is not None

    def _enter(
        self,
        rule: CompiledRule,
        reaction: Reaction,
        key: str,
        t: int,
        reason: str,
    ) -> None:
        facts, moment = reaction.facts, reaction.moment
        person_id = reaction.person_id
        if reaction.stale or self.is_open(rule, reaction, key, t):
            return
        blocked = rule.reentry_blocked(reaction.open.last_entered(rule.name, key), t)
        if blocked is not None:
            if rule.reentry != "never":
                self.journey.decide(moment, person_id, rule.name, "not_entered", blocked)
            return
        if not rule.conditions(facts):
            self.journey.decide(
                moment,
                person_id,
                rule.name,
                "not_entered",
                f"{reason}, but the rule's conditions do not hold",
            )
            return
        enrollment = self._new_enrollment(rule, reaction, key, "active", t, t)
        reaction.open.note_entry(enrollment)
        self.journey.decide(
            moment, person_id, rule.name, "entered", reason, enrollment, detail=key_detail(key)
        )
        self.journey.run(rule, enrollment, rule.first, facts, t, moment)

    def _watch(
        self,
        rule: CompiledRule,
        reaction: Reaction,
        key: str,
        started_at: int,
        due: int,
        kind: str,
    ) -> None:
        """Start watching for an absence or a stall; the timer enters the rule at ``due``.

        Watches record no decision: they start and end on frequent events, and the
        enrollment row with its timer shows them (see Journey.end).
        """
        if reaction.stale:
            return
        enrollment = self._new_enrollment(rule, reaction, key, "watching", started_at, None)
        self.tables.add_timer(due, kind, reaction.person_id, enrollment)
        self.journey.scheduled.append(due)

    def _new_enrollment(
        self,
        rule: CompiledRule,
        reaction: Reaction,
        key: str,
        status: str,
        started_at: int,
        entered_at: int | None,
    ) -> Enrollment:
        """Start an enrollment occurring with the event and add it to the person's open ones."""
        enrollment = self.tables.new_enrollment(
            rule=rule.name,
            person_id=reaction.person_id,
            key=key,
            occurrence=str(reaction.event.seq),
            status=status,
            version=rule.version,
            started_at=started_at,
            entered_at=entered_at,
            context=reaction.context(),
        )
        reaction.open.add_new(enrollment)
        return enrollment

    def _trait_changes(self, reaction: Reaction, old_traits: dict[str, Any]) -> None:
        facts = reaction.facts
        for trait, rules in self.index.trait_entries.items():
            old, new = old_traits.get(trait, MISSING), facts.trait(trait)
            if _same(old, new):
                continue
            for rule in rules:
                if rule.trait_from is not None and not rule.trait_from(old):
                    continue
                if rule.trait_to is not None and not rule.trait_to(new):
                    continue
                reason = f"trait {trait} changed from {_shown(old)} to {_shown(new)}"
                self._enter(rule, reaction, "", reaction.event.timestamp, reason)

    def _restart_stall(self, rule: CompiledRule, reaction: Reaction) -> None:
        """Re-arm the stall watch after onboarding progress: one watch per next milestone."""
        facts, moment = reaction.facts, reaction.moment
        state = facts.state
        following = next((name for name, at in state.milestones.items() if at is None), None)
        stalled_for = rule.rule.entry.stalled_for
        assert stalled_for is not None
        anchor = None
        if state.signup_at is not None:
            anchor = max(
                [state.signup_at, *(at for at in state.milestones.values() if at is not None)]
            )
        due = None if anchor is None else anchor + stalled_for
        for enrollment in reaction.open.all():
            if enrollment.rule != rule.name or enrollment.status != "watching":
                continue
            if enrollment.key == following and enrollment.due == due:
                return
            progress = "sign-up or milestone progress" if following else "every milestone reached"
            self.journey.end(enrollment, "cancelled", moment, f"{progress}; watching again")
        if following is None or anchor is None or due is None:
            return
        if self.is_open(rule, reaction, following, reaction.event.timestamp):
            return
        last = reaction.open.last_entered(rule.name, following)
        if rule.reentry_blocked(last, due) is not None:
            return
        self._watch(rule, reaction, following, anchor, due, "stall")

    def _segments_of(self, facts: Facts) -> frozenset[str]:
        return frozenset(name for name in self.index.segment_entries if facts.in_segment(name))


def _same(old: Any, new: Any) -> bool:
    return type(old) is type(new) and old == new


def _shown(value: Any) -> str:
    return "(unset)" if value is MISSING else repr(value)
