"""The whole ``triggers:`` section: settings, templates, segments and rules."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from headstart.plan.model import Name
from headstart.plan.triggers.base import Duration, StrictModel, TraitName, ZoneName
from headstart.plan.triggers.conditions import Condition
from headstart.plan.triggers.rules import Rule
from headstart.plan.triggers.sending import Cap, InApp, QuietHours
from headstart.plan.triggers.templates import Template
from headstart.timeutil import MICROS_PER_SECOND


class Triggers(StrictModel):
    """The whole ``triggers:`` section."""

    # The zone for persons without a valid ``timezone`` trait or context.timezone.
    fallback_timezone: ZoneName
    timezone_trait: TraitName = "timezone"
    # An event that was older than this when headstart received it (imported history, a
    # historical source, a device long offline) enters no rule and starts no watch.
    max_event_age: Duration = 24 * 3600 * MICROS_PER_SECOND
    quiet_hours: QuietHours | None = None
    caps: list[Cap] = Field(default_factory=list)
    in_app: InApp = Field(default_factory=InApp)
    templates: dict[Name, Template] = Field(default_factory=dict)
    segments: dict[Name, Annotated[list[Condition], Field(min_length=1)]] = Field(
        default_factory=dict
    )
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice; names must be unique")
            seen.add(rule.name)
        return rules

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)
