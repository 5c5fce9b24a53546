"""Firing one timer: a wait that ends, a watch whose deadline passed, an in-app expiry.

The engine decides when a timer fires (``TriggerEngine.fire_due`` and ``advance_to``); this
module decides what firing it does. A timer that fires late follows its rule's lateness policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from headstart.plan.model import Plan
from headstart.profiles.person import Person
from headstart.state.store import StateStore
from headstart.timeutil import to_iso
from headstart.triggers.conditions import Facts
from headstart.triggers.journey import Journey, Moment
from headstart.triggers.localtime import next_local_time, time_of_day
from headstart.triggers.reaction import PersonEnrollments, key_detail
from headstart.triggers.rules import CompiledRule, RuleIndex
from headstart.triggers.sends import Outbox
from headstart.triggers.tables import OPEN, Enrollment, Timer, TriggerTables

if TYPE_CHECKING:
    from headstart.processor.workspace import Workspace


@dataclass
class Timers:
    """Fires timers and the overdue timer of an enrollment an event concerns."""

    plan: Plan
    store: StateStore
    workspace: Workspace
    index: RuleIndex
    tables: TriggerTables
    outbox: Outbox
    journey: Journey

    def catch_up(
        self, enrollment: Enrollment, t: int, moment: Moment, cache: PersonEnrollments
    ) -> Enrollment | None:
        """Fire the enrollment's timer if it was due before ``t``; return it if still open."""
        if enrollment.timer_id is None or enrollment.due is None:
            return enrollment
        if enrollment.due >= t or enrollment.due > moment.now:
            return enrollment
        timer = self.tables.timer(enrollment.timer_id)
        if timer is not None:
            self.fire(timer, moment.now)
        current = self.tables.enrollment(enrollment.enrollment_id)
        if current is None:
            return None
        cache.put(current)
        return current if current.status in OPEN else None

    def fire(self, timer: Timer, now: int) -> None:
        if not self.tables.delete_timer(timer.timer_id):
            return
        moment = Moment(now, None)

        if timer.kind == "in_app_expiry":
            slot = self.tables.open_slot(timer.person_id)
            if slot is not None and slot.idempotency_key == timer.ref:
                self.outbox.close_in_app(slot, now, "in-app message expired", None)
            return

        enrollment = self.tables.enrollment(timer.enrollment_id or 0)
        if enrollment is None or enrollment.status not in OPEN:
            return
        enrollment.timer_id = enrollment.due = None
        rule = self.rule_for(enrollment, moment)
        if rule is None:
            return
        person = self._person(enrollment.person_id)
        if person is None:
            self.journey.end(enrollment, "exited", moment, "the person no longer exists")
            return
        if self._late(rule, enrollment, timer, person, moment):
            return

        facts = Facts(person, self.plan, self.index.segments)
        t = timer.due
        if timer.kind in ("absence", "stall"):
            self._enter_watched(rule, enrollment, facts, t, moment)
            return
        step = rule.steps[timer.step or ""]
        if timer.kind == "wait_for":
            reason = f"no {step.wait_for.event if step.wait_for else 'event'} by {to_iso(t)}"
            self.journey.decide(
                moment, enrollment.person_id, rule.name, "timed_out", reason, enrollment, step.id
            )
            self.journey.run(rule, enrollment, step.branches["on_timeout"], facts, t, moment)
            return
        self.journey.run(rule, enrollment, step.next, facts, t, moment)

    def drop_broken(self, timer: Timer, now: int, reason: str) -> None:
        """Delete a timer whose firing failed and end its enrollment with ``reason``."""
        self.tables.delete_timer(timer.timer_id)
        enrollment = self.tables.enrollment(timer.enrollment_id or 0)
        if enrollment is not None and enrollment.status in OPEN:
            self.journey.end(enrollment, "exited", Moment(now, None), reason)

    def rule_for(self, enrollment: Enrollment, moment: Moment) -> CompiledRule | None:
        """Return the enrollment's rule, or end the enrollment when the plan no longer has it."""
        rule = self.index.rules.get(enrollment.rule)
        if rule is None:
            self.journey.end(
                enrollment, "exited", moment, "the rule was removed or disabled in the plan"
            )
            return None
        if enrollment.status == "active" and enrollment.rule_version != rule.version:
            self.journey.end(enrollment, "exited", moment, "the rule's steps changed in the plan")
            return None
        return rule

    def _late(
        self,
        rule: CompiledRule,
        enrollment: Enrollment,
        timer: Timer,
        person: Person,
        moment: Moment,
    ) -> bool:
        """Apply the rule's lateness policy; return True when the timer must not go on."""
        lateness = rule.rule.lateness
        late = moment.now - timer.due
        if late <= lateness.after or lateness.policy == "send":
            return False
        behind = f"timer due {to_iso(timer.due)} fired {late // 1_000_000} s late"
        if lateness.policy == "skip":
            self.journey.end(
                enrollment, "exited", moment, f"{behind}; the lateness policy skips it"
            )
            return True
        zone = self.journey.zone(person, enrollment.context)
        slot = next_local_time(moment.now, time_of_day(timer.due, zone), zone)
        self.tables.add_timer(slot, timer.kind, enrollment.person_id, enrollment, timer.step)
        self.journey.scheduled.append(slot)
        reason = f"{behind}; moved to the next slot {to_iso(slot)}"
        self.journey.decide(
            moment, enrollment.person_id, rule.name, "rescheduled", reason, enrollment, timer.step
        )
        return True

    def _enter_watched(
        self, rule: CompiledRule, enrollment: Enrollment, facts: Facts, t: int, moment: Moment
    ) -> None:
        """Enter the rule for a watched absence or stall whose deadline passed, if allowed."""
        person_id = enrollment.person_id
        if rule.kind == "absence":
            missing = rule.missing.event if rule.missing else "the event"
            reason = f"no {missing} by {to_iso(t)}"
        else:
            reason = f"no progress to milestone {enrollment.key} by {to_iso(t)}"
        last = self.tables.last_entered(rule.name, person_id, enrollment.key)
        blocked = rule.reentry_blocked(last, t)
        if blocked is None and not rule.conditions(facts):
            blocked = "the rule's conditions do not hold"
        if blocked is not None:
            why = f"{reason}, but {blocked}"
            self.journey.end(enrollment, "cancelled", moment, why)
            self.journey.decide(moment, person_id, rule.name, "not_entered", why, enrollment)
            return
        self.tables.activate(enrollment, t, rule.version)
        self.journey.decide(
            moment,
            person_id,
            rule.name,
            "entered",
            reason,
            enrollment,
            detail=key_detail(enrollment.key),
        )
        self.journey.run(rule, enrollment, rule.first, facts, t, moment)

    def _person(self, person_id: str) -> Person | None:
        try:
            return self.workspace.person(person_id)
        except LookupError:
            pass
        canonical = self.store.canonical_person(person_id)
        if canonical is None or canonical == person_id:
            return None
        try:
            return self.workspace.person(canonical)
        except LookupError:
            return None
