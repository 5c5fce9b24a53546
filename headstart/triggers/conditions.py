"""Conditions on a person's profile: traits, event counts, onboarding state and segments.

Conditions compile once per plan into functions of ``Facts``, the view of one person at one
moment. ``Needs`` lists what a condition reads, so the engine re-evaluates it only after
events that can change its outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from headstart.onboarding.state import OnboardingState, compute_state
from headstart.plan.match import MISSING, value_test
from headstart.plan.model import Plan
from headstart.plan.triggers import Condition
from headstart.profiles.person import Person


class Facts:
    """One person as conditions and templates see it; the onboarding state is computed once."""

    __slots__ = ("_segment_results", "_state", "person", "plan", "segments")

    def __init__(self, person: Person, plan: Plan, segments: Mapping[str, CompiledCondition]):
        self.person = person
        self.plan = plan
        self.segments = segments
        self._state: OnboardingState | None = None
        self._segment_results: dict[str, bool] = {}

    @property
    def state(self) -> OnboardingState:
        if self._state is None:
            self._state = compute_state(self.plan, self.person)
        return self._state

    def trait(self, name: str) -> Any:
        trait = self.person.traits.get(name)
        return MISSING if trait is None else trait.value

    def count(self, event: str) -> int:
        return self.person.event_counts.get(event, 0)

    def in_segment(self, name: str) -> bool:
        result = self._segment_results.get(name)
        if result is None:
            result = self.segments[name](self)
            self._segment_results[name] = result
        return result

    def forget(self) -> None:
        """Drop computed results after the person changed."""
        self._state = None
        self._segment_results.clear()


CompiledCondition = Callable[[Facts], bool]


@dataclass
class Needs:
    """What a set of conditions reads, to tell which events can change their outcome."""

    traits: set[str] = field(default_factory=set)
    counts: set[str] = field(default_factory=set)
    onboarding: bool = False
    segments: set[str] = field(default_factory=set)

    def add(self, other: Needs) -> None:
        self.traits |= other.traits
        self.counts |= other.counts
        self.onboarding = self.onboarding or other.onboarding
        self.segments |= other.segments

    @property
    def empty(self) -> bool:
        return not (self.traits or self.counts or self.onboarding or self.segments)

    def may_change(self, name: str | None, carries_traits: bool, onboarding: bool) -> bool:
        """True when an event can change what the conditions read.

        ``name`` is the event's counted name, ``carries_traits`` whether it can set traits,
        and ``onboarding`` whether it is a sign-up or milestone event.
        """
        return bool(
            (self.traits and carries_traits)
            or (self.onboarding and onboarding)
            or (name is not None and name in self.counts)
        )


def compile_all(conditions: Iterable[Condition]) -> CompiledCondition:
    """Return a function that holds when every condition holds (always, for none).

    Segment conditions look the segment up through ``Facts`` when they are evaluated.
    """
    compiled = [compile_condition(condition) for condition in conditions]
    if not compiled:
        return _always
    if len(compiled) == 1:
        return compiled[0]
    return lambda facts: all(check(facts) for check in compiled)


def compile_condition(condition: Condition) -> CompiledCondition:
    kind = condition.kind
    if kind == "trait":
        return _trait(condition)
    if kind == "milestone":
        name, reached = condition.milestone, condition.reached
        return lambda facts: (facts.state.milestones.get(name or "") is not None) == reached
    if kind == "activated":
        wanted = condition.activated
        return lambda facts: facts.state.activated == wanted
    if kind == "signed_up":
        wanted = condition.signed_up
        return lambda facts: (facts.state.signup_at is not None) == wanted
    if kind == "count":
        event, test = condition.count or "", value_test(condition.is_)
        return lambda facts: test(facts.count(event))
    if kind == "segment":
        segment, member = condition.segment or "", condition.member
        return lambda facts: facts.in_segment(segment) == member
    if kind == "any":
        options = [compile_condition(child) for child in condition.any or []]
        return lambda facts: any(option(facts) for option in options)
    assert condition.not_ is not None
    inner = compile_condition(condition.not_)
    return lambda facts: not inner(facts)


def _trait(condition: Condition) -> CompiledCondition:
    name = condition.trait or ""
    if "is_" not in condition.model_fields_set:
        return lambda facts: facts.trait(name) not in (MISSING, None)
    test = value_test(condition.is_)
    return lambda facts: test(facts.trait(name))


def _always(facts: Facts) -> bool:
    return True


def needs_of(conditions: Iterable[Condition], segments: Mapping[str, Needs]) -> Needs:
    """Return what ``conditions`` read, with each segment expanded into its own needs."""
    needs = Needs()
    for condition in conditions:
        _collect(condition, segments, needs)
    return needs


def _collect(condition: Condition, segments: Mapping[str, Needs], needs: Needs) -> None:
    kind = condition.kind
    if kind == "trait":
        needs.traits.add(condition.trait or "")
    elif kind in ("milestone", "activated", "signed_up"):
        needs.onboarding = True
    elif kind == "count":
        needs.counts.add(condition.count or "")
    elif kind == "segment":
        name = condition.segment or ""
        needs.segments.add(name)
        if name in segments:
            needs.add(segments[name])
    for child in condition.any or []:
        _collect(child, segments, needs)
    if condition.not_ is not None:
        _collect(condition.not_, segments, needs)
