"""Rules compiled for the processor: matchers, step graph, and indexes by event name.

Each event costs the engine a few dict lookups unless a rule's entry, wait, exit or goal names
its event, or the event can change a trait, segment or onboarding state a rule watches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headstart.events import LoggedEvent
from headstart.plan.match import MISSING, Predicate, compile_matcher, field_reader, value_test
from headstart.plan.model import EventMatcher, Plan
from headstart.plan.triggers import (
    Rule,
    Step,
    Triggers,
    WaitForEvent,
    segment_definitions,
    step_identifier,
)
from headstart.timeutil import to_iso
from headstart.triggers.conditions import (
    CompiledCondition,
    Needs,
    compile_all,
    needs_of,
)

# Events the in-app inbox logs when a person closes a message; they free the in-app slot.
IN_APP_CLOSED = ("In-App Message Dismissed", "In-App Message Completed")

KeyReader = Callable[[LoggedEvent], str | None]


def key_reader(path: str | None) -> KeyReader | None:
    """Return a function reading the correlation key from an event, or None for no key.

    ``properties.`` may be written or left out: ``feature_id`` and ``properties.feature_id``
    both read the event's ``feature_id`` property.
    """
    if path is None:
        return None
    read = field_reader(path.removeprefix("properties."))

    def read_key(event: LoggedEvent) -> str | None:
        value = read(event)
        if value is MISSING or value is None or isinstance(value, (dict, list)):
            return None
        return str(value)

    return read_key


@dataclass(frozen=True, slots=True)
class EventTest:
    """An event the enrollment reacts to, optionally only with the enrollment's key."""

    event: str
    predicate: Predicate
    same_key: bool

    @classmethod
    def build(cls, matcher: WaitForEvent | EventMatcher, same_key: bool = True) -> EventTest:
        keyed = getattr(matcher, "same_key", same_key)
        return cls(matcher.event, compile_matcher(matcher), bool(keyed))


@dataclass(slots=True)
class UntilTest:
    """A compiled exit or goal."""

    events: list[EventTest]
    condition: CompiledCondition | None
    needs: Needs


@dataclass(slots=True)
class CompiledStep:
    id: str
    kind: str
    step: Step
    # the step that follows once this one (and its branch) is done; None ends the rule
    next: str | None
    branches: dict[str, str | None] = field(default_factory=dict)
    wait_for: EventTest | None = None
    condition: CompiledCondition | None = None


class CompiledRule:
    """One rule with its matchers, conditions and steps ready for evaluation."""

    def __init__(self, rule: Rule, segment_needs: dict[str, Needs]):
        self.rule = rule
        self.name = rule.name
        self.priority = rule.priority
        self.version = rule.version()
        self.kind = rule.entry.kind
        entry = rule.entry
        self.key = key_reader(entry.key)
        self.entry: Predicate | None = None
        self.start: Predicate | None = None
        self.missing: EventTest | None = None
        if self.kind == "event":
            self.entry = compile_matcher(entry.matcher())
        elif self.kind == "absence":
            assert entry.after is not None and entry.missing is not None
            self.start = compile_matcher(entry.after)
            self.missing = EventTest.build(entry.missing)
        self.trait_from = _optional_test(entry, "from_")
        self.trait_to = _optional_test(entry, "to")
        self.conditions = compile_all(rule.conditions)
        self.exit = _until(rule.exit, segment_needs)
        self.goal = _until(rule.goal, segment_needs)
        self.steps: dict[str, CompiledStep] = {}
        self.first = self._compile_steps(rule.steps, "", None)
        self.cooldown = getattr(rule.reentry, "cooldown", None)
        self.reentry = "cooldown" if self.cooldown is not None else str(rule.reentry)

    def reentry_blocked(self, last: int | None, t: int) -> str | None:
        """Return why the re-entry policy keeps the person out, given their last entry time."""
        if last is None:
            return None
        if self.reentry == "never":
            return f"entered before at {to_iso(last)}; re-entry is never"
        if self.reentry == "cooldown" and self.cooldown is not None and t - last < self.cooldown:
            return (
                f"entered at {to_iso(last)}; the cooldown runs until {to_iso(last + self.cooldown)}"
            )
        return None

    def key_of(self, event: LoggedEvent) -> str | None:
        """Return the event's correlation key: '' for a rule without one, None when missing."""
        return "" if self.key is None else self.key(event)

    def listened_events(self) -> set[str]:
        """Event names that can end, resume or cancel this rule's open enrollments."""
        names: set[str] = set()
        if self.missing is not None:
            names.add(self.missing.event)
        for until in (self.exit, self.goal):
            if until is not None:
                names.update(test.event for test in until.events)
                names.update(until.needs.counts)
        for step in self.steps.values():
            if step.wait_for is not None:
                names.add(step.wait_for.event)
        return names

    def _compile_steps(self, steps: list[Step], prefix: str, after: str | None) -> str | None:
        ids = [step_identifier(step, prefix, index) for index, step in enumerate(steps)]
        for index, step in enumerate(steps):
            following = ids[index + 1] if index + 1 < len(steps) else after
            compiled = CompiledStep(ids[index], step.kind, step, following)
            self.steps[compiled.id] = compiled
            if step.wait_for is not None:
                compiled.wait_for = EventTest.build(step.wait_for)
            if step.if_ is not None:
                compiled.condition = compile_all(step.if_)
            for branch, children in (
                ("on_event", step.on_event),
                ("on_timeout", step.on_timeout),
                ("then", step.then),
                ("else", step.else_),
            ):
                label = f"{compiled.id}.{branch}."
                compiled.branches[branch] = self._compile_steps(children, label, following)
        return ids[0] if ids else after


def _optional_test(entry: Any, name: str) -> Callable[[Any], bool] | None:
    if name not in entry.model_fields_set:
        return None
    return value_test(getattr(entry, name))


def _until(until: Any, segment_needs: dict[str, Needs]) -> UntilTest | None:
    if until is None:
        return None
    condition = compile_all(until.conditions) if until.conditions else None
    return UntilTest(
        events=[EventTest.build(matcher) for matcher in until.events],
        condition=condition,
        needs=needs_of(until.conditions, segment_needs),
    )


class RuleIndex:
    """The enabled rules, indexed by what can set them in motion."""

    def __init__(self, plan: Plan, triggers: Triggers):
        definitions = segment_definitions(plan)
        segment_needs = {name: needs_of(conds, {}) for name, conds in definitions.items()}
        self.rules = {
            rule.name: CompiledRule(rule, segment_needs) for rule in triggers.rules if rule.enabled
        }
        self.segments: dict[str, CompiledCondition] = {
            name: compile_all(conditions) for name, conditions in definitions.items()
        }
        self.onboarding_events = {plan.signup.event} | {m.event for m in plan.milestones}

        self.entries: dict[str, list[tuple[CompiledRule, Predicate]]] = defaultdict(list)
        self.starts: dict[str, list[tuple[CompiledRule, Predicate]]] = defaultdict(list)
        self.listeners: dict[str, set[str]] = defaultdict(set)
        self.trait_listeners: set[str] = set()
        self.onboarding_listeners: set[str] = set()
        self.trait_entries: dict[str, list[CompiledRule]] = defaultdict(list)
        self.stall_rules: list[CompiledRule] = []
        self.segment_entries: dict[str, list[CompiledRule]] = defaultdict(list)
        # what a segment-entry snapshot must look at
        self.segment_needs = Needs()
        for rule in self.rules.values():
            self._index(rule, segment_needs)
        self.entries = dict(self.entries)
        self.starts = dict(self.starts)
        self.listeners = dict(self.listeners)

    def _index(self, rule: CompiledRule, segment_needs: dict[str, Needs]) -> None:
        entry = rule.rule.entry
        if rule.kind == "event" and rule.entry is not None:
            self.entries[entry.event or ""].append((rule, rule.entry))
        elif rule.kind == "absence" and rule.start is not None and entry.after is not None:
            self.starts[entry.after.event].append((rule, rule.start))
        elif rule.kind == "trait":
            self.trait_entries[entry.trait or ""].append(rule)
        elif rule.kind == "stall":
            self.stall_rules.append(rule)
        elif rule.kind == "segment":
            name = entry.segment or ""
            self.segment_entries[name].append(rule)
            self.segment_needs.add(segment_needs.get(name, Needs()))
        for name in rule.listened_events():
            self.listeners[name].add(rule.name)
        for until in (rule.exit, rule.goal):
            if until is None:
                continue
            # needs_of expanded segments into the traits and onboarding state they read
            if until.needs.traits:
                self.trait_listeners.add(rule.name)
            if until.needs.onboarding:
                self.onboarding_listeners.add(rule.name)

    @property
    def watches_changes(self) -> bool:
        """True when some rule enters on a trait change, a stall or a segment."""
        return bool(self.trait_entries or self.stall_rules or self.segment_entries)
