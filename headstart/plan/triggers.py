"""The ``triggers:`` section of the plan: behavioural rules, templates, caps and quiet hours.

A rule has one entry: an event, the absence of an event within a window, a stall before the
next milestone, a trait change, or entering a segment. It adds optional entry conditions, a
list of steps (waits, branches and actions), exits and goals, a re-entry policy and a priority.
Entries, steps and conditions are written as small mappings whose first key says what they
are, for example ``{send: email, template: welcome}`` or ``{wait: 2h}``. Each model checks that
it holds the keys of exactly one kind, so a stray key is reported instead of ignored.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    field_validator,
    model_validator,
)

from headstart.plan.model import EventMatcher, Name
from headstart.timeutil import MICROS_PER_SECOND

if TYPE_CHECKING:
    from headstart.plan.model import Plan

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_LOCAL_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# The maximum wait, window or cooldown a plan may set.
MAX_DURATION_US = 3650 * 86_400 * MICROS_PER_SECOND


def parse_duration(value: Any) -> int:
    """Parse ``"90s"``, ``"15m"``, ``"2h"``, ``"3d"`` or ``"1w"`` into microseconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value  # already parsed, e.g. a model built in Python
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a duration such as 90s, 15m, 2h, 3d or 1w; got {value!r}")
    micros = round(float(match.group(1)) * _UNITS[match.group(2)] * MICROS_PER_SECOND)
    if micros <= 0 or micros > MAX_DURATION_US:
        raise ValueError(f"duration {value!r} must be above zero and at most 3650d")
    return micros


def format_duration(micros: int) -> str:
    """Format microseconds in the largest whole unit of ``parse_duration``: ``2h``, ``90s``."""
    seconds = micros // MICROS_PER_SECOND
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _check_local_time(value: Any) -> str:
    if not isinstance(value, str) or _LOCAL_TIME.match(value) is None:
        raise ValueError(f"expected a local time of day as HH:MM, e.g. 09:00; got {value!r}")
    return value


def _check_zone(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an IANA time zone such as Europe/Berlin; got {value!r}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not an IANA time zone; use a name such as Europe/Berlin or UTC"
        ) from None
    return value


Duration = Annotated[int, BeforeValidator(parse_duration)]
LocalTime = Annotated[str, BeforeValidator(_check_local_time)]
ZoneName = Annotated[str, BeforeValidator(_check_zone)]
ChannelRef = Annotated[
    StrictStr, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
]
TraitName = Annotated[StrictStr, Field(min_length=1, max_length=200)]
KeyPath = Annotated[StrictStr, Field(min_length=1, max_length=200)]


def local_time_parts(value: str) -> tuple[int, int]:
    """Return (hour, minute) of an ``HH:MM`` string that passed validation."""
    hour, minute = value.split(":")
    return int(hour), int(minute)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _given(model: BaseModel, *names: str) -> list[str]:
    return [name for name in names if name in model.model_fields_set]


def _one_kind(model: BaseModel, kinds: dict[str, tuple[str, ...]], what: str) -> str:
    """Return the kind whose key is set; raise when none or several are, or keys are mixed.

    ``kinds`` maps each kind's key to the other keys that kind allows.
    """
    found = _given(model, *kinds)
    if len(found) != 1:
        listed = ", ".join(_shown(model, kind) for kind in kinds)
        got = f"got {', '.join(_shown(model, kind) for kind in found)}" if found else "got none"
        raise ValueError(f"each {what} needs exactly one of {listed}; {got}")
    kind = found[0]
    allowed = {kind, *kinds[kind]}
    for name in model.model_fields_set:
        if name not in allowed:
            raise ValueError(
                f"{_shown(model, name)!r} does not belong in a {_shown(model, kind)!r} {what};"
                " remove it"
            )
    return kind


def _shown(model: BaseModel, name: str) -> str:
    """Return a field's name as a plan spells it (``if`` rather than ``if_``)."""
    return type(model).model_fields[name].alias or name


# ---- conditions -------------------------------------------------------------------------


class Condition(_Strict):
    """A test on the person's profile, evaluated when it matters.

    - ``{trait: plan, is: pro}``: ``is`` takes what ``where`` takes (a value, a list of
      values, or operators such as ``{gte: 3}``); without ``is`` the trait must be set.
    - ``{milestone: created_project}`` (``reached: false`` for the opposite).
    - ``{activated: true}``, ``{signed_up: true}``.
    - ``{count: Project Created, is: {gte: 3}}``: how often the person did an event.
    - ``{segment: power_users}`` (``member: false`` for the opposite).
    - ``{any: [...]}`` holds when one of the listed conditions does; ``{not: {...}}`` negates.
    """

    trait: TraitName | None = None
    milestone: Name | None = None
    activated: bool | None = None
    signed_up: bool | None = None
    count: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    segment: Name | None = None
    any: Annotated[list[Condition], Field(min_length=1)] | None = None
    not_: Condition | None = Field(default=None, alias="not")
    is_: Any = Field(default=None, alias="is")
    reached: bool = True
    member: bool = True

    @model_validator(mode="after")
    def _check_kind(self) -> Condition:
        kinds: dict[str, tuple[str, ...]] = {
            "trait": ("is_",),
            "milestone": ("reached",),
            "activated": (),
            "signed_up": (),
            "count": ("is_",),
            "segment": ("member",),
            "any": (),
            "not_": (),
        }
        kind = _one_kind(self, kinds, "condition")
        if kind == "count" and "is_" not in self.model_fields_set:
            raise ValueError(
                "a count condition needs 'is', e.g. {count: Project Created, is: {gte: 3}}"
            )
        return self

    @property
    def kind(self) -> str:
        for name in ("trait", "milestone", "activated", "signed_up", "count", "segment", "any"):
            if name in self.model_fields_set:
                return name
        return "not"


# ---- entries ----------------------------------------------------------------------------


class Entry(_Strict):
    """The way a person enters a rule. Exactly one kind:

    - event: ``{event: Signed Up, where: {...}, key: properties.project_id}``.
    - absence: ``{after: {event: Import Started}, missing: {event: Import Finished},
      within: 2h, key: properties.import_id}``: entered when ``missing`` has not happened
      within ``within`` after ``after``, both carrying the same key when one is set.
    - stall: ``{stalled_for: 3d}``: entered when the person has made no progress to the next
      plan milestone within that time of the previous milestone or of sign-up.
    - trait change: ``{trait: plan, from: free, to: pro}``; ``from`` and ``to`` take what
      ``where`` takes, and either may be left out.
    - segment: ``{segment: power_users}``: entered when the person becomes a member.
    """

    event: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    where: dict[str, Any] = Field(default_factory=dict)
    key: KeyPath | None = None
    after: EventMatcher | None = None
    missing: EventMatcher | None = None
    within: Duration | None = None
    stalled_for: Duration | None = None
    trait: TraitName | None = None
    from_: Any = Field(default=None, alias="from")
    to: Any = None
    segment: Name | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> Entry:
        kinds: dict[str, tuple[str, ...]] = {
            "event": ("where", "key"),
            "after": ("missing", "within", "key"),
            "stalled_for": (),
            "trait": ("from_", "to"),
            "segment": (),
        }
        kind = _one_kind(self, kinds, "entry")
        if kind == "after":
            missing = [name for name in ("missing", "within") if name not in self.model_fields_set]
            if missing:
                raise ValueError(
                    f"an absence entry needs {' and '.join(missing)}, e.g. "
                    "{after: {event: Import Started}, missing: {event: Import Finished}, within: 2h}"
                )
        if kind == "event":
            EventMatcher(event=self.event or "", where=self.where)  # checks the operators
        return self

    @property
    def kind(self) -> Literal["event", "absence", "stall", "trait", "segment"]:
        if self.event is not None:
            return "event"
        if self.after is not None:
            return "absence"
        if self.stalled_for is not None:
            return "stall"
        if self.trait is not None:
            return "trait"
        return "segment"

    def matcher(self) -> EventMatcher:
        """Return the entry event of an event entry as an ``EventMatcher``."""
        assert self.event is not None
        return EventMatcher(event=self.event, where=self.where)


# ---- steps ------------------------------------------------------------------------------


class Step(_Strict):
    """One step of a rule. Exactly one kind:

    - ``{wait: 2h}``: a fixed delay.
    - ``{wait_until: "09:00"}``: the next 09:00 in the person's time zone.
    - ``{wait_for: {event: Import Finished, where: {...}}, timeout: 1d, on_event: [...],
      on_timeout: [...]}``: waits for the event (with the rule's correlation key when
      ``same_key`` is true) or the timeout, then runs the matching branch.
    - ``{send: email, template: welcome}``: a message on a channel; ``to`` overrides the
      recipient with a template expression.
    - ``{set_trait: nudged, value: true}``: sets a trait through an identify call.
    - ``{webhook: crm, template: ...}``: a signed POST through the ``webhook`` channel.
    - ``{emit: Trial Nudged, properties: {...}}``: appends a track event to the log.
    - ``{if: [conditions], then: [...], else: [...]}``: a branch on conditions.

    ``id`` names the step in decisions and idempotency keys; it defaults to its position.
    """

    id: Name | None = None
    wait: Duration | None = None
    wait_until: LocalTime | None = None
    wait_for: WaitForEvent | None = None
    timeout: Duration | None = None
    on_event: list[Step] = Field(default_factory=list)
    on_timeout: list[Step] = Field(default_factory=list)
    send: ChannelRef | None = None
    template: Name | None = None
    to: Annotated[StrictStr, Field(min_length=1, max_length=1000)] | None = None
    set_trait: TraitName | None = None
    value: Any = None
    webhook: Name | None = None
    channel: ChannelRef | None = None
    emit: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    if_: Annotated[list[Condition], Field(min_length=1)] | None = Field(default=None, alias="if")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")

    @model_validator(mode="after")
    def _check_kind(self) -> Step:
        kinds: dict[str, tuple[str, ...]] = {
            "wait": ("id",),
            "wait_until": ("id",),
            "wait_for": ("id", "timeout", "on_event", "on_timeout"),
            "send": ("id", "template", "to"),
            "set_trait": ("id", "value"),
            "webhook": ("id", "template", "channel"),
            "emit": ("id", "properties"),
            "if_": ("id", "then", "else_"),
        }
        kind = _one_kind(self, kinds, "step")
        if kind == "wait_for" and self.timeout is None:
            raise ValueError("a wait_for step needs a timeout, e.g. timeout: 1d")
        if kind == "send" and self.template is None:
            raise ValueError("a send step needs a template, e.g. {send: email, template: welcome}")
        if kind == "set_trait" and "value" not in self.model_fields_set:
            raise ValueError(
                "a set_trait step needs a value, e.g. {set_trait: nudged, value: true}"
            )
        return self

    @property
    def kind(self) -> str:
        for name in ("wait", "wait_until", "wait_for", "send", "set_trait", "webhook", "emit"):
            if name in self.model_fields_set:
                return name
        return "if"


class WaitForEvent(EventMatcher):
    """The event a ``wait_for`` step waits for; ``same_key`` requires the rule's key to match."""

    same_key: bool = True


# ---- exits, goals, policies -------------------------------------------------------------


class Until(_Strict):
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


class Cooldown(_Strict):
    """Re-entry is allowed once the previous enrollment ended and this long after it began."""

    cooldown: Duration


ReEntry = Literal["never", "after_exit"] | Cooldown


class Lateness(_Strict):
    """The policy for a timer that fires more than ``after`` past its due time (a restart).

    ``send`` carries on, ``skip`` ends the enrollment, ``next_slot`` waits for the next instant
    with the same local time of day as the missed due time.
    """

    after: Duration = 15 * 60 * MICROS_PER_SECOND
    policy: Literal["send", "skip", "next_slot"] = "send"


class Rule(_Strict):
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


class QuietHours(_Strict):
    """Local hours in which sends are delayed or skipped (per rule), e.g. 21:00 to 08:00.

    ``channels`` limits them to some channels; when left out they apply to every channel.
    """

    start: LocalTime
    end: LocalTime
    channels: list[ChannelRef] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end are equal, which leaves no quiet hours; remove it")
        return self


class Cap(_Strict):
    """At most ``max`` sends per person on ``channel`` (``"*"``: all channels together).

    ``per`` is a rolling window such as ``24h`` (no window of that length contains more than
    ``max`` sends), or ``calendar_day`` in the person's time zone.
    """

    channel: Annotated[StrictStr, Field(min_length=1, max_length=100)] = "*"
    max: Annotated[int, Field(ge=1, le=10_000)]
    per: Literal["calendar_day"] | Duration


class Template(_Strict):
    """Message content as Jinja2 templates, rendered in a sandbox with strict undefined.

    Every string field is a template; ``data`` is a mapping whose string values are templates.
    """

    subject: str | None = None
    text: str | None = None
    html: str | None = None
    title: str | None = None
    body: str | None = None
    url: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _compiles(self) -> Template:
        sources = self.sources()
        if not sources:
            raise ValueError(
                "a template needs at least one of subject, text, html, title, body, url, data"
            )
        for field, source in sources.items():
            try:
                _syntax_env().parse(source)
            except TemplateSyntaxError as exc:
                raise ValueError(f"{field}: line {exc.lineno}: {exc.message}") from None
        return self

    def sources(self) -> dict[str, str]:
        """Return every template source by field; ``data`` values as ``data.NAME``."""
        found = {
            name: value
            for name in ("subject", "text", "html", "title", "body", "url")
            if isinstance(value := getattr(self, name), str)
        }
        found.update(_data_sources("data", self.data))
        return found

    def version(self) -> str:
        """Return a digest of the template's source, recorded with every send."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def _data_sources(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        return {prefix: value}
    if isinstance(value, dict):
        found: dict[str, str] = {}
        for key, item in value.items():
            found.update(_data_sources(f"{prefix}.{key}", item))
        return found
    if isinstance(value, list):
        found = {}
        for index, item in enumerate(value):
            found.update(_data_sources(f"{prefix}[{index}]", item))
        return found
    return {}


@lru_cache(maxsize=1)
def _syntax_env() -> SandboxedEnvironment:
    return SandboxedEnvironment()


class InApp(_Strict):
    """The in-app slot: at most one in-app message is open per person; the rest queue.

    A message stays open until an ``In-App Message Dismissed`` or ``In-App Message Completed``
    event names it, or ``expire_after`` passes.
    """

    channel: ChannelRef = "in_app"
    expire_after: Duration = 7 * 86_400 * MICROS_PER_SECOND


class Triggers(_Strict):
    """The whole ``triggers:`` section."""

    # The zone for persons without a valid ``timezone`` trait or context.timezone.
    fallback_timezone: ZoneName
    timezone_trait: TraitName = "timezone"
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


Condition.model_rebuild()
Step.model_rebuild()


# ---- references between the sections of a plan -----------------------------------------

Location = tuple[str | int, ...]


def reference_problems(plan: Plan) -> list[tuple[Location, str]]:
    """Return (location, message) for each name the triggers use that the plan does not define."""
    triggers = plan.triggers
    if triggers is None:
        return []
    checker = _References(plan, triggers)
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


def segment_definitions(plan: Plan) -> dict[str, list[Condition]]:
    """Return every segment trigger rules may use: ``triggers.segments``, then the plan's
    ``segments`` that can be evaluated from the person profile (others are left out)."""
    found: dict[str, list[Condition]] = {}
    for spec in getattr(plan, "segments", []):
        try:
            found[spec.name] = shared_segment_conditions(spec)
        except ValueError:
            continue
    if plan.triggers is not None:
        found.update(plan.triggers.segments)
    return found


def shared_segment_conditions(spec: Any) -> list[Condition]:
    """Translate a segment from the plan's ``segments:`` into trigger conditions.

    Trait, milestone and activation tests translate directly, and ``did``/``did_not``
    without ``where`` or ``within`` become event counts. The profile keeps counts per event
    name but no per-event history, so the processor cannot evaluate property filters or time
    windows. Such a segment raises ``ValueError`` with the reason.
    """
    conditions: list[Condition] = []
    for condition in spec.conditions:
        kind = condition.kind
        if kind in ("did", "did_not"):
            if condition.where or condition.within is not None:
                raise ValueError(
                    f"segment {spec.name!r} filters events by 'where' or 'within', which trigger "
                    "rules cannot evaluate in the processor; define a segment under "
                    "triggers.segments with counts, traits and milestones instead"
                )
            operator = "gte" if kind == "did" else "lt"
            event = condition.did or condition.did_not
            conditions.append(
                Condition.model_validate({"count": event, "is": {operator: condition.at_least}})
            )
        elif kind == "trait":
            fields: dict[str, Any] = {"trait": condition.trait}
            if "is_" in condition.model_fields_set:
                fields["is"] = condition.is_
            conditions.append(Condition.model_validate(fields))
        elif kind == "milestone":
            conditions.append(Condition(milestone=condition.milestone, reached=condition.reached))
        else:
            conditions.append(Condition(activated=condition.activated))
    if spec.match == "any":
        return [Condition(any=conditions)]
    return conditions


def step_identifier(step: Step, prefix: str, index: int) -> str:
    """Return a step's id: its own ``id``, else its 1-based position such as ``2.on_event.1``."""
    return step.id if step.id is not None else f"{prefix}{index + 1}"
