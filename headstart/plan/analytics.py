"""Saved analyses in the plan: ``funnels:`` and ``segments:``.

A funnel stores every choice that changes its numbers (order mode, conversion window and where
it starts, entry rule, counting unit, exclusions, breakdown and its attribution), because
analytics tools pick different defaults for each. ``docs/analytics.md`` explains each choice
with examples.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    field_validator,
    model_validator,
)

from headstart.plan.durations import parse_duration
from headstart.plan.model import EventMatcher, Name
from headstart.timeutil import parse_iso

MAX_STEPS = 20
OrderMode = Literal["ordered", "strict", "any"]
EntryRule = Literal["first", "any"]
Attribution = Literal["first_touch", "last_touch", "per_step"]
BreakdownKind = Literal["trait", "property", "campaign", "experiment", "segment"]
CAMPAIGN_FIELDS = ("source", "medium", "name", "term", "content")
KeyPath = Annotated[StrictStr, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def duration_us(text: str) -> int:
    """Parse a duration such as ``90s``, ``30m``, ``12h``, ``7d`` or ``2w`` into microseconds."""
    return parse_duration(text)


def _check_duration(value: str) -> str:
    duration_us(value)
    return value.strip()


def _check_instant(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_iso(value)
    except ValueError:
        raise ValueError(
            f"expected an ISO-8601 time such as 2024-05-01T00:00:00Z; got {value!r}"
        ) from None
    return value


class FunnelStep(EventMatcher):
    """One funnel step: an event with optional ``where`` filters and a display label."""

    label: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None

    def title(self) -> str:
        """Return the label, else the event with its filters, e.g. ``Badge Awarded (name=Student)``."""
        if self.label:
            return self.label
        if not self.where:
            return self.event
        filters = ", ".join(_filter_text(key, value) for key, value in self.where.items())
        return f"{self.event} ({filters})"


def _filter_text(key: str, condition: Any) -> str:
    if isinstance(condition, dict):
        return ", ".join(f"{key} {op} {value}" for op, value in condition.items())
    if isinstance(condition, list):
        return f"{key} in {condition}"
    return f"{key}={condition}"


class Exclusion(EventMatcher):
    """An event that disqualifies a funnel attempt when it happens between two steps.

    ``between: [i, j]`` (1-based step numbers, i < j) means after the event that reached step
    i and before the event that reached step j, or before the window ends when step j was not
    reached. Without ``between`` the exclusion spans the whole funnel.
    """

    between: tuple[int, int] | None = None


class Breakdown(_Strict):
    """Split a funnel by a value per counting unit.

    ``by`` picks the source of the value:

    - ``trait``: the person's current trait ``key``;
    - ``segment``: member or not of the plan segment ``key``;
    - ``property``: the event property ``key`` on the step events;
    - ``campaign``: ``context.campaign.<key>``, or else the matching ``utm_`` property, or
      the matching ``utm_`` parameter of ``context.page.url`` or ``properties.url``;
    - ``experiment``: the variation (name, else id) in ``Experiment Viewed`` events whose
      ``experiment_id`` or ``experiment_name`` is ``key``.

    ``attribution`` applies to the last three, whose value can change over time.
    """

    by: BreakdownKind
    key: KeyPath
    attribution: Attribution | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_attribution(cls, data: Any) -> Any:
        """Store ``first_touch`` explicitly where attribution applies and none was given."""
        touch_based = ("property", "campaign", "experiment")
        if isinstance(data, dict) and data.get("by") in touch_based and "attribution" not in data:
            return {**data, "attribution": "first_touch"}
        return data

    @model_validator(mode="after")
    def _check(self) -> Breakdown:
        if self.by in ("trait", "segment") and self.attribution is not None:
            raise ValueError(
                f"attribution does not apply to a {self.by} breakdown, which uses the "
                "person's current value; remove it"
            )
        if self.by == "campaign" and self.key not in CAMPAIGN_FIELDS:
            raise ValueError(
                f"campaign breakdown key {self.key!r} is not a campaign field; "
                f"expected one of {', '.join(CAMPAIGN_FIELDS)}"
            )
        return self

    @property
    def attributed_by(self) -> Attribution:
        """The attribution in force; trait and segment values count as first touch."""
        return self.attribution or "first_touch"


class FunnelSpec(_Strict):
    """Everything that defines a funnel's numbers.

    - ``order``: ``ordered`` (steps in order, other events may happen between them),
      ``strict`` (each step is the person's next tracked event after the previous step) or
      ``any`` (after step 1, the other steps in any order).
    - ``window``: a step counts when it happens at most this long after the attempt's entry,
      the step-1 event that starts it (end inclusive).
    - ``entry``: ``first`` starts one attempt per counting unit, at its first step-1 event in
      the date range. ``any`` starts an attempt at every step-1 event in the date range, and
      the unit counts with its best attempt (most steps, then the earliest entry).
    - ``start`` / ``end``: the date range for entries (start inclusive, end exclusive); later
      steps may fall after ``end``.
    - ``hold_constant``: event properties (``where`` key syntax) every step event must share
      with the entry event; the counting unit becomes the person plus those values.
    """

    name: Name | None = None
    description: str | None = None
    steps: Annotated[list[FunnelStep], Field(min_length=2, max_length=MAX_STEPS)]
    order: OrderMode = "ordered"
    window: Annotated[str, Field(min_length=2, max_length=20)] = "7d"
    entry: EntryRule = "first"
    start: str | None = None
    end: str | None = None
    hold_constant: Annotated[list[KeyPath], Field(max_length=5)] = Field(default_factory=list)
    exclusions: Annotated[list[Exclusion], Field(max_length=10)] = Field(default_factory=list)
    breakdown: Breakdown | None = None

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        return _check_duration(value)

    @field_validator("start", "end")
    @classmethod
    def _check_range(cls, value: str | None) -> str | None:
        return _check_instant(value)

    @model_validator(mode="after")
    def _check(self) -> FunnelSpec:
        start, end = self.start_us, self.end_us
        if start is not None and end is not None and start >= end:
            raise ValueError(f"start {self.start!r} must be before end {self.end!r}")
        for exclusion in self.exclusions:
            if exclusion.between is None:
                continue
            first, last = exclusion.between
            if not 1 <= first < last <= len(self.steps):
                raise ValueError(
                    f"exclusion of {exclusion.event!r} has between [{first}, {last}]; expected "
                    f"two step numbers i < j from 1 to {len(self.steps)}"
                )
        if len(set(self.hold_constant)) != len(self.hold_constant):
            raise ValueError("hold_constant lists a property twice; list each once")
        if self.order == "any":
            _check_disjoint(self.steps)
        return self

    @property
    def window_us(self) -> int:
        return duration_us(self.window)

    @property
    def start_us(self) -> int | None:
        return None if self.start is None else parse_iso(self.start)

    @property
    def end_us(self) -> int | None:
        return None if self.end is None else parse_iso(self.end)

    def exclusion_span(self, exclusion: Exclusion) -> tuple[int, int]:
        """Return the 1-based steps an exclusion applies between."""
        return exclusion.between or (1, len(self.steps))


def _check_disjoint(steps: list[FunnelStep]) -> None:
    """Reject any-order steps that one event could match, so each event reaches one step."""
    for index, step in enumerate(steps):
        for other_index in range(index + 1, len(steps)):
            other = steps[other_index]
            if not _may_overlap(step, other):
                continue
            raise ValueError(
                f"steps {index + 1} and {other_index + 1} ({step.event!r}) can match the same "
                "event, and in an any-order funnel one event must reach one step only; give them "
                "different events, different values of one property (e.g. where: {name: A} and "
                "where: {name: B}), or use order: ordered"
            )


def _may_overlap(first: EventMatcher, second: EventMatcher) -> bool:
    """Return False only when no event can match both (different name or equality values)."""
    if first.event != second.event:
        return False
    for key, wanted in first.where.items():
        if key not in second.where:
            continue
        values, other_values = _equal_values(wanted), _equal_values(second.where[key])
        if (
            values is not None
            and other_values is not None
            and not _intersects(values, other_values)
        ):
            return False
    return True


def _equal_values(condition: Any) -> list[Any] | None:
    """Return the values an equality or ``in`` condition accepts, or None for other tests."""
    if isinstance(condition, dict):
        if set(condition) == {"eq"}:
            return [condition["eq"]]
        if set(condition) == {"in"} and isinstance(condition["in"], list):
            return list(condition["in"])
        return None
    if isinstance(condition, list):
        return condition
    return [condition]


def _intersects(values: list[Any], other_values: list[Any]) -> bool:
    return any(value == other for value in values for other in other_values)


class SegmentCondition(_Strict):
    """One test on a person. Exactly one kind:

    - ``{trait: plan, is: pro}``: ``is`` takes what ``where`` takes (a value, a list of values
      or operators such as ``{gte: 3}``); without ``is`` the trait must be set.
    - ``{did: Project Created, where: {...}, at_least: 2, within: 7d}``: did the event at least
      ``at_least`` times (default 1) in the last ``within`` (default: ever).
    - ``{did_not: Teammate Invited, within: 14d}``: the opposite of ``did``.
    - ``{milestone: created_project}``: reached the milestone (``reached: false`` for not).
    - ``{activated: true}`` or ``{activated: false}``.
    """

    trait: KeyPath | None = None
    is_: Any = Field(default=None, alias="is")
    did: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    did_not: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    where: dict[str, Any] = Field(default_factory=dict)
    at_least: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    within: Annotated[str, Field(min_length=2, max_length=20)] | None = None
    milestone: Name | None = None
    reached: bool = True
    activated: bool | None = None

    @field_validator("within")
    @classmethod
    def _check_within(cls, value: str | None) -> str | None:
        return None if value is None else _check_duration(value)

    @model_validator(mode="after")
    def _check_kind(self) -> SegmentCondition:
        allowed = {
            "trait": {"is_"},
            "did": {"where", "at_least", "within"},
            "did_not": {"where", "at_least", "within"},
            "milestone": {"reached"},
            "activated": set(),
        }
        given = [kind for kind in allowed if getattr(self, kind) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"a segment condition needs exactly one of {', '.join(allowed)}; got {found}"
            )
        kind = given[0]
        for name in self.model_fields_set - {kind} - allowed[kind]:
            shown = type(self).model_fields[name].alias or name
            raise ValueError(f"{shown!r} does not belong in a {kind!r} condition; remove it")
        if kind in ("did", "did_not"):
            EventMatcher(event=self.did or self.did_not or "", where=self.where)
        return self

    @property
    def kind(self) -> Literal["trait", "did", "did_not", "milestone", "activated"]:
        if self.trait is not None:
            return "trait"
        if self.did is not None:
            return "did"
        if self.did_not is not None:
            return "did_not"
        if self.milestone is not None:
            return "milestone"
        return "activated"

    def matcher(self) -> EventMatcher:
        """Return the event and filters of a ``did`` or ``did_not`` condition."""
        return EventMatcher(event=self.did or self.did_not or "", where=self.where)

    @property
    def within_us(self) -> int | None:
        return None if self.within is None else duration_us(self.within)


class SegmentSpec(_Strict):
    """A named behavioural segment: the persons that meet ``all`` (or ``any``) conditions."""

    name: Name
    description: str | None = None
    match: Literal["all", "any"] = "all"
    conditions: Annotated[list[SegmentCondition], Field(min_length=1, max_length=50)]


def unique_names(items: list[Any], what: str) -> list[Any]:
    """Raise when two named items share a name; for the plan's ``funnels`` and ``segments``."""
    seen: set[str] = set()
    for item in items:
        if item.name is None:
            raise ValueError(f"every saved {what} needs a name")
        if item.name in seen:
            raise ValueError(f"{what} name {item.name!r} is used twice; names must be unique")
        seen.add(item.name)
    return items


SavedFunnels = Annotated[
    list[FunnelSpec], AfterValidator(lambda funnels: unique_names(funnels, "funnel"))
]
SavedSegments = Annotated[
    list[SegmentSpec], AfterValidator(lambda segments: unique_names(segments, "segment"))
]


Location = tuple[str | int, ...]


def reference_problems(
    funnels: list[FunnelSpec], segments: list[SegmentSpec], milestones: list[str]
) -> list[tuple[Location, str]]:
    """Return (location, message) for each segment or milestone these sections name but the
    plan does not define."""
    problems: list[tuple[Location, str]] = []
    segment_names = [segment.name for segment in segments]
    for index, funnel in enumerate(funnels):
        breakdown = funnel.breakdown
        if breakdown is None or breakdown.by != "segment" or breakdown.key in segment_names:
            continue
        known = ", ".join(segment_names) or "none is defined"
        problems.append(
            (
                ("funnels", index, "breakdown", "key"),
                f"{breakdown.key!r} is not a segment of this plan; expected one of: {known}",
            )
        )
    for index, segment in enumerate(segments):
        for position, condition in enumerate(segment.conditions):
            if condition.milestone is None or condition.milestone in milestones:
                continue
            problems.append(
                (
                    ("segments", index, "conditions", position, "milestone"),
                    f"{condition.milestone!r} is not a milestone; expected one of "
                    f"{', '.join(milestones)}",
                )
            )
    return problems
