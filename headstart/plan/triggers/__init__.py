"""The ``triggers:`` section of the plan: behavioural rules, templates, caps and quiet hours.

A rule has one entry: an event, the absence of an event within a window, a stall before the
next milestone, a trait change, or entering a segment. It adds optional entry conditions, a
list of steps (waits, branches and actions), exits and goals, a re-entry policy and a priority.
Entries, steps and conditions are written as small mappings whose first key names what they
are, for example ``{send: email, template: welcome}`` or ``{wait: 2h}``. Each model checks that
it holds the keys of exactly one kind, so a stray key is reported instead of ignored.

The models live in one module per part of a rule: ``entries``, ``steps``, ``conditions``,
``rules`` (exits, goals and policies), ``sending`` (quiet hours, caps, the in-app slot) and
``templates``; ``section`` joins them into the whole section. Every public name is importable
from this package.
"""

from headstart.plan.durations import MAX_DURATION_US, format_duration, parse_duration
from headstart.plan.triggers.base import (
    ChannelRef,
    Duration,
    KeyPath,
    LocalTime,
    TraitName,
    ZoneName,
    local_time_parts,
)
from headstart.plan.triggers.conditions import Condition
from headstart.plan.triggers.entries import Entry
from headstart.plan.triggers.references import Location, reference_problems
from headstart.plan.triggers.rules import Cooldown, Lateness, ReEntry, Rule, Until
from headstart.plan.triggers.section import Triggers
from headstart.plan.triggers.segments import segment_definitions, shared_segment_conditions
from headstart.plan.triggers.sending import Cap, InApp, QuietHours
from headstart.plan.triggers.steps import Step, WaitForEvent, step_identifier
from headstart.plan.triggers.templates import TEMPLATE_VARIABLES, Template

__all__ = [
    "MAX_DURATION_US",
    "TEMPLATE_VARIABLES",
    "Cap",
    "ChannelRef",
    "Condition",
    "Cooldown",
    "Duration",
    "Entry",
    "InApp",
    "KeyPath",
    "Lateness",
    "LocalTime",
    "Location",
    "QuietHours",
    "ReEntry",
    "Rule",
    "Step",
    "Template",
    "TraitName",
    "Triggers",
    "Until",
    "WaitForEvent",
    "ZoneName",
    "format_duration",
    "local_time_parts",
    "parse_duration",
    "reference_problems",
    "segment_definitions",
    "shared_segment_conditions",
    "step_identifier",
]
