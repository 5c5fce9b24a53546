"""Run an enrollment through its rule's steps until it waits or ends.

Times: ``t`` is the journey time, the instant the current step is reached in event time (the
entry event's timestamp, a timer's due time, or the resuming event's timestamp). Waits are
measured from it, so a backlog replayed late schedules the same due times as live
processing would have. Sends are never earlier than the processing clock (``Moment.now``).

Every action has an idempotency key ``rule:step:person_id:occurrence``, where the occurrence
is the log sequence number of the event that started the enrollment. Steps form a tree
without loops, so a key names one send intent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

from headstart.plan.model import Plan
from headstart.plan.triggers import (
    TEMPLATE_VARIABLES,
    Triggers,
    format_duration,
    local_time_parts,
)
from headstart.profiles.person import Person
from headstart.timeutil import to_iso
from headstart.triggers.conditions import Facts
from headstart.triggers.emit import emitted_message_id
from headstart.triggers.localtime import find_zone, next_local_time
from headstart.triggers.rules import CompiledRule, CompiledStep
from headstart.triggers.sends import Outbox, SendIntent
from headstart.triggers.tables import Decision, Enrollment, TriggerTables
from headstart.triggers.templates import Rendered, TemplateFailure, Templates

# Every variable a template can read; see headstart.triggers.templates.


@dataclass(frozen=True, slots=True)
class Moment:
    """When a decision is taken: the processing clock, and the log event behind it if any."""

    now: int
    seq: int | None
    # the event created the person, so no earlier trigger rows or sends exist for them
    new_person: bool = False


@dataclass(frozen=True, slots=True)
class _Action:
    """An action step about to run for one enrollment, with its rendered template context."""

    rule: CompiledRule
    enrollment: Enrollment
    step: CompiledStep
    person: Person
    context: dict[str, Any]
    # the idempotency key rule:step:person_id:occurrence
    key: str
    # the journey time the step is reached at
    t: int
    moment: Moment


class Journey:
    """Executes steps: waits become timers, actions become outbox rows, emits or traits."""

    def __init__(
        self,
        plan: Plan,
        settings: Triggers,
        tables: TriggerTables,
        outbox: Outbox,
        templates: Templates,
    ):
        self.plan = plan
        self.settings = settings
        self.tables = tables
        self.outbox = outbox
        self.templates = templates
        self.fallback = ZoneInfo(settings.fallback_timezone)
        self.scheduled: list[int] = []

    # ---- decisions and endings ----------------------------------------------------------

    def decide(
        self,
        moment: Moment,
        person_id: str,
        rule: str,
        kind: str,
        reason: str,
        enrollment: Enrollment | None = None,
        step: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.tables.decide(
            Decision(
                moment.now,
                person_id,
                rule,
                kind,
                reason,
                None,
                step,
                moment.seq,
                detail,
                enrollment,
            )
        )

    def end(self, enrollment: Enrollment, status: str, moment: Moment, reason: str) -> None:
        """End an enrollment, cancel its timer and record why.

        A watch that ends before the person entered (``cancelled``) is recorded on the
        enrollment row only, because absence and stall watches start and end on frequent events
        and the row already contains the reason.
        """
        step = enrollment.step
        self.tables.end(enrollment, status, moment.now, reason)
        if status == "cancelled":
            return
        kind = "goal_reached" if status == "goal" else status
        self.decide(moment, enrollment.person_id, enrollment.rule, kind, reason, enrollment, step)

    # ---- steps --------------------------------------------------------------------------

    def run(
        self,
        rule: CompiledRule,
        enrollment: Enrollment,
        step_id: str | None,
        facts: Facts,
        t: int,
        moment: Moment,
    ) -> None:
        """Run from ``step_id`` until a wait schedules a timer or the steps run out."""
        current = step_id
        while current is not None:
            step = rule.steps[current]
            if step.kind in ("wait", "wait_until", "wait_for"):
                self._wait(rule, enrollment, step, facts.person, t, moment)
                return
            if step.kind == "if":
                assert step.condition is not None
                holds = step.condition(facts)
                branch = "then" if holds else "else"
                reason = f"conditions {'hold' if holds else 'do not hold'}; taking {branch}"
                self.decide(
                    moment, facts.person.person_id, rule.name, "branch", reason, enrollment, step.id
                )
                current = step.branches[branch]
                continue
            self._act(rule, enrollment, step, facts, t, moment)
            current = step.next
        self.end(enrollment, "completed", moment, "all steps done")

    def _wait(
        self,
        rule: CompiledRule,
        enrollment: Enrollment,
        step: CompiledStep,
        person: Person,
        t: int,
        moment: Moment,
    ) -> None:
        spec = step.step
        if spec.wait is not None:
            due, what = t + spec.wait, f"wait {format_duration(spec.wait)}"
        elif spec.wait_until is not None:
            zone = self.zone(person, enrollment.context)
            due = next_local_time(t, time(*local_time_parts(spec.wait_until)), zone)
            what = f"wait until {spec.wait_until} in {zone.key}"
        else:
            assert spec.timeout is not None and step.wait_for is not None
            due = t + spec.timeout
            what = f"wait for {step.wait_for.event} or {format_duration(spec.timeout)}"
        kind = "wait_for" if step.kind == "wait_for" else "wait"
        self.tables.set_step(enrollment, step.id)
        self.tables.add_timer(due, kind, enrollment.person_id, enrollment, step.id)
        self.scheduled.append(due)
        reason = f"{what}: due {to_iso(due)}"
        self.decide(
            moment,
            enrollment.person_id,
            rule.name,
            "waiting",
            reason,
            enrollment,
            step.id,
            {"due": to_iso(due)},
        )

    # ---- actions ------------------------------------------------------------------------

    def _act(
        self,
        rule: CompiledRule,
        enrollment: Enrollment,
        step: CompiledStep,
        facts: Facts,
        t: int,
        moment: Moment,
    ) -> None:
        key = f"{rule.name}:{step.id}:{enrollment.person_id}:{enrollment.occurrence}"
        try:
            names = self._variables(step)
            context = self.template_context(rule, enrollment, facts, names)
            action = _Action(rule, enrollment, step, facts.person, context, key, t, moment)
            if step.kind in ("send", "webhook"):
                self._send(action)
            elif step.kind == "set_trait":
                self._set_trait(action)
            else:
                self._emit_event(action)
        except TemplateFailure as failure:
            self.decide(
                moment,
                enrollment.person_id,
                rule.name,
                "template_error",
                failure.message,
                enrollment,
                step.id,
            )

    def _decide_action(self, action: _Action, kind: str, reason: str) -> None:
        self.decide(
            action.moment,
            action.person.person_id,
            action.rule.name,
            kind,
            reason,
            action.enrollment,
            action.step.id,
        )

    def _send(self, action: _Action) -> None:
        rule, enrollment, step, person = action.rule, action.enrollment, action.step, action.person
        context = action.context
        spec = step.step
        channel = spec.send or spec.channel or "webhook"
        rendered = (
            self.templates.render(spec.template, context)
            if spec.template is not None
            else Rendered("", "", {"data": _default_webhook_data(rule, enrollment, context)})
        )
        recipient = self._recipient(channel, step, person, context)
        if recipient is None:
            self._decide_action(action, "suppressed", self._missing_recipient(channel))
            return
        payload: dict[str, Any] = {
            **rendered.fields,
            "recipient": recipient,
            "template": rendered.name or None,
            "template_version": rendered.version or None,
            "priority": rule.priority,
            "rule": rule.name,
            "step": step.id,
            "person_id": person.person_id,
            "user_id": person.user_id,
        }
        self.outbox.propose(
            SendIntent(
                key=action.key,
                person_id=person.person_id,
                rule=rule.name,
                step=step.id,
                channel=channel,
                payload=payload,
                at=action.t,
                zone=self.zone(person, enrollment.context),
                priority=rule.priority,
                quiet_hours=rule.rule.quiet_hours,
                ignore_caps=rule.rule.ignore_caps,
                enrollment=enrollment,
                seq=action.moment.seq,
                new_person=action.moment.new_person,
            )
        )

    def _recipient(
        self, channel: str, step: CompiledStep, person: Person, context: dict[str, Any]
    ) -> str | None:
        spec = step.step
        if spec.to is not None:
            return self.templates.render_text(spec.to, context, f"step {step.id} field to") or None
        if spec.webhook is not None:
            return spec.webhook
        config = self.plan.channels.get(channel)
        if config is not None and config.type == "smtp":
            email = person.traits.get("email")
            return (
                email.value
                if email is not None and isinstance(email.value, str) and email.value
                else None
            )
        return person.user_id or person.person_id

    def _missing_recipient(self, channel: str) -> str:
        return f"no recipient for channel {channel}: the person has no email trait; set one or give the step a 'to'"

    def _set_trait(self, action: _Action) -> None:
        step, spec = action.step, action.step.step
        name = spec.set_trait or ""
        value = self.templates.render_value(spec.value, action.context, f"step {step.id} value")
        body = {"type": "identify", "traits": {name: value}}
        if self._emit(action, body):
            reason = f"trait {name} set to {value!r} through an identify call"
            self._decide_action(action, "trait_set", reason)

    def _emit_event(self, action: _Action) -> None:
        step, spec = action.step, action.step.step
        properties = self.templates.render_value(
            spec.properties, action.context, f"step {step.id} properties"
        )
        body = {"type": "track", "event": spec.emit, "properties": properties}
        if self._emit(action, body):
            self._decide_action(action, "event_emitted", f"event {spec.emit!r} emitted")

    def _emit(self, action: _Action, body: dict[str, Any]) -> bool:
        """Add ``body`` as an event to append to the log; return False when it has no person."""
        person = action.person
        if person.user_id is not None:
            body["userId"] = person.user_id
        elif person.anonymous_ids:
            body["anonymousId"] = person.anonymous_ids[0]
        else:
            reason = "the person has no user id or anonymous id to emit an event for"
            self._decide_action(action, "suppressed", reason)
            return False
        message_id = emitted_message_id(action.key)
        body["messageId"] = message_id
        body["timestamp"] = to_iso(action.t)
        body["context"] = {
            "headstart": {
                "rule": action.rule.name,
                "step": action.step.id,
                "occurrence": action.enrollment.occurrence,
            }
        }
        self.tables.add_emit(message_id, body, action.moment.now)
        return True

    # ---- context ------------------------------------------------------------------------

    def zone(self, person: Person, context: dict[str, Any]) -> ZoneInfo:
        """Return the person's zone: the timezone trait, else the event's, else the fallback."""
        trait = person.traits.get(self.settings.timezone_trait)
        if trait is not None and isinstance(trait.value, str):
            zone = find_zone(trait.value)
            if zone is not None:
                return zone
        named = context.get("timezone")
        if isinstance(named, str):
            zone = find_zone(named)
            if zone is not None:
                return zone
        return self.fallback

    def _variables(self, step: CompiledStep) -> frozenset[str]:
        """Return the template variables a step reads; all of them for default webhook data."""
        spec = step.step
        if step.kind == "set_trait":
            return self.templates.value_variables(spec.value, f"step {step.id} value")
        if step.kind == "emit":
            return self.templates.value_variables(spec.properties, f"step {step.id} properties")
        if spec.template is None:
            return TEMPLATE_VARIABLES
        names = self.templates.variables(spec.template)
        if spec.to is not None:
            names |= self.templates.value_variables(spec.to, f"step {step.id} field to")
        return names

    def template_context(
        self,
        rule: CompiledRule,
        enrollment: Enrollment,
        facts: Facts,
        names: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """Build the variables templates see; ``names`` limits the costly ones to those read."""
        person = facts.person
        context: dict[str, Any] = {"rule": rule.name, "key": enrollment.key}
        if "event" in names:
            context["event"] = enrollment.context.get("event", {})
        if "traits" in names:
            context["traits"] = {name: trait.value for name, trait in person.traits.items()}
        if "person" in names:
            context["person"] = {
                "id": person.person_id,
                "user_id": person.user_id,
                "first_seen": to_iso(person.first_seen),
                "last_seen": to_iso(person.last_seen),
            }
        if "onboarding" in names:
            state = facts.state
            following = next((name for name, at in state.milestones.items() if at is None), None)
            context["onboarding"] = {
                "signed_up_at": to_iso(state.signup_at),
                "activated": state.activated,
                "activated_at": to_iso(state.activated_at),
                "milestones": {name: to_iso(at) for name, at in state.milestones.items()},
                "next_milestone": following,
            }
        return context


def _default_webhook_data(
    rule: CompiledRule, enrollment: Enrollment, context: dict[str, Any]
) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "person": context["person"],
        "traits": context["traits"],
        "event": context["event"],
        "onboarding": context["onboarding"],
        "key": enrollment.key,
    }
