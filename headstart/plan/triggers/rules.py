"""One rule (a journey): its entry, conditions, steps, exits, goals and policies."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import Field, model_validator

from headstart.plan.model import Name
from headstart.plan.triggers.base import Duration, StrictModel
from headstart.plan.triggers.conditions import Condition
from headstart.plan.triggers.entries import Entry
from headstart.plan.triggers.steps import Step, WaitForEvent
from headstart.timeutil import MICROS_PER_SECOND


class Until(StrictModel):
    """Events and conditions that end an enrollment, checked on every event of the person.

    It fires on any listed event (with the rule's correlation key when ``same_key`` is true),
    or when every listed condition holds.
    """

    events: list[WaitForEvent] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Until:
        if not self.events and not self.conditions:
            raise ValueError("list at least one entry under events or conditions")
        return self


class Cooldown(StrictModel):
    """Re-entry is allowed once the previous enrollment ended and this long after it began."""

    cooldown: Duration


ReEntry = Literal["never", "after_exit"] | Cooldown


class Lateness(StrictModel):
    """The policy for a timer that fires more than ``after`` past its due time (a restart).

    ``send`` carries on, ``skip`` ends the enrollment, ``next_slot`` waits for the next instant
    with the same local time of day as the missed due time.
    """

    after: Duration = 15 * 60 * MICROS_PER_SECOND
    policy: Literal["send", "skip", "next_slot"] = "send"


class Rule(StrictModel):
    """One behavioural rule (a journey)."""

    name: Name
    description: str | None = None
    enabled: bool = True
    # Higher wins when several sends compete for a frequency cap or the in-app slot.
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    entry: Entry
    conditions: list[Condition] = Field(default_factory=list)
    steps: Annotated[list[Step], Field(min_length=1)]
    exit: Until | None = None
    goal: Until | None = None
    reentry: ReEntry = "never"
    quiet_hours: Literal["delay", "skip", "ignore"] = "delay"
    ignore_caps: bool = False
    lateness: Lateness = Field(default_factory=Lateness)

    def version(self) -> str:
        """Return a digest of the steps; enrollments started under other steps are ended."""
        text = "[" + ",".join(step.model_dump_json() for step in self.steps) + "]"
        return hashlib.sha256(text.encode()).hexdigest()[:12]
