"""Names the triggers use that other sections of the plan must define."""

from __future__ import annotations

from typing import TYPE_CHECKING

from headstart.plan.triggers.conditions import Condition
from headstart.plan.triggers.rules import Rule
from headstart.plan.triggers.section import Triggers
from headstart.plan.triggers.segments import shared_segment_conditions
from headstart.plan.triggers.steps import Step, step_identifier

if TYPE_CHECKING:
    from headstart.plan.model import Plan

Location = tuple[str | int, ...]


def reference_problems(plan: Plan) -> list[tuple[Location, str]]:
    """Return (location, message) for each name the triggers use that the plan does not define."""
    triggers = plan.triggers
    if triggers is None:
        return []
    checker = _References(plan, triggers)
    checker.settings(triggers)
    for name, conditions in triggers.segments.items():
        checker.conditions(("triggers", "segments", name), conditions, in_segment=True)
    for index, rule in enumerate(triggers.rules):
        checker.rule(("triggers", "rules", index), rule)
    return checker.problems


class _References:
    def __init__(self, plan: Plan, triggers: Triggers):
        self.plan = plan
        self.triggers = triggers
        self.milestones = [milestone.name for milestone in plan.milestones]
        self.problems: list[tuple[Location, str]] = []

    def add(self, location: Location, message: str) -> None:
        self.problems.append((location, message))

    def settings(self, triggers: Triggers) -> None:
        """Check the channels that quiet hours and caps name."""
        quiet = triggers.quiet_hours
        for index, name in enumerate(quiet.channels or [] if quiet is not None else []):
            self.channel(("triggers", "quiet_hours", "channels", index), name, None)
        for index, cap in enumerate(triggers.caps):
            if cap.channel != "*":
                self.channel(("triggers", "caps", index, "channel"), cap.channel, None)

    def rule(self, at: Location, rule: Rule) -> None:
        if rule.entry.kind == "segment":
            self.segment((*at, "entry", "segment"), rule.entry.segment or "")
        self.conditions((*at, "conditions"), rule.conditions)
        for name in ("exit", "goal"):
            until = getattr(rule, name)
            if until is not None:
                self.conditions((*at, name, "conditions"), until.conditions)
        seen: set[str] = set()
        self.steps((*at, "steps"), rule.steps, "", seen)

    def steps(self, at: Location, steps: list[Step], prefix: str, seen: set[str]) -> None:
        for index, step in enumerate(steps):
            here = (*at, index)
            step_id = step_identifier(step, prefix, index)
            if step_id in seen:
                self.add((*here, "id"), f"step id {step_id!r} is used twice in this rule")
            seen.add(step_id)
            self.step(here, step)
            for branch in ("on_event", "on_timeout", "then", "else_"):
                children = getattr(step, branch)
                if children:
                    label = branch.rstrip("_")
                    key = "else" if branch == "else_" else branch
                    self.steps((*here, key), children, f"{step_id}.{label}.", seen)
            if step.if_:
                self.conditions((*here, "if"), step.if_)

    def step(self, at: Location, step: Step) -> None:
        if step.template is not None and step.template not in self.triggers.templates:
            known = ", ".join(self.triggers.templates) or "none are defined"
            self.add(
                (*at, "template"),
                f"template {step.template!r} is not defined under triggers.templates ({known})",
            )
        if step.send is not None:
            self.channel((*at, "send"), step.send, None)
        if step.webhook is not None:
            self.webhook(at, step)

    def channel(self, at: Location, name: str, expected_type: str | None) -> None:
        config = self.plan.channels.get(name)
        if config is None:
            known = ", ".join(self.plan.channels) or "none are configured"
            self.add(at, f"channel {name!r} is not configured under channels ({known})")
            return
        if expected_type is not None and config.type != expected_type:
            self.add(at, f"channel {name!r} has type {config.type!r}; expected {expected_type!r}")

    def webhook(self, at: Location, step: Step) -> None:
        channel = step.channel or "webhook"
        self.channel((*at, "channel"), channel, "webhook")
        config = self.plan.channels.get(channel)
        destinations = getattr(config, "destinations", None)
        if (
            destinations
            and step.webhook not in destinations
            and getattr(config, "url", None) is None
        ):
            self.add(
                (*at, "webhook"),
                f"webhook destination {step.webhook!r} is not listed under channels.{channel}.destinations",
            )

    def conditions(
        self, at: Location, conditions: list[Condition], *, in_segment: bool = False
    ) -> None:
        for index, condition in enumerate(conditions):
            self.condition((*at, index), condition, in_segment)

    def condition(self, at: Location, condition: Condition, in_segment: bool) -> None:
        if condition.milestone is not None and condition.milestone not in self.milestones:
            self.add(
                (*at, "milestone"),
                f"{condition.milestone!r} is not a milestone; expected one of {', '.join(self.milestones)}",
            )
        if condition.segment is not None:
            if in_segment:
                self.add(
                    (*at, "segment"),
                    "a segment cannot refer to another segment; list its conditions instead",
                )
            else:
                self.segment((*at, "segment"), condition.segment)
        for index, child in enumerate(condition.any or []):
            self.condition((*at, "any", index), child, in_segment)
        if condition.not_ is not None:
            self.condition((*at, "not"), condition.not_, in_segment)

    def segment(self, at: Location, name: str) -> None:
        if name in self.triggers.segments:
            return
        shared = {spec.name: spec for spec in getattr(self.plan, "segments", [])}
        if name not in shared:
            known = ", ".join([*self.triggers.segments, *shared]) or "none are defined"
            self.add(
                at,
                f"segment {name!r} is not defined under triggers.segments or segments ({known})",
            )
            return
        try:
            shared_segment_conditions(shared[name])
        except ValueError as exc:
            self.add(at, str(exc))
