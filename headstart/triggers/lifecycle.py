"""An event meets the person's open enrollments: goals, exits, watches and ``wait_for`` steps.

For each open enrollment of a rule that listens to the event, in this order: its overdue timer
fires first (headstart.triggers.timers), then a goal, then an exit may end it. A watched absence
is cancelled by its missing event, and a ``wait_for`` step resumes on its event. An in-app close
event frees the person's in-app slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from headstart.channels.inapp import inbox_message_id
from headstart.events import LoggedEvent
from headstart.timeutil import to_iso
from headstart.triggers.journey import Journey, Moment
from headstart.triggers.reaction import Reaction, event_context
from headstart.triggers.rules import CompiledRule, EventTest
from headstart.triggers.sends import Outbox
from headstart.triggers.tables import Enrollment, TriggerTables
from headstart.triggers.timers import Timers


@dataclass
class EnrollmentLifecycle:
    """Ends, cancels or resumes open enrollments on the events they listen to."""

    tables: TriggerTables
    outbox: Outbox
    journey: Journey
    timers: Timers

    def react(self, enrollment: Enrollment, reaction: Reaction) -> None:
        """Apply the event to one open enrollment of a rule that listens to it."""
        event, moment = reaction.event, reaction.moment
        current = self.timers.catch_up(enrollment, event.timestamp, moment, reaction.open)
        if current is None:
            return
        rule = self.timers.rule_for(current, moment)
        if rule is None:
            return
        if self._until(rule, current, reaction, "goal") or self._until(
            rule, current, reaction, "exit"
        ):
            return
        if current.status == "watching":
            self._cancel_watch(rule, current, reaction)
            return
        self._resume(rule, current, reaction)

    def close_in_app(self, person_id: str, event: LoggedEvent, moment: Moment) -> None:
        """Close the open in-app message when the event names it."""
        slot = self.tables.open_slot(person_id)
        if slot is None:
            return
        properties = event.properties
        names = {slot.idempotency_key, inbox_message_id(slot.idempotency_key)}
        named = {
            str(properties.get(key))
            for key in ("message_id", "idempotency_key")
            if properties.get(key) is not None
        }
        if not names & named:
            return
        self.outbox.close_in_app(slot, moment.now, f"{event.event} by the person", moment.seq)

    def _cancel_watch(self, rule: CompiledRule, current: Enrollment, reaction: Reaction) -> None:
        """Cancel an absence watch when the missing event arrived."""
        missing = rule.missing
        if missing is None or _after_deadline(current, reaction):
            return
        if not _matches(missing, rule, current, reaction):
            return
        within = (
            f"{reaction.name} arrived by {to_iso(current.due)}"
            if current.due
            else f"{reaction.name} arrived"
        )
        self.journey.end(current, "cancelled", reaction.moment, within)

    def _resume(self, rule: CompiledRule, current: Enrollment, reaction: Reaction) -> None:
        """Resume a ``wait_for`` step on its event, taking the ``on_event`` branch."""
        event, moment = reaction.event, reaction.moment
        step = rule.steps.get(current.step or "")
        wait_for = step.wait_for if step is not None else None
        if step is None or wait_for is None or _after_deadline(current, reaction):
            return
        if not _matches(wait_for, rule, current, reaction):
            return
        if current.timer_id is not None:
            self.tables.delete_timer(current.timer_id)
        context = {**current.context, **event_context(event, keep_zone=current.context)}
        self.tables.set_step(current, None)
        self.tables.set_context(current, context)
        reason = f"{reaction.name} arrived at {to_iso(event.timestamp)}, by the deadline {to_iso(current.due)}"
        self.journey.decide(
            moment, current.person_id, rule.name, "resumed", reason, current, step.id
        )
        self.journey.run(
            rule, current, step.branches["on_event"], reaction.facts, event.timestamp, moment
        )

    def _until(
        self, rule: CompiledRule, enrollment: Enrollment, reaction: Reaction, which: str
    ) -> bool:
        """End the enrollment when the rule's goal or exit is met; return True if it ended."""
        until = rule.goal if which == "goal" else rule.exit
        if until is None:
            return False
        status = "goal" if which == "goal" else "exited"
        if enrollment.status == "watching":
            status = "cancelled"  # it ends before the person entered the rule
        for test in until.events:
            if _matches(test, rule, enrollment, reaction):
                self.journey.end(
                    enrollment, status, reaction.moment, f"{which}: {test.event} happened"
                )
                return True
        if until.condition is None or not until.needs.may_change(
            reaction.name, reaction.trait_event, reaction.onboarding_event
        ):
            return False
        if until.condition(reaction.facts):
            self.journey.end(enrollment, status, reaction.moment, f"{which}: its conditions hold")
            return True
        return False


def _matches(
    test: EventTest, rule: CompiledRule, enrollment: Enrollment, reaction: Reaction
) -> bool:
    """True when the event is the tested one and, where required, carries the enrollment's key."""
    if reaction.name != test.event or not test.predicate(reaction.event):
        return False
    return not test.same_key or rule.key is None or rule.key_of(reaction.event) == enrollment.key


def _after_deadline(enrollment: Enrollment, reaction: Reaction) -> bool:
    """Return True when the event happened after the enrollment's deadline.

    Such an event loses to the timeout even when it is processed before the clock reaches the
    deadline (a client clock ahead, or a historical source), so the outcome depends on event
    time alone.
    """
    return enrollment.due is not None and reaction.event.timestamp > enrollment.due
